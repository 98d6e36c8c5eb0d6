"""Page loaning (``uvmloan/loan.py``): the rules the mutation run of the
module found unchecked (TESTING.md, "Python: the kernel modules").

Rules and NetBSD sources: specs/loan.md (uvm_loan.c 1.104), specs/eras.md
(uvm_loan.c 1.29.2.4, the netbsd-1.6 profile), the loan digest's tables 1.4
and 1.5; genfs_getpages' EOF check (specs/fault.md).  The trace fields
checked here are the ones specs/trace.md names for each event.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import PS, events

from uvmloan import KernelAssertion, Machine, check_invariants, uvm_loan, uvm_loanuobjpages
from uvmloan.anon import Anon, anon_unref
from uvmloan.errors import InvariantViolation, UVMError
from uvmloan.inject import inject
from uvmloan.loan import (
    ZeroLoanObject,
    uvm_anon_lockloanpg,
    uvm_loanbreak,
    uvm_loanbreak_anon,
    uvm_loanpage,
    uvm_loanuobj,
    uvm_loanzero,
)
from uvmloan.object import PGO_FREE, VnodeObject
from uvmloan.page import Page
from uvmloan.param import (
    EBUSY,
    EINVAL,
    ENOMEM,
    MAP_SHARED,
    PG,
    UVM_LOAN_TOANON,
    UVM_LOAN_TOPAGE,
    UVM_PGA_ZERO,
)
from uvmloan.pmap.pte import PTE_W
from uvmloan.process import Process
from uvmloan.testing.loan_ops import page_role
from uvmloan.trace import Adopt, Loan, LoanBreak, Orphan

OLD, NEW = "netbsd-1.6", "netbsd-10"


@pytest.fixture
def new() -> Iterator[Machine]:
    m = Machine(ncpus=2, memory="1M", profile=NEW, trace="record")
    yield m
    m.close()


@pytest.fixture
def old() -> Iterator[Machine]:
    m = Machine(ncpus=2, memory="1M", profile=OLD, trace="record")
    yield m
    m.close()


def _file(
    m: Machine, data: bytes, npages: int, name: str = "f"
) -> tuple[VnodeObject, Process, int]:
    """A vnode holding ``data``, mapped shared over ``npages`` pages by a
    process "p" on CPU 1; the first page written through the mapping."""
    vn = m.vnode(data, name=name)
    p = m.spawn("p", cpu=1)
    va = p.mmap(npages * PS, flags=MAP_SHARED, obj=vn)
    p.write(va, b"w")
    return vn, p, va


def _one(xs: list[Page] | list[Anon]) -> Page | Anon:
    assert len(xs) == 1
    return xs[0]


def _loan_page(p: Process, va: int) -> Page:
    pg = _one(uvm_loan(p.map, va, PS, UVM_LOAN_TOPAGE))
    assert isinstance(pg, Page)
    return pg


def _loan_anon(p: Process, va: int) -> Anon:
    a = _one(uvm_loan(p.map, va, PS, UVM_LOAN_TOANON))
    assert isinstance(a, Anon)
    return a


def _dirty_frame(m: Machine) -> int:
    """Allocate a page, fill it with 0xa5 and free it: the next allocation
    reuses that frame (the free stack is last in, first out), so a page
    that must be zeroed is seen not to be zero if nobody zeroes it."""
    pg = m.uvm.uvm_pagealloc(None, 0, None, 0)
    assert pg is not None
    m.physmem.copyin([pg.frame], 0, b"\xa5" * PS)
    pg.flags &= ~PG.BUSY
    frame = pg.frame
    m.uvm.uvm_pagefree(pg)
    return frame


def _squeeze(m: Machine, free: int) -> None:
    """Leave exactly ``free`` frames allocatable (``PageAllocator.limit``)."""
    m.uvm.limit = m.uvm.allocated + free


# ------------------------------------------------------- events of each kind


def test_object_loan_event_names_the_map_and_address(new: Machine) -> None:
    """O->K (uvm_loanuobj -> uvm_loanpage): one Loan event in the lending
    map's space at the page's VA, the first loan protecting the page."""
    _vn, p, va = _file(new, b"o" * PS, 1)
    pg = _loan_page(p, va)
    (ev,) = events(new, Loan)
    assert (ev.kind, ev.frame, ev.va, ev.loan_count, ev.space) == ("O->K", pg.frame, va, 1, "p")
    assert ev.protected is True and ev.cpu == 0


def test_uvm_loanuobjpages_events_have_no_space_and_no_va(new: Machine) -> None:
    """uvm_loanuobjpages (the NFS server's path) lends from the object, not a
    map: its Loan events carry the "-" space and no VA (-1)."""
    vn = new.vnode(b"o" * (2 * PS), name="f")
    pages = uvm_loanuobjpages(vn, 0, 2)
    got = [(e.kind, e.frame, e.va, e.loan_count, e.space, e.protected) for e in events(new, Loan)]
    assert got == [("O->K", pg.frame, -1, 1, "-", True) for pg in pages]


def test_zero_loan_event_names_the_map(new: Machine) -> None:
    """zero->K (uvm_loanzero 1.104): no protect, loan_count 1 then 2."""
    p = new.spawn("p")
    va = p.mmap(2 * PS)
    a, b = uvm_loan(p.map, va, 2 * PS, UVM_LOAN_TOPAGE)
    assert a is b
    got = [(e.kind, e.va, e.loan_count, e.protected, e.space) for e in events(new, Loan)]
    assert got == [("zero->K", va, 1, False, "p"), ("zero->K", va + PS, 2, False, "p")]


def test_o2a_events_and_counters(old: Machine) -> None:
    """1.29.2.4 uvm_loanuobj TOANON: the first O->A loan protects (loan_count
    0 -> 1); a second finds pg->uanon and only takes a reference (no
    protect, count still 1).  Both are "O->A" loans in the lending map."""
    vn, p, va = _file(old, b"o" * PS, 1)
    a = _loan_anon(p, va)
    assert _loan_anon(p, va) is a and a.an_ref == 2
    pg = vn.uvm_pagelookup(0)
    assert pg is not None and pg.loan_count == 1
    got = [(e.kind, e.frame, e.va, e.loan_count, e.protected, e.space) for e in events(old, Loan)]
    assert got == [("O->A", pg.frame, va, 1, True, "p"), ("O->A", pg.frame, va, 1, False, "p")]
    assert old.counters["loan.O->A"] == 2 and old.counters["loan"] == 2


def test_o2a_counters_without_recording() -> None:
    m = Machine(ncpus=2, memory="1M", profile=OLD)  # counters only
    _vn, p, va = _file(m, b"o" * PS, 1)
    _loan_anon(p, va)
    _loan_anon(p, va)
    p.mmap(PS, addr=0x400000)
    uvm_loan(p.map, 0x400000, PS, UVM_LOAN_TOANON)  # a zero->A loan
    assert (m.counters["loan.O->A"], m.counters["loan.zero->A"], m.counters["loan"]) == (2, 1, 3)
    m.close()


def test_o2a_on_top_of_a_kernel_loan(old: Machine) -> None:
    """O->A of a page already lent to the kernel: loan_count 1 -> 2 (the
    header comment: an O page can be lent to an A and a K at once); no
    second protect (only the 0 -> 1 transition protects)."""
    _vn, p, va = _file(old, b"o" * PS, 1)
    pg = _loan_page(p, va)
    a = _loan_anon(p, va)
    assert a.an_page is pg and pg.loan_count == 2
    last = events(old, Loan)[-1]
    assert (last.kind, last.loan_count, last.protected) == ("O->A", 2, False)
    check_invariants(old)


def test_o2a_with_skip_loan_protect_leaves_the_mapping_writable(old: Machine) -> None:
    """The injected bug skips the 0 -> 1 protect of an O->A loan too (so the
    invariant checks can be shown to catch it)."""
    _vn, p, va = _file(old, b"o" * PS, 1)
    inject(old, "skip-loan-protect")
    _loan_anon(p, va)
    assert p.map.pmap.ptes[va] & PTE_W
    assert events(old, Loan)[-1].protected is False


def test_zero2a_event_and_a_zeroed_page(old: Machine) -> None:
    """1.29.2.4 uvm_loanzero TOANON: uvm_pagealloc(NULL, 0, anon,
    UVM_PGA_ZERO): the anon's page is zero even on a frame that held
    data; the "zero->A" event has no loan count and no protect."""
    frame = _dirty_frame(old)
    p = old.spawn("p")
    va = p.mmap(PS)
    a = _loan_anon(p, va)
    assert a.an_page is not None and a.an_page.frame == frame
    assert bytes(old.physmem.frame_view(frame)) == bytes(PS)
    (ev,) = events(old, Loan)
    assert (ev.kind, ev.frame, ev.va, ev.loan_count, ev.space) == ("zero->A", frame, va, 0, "p")
    assert ev.protected is False


@pytest.mark.parametrize("era", [NEW, OLD])
def test_zero_page_lent_to_the_kernel_is_zero_on_a_reused_frame(era: str) -> None:
    """uvm_loanzero: 1.104's shared zero page and 1.29.2.4's fresh page are
    both allocated with UVM_PGA_ZERO: the borrower reads zeros."""
    m = Machine(ncpus=2, memory="1M", profile=era)
    frame = _dirty_frame(m)
    p = m.spawn("p")
    va = p.mmap(PS)
    pg = _loan_page(p, va)
    assert pg.frame == frame and bytes(m.physmem.frame_view(frame)) == bytes(PS)
    m.close()


# ------------------------------------------------------------ failure reasons


def test_compiled_out_reasons_are_spelled_out(new: Machine) -> None:
    _vn, p, va = _file(new, b"o" * PS, 1)
    with pytest.raises(UVMError) as ei:
        _loan_anon(p, va)
    assert ei.value.reason == (
        "EINVAL: object->anon loans are compiled out (uvm_loan.c 1.104 #ifdef notdef)"
    )
    hole = p.mmap(PS)
    with pytest.raises(UVMError) as ei:
        _loan_anon(p, hole)
    assert ei.value.reason == (
        "EINVAL: zero->anon loans are compiled out (uvm_loan.c 1.104 #ifdef notdef)"
    )


def test_loan_past_eof_names_the_pagers_error(new: Machine) -> None:
    """A mapping longer than its file: the page past the one holding EOF is
    refused by genfs_getpages (EINVAL), and uvm_loan folds that -1 into
    EINVAL, keeping the pager's words in the reason."""
    vn, p, va = _file(new, b"o" * PS, 2)
    with pytest.raises(UVMError) as ei:
        uvm_loan(p.map, va, 2 * PS, UVM_LOAN_TOPAGE)
    assert ei.value.errno == EINVAL
    assert ei.value.reason == (
        "EINVAL: pgo_get failed: [EINVAL] f: offset 0x1000 is past EOF (4096 bytes)"
    )
    pg = vn.uvm_pagelookup(0)
    assert pg is not None and pg.loan_count == 0  # the first page's loan undone


def test_wired_object_page_reason(new: Machine) -> None:
    """1.104 uvm_loanpage: EBUSY for a wired page, folded into EINVAL."""
    _vn, p, va = _file(new, b"o" * PS, 1)
    p.mlock(va, PS)
    with pytest.raises(UVMError) as ei:
        _loan_page(p, va)
    assert ei.value.errno == EINVAL
    assert ei.value.reason is not None
    assert ei.value.reason.startswith("EBUSY: object page <Page ")
    assert ei.value.reason.endswith("> is wired")


def test_uvm_loanpage_direct_refusal_names_the_page(new: Machine) -> None:
    """uvm_loanpage itself returns EBUSY for a wired page: the error it
    raises carries EBUSY and the page in its words."""
    vn, p, va = _file(new, b"o" * PS, 1)
    p.mlock(va, PS)
    pg = vn.uvm_pagelookup(0)
    assert pg is not None
    with pytest.raises(UVMError, match=r"^\[EBUSY\] object page <Page .*> is wired$") as ei:
        uvm_loanpage(new.uvm, [pg])
    assert ei.value.errno == EBUSY  # a documented error, not a private one
    assert pg.loan_count == 0


def test_uvm_loanuobjpages_errors(new: Machine) -> None:
    """uvm_loanuobjpages reports the real error (EBUSY, not EINVAL) and the
    wrong uobj by its type."""
    with pytest.raises(TypeError, match=r"^uvm_loanuobjpages: uobj must be a UVMObject, not int$"):
        uvm_loanuobjpages(42, 0, 1)  # type: ignore[arg-type]
    vn, p, va = _file(new, b"o" * PS, 1)
    p.mlock(va, PS)
    with pytest.raises(UVMError) as ei:
        uvm_loanuobjpages(vn, 0, 1)
    assert ei.value.errno == EBUSY
    assert ei.value.reason is not None
    assert ei.value.reason.startswith("object page <Page ") and ei.value.reason.endswith("wired")
    assert ei.value.message == f"uvm_loanuobjpages: {ei.value.reason}"


# ------------------------------------------------------ EOF and reservations


def test_the_page_holding_eof_is_lent(new: Machine) -> None:
    """genfs_getpages refuses offsets from round_page(size) on: a file of
    4097 bytes has two pages, the second holding its last byte."""
    vn = new.vnode(b"o" * PS + b"z", name="f")
    (pg,) = uvm_loanuobjpages(vn, PS, 1)
    assert pg.loan_count == 1 and bytes(new.physmem.frame_view(pg.frame)[:2]) == b"z\0"


def test_the_page_past_eof_is_refused(new: Machine) -> None:
    """A file of 7096 bytes has two pages (round_page = 8192): offset 8192
    is past EOF."""
    vn = new.vnode(b"o" * 7096, name="f")
    with pytest.raises(UVMError) as ei:
        uvm_loanuobjpages(vn, 2 * PS, 1)
    assert ei.value.errno == EINVAL
    assert ei.value.message == "f: offset 0x2000 is past EOF (7096 bytes)"


def test_loanuobjpages_reserves_only_pages_within_eof(new: Machine) -> None:
    """A request reaching past EOF with memory for the pages within it:
    genfs_getpages checks EOF before it allocates, so the answer is
    EINVAL (the pages within EOF could be had), not ENOMEM."""
    vn = new.vnode(b"o" * 7096, name="f")  # two pages, not resident yet
    assert vn.uvm_pagelookup(0) is None and vn.uvm_pagelookup(PS) is None
    _squeeze(new, 2)
    with pytest.raises(UVMError) as ei:
        uvm_loanuobjpages(vn, 0, 3)
    assert ei.value.errno == EINVAL
    assert all(pg.loan_count == 0 for pg in vn.uo_pages.values())


@pytest.mark.parametrize(("size", "npages"), [(100, 1), (PS + 1, 2)])
def test_loanuobjpages_reserves_every_page_within_eof(new: Machine, size: int, npages: int) -> None:
    """Every page up to the one holding EOF needs a frame: with one frame
    too few the request fails before any page is read (ENOMEM, named)."""
    vn = new.vnode(b"o" * size, name="f")
    _squeeze(new, npages - 1)
    with pytest.raises(UVMError) as ei:
        uvm_loanuobjpages(vn, 0, npages)
    assert ei.value.errno == ENOMEM
    assert ei.value.message == (
        f"uvm_loanuobjpages: needs {npages} free pages, {npages - 1} available"
    )
    assert not vn.uo_pages  # nothing read


def test_loanuobjpages_of_an_aobj(new: Machine) -> None:
    """An aobj has no size (no EOF): uao_get zero-fills every page asked."""
    ao = new.aobj(name="ao")
    pages = uvm_loanuobjpages(ao, 0, 2)
    assert [pg.loan_count for pg in pages] == [1, 1]
    assert all(bytes(new.physmem.frame_view(pg.frame)) == bytes(PS) for pg in pages)


# ------------------------------------------------------- direct uvm_loanzero


@pytest.mark.parametrize(
    ("era", "flags", "reason"),
    [
        (NEW, UVM_LOAN_TOPAGE, "no page for the zero-loan object"),
        (OLD, UVM_LOAN_TOPAGE, "no page for a zero loan"),
        (OLD, UVM_LOAN_TOANON, "no page for a zero->anon loan"),
    ],
)
def test_uvm_loanzero_without_memory(era: str, flags: int, reason: str) -> None:
    """uvm_loanzero called directly (without uvm_loan's reservation) on a
    machine with no free frame: ENOMEM and what could not be had."""
    m = Machine(ncpus=2, memory="1M", profile=era)
    p = m.spawn("p")
    va = p.mmap(PS)
    _squeeze(m, 0)
    with pytest.raises(UVMError, match=rf"^\[ENOMEM\] {reason}$") as ei:
        uvm_loanzero(p.map, flags, va)
    assert ei.value.errno == ENOMEM and ei.value.reason == reason
    m.close()


def test_fresh_zero_style_never_makes_the_shared_zero_page() -> None:
    """The zero page of uvm_loanzero_object is 1.104's (zero_loan_style
    "shared"): a profile lending fresh pages does not allocate it, even for
    a TOANON request that fails because zero->A is compiled out."""
    m = Machine(
        ncpus=2,
        memory="1M",
        profile=OLD,
        profile_overrides={"toanon_objects": False},
    )
    p = m.spawn("p")
    va = p.mmap(PS)
    before = m.uvm.allocated
    with pytest.raises(UVMError):
        _loan_anon(p, va)
    assert m.uvm.zero_object is None and m.uvm.allocated == before
    m.close()


def test_zero_object_pager_without_its_page() -> None:
    m = Machine(ncpus=2, memory="1M")
    z = ZeroLoanObject(m.uvm, name="z")
    assert z.pgo_put(0, PS, 0) == 0  # ulz_put: nothing to do without PGO_FREE
    with pytest.raises(KernelAssertion, match=r"^ulz_put: uvm_loanzero_object has no page$"):
        z.pgo_put(0, PS, PGO_FREE)
    m.close()


# ---------------------------------------------------------------- A->A, T7


def _o2a_in_amap(m: Machine) -> tuple[Process, int, Anon, Page, VnodeObject]:
    """1.29.2.4: an O->A anon of a file page, placed in a private anon
    mapping of process "q" on CPU 1 (as an anon the O->A loan made for a
    borrower's amap)."""
    vn, p, fva = _file(m, b"o" * PS, 1)
    a = _loan_anon(p, fva)
    pg = a.an_page
    assert pg is not None
    q = m.spawn("q", cpu=1)
    va = q.mmap(PS)
    q.write(va, b"x")
    e = q.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    prev = e.amap.lookup(e.slot(va))
    assert prev is not None
    e.amap.add(e.slot(va), a, replace=True)
    anon_unref(m.uvm, prev)
    return q, va, a, pg, vn


def test_a2a_loan_of_an_o2a_anon_does_not_protect(old: Machine) -> None:
    """uvm_loananon TOANON protects only a PQ_ANON page with an_ref 1: an
    anon holding an object's page (no PQ_ANON) just gains a reference."""
    q, va, a, pg, _vn = _o2a_in_amap(old)
    n = len(events(old, Loan))
    assert _loan_anon(q, va) is a and a.an_ref == 2 and pg.loan_count == 1
    (ev,) = events(old, Loan)[n:]
    assert (ev.kind, ev.frame, ev.protected) == ("A->A", pg.frame, False)


def test_adoption_event(old: Machine) -> None:
    """T7: uvm_anon_lockloanpg turns the anon's loan of a disowned O->A page
    into ownership, and says so (an Adopt of that frame, on the CPU doing
    it, stamped with its clock)."""
    _q, _va, a, pg, vn = _o2a_in_amap(old)
    vn.truncate(0)
    assert page_role(pg) == "ANON-UNADOPTED"
    t0 = old.platform.now()
    assert uvm_anon_lockloanpg(a) is pg
    t1 = old.platform.now()
    assert page_role(pg) == "ANON" and pg.loan_count == 0
    (ev,) = events(old, Adopt)
    assert (ev.frame, ev.cpu, ev.space) == (pg.frame, 0, "-")  # a direct call: CPU 0
    assert isinstance(ev.t, int) and t0 <= ev.t <= t1


def test_adoption_counted_without_recording() -> None:
    m = Machine(ncpus=2, memory="1M", profile=OLD)
    _q, _va, a, _pg, vn = _o2a_in_amap(m)
    vn.truncate(0)
    uvm_anon_lockloanpg(a)
    assert m.counters["loan.adopt"] == 1
    m.close()


def test_i6_watches_a_page_lent_to_an_anon(old: Machine) -> None:
    """I6 applies to every page that was lent, an O->A loan included: if
    the anon let go of a disowned page without freeing it, the checker
    reports the orphan."""
    _q, _va, a, pg, vn = _o2a_in_amap(old)
    vn.truncate(0)
    # The bug simulated: the anon drops the page and its loan, nobody frees it.
    a.an_page = None
    pg.uanon = None
    pg.loan_count = 0
    with pytest.raises(InvariantViolation, match=r"^I6: orphan .* outlived its last loan$"):
        check_invariants(old)


# ---------------------------------------------------------------- loan breaks


def test_object_loan_break_events(new: Machine) -> None:
    """uvm_loanbreak from the fault handler: a LoanBreak in the faulting
    map's space at the faulting VA, and the old page, left ownerless with
    its loan, an Orphan (space "-")."""
    vn, p, va = _file(new, b"o" * PS, 1)
    pg = _loan_page(p, va)
    p.write(va + 8, b"n")
    new_pg = vn.uvm_pagelookup(0)
    assert new_pg is not None and new_pg is not pg
    (br,) = events(new, LoanBreak)
    assert (br.kind, br.old_frame, br.new_frame, br.loan_count, br.where, br.va, br.space) == (
        "object",
        pg.frame,
        new_pg.frame,
        1,
        "fault",
        va,
        "p",
    )
    (orph,) = events(new, Orphan)
    assert (orph.frame, orph.loan_count, orph.why, orph.space) == (pg.frame, 1, "loan break", "-")


def test_uvm_loanbreak_defaults(new: Machine) -> None:
    """Called without a caller's context the break is a "fault" with no VA
    in no address space."""
    vn = new.vnode(b"o" * PS, name="f")
    (pg,) = uvm_loanuobjpages(vn, 0, 1)
    assert uvm_loanbreak(pg) is not None
    (br,) = events(new, LoanBreak)
    assert (br.where, br.va, br.space) == ("fault", -1, "-")


def test_uvm_loanbreak_takes_no_reserve_page(new: Machine) -> None:
    """uvm_loanbreak allocates with uvm_pagealloc(NULL, 0, NULL, 0): not from
    the reserve (UVM_PGA_USERESERVE); without a free page it fails."""
    vn = new.vnode(b"o" * PS, name="f")
    (pg,) = uvm_loanuobjpages(vn, 0, 1)
    new.uvm.reserve = 4
    _squeeze(new, 4)  # only the reserve is left
    assert uvm_loanbreak(pg) is None
    assert vn.uvm_pagelookup(0) is pg and pg.loan_count == 1


def test_uvm_loanbreak_of_an_ownerless_page(new: Machine) -> None:
    pg = new.uvm.uvm_pagealloc(None, 0, None, UVM_PGA_ZERO)
    assert pg is not None
    with pytest.raises(KernelAssertion, match=r"^uvm_loanbreak: <Page .*> has no object$"):
        uvm_loanbreak(pg)


def _lent_anon(m: Machine) -> tuple[Process, int, Anon, Page]:
    p = m.spawn("p", cpu=1)
    va = p.mmap(PS)
    p.write(va, b"a")
    pg = _loan_page(p, va)
    a = pg.uanon
    assert isinstance(a, Anon)
    return p, va, a, pg


def test_anon_loan_break_events(new: Machine) -> None:
    p, va, a, pg = _lent_anon(new)
    p.write(va, b"b")
    assert a.an_page is not pg
    (br,) = events(new, LoanBreak)
    assert (br.kind, br.where, br.va, br.space, br.loan_count) == ("anon", "fault", va, "p", 1)


def test_uvm_loanbreak_anon_defaults(new: Machine) -> None:
    _p, _va, a, _pg = _lent_anon(new)
    assert uvm_loanbreak_anon(a, None) == 0
    (br,) = events(new, LoanBreak)
    assert (br.where, br.va, br.space) == ("fault", -1, "-")


def test_uvm_loanbreak_anon_takes_no_reserve_page(new: Machine) -> None:
    """uvm_loanbreak_anon: uvm_pagealloc(NULL, 0, NULL, 0), no reserve."""
    _p, _va, a, pg = _lent_anon(new)
    new.uvm.reserve = 4
    _squeeze(new, 4)
    assert uvm_loanbreak_anon(a, None) == ENOMEM
    assert a.an_page is pg and pg.loan_count == 1


def test_uvm_loanbreak_anon_assertions(old: Machine) -> None:
    """A lender anon's page is PG_ANON; an O->A anon's page is not, and
    breaking it as a lender (uobj NULL) is a KASSERT."""
    with pytest.raises(
        KernelAssertion, match=r"^uvm_loanbreak_anon: <Anon .*> has no loaned page$"
    ):
        uvm_loanbreak_anon(Anon(), None)
    _vn, p, va = _file(old, b"o" * PS, 1)
    a = _loan_anon(p, va)
    with pytest.raises(
        KernelAssertion, match=r"^uvm_loanbreak_anon: lender <Page .*> is not PG_ANON$"
    ):
        uvm_loanbreak_anon(a, None)


@pytest.mark.parametrize("trace", ["record", "counters"])
def test_break_of_a_page_kept_by_an_anon_orphans_nothing(trace: str) -> None:
    """O->A + O->K, then a write through the file: uvm_loanbreak gives the
    object a copy; the old page keeps its anon (pg->uanon), so it is no
    orphan although it still has loans."""
    m = Machine(ncpus=2, memory="1M", profile=OLD, trace=trace)
    _vn, p, va = _file(m, b"o" * PS, 1)
    a = _loan_anon(p, va)
    pg = _loan_page(p, va)
    p.write(va, b"n")
    assert a.an_page is pg and pg.loan_count == 2 and pg.uobject is None
    assert m.counters["loan.break"] == 1 and m.counters["loan.orphan"] == 0
    if trace == "record":
        assert not events(m, Orphan)
    m.close()


def test_uvm_loanuobj_direct_keeps_the_pagers_errno(new: Machine) -> None:
    """uvm_loanuobj called directly (without uvm_loan's reservation): a page
    the pager cannot allocate fails with the pager's ENOMEM, not uvm_loan's
    EINVAL (that folding is uvm_loan's, table 1.5)."""
    vn, p, va = _file(new, b"o" * (2 * PS), 2)
    assert vn.uvm_pagelookup(PS) is None  # the second page is not resident
    e = p.map.uvm_map_lookup_entry(va + PS)
    assert e is not None
    _squeeze(new, 0)
    with pytest.raises(UVMError, match=r"^\[ENOMEM\] pgo_get failed: ") as ei:
        uvm_loanuobj(p.map, e, va + PS, UVM_LOAN_TOPAGE)
    assert getattr(ei.value, "errno", None) == ENOMEM
