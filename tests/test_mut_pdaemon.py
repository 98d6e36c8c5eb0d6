"""The pagedaemon (``uvmloan/pdaemon.py``): the rules the mutation run of the
module found unchecked (TESTING.md, "Python: the kernel modules").

``uvmpd_scan_queue`` and ``uvmpd_trylockowner`` (uvm_pdaemon.c 1.133.16.1):
wired and busy pages are skipped, an object page goes through its pager
(``PGO_CLEANIT|PGO_FREE``, that one page), an anon page is paged out only if
it is dirty (or has no copy in swap) and a clean one with a swap copy is just
freed, a loaned page becomes an orphan, and a disowned O->A page is adopted
first.  The rules are in specs/loan.md (the pagedaemon, T7) and
specs/fault.md 7 (the dirtiness status).
"""

from __future__ import annotations

import pytest
from helpers import PS, events, machine_fixture, zeroed_page

from uvmloan import (
    MAP_SHARED,
    Machine,
    UVMError,
    check_invariants,
    uvm_loan,
    uvm_loanuobjpages,
    uvm_unloan,
)
from uvmloan.anon import Anon, anon_unref
from uvmloan.errors import KernelAssertion
from uvmloan.page import Page
from uvmloan.param import ENOMEM, PG, UVM_LOAN_TOPAGE
from uvmloan.pdaemon import uvm_wait, uvmpd_reclaim_page, uvmpd_scan
from uvmloan.process import Process
from uvmloan.testing.loan_ops import anon_at, page_at, page_role
from uvmloan.trace import Adopt, Reclaim

m = machine_fixture(ncpus=2, memory="1M", trace="record")


def _file_pages(m: Machine, n: int, name: str = "f") -> list[Page]:
    """``n`` clean resident pages of a file, read in from its backing store."""
    vn = m.vnode(bytes(range(n)) * PS, name=name)
    return [vn.pgo_get(i * PS) for i in range(n)]


def _one(pg: Page | None) -> Page:
    assert pg is not None
    return pg


# ------------------------------------------------- what a page's result is


def test_skipped_pages_say_why_and_count_as_skipped(m: Machine) -> None:
    """Wired and busy pages stay (uvmpd_scan_queue skips them), so does a
    page nobody owns; the trace counts every one as ``pdaemon.skipped``."""
    wired, busy = _file_pages(m, 2)
    m.uvm.uvm_pagewire(wired)
    busy.flags |= PG.BUSY
    loose = zeroed_page(m)
    loose.flags &= ~PG.BUSY  # uvm_pagealloc's busy page, released by its caller
    assert uvmpd_reclaim_page(m.uvm, wired) == "skipped: wired"
    assert uvmpd_reclaim_page(m.uvm, busy) == "skipped: busy"
    assert uvmpd_reclaim_page(m.uvm, loose) == "skipped: no owner"
    for pg in (wired, busy, loose):
        assert m.uvm.pages.get(pg.frame) is pg
    assert m.counters["pdaemon.reclaim"] == 3 and m.counters["pdaemon.skipped"] == 3
    assert [(e.frame, e.loaned) for e in events(m, Reclaim)] == [
        (wired.frame, False),
        (busy.frame, False),
        (loose.frame, False),
    ]


def test_zero_page_and_aobj_page_are_skipped_by_name(m: Machine) -> None:
    p = m.spawn("p")
    h = p.mmap(PS)
    (zpg,) = uvm_loan(p.map, h, PS, UVM_LOAN_TOPAGE)  # a hole: the zero page is lent
    assert isinstance(zpg, Page)
    assert page_role(zpg) == "ZERO"
    sh = p.mmap(PS, flags=MAP_SHARED)  # MAP_SHARED anonymous memory: an aobj
    p.write(sh, b"a")
    apg = _one(page_at(p, sh))
    assert uvmpd_reclaim_page(m.uvm, zpg) == "skipped: zero page"
    assert uvmpd_reclaim_page(m.uvm, apg) == "skipped: aobj (no swap modelled)"
    assert m.counters["pdaemon.skipped"] == 2
    assert [e.loaned for e in events(m, Reclaim)] == [True, False]
    uvm_unloan([zpg], UVM_LOAN_TOPAGE)
    check_invariants(m)


