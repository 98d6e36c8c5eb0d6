"""Page loaning: ``sys/uvm/uvm_loan.c`` 1.104 (NetBSD 10 era).

``uvm_loan`` lends the pages behind a user address range to the kernel
(``UVM_LOAN_TOPAGE``: a list of pages, each with ``loan_count`` + 1) or to
anons (``UVM_LOAN_TOANON``: a list of anons, each with ``an_ref`` + 1).  The
first kernel loan of a page write-protects every user mapping of it
(``pmap_page_protect(pg, VM_PROT_READ)``), so from then on a user write
faults and the fault handler breaks the loan by copying
(``uvm_loanbreak``, ``uvm_loanbreak_anon``): the borrower keeps the bytes it
was lent, the owner gets a private copy.  ``uvm_unloan`` gives pages back; an
owner that let go of a page meanwhile leaves an orphan, freed by the last
unloan.  What this era compiles out (object->anon and zero->anon loans, the
body of ``uvm_unloananon``) behaves here as it does there; see
``specs/loan.md``.  The profile switches ``toanon_objects``,
``unloananon_unrefs``, ``wired_loans``, ``loan_dequeues`` and
``zero_loan_style`` give the 2002 code (1.29.2.4) instead; ``specs/eras.md``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from errno import errorcode
from typing import TYPE_CHECKING, Literal

import attrs

from .anon import Anon, anon_unref, uvm_analloc
from .errors import KernelAssertion, UVMError
from .map import VMMap
from .object import PGO_FREE, UVMObject
from .page import Page
from .param import (
    EBUSY,
    EINVAL,
    ENOENT,
    ENOMEM,
    PG,
    UVM_LOAN_TOANON,
    UVM_LOAN_TOPAGE,
    UVM_PGA_ZERO,
    VM_PROT_NONE,
    VM_PROT_READ,
)
from .pdaemon import uvm_wait
from .trace import Adopt, Loan, LoanBreak, LoanFail, Orphan, Unloan

if TYPE_CHECKING:
    from .map import MapEntry
    from .page import PageAllocator

UVM_LOAN_GET_CHUNK = 16  # uvm_loan.c: pages per pgo_get in uvm_loanuobjpages


class _LoanFailure(UVMError):
    """A helper returned -1: uvm_loan reports EINVAL, the reason is kept.

    A UVMError itself, so that a helper called directly (``uvm_loanpage``
    is public) fails with a documented error and its errno (EBUSY for a
    wired page), not a private exception."""

    def __init__(self, reason: str, errno: int = EINVAL) -> None:
        super().__init__(errno, reason, reason=reason)


@attrs.define(slots=True, eq=False, repr=False)
class ZeroLoanObject(UVMObject):
    """``uvm_loanzero_object``: owns the one zero page every COW hole is lent as.

    Its pager (``ulz_put``) never frees the page: without ``PGO_FREE`` it
    does nothing; asked to free the page, it re-activates or dequeues it, so
    the page outlives every unloan.
    """

    pgflag: int = PG.NONE

    def pgo_put(self, start: int, end: int, flags: int) -> int:
        if not flags & PGO_FREE:
            return 0  # ulz_put: "Don't need to do any work here if we're not freeing pages."
        uvm = self.uvm
        if self.uvm_pagelookup(0) is None:
            raise KernelAssertion("ulz_put: uvm_loanzero_object has no page")
        for pg in list(self.uo_pages.values()):
            if pg.uanon is not None:
                uvm.uvm_pageactivate(pg)
            else:
                uvm.uvm_pagedequeue(pg)
        return 0

    def _last_detach(self) -> None:
        """The zero-loan object lives as long as the machine: nothing to free."""


def _check_flags(flags: object, who: str) -> int:
    if flags == UVM_LOAN_TOPAGE and type(flags) is int:
        return flags  # the common case, decided by two tests
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise TypeError(f"{who}: flags must be an int, not {type(flags).__name__}")
    if flags & ~(UVM_LOAN_TOANON | UVM_LOAN_TOPAGE):
        raise ValueError(f"{who}: unknown flags {flags:#x}")
    if (flags & UVM_LOAN_TOANON) == (flags & UVM_LOAN_TOPAGE) >> 1:
        raise ValueError(f"{who}: exactly one of UVM_LOAN_TOANON and UVM_LOAN_TOPAGE is required")
    return flags


def _emit_loan(
    uvm: PageAllocator, kind: str, pg: Page, va: int, protected: bool, space: str = "-"
) -> None:
    plat = uvm.platform
    tr = plat.tracer
    if tr.on:
        if tr.full:
            tr.emit(Loan(plat.now(), plat.cur, space, kind, pg.frame, va, pg.loan_count, protected))
        else:
            tr.tally(Loan.keys(kind))


def _ledger_add(uvm: PageAllocator, pg: Page) -> None:
    """Record a kernel loan for check_invariants (I1, I9)."""
    n = uvm.loan_ledger.get(pg, 0)
    if n == 0:
        uvm.loan_crc[pg] = zlib.crc32(uvm.platform.physmem.frame_view(pg.frame))
    uvm.loan_ledger[pg] = n + 1
    pg.ever_loaned = True


def _ledger_drop(uvm: PageAllocator, pg: Page) -> None:
    n = uvm.loan_ledger.get(pg, 0) - 1
    if n <= 0:
        uvm.loan_ledger.pop(pg, None)
        uvm.loan_crc.pop(pg, None)
    else:
        uvm.loan_ledger[pg] = n


# ---------------------------------------------------------------- uvm_loan


def uvm_loan(map: VMMap, start: int, len: int, flags: int) -> list[Page] | list[Anon]:
    """Lend the pages of [start, start+len) in ``map`` (``uvm_loan``).

    Returns one page (TOPAGE) or anon (TOANON) per page of the range.  All or
    nothing: a hole raises ``UVMError(ENOENT)``; any other failure (a wired
    page, an era-disabled loan kind, no page) raises ``UVMError(EINVAL)``
    with the original cause in ``reason``.  TOPAGE loans made before the
    failure are undone; TOANON ones are not, because ``uvm_unloananon`` is
    empty in 1.104 (the ``an_ref`` increments leak, as they do there),
    unless the profile has ``unloananon_unrefs`` (1.29.2.4).
    """
    if not isinstance(map, VMMap):
        raise TypeError(f"uvm_loan: map must be a VMMap, not {type(map).__name__}")
    _check_flags(flags, "uvm_loan")
    ps = map.page_size
    if type(start) is not int or type(len) is not int or (start | len) & (ps - 1):
        for name, v in (("start", start), ("len", len)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"uvm_loan: {name} must be an int, not {type(v).__name__}")
            if v % ps:
                raise ValueError(f"uvm_loan: {name} {v:#x} is not a multiple of the page size {ps}")
    if len <= 0:
        raise ValueError(f"uvm_loan: len must be positive, got {len}")
    if start < map.minva or start + len > map.maxva:
        raise ValueError(
            f"uvm_loan: [{start:#x}, {start + len:#x}) is outside the address space "
            f"[{map.minva:#x}, {map.maxva:#x}) of map {map.name!r}"
        )
    out: list[Page | Anon] = []
    va = start
    end = start + len
    try:
        _reserve_loan(map, start, end, flags)
        while va < end:
            entry = map.uvm_map_lookup_entry(va)
            if entry is None:
                raise _LoanFailure(f"no mapping at {va:#x}", ENOENT)
            stop = min(end, entry.end)
            while va < stop:
                out.append(_loan_one(map, entry, va, flags))
                va += ps
    except (_LoanFailure, UVMError) as e:
        # The helper's own errno (EBUSY for a wired page, the pager's error)
        # is folded into EINVAL as in NetBSD; the reason keeps its name.
        reason = (
            f"{errorcode.get(e.errno, str(e.errno))}: {e.reason}"
            if isinstance(e, _LoanFailure)
            else str(e)
        )
        errno = e.errno if isinstance(e, _LoanFailure) and e.errno == ENOENT else EINVAL
        undone = 0
        if flags & UVM_LOAN_TOPAGE:
            pages = [x for x in out if not isinstance(x, Anon)]
            uvm_unloanpage(map.uvm, pages)
            undone = len_(pages)
        elif map.uvm.platform.profile.unloananon_unrefs:
            # uvm_unloananon 1.29.2.4: the references taken so far are dropped.
            anons = [x for x in out if isinstance(x, Anon)]
            uvm_unloananon(map.uvm, anons)
            undone = len_(anons)
        plat = map.uvm.platform
        tr = plat.tracer
        if tr.on:
            if tr.full:
                tr.emit(LoanFail(plat.now(), plat.cur, map.name, errno, reason, undone))
            else:
                tr.count(LoanFail.KIND)
        raise UVMError(
            errno, f"uvm_loan of [{start:#x}, {end:#x}) failed: {reason}", reason=reason
        ) from None
    return out  # type: ignore[return-value]


len_ = len  # uvm_loan's parameter shadows the builtin, as in NetBSD's C.


def _reserve_loan(map: VMMap, start: int, end: int, flags: int) -> None:
    """Reserve the pages ``uvm_loan`` will allocate before it lends any.

    NetBSD's helpers sleep for memory (``uvmfault_anonget``, ``pgo_get``,
    ``uvm_wait("loanzero")``) and never fail with ENOMEM; the model counts
    what the range needs first (a swapped-out anon for TOPAGE, a file page
    not resident within EOF, the zero page on its first use), up to the
    first hole, and waits for it (``pdaemon.uvm_wait``) or fails with
    nothing changed.
    """
    uvm = map.uvm
    ps = map.page_size
    prof = uvm.platform.profile
    fresh = prof.zero_loan_style == "fresh"
    toanon = prof.toanon_objects
    topage = bool(flags & UVM_LOAN_TOPAGE)

    def need() -> int:
        n = 0
        zero = False
        va = start
        while va < end:
            e = map.uvm_map_lookup_entry(va)
            if e is None:
                break
            for a in range(va, min(end, e.end), ps):
                anon = e.amap.lookup(e.slot(a)) if e.amap is not None else None
                if anon is not None:
                    n += topage and anon.an_page is None
                elif e.object is not None:
                    off = e.objoff(a)
                    size = getattr(e.object, "size", None)
                    if size is not None and off >= size + (-size) % ps:
                        continue  # refused by genfs_getpages, nothing allocated
                    n += e.object.uvm_pagelookup(off) is None
                elif e.copy_on_write and not e.vaonly:
                    if (fresh and topage) or (toanon and not topage):
                        n += 1  # a fresh zeroed page per loan (1.29.2.4)
                    elif not fresh:
                        zero = True
            va = min(end, e.end)
        zobj = uvm.zero_object
        if zero and (zobj is None or zobj.uvm_pagelookup(0) is None):
            n += 1
        return n

    try:
        uvm_wait(uvm, need, "uvm_loan")
    except UVMError as e:
        raise _LoanFailure(e.message, ENOMEM) from None


def _loan_one(map: VMMap, entry: MapEntry, va: int, flags: int) -> Page | Anon:
    """``uvm_loanentry`` for one page: anon, then object, then zero page."""
    if entry.amap is not None:
        anon = entry.amap.lookup(entry.slot(va))
        if anon is not None:
            return uvm_loananon(map, anon, flags, va)
    if entry.object is not None:
        return uvm_loanuobj(map, entry, va, flags)
    if entry.copy_on_write and not entry.vaonly:
        return uvm_loanzero(map, flags, va)
    raise _LoanFailure(f"entry at {va:#x} has neither anon, object nor copy-on-write hole")


def uvm_loananon(map: VMMap, anon: Anon, flags: int, va: int = -1) -> Page | Anon:
    """Lend an anon's page (TOPAGE, A->K) or the anon itself (TOANON, A->A)."""
    uvm = map.uvm
    pmap = uvm.pmap
    assert pmap is not None
    if flags & UVM_LOAN_TOANON:
        pg = anon.an_page
        protected = False
        if pg is not None and pg.flags & PG.ANON and anon.an_ref == 1:
            # 1.29.2.4 protects without looking at wire_count.
            if pg.wire_count and uvm.platform.profile.wired_loans == "refuse":
                raise _LoanFailure(f"anon page {pg!r} is wired", EBUSY)
            pmap.pmap_page_protect(pg, VM_PROT_READ)
            protected = True
        anon.an_ref += 1
        if pg is not None:
            _emit_loan(uvm, "A->A", pg, va, protected, map.name)
        return anon
    if anon.an_page is None:
        from .fault import FaultCtx, uvmfault_anonget

        err = uvmfault_anonget(FaultCtx(map, va, VM_PROT_READ, False), anon)
        if err:
            raise _LoanFailure(f"cannot page in {anon!r}", err)
    elif anon.an_page.loan_count:
        # uvmfault_anonget runs for a resident page too: a loaned page may be
        # a disowned O->A page, which the anon adopts first (T7).
        uvm_anon_lockloanpg(anon)
    pg = anon.an_page
    assert pg is not None
    if pg.wire_count:
        if uvm.platform.profile.wired_loans == "refuse":
            raise _LoanFailure(f"anon page {pg!r} at {va:#x} is wired", EBUSY)
        # uvm_loan.c 1.29.2.4 uvm_loananon: KASSERT(pg->wire_count == 0).
        raise KernelAssertion(f"uvm_loananon: anon page {pg!r} at {va:#x} is wired")
    protected = _loan_page_locked(uvm, pg)
    _emit_loan(uvm, "A->K", pg, va, protected, map.name)
    return pg


