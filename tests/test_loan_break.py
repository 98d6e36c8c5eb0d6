"""Loan breaking, orphans, reclaim and memory shortage.

Digest sections 2.4 (T5-T9), 2.5 and 3; sources ``uvm_fault.c`` 1.226
(``uvm_fault_upper_loan``, ``uvm_fault_lower_direct_loan``,
``uvm_fault_lower`` promote), ``uvm_loan.c`` 1.104 (``uvm_loanbreak``,
``uvm_loanbreak_anon``, ``uvm_unloanpage``, ``uvm_anon_lockloanpg``),
``uvm_page.c`` 1.246 (``uvm_pagefree`` loan branch), ``uvm_anon.c`` 1.78
(``uvm_anfree``), ``uvm_bio.c`` (``ubc_fault_page``), ``uvm_pdaemon.c``
1.133.16.1.
"""

from __future__ import annotations

from unittest.mock import ANY

import pytest
from helpers import PS, counted, events, machine_fixture

from uvmloan import (
    MAP_PRIVATE,
    MAP_SHARED,
    PG,
    UVM_LOAN_TOPAGE,
    Anon,
    KernelAssertion,
    Machine,
    Page,
    UVMError,
    check_invariants,
    uvm_loan,
    uvm_loanbreak,
    uvm_loanbreak_anon,
    uvm_unloan,
)
from uvmloan.anon import uvm_anfree
from uvmloan.loan import uvm_anon_lockloanpg, uvm_unloanpage
from uvmloan.page import PQ
from uvmloan.param import ENOMEM
from uvmloan.testing.loan_ops import anon_at, machine_snapshot, page_at, page_role
from uvmloan.trace import Adopt, LoanBreak, Orphan, PageFree, Reclaim, Unloan

m = machine_fixture(ncpus=2, memory="2M", trace="record")


def _freed(m: Machine) -> set[int]:
    return {e.frame for e in events(m, PageFree)}


def _one(x: Page | None) -> Page:
    assert x is not None
    return x


# --------------------------------------------------------- anon lender


def test_write_after_anon_loan_breaks(m: Machine) -> None:
    """uvm_fault_upper_loan, an_ref == 1: uvm_loanbreak_anon; the old page is
    an orphan the kernel still reads; the owner writes a dirty new page."""
    p = m.spawn("sender", cpu=0)
    buf = p.mmap(PS)
    p.write(buf, b"before")
    kl = m.kernel_loan(p, buf, 6)
    old = kl.pages[0]
    p.write(buf, b"AFTER!", cpu=1)
    new = _one(page_at(p, buf))
    assert new is not old
    assert page_role(old) == "ORPHAN" and old.loan_count == 1 and old.pqueue is PQ.NONE
    assert not old.mdpage.pv and not old.flags & PG.ANON
    assert page_role(new) == "ANON" and new.loan_count == 0 and new.flags & PG.DIRTY
    assert new.pqueue is PQ.ACTIVE and not new.flags & PG.BUSY
    assert kl.read() == b"before" and p.read(buf, 6) == b"AFTER!"
    (br,) = events(m, LoanBreak)
    assert (br.kind, br.old_frame, br.new_frame, br.loan_count, br.where) == (
        "anon",
        old.frame,
        new.frame,
        1,
        "fault",
    )
    (orph,) = events(m, Orphan)
    assert (orph.frame, orph.loan_count, orph.why) == (old.frame, 1, "loan break")
    assert m.counters["loan.break"] == 1 and m.counters["loan.break.anon"] == 1
    assert m.counters["loan.orphan"] == 1
    check_invariants(m)
    kl.release()
    assert old.frame in _freed(m) and m.uvm.pages.get(old.frame) is not old
    unl = events(m, Unloan)
    assert [(e.frame, e.freed) for e in unl] == [(old.frame, True)]
    # uvm_loan.c 1.104: one A->K loan (pmap_page_protect READ on 0->1); the
    # write faults and, an_ref 1, uvm_loanbreak_anon copies into a new page,
    # removes every mapping of the old one (pmap_page_protect NONE) and
    # orphans it (still lent); the last unloan frees the orphan.  Two faults:
    # the first write's zero-fill and the break (uvm_fault.c 1.226).
    assert counted(m, "loan", "unloan", "fault", "pmap page_protect", "page ") == {
        "fault": 2,
        "fault resolved": 2,
        "loan": 1,
        "loan.A->K": 1,
        "loan.break": 1,
        "loan.break.anon": 1,
        "loan.orphan": 1,
        "unloan": 1,
        "pmap page_protect": 2,
        "page alloc": 2,
        "page free": 1,
    }
    # the page counts against the allocator's own (uvmexp style) counts
    assert (m.uvm.npagealloc, m.uvm.npagefree) == (2, 1)
    check_invariants(m)


