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
* ``uvm_fault_upper_enter`` / ``uvm_fault_lower_enter``: ``pmap_enter`` then
  ``pmap_update``.

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
from .param import EACCES, EFAULT, ENOMEM, ERESTART, PG, VM_PROT_WRITE, VMProt
from .pmap.pmap import PMAP_WIRED

if TYPE_CHECKING:
    from .map import MapEntry, VMMap
    from .page import Page


@attrs.define(slots=True, eq=False)
class FaultCtx:
    """``struct uvm_faultctx`` (the parts the model needs)."""

    map: VMMap
    va: int
    access_type: int
    # UVM_FAULT_WIRE: the fault wires the page (mlock, uvm_fault_wire).
    wire_paging: bool
    # UVM_FAULT_MAXPROT: judge copy-on-write by the maximum protection.
    maxprot: bool = False
    # The mapping is entered wired: wiring fault, or any fault on a wired entry.
    wire_mapping: bool = False
    entry: MapEntry | None = None
    enter_prot: int = VMProt.NONE
    cow_now: bool = False
    promote: bool = False


def uvm_fault(
    map: VMMap, va: int, access_type: int, wire: bool = False, maxprot: bool = False
) -> None:
    """Resolve a fault at ``va`` for ``access_type``; raises UVMError on failure.

    EFAULT: no entry (or a layerless one); EACCES: protection; ENOMEM: no
    page could be allocated (nothing was changed: retry after freeing).
    """
    ps = map.page_size
    flt = FaultCtx(map, va - va % ps, int(access_type), wire, maxprot)
    for _ in range(64):
        err = uvm_fault_check(flt)
        if err == 0:
            e = flt.entry
            assert e is not None
            anon = e.amap.lookup(e.slot(flt.va)) if e.amap is not None else None
            err = uvm_fault_upper(flt, anon) if anon is not None else uvm_fault_lower(flt)
        if err == ERESTART:
            continue
        if err:
            raise UVMError(err, _fault_msg(flt, err))
        return
    raise KernelAssertion(f"uvm_fault at {va:#x}: restarted 64 times")


def _fault_msg(flt: FaultCtx, err: int) -> str:
    what = "write" if flt.access_type & VM_PROT_WRITE else "read"
    if err == EFAULT:
        return f"{what} fault at {flt.va:#x}: no mapping"
    if err == EACCES:
        return f"{what} fault at {flt.va:#x}: protection {flt.entry!r}"
    if err == ENOMEM:
        return f"{what} fault at {flt.va:#x}: out of memory"
    return f"{what} fault at {flt.va:#x}: error {err}"


def uvm_fault_check(flt: FaultCtx) -> int:
    m = flt.map
    e = m.uvm_map_lookup_entry(flt.va)
    if e is None:
        return EFAULT
    flt.entry = e
    check_prot = e.max_protection if flt.maxprot else e.protection
    if flt.access_type & ~check_prot:
        return EACCES
    if e.vaonly:
        return EFAULT  # a layerless entry: kernel VA with nothing behind it
    flt.enter_prot = e.protection
    # "wired" means the entry is wired or we are fault-wiring the page: the
    # mapping is entered wired with the entry's full access, and whether to
    # resolve copy-on-write now is judged by check_prot (the maximum
    # protection for uvm_fault_wire), so loans are broken before wiring.
    flt.wire_mapping = flt.wire_paging or e.wired_count > 0
    if flt.wire_mapping:
        flt.access_type = flt.enter_prot
        flt.cow_now = bool(check_prot & VM_PROT_WRITE)
    else:
        flt.cow_now = bool(flt.access_type & VM_PROT_WRITE)
    if e.needs_copy:
        if flt.cow_now or e.object is None:
            m.amap_copy(e)
        else:
            # Read of a needs-copy entry: map read-only so a write comes back.
            flt.enter_prot &= ~VM_PROT_WRITE
    if e.amap is None and e.object is None:
        return EFAULT
    return 0


# ------------------------------------------------------------------ upper


def uvm_fault_upper(flt: FaultCtx, anon: Anon) -> int:
    e = flt.entry
    assert e is not None
    uvm = flt.map.uvm
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
        pg = anon.an_page
        assert pg is not None
    if flt.cow_now and anon.an_ref > 1:
        return uvm_fault_upper_promote(flt, anon)
    return uvm_fault_upper_direct(flt, anon)
    del uvm


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
        where = "mlock" if flt.wire_paging else "fault"
        return uvm_loanbreak_anon(anon, uobj, where, flt.va, flt.map.name)
    return 0