def _loan_page_locked(uvm: PageAllocator, pg: Page) -> bool:
    """T1: protect on the 0 -> 1 transition, count, activate."""
    protected = False
    if pg.loan_count == 0 and "skip-loan-protect" not in uvm.inject:
        assert uvm.pmap is not None
        uvm.pmap.pmap_page_protect(pg, VM_PROT_READ)
        protected = True
    pg.loan_count += 1
    _ledger_add(uvm, pg)
    if uvm.platform.profile.loan_dequeues:
        uvm.uvm_pagedequeue(pg)
    else:
        uvm.uvm_pageactivate(pg)
    return protected


def uvm_loanuobj(map: VMMap, entry: MapEntry, va: int, flags: int) -> Page | Anon:
    """Lend an object page (O->K), or to an anon (O->A) where the profile's
    ``toanon_objects`` has it (1.29.2.4); 1.104 compiles O->A out."""
    uvm = map.uvm
    uobj = entry.object
    assert uobj is not None
    # 1.104 gets the page first (pgo_get, I/O if needed) and only then finds
    # the O->A code under #ifdef notdef: a TOANON request leaves the page
    # resident and fails.
    try:
        pg = _pgo_get_loan(uobj, entry.objoff(va))
    except UVMError as e:
        raise _LoanFailure(f"pgo_get failed: {e}", e.errno) from None
    if flags & UVM_LOAN_TOANON:
        if not uvm.platform.profile.toanon_objects:
            raise _LoanFailure(
                "object->anon loans are compiled out (uvm_loan.c 1.104 #ifdef notdef)"
            )
        return _loan_o2a(uvm, pg, va, map.name)
    uvm_loanpage(uvm, [pg], va, map.name)
    return pg