def test_read_after_loan_maps_read_only(m: Machine) -> None:
    """A read fault on a loaned page caps enter_prot: no break, no W."""
    p = m.spawn("sender", cpu=0)
    buf = p.mmap(PS)
    p.write(buf, b"r")
    pg = _one(page_at(p, buf))
    uvm_loan(p.map, buf, PS, UVM_LOAN_TOPAGE)
    p.read(buf, 1, cpu=1)
    assert m.counters["loan.break"] == 0 and page_at(p, buf) is pg
    pte = p.map.pmap.pte(buf)
    from uvmloan.pmap.pte import PTE_W

    assert pte and not pte & PTE_W
    check_invariants(m)


def test_several_loans_one_break_keeps_all(m: Machine) -> None:
    """I10: the break leaves loan_count unchanged (all kernel loans)."""
    p = m.spawn("sender")
    buf = p.mmap(PS)
    p.write(buf, b"x" * 8)
    k1 = m.kernel_loan(p, buf, 8)
    k2 = m.kernel_loan(p, buf + 4, 4)
    old = k1.pages[0]
    assert old.loan_count == 2
    p.write(buf, b"y")
    assert old.loan_count == 2 and page_role(old) == "ORPHAN"
    k1.release()
    assert m.uvm.pages.get(old.frame) is old and old.loan_count == 1
    assert k2.read() == b"xxxx"
    k2.release()
    assert old.frame in _freed(m)
    check_invariants(m)


# --------------------------------------------------------- object lender


def test_write_after_object_loan_breaks(m: Machine) -> None:
    """Shared file mapping: uvm_fault_lower_direct_loan -> uvm_loanbreak; the
    object now holds the copy (I8), the orphan keeps PG_FILE."""
    vn = m.vnode(b"file" * 1024)
    p = m.spawn("writer", cpu=0)
    fva = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    p.read(fva, 1)
    kl = m.kernel_loan(p, fva, PS)
    old = kl.pages[0]
    p.write(fva, b"FILE", cpu=1)
    new = _one(vn.uvm_pagelookup(0))
    assert new is not old and page_role(old) == "ORPHAN" and old.loan_count == 1
    assert new.uobject is vn and new.offset == 0 and new.flags & PG.TABLED
    assert new.flags & PG.FILE and new.flags & PG.DIRTY and new.loan_count == 0
    assert not old.flags & PG.TABLED and old.pqueue is PQ.NONE
    assert old.flags & PG.FILE  # uvm_pageremove_object leaves PG_FILE (3.2)
    assert kl.read(0, 4) == b"file" and vn.read(0, 4) == b"FILE"
    (br,) = events(m, LoanBreak)
    assert (br.kind, br.where) == ("object", "fault")
    assert m.counters["loan.break.object"] == 1
    check_invariants(m)
    kl.release()
    assert old.frame in _freed(m)
    check_invariants(m)


