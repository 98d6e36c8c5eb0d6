"""uvm_fault: resolve a page fault the way ``sys/uvm/uvm_fault.c`` 1.226 does.

Structure (function names are NetBSD's):

* ``uvm_fault_check``: find the entry, check protection, resolve needs-copy
  (``amap_copy`` when writing or when there is no object), compute
  ``enter_prot`` and ``cow_now``.
* an anon at the slot -> ``uvm_fault_upper``: a loaned page goes to
  ``uvm_fault_upper_loan``; a write with ``an_ref > 1`` promotes into a new
  anon (``uvm_fault_upper_promote``); otherwise ``uvm_fault_upper_direct``
  maps the page (read-only while shared).
* no anon -> ``uvm_fault_lower``: zero fill for anonymous memory, or the
  object's page via ``pgo_get``; a write to a private (copy-on-write) entry
  promotes into a new anon; otherwise ``uvm_fault_lower_direct`` maps the
  object page (a loaned page goes to ``uvm_fault_lower_direct_loan``).
* ``uvm_fault_upper_enter`` / ``uvm_fault_lower_enter``: ``pmap_enter``,
  the "done" step (wire or activate the page), then ``pmap_update``.  The
  lower layer maps a page read-only when ``uvm_pagereadonly_p`` says so
  (PG_RDONLY or a CLEAN status), so the first store to a clean file page
  faults again; the upper layer asserts that its page is not CLEAN.

Checked against ``uvm_fault.c`` 1.224/1.226, ``uvm_page.c`` 1.246 and
``uvm_page_status.c`` 1.6 (see specs/fault.md).

Neighbour pre-faulting (``uvm_fault_upper_lookup``'s neighbours) is not
modelled: every fault maps exactly one page.  Memory shortage never leaves a
half-made mapping: everything is allocated before anything is changed, and
the fault returns ENOMEM for the caller to wait or fail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .anon import Anon, anon_unref, uvm_analloc
from .errors import KernelAssertion, UVMError
from .loan import uvm_anon_lockloanpg, uvm_loanbreak, uvm_loanbreak_anon
from .page import UVM_PAGE_STATUS_CLEAN, UVM_PAGE_STATUS_DIRTY, UVM_PAGE_STATUS_UNKNOWN
from .param import EFAULT, ENOMEM, ERESTART, PG, UVM_PGA_ZERO, VM_PROT_WRITE, VMProt
from .pmap.pmap import PMAP_WIRED

if TYPE_CHECKING:
    from .map import MapEntry, VMMap
    from .page import Page, PageAllocator


@attrs.define(slots=True, eq=False)
class FaultCtx:
    """``struct uvm_faultctx`` (the parts the model needs)."""

    map: VMMap
    va: int
    access_type: int
    # UVM_FAULT_WIRE: this is a wiring fault (mlock, uvm_fault_wire).
    fault_wire: bool
    # UVM_FAULT_MAXPROT: judge copy-on-write by the maximum protection.
    maxprot: bool = False
    # PMAP_WIRED mapping: UVM_FAULT_WIRE or VM_MAPENT_ISWIRED (never reset
    # on ERESTART, as in NetBSD where uvm_fault_check only sets it).
    wire_mapping: bool = False
    # uvm_pagewire the page: likewise UVM_FAULT_WIRE or a wired entry.
    wire_paging: bool = False
    entry: MapEntry | None = None
    enter_prot: int = VMProt.NONE
    cow_now: bool = False
    promote: bool = False
    # Why the last uvm_fault_check failed (for the message only).
    protfail: bool = False


def uvm_fault(
    map: VMMap, va: int, access_type: int, wire: bool = False, maxprot: bool = False
) -> None:
    """Resolve a fault at ``va`` for ``access_type``; raises UVMError on failure.

    EFAULT: no entry, a layerless one, or a protection failure (NetBSD
    returns EFAULT for all three); ENOMEM: no page could be allocated
    (nothing was changed: retry after freeing).
    """
    ps = map.uvm.page_size
    flt = FaultCtx(map, va - va % ps, int(access_type), wire, maxprot, wire, wire)
    for _ in range(64):
        err = uvm_fault_check(flt)
        if err == 0:
            e = flt.entry
            assert e is not None
            amap = e.amap
            anon = amap.lookup(e.slot(flt.va)) if amap is not None else None
            err = uvm_fault_upper(flt, anon) if anon is not None else uvm_fault_lower(flt)
            if err == 0:
                return
        if err != ERESTART:
            raise UVMError(err, _fault_msg(flt, err))
    raise KernelAssertion(f"uvm_fault at {va:#x}: restarted 64 times")


def _fault_msg(flt: FaultCtx, err: int) -> str:
    what = "write" if flt.access_type & VM_PROT_WRITE else "read"
    if err == EFAULT and flt.protfail:
        return f"{what} fault at {flt.va:#x}: protection {flt.entry!r}"
    if err == EFAULT:
        return f"{what} fault at {flt.va:#x}: no mapping"
    if err == ENOMEM:
        return f"{what} fault at {flt.va:#x}: out of memory"
    return f"{what} fault at {flt.va:#x}: error {err}"


def uvm_fault_check(flt: FaultCtx) -> int:
    m = flt.map
    flt.protfail = False
    e = m.uvm_map_lookup_entry(flt.va)
    if e is None:
        return EFAULT
    flt.entry = e
    check_prot = e.max_protection if flt.maxprot else e.protection
    if flt.access_type & ~check_prot:
        # uvm_fault_check 1.224/1.226: "protection failure" returns EFAULT.
        flt.protfail = True
        return EFAULT
    if e.vaonly:
        return EFAULT  # a layerless entry: kernel VA with nothing behind it
    flt.enter_prot = e.protection
    if e.wired_count > 0:
        # VM_MAPENT_ISWIRED: map wired *and* wire the page (uvm_pagewire in
        # the done step), as a wiring fault does; narrow is implied (the
        # model never maps neighbours).
        flt.wire_mapping = True
        flt.wire_paging = True
    if flt.wire_mapping:
        # Full access for wired; copy-on-write judged by check_prot (the
        # maximum protection for uvm_fault_wire), so loans break before wiring.
        flt.access_type = flt.enter_prot
        flt.cow_now = bool(check_prot & VM_PROT_WRITE)
    else:
        flt.cow_now = bool(flt.access_type & VM_PROT_WRITE)
    flt.promote = False
    if e.needs_copy:
        if flt.cow_now or e.object is None:
            if flt.maxprot:
                # uvm_map_pageable pass 1 resolved needs-copy already.
                raise KernelAssertion(f"uvm_fault_check: wiring fault meets needs-copy {e!r}")
            m.amap_copy(e)
        else:
            # Read of a needs-copy entry: map read-only so a write comes back.
            flt.enter_prot &= ~VM_PROT_WRITE
    if e.amap is None and e.object is None:
        return EFAULT
    return 0


# ------------------------------------------------------------------ upper


def uvm_fault_upper(flt: FaultCtx, anon: Anon) -> int:
    pg = anon.an_page
    if pg is None:
        err = uvmfault_anonget(flt, anon)
        if err:
            return err
        pg = anon.an_page
        assert pg is not None
    elif pg.loan_count:
        # uvmfault_anonget (1.226) also runs for a resident page: a loaned
        # one may be a disowned O->A page the anon adopts first (T7).
        uvm_anon_lockloanpg(anon)
    if pg.loan_count:
        err = uvm_fault_upper_loan(flt, anon)
        if err:
            return err
    if flt.cow_now and anon.an_ref > 1:
        flt.promote = True
        return uvm_fault_upper_promote(flt, anon)
    return uvm_fault_upper_direct(flt, anon)


def uvm_fault_upper_loan(flt: FaultCtx, anon: Anon) -> int:
    """A fault on an anon whose page is loaned (uvm_fault.c 1.226).

    Read: map it read-only, the loan stays.  Write with ``an_ref == 1``:
    ``uvm_loanbreak_anon`` gives the anon a private copy (the old page is
    left to its borrowers).  Write with ``an_ref > 1``: nothing here; the
    ordinary promote copies and the loaned page stays with the other
    references.  ENOMEM leaves everything as it was (NetBSD waits in
    ``uvm_wait("flt_noram2")`` and restarts).
    """
    if not flt.cow_now:
        flt.enter_prot &= ~VM_PROT_WRITE
        return 0
    if anon.an_ref == 1:
        pg = anon.an_page
        assert pg is not None
        # An anon holding an O->A loaned page passes the owning object.
        uobj = pg.uobject if not pg.flags & PG.ANON else None
        where = "mlock" if flt.fault_wire else "fault"
        return uvm_loanbreak_anon(anon, uobj, where, flt.va, flt.map.name)
    return 0


def uvmfault_anonget(flt: FaultCtx, anon: Anon) -> int:
    """Bring a paged-out anon back (the swap slot's bytes into a new page).

    The page comes back with status UNKNOWN (uvm_fault.c 1.224/1.226:
    ``uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_UNKNOWN)`` after the swap read):
    its swap copy may go stale, so the pmap's modified bit decides.
    """
    uvm = flt.map.uvm
    swap = getattr(uvm, "swap", None)
    if not anon.an_swslot or swap is None:
        raise KernelAssertion(f"{anon!r} has neither a page nor a swap slot")
    pg = uvm.uvm_pagealloc(None, 0, anon, 0)
    if pg is None:
        return ENOMEM
    uvm.platform.physmem.copyin([pg.frame], 0, swap[anon.an_swslot])
    uvm.uvm_pageactivate(pg)
    pg.flags &= ~(PG.BUSY | PG.FAKE)
    uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_UNKNOWN)
    return 0


def uvm_fault_upper_promote(flt: FaultCtx, oanon: Anon) -> int:
    """Copy-on-write: a private copy of a shared anon's page."""
    e = flt.entry
    assert e is not None and e.amap is not None
    uvm = flt.map.uvm
    opg = oanon.an_page
    assert opg is not None
    nanon = uvm_analloc()
    npg = uvm.uvm_pagealloc(None, 0, nanon, 0)
    if npg is None:
        return ENOMEM
    uvm.uvm_pagecopy(opg, npg)  # the new page is DIRTY
    npg.flags &= ~(PG.BUSY | PG.FAKE)
    e.amap.add(e.slot(flt.va), nanon, replace=True)
    # The old anon loses this reference (it stays with its other holders).
    anon_unref(uvm, oanon)
    return uvm_fault_upper_enter(flt, nanon, npg)