def _loan_o2a(uvm: PageAllocator, pg: Page, va: int, space: str) -> Anon:
    """O->A (``uvm_loanuobj``'s TOANON code, uvm_loan.c 1.29.2.4).

    A page already lent to an anon gives that anon one more reference (no
    protect, no count: the anon's one loan covers every reference).  Else a
    new anon (``an_ref`` 1) points at the page, which stays the object's:
    ``pg->uanon = anon`` without ``PQ_ANON``; write-protect on the page's
    first loan; ``loan_count++`` (the anon's loan); ``uvm_pageactivate``.
    """
    if pg.uanon is not None:
        anon: Anon = pg.uanon
        anon.an_ref += 1
        _emit_loan(uvm, "O->A", pg, va, False, space)
        return anon
    anon = uvm_analloc()
    anon.an_page = pg
    pg.uanon = anon
    protected = False
    if pg.loan_count == 0 and "skip-loan-protect" not in uvm.inject:
        assert uvm.pmap is not None
        uvm.pmap.pmap_page_protect(pg, VM_PROT_READ)
        protected = True
    pg.loan_count += 1
    pg.ever_loaned = True
    uvm.uvm_pageactivate(pg)
    _emit_loan(uvm, "O->A", pg, va, protected, space)
    return anon


def _pgo_get_loan(uobj: UVMObject, off: int) -> Page:
    """``pgo_get`` as the loan code sees it: a vnode refuses offsets past the
    page holding EOF with EINVAL (genfs_getpages' bounds check), as the fault
    path's lower layer does; other pagers as they are."""
    size = getattr(uobj, "size", None)
    if size is not None:
        ps = uobj.page_size
        if off >= size + (-size) % ps:
            raise UVMError(EINVAL, f"{uobj.name}: offset {off:#x} is past EOF ({size} bytes)")
    return uobj.pgo_get(off)