def test_write2_into_loaned_file_page_breaks(m: Machine) -> None:
    """ubc_fault_page: write(2) breaks the loan before copying in."""
    vn = m.vnode(b"0123456789" * 1000)
    kl = m.kernel_loan_file(vn, 100, 5000)
    olds = list(kl.pages)
    assert [pg.loan_count for pg in olds] == [1, 1]
    vn.write(4000, b"#" * 200)  # straddles both pages
    assert [e.where for e in events(m, LoanBreak)] == ["write(2)", "write(2)"]
    assert all(page_role(pg) == "ORPHAN" for pg in olds)
    assert kl.read() == (b"0123456789" * 1000)[100:5100]
    assert vn.read(4000, 200) == b"#" * 200
    assert vn.uvm_pagelookup(0) is not olds[0]
    check_invariants(m)
    kl.release()
    assert {pg.frame for pg in olds} <= _freed(m)
    check_invariants(m)


def test_write2_sees_user_mapping_again(m: Machine) -> None:
    """After write(2) broke the loan the user mapping refaults onto the copy."""
    vn = m.vnode(b"a" * PS)
    p = m.spawn("p")
    fva = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    assert p.read(fva, 1) == b"a"
    kl = m.kernel_loan(p, fva, PS)
    vn.write(0, b"b")
    assert p.read(fva, 1) == b"b" and kl.read(0, 1) == b"a"
    assert not kl.pages[0].mdpage.pv
    kl.release()
    check_invariants(m)


def test_private_file_mapping_write_promotes_without_break(m: Machine) -> None:
    """uvm_fault_lower: a write to a MAP_PRIVATE file page promotes to an anon;
    the loaned object page is only read, no break."""
    vn = m.vnode(b"orig" * 1024)
    p = m.spawn("p")
    fva = p.mmap(PS, flags=MAP_PRIVATE, obj=vn)
    kl = m.kernel_loan(p, fva, PS)
    opg = kl.pages[0]
    assert opg is vn.uvm_pagelookup(0)
    p.write(fva, b"MINE")
    assert m.counters["loan.break"] == 0
    assert page_role(opg) == "OBJ" and opg.loan_count == 1
    assert vn.uvm_pagelookup(0) is opg
    assert p.read(fva, 4) == b"MINE" and vn.read(0, 4) == b"orig"
    assert kl.read(0, 4) == b"orig"
    apg = _one(page_at(p, fva))
    assert page_role(apg) == "ANON" and apg is not opg
    kl.release()
    check_invariants(m)


# --------------------------------------------------------- fork


def test_shared_anon_after_fork_promotes_and_loan_stays(m: Machine) -> None:
    """uvm_fault_upper_loan with an_ref > 1: no break, the writer promotes;
    the loaned page stays with the other reference; the last one breaks."""
    p = m.spawn("parent", cpu=0)
    buf = p.mmap(PS)
    p.write(buf, b"shared")
    kl = m.kernel_loan(p, buf, 6)
    pg = kl.pages[0]
    c = p.fork("child", cpu=1)
    p.write(buf, b"parent")
    assert m.counters["loan.break"] == 0
    anon = anon_at(c, buf)
    assert anon is not None and anon.an_page is pg and anon.an_ref == 1
    assert page_role(pg) == "ANON" and pg.loan_count == 1
    assert p.read(buf, 6) == b"parent" and c.read(buf, 6) == b"shared"
    check_invariants(m)
    c.write(buf, b"child!")
    assert m.counters["loan.break"] == 1 and page_role(pg) == "ORPHAN"
    assert c.read(buf, 6) == b"child!" and kl.read() == b"shared"
    kl.release()
    check_invariants(m)


def test_child_writes_first_after_fork(m: Machine) -> None:
    p = m.spawn("parent", cpu=0)
    buf = p.mmap(PS)
    p.write(buf, b"shared")
    kl = m.kernel_loan(p, buf, 6)
    c = p.fork("child", cpu=1)
    c.write(buf, b"child!")
    assert m.counters["loan.break"] == 0 and page_at(p, buf) is kl.pages[0]
    p.write(buf, b"parent")
    assert m.counters["loan.break"] == 1
    assert (p.read(buf, 6), c.read(buf, 6), kl.read()) == (b"parent", b"child!", b"shared")
    c.exit()
    p.exit()
    assert kl.read() == b"shared"
    kl.release()
    assert m.uvm.allocated == 0
    check_invariants(m)