def uvm_fault_upper_direct(flt: FaultCtx, anon: Anon) -> int:
    pg = anon.an_page
    assert pg is not None
    if anon.an_ref > 1:
        # Shared anon (fork, or an A->A loan): read-only until someone writes.
        flt.enter_prot &= ~VM_PROT_WRITE
    return uvm_fault_upper_enter(flt, anon, pg)


def uvm_fault_upper_enter(flt: FaultCtx, anon: Anon, pg: Page) -> int:
    """Map an upper page: never a CLEAN one (uvm_fault.c 1.224/1.226 KASSERT).

    An anon page is DIRTY (zero fill, copy, loan break) or UNKNOWN (swapped
    back in); the upper layer maps it with ``enter_prot`` as it is, without
    ``uvm_pagereadonly_p``.
    """
    m = flt.map
    uvm = m.uvm
    if uvm.uvm_pagegetdirty(pg) == UVM_PAGE_STATUS_CLEAN:
        raise KernelAssertion(f"uvm_fault_upper_enter: {pg!r} at {flt.va:#x} is CLEAN")
    pmap = m.pmap
    pmod = pmap.module
    flags = flt.access_type & flt.enter_prot
    if flt.wire_mapping:
        flags |= PMAP_WIRED
    pmod.pmap_enter(pmap, flt.va, pg.pa, flt.enter_prot, flags)
    uvm_fault_upper_done(flt, anon, pg)
    pmod.pmap_update(pmap)
    return 0