def uvm_loanpage(uvm: PageAllocator, pages: Sequence[Page], va: int = -1, space: str = "-") -> None:
    """Lend object pages (``uvm_loanpage``): EBUSY at the first wired one,
    after undoing the loans made so far."""
    done: list[Page] = []
    for pg in pages:
        # uvm_loanpage's KASSERTs: an object page of the first page's object,
        # neither being released nor being paged out.
        if pg.uobject is None or pg.uobject is not pages[0].uobject:
            raise KernelAssertion(f"uvm_loanpage: {pg!r} is not a page of {pages[0].uobject!r}")
        if pg.flags & (PG.RELEASED | PG.PAGEOUT):
            raise KernelAssertion(f"uvm_loanpage: {pg!r} is PG_RELEASED or PG_PAGEOUT")
        if pg.wire_count and uvm.platform.profile.wired_loans == "refuse":
            # 1.29.2.4's uvm_loanuobj lends a wired object page unchecked.
            uvm_unloanpage(uvm, done)
            raise _LoanFailure(f"object page {pg!r} is wired", EBUSY)
        protected = _loan_page_locked(uvm, pg)
        _emit_loan(uvm, "O->K", pg, va, protected, space)
        done.append(pg)


def loanzero_page(uvm: PageAllocator) -> Page | None:
    """The shared zero page, allocated on first use (``uvm_loan_init`` + ``uvm_loanzero``)."""
    zobj = uvm.zero_object
    if zobj is None:
        zobj = ZeroLoanObject(uvm, name="uvm_loanzero_object")
        uvm.zero_object = zobj
    pg = zobj.uvm_pagelookup(0)
    if pg is None:
        pg = uvm.uvm_pagealloc(zobj, 0, None, UVM_PGA_ZERO)
        if pg is None:
            return None
        pg.flags = (pg.flags & ~(PG.BUSY | PG.FAKE)) | PG.RDONLY
        uvm.uvm_pageactivate(pg)
    page: Page = pg
    return page