def test_mlock_breaks_loan_of_writable_page(m: Machine) -> None:
    """A wiring fault of a writable entry is a write fault (cow_now): the loan
    is broken before the page is wired (digest 3.1, inferred)."""
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"wire")
    kl = m.kernel_loan(p, buf, 4)
    p.mlock(buf, PS)
    new = _one(page_at(p, buf))
    assert new is not kl.pages[0] and new.wire_count == 1 and new.loan_count == 0
    assert page_role(kl.pages[0]) == "ORPHAN"
    assert events(m, LoanBreak)[0].kind == "anon"
    kl.release()
    check_invariants(m)


# --------------------------------------------------------- owner frees


def test_exit_with_loans_leaves_orphans_freed_by_last_unloan(m: Machine) -> None:
    """T5/T6/T8: uvm_anfree -> uvm_pagefree's loan branch disowns the pages;
    the last uvm_unloan frees them."""
    p = m.spawn("p")
    buf = p.mmap(3 * PS)
    p.write(buf, b"z" * (3 * PS))
    kl = m.kernel_loan(p, buf, 3 * PS)
    kl2 = m.kernel_loan(p, buf, PS)
    p.exit()
    assert all(page_role(pg) == "ORPHAN" for pg in kl.pages)
    assert [o.why.startswith("anon") for o in events(m, Orphan)] == [True] * 3
    assert all(pg.pqueue is PQ.NONE and not pg.mdpage.pv for pg in kl.pages)
    assert kl.read() == b"z" * (3 * PS)
    assert m.uvm.allocated == 3
    check_invariants(m)
    kl.release()
    assert m.uvm.allocated == 1  # page 0 still lent to kl2
    kl2.release()
    assert m.uvm.allocated == 0
    check_invariants(m)


def test_exit_with_file_loans_keeps_cache_pages(m: Machine) -> None:
    """A vnode's pages stay cached after the mapping goes: no orphans."""
    vn = m.vnode(b"c" * PS)
    p = m.spawn("p")
    fva = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    kl = m.kernel_loan(p, fva, PS)
    p.exit()
    assert page_role(kl.pages[0]) == "OBJ" and events(m, Orphan) == []
    kl.release()
    assert kl.pages[0].loan_count == 0 and vn.uvm_pagelookup(0) is kl.pages[0]
    check_invariants(m)


def test_shared_anon_memory_exit_orphans_aobj_pages(m: Machine) -> None:
    """MAP_SHARED|MAP_ANON is an aobj; its last detach frees (orphans) pages."""
    p = m.spawn("p")
    sh = p.mmap(PS, flags=MAP_SHARED)
    p.write(sh, b"aobj")
    kl = m.kernel_loan(p, sh, 4)
    p.exit()
    assert page_role(kl.pages[0]) == "ORPHAN"
    assert not kl.pages[0].flags & (PG.AOBJ | PG.FILE)  # T5 clears PG_STAT bits
    assert kl.read() == b"aobj"
    kl.release()
    assert m.uvm.allocated == 0
    check_invariants(m)


