"""The small pmap modules (``uvmloan/pmap/asid.py``, ``tlb.py``, ``pte.py``,
``cpu.py``): the rules the mutation run of those files found unchecked
(TESTING.md, "Python: the kernel modules").

Rules and sources: specs/pmap.md P1-P2 (pte.h, pmap.c ``protection_codes``),
M6-M7 (the TLB), M-A4..M-A6 (``sys/uvm/pmap/pmap_tlb.c`` 1.31
``pmap_tlb_asid_alloc``, ``pmap_tlb_asid_reinitialize``), T1 (costs) and the
x86_tlb.c packet (``pmap_tlb_packet_t``), specs/trace.md (event fields).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import RW, UVA, events, zeroed_page

from uvmloan import KernelAssertion, Machine, check_invariants
from uvmloan.param import VMProt
from uvmloan.pmap import TLB, Pmap
from uvmloan.pmap.asid import pmap_tlb_asid_acquire
from uvmloan.pmap.cpu import TLBState
from uvmloan.pmap.pmap import ALLVA
from uvmloan.pmap.pte import (
    PTE_A,
    PTE_D,
    PTE_G,
    PTE_NX,
    PTE_P,
    PTE_PVLIST,
    PTE_U,
    PTE_W,
    PTE_WIRED,
    pte_make,
    pte_prot,
    pte_str,
)
from uvmloan.trace import ASIDReset, ContextSwitch, ShootdownQueued, ShootdownRound, TLBFlush

R, X = VMProt.READ, VMProt.EXECUTE

# ------------------------------------------------------------------ pte.py


def test_pte_make_sets_nx_iff_execute_is_not_granted() -> None:
    """P2: ``protection_codes``: NX iff no VM_PROT_EXECUTE, W iff WRITE."""
    assert pte_make(5, R) == (5 << 12) | PTE_P | PTE_NX
    assert pte_make(5, R | X) == (5 << 12) | PTE_P
    assert pte_make(7, RW | X) == (7 << 12) | PTE_P | PTE_W


def test_pte_prot_reads_back_the_permissions() -> None:
    assert pte_prot(0) == VMProt.NONE
    assert pte_prot((3 << 12) | PTE_W) == VMProt.NONE  # not present: nothing
    assert pte_prot(PTE_P | PTE_NX) == R
    assert pte_prot(PTE_P) == R | X
    assert pte_prot(PTE_P | PTE_W | PTE_NX) == RW
    assert pte_prot(PTE_P | PTE_W) == RW | X


def test_pte_str_names_the_frame_and_every_set_bit() -> None:
    every = PTE_P | PTE_W | PTE_U | PTE_A | PTE_D | PTE_G | PTE_WIRED | PTE_PVLIST | PTE_NX
    assert pte_str((9 << 12) | every) == "<pte frame=9 P|W|U|A|D|G|WIRED|PVLIST|NX>"
    assert pte_str(3 << 12) == "<pte frame=3 0>"
    assert pte_str((1 << 12) | PTE_P | PTE_D) == "<pte frame=1 P|D>"


# ------------------------------------------------------------------ tlb.py


def test_tlb_of_one_entry_is_valid_and_holds_one() -> None:
    t = TLB(1)
    t.insert((0, 1), "pm", 1 << 12)
    t.insert((0, 2), "pm", 2 << 12)
    assert list(t.entries) == [(0, 2)]


def test_tlb_configuration_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"^TLB capacity must be >= 1, got 0$"):
        TLB(0)
    with pytest.raises(ValueError, match=r"^unknown TLB replacement policy 'mru'$"):
        TLB(4, "mru")


def test_user_asid_flush_and_record_go_by_the_asid_not_the_page() -> None:
    """``tlb_invalidate_asids(1, max)`` / ``tlb_record_asids``: the tag is
    the ASID (first of the key); page 0 and kernel pages elsewhere are
    nothing special."""
    t = TLB(8)
    t.insert((0, 0), "k", PTE_G)
    t.insert((0, 7), "k", (7 << 12) | PTE_G)
    t.insert((2, 0), "a", 0)
    t.insert((3, 5), "b", 5 << 12)
    assert t.asids_present() == {2, 3}
    t.flush_user_asids()
    assert set(t.entries) == {(0, 0), (0, 7)}
    assert t.asids_present() == set()


def test_tlb_iteration_is_a_snapshot() -> None:
    """Iterating while invalidating (what the shootdown code does) is safe."""
    t = TLB(4)
    t.insert((1, 1), "a", 1)
    t.insert((1, 2), "a", 2)
    for key, _ in t:
        t.invalidate_key(key)
    assert len(t) == 0


# ------------------------------------------------------------------ asid.py


def _machine(asid_max: int) -> Machine:
    m = Machine(
        ncpus=2,
        memory="256k",
        trace="record",
        profile_overrides={"tlb_policy": "mi-asid", "asid_max": asid_max, "tlb_entries": 16},
    )
    m.platform.fault_handler = None  # pure hardware: no VM layer
    return m


@pytest.fixture
def pool4() -> Iterator[Machine]:
    m = _machine(4)
    yield m
    m.close()


def _run(m: Machine, name: str, byte: int) -> Pmap:
    """A pmap mapping a page of ``byte`` at UVA, activated on CPU 0 and read
    there once (its ASID tags one entry of CPU 0's TLB)."""
    pm = m.pmap.pmap_create(name)
    pg = zeroed_page(m)
    m.physmem.fill_page(pg.frame, byte)
    c0 = m.cpu(0)
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, 0)
        m.pmap.pmap_update(pm)
        m.pmap.pmap_activate(pm, c0)
    assert m.mmu.load(c0, UVA, 1) == bytes([byte])
    return pm


