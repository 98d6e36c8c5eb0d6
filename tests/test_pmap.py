"""Unit tests of the x86 pmap(9) model: every operation, its deferral rule and
the shootdown queueing rules of the digest (section 4.4), target sets, the
stale-TLB window and the MI ASID policy.

Sources are named per test; ``specs/pmap.md`` maps every rule to its test.
The VM layer's fault handler is removed in these machines, so a fault is a
``SegmentationFault`` (user access) or a ``KernelAssertion`` (kernel access).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import PS, RW, UVA, R, user_pmap, zeroed_page

from uvmloan import (
    UVM_LOAN_TOPAGE,
    VM_PROT_ALL,
    VM_PROT_NONE,
    VM_PROT_WRITE,
    KernelAssertion,
    Machine,
    SegmentationFault,
    uvm_loan,
)
from uvmloan.invariants import check_invariants
from uvmloan.page import Page
from uvmloan.pmap import (
    PMAP_WIRED,
    PTE_A,
    PTE_D,
    PTE_G,
    PTE_P,
    PTE_PVLIST,
    PTE_U,
    PTE_W,
    PTE_WIRED,
    Pmap,
    TLBState,
    pte_frame,
)
from uvmloan.testing.loan_ops import machine_snapshot
from uvmloan.trace import ShootdownRound

MachineFactory = Callable[..., Machine]


@pytest.fixture
def mk() -> Iterator[MachineFactory]:
    """Build machines with the VM fault handler removed; close them afterwards."""
    made: list[Machine] = []

    def make(ncpus: int = 3, **overrides: Any) -> Machine:
        m = Machine(ncpus=ncpus, memory="1M", profile_overrides=overrides, trace="record")
        m.platform.fault_handler = None
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def kva(m: Machine, i: int = 0) -> int:
    return m.profile.vm_min_kernel_address + 0x100000 + i * PS


def delta(m: Machine, before: Counter[str]) -> Counter[str]:
    """Counters that changed since ``before`` (only non-zero differences)."""
    keys = set(m.counters) | set(before)
    return Counter({k: m.counters[k] - before[k] for k in keys if m.counters[k] != before[k]})


def cached(m: Machine, cpu: int, va: int) -> int | None:
    """The PTE snapshot CPU ``cpu`` caches for ``va`` (x86: ASID 0)."""
    ent = m.cpu(cpu).tlb.entries.get((0, va >> 12))
    return None if ent is None else ent[1]


def enter(
    m: Machine, pm: Pmap, va: int, pg: Page, prot: int = RW, flags: int = 0, cpu: int = 0
) -> None:
    with m.on_cpu(cpu):
        m.pmap.pmap_enter(pm, va, pg.pa, prot, flags)


def update(m: Machine, pm: Pmap | None = None, cpu: int = 0) -> None:
    with m.on_cpu(cpu):
        m.pmap.pmap_update(pm)


def rounds(m: Machine) -> list[ShootdownRound]:
    return [e for e in m.trace if isinstance(e, ShootdownRound)]


# ----------------------------------------------------------------------------
# pmap_enter: pmap.c 1.381 pmap_enter_ma


def test_enter_maps_a_managed_page_and_records_pv(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0,))
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg, RW)
    pte = pm.pte(UVA)
    assert pte & (PTE_P | PTE_W | PTE_U | PTE_PVLIST) == PTE_P | PTE_W | PTE_U | PTE_PVLIST
    assert not pte & (PTE_A | PTE_D | PTE_G | PTE_WIRED)
    assert pte_frame(pte) == pg.frame
    assert (pm, UVA) in pg.mdpage.pv
    assert pm.resident_count == 1 and pm.wired_count == 0
    assert m.pmap.pmap_extract(pm, UVA + 123) == pg.pa + 123
    assert m.pmap.pmap_extract(pm, UVA + PS) is None
    # Nothing was cached anywhere, so nothing is queued.
    assert m.cpu(0).packet.empty
    update(m, pm)
    check_invariants(m)


@pytest.mark.parametrize(
    ("flags", "bits"),
    [(0, 0), (int(R), PTE_A), (int(RW), PTE_A | PTE_D), (int(R) | PMAP_WIRED, PTE_A | PTE_WIRED)],
)
def test_enter_access_type_presets_a_and_d(mk: MachineFactory, flags: int, bits: int) -> None:
    """pmap_enter_ma: an access type in flags pre-sets A (and D for a write)."""
    m = mk(1)
    pm = user_pmap(m, (0,))
    enter(m, pm, UVA, zeroed_page(m), RW, flags)
    assert pm.pte(UVA) & (PTE_A | PTE_D | PTE_WIRED) == bits
    assert pm.wired_count == (1 if flags & PMAP_WIRED else 0)


def test_enter_access_type_must_fit_the_protection(mk: MachineFactory) -> None:
    m = mk(1)
    pm = user_pmap(m, (0,))
    with pytest.raises(ValueError, match="access type"):
        enter(m, pm, UVA, zeroed_page(m), R, int(RW))


@pytest.mark.parametrize("accessed", [False, True])
def test_enter_of_a_different_frame_queues_only_over_an_accessed_pte(
    mk: MachineFactory, accessed: bool
) -> None:
    """pmap_enter_ma: shootdown iff the old PTE had P|A and the frame or W changes."""
    m = mk(3)
    pm = user_pmap(m, (0, 1, 2))
    a, b = zeroed_page(m), zeroed_page(m)
    enter(m, pm, UVA, a)
    update(m, pm)
    if accessed:
        m.mmu.load(m.cpu(1), UVA, 1)
        assert pm.pte(UVA) & PTE_A
    before = m.counters.copy()
    enter(m, pm, UVA, b)
    d = delta(m, before)
    assert pte_frame(pm.pte(UVA)) == b.frame
    assert (pm, UVA) not in a.mdpage.pv and (pm, UVA) in b.mdpage.pv
    if accessed:
        assert m.cpu(0).packet.vas == [UVA]
        assert d["tlbshoot local ENTER"] == 1 and d["tlbshoot remote ENTER"] == 1
        # The old mapping's A went to the old page's saved attributes.
        assert m.pmap.pmap_is_referenced(a)
    else:
        assert m.cpu(0).packet.empty
        assert d["tlbshoot request"] == 0
        assert not m.pmap.pmap_is_referenced(a)
    update(m, pm)
    check_invariants(m)


@pytest.mark.parametrize(("old", "new"), [(RW, R), (R, RW)])
@pytest.mark.parametrize("accessed", [False, True])
def test_enter_of_the_same_frame_with_w_changed(
    mk: MachineFactory, old: int, new: int, accessed: bool
) -> None:
    """A change of W in either direction over an accessed PTE queues ENTER (x86 XOR)."""
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg, old)
    update(m, pm)
    if accessed:
        m.mmu.load(m.cpu(1), UVA, 1)
    before = m.counters.copy()
    enter(m, pm, UVA, pg, new)
    assert bool(pm.pte(UVA) & PTE_W) == bool(new & VM_PROT_WRITE)
    assert delta(m, before)["tlbshoot request"] == (1 if accessed else 0)
    assert len(pg.mdpage.pv) == 1
    update(m, pm)
    check_invariants(m)


def test_enter_with_no_change_over_an_accessed_pte_queues_nothing_and_keeps_a_d(
    mk: MachineFactory,
) -> None:
    """pmap_enter_ma: "if the same page, inherit PTE_A and PTE_D"; no shootdown."""
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg)
    update(m, pm)
    m.mmu.store(m.cpu(1), UVA, b"x")
    assert pm.pte(UVA) & (PTE_A | PTE_D) == PTE_A | PTE_D
    before = m.counters.copy()
    enter(m, pm, UVA, pg, RW, 0)
    assert delta(m, before)["tlbshoot request"] == 0
    assert pm.pte(UVA) & (PTE_A | PTE_D) == PTE_A | PTE_D
    assert pm.resident_count == 1 and len(pg.mdpage.pv) == 1


def test_reentered_page_is_still_write_protected_everywhere(mk: MachineFactory) -> None:
    """Regression: re-entering the same frame used to drop A/D, so a later
    pmap_page_protect(READ) saw D=0, skipped the shootdown and left CPU 1 able
    to write through its cached dirty entry (a broken loan write-protect)."""
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg)
    update(m, pm)
    m.mmu.store(m.cpu(1), UVA, b"a")  # CPU 1 caches W|D
    enter(m, pm, UVA, pg)  # e.g. a fault path re-entering the mapping
    update(m, pm)
    with m.on_cpu(0):
        m.pmap.pmap_page_protect(pg, R)
    check_invariants(m)
    with pytest.raises(SegmentationFault):
        m.mmu.store(m.cpu(1), UVA, b"X")
    assert m.physmem.read_frame(pg.frame)[:1] == b"a"


# ----------------------------------------------------------------------------
# pmap_remove: pmap_remove_pte


@pytest.mark.parametrize("accessed", [False, True])
def test_remove_queues_only_accessed_ptes(mk: MachineFactory, accessed: bool) -> None:
    m = mk(3)
    pm = user_pmap(m, (0, 1, 2))
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg)
    update(m, pm)
    if accessed:
        m.mmu.load(m.cpu(2), UVA, 1)
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
    d = delta(m, before)
    assert pm.pte(UVA) == 0 and not pg.mdpage.pv and pm.resident_count == 0
    assert d["pmap remove"] == 1
    assert d["tlbshoot remote REMOVE_PTE"] == (1 if accessed else 0)
    assert m.cpu(0).packet.vas == ([UVA] if accessed else [])
    update(m, pm)
    assert delta(m, before)["TLB shootdown"] == (1 if accessed else 0)
    check_invariants(m)


def test_remove_of_an_empty_range_does_nothing(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    # accessed mappings just outside the range must keep PTEs and TLB entries
    _accessed_mapping(m, pm, 1, UVA - PS)
    _accessed_mapping(m, pm, 1, UVA + 16 * PS)
    before = machine_snapshot(m)
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + 16 * PS)
    assert machine_snapshot(m) == before


# ----------------------------------------------------------------------------
# pmap_protect (pmap.h inline) -> pmap_write_protect


def test_protect_w_only_downgrade_of_a_clean_pte_needs_no_shootdown(mk: MachineFactory) -> None:
    """pmap_write_protect shoots down only PTEs with D: a CPU caching a clean
    entry must re-walk to set D and then sees W gone (x86 SDM; digest 4.4)."""
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg)
    update(m, pm)
    m.mmu.load(m.cpu(1), UVA, 1)
    snap = cached(m, 1, UVA)
    assert snap is not None and snap & PTE_W and not snap & PTE_D
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_protect(pm, UVA, UVA + PS, R)
    assert not pm.pte(UVA) & PTE_W
    assert m.cpu(0).packet.empty and delta(m, before)["tlbshoot request"] == 0
    # Reads still hit the cached entry ...
    hits = m.mmu.tlb_hits
    assert m.mmu.load(m.cpu(1), UVA, 1) == b"\0"
    assert m.mmu.tlb_hits == hits + 1
    # ... but a write re-walks and faults, with no pmap_update at all.
    walks = m.mmu.page_walks
    with pytest.raises(SegmentationFault):
        m.mmu.store(m.cpu(1), UVA, b"w")
    assert m.mmu.page_walks == walks + 1
    assert m.physmem.read_frame(pg.frame)[:1] == b"\0"
    update(m, pm)
    check_invariants(m)


def test_protect_of_a_dirty_pte_is_deferred_until_pmap_update(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg)
    update(m, pm)
    m.mmu.store(m.cpu(1), UVA, b"1")
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_protect(pm, UVA, UVA + PS, R)
    assert delta(m, before)["tlbshoot remote WRITE_PROTECT"] == 1
    # The stale window: CPU 1 still writes through its dirty entry.
    m.mmu.store(m.cpu(1), UVA, b"2")
    assert m.physmem.read_frame(pg.frame)[:1] == b"2"
    update(m, pm)
    assert delta(m, before)["TLB shootdown"] == 1
    with pytest.raises(SegmentationFault):
        m.mmu.store(m.cpu(1), UVA, b"3")
    assert m.mmu.load(m.cpu(1), UVA, 1) == b"2"
    check_invariants(m)


def test_protect_keeps_d_and_shoots_down_again_if_asked_again(mk: MachineFactory) -> None:
    """pmap_write_protect tests the old D bit only, even on a read-only PTE."""
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    enter(m, pm, UVA, zeroed_page(m))
    update(m, pm)
    m.mmu.store(m.cpu(1), UVA, b"1")
    before = m.counters.copy()
    for _ in range(2):
        with m.on_cpu(0):
            m.pmap.pmap_protect(pm, UVA, UVA + PS, R)
        update(m, pm)
    assert pm.pte(UVA) & PTE_D and not pm.pte(UVA) & PTE_W
    assert delta(m, before)["tlbshoot remote WRITE_PROTECT"] == 2


def test_protect_with_write_in_prot_does_nothing(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    enter(m, pm, UVA, zeroed_page(m), VM_PROT_ALL, int(RW))
    pte = pm.pte(UVA)
    before = machine_snapshot(m)
    with m.on_cpu(0):
        m.pmap.pmap_protect(pm, UVA, UVA + PS, RW)  # would drop EXECUTE, but pmap.h skips it
    assert pm.pte(UVA) == pte and machine_snapshot(m) == before


def test_protect_to_none_is_a_remove(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg, RW, int(R))
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_protect(pm, UVA, UVA + PS, VM_PROT_NONE)
    d = delta(m, before)
    assert pm.pte(UVA) == 0 and not pg.mdpage.pv
    assert d["pmap remove"] == 1 and d["tlbshoot local REMOVE_PTE"] == 1


# ----------------------------------------------------------------------------
# pmap_page_protect (pmap.h inline) -> pmap_pp_clear_attrs / pmap_pp_remove


def _shared_page(m: Machine) -> tuple[Pmap, Pmap, Page, int]:
    """pm (active on every CPU) and pm2 (inactive) map one page; the kernel
    also maps it with pmap_kenter_pa (a loan mapping)."""
    pm = user_pmap(m, tuple(range(m.ncpus)), "p")
    pm2 = m.pmap.pmap_create("q")
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg)
    enter(m, pm2, UVA + PS, pg)
    k = kva(m)
    with m.on_cpu(0):
        m.pmap.pmap_kenter_pa(k, pg.pa, RW, 0)
        m.pmap.pmap_update(pm)
    return pm, pm2, pg, k


def test_page_protect_read_is_synchronous(mk: MachineFactory) -> None:
    """pmap_pp_clear_attrs ends in pmap_tlb_shootnow(): effective on return."""
    m = mk(3)
    pm, pm2, pg, k = _shared_page(m)
    m.mmu.store(m.cpu(1), UVA, b"u")  # CPU 1 caches W|D
    m.mmu.store(m.cpu(2), k, b"k", user=False)
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_page_protect(pg, R)
    d = delta(m, before)
    # No pmap_update: the write-protect is already global.
    assert all(c.packet.empty for c in m.cpus)
    with pytest.raises(SegmentationFault):
        m.mmu.store(m.cpu(1), UVA, b"X")
    assert d["TLB shootdown"] == 1 and d["tlbshoot remote SYNC_PV"] == 1
    assert d["pmap page_protect"] == 1
    assert not pm.pte(UVA) & PTE_W and not pm2.pte(UVA + PS) & PTE_W
    # The kenter mapping is unmanaged: untouched, still writable.
    assert m.pmap_kernel().pte(k) & PTE_W
    m.mmu.store(m.cpu(2), k, b"K", user=False)
    assert m.physmem.read_frame(pg.frame)[:1] == b"K"
    check_invariants(m)


def test_page_protect_read_of_clean_mappings_queues_nothing(mk: MachineFactory) -> None:
    m = mk(3)
    pm, _pm2, pg, _k = _shared_page(m)
    m.mmu.load(m.cpu(1), UVA, 1)  # cached clean
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_page_protect(pg, R)
    d = delta(m, before)
    assert d["tlbshoot request"] == 0 and d["TLB shootdown"] == 0
    assert not pm.pte(UVA) & PTE_W
    with pytest.raises(SegmentationFault):  # the re-walk to set D sees W gone
        m.mmu.store(m.cpu(1), UVA, b"X")
    check_invariants(m)


def test_page_protect_read_of_an_already_read_only_pte_does_nothing(mk: MachineFactory) -> None:
    """pmap_sync_pv: "Check if there's anything to do on this PTE" -- a
    read-only PTE (even with A and D, as pmap_write_protect leaves it) is
    neither changed nor shot down."""
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg)
    update(m, pm)
    m.mmu.store(m.cpu(1), UVA, b"x")
    with m.on_cpu(0):
        m.pmap.pmap_protect(pm, UVA, UVA + PS, R)
        m.pmap.pmap_update(pm)
    pte = pm.pte(UVA)
    assert pte & (PTE_A | PTE_D) == PTE_A | PTE_D
    before = machine_snapshot(m, allow=["pmap page_protect"])
    with m.on_cpu(0):
        m.pmap.pmap_page_protect(pg, R)
    assert pm.pte(UVA) == pte
    # PTEs, pv, TLBs, packets and every counter but the call's own
    assert machine_snapshot(m, allow=["pmap page_protect"]) == before


def test_page_protect_none_removes_every_managed_mapping_but_not_kenter(mk: MachineFactory) -> None:
    """pmap_pp_remove: every pv entry goes, shot down one by one (synchronous);
    pmap(9): kenter mappings are unaffected by pmap_page_protect."""
    m = mk(3)
    pm, pm2, pg, k = _shared_page(m)
    m.mmu.load(m.cpu(1), UVA, 1)  # pm's mapping accessed; pm2's never
    m.mmu.load(m.cpu(2), k, 1, user=False)
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_page_protect(pg, VM_PROT_NONE)
    d = delta(m, before)
    assert not pg.mdpage.pv
    assert pm.pte(UVA) == 0 and pm2.pte(UVA + PS) == 0
    assert pm.resident_count == 0 and pm2.resident_count == 0
    assert d["pmap remove"] == 2
    assert d["tlbshoot request"] == 1 and d["TLB shootdown"] == 1
    with pytest.raises(SegmentationFault):
        m.mmu.load(m.cpu(1), UVA, 1)
    # The kernel's loan mapping survives and still works.
    assert m.pmap_kernel().pte(k) & PTE_P
    assert cached(m, 2, k) is not None
    assert m.mmu.load(m.cpu(2), k, 1, user=False) == b"\0"
    check_invariants(m)


def test_page_protect_none_of_an_unmapped_page_does_not_flush_the_packet(
    mk: MachineFactory,
) -> None:
    """pmap_pp_remove returns at once when the page has no mappings, so work
    queued earlier on this CPU stays queued (unlike the READ case)."""
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    a, b = zeroed_page(m), zeroed_page(m)
    enter(m, pm, UVA, a, RW, int(R))
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
        before = machine_snapshot(m, allow=["pmap page_protect"])
        m.pmap.pmap_page_protect(b, VM_PROT_NONE)
        assert machine_snapshot(m, allow=["pmap page_protect"]) == before
    assert m.cpu(0).packet.vas == [UVA]
    with m.on_cpu(0):
        m.pmap.pmap_page_protect(b, R)
    assert m.cpu(0).packet.empty


def test_page_protect_with_write_does_nothing(mk: MachineFactory) -> None:
    m = mk(2)
    pm, _pm2, pg, _k = _shared_page(m)
    m.mmu.store(m.cpu(1), UVA, b"x")  # cached W|D: a downgrade would need a shootdown
    before = machine_snapshot(m)
    with m.on_cpu(0):
        m.pmap.pmap_page_protect(pg, RW)
        m.pmap.pmap_page_protect(pg, VM_PROT_ALL)
    assert machine_snapshot(m) == before
    assert pm.pte(UVA) & PTE_W


# ----------------------------------------------------------------------------
# pmap_kenter_pa / pmap_kremove (pmap.c 1.381, pmap_kremove1)


def test_kenter_of_fresh_kva_queues_nothing(mk: MachineFactory) -> None:
    m = mk(3)
    pg = zeroed_page(m)
    k = kva(m)
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_kenter_pa(k, pg.pa, R, 0)
    pte = m.pmap_kernel().pte(k)
    assert pte & (PTE_P | PTE_G | PTE_WIRED) == PTE_P | PTE_G | PTE_WIRED
    assert not pte & (PTE_U | PTE_PVLIST | PTE_W | PTE_A)
    assert not pg.mdpage.pv
    assert m.cpu(0).packet.empty
    update(m, m.pmap_kernel())
    d = delta(m, before)
    # no round of either kind (S5: nothing queued), no IPI
    assert d["TLB shootdown"] == 0 and d["tlbshoot local-only round"] == 0
    assert d["ipi sent"] == 0
    assert d["pmap kenter_pa"] == 1
    check_invariants(m)


def test_kenter_without_pge_has_no_global_bit(mk: MachineFactory) -> None:
    m = mk(1, kernel_global=False)
    with m.on_cpu(0):
        m.pmap.pmap_kenter_pa(kva(m), zeroed_page(m).pa, R, 0)
    assert not m.pmap_kernel().pte(kva(m)) & PTE_G


@pytest.mark.parametrize("touched", [False, True])
def test_kremove_queues_only_pages_the_cpus_touched(mk: MachineFactory, touched: bool) -> None:
    """pmap_kremove1: shootdown iff the old PTE had P and A (a page only DMA'd
    by physical address needs none)."""
    m = mk(3)
    pg = zeroed_page(m)
    k = kva(m)
    with m.on_cpu(0):
        m.pmap.pmap_kenter_pa(k, pg.pa, R, 0)
    if touched:
        m.mmu.load(m.cpu(1), k, 1, user=False)
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_kremove(k, PS)
    d = delta(m, before)
    assert m.pmap_kernel().pte(k) == 0
    assert d["pmap kremove"] == 1
    assert d["tlbshoot kernel KREMOVE"] == (1 if touched else 0)
    update(m, m.pmap_kernel())
    d = delta(m, before)
    if touched:
        # Kernel pmap: every running CPU is a target, one broadcast IPI.
        assert d["TLB shootdown"] == 1 and d["ipi broadcast"] == 1 and d["ipi unicast"] == 0
        assert d["tlb invlpg"] == 3
    else:
        assert d["TLB shootdown"] == d["tlbshoot local-only round"] == 0
    assert all(cached(m, c, k) is None for c in range(3))
    with pytest.raises(KernelAssertion):
        m.mmu.load(m.cpu(1), k, 1, user=False)
    check_invariants(m)


def test_kremove_of_unmapped_kva_is_harmless(mk: MachineFactory) -> None:
    m = mk(2)
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_kremove(kva(m), 4 * PS)
    assert delta(m, before) == Counter()


def test_kernel_read_only_mapping_refuses_kernel_writes(mk: MachineFactory) -> None:
    """A kernel write through a read-only loan mapping is fatal (uvm_loan.c header)."""
    m = mk(1)
    pg = zeroed_page(m)
    with m.on_cpu(0):
        m.pmap.pmap_kenter_pa(kva(m), pg.pa, R, 0)
    with pytest.raises(KernelAssertion, match="read-only kernel mapping"):
        m.mmu.store(m.cpu(0), kva(m), b"x", user=False)
    assert m.physmem.read_frame(pg.frame)[:1] == b"\0"


# ----------------------------------------------------------------------------
# The global bit: x86_tlb.c 1.20 pmap_tlb_invalidate (tlbflushg vs tlbflush)


def _touch_kernel_pages(m: Machine, n: int, cpus: tuple[int, ...]) -> list[int]:
    kvas = [kva(m, i) for i in range(n)]
    with m.on_cpu(0):
        for k in kvas:
            m.pmap.pmap_kenter_pa(k, zeroed_page(m).pa, R, 0)
    for c in cpus:
        for k in kvas:
            m.mmu.load(m.cpu(c), k, 1, user=False)
    return kvas


def test_full_flush_with_a_global_pte_is_tlbflushg(mk: MachineFactory) -> None:
    m = mk(3)
    kvas = _touch_kernel_pages(m, 17, (0, 1, 2))
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_kremove(kvas[0], 17 * PS)
        m.pmap.pmap_update(m.pmap_kernel())
    d = delta(m, before)
    assert d["tlb flushg"] == 3 and d["tlb flush nonglobal"] == 0 and d["tlb invlpg"] == 0
    rnd = rounds(m)[-1]
    assert rnd.allva and rnd.global_flush and rnd.nva == 0
    assert all(len(m.cpu(c).tlb) == 0 for c in range(3))


def test_user_only_full_flush_keeps_global_kernel_entries(mk: MachineFactory) -> None:
    m = mk(3)
    pm = user_pmap(m, (0, 1, 2))
    (k,) = _touch_kernel_pages(m, 1, (1,))
    for i in range(17):
        enter(m, pm, UVA + i * PS, zeroed_page(m))
    update(m, pm)
    for i in range(17):
        m.mmu.load(m.cpu(1), UVA + i * PS, 1)
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + 17 * PS)
        m.pmap.pmap_update(pm)
    d = delta(m, before)
    assert d["tlb flush nonglobal"] == 3 and d["tlb flushg"] == 0
    rnd = rounds(m)[-1]
    assert rnd.allva and not rnd.global_flush
    # CPU 1 lost every user entry but kept the global kernel one.
    assert [key for key, _ in m.cpu(1).tlb] == [(0, k >> 12)]
    check_invariants(m)


def test_one_global_request_makes_the_full_flush_global(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    (k,) = _touch_kernel_pages(m, 1, (1,))
    for i in range(17):
        enter(m, pm, UVA + i * PS, zeroed_page(m), RW, int(R))
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_kremove(k, PS)
        m.pmap.pmap_remove(pm, UVA, UVA + 17 * PS)
        m.pmap.pmap_update(pm)
    assert delta(m, before)["tlb flushg"] == 2
    assert rounds(m)[-1].global_flush


# ----------------------------------------------------------------------------
# TP_MAXVA: x86_tlb.c 1.20 (16) and 1.13 (7)


def _remove_n_accessed(m: Machine, n: int) -> Counter[str]:
    pm = user_pmap(m, (0, 1, 2))
    for i in range(n):
        enter(m, pm, UVA + i * PS, zeroed_page(m))
    update(m, pm)
    for i in range(n):
        m.mmu.load(m.cpu(1), UVA + i * PS, 1)
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + n * PS)
        m.pmap.pmap_update(pm)
    check_invariants(m)
    return delta(m, before)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 20])
def test_sixteen_vas_are_invlpg_the_seventeenth_makes_a_full_flush(
    mk: MachineFactory, n: int
) -> None:
    m = mk(3)
    d = _remove_n_accessed(m, n)
    assert d["tlbshoot request"] == n and d["TLB shootdown"] == 1
    rnd = rounds(m)[-1]
    if n <= 16:
        assert d["tlb invlpg"] == 3 * n and d["tlb flush"] == 0
        assert not rnd.allva and rnd.nva == n
        assert d["tlbshoot single page issues"] == n
    else:
        assert d["tlb flush"] == 3 and d["tlb flush nonglobal"] == 3 and d["tlb invlpg"] == 0
        assert rnd.allva and rnd.nva == 0
        assert d["tlbshoot single page issues"] == 0


@pytest.mark.parametrize(("n", "full"), [(7, False), (8, True)])
def test_tp_maxva_override_moves_the_threshold(mk: MachineFactory, n: int, full: bool) -> None:
    m = mk(3, tp_maxva=7)
    d = _remove_n_accessed(m, n)
    if full:
        assert d["tlb flush"] == 3 and d["tlb invlpg"] == 0
    else:
        assert d["tlb invlpg"] == 3 * n and d["tlb flush"] == 0


def test_requests_not_distinct_vas_fill_the_packet(mk: MachineFactory) -> None:
    """x86_tlb.c records every request: 9 VAs asked twice is 18 requests."""
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pages = [zeroed_page(m) for _ in range(18)]
    for i in range(9):
        enter(m, pm, UVA + i * PS, pages[i], RW, int(R))  # A pre-set
    before = m.counters.copy()
    with m.on_cpu(0):
        for i in range(9):
            m.pmap.pmap_enter(pm, UVA + i * PS, pages[9 + i].pa, RW, int(R))  # ENTER
        m.pmap.pmap_remove(pm, UVA, UVA + 9 * PS)  # REMOVE_PTE
        assert m.cpu(0).packet.allva
        m.pmap.pmap_update(pm)
    d = delta(m, before)
    assert d["tlbshoot request"] == 18 and d["tlb flush"] == 2


# ----------------------------------------------------------------------------
# Target sets and IPIs: x86_tlb.c 1.20 pmap_tlb_shootdown / shootnow / processpacket


def _accessed_mapping(m: Machine, pm: Pmap, by: int, va: int = UVA) -> Page:
    pg = zeroed_page(m)
    enter(m, pm, va, pg)
    m.mmu.load(m.cpu(by), va, 1)
    return pg


def _remove_first_page(m: Machine, pm: Pmap) -> Counter[str]:
    """pmap_remove of the page at UVA and pmap_update, on CPU 0: the counters
    that changed."""
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
        m.pmap.pmap_update(pm)
    return delta(m, before)


def test_user_pmap_on_two_of_four_cpus_gets_two_unicast_ipis_one_round(
    mk: MachineFactory,
) -> None:
    m = mk(4)
    pm = user_pmap(m, (1, 2))
    _accessed_mapping(m, pm, 1)
    clock3 = m.cpu(3).clock
    d = _remove_first_page(m, pm)
    assert d["ipi unicast"] == 2 and d["ipi broadcast"] == 0 and d["ipi sent"] == 2
    assert d["ipi delivered"] == 2
    assert d["TLB shootdown"] == 1 and d["tlbshoot local-only round"] == 0
    # CPU 0 is no target: remote invlpg on CPUs 1 and 2 only.
    assert d["tlb invlpg"] == 2
    rnd = rounds(m)[-1]
    assert rnd.targets == (1, 2) and not rnd.broadcast
    assert m.cpu(3).clock == clock3
    assert cached(m, 1, UVA) is None


def test_kernel_pmap_shootdown_is_one_broadcast_ipi(mk: MachineFactory) -> None:
    m = mk(4)
    (k,) = _touch_kernel_pages(m, 1, (2,))
    before = m.counters.copy()
    with m.on_cpu(1):
        m.pmap.pmap_kremove(k, PS)
        m.pmap.pmap_update(m.pmap_kernel())
    d = delta(m, before)
    assert d["ipi broadcast"] == 1 and d["ipi unicast"] == 0 and d["ipi delivered"] == 3
    assert d["TLB shootdown"] == 1
    rnd = rounds(m)[-1]
    assert rnd.targets == (0, 1, 2, 3) and rnd.broadcast


@pytest.mark.parametrize(
    ("ncpus", "active", "broadcast", "unicast"),
    [
        pytest.param(3, (0, 1, 2), 1, 0, id="active-everywhere-is-a-broadcast"),
        pytest.param(4, (1, 2, 3), 0, 3, id="every-cpu-but-the-initiator-is-unicast"),
    ],
)
def test_broadcast_only_when_the_targets_are_every_cpu(
    mk: MachineFactory, ncpus: int, active: tuple[int, ...], broadcast: int, unicast: int
) -> None:
    """processpacket broadcasts only when the target set equals every attached CPU."""
    m = mk(ncpus)
    pm = user_pmap(m, active)
    _accessed_mapping(m, pm, active[-1])
    d = _remove_first_page(m, pm)
    assert d["ipi broadcast"] == broadcast and d["ipi unicast"] == unicast
    assert d["TLB shootdown"] == 1


def test_local_only_round_sends_no_ipi_and_counts_no_shootdown(mk: MachineFactory) -> None:
    m = mk(3)
    pm = user_pmap(m, (0,))
    _accessed_mapping(m, pm, 0)
    clock0 = m.cpu(0).clock
    d = _remove_first_page(m, pm)
    assert d["ipi sent"] == 0 and d["TLB shootdown"] == 0
    assert d["tlbshoot local-only round"] == 1 and d["tlb invlpg"] == 1
    assert d["tlbshoot local REMOVE_PTE"] == 1 and d["tlbshoot remote REMOVE_PTE"] == 0
    assert d["tlbshoot single page issues"] == 0  # TLBSTATS counts remote rounds only
    assert cached(m, 0, UVA) is None
    costs = m.profile.costs
    assert m.cpu(0).clock - clock0 < costs.ipi_send_ns + costs.ipi_deliver_ns


def test_empty_target_set_still_invalidates_locally(mk: MachineFactory) -> None:
    """x86_tlb.c 1.20: the local fast path (no remote CPU) always runs
    pmap_tlb_invalidate on the initiator, even if it is not a target."""
    m = mk(2)
    pm = m.pmap.pmap_create("idle")  # active nowhere
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg, RW, int(R))  # A pre-set
    d = _remove_first_page(m, pm)
    assert d["tlbshoot local-only round"] == 1 and d["tlb invlpg"] == 1 and d["ipi sent"] == 0
    assert rounds(m)[-1].targets == ()


def test_initiator_waits_for_every_acknowledgement(mk: MachineFactory) -> None:
    m = mk(3)
    pm = user_pmap(m, (0, 1, 2))
    _accessed_mapping(m, pm, 1)
    costs = m.profile.costs
    t0 = m.cpu(0).clock
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
        t_sent = m.cpu(0).clock
        m.pmap.pmap_update(pm)
    waited = m.cpu(0).clock - t_sent
    assert waited >= costs.ipi_send_ns + costs.ipi_deliver_ns + costs.ipi_ack_ns
    assert rounds(m)[-1].waited_ns == waited
    for c in (1, 2):
        assert m.cpu(c).clock >= t0 + costs.ipi_send_ns + costs.ipi_deliver_ns


def test_a_slow_target_delays_the_initiator(mk: MachineFactory) -> None:
    """The ack comes from the target's own clock: a CPU busy until later acks
    later.  x86_tlb.c 1.20 acknowledges before invalidating, so the target's
    own invlpg happens after the initiator may go on."""
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    _accessed_mapping(m, pm, 1)
    busy_until = m.cpu(0).clock + 1_000_000
    m.cpu(1).clock = busy_until
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
        m.pmap.pmap_update(pm)
    costs = m.profile.costs
    assert m.cpu(0).clock == busy_until + costs.ipi_ack_ns
    assert m.cpu(1).clock == busy_until + costs.invlpg_ns + costs.ipi_ack_ns


def test_lazy_cpu_leaves_pm_cpus_at_its_first_user_shootdown(mk: MachineFactory) -> None:
    """pmap_tlb_intr: a CPU in TLBSTATE_LAZY that receives a user-pmap
    shootdown removes itself from pm_cpus (STALE) and gets no more IPIs;
    pmap_reactivate flushes and rejoins (pmap.c 1.381)."""
    m = mk(4)
    pm = user_pmap(m, (0, 1, 2))
    _accessed_mapping(m, pm, 2, UVA)
    _accessed_mapping(m, pm, 2, UVA + PS)
    m.mmu.load(m.cpu(1), UVA + PS, 1)
    with m.on_cpu(2):
        m.pmap.pmap_deactivate(m.cpu(2))
    assert m.cpu(2).tlbstate is TLBState.LAZY and 2 in pm.cpus
    assert _remove_first_page(m, pm)["ipi unicast"] == 2
    assert m.cpu(2).tlbstate is TLBState.STALE and pm.cpus == {0, 1}
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA + PS, UVA + 2 * PS)
        m.pmap.pmap_update(pm)
    d = delta(m, before)
    assert d["ipi unicast"] == 1 and rounds(m)[-1].targets == (0, 1)
    # CPU 2 still holds a (dead) entry; the invariant check knows it is unusable.
    assert cached(m, 2, UVA + PS) is not None
    check_invariants(m)
    with m.on_cpu(2):
        m.pmap.pmap_activate(pm, m.cpu(2))
    assert m.cpu(2).tlbstate is TLBState.VALID and 2 in pm.cpus
    assert cached(m, 2, UVA + PS) is None
    with pytest.raises(SegmentationFault):
        m.mmu.load(m.cpu(2), UVA + PS, 1)


def test_deactivating_a_stale_cpu_again_keeps_it_stale(mk: MachineFactory) -> None:
    """Regression (found by the state machine): a second pmap_deactivate used
    to turn STALE back into LAZY although the CPU had left pm_cpus, so later
    shootdowns skipped it while its dead entries counted as live again.
    pmap.c 1.381 only lets a VALID CPU go lazy."""
    m = mk(3)
    pm = user_pmap(m, (0, 1))
    _accessed_mapping(m, pm, 1, UVA)
    _accessed_mapping(m, pm, 1, UVA + PS)
    with m.on_cpu(1):
        m.pmap.pmap_deactivate(m.cpu(1))
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
        m.pmap.pmap_update(pm)
    assert m.cpu(1).tlbstate is TLBState.STALE
    with m.on_cpu(1):
        m.pmap.pmap_deactivate(m.cpu(1))
    assert m.cpu(1).tlbstate is TLBState.STALE and pm.cpus == {0}
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA + PS, UVA + 2 * PS)
        m.pmap.pmap_update(pm)
    check_invariants(m)
    with m.on_cpu(1):
        m.pmap.pmap_activate(pm, m.cpu(1))
    with pytest.raises(SegmentationFault):
        m.mmu.load(m.cpu(1), UVA + PS, 1)


def test_process_returning_to_a_stale_cpu_reactivates_first() -> None:
    """Regression: scheduling a process back onto the CPU that went STALE
    under it skipped pmap_load (the pmap was still "loaded"), so its user
    write went through a dead W|D entry -- into a page lent meanwhile.
    pmap.c 1.381 pmap_load -> pmap_reactivate flushes first; the check of
    loan invariant I3 likewise ignores a STALE CPU's dead entries."""
    with Machine(ncpus=3, memory="4M", trace="record") as m:
        p = m.spawn("p", cpu=0)
        buf = p.mmap(2 * PS)
        p.write(buf, b"a" * 2 * PS, cpu=0)
        p.write(buf + PS, b"c", cpu=1)  # CPU 1 caches W|D for the second page
        with m.on_cpu(1):
            m.pmap.pmap_deactivate(m.cpu(1))
        with m.on_cpu(0):
            m.pmap.pmap_protect(p.pmap, buf, buf + PS, R)  # a shootdown: CPU 1 goes STALE
            m.pmap.pmap_update(p.pmap)
        assert m.cpu(1).tlbstate is TLBState.STALE
        with m.on_cpu(0):
            (lent,) = uvm_loan(p.map, buf + PS, PS, UVM_LOAN_TOPAGE)
        check_invariants(m)
        p.write(buf + PS, b"x", cpu=1)  # must fault and break the loan
        assert isinstance(lent, Page)
        assert m.physmem.read_frame(lent.frame)[:1] == b"c"
        assert p.read(buf + PS, 1, cpu=1) == b"x"
        assert m.counters["loan.break"] == 1
        check_invariants(m)