def test_truncate_orphans_loaned_pages_and_breaks_tail(m: Machine) -> None:
    """Truncate frees pages past the new end (pgo_put PGO_FREE -> uvm_pagefree
    loan branch); a loaned partial tail page is broken before zeroing."""
    data = bytes(range(256)) * 48  # 3 pages
    vn = m.vnode(data)
    kl = m.kernel_loan_file(vn, 0, len(data))
    p0, p1, p2 = kl.pages
    vn.truncate(PS + 100)
    assert page_role(p2) == "ORPHAN" and p2.loan_count == 1
    assert any(o.frame == p2.frame and "freed" in o.why for o in events(m, Orphan))
    assert page_role(p1) == "ORPHAN"  # broken: the tail is zeroed in the copy
    assert [e.where for e in events(m, LoanBreak)] == ["write(2)"]
    assert vn.uvm_pagelookup(0) is p0 and p0.loan_count == 1
    t = _one(vn.uvm_pagelookup(PS))
    assert m.physmem.copyout([t.frame], 100, PS - 100) == bytes(PS - 100)
    assert kl.read() == data
    assert vn.read(0, 10_000) == data[: PS + 100]
    check_invariants(m)
    kl.release()
    assert p0.loan_count == 0 and {p1.frame, p2.frame} <= _freed(m)
    check_invariants(m)


def test_truncate_under_mapping_loan(m: Machine) -> None:
    """Truncate with a user mapping and a kernel loan of the same page."""
    vn = m.vnode(b"T" * (2 * PS))
    p = m.spawn("p")
    fva = p.mmap(2 * PS, flags=MAP_SHARED, obj=vn)
    p.read(fva + PS, 1)
    kl = m.kernel_loan(p, fva + PS, PS)
    vn.truncate(PS)
    assert page_role(kl.pages[0]) == "ORPHAN" and not kl.pages[0].mdpage.pv
    assert kl.read() == b"T" * PS
    from uvmloan import SegmentationFault

    with pytest.raises(SegmentationFault):
        p.read(fva + PS, 1)
    kl.release()
    check_invariants(m)


# --------------------------------------------------------- pagedaemon


def test_reclaim_loaned_anon_page(m: Machine) -> None:
    """uvmpd_scan_queue: a loaned anon page is paged out and freed -> orphan;
    the anon keeps its swap slot; both sides still see their bytes."""
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"reclaim")
    kl = m.kernel_loan(p, buf, 7)
    pg = kl.pages[0]
    anon = anon_at(p, buf)
    assert anon is not None
    assert m.reclaim(page=pg) == 1
    assert page_role(pg) == "ORPHAN" and anon.an_page is None and anon.an_swslot
    (rc,) = events(m, Reclaim)
    assert (rc.frame, rc.loaned, rc.result) == (pg.frame, True, "orphaned")
    assert m.counters["pdaemon.reclaim"] == 1 and m.counters["pdaemon.orphaned"] == 1
    assert kl.read() == b"reclaim"
    check_invariants(m)
    assert p.read(buf, 7) == b"reclaim"  # paged back in from swap
    p.write(buf, b"R")
    assert kl.read() == b"reclaim" and p.read(buf, 7) == b"Reclaim"
    assert m.counters["loan.break"] == 0  # the new page was never lent
    kl.release()
    assert pg.frame in _freed(m)
    check_invariants(m)


def test_reclaim_loaned_object_page(m: Machine) -> None:
    """pgo_put(PGO_CLEANIT|PGO_FREE) of a loaned file page: cleaned, orphaned."""
    vn = m.vnode(b"o" * PS)
    p = m.spawn("p")
    fva = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    p.write(fva, b"dirty")
    kl = m.kernel_loan(p, fva, PS)
    pg = kl.pages[0]
    assert m.reclaim(page=pg) == 1
    assert page_role(pg) == "ORPHAN" and vn.uvm_pagelookup(0) is None
    assert bytes(vn.backing[:5]) == b"dirty"  # written back before it went
    assert p.read(fva, 5) == b"dirty" and kl.read(0, 5) == b"dirty"
    assert vn.uvm_pagelookup(0) is not pg
    kl.release()
    check_invariants(m)


def test_pagedaemon_scan_never_frees_orphans(m: Machine) -> None:
    """I6: orphans are dequeued; a full scan cannot take them."""
    p = m.spawn("p")
    buf = p.mmap(2 * PS)
    p.write(buf, b"q" * (2 * PS))
    kl = m.kernel_loan(p, buf, 2 * PS)
    p.exit()
    m.reclaim()
    assert all(m.uvm.pages.get(pg.frame) is pg for pg in kl.pages)
    assert kl.read() == b"q" * (2 * PS)
    kl.release()
    check_invariants(m)