def test_half_the_pool_in_the_tlb_is_enough_to_flush(pool4: Machine) -> None:
    """M-A6: ``asid_max / 2`` or more ASIDs found (here exactly 2 of 4):
    every user entry goes, with a ``tlb flush nonglobal`` event charged
    ``tlbflush_ns`` after the context switch, and every pmap is reset (one
    ``asid reset`` event each, on CPU 0, naming the pmap)."""
    m = pool4
    c0 = m.cpu(0)
    pms = [_run(m, f"p{i}", i) for i in range(1, 5)]
    for asid in (3, 4):
        c0.tlb.flush_asid(asid)
    assert c0.tlb.asids_present() == {1, 2}
    p5 = _run(m, "p5", 5)
    assert c0.asids == {p5: 1}
    assert c0.asid_reinits == 1
    (fl,) = [e for e in events(m, TLBFlush) if e.why == "asid pool reinit"]
    switch = events(m, ContextSwitch)[-1]  # to p5: the reinit follows it
    assert switch.new == "p5"
    assert fl.to_dict() == {
        "ev": "tlb flush",
        "t": switch.t + m.platform.costs.tlbflush_ns,
        "cpu": 0,
        "space": "-",
        "global_flush": False,
        "why": "asid pool reinit",
    }
    resets = events(m, ASIDReset)
    assert [(e.space, e.cpu, e.target, e.t) for e in resets] == [
        (pm.name, 0, 0, fl.t) for pm in pms
    ]
    check_invariants(m)


def test_an_odd_pool_flushes_at_its_floored_half() -> None:
    """``asid_max / 2`` in pmap_tlb.c is integer division: 2 ASIDs found in
    a pool of 5 is enough."""
    m = _machine(5)
    try:
        c0 = m.cpu(0)
        for i in range(1, 6):
            _run(m, f"p{i}", i)
        for asid in (3, 4, 5):
            c0.tlb.flush_asid(asid)
        p6 = _run(m, "p6", 6)
        assert c0.asids == {p6: 1}
        assert c0.tlb.asids_present() == {1}
        check_invariants(m)
    finally:
        m.close()