def uvm_fault_upper_done(flt: FaultCtx, anon: Anon, pg: Page) -> None:
    """Wire or activate the page; a wired anon page is DIRTY and loses its
    swap slot ("since the now-wired page cannot be paged out, release its
    swap resources"; uvm_fault.c 1.224/1.226)."""
    uvm = flt.map.uvm
    if flt.wire_paging:
        uvm.uvm_pagewire(pg)
        uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_DIRTY)
        _uvm_anon_dropswap(uvm, anon)
    else:
        uvm.uvm_pageactivate(pg)


def _uvm_anon_dropswap(uvm: PageAllocator, anon: Anon) -> None:
    """``uvm_anon_dropswap``: free the anon's swap slot, if it has one."""
    if anon.an_swslot:
        uvm.swap.pop(anon.an_swslot, None)
        anon.an_swslot = 0


# ------------------------------------------------------------------ lower


def _mask(e: MapEntry) -> int:
    """``MASK(entry)``: a copy-on-write entry never asks its object for write."""
    return ~VM_PROT_WRITE if e.copy_on_write else int(VMProt.ALL)


def uvm_fault_lower(flt: FaultCtx) -> int:
    e = flt.entry
    assert e is not None
    uobj = e.object
    uobjpage: Page | None = None
    if uobj is None:
        flt.promote = True  # zero fill: a new anon even on a read
        return uvm_fault_lower_promote(flt, None)
    else:
        off = e.objoff(flt.va)
        size = getattr(uobj, "size", None)
        if size is not None and off >= size + (-size) % flt.map.page_size:
            return EFAULT  # past end of file: SIGBUS
        try:
            # The pager sees the access type (masked for copy-on-write): a
            # write starts the page's dirtiness tracking (genfs_getpages).
            uobjpage = uobj.pgo_get(off, access_type=flt.access_type & _mask(e))
        except UVMError as err:
            return err.errno
        flt.promote = flt.cow_now and e.copy_on_write
    if flt.promote:
        return uvm_fault_lower_promote(flt, uobjpage)
    assert uobjpage is not None
    return uvm_fault_lower_direct(flt, uobjpage)