# --------------------------------------------------------- memory shortage


def test_enomem_during_anon_break_changes_nothing(m: Machine) -> None:
    """3.5: uvm_loanbreak_anon fails with ENOMEM -> nothing changed; NetBSD
    waits (uvm_wait "flt_noram2"), the model reports ENOMEM; a retry after
    memory is freed succeeds."""
    p = m.spawn("p")
    buf = p.mmap(PS)
    spare = p.mmap(PS)
    p.write(buf, b"keep")
    p.write(spare, b"s")
    kl = m.kernel_loan(p, buf, 4)
    m.uvm.limit = m.uvm.allocated
    before = machine_snapshot(m)
    with pytest.raises(UVMError) as ei:
        p.write(buf, b"LOST")
    assert ei.value.errno == ENOMEM
    # everything, counters included (no break, no fault counted)
    assert machine_snapshot(m) == before
    check_invariants(m)
    p.munmap(spare, PS)
    p.write(buf, b"WROTE")
    assert (kl.read(), p.read(buf, 5)) == (b"keep", b"WROTE")
    assert m.counters["loan.break"] == 1
    kl.release()
    check_invariants(m)


def test_enomem_during_object_break_changes_nothing(m: Machine) -> None:
    """3.5: uvm_loanbreak returns NULL -> the fault fails, state unchanged."""
    vn = m.vnode(b"v" * PS)
    p = m.spawn("p")
    fva = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    p.read(fva, 1)
    kl = m.kernel_loan(p, fva, PS)
    m.uvm.limit = m.uvm.allocated
    before = machine_snapshot(m)
    # The loan's pmap_page_protect(READ) left CPU 0's clean entry cached (no
    # shootdown when only W goes and D is clear, pmap.c pmap_sync_pv); the
    # write re-walks, faults, and the fault drops that one entry (SDM
    # 4.10.4.1).  Nothing else may change.
    assert ((0, fva >> 12), ANY) in before["tlb"][0]
    before["tlb"][0] = [e for e in before["tlb"][0] if e[0] != (0, fva >> 12)]
    with pytest.raises(UVMError) as ei:
        p.write(fva, b"x")
    # One change, as in NetBSD: the pager started the page's dirtiness
    # tracking for the write before the break failed (genfs_io.c 1.100
    # genfs_getpages: CLEAN -> UNKNOWN, uvm_page_status.c 1.6).
    pg = vn.uvm_pagelookup(0)
    assert pg is not None and not pg.flags & (PG.CLEAN | PG.DIRTY)
    fl, *rest = before["pages"][pg.frame]
    before["pages"][pg.frame] = (fl & ~PG.CLEAN, *rest)
    assert ei.value.errno == ENOMEM and machine_snapshot(m) == before
    with pytest.raises(UVMError) as ei2:
        vn.write(0, b"x")  # ubc_fault_page: NULL -> ENOMEM
    assert ei2.value.errno == ENOMEM and machine_snapshot(m) == before
    assert vn.read(0, 1) == b"v"
    check_invariants(m)
    m.uvm.limit = None
    p.write(fva, b"x")
    assert kl.read(0, 1) == b"v" and vn.read(0, 1) == b"x"
    kl.release()
    check_invariants(m)


# --------------------------------------------------------- direct calls


def test_loanbreak_enomem_returns_none(m: Machine) -> None:
    vn = m.vnode(b"d" * PS)
    pages = m.kernel_loan_file(vn, 0, PS).pages
    m.uvm.limit = m.uvm.allocated
    before = machine_snapshot(m)
    assert uvm_loanbreak(pages[0]) is None and vn.uvm_pagelookup(0) is pages[0]
    assert machine_snapshot(m) == before
    anonp = m.spawn("p")
    buf = anonp.mmap(PS)
    m.uvm.limit = None
    anonp.write(buf, b"a")
    kl = m.kernel_loan(anonp, buf, 1)
    anon = anon_at(anonp, buf)
    assert anon is not None
    m.uvm.limit = m.uvm.allocated
    before = machine_snapshot(m)
    assert uvm_loanbreak_anon(anon, None) == ENOMEM and anon.an_page is kl.pages[0]
    assert machine_snapshot(m) == before
    check_invariants(m)