def test_reinit_keeps_the_on_processor_pmaps_asid_marked(pool4: Machine) -> None:
    """M-A6: the on-processor pmap keeps its ASID even when its entries were
    flushed, and the ASID stays marked, so the pool does not hand it out."""
    m = pool4
    c0 = m.cpu(0)
    pms = [_run(m, f"p{i}", i) for i in range(1, 5)]
    assert c0.curpmap is pms[3]
    for asid in (3, 4):
        c0.tlb.flush_asid(asid)
    other = m.pmap.pmap_create("other")
    # A pmap needs an ASID on CPU 0 while p4 is on-processor there.
    assert pmap_tlb_asid_acquire(m.platform, c0, other) == 1
    assert c0.asids == {pms[3]: 4, other: 1}
    assert c0.asid_bitmap == {0, 1, 4}
    assert pmap_tlb_asid_acquire(m.platform, c0, m.pmap.pmap_create("third")) == 2
    check_invariants(m)


def test_every_reinit_is_counted(pool4: Machine) -> None:
    m = pool4
    c0 = m.cpu(0)
    for i in range(1, 10):
        _run(m, f"p{i}", i)
    # 1..4, reinit (all four found: flush), 1..4 again, reinit, 1.
    assert c0.asid_reinits == 2
    check_invariants(m)


def test_a_taken_hint_falls_back_to_the_lowest_free_asid() -> None:
    """M-A4: after a reinit that kept ASIDs 1 and 3 (2 of 8, under half),
    the hint (1) is taken: the lowest free ASID (2) is used, then the hint
    (3) is taken again and the next lowest free (4) follows, then 5."""
    m = _machine(8)
    try:
        c0 = m.cpu(0)
        pms = [_run(m, f"p{i}", i) for i in range(1, 9)]
        for asid in (2, 4, 5, 6, 7, 8):
            c0.tlb.flush_asid(asid)
        new = [_run(m, f"n{i}", 10 + i) for i in range(3)]
        assert c0.asid_reinits == 1
        assert [c0.asids[p] for p in new] == [2, 4, 5]
        assert c0.asids[pms[0]] == 1 and c0.asids[pms[2]] == 3
        assert c0.asid_bitmap == {0, 1, 2, 3, 4, 5}
        check_invariants(m)
    finally:
        m.close()


def test_the_highest_asid_is_handed_out_by_the_search() -> None:
    """The search covers the whole pool ``1..asid_max``: with 1 and 7 kept
    (2 of 8), new pmaps get 2..6, then the hint (7) is taken and the search
    finds the highest ASID, 8."""
    m = _machine(8)
    try:
        c0 = m.cpu(0)
        for i in range(1, 9):
            _run(m, f"p{i}", i)
        for asid in (2, 3, 4, 5, 6, 8):
            c0.tlb.flush_asid(asid)
        new = [_run(m, f"n{i}", 20 + i) for i in range(6)]
        assert [c0.asids[p] for p in new] == [2, 3, 4, 5, 6, 8]
        check_invariants(m)
    finally:
        m.close()


def test_no_free_asid_at_all_is_a_kernel_assertion() -> None:
    """A pool of one ASID held by the on-processor pmap: a reinit cannot free
    it, and the allocation's KASSERT fires, naming the CPU."""
    m = _machine(1)
    try:
        c0 = m.cpu(0)
        _run(m, "p1", 1)
        with pytest.raises(KernelAssertion, match=r"^pmap_tlb_asid_alloc: no free ASID on CPU 0$"):
            pmap_tlb_asid_acquire(m.platform, c0, m.pmap.pmap_create("p2"))
    finally:
        m.close()


# ------------------------------------------------------------------ cpu.py