def uvmfault_anonget(flt: FaultCtx, anon: Anon) -> int:
    """Bring a paged-out anon back (the swap slot's bytes into a new page)."""
    uvm = flt.map.uvm
    swap = getattr(uvm, "swap", None)
    if not anon.an_swslot or swap is None:
        raise KernelAssertion(f"{anon!r} has neither a page nor a swap slot")
    pg = uvm.uvm_pagealloc(None, 0, anon, 0)
    if pg is None:
        return ENOMEM
    uvm.platform.physmem.copyin([pg.frame], 0, swap[anon.an_swslot])
    pg.flags = (pg.flags & ~(PG.BUSY | PG.FAKE | PG.DIRTY)) | PG.CLEAN
    uvm.uvm_pageactivate(pg)
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
    uvm.uvm_pagecopy(opg, npg)
    npg.flags &= ~(PG.BUSY | PG.FAKE)
    e.amap.add(e.slot(flt.va), nanon, replace=True)
    # The old anon loses this reference (it stays with its other holders).
    anon_unref(uvm, oanon)
    flt.enter_prot = flt.enter_prot
    return uvm_fault_upper_enter(flt, nanon, npg)


def uvm_fault_upper_direct(flt: FaultCtx, anon: Anon) -> int:
    pg = anon.an_page
    assert pg is not None
    if anon.an_ref > 1:
        # Shared anon (fork, or an A->A loan): read-only until someone writes.
        flt.enter_prot &= ~VM_PROT_WRITE
    return uvm_fault_upper_enter(flt, anon, pg)


def uvm_fault_upper_enter(flt: FaultCtx, anon: Anon, pg: Page) -> int:
    del anon
    return _enter(flt, pg)


# ------------------------------------------------------------------ lower


def uvm_fault_lower(flt: FaultCtx) -> int:
    e = flt.entry
    assert e is not None
    uobj = e.object
    uobjpage: Page | None = None
    if uobj is None:
        flt.promote = True  # zero fill: a new anon even on a read
    else:
        off = e.objoff(flt.va)
        size = getattr(uobj, "size", None)
        if size is not None and off >= size + (-size) % flt.map.page_size:
            return EFAULT  # past end of file: SIGBUS
        try:
            uobjpage = uobj.pgo_get(off)
        except UVMError as err:
            return err.errno
        flt.promote = flt.cow_now and e.copy_on_write
    if flt.promote:
        return uvm_fault_lower_promote(flt, uobjpage)
    assert uobjpage is not None
    return uvm_fault_lower_direct(flt, uobjpage)


def uvm_fault_lower_promote(flt: FaultCtx, uobjpage: Page | None) -> int:
    """A new anon: zero-filled, or a copy of the (private) object page."""
    e = flt.entry
    assert e is not None
    m = flt.map
    if e.amap is None:
        m.amap_copy(e)
    assert e.amap is not None
    uvm = m.uvm
    anon = uvm_analloc()
    pg = uvm.uvm_pagealloc(None, 0, anon, 0)
    if pg is None:
        return ENOMEM
    if uobjpage is None:
        uvm.uvm_pagezero(pg)
    else:
        uvm.uvm_pagecopy(uobjpage, pg)
    pg.flags &= ~(PG.BUSY | PG.FAKE)
    e.amap.add(e.slot(flt.va), anon)
    return _enter(flt, pg)


def uvm_fault_lower_direct(flt: FaultCtx, uobjpage: Page) -> int:
    e = flt.entry
    assert e is not None
    if uobjpage.loan_count:
        err = uvm_fault_lower_direct_loan(flt, uobjpage)
        if err:
            return err
        # The handler may have replaced the page (loan break).
        assert e.object is not None
        pg = e.object.uvm_pagelookup(e.objoff(flt.va))
        assert pg is not None
        uobjpage = pg
    if e.copy_on_write:
        # A private mapping reads the object's page; a write promotes.
        flt.enter_prot &= ~VM_PROT_WRITE
    return uvm_fault_lower_enter(flt, uobjpage)


def uvm_fault_lower_direct_loan(flt: FaultCtx, uobjpage: Page) -> int:
    """A fault on a loaned object page mapped directly (uvm_fault.c 1.226).

    Read: cap to read-only.  Write (shared mapping): ``uvm_loanbreak``
    replaces the page in the object; ENOMEM leaves everything unchanged
    (NetBSD: ``uvm_wait("flt_noram4")`` and restart).
    """
    if not flt.cow_now:
        flt.enter_prot &= ~VM_PROT_WRITE
        return 0
    where = "mlock" if flt.wire_paging else "fault"
    if uvm_loanbreak(uobjpage, where, flt.va, flt.map.name) is None:
        return ENOMEM
    return 0


def uvm_fault_lower_enter(flt: FaultCtx, pg: Page) -> int:
    return _enter(flt, pg)


def _enter(flt: FaultCtx, pg: Page) -> int:
    m = flt.map
    uvm = m.uvm
    pmod = m.pmap.module
    if pg.flags & PG.RDONLY:
        flt.enter_prot &= ~VM_PROT_WRITE
    access = flt.access_type & flt.enter_prot
    flags = int(access) | (PMAP_WIRED if flt.wire_mapping else 0)
    pmod.pmap_enter(m.pmap, flt.va, pg.pa, flt.enter_prot, flags)
    if access & VM_PROT_WRITE:
        pg.flags = (pg.flags & ~PG.CLEAN) | PG.DIRTY
    if flt.wire_paging:
        uvm.uvm_pagewire(pg)
    else:
        uvm.uvm_pageactivate(pg)
    pmod.pmap_update(m.pmap)
    return 0