def _loan_zero2a(uvm: PageAllocator, va: int, space: str) -> Anon:
    """zero->A (``uvm_loanzero``'s TOANON code, uvm_loan.c 1.29.2.4): a new
    anon owning a new zeroed page (``PQ_ANON``), activated; no loan count."""
    anon = uvm_analloc()
    pg = uvm.uvm_pagealloc(None, 0, anon, UVM_PGA_ZERO)
    if pg is None:
        raise _LoanFailure("no page for a zero->anon loan", ENOMEM)
    pg.flags &= ~(PG.BUSY | PG.FAKE)
    uvm.uvm_pageactivate(pg)
    _emit_loan(uvm, "zero->A", pg, va, False, space)
    return anon


def uvm_loanzero(map: VMMap, flags: int, va: int = -1) -> Page | Anon:
    """Lend a copy-on-write hole: the one shared zero page, no protect, no
    wire check (``uvm_loanzero`` 1.104).  The 2002 era lent a fresh zeroed
    ownerless page instead (profile ``zero_loan_style = "fresh"``)."""
    uvm = map.uvm
    if flags & UVM_LOAN_TOANON:
        if uvm.platform.profile.toanon_objects:
            return _loan_zero2a(uvm, va, map.name)
        # 1.104 takes (allocating on first use) the zero page before it finds
        # the zero->anon code under #ifdef notdef.
        if uvm.platform.profile.zero_loan_style != "fresh":
            loanzero_page(uvm)
        raise _LoanFailure("zero->anon loans are compiled out (uvm_loan.c 1.104 #ifdef notdef)")
    if uvm.platform.profile.zero_loan_style == "fresh":
        pg = uvm.uvm_pagealloc(None, 0, None, UVM_PGA_ZERO)
        if pg is None:
            raise _LoanFailure("no page for a zero loan", ENOMEM)
        pg.flags &= ~(PG.BUSY | PG.FAKE)
    else:
        zpg = loanzero_page(uvm)
        if zpg is None:
            # NetBSD sleeps in uvm_wait("loanzero"); the model cannot.
            raise _LoanFailure("no page for the zero-loan object", ENOMEM)
        pg = zpg
    pg.loan_count += 1
    _ledger_add(uvm, pg)
    _emit_loan(uvm, "zero->K", pg, va, False, map.name)
    return pg