def test_a_cleared_packet_reports_false_not_a_missing_value() -> None:
    """x86_tlb.c: the packet is reset after each round; the next round's
    events carry ``allva``/``global_flush`` as booleans (specs/trace.md)."""
    with Machine(ncpus=2, memory="256k", trace="record") as m:
        pm = m.pmap.pmap_create("p")
        for c in (0, 1):
            with m.on_cpu(c):
                m.pmap.pmap_activate(pm, m.cpu(c))
        with m.on_cpu(0):
            m.pmap.pmap_tlb_shootdown(pm, UVA, 0, "remove_pte")
            m.pmap.pmap_tlb_shootnow()
            m.pmap.pmap_tlb_shootdown(pm, ALLVA, 0, "remove_pte")
            m.pmap.pmap_tlb_shootnow()
            m.pmap.pmap_tlb_shootdown(pm, UVA, 0, "remove_pte")
            m.pmap.pmap_tlb_shootnow()
        rounds = [e.to_dict() for e in events(m, ShootdownRound)]
        assert [(d["allva"], d["global_flush"]) for d in rounds] == [
            (False, False),
            (True, False),
            (False, False),
        ]
        assert all(type(d["global_flush"]) is bool for d in rounds)
        queued = [e.to_dict()["allva"] for e in events(m, ShootdownQueued)]
        assert queued == [False, True, False]
        assert all(type(v) is bool for v in queued)


def test_cpu_repr_names_clock_pmap_and_tlb_occupancy(pool4: Machine) -> None:
    m = pool4
    c1 = m.cpu(1)
    assert repr(c1) == "<CPU 1 t=0ns pmap=None tlb=0>"
    pm = _run(m, "p1", 1)
    c0 = m.cpu(0)
    assert repr(c0) == f"<CPU 0 t={c0.clock}ns pmap={pm.name} tlb={len(c0.tlb)}>"
    assert len(c0.tlb) == 1 and pm.name == "p1"


def test_a_kernel_only_round_after_a_user_one_leaves_a_lazy_cpu_lazy() -> None:
    """x86_tlb.c ``pmap_tlb_intr``: a lazy CPU leaves its pmap only when the
    packet holds user-pmap work (``tp_userpmap``); the flag is reset with
    the packet, so a later kernel-only round does not carry it."""
    with Machine(ncpus=2, memory="256k") as m:
        pm = m.pmap.pmap_create("p")
        for c in (0, 1):
            with m.on_cpu(c):
                m.pmap.pmap_activate(pm, m.cpu(c))
        with m.on_cpu(0):
            m.pmap.pmap_tlb_shootdown(pm, UVA, 0, "remove_pte")
            m.pmap.pmap_tlb_shootnow()
        m.pmap.pmap_deactivate(m.cpu(1))
        assert m.cpu(1).tlbstate is TLBState.LAZY
        kva = m.platform.profile.vm_maxuser_address + 16 * m.page_size
        with m.on_cpu(0):
            m.pmap.pmap_tlb_shootdown(m.pmap.pmap_kernel(), kva, 0, "remove_pte")
            m.pmap.pmap_tlb_shootnow()
        assert m.cpu(1).tlbstate is TLBState.LAZY
        assert 1 in pm.cpus


def _random_victims(seed: int, cpu: int) -> list[tuple[int, int]]:
    """The entries CPU ``cpu``'s random-replacement TLB keeps of 12."""
    over = {"tlb_replacement": "random", "tlb_entries": 4, "seed": seed}
    with Machine(ncpus=2, memory="256k", profile_overrides=over) as m:
        t = m.cpu(cpu).tlb
        for i in range(12):
            t.insert((0, i), "pm", i << 12)
        return sorted(t.entries)


def test_random_replacement_follows_the_machines_seed() -> None:
    """M6: seeded random replacement: a machine's seed reproduces its TLBs'
    choices, and another seed gives others."""
    assert _random_victims(3, 0) == _random_victims(3, 0)
    assert _random_victims(3, 1) == _random_victims(3, 1)
    assert any(_random_victims(s, 0) != _random_victims(3, 0) for s in range(4, 8))


def test_a_cpu_index_of_the_wrong_type_is_named() -> None:
    with Machine(ncpus=2, memory="256k") as m:
        with pytest.raises(TypeError, match=r"^cpu must be an int index, not str$"):
            m.cpu("0")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^cpu must be an int index, not bool$"):
            m.cpu(True)
