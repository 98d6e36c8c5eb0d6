"""The MI ASID pool (``tlb_policy="mi-asid"``): release, exhaustion, reinit.

``sys/uvm/pmap/pmap_tlb.c`` 1.31 (MIPS build: ``PMAP_TLB_NEED_SHOOTDOWN``,
``PMAP_TLB_FLUSH_ASID_ON_RESET`` false) never hands a released ASID to
another pmap before the pool is exhausted: ``pmap_tlb_pai_reset`` leaves
the ASID marked in use and its TLB entries orphaned.  When no ASID is free,
``pmap_tlb_asid_reinitialize`` marks the ASIDs still present in the TLB
(``tlb_record_asids``) and, if they are half the pool or more, invalidates
every user entry instead.  ``specs/pmap.md`` M-A4..M-A6.

The regression program of a longer ``LoanStateMachine`` run (an orphaned
entry of an exited process that TLB1 used to report), the pool's rules on
small pools, and two planted reinit bugs, each caught by the check meant
for it (TLB2: an ASID tags entries but is free; TLB1: a reused ASID finds
another pmap's translation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from helpers import UVA, zeroed_page

from uvmloan import InvariantViolation, Machine, check_invariants
from uvmloan.invariants import check_tlbs
from uvmloan.page import Page
from uvmloan.param import VMProt
from uvmloan.pmap import Pmap
from uvmloan.pmap.tlb import TLB
from uvmloan.testing.loan_machine import LoanStateMachine

RW = VMProt.READ | VMProt.WRITE


class MI(LoanStateMachine):
    """The machine of the longer run that found the report (issue text)."""

    NCPUS: ClassVar[int] = 4
    PROFILE_OVERRIDES: ClassVar[dict[str, Any]] = {"tlb_policy": "mi-asid", "tlb_entries": 8}


def test_orphaned_entry_of_an_exited_process_is_not_a_stale_translation() -> None:
    """The minimized program, verbatim.  p9 writes on CPU 2 and unmaps on
    CPU 0; the IPI to CPU 2 is still pending when p9 exits, so CPU 2 keeps
    p9's entry under an ASID no pmap holds any more: dead, as in NetBSD
    (pmap_tlb_asid_release_all -> pmap_tlb_pai_reset, no flush).  TLB1 used
    to report it as a translation of p9 at a VA it had unmapped."""
    state = MI()
    try:
        state.first_process(ncpu=0)
        state.spawn(cpu=0)
        state.exit(i=0, now=0)
        state.spawn(cpu=0)
        state.exit(i=0, now=0)
        state.spawn(cpu=0)
        state.exit(i=0, now=0)
        state.spawn(cpu=0)
        state.mmap_anon(fill=0, i=1, npages=1, seed=0, shared=False)
        state.exit(i=0, now=0)
        state.spawn(cpu=0)
        state.exit(i=0, now=0)
        state.spawn(cpu=0)
        state.exit(i=0, now=0)
        state.spawn(cpu=0)
        state.exit(i=0, now=0)
        state.spawn(cpu=0)
        state.exit(i=0, now=0)
        state.spawn(cpu=0)
        state.mmap_anon(fill=0, i=0, npages=1, seed=0, shared=False)
        state.mmap_anon(fill=0, i=0, npages=1, seed=0, shared=False)
        state.user_write(cpu=2, i=0, j=1, n=1, off=0, seed=0)
        state.munmap(i=0, j=299)
        state.exit(i=1, now=0)
        state.spawn(cpu=2)
        state.exit(i=1, now=0)
        state.exit(i=0, now=0)
        state.spawn(cpu=0)
        state.mmap_anon(fill=0, i=0, npages=1, seed=0, shared=False)
        state.user_write(cpu=2, i=0, j=0, n=1, off=0, seed=0)
        state.diagnostic()
        # The program really reaches the state: an entry of a destroyed pmap,
        # under an ASID that stays marked in use (so it is handed to nobody).
        cpu2 = state.m.cpu(2)
        orphans = [(k, e) for k, e in cpu2.tlb if getattr(e[0], "destroyed", False)]
        assert orphans, "the program no longer leaves an orphaned entry on CPU 2"
        (asid, _vpn), _ent = orphans[0]
        assert asid not in cpu2.asids.values() and asid in cpu2.asid_bitmap
        state.teardown()
    finally:
        state.m.close()


# ----------------------------------------------------------- directed


@pytest.fixture
def small() -> Iterator[Machine]:
    """One CPU with a pool of 4 user ASIDs and room for 8 entries."""
    m = Machine(
        ncpus=2,
        memory="256k",
        profile_overrides={"tlb_policy": "mi-asid", "asid_max": 4, "tlb_entries": 8},
    )
    m.platform.fault_handler = None  # pure hardware: no VM layer
    yield m
    m.close()


def _run(m: Machine, name: str, byte: int, cpu: int = 0) -> tuple[Pmap, Page]:
    """A new pmap mapping a page of ``byte`` at UVA, scheduled on ``cpu`` and
    read there once (so its ASID tags one TLB entry)."""
    pm = m.pmap.pmap_create(name)
    pg = zeroed_page(m)
    m.physmem.fill_page(pg.frame, byte)
    c = m.cpu(cpu)
    with m.on_cpu(cpu):
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, 0)
        m.pmap.pmap_update(pm)
        m.pmap.pmap_activate(pm, c)
    assert m.mmu.load(c, UVA, 1) == bytes([byte])
    return pm, pg


def test_released_asid_is_not_reused_before_the_pool_is_exhausted(small: Machine) -> None:
    m = small
    c0 = m.cpu(0)
    p1, _ = _run(m, "p1", 1)
    assert c0.asids[p1] == 1
    with m.on_cpu(1):  # p1 is not on CPU 0's processor now: its ASID is reset
        m.pmap.pmap_activate(_run(m, "p2", 2)[0], c0)
        m.pmap.pmap_remove(p1, UVA, UVA + m.page_size)
        m.pmap.pmap_update(p1)
    assert p1 not in c0.asids and 1 in c0.asid_bitmap
    p3, _ = _run(m, "p3", 3)
    assert c0.asids[p3] == 3, "the released ASID 1 was handed out again"
    assert c0.asid_reinits == 0
    check_invariants(m)


def test_exhausted_pool_with_few_asids_in_the_tlb_keeps_them(small: Machine) -> None:
    """Reinit with fewer than asid_max/2 ASIDs in the TLB: those stay marked
    (their pmaps keep them), every other pmap is reset, nothing is flushed."""
    m = small
    c0 = m.cpu(0)
    pms = [_run(m, f"p{i}", i)[0] for i in range(1, 5)]
    assert [c0.asids[p] for p in pms] == [1, 2, 3, 4]
    # Leave only p4's entry (ASID 4) in the TLB.
    for asid in (1, 2, 3):
        c0.tlb.flush_asid(asid)
    p5, _ = _run(m, "p5", 5)
    assert c0.asid_reinits == 1
    assert c0.asids[pms[3]] == 4, "the pmap whose ASID is still in the TLB lost it"
    assert all(p not in c0.asids for p in pms[:3])
    assert c0.asids[p5] == 1
    assert c0.tlb.asids_present() == {1, 4}
    check_invariants(m)


def test_exhausted_pool_with_many_asids_in_the_tlb_flushes_them(small: Machine) -> None:
    """Reinit with asid_max/2 or more ASIDs in the TLB: every user entry is
    invalidated and every pmap not on-processor starts afresh; the new pmap
    reads its own page, never the translation of ASID 1's former owner."""
    m = small
    c0 = m.cpu(0)
    pms = [_run(m, f"p{i}", i)[0] for i in range(1, 5)]
    p5, _ = _run(m, "p5", 5)
    assert c0.asid_reinits == 1
    assert c0.asids == {p5: 1}
    assert c0.tlb.asids_present() == {1}
    check_invariants(m)
    # p1 runs again: a fresh ASID, its own bytes.
    with m.on_cpu(0):
        m.pmap.pmap_activate(pms[0], c0)
    assert m.mmu.load(c0, UVA, 1) == b"\x01"
    assert c0.asids[pms[0]] == 2
    check_invariants(m)