# --------------------------------------------------------------- unloaning


def uvm_unloan(items: Iterable[Page] | Iterable[Anon], flags: int) -> None:
    """Give loans back (``uvm_unloan``).

    TOPAGE: one ``loan_count`` decrement per item (``uvm_unloanpage``); an
    ownerless page reaching zero is freed.  TOANON: nothing, because
    ``uvm_unloananon`` has an empty body in 1.104 (no caller uses it).
    Items are validated before anything changes: a page not loaned as
    often as it appears raises ``KernelAssertion`` (NetBSD's
    ``KASSERT(pg->loan_count > 0)``) and changes nothing.
    """
    _check_flags(flags, "uvm_unloan")
    seq: list[object] = list(items)
    if flags & UVM_LOAN_TOANON:
        anons: list[Anon] = []
        for a in seq:
            if not isinstance(a, Anon):
                raise TypeError(f"uvm_unloan(TOANON): expected anons, got {type(a).__name__}")
            anons.append(a)
        owner = next((a.an_page.allocator for a in anons if a.an_page is not None), None)
        if owner is not None and owner.platform.profile.unloananon_unrefs:
            uvm_unloananon(owner, anons)
        return
    uvm: PageAllocator | None = None
    for pg in seq:
        if type(pg) is not Page and not isinstance(pg, Page):
            raise TypeError(f"uvm_unloan(TOPAGE): expected pages, got {type(pg).__name__}")
        if uvm is None:
            uvm = pg.allocator
        elif pg.allocator is not uvm:
            raise ValueError("uvm_unloan: pages of different machines")
    if uvm is None:
        return
    uvm_unloanpage(uvm, seq)  # type: ignore[arg-type]


def uvm_unloananon(uvm: PageAllocator, anons: Sequence[Anon]) -> None:
    """``uvm_unloananon`` as 1.29.2.4 has it: one ``an_ref--`` per item,
    ``uvm_anfree`` at zero.  All items are checked first: an anon given back
    more often than it is referenced raises ``KernelAssertion`` and nothing
    changes."""
    need: dict[Anon, int] = {}
    for a in anons:
        need[a] = need.get(a, 0) + 1
    for a, n in need.items():
        if a.an_ref < n:
            raise KernelAssertion(
                f"uvm_unloananon: {a!r} has {a.an_ref} reference(s), given back {n} times"
            )
    for a in anons:
        anon_unref(uvm, a)


def uvm_unloanpage(uvm: PageAllocator, pages: Sequence[Page]) -> None:
    """``uvm_unloanpage``: decrement, adopt an unadopted O->A page, free orphans."""
    # How often each page is given back; a plain dict, since building a
    # Counter costs more than the usual one-page unloan.
    need: dict[Page, int] = {}
    for pg in pages:
        need[pg] = need.get(pg, 0) + 1
    for pg, n in need.items():
        if pg.flags & PG.FREE or uvm.pages.get(pg.frame) is not pg:
            raise KernelAssertion(f"uvm_unloanpage: page of frame {pg.frame} is free")
        if pg.loan_count < n:
            raise KernelAssertion(
                f"uvm_unloanpage: {pg!r} has loan_count {pg.loan_count}, unloaned {n} times"
            )
    plat = uvm.platform
    tr = plat.tracer
    dequeues = plat.profile.loan_dequeues
    for pg in pages:
        pg.loan_count -= 1
        _ledger_drop(uvm, pg)
        if pg.uobject is None and pg.uanon is not None and not pg.flags & PG.ANON:
            # T7: the anon's loan becomes ownership.
            if pg.loan_count <= 0:
                raise KernelAssertion(f"uvm_unloanpage: adoption of {pg!r} with no anon loan")
            pg.loan_count -= 1
            pg.flags |= PG.ANON
            if tr.on:
                if tr.full:
                    tr.emit(Adopt(plat.now(), plat.cur, "-", pg.frame))
                else:
                    tr.count(Adopt.KIND)
        freed = pg.loan_count == 0 and pg.uobject is None and pg.uanon is None
        if tr.on:
            if tr.full:
                tr.emit(Unloan(plat.now(), plat.cur, "-", pg.frame, pg.loan_count, freed))
            else:
                tr.count(Unloan.KIND)
        if freed:
            if pg.flags & PG.BUSY:
                raise KernelAssertion(f"uvm_unloanpage: freeing busy {pg!r}")
            uvm.uvm_pagefree(pg)
        elif pg.loan_count == 0 and dequeues and not pg.wire_count:
            # 1.29.2.4: loaning had dequeued the page; its owner gets it back
            # on the active queue with the last loan.
            uvm.uvm_pageactivate(pg)


