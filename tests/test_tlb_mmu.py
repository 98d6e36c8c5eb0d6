"""The bounded per-CPU TLB (uvmloan.pmap.tlb) and the MMU (uvmloan.mmu):
replacement policies, invalidation forms, page walks, A/D bits, permission
checks, faults into the handler and the cost of each step."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import PS, RW, UVA, R, user_pmap, zeroed_page

from uvmloan import (
    VM_PROT_WRITE,
    KernelAssertion,
    Machine,
    SegmentationFault,
)
from uvmloan.mmu import MAX_FAULT_RETRIES
from uvmloan.page import Page
from uvmloan.pmap import CPU, PTE_A, PTE_D, PTE_G, TLB, Pmap
from uvmloan.trace import Fault

# ----------------------------------------------------------------------------
# TLB


def test_tlb_is_bounded_and_lru_evicts_the_least_recently_used() -> None:
    t = TLB(3, "lru")
    for i in range(3):
        t.insert((0, i), "pm", i << 12)
    assert t.lookup((0, 0)) is not None  # 0 becomes most recent
    t.insert((0, 3), "pm", 3 << 12)
    assert len(t) == 3
    assert set(t.entries) == {(0, 0), (0, 2), (0, 3)}


def test_tlb_fifo_ignores_use() -> None:
    t = TLB(3, "fifo")
    for i in range(3):
        t.insert((0, i), "pm", i << 12)
    t.lookup((0, 0))
    t.insert((0, 3), "pm", 3 << 12)
    assert set(t.entries) == {(0, 1), (0, 2), (0, 3)}


def test_tlb_random_replacement_is_seeded() -> None:
    def victims(seed: int) -> list[tuple[int, int]]:
        t = TLB(4, "random", seed=seed)
        for i in range(12):
            t.insert((0, i), "pm", i << 12)
        return sorted(t.entries)

    assert victims(7) == victims(7)
    assert any(victims(s) != victims(7) for s in range(8))
    assert all(len(victims(s)) == 4 for s in range(3))


def test_tlb_reinsert_replaces_without_eviction() -> None:
    t = TLB(2, "lru")
    t.insert((0, 1), "pm", 1)
    t.insert((0, 2), "pm", 2)
    t.insert((0, 1), "pm", 11)
    assert len(t) == 2 and t.entries[(0, 1)] == ("pm", 11)


def test_an_untagged_tlb_invlpg_drops_the_page_and_nothing_else() -> None:
    # The x86 policy's TLB (tagged=False, every key ASID 0): invlpg looks up
    # one key; the tagged TLB of the MI policy scans every ASID.
    t = TLB(8, "lru", tagged=False)
    for vpn in (4, 5, 6):
        t.insert((0, vpn), "pm", vpn << 12)
    t.invlpg(5)
    t.invlpg(9)  # not cached: nothing to do
    assert set(t.entries) == {(0, 4), (0, 6)}
    tagged = TLB(8, "lru")
    tagged.insert((0, 5), "k", 5 << 12)
    tagged.insert((3, 5), "a", 5 << 12)
    tagged.insert((3, 6), "a", 6 << 12)
    tagged.invlpg(5)
    assert set(tagged.entries) == {(3, 6)}


def test_the_platform_tags_tlbs_only_under_the_mi_asid_policy() -> None:
    from uvmloan import Machine

    with Machine(ncpus=2, memory="4M") as m:
        assert [c.tlb.tagged for c in m.platform.cpus] == [False, False]
    with Machine(ncpus=2, memory="4M", profile_overrides={"tlb_policy": "mi-asid"}) as m:
        assert [c.tlb.tagged for c in m.platform.cpus] == [True, True]


def test_tlb_invalidation_forms() -> None:
    t = TLB(16, "lru")
    t.insert((0, 5), "k", (5 << 12) | PTE_G)
    t.insert((1, 5), "a", 5 << 12)
    t.insert((2, 5), "b", 5 << 12)
    t.insert((1, 6), "a", 6 << 12)
    t.insert((0, 7), "k", (7 << 12) | PTE_G)
    t.insert((0, 8), "u", 8 << 12)
    t.invlpg(5)  # every ASID, global entries too
    assert set(t.entries) == {(1, 6), (0, 7), (0, 8)}
    t.flush_asid(1)
    assert set(t.entries) == {(0, 7), (0, 8)}
    t.flush(include_global=False)  # tlbflush(): G entries survive
    assert set(t.entries) == {(0, 7)}
    t.flush(include_global=True)  # tlbflushg()
    assert len(t) == 0
    t.invalidate_key((0, 99))  # absent: harmless


@pytest.mark.parametrize(("capacity", "policy"), [(0, "lru"), (4, "mru")])
def test_tlb_rejects_bad_configuration(capacity: int, policy: str) -> None:
    with pytest.raises(ValueError, match=r"capacity|policy"):
        TLB(capacity, policy)


def test_profile_sizes_and_policy_reach_every_cpu() -> None:
    with Machine(
        ncpus=2, memory="256k", profile_overrides={"tlb_entries": 8, "tlb_replacement": "fifo"}
    ) as m:
        for c in m.cpus:
            assert c.tlb.capacity == 8 and c.tlb.policy == "fifo"


# ----------------------------------------------------------------------------
# MMU


class Rig:
    def __init__(self, ncpus: int = 2, **overrides: object) -> None:
        self.m = Machine(
            ncpus=ncpus, memory="1M", profile_overrides=dict(overrides), trace="record"
        )
        self.m.platform.fault_handler = None
        self.pm = user_pmap(self.m, range(ncpus))

    def page(self) -> Page:
        return zeroed_page(self.m)

    def map(self, va: int, prot: int = RW, pm: Pmap | None = None) -> Page:
        pg = self.page()
        with self.m.on_cpu(0):
            self.m.pmap.pmap_enter(pm or self.pm, va, pg.pa, prot, 0)
            self.m.pmap.pmap_update(pm or self.pm)
        return pg

    def cpu(self, i: int = 0) -> CPU:
        return self.m.cpu(i)


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.m.close()


def test_page_walk_sets_a_then_d_and_caches_a_snapshot(rig: Rig) -> None:
    rig.map(UVA)
    walks = rig.m.mmu.page_walks
    rig.m.mmu.load(rig.cpu(), UVA, 1)
    assert rig.pm.pte(UVA) & (PTE_A | PTE_D) == PTE_A
    assert rig.m.mmu.page_walks == walks + 1
    snap = rig.cpu().tlb.entries[(0, UVA >> 12)][1]
    assert snap == rig.pm.pte(UVA)
    # A write through the clean entry re-walks to set D.
    rig.m.mmu.store(rig.cpu(), UVA, b"x")
    assert rig.m.mmu.page_walks == walks + 2
    assert rig.pm.pte(UVA) & PTE_D
    # Now dirty: writes and reads hit.
    hits = rig.m.mmu.tlb_hits
    rig.m.mmu.store(rig.cpu(), UVA, b"y")
    rig.m.mmu.load(rig.cpu(), UVA, 1)
    assert rig.m.mmu.page_walks == walks + 2 and rig.m.mmu.tlb_hits == hits + 2


def test_access_across_a_page_boundary_uses_both_frames(rig: Rig) -> None:
    a = rig.map(UVA)
    b = rig.map(UVA + PS)
    rig.m.mmu.store(rig.cpu(), UVA + PS - 3, b"abcdef")
    assert rig.m.physmem.read_frame(a.frame)[-3:] == b"abc"
    assert rig.m.physmem.read_frame(b.frame)[:3] == b"def"
    assert rig.m.mmu.load(rig.cpu(1), UVA + PS - 3, 6) == b"abcdef"
    assert rig.m.mmu.load(rig.cpu(1), UVA, 0) == b""
    rig.m.mmu.store(rig.cpu(1), UVA, b"")


def test_cpus_have_separate_tlbs(rig: Rig) -> None:
    rig.map(UVA)
    rig.m.mmu.load(rig.cpu(0), UVA, 1)
    assert len(rig.cpu(0).tlb) == 1 and len(rig.cpu(1).tlb) == 0


def test_working_set_larger_than_the_tlb_keeps_walking() -> None:
    r = Rig(1, tlb_entries=4)
    try:
        for i in range(8):
            r.map(UVA + i * PS)
        for _ in range(3):
            for i in range(8):
                r.m.mmu.load(r.cpu(), UVA + i * PS, 1)
        assert r.m.mmu.tlb_hits == 0 and r.m.mmu.page_walks == 24
        assert len(r.cpu().tlb) == 4
        for _ in range(3):
            for i in range(4):
                r.m.mmu.load(r.cpu(), UVA + i * PS, 1)
        assert r.m.mmu.tlb_hits == 8  # first pass walks, then hits
    finally:
        r.m.close()


def test_permission_faults(rig: Rig) -> None:
    ro = UVA
    rig.map(ro, R)
    with pytest.raises(SegmentationFault, match="write at"):
        rig.m.mmu.store(rig.cpu(), ro, b"x")
    with pytest.raises(SegmentationFault, match="read at"):
        rig.m.mmu.load(rig.cpu(), UVA + 5 * PS, 1)  # not mapped
    faults = [e for e in rig.m.trace if isinstance(e, Fault)]
    assert [(f.access, f.why, f.result) for f in faults] == [
        ("write", "protection", "EFAULT"),
        ("read", "miss", "EFAULT"),
    ]
    assert rig.m.counters["fault EFAULT"] == 2


def test_user_access_to_kernel_memory_faults(rig: Rig) -> None:
    k = rig.m.profile.vm_min_kernel_address + 0x100000
    pg = rig.page()
    with rig.m.on_cpu(0):
        rig.m.pmap.pmap_kenter_pa(k, pg.pa, RW, 0)
    assert rig.m.mmu.load(rig.cpu(), k, 1, user=False) == b"\0"
    with pytest.raises(SegmentationFault):
        rig.m.mmu.load(rig.cpu(), k, 1, user=True)  # no PTE_U, even with a cached entry


def test_faulting_access_drops_the_cached_entry(rig: Rig) -> None:
    """SDM 4.10.4.1: a page fault invalidates the TLB entry that caused it."""
    rig.map(UVA, R)
    rig.m.mmu.load(rig.cpu(), UVA, 1)
    assert (0, UVA >> 12) in rig.cpu().tlb.entries
    with pytest.raises(SegmentationFault):
        rig.m.mmu.store(rig.cpu(), UVA, b"x")
    assert (0, UVA >> 12) not in rig.cpu().tlb.entries


def test_user_access_without_a_pmap_is_a_kernel_bug() -> None:
    with Machine(ncpus=1, memory="256k") as m, pytest.raises(KernelAssertion, match="no pmap"):
        m.mmu.load(m.cpu(0), UVA, 1)


def test_kernel_fault_without_handler_is_fatal(rig: Rig) -> None:
    k = rig.m.profile.vm_min_kernel_address + 0x200000
    with pytest.raises(KernelAssertion, match="kernel read fault"):
        rig.m.mmu.load(rig.cpu(), k, 1, user=False)


def test_the_fault_handler_resolves_and_the_access_is_retried(rig: Rig) -> None:
    pg = rig.page()
    calls: list[tuple[int, int, int, bool]] = []

    def handler(cpu: CPU, pmap: Pmap, va: int, access_type: int, user: bool) -> None:
        calls.append((cpu.index, va, access_type, user))
        assert rig.m.platform.curcpu() is cpu  # kernel work runs on the faulting CPU
        rig.m.pmap.pmap_enter(pmap, va, pg.pa, RW, access_type)
        rig.m.pmap.pmap_update(pmap)

    rig.m.platform.fault_handler = handler
    t = rig.cpu(1).clock
    rig.m.mmu.store(rig.cpu(1), UVA + 8, b"ok")
    assert calls == [(1, UVA, int(VM_PROT_WRITE), True)]
    assert rig.m.physmem.read_frame(pg.frame)[8:10] == b"ok"
    assert rig.m.counters["fault resolved"] == 1
    assert rig.cpu(1).clock - t >= rig.m.profile.costs.fault_entry_ns


def test_a_handler_that_never_resolves_is_a_fault_loop(rig: Rig) -> None:
    n = 0

    def handler(cpu: CPU, pmap: Pmap, va: int, access_type: int, user: bool) -> None:
        nonlocal n
        n += 1

    rig.m.platform.fault_handler = handler
    with pytest.raises(KernelAssertion, match="fault loop"):
        rig.m.mmu.load(rig.cpu(), UVA, 1)
    assert n == MAX_FAULT_RETRIES


def test_costs_of_a_walk_a_hit_and_a_copy(rig: Rig) -> None:
    costs = rig.m.profile.costs
    rig.map(UVA)
    c = rig.cpu()
    t = c.clock
    rig.m.mmu.load(c, UVA, 64)
    assert c.clock - t == costs.page_walk_ns + costs.copy_ns(64)
    t = c.clock
    rig.m.mmu.load(c, UVA, 64)
    assert c.clock - t == costs.copy_ns(64)


def test_mi_asid_keeps_address_spaces_apart() -> None:
    r = Rig(1, tlb_policy="mi-asid")
    try:
        other = r.m.pmap.pmap_create("q")
        a = r.map(UVA)
        b = r.map(UVA, pm=other)
        r.m.physmem.copyin([a.frame], 0, b"A")
        r.m.physmem.copyin([b.frame], 0, b"B")
        assert r.m.mmu.load(r.cpu(), UVA, 1) == b"A"
        with r.m.on_cpu(0):
            r.m.pmap.pmap_activate(other, r.cpu())
        assert r.m.mmu.load(r.cpu(), UVA, 1) == b"B"
        assert len(r.cpu().tlb) == 2  # one entry per ASID, same VA
        with r.m.on_cpu(0):
            r.m.pmap.pmap_activate(r.pm, r.cpu())
        assert r.m.mmu.load(r.cpu(), UVA, 1) == b"A"
    finally:
        r.m.close()