def test_object_page_freed_or_orphaned_by_its_loans(m: Machine) -> None:
    """An object page goes through pgo_put(PGO_CLEANIT|PGO_FREE); with a
    kernel loan (one is enough) uvm_pagefree's loan branch orphans it."""
    plain, lent = _file_pages(m, 2)
    klist = uvm_loanuobjpages(lent.uobject, PS, 1)
    assert lent.loan_count == 1
    assert uvmpd_reclaim_page(m.uvm, plain) == "freed"
    assert uvmpd_reclaim_page(m.uvm, lent) == "orphaned"
    assert plain.flags & PG.FREE and page_role(lent) == "ORPHAN"
    assert [(e.frame, e.loaned, e.result) for e in events(m, Reclaim)] == [
        (plain.frame, False, "freed"),
        (lent.frame, True, "orphaned"),
    ]
    assert m.counters["pdaemon.freed"] == 1 and m.counters["pdaemon.orphaned"] == 1
    uvm_unloan(klist, UVM_LOAN_TOPAGE)
    assert lent.flags & PG.FREE
    check_invariants(m)


def test_object_page_reclaim_frees_that_page_only(m: Machine) -> None:
    """The pager is asked for [offset, offset + PAGE_SIZE): the file's other
    resident pages, before and after, stay cached."""
    pages = _file_pages(m, 3)
    vn = pages[0].uobject
    assert uvmpd_reclaim_page(m.uvm, pages[1]) == "freed"
    assert vn.uvm_pagelookup(0) is pages[0] and vn.uvm_pagelookup(2 * PS) is pages[2]
    assert vn.uvm_pagelookup(PS) is None and m.uvm.allocated == 2