def uvm_loanuobjpages(uobj: UVMObject, pgoff: int, npages: int) -> list[Page]:
    """Lend ``npages`` object pages from ``pgoff`` (``uvm_loanuobjpages``).

    Used by the NFS server's read path.  Unlike ``uvm_loan`` it reports the
    real error: the pager's (e.g. ENOMEM) or EBUSY for a wired page; chunks
    of ``UVM_LOAN_GET_CHUNK`` pages, earlier chunks undone on failure.
    """
    if not isinstance(uobj, UVMObject):
        raise TypeError(f"uvm_loanuobjpages: uobj must be a UVMObject, not {type(uobj).__name__}")
    ps = uobj.page_size
    if not isinstance(pgoff, int) or pgoff < 0 or pgoff % ps:
        raise ValueError(f"uvm_loanuobjpages: pgoff {pgoff!r} must be a page-aligned offset")
    if not isinstance(npages, int) or npages <= 0:
        raise ValueError(f"uvm_loanuobjpages: npages must be positive, got {npages!r}")
    uvm = uobj.uvm
    _reserve_uobjpages(uobj, pgoff, npages)
    out: list[Page] = []
    for chunk in range(0, npages, UVM_LOAN_GET_CHUNK):
        n = min(UVM_LOAN_GET_CHUNK, npages - chunk)
        try:
            pages = [_pgo_get_loan(uobj, pgoff + (chunk + i) * ps) for i in range(n)]
            uvm_loanpage(uvm, pages)
        except _LoanFailure as e:
            uvm_unloanpage(uvm, out)
            raise UVMError(e.errno, f"uvm_loanuobjpages: {e.reason}", reason=e.reason) from None
        except UVMError:
            uvm_unloanpage(uvm, out)
            raise
        out.extend(pages)
    return out


def _reserve_uobjpages(uobj: UVMObject, pgoff: int, npages: int) -> None:
    """Reserve a page for every page of the request not resident (within
    EOF) before lending any (``genfs_getpages`` waits for memory)."""
    ps = uobj.page_size
    size = getattr(uobj, "size", None)
    limit = size + (-size) % ps if size is not None else None

    def need() -> int:
        return sum(
            1
            for i in range(npages)
            if (limit is None or pgoff + i * ps < limit)
            and uobj.uvm_pagelookup(pgoff + i * ps) is None
        )

    uvm_wait(uobj.uvm, need, "uvm_loanuobjpages")


# ------------------------------------------------------------ loan breaking


def _trace_break(
    old: Page, newpg: Page, kind: str, where: str, va: int, space: str, *, orphan: bool
) -> None:
    """Trace a loan break of ``kind`` ("object" or "anon"): a LoanBreak and,
    when the old page is left without an owner (``orphan``) but with loans,
    an Orphan."""
    plat = old.allocator.platform
    tr = plat.tracer
    if not tr.full:
        tr.tally(LoanBreak.keys(kind))
        if orphan and old.loan_count:
            tr.count(Orphan.KIND)
        return
    tr.emit(
        LoanBreak(
            plat.now(), plat.cur, space, kind, old.frame, newpg.frame, old.loan_count, where, va
        )
    )
    if orphan and old.loan_count:
        tr.emit(Orphan(plat.now(), plat.cur, "-", old.frame, old.loan_count, "loan break"))