def test_lazy_cpu_that_returns_before_any_shootdown_keeps_its_entries(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    _accessed_mapping(m, pm, 1)
    with m.on_cpu(1):
        m.pmap.pmap_deactivate(m.cpu(1))
        m.pmap.pmap_activate(pm, m.cpu(1))
    assert m.cpu(1).tlbstate is TLBState.VALID and cached(m, 1, UVA) is not None


def test_pmap_deactivate_completes_pending_shootdowns(mk: MachineFactory) -> None:
    """pmap.c 1.381 pmap_deactivate: "Wait for pending TLB shootdowns to complete"."""
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    _accessed_mapping(m, pm, 1)
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
        assert not m.cpu(0).packet.empty
        m.pmap.pmap_deactivate(m.cpu(0))
    assert m.cpu(0).packet.empty and cached(m, 1, UVA) is None


def test_pmap_update_flushes_only_the_calling_cpus_packet(mk: MachineFactory) -> None:
    """The packet is per CPU: pmap_update elsewhere completes nothing of ours,
    and pmap_update(any pmap) completes everything this CPU queued."""
    m = mk(2)
    pm = user_pmap(m, (0, 1), "p")
    other = m.pmap.pmap_create("other")
    _accessed_mapping(m, pm, 1)
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
    update(m, pm, cpu=1)
    assert not m.cpu(0).packet.empty and cached(m, 1, UVA) is not None
    update(m, other, cpu=0)
    assert m.cpu(0).packet.empty and cached(m, 1, UVA) is None
    check_invariants(m)


def test_pmap_update_with_nothing_queued_is_free(mk: MachineFactory) -> None:
    m = mk(3)
    t = m.cpu(0).clock
    before = m.counters.copy()
    snap = machine_snapshot(m, allow=["pmap update"])
    update(m, m.pmap_kernel())
    assert delta(m, before) == Counter({"pmap update": 1})
    assert machine_snapshot(m, allow=["pmap update"]) == snap
    assert m.cpu(0).clock == t


# ----------------------------------------------------------------------------
# The stale-TLB window between a deferred change and pmap_update


def _dirty_mapping(m: Machine, pm: Pmap, data: bytes) -> Page:
    pg = zeroed_page(m)
    enter(m, pm, UVA, pg)
    update(m, pm)
    m.mmu.store(m.cpu(1), UVA, data)
    return pg


def test_stale_window_after_remove(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pg = _dirty_mapping(m, pm, b"hello")
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
    assert m.mmu.load(m.cpu(1), UVA, 5) == b"hello"
    m.mmu.store(m.cpu(1), UVA, b"HELLO")  # lands in the page no longer mapped
    assert m.physmem.read_frame(pg.frame)[:5] == b"HELLO"
    update(m, pm)
    with pytest.raises(SegmentationFault):
        m.mmu.load(m.cpu(1), UVA, 5)
    check_invariants(m)


def test_stale_window_after_protect(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pg = _dirty_mapping(m, pm, b"hello")
    with m.on_cpu(0):
        m.pmap.pmap_protect(pm, UVA, UVA + PS, R)
    m.mmu.store(m.cpu(1), UVA, b"J")
    assert m.physmem.read_frame(pg.frame)[:5] == b"Jello"
    update(m, pm)
    with pytest.raises(SegmentationFault):
        m.mmu.store(m.cpu(1), UVA, b"Y")
    assert m.mmu.load(m.cpu(1), UVA, 5) == b"Jello"


def test_stale_window_after_entering_a_different_frame(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    old = _dirty_mapping(m, pm, b"old!")
    new = zeroed_page(m)
    m.physmem.copyin([new.frame], 0, b"new!")
    enter(m, pm, UVA, new)
    assert m.mmu.load(m.cpu(1), UVA, 4) == b"old!"
    m.mmu.store(m.cpu(1), UVA, b"O")
    assert m.physmem.read_frame(old.frame)[:4] == b"Old!"
    assert m.physmem.read_frame(new.frame)[:4] == b"new!"
    update(m, pm)
    assert m.mmu.load(m.cpu(1), UVA, 4) == b"new!"
    m.mmu.store(m.cpu(1), UVA, b"N")
    assert m.physmem.read_frame(new.frame)[:4] == b"New!"
    assert m.physmem.read_frame(old.frame)[:4] == b"Old!"
    check_invariants(m)


def test_no_window_for_a_mapping_nobody_cached(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    enter(m, pm, UVA, zeroed_page(m))
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
    assert m.cpu(0).packet.empty
    with pytest.raises(SegmentationFault):
        m.mmu.load(m.cpu(1), UVA, 1)


# ----------------------------------------------------------------------------
# Referenced / modified: pmap_test_attrs, pmap_pp_clear_attrs


def test_referenced_and_modified_follow_the_mmu(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pg = zeroed_page(m)
    pmm = m.pmap
    enter(m, pm, UVA, pg)
    update(m, pm)
    assert not pmm.pmap_is_referenced(pg) and not pmm.pmap_is_modified(pg)
    m.mmu.load(m.cpu(1), UVA, 1)
    assert pmm.pmap_is_referenced(pg) and not pmm.pmap_is_modified(pg)
    m.mmu.store(m.cpu(1), UVA, b"x")
    assert pmm.pmap_is_modified(pg)
    before = m.counters.copy()
    with m.on_cpu(0):
        assert pmm.pmap_clear_modify(pg) is True
        assert pmm.pmap_clear_modify(pg) is False
    # Clearing D of a cached entry shoots it down (synchronously).
    assert delta(m, before)["TLB shootdown"] == 1
    assert cached(m, 1, UVA) is None and not pmm.pmap_is_modified(pg)
    walks = m.mmu.page_walks
    m.mmu.store(m.cpu(1), UVA, b"y")
    assert m.mmu.page_walks == walks + 1 and pmm.pmap_is_modified(pg)
    with m.on_cpu(0):
        assert pmm.pmap_clear_reference(pg) is True
    assert not pmm.pmap_is_referenced(pg) and pmm.pmap_is_modified(pg)
    check_invariants(m)


def test_attributes_survive_the_mapping(mk: MachineFactory) -> None:
    """pmap_remove_pv: the old PTE's A/D go to pp_attrs."""
    m = mk(2)
    pm = user_pmap(m, (0, 1))
    pg = _dirty_mapping(m, pm, b"d")
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
        m.pmap.pmap_update(pm)
    assert m.pmap.pmap_is_modified(pg) and m.pmap.pmap_is_referenced(pg)


# ----------------------------------------------------------------------------
# Activation (pmap_load / cpu_load_pmap) and lifecycle


def test_context_switch_flushes_user_entries_but_keeps_global_ones(mk: MachineFactory) -> None:
    m = mk(1)
    a = user_pmap(m, (0,), "a")
    b = m.pmap.pmap_create("b")
    _accessed_mapping(m, a, 0)
    (k,) = _touch_kernel_pages(m, 1, (0,))
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_activate(b, m.cpu(0))
    d = delta(m, before)
    assert d["context switch"] == 1 and d["tlb flush nonglobal"] == 1
    assert cached(m, 0, UVA) is None and cached(m, 0, k) is not None
    assert a.cpus == set() and b.cpus == {0}


def test_context_switch_without_pge_flushes_kernel_entries_too(mk: MachineFactory) -> None:
    m = mk(1, kernel_global=False)
    b = m.pmap.pmap_create("b")
    (k,) = _touch_kernel_pages(m, 1, (0,))
    with m.on_cpu(0):
        m.pmap.pmap_activate(b, m.cpu(0))
    assert cached(m, 0, k) is None


def test_activating_the_loaded_pmap_again_is_free(mk: MachineFactory) -> None:
    m = mk(1)
    pm = user_pmap(m, (0,))
    enter(m, pm, UVA, zeroed_page(m))
    m.mmu.load(m.cpu(0), UVA, 1)  # a cached entry a CR3 reload would flush
    before = machine_snapshot(m)
    with m.on_cpu(0):
        m.pmap.pmap_activate(pm, m.cpu(0))
    assert machine_snapshot(m) == before


def test_pmap_destroy(mk: MachineFactory) -> None:
    m = mk(2)
    pm = user_pmap(m, (1,))
    enter(m, pm, UVA, zeroed_page(m))
    with pytest.raises(KernelAssertion, match="mappings"):
        m.pmap.pmap_destroy(pm)
    with m.on_cpu(0):
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
        m.pmap.pmap_update(pm)
    with pytest.raises(KernelAssertion, match="loaded"):
        m.pmap.pmap_destroy(pm)
    m.pmap.pmap_unload(m.cpu(1))
    m.pmap.pmap_destroy(pm)
    assert pm not in m.pmap.pmaps
    with pytest.raises(ValueError, match="destroyed"):
        enter(m, pm, UVA, zeroed_page(m))
    with pytest.raises(KernelAssertion, match="kernel pmap"):
        m.pmap.pmap_destroy(m.pmap_kernel())


# ----------------------------------------------------------------------------
# The MI ASID policy: sys/uvm/pmap/pmap_tlb.c 1.31 (digest 4.5)


def test_mi_asid_context_switch_does_not_flush(mk: MachineFactory) -> None:
    m = mk(1, tlb_policy="mi-asid")
    a = user_pmap(m, (0,), "a")
    b = m.pmap.pmap_create("b")
    _accessed_mapping(m, a, 0)
    asid_a = m.cpu(0).asids[a]
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_activate(b, m.cpu(0))
    d = delta(m, before)
    assert d["context switch"] == 1 and d["tlb flush"] == 0
    assert (asid_a, UVA >> 12) in m.cpu(0).tlb.entries
    # Back on a: the entry is still there and hits.
    with m.on_cpu(0):
        m.pmap.pmap_activate(a, m.cpu(0))
    walks = m.mmu.page_walks
    m.mmu.load(m.cpu(0), UVA, 1)
    assert m.mmu.page_walks == walks


def test_mi_asid_reset_where_active_but_not_on_processor(mk: MachineFactory) -> None:
    m = mk(2, tlb_policy="mi-asid")
    a = user_pmap(m, (0, 1), "a")
    b = m.pmap.pmap_create("b")
    _accessed_mapping(m, a, 1)
    with m.on_cpu(1):
        m.pmap.pmap_activate(b, m.cpu(1))  # a keeps its ASID on CPU 1
    assert a in m.cpu(1).asids
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_remove(a, UVA, UVA + PS)
        m.pmap.pmap_update(a)
    d = delta(m, before)
    assert d["asid reset"] == 1 and d["ipi sent"] == 0
    assert a not in m.cpu(1).asids
    assert all(e[0] is not a for _k, e in m.cpu(1).tlb)
    check_invariants(m)


def test_mi_asid_ipi_is_taken_at_the_targets_next_access(mk: MachineFactory) -> None:
    m = mk(2, tlb_policy="mi-asid")
    a = user_pmap(m, (0, 1), "a")
    _accessed_mapping(m, a, 1)
    key = (m.cpu(1).asids[a], UVA >> 12)
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_remove(a, UVA, UVA + PS)
        m.pmap.pmap_update(a)
    d = delta(m, before)
    assert d["ipi sent"] == 1 and d["ipi delivered"] == 0
    assert len(m.cpu(1).pending_ipis) == 1
    assert key in m.cpu(1).tlb.entries  # not yet flushed ...
    check_invariants(m)  # ... but unusable: CPU 1 takes the IPI first
    with pytest.raises(SegmentationFault):
        m.mmu.load(m.cpu(1), UVA, 1)
    assert delta(m, before)["ipi delivered"] == 1
    assert not m.cpu(1).pending_ipis and key not in m.cpu(1).tlb.entries


def test_mi_asid_initiator_does_not_wait(mk: MachineFactory) -> None:
    m = mk(2, tlb_policy="mi-asid")
    a = user_pmap(m, (0, 1), "a")
    _accessed_mapping(m, a, 1)
    costs = m.profile.costs
    with m.on_cpu(0):
        m.pmap.pmap_remove(a, UVA, UVA + PS)
        t = m.cpu(0).clock
        m.pmap.pmap_update(a)
    spent = m.cpu(0).clock - t
    assert spent == costs.invlpg_ns + costs.ipi_send_ns
    assert spent < costs.ipi_send_ns + costs.ipi_deliver_ns + costs.ipi_ack_ns
    assert rounds(m)[-1].waited_ns == spent


def test_mi_asid_kernel_shootdown_goes_to_every_other_cpu(mk: MachineFactory) -> None:
    m = mk(3, tlb_policy="mi-asid")
    (k,) = _touch_kernel_pages(m, 1, (1, 2))
    before = m.counters.copy()
    with m.on_cpu(0):
        m.pmap.pmap_kremove(k, PS)
        m.pmap.pmap_update(m.pmap_kernel())
    assert delta(m, before)["ipi sent"] == 2
    for c in (1, 2):
        with pytest.raises(KernelAssertion):
            m.mmu.load(m.cpu(c), k, 1, user=False)