def test_clean_anon_page_with_a_swap_copy_is_freed_not_paged_out(m: Machine) -> None:
    """uvmpd_scan_queue pages out only a dirty anon page; one paged back in
    and only read since (UNKNOWN, not modified) still has its copy in swap,
    so it is freed and the swap copy is not written again."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"swapped")
    pg = _one(page_at(p, va))
    assert uvmpd_reclaim_page(m.uvm, pg) == "paged out"
    anon = _one_anon(p, va)
    slot = anon.an_swslot
    assert slot and m.uvm.swap[slot][:7] == b"swapped"
    assert p.read(va, 7) == b"swapped"  # paged back in, not modified
    again = _one(page_at(p, va))
    assert not again.flags & PG.DIRTY
    before = m.physmem.copyout([again.frame], 0, PS)
    m.physmem.copyin([again.frame], 0, b"not written to swap")  # behind the pmap's back
    assert uvmpd_reclaim_page(m.uvm, again) == "freed"
    assert anon.an_swslot == slot and m.uvm.swap[slot] == before
    assert [e.result for e in events(m, Reclaim)] == ["paged out", "freed"]
    assert p.read(va, 7) == b"swapped"
    check_invariants(m)


def _one_anon(p: Process, va: int) -> Anon:
    anon = anon_at(p, va)
    assert anon is not None
    return anon


def test_reclaim_event_has_the_time_the_cpu_and_no_space(m: Machine) -> None:
    (pg,) = _file_pages(m, 1)
    clock = m.platform.cpus[1]  # the pagedaemon's CPU: its clock stamps the event
    t0 = clock.clock
    assert m.reclaim(page=pg, cpu=1) == 1
    (ev,) = events(m, Reclaim)
    assert (ev.cpu, ev.space, ev.frame) == (1, "-", pg.frame)
    assert isinstance(ev.t, int) and t0 <= ev.t <= clock.clock


# ------------------------------------------------------------- adoption


def _unadopted(m: Machine, *, dirty: bool = True) -> tuple[Process, int, Anon, Page]:
    """A disowned O->A page held by a process's anon (as tests/test_loan_adoption.py
    builds it: NetBSD 10 cannot make one)."""
    vn = m.vnode(b"o" * PS)
    if dirty:
        vn.write(0, b"d" * PS)
    pg = vn.pgo_get(0)
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    old = e.amap.lookup(e.slot(va))
    assert old is not None
    anon = Anon()
    anon.an_page = pg
    pg.uanon = anon
    pg.loan_count += 1
    e.amap.add(e.slot(va), anon, replace=True)
    anon_unref(m.uvm, old)
    vn.truncate(0)
    assert page_role(pg) == "ANON-UNADOPTED" and pg.loan_count == 1
    return p, va, anon, pg


def test_adopt_event_has_the_frame_the_time_and_the_cpu(m: Machine) -> None:
    _p, _va, _anon, pg = _unadopted(m)
    clock = m.platform.cpus[1]  # the pagedaemon's CPU: its clock stamps the event
    t0 = clock.clock
    assert m.reclaim(page=pg, cpu=1) == 1
    (ev,) = events(m, Adopt)
    assert (ev.frame, ev.cpu, ev.space) == (pg.frame, 1, "-")
    assert isinstance(ev.t, int) and t0 <= ev.t <= clock.clock


def test_adoption_without_the_anons_loan_asserts(m: Machine) -> None:
    """uvmpd_trylockowner: ``KASSERT(pg->loan_count > 0)`` for a page an
    anon holds without PG_ANON; a count of 0 is a broken page."""
    _p, _va, _anon, pg = _unadopted(m)
    pg.loan_count = 0
    with pytest.raises(
        KernelAssertion, match=r"^uvmpd_trylockowner: adoption of <Page .* with no anon loan$"
    ):
        uvmpd_reclaim_page(m.uvm, pg)
    assert not pg.flags & PG.ANON


# ----------------------------------------------------------------- scan


def test_scan_takes_at_most_the_target_and_counts_what_it_took(m: Machine) -> None:
    pages = _file_pages(m, 5)
    for pg in pages:
        m.uvm.uvm_pagedeactivate(pg)
    assert uvmpd_scan(m.uvm, 3) == 3
    assert [pg.flags & PG.FREE != 0 for pg in pages] == [True, True, True, False, False]
    assert uvmpd_scan(m.uvm, 100) == 2
    assert m.uvm.allocated == 0


def test_scan_counts_orphans_as_taken(m: Machine) -> None:
    """An orphaned page is gone from its owner: it counts toward the target
    (the scan stops there and the next inactive page stays)."""
    lent, other = _file_pages(m, 2)
    klist = uvm_loanuobjpages(lent.uobject, 0, 1)
    m.uvm.uvm_pagedeactivate(lent)
    m.uvm.uvm_pagedeactivate(other)
    assert uvmpd_scan(m.uvm, 1) == 1
    assert page_role(lent) == "ORPHAN" and m.uvm.pages.get(other.frame) is other
    uvm_unloan(klist, UVM_LOAN_TOPAGE)
    check_invariants(m)


def test_scan_looks_at_inactive_pages_then_at_the_deactivated_active_ones(m: Machine) -> None:
    """One pass over the inactive queue, then the active pages go inactive
    and one more pass takes them: a page that cannot be taken is looked at
    twice if it started inactive and once if it started active."""
    p = m.spawn("p")
    sh = p.mmap(2 * PS, flags=MAP_SHARED)  # MAP_SHARED: aobj pages, always skipped
    p.write(sh, b"a")
    p.write(sh + PS, b"b")
    inact, act = _one(page_at(p, sh)), _one(page_at(p, sh + PS))
    m.uvm.uvm_pagedeactivate(inact)
    m.uvm.uvm_pageactivate(act)
    assert uvmpd_scan(m.uvm, 10) == 0
    frames = [e.frame for e in events(m, Reclaim)]
    assert frames.count(inact.frame) == 2 and frames.count(act.frame) == 1


# ------------------------------------------------------------- uvm_wait


def test_uvm_wait_does_not_count_the_reserve() -> None:
    """The operations that reserve with uvm_wait allocate without
    UVM_PGA_USERESERVE: the reserve is not theirs to count."""
    with Machine(memory="1M") as m:
        m.uvm.reserve = m.uvm.free_count - 1
        uvm_wait(m.uvm, lambda: 1, "op")
        with pytest.raises(UVMError, match=r"\] op: needs 2 free pages, 1 available$") as e:
            uvm_wait(m.uvm, lambda: 2, "op")
        assert e.value.errno == ENOMEM


def test_uvm_wait_reclaims_only_the_shortfall() -> None:
    """With on_shortage="reclaim" the pagedaemon runs until enough pages
    are free (NetBSD's stops at its free target), not over the whole cache."""
    with Machine(memory="1M", on_shortage="reclaim", trace="record") as m:
        pages = _file_pages(m, 6)
        for pg in pages:
            m.uvm.uvm_pagedeactivate(pg)
        m.uvm.limit = m.uvm.allocated + 1  # one page free
        uvm_wait(m.uvm, lambda: 3, "op")
        assert m.counters["pdaemon.freed"] == 2
        assert sum(1 for pg in pages if m.uvm.pages.get(pg.frame) is pg) == 4


def test_uvm_wait_gives_up_after_64_rounds() -> None:
    """specs/loan.md 5a: the model's own bound.  A need that stays one page
    ahead of what is free, while the pagedaemon frees a page every round,
    is counted 64 times (one per round) and then refused with ENOMEM, the
    pagedaemon having freed one page in each round."""
    with Machine(memory="1M", on_shortage="reclaim", trace="record") as m:
        pages = _file_pages(m, 80)
        for pg in pages:
            m.uvm.uvm_pagedeactivate(pg)
        m.uvm.limit = m.uvm.allocated  # nothing free: every page must be reclaimed
        rounds: list[int] = []

        def need() -> int:
            rounds.append(1)
            return m.uvm._available(0) + 1

        with pytest.raises(UVMError, match=r"op: needs \d+ free pages") as e:
            uvm_wait(m.uvm, need, "op")
        assert e.value.errno == ENOMEM
        assert len(rounds) == 64
        # each of the 64 rounds fell one page short and reclaimed it
        assert m.counters["pdaemon.freed"] == 64
        check_invariants(m)