def uvm_fault_lower_promote(flt: FaultCtx, uobjpage: Page | None) -> int:
    """A new anon: zero-filled (``UVM_PGA_ZERO``), or a copy of the object page."""
    e = flt.entry
    assert e is not None
    m = flt.map
    if e.amap is None:
        m.amap_copy(e)
    assert e.amap is not None
    uvm = m.uvm
    anon = uvm_analloc()
    pg = uvm.uvm_pagealloc(None, 0, anon, UVM_PGA_ZERO if uobjpage is None else 0)
    if pg is None:
        return ENOMEM
    if uobjpage is not None:
        uvm.uvm_pagecopy(uobjpage, pg)
    # uvmfault_promote: KASSERT(uvm_pagegetdirty(pg) == UVM_PAGE_STATUS_DIRTY)
    if uvm.uvm_pagegetdirty(pg) != UVM_PAGE_STATUS_DIRTY:
        raise KernelAssertion(f"uvmfault_promote: {pg!r} is not DIRTY")
    pg.flags &= ~(PG.BUSY | PG.FAKE)
    e.amap.add(e.slot(flt.va), anon)
    return uvm_fault_lower_enter(flt, pg)


def uvm_fault_lower_direct(flt: FaultCtx, uobjpage: Page) -> int:
    e = flt.entry
    assert e is not None
    if e.copy_on_write:
        # A private mapping reads the object's page; a write promotes.
        # (NetBSD also drops write for UVM_OBJ_NEEDS_WRITEFAULT; in the
        # model that is already done by uvm_pagereadonly_p, specs/fault.md 7.)
        flt.enter_prot &= ~VM_PROT_WRITE
    if uobjpage.loan_count:
        err = uvm_fault_lower_direct_loan(flt, uobjpage)
        if err:
            # Departure: NetBSD ignores this return value (specs/fault.md 4).
            return err
        # The handler may have replaced the page (loan break).
        assert e.object is not None
        pg = e.object.uvm_pagelookup(e.objoff(flt.va))
        assert pg is not None
        uobjpage = pg
    return uvm_fault_lower_enter(flt, uobjpage)


def uvm_fault_lower_direct_loan(flt: FaultCtx, uobjpage: Page) -> int:
    """A fault on a loaned object page mapped directly (uvm_fault.c 1.226).

    Read: cap to read-only.  Write (shared mapping): ``uvm_loanbreak``
    replaces the page in the object; ENOMEM leaves everything unchanged and
    the fault is retried from the start (NetBSD: ``uvm_wait("flt_noram4")``
    and ERESTART, which its caller ignores: see specs/fault.md 4).
    """
    if not flt.cow_now:
        flt.enter_prot &= ~VM_PROT_WRITE
        return 0
    where = "mlock" if flt.fault_wire else "fault"
    if uvm_loanbreak(uobjpage, where, flt.va, flt.map.name) is None:
        return ENOMEM
    return 0


def uvm_fault_lower_enter(flt: FaultCtx, pg: Page) -> int:
    """Map a lower page (the object's, or the new anon's of a promote).

    ``readonly = uvm_pagereadonly_p(pg)``: a PG_RDONLY or CLEAN page is
    entered without write, and a write access must never meet such a page
    (KASSERT): a write fault has already had the pager start the page's
    dirtiness tracking (CLEAN -> UNKNOWN in ``pgo_get``).
    """
    m = flt.map
    uvm = m.uvm
    access = flt.access_type
    readonly = uvm.uvm_pagereadonly_p(pg)
    if access & VM_PROT_WRITE and readonly:
        raise KernelAssertion(
            f"uvm_fault_lower_enter: write access at {flt.va:#x} meets read-only {pg!r}"
        )
    prot = flt.enter_prot & ~VM_PROT_WRITE if readonly else flt.enter_prot
    pmap = m.pmap
    pmod = pmap.module
    flags = access & prot
    if flt.wire_mapping:
        flags |= PMAP_WIRED
    pmod.pmap_enter(pmap, flt.va, pg.pa, prot, flags)
    uvm_fault_lower_done(flt, pg)
    pmod.pmap_update(pmap)
    return 0


def uvm_fault_lower_done(flt: FaultCtx, pg: Page) -> None:
    """Wire or activate the page; a wired aobj page is marked DIRTY (its swap
    copy, which the model does not have, would be dropped: ``uao_dropswap``)."""
    uvm = flt.map.uvm
    if flt.wire_paging:
        uvm.uvm_pagewire(pg)
        if pg.flags & PG.AOBJ:
            uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_DIRTY)
    else:
        uvm.uvm_pageactivate(pg)