def test_reinit_that_forgets_the_tlb_is_caught_by_tlb2(
    small: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted bug: tlb_record_asids finds nothing (and nothing is flushed).
    ASID 1 goes to p5 while p1's entry under ASID 1 is still cached: p5
    reads p1's page.  TLB2 names the cause (ASIDs tag entries but are
    free); TLB1 alone sees the consequence (p5's translation is p1's)."""
    m = small
    monkeypatch.setattr(TLB, "asids_present", lambda self: set())
    for i in range(1, 5):
        _run_unchecked(m, f"p{i}", i)
    p5, pg5 = _setup_unchecked(m, "p5", 5)
    c0 = m.cpu(0)
    assert m.mmu.load(c0, UVA, 1) == b"\x01", "the planted bug did not reach the state"
    assert c0.asids[p5] == 1
    with pytest.raises(InvariantViolation) as ei:
        check_invariants(m)
    assert ei.value.invariant == "TLB2"
    with pytest.raises(InvariantViolation) as ei:
        check_tlbs(m)
    assert ei.value.invariant == "TLB1"
    assert f"p5 {UVA:#x}" in str(ei.value) and f"PTE maps {pg5.frame}" in str(ei.value)


def _setup_unchecked(m: Machine, name: str, byte: int) -> tuple[Pmap, Page]:
    pm = m.pmap.pmap_create(name)
    pg = zeroed_page(m)
    m.physmem.fill_page(pg.frame, byte)
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, 0)
        m.pmap.pmap_update(pm)
        m.pmap.pmap_activate(pm, m.cpu(0))
    return pm, pg


def _run_unchecked(m: Machine, name: str, byte: int) -> None:
    _setup_unchecked(m, name, byte)
    m.mmu.load(m.cpu(0), UVA, 1)


def test_alloc_that_ignores_the_bitmap_is_caught_by_tlb1(
    small: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted bug: a released ASID is free again at once (as if
    PMAP_TLB_FLUSH_ASID_ON_RESET held on an MP kernel that then forgot to
    flush at allocation).  p1 is unmapped from CPU 1 while it runs on CPU 0
    (the IPI is still pending there) and destroyed: its entry on CPU 0 is
    orphaned under ASID 1, which p2 then gets, and p2 reads p1's page.  TLB1
    reports the orphan as p2's translation."""
    import uvmloan.pmap.asid as asid_mod
    import uvmloan.pmap.pmap as pmap_mod

    real_reset = asid_mod.pmap_tlb_pai_reset

    def reset_and_free(cpu: Any, pm: Pmap) -> int | None:
        asid = real_reset(cpu, pm)
        if asid is not None:
            cpu.asid_bitmap.discard(asid)
            cpu.asid_hint = min(cpu.asid_hint, asid)
        return asid

    monkeypatch.setattr(pmap_mod, "pmap_tlb_pai_reset", reset_and_free)
    m = small
    c0 = m.cpu(0)
    p1, _ = _run(m, "p1", 1)
    with m.on_cpu(1):
        m.pmap.pmap_remove(p1, UVA, UVA + m.page_size)
        m.pmap.pmap_update(p1)
    assert c0.pending_ipis
    m.pmap.pmap_unload(c0)
    m.pmap.pmap_destroy(p1)
    assert 1 in c0.tlb.asids_present()
    p2, pg2 = _setup_unchecked(m, "p2", 2)
    assert m.mmu.load(c0, UVA, 1) == b"\x01", "the planted bug did not reach the state"
    assert c0.asids[p2] == 1
    with pytest.raises(InvariantViolation) as ei:
        check_invariants(m)
    assert ei.value.invariant == "TLB1"
    assert "p2" in str(ei.value) and f"PTE maps {pg2.frame}" in str(ei.value)


def test_the_same_sequence_without_the_bug_gives_p2_a_fresh_asid(small: Machine) -> None:
    m = small
    c0 = m.cpu(0)
    p1, _ = _run(m, "p1", 1)
    with m.on_cpu(1):
        m.pmap.pmap_remove(p1, UVA, UVA + m.page_size)
        m.pmap.pmap_update(p1)
    m.pmap.pmap_unload(c0)
    m.pmap.pmap_destroy(p1)
    p2, _ = _setup_unchecked(m, "p2", 2)
    assert m.mmu.load(c0, UVA, 1) == b"\x02"
    assert c0.asids[p2] == 2 and 1 in c0.asid_bitmap
    check_invariants(m)