def test_loanbreak_preconditions(m: Machine) -> None:
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"a")
    anon = anon_at(p, buf)
    assert anon is not None
    with pytest.raises(KernelAssertion):
        uvm_loanbreak_anon(anon, None)  # KASSERT(loan_count > 0)
    pg = _one(page_at(p, buf))
    with pytest.raises(KernelAssertion):
        uvm_loanbreak(pg)  # KASSERT(uobj != NULL)
    check_invariants(m)


# --------------------------------------------------------- adoption (O->A)


def _o2a(m: Machine) -> tuple[Page, Anon]:
    """Build the state 1.104's #ifdef notdef O->A code would make: an object
    page with an anon that holds one loan on it (digest 2.3 OBJ+A)."""
    vn = m.vnode(b"oa" * (PS // 2))
    pg = vn.pgo_get(0)
    anon = Anon()
    pg.loan_count += 1
    pg.uanon = anon
    anon.an_page = pg
    return pg, anon


def test_adoption_in_unloanpage(m: Machine) -> None:
    """T7 (uvm_unloanpage step 3): an O->A page disowned by its object is
    adopted by the anon when a kernel loan is dropped.  Unreachable through
    uvm_loan in 1.104 (O->A is compiled out), so the state is built by hand."""
    pg, anon = _o2a(m)
    (kpg,) = uvm_loanuobjpages_one(pg)
    assert kpg is pg and pg.loan_count == 2 and page_role(pg) == "OBJ+A"
    m.uvm.uvm_pagefree(pg)  # the object lets go (T5): still anon-held
    assert page_role(pg) == "ANON-UNADOPTED" and pg.loan_count == 2
    check_invariants(m)
    uvm_unloanpage(m.uvm, [pg])
    assert page_role(pg) == "ANON" and pg.flags & PG.ANON and pg.loan_count == 0
    assert any(isinstance(e, Adopt) and e.frame == pg.frame for e in m.trace)
    assert anon.an_page is pg
    check_invariants(m)


def uvm_loanuobjpages_one(pg: Page) -> list[Page]:
    from uvmloan import uvm_loanuobjpages

    return uvm_loanuobjpages(pg.uobject, pg.offset, 1)


def test_adoption_in_anon_lockloanpg(m: Machine) -> None:
    pg, anon = _o2a(m)
    m.uvm.uvm_pagefree(pg)
    assert uvm_anon_lockloanpg(anon) is pg
    assert page_role(pg) == "ANON" and pg.loan_count == 0
    check_invariants(m)


def test_anfree_of_o2a_receiver_keeps_object_page(m: Machine) -> None:
    """T6: uvm_anfree of an O->A receiver drops the anon's loan, the object
    keeps its page."""
    pg, anon = _o2a(m)
    anon.an_ref = 0
    uvm_anfree(m.uvm, anon)
    assert page_role(pg) == "OBJ" and pg.loan_count == 0 and pg.uanon is None
    check_invariants(m)


def test_pagefree_of_unadopted_page_drops_anon_loan(m: Machine) -> None:
    """T5, unadopted O->A case: the anon's loan goes with the anon, and with
    no kernel loan left the page is really freed."""
    pg, anon = _o2a(m)
    m.uvm.uvm_pagefree(pg)  # object lets go -> ANON-UNADOPTED, loan 1
    anon.an_ref = 0
    frame = pg.frame
    uvm_anfree(m.uvm, anon)
    assert m.uvm.pages.get(frame) is not pg and pg.flags & PG.FREE
    check_invariants(m)


def test_loanbreak_anon_of_o2a_receiver(m: Machine) -> None:
    """uvm_loanbreak_anon(anon, uobj): the receiver anon gets a copy, the
    object keeps its page with one loan fewer."""
    pg, anon = _o2a(m)
    obj = pg.uobject
    assert uvm_loanbreak_anon(anon, obj) == 0
    assert anon.an_page is not pg and anon.an_page is not None
    assert page_role(pg) == "OBJ" and pg.loan_count == 0 and pg.uanon is None
    assert page_role(anon.an_page) == "ANON"
    check_invariants(m)


def test_unloan_after_owner_change(m: Machine) -> None:
    """I19: the owner changed (loan break) between loan and unloan; the unloan
    still decrements exactly once."""
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"a")
    pages = uvm_loan(p.map, buf, PS, UVM_LOAN_TOPAGE)
    p.write(buf, b"b")
    (old,) = pages
    assert isinstance(old, Page) and page_role(old) == "ORPHAN"
    uvm_unloan(pages, UVM_LOAN_TOPAGE)
    assert old.flags & PG.FREE
    check_invariants(m)


# --------------------------------------------------------- model fixes / bugs


def test_reclaim_skips_aobj_pages(m: Machine) -> None:
    """Regression (pdaemon.py fix): an aobj page is swap-backed in NetBSD
    (uvmpd_scan_queue pages it out, never pgo_put); the model has no aobj
    swap, so the pagedaemon must skip it instead of freeing its bytes."""
    p = m.spawn("p")
    sh = p.mmap(PS, flags=MAP_SHARED)
    p.write(sh, b"shared anon")
    pg = _one(page_at(p, sh))
    assert m.reclaim(page=pg) == 0
    m.reclaim()
    assert p.read(sh, 11) == b"shared anon"
    kl = m.kernel_loan(p, sh, 11)
    m.reclaim()
    assert page_role(kl.pages[0]) == "OBJ" and kl.read() == b"shared anon"
    results = [e.result for e in events(m, Reclaim)]
    assert results and all(r.startswith("skipped") for r in results if "aobj" in r)
    kl.release()
    check_invariants(m)


def test_i6_catches_an_orphan_its_last_unloan_forgot(m: Machine) -> None:
    """I6 (strengthened in invariants.py): a lent page with no owner and no
    loan left must have been freed by that last uvm_unloanpage."""
    from uvmloan import InvariantViolation

    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"o")
    kl = m.kernel_loan(p, buf, 1)
    p.exit()
    pg = kl.pages[0]
    # Simulate an unloan that decrements but does not free.
    pg.loan_count = 0
    m.uvm.loan_ledger.pop(pg)
    with pytest.raises(InvariantViolation) as ei:
        check_invariants(m)
    assert ei.value.invariant == "I6"


def test_swap_slot_freed_with_its_anon(m: Machine) -> None:
    """A loaned anon page reclaimed to swap (the anon keeps the slot); when
    the process exits and the loan goes, no swap space may remain."""
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"swap")
    kl = m.kernel_loan(p, buf, 4)
    m.reclaim(page=kl.pages[0])
    anon = anon_at(p, buf)
    assert anon is not None and anon.an_swslot in m.uvm.swap
    p.exit()
    kl.release()
    assert m.uvm.allocated == 0
    assert m.uvm.swap == {}


def test_anfree_adoption_is_traced(m: Machine) -> None:
    pg, anon = _o2a(m)
    kl = uvm_loanuobjpages_one(pg)
    m.uvm.uvm_pagefree(pg)  # ANON-UNADOPTED, one kernel loan + the anon's
    anon.an_ref = 0
    uvm_anfree(m.uvm, anon)
    assert page_role(pg) == "ORPHAN"
    assert any(isinstance(e, Adopt) and e.frame == pg.frame for e in m.trace)
    uvm_unloan(kl, UVM_LOAN_TOPAGE)