def uvm_loanbreak(
    uobjpage: Page, where: str = "fault", va: int = -1, space: str = "-"
) -> Page | None:
    """Replace a loaned object page by a copy (``uvm_loanbreak`` 1.104).

    The copy takes the page's place in the object; the old page loses every
    user mapping and its owner but keeps its loans and bytes: an orphan the
    borrowers still read.  None when no page can be allocated (nothing
    changed).
    """
    uvm = uobjpage.allocator
    pmap = uvm.pmap
    assert pmap is not None
    if uobjpage.uobject is None:
        raise KernelAssertion(f"uvm_loanbreak: {uobjpage!r} has no object")
    newpg = uvm.uvm_pagealloc(None, 0, None, 0)
    if newpg is None:
        return None
    uvm.uvm_pagecopy(uobjpage, newpg)
    newpg.flags &= ~PG.FAKE
    pmap.pmap_page_protect(uobjpage, VM_PROT_NONE)
    uobjpage.flags &= ~PG.BUSY
    if uobjpage.uanon is None:
        uvm.uvm_pagedequeue(uobjpage)
    uvm.uvm_pagereplace(uobjpage, newpg)
    uvm.uvm_pageactivate(newpg)
    newpg.flags &= ~PG.BUSY
    if uvm.platform.tracer.on:
        _trace_break(uobjpage, newpg, "object", where, va, space, orphan=uobjpage.uanon is None)
    return newpg


def uvm_loanbreak_anon(
    anon: Anon, uobj: UVMObject | None, where: str = "fault", va: int = -1, space: str = "-"
) -> int:
    """Give ``anon`` a private copy of its loaned page (``uvm_loanbreak_anon``).

    ``uobj is None``: the anon was the lender (A->K); the old page becomes an
    orphan with its loans.  ``uobj`` given: the anon was an O->A receiver;
    the old page drops the anon's loan and stays with the object.  Returns 0
    or ENOMEM (nothing changed).
    """
    old = anon.an_page
    if old is None or old.loan_count <= 0:
        raise KernelAssertion(f"uvm_loanbreak_anon: {anon!r} has no loaned page")
    uvm = old.allocator
    pmap = uvm.pmap
    assert pmap is not None
    newpg = uvm.uvm_pagealloc(None, 0, None, 0)
    if newpg is None:
        return ENOMEM
    uvm.uvm_pagecopy(old, newpg)
    pmap.pmap_page_protect(old, VM_PROT_NONE)
    if uobj is None:
        if not old.flags & PG.ANON:
            raise KernelAssertion(f"uvm_loanbreak_anon: lender {old!r} is not PG_ANON")
        old.flags &= ~PG.ANON
        uvm.uvm_pagedequeue(old)
    old.uanon = None
    if uobj is not None:
        old.loan_count -= 1
    anon.an_page = newpg
    newpg.uanon = anon
    newpg.flags |= PG.ANON
    uvm.uvm_pageactivate(newpg)
    newpg.flags &= ~(PG.BUSY | PG.FAKE)
    if uvm.platform.tracer.on:
        _trace_break(old, newpg, "anon", where, va, space, orphan=old.uobject is None)
    return 0


def uvm_anon_lockloanpg(anon: Anon) -> Page | None:
    """Adopt an O->A page whose object let go of it (T7, ``uvm_anon_lockloanpg``)."""
    pg = anon.an_page
    if pg is not None and pg.uobject is None and not pg.flags & PG.ANON and pg.loan_count:
        pg.flags |= PG.ANON
        pg.loan_count -= 1
        plat = pg.allocator.platform
        tr = plat.tracer
        if tr.on:
            if tr.full:
                tr.emit(Adopt(plat.now(), plat.cur, "-", pg.frame))
            else:
                tr.count(Adopt.KIND)
    return pg


LoanFlags = Literal[1, 2]

__all__ = [
    "UVM_LOAN_GET_CHUNK",
    "ZeroLoanObject",
    "uvm_anon_lockloanpg",
    "uvm_loan",
    "uvm_loananon",
    "uvm_loanbreak",
    "uvm_loanbreak_anon",
    "uvm_loanpage",
    "uvm_loanuobj",
    "uvm_loanuobjpages",
    "uvm_loanzero",
    "uvm_unloan",
    "uvm_unloanpage",
]
