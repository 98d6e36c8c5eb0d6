"""The x86 pmap (``uvmloan/pmap/pmap.py``): the rules the mutation run of the
module found unchecked (TESTING.md, "Python: the kernel modules").

Rules and sources: specs/pmap.md (pmap.c 1.381 ``pmap_enter_ma``,
``pmap_remove_pte``, ``pmap_write_protect``, ``pmap_sync_pv``,
``pmap_pp_clear_attrs``, ``pmap_kenter_pa``; pmap.h 1.127's inline
``pmap_protect``/``pmap_page_protect``; x86_tlb.c 1.20
``pmap_tlb_shootdown``/``pmap_tlb_shootnow``; the MI policy after
``sys/uvm/pmap/pmap_tlb.c``), its "Bad input" section (every entry point
checks its arguments first and names the one at fault), the costs of T1 and
the events of specs/trace.md (their fields and counters).  Expected times are
sums of the profile's costs in the order the rule gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import PS, RW, UVA, R, events, user_pmap, zeroed_page

from uvmloan import VM_PROT_ALL, VM_PROT_NONE, KernelAssertion, Machine, check_invariants
from uvmloan.page import Page
from uvmloan.param import VMProt
from uvmloan.pmap import PMAP_WIRED, TLBState
from uvmloan.pmap import pmap as pmap_mod
from uvmloan.pmap.pmap import ALLVA, _keys_of, _shootdown_queued_keys
from uvmloan.pmap.pte import PTE_A, PTE_D, PTE_G, PTE_NX, PTE_P, PTE_PVLIST, PTE_U, PTE_W
from uvmloan.trace import (
    ASIDReset,
    ContextSwitch,
    IPIDelivered,
    IPISent,
    KEnter,
    KRemove,
    PageProtect,
    PmapEnter,
    PmapProtect,
    PmapRemove,
    PmapUpdate,
    ShootdownQueued,
    ShootdownRound,
    TLBFlush,
    TLBInvalidate,
)

X = VMProt.EXECUTE


def _machine(ncpus: int = 2, **overrides: Any) -> Machine:
    """A recording machine without the VM layer's fault handler (pure pmap)."""
    m = Machine(ncpus=ncpus, memory="256k", trace="record", profile_overrides=overrides)
    m.platform.fault_handler = None
    return m


@pytest.fixture
def m() -> Iterator[Machine]:
    mach = _machine()
    yield mach
    mach.close()


@pytest.fixture
def mi() -> Iterator[Machine]:
    """Three CPUs under the MI ASID policy (specs/pmap.md M-A1..M-A7)."""
    mach = _machine(3, tlb_policy="mi-asid")
    yield mach
    mach.close()


def kva(m: Machine, i: int = 0) -> int:
    return m.profile.vm_min_kernel_address + 0x100000 + i * PS


def free_frame(m: Machine) -> int:
    """The last frame of physical memory, never allocated in these small
    runs: PHYS_TO_VM_PAGE gives no vm_page for it (an unmanaged frame)."""
    frame = m.physmem.npages - 1
    assert m.uvm.phys_to_page(frame) is None
    return frame


def dicts(m: Machine, kind: type[Any]) -> list[dict[str, Any]]:
    return [e.to_dict() for e in events(m, kind)]


# ------------------------------------------------------ counting-only keys


def test_counting_mode_keys_are_the_events_own() -> None:
    """specs/trace.md: in counting mode an operation adds the counters its
    event would; the prototype's time, CPU and space do not matter."""
    assert _keys_of(PmapEnter, 0, 0, 0, False, False) == ("pmap enter",)
    assert _keys_of(TLBFlush, False, "-") == ("tlb flush", "tlb flush nonglobal")
    assert _keys_of(TLBFlush, True, "-") == ("tlb flush", "tlb flushg")


def test_shootdown_request_keys_are_worked_out_per_combination(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``tlbshoot request``, ``tlbshoot single page requests`` unless the
    request is a full flush (``va == -1``), one ``tlbshoot <scope> <reason>``
    per TLBSTATS scope (x86_tlb.c ``pmap_tlbstat_count``), whatever was
    asked before (the cache starts empty here and is keyed by combination)."""
    monkeypatch.setattr(pmap_mod, "_SQ_KEYS", {})
    single = (
        "tlbshoot request",
        "tlbshoot single page requests",
        "tlbshoot local REMOVE_PTE",
        "tlbshoot remote REMOVE_PTE",
    )
    assert _shootdown_queued_keys(False, "REMOVE_PTE", ("local", "remote"), 0, False) == single
    full = ("tlbshoot request", "tlbshoot kernel REMOVE_ALL")
    assert _shootdown_queued_keys(True, "REMOVE_ALL", ("kernel",), PTE_G, True) == full
    assert _shootdown_queued_keys(False, "REMOVE_PTE", ("local", "remote"), 0, False) == single
    assert _shootdown_queued_keys(True, "REMOVE_ALL", ("kernel",), PTE_G, True) == full


# ------------------------------------------------------------- bad input


def test_refusals_name_the_argument_and_its_type(m: Machine) -> None:
    """specs/pmap.md "Bad input": wrong types raise TypeError naming the
    argument and the type given."""
    pm = user_pmap(m, (0,))
    pg = zeroed_page(m)
    pmm = m.pmap
    with pytest.raises(TypeError, match=r"^eva must be an int, not str$"):
        pmm.pmap_remove(pm, UVA, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^sva must be an int, not float$"):
        pmm.pmap_remove(pm, float(UVA), UVA + PS)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^pmap must be a Pmap, not str$"):
        pmm.pmap_remove("p", UVA, UVA + PS)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^pa must be an int physical address, not str$"):
        pmm.pmap_kenter_pa(kva(m), "x", R)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^flags must be an int, not str$"):
        pmm.pmap_kenter_pa(kva(m), pg.pa, R, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^pg must be a vm_page \(Page\), not str$"):
        pmm.pmap_page_protect("pg", R)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^va must be an int, not str$"):
        pmm.pmap_extract(pm, "x")  # type: ignore[arg-type]
    assert not pm.ptes and not m.pmap.kernel.ptes


def test_unaligned_and_out_of_range_addresses_are_refused(m: Machine) -> None:
    """An end address off a page boundary, a physical address off one (by a
    single byte) or one frame past the end of memory, a start address at the
    pmap's end: ValueError, nothing entered."""
    pm = user_pmap(m, (0,))
    pmm = m.pmap
    with pytest.raises(ValueError, match=rf"^eva {UVA + PS + 1:#x} is not page aligned"):
        pmm.pmap_protect(pm, UVA, UVA + PS + 1, R)
    with pytest.raises(ValueError, match=rf"^pa {PS + 1:#x} is not page aligned"):
        pmm.pmap_kenter_pa(kva(m), PS + 1, R)
    npages = m.physmem.npages
    with pytest.raises(ValueError, match=rf"\(frame {npages}\) is outside physical memory"):
        pmm.pmap_kenter_pa(kva(m), npages * PS, R)
    top = pm.maxva
    with pytest.raises(ValueError, match=rf"^sva {top:#x} is outside pmap p's range"):
        pmm.pmap_remove(pm, top, top)
    assert not m.pmap.kernel.ptes


def test_ranges_may_be_empty_and_may_end_at_the_pmaps_end(m: Machine) -> None:
    """``[sva, eva)`` with ``eva == sva`` is empty, and ``eva`` may be the
    pmap's end (``VM_MAXUSER_ADDRESS``): both are accepted."""
    pm = user_pmap(m, (0,))
    pg = zeroed_page(m)
    top = pm.maxva
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, top - PS, pg.pa, RW, 0)
        m.pmap.pmap_protect(pm, UVA, UVA, R)
        m.pmap.pmap_protect(pm, top - PS, top, R)
    assert not pm.pte(top - PS) & PTE_W


def test_remove_refuses_a_foreign_or_destroyed_pmap_and_changes_nothing(m: Machine) -> None:
    """``pmap_remove`` checks its pmap as every entry point does: one of
    another machine, or one destroyed, is a ValueError; the other machine's
    mapping stays."""
    other = _machine(1)
    try:
        opm = user_pmap(other, (0,), "o")
        opg = zeroed_page(other)
        with other.on_cpu(0):
            other.pmap.pmap_enter(opm, UVA, opg.pa, RW, 0)
        with pytest.raises(ValueError, match=r"^pmap o belongs to another machine$"):
            m.pmap.pmap_remove(opm, UVA, UVA + PS)
        assert opm.pte(UVA) & PTE_P and opm.resident_count == 1
    finally:
        other.close()
    gone = m.pmap.pmap_create("gone")
    m.pmap.pmap_destroy(gone)
    with pytest.raises(ValueError, match=r"^pmap gone has been destroyed$"):
        m.pmap.pmap_remove(gone, UVA, UVA + PS)


def test_assertions_say_what_was_violated(m: Machine) -> None:
    pmm = m.pmap
    with pytest.raises(KernelAssertion, match=r"^pmap_destroy: cannot destroy the kernel pmap$"):
        pmm.pmap_destroy(pmm.pmap_kernel())
    pm = user_pmap(m, (0,))
    with (
        m.on_cpu(0),
        pytest.raises(KernelAssertion, match=r"^pmap_tlb_shootdown: PTE_G on a user pmap$"),
    ):
        pmm.pmap_tlb_shootdown(pm, UVA, PTE_G | PTE_P, "REMOVE_PTE")
    pg = zeroed_page(m)
    pmm.pmap_kenter_pa(kva(m), pg.pa, R)
    msg = (
        rf"^pmap_kenter_pa: va {kva(m):#x} already maps frame {pg.frame} "
        r"\(pmap\(9\): never kenter over a valid mapping\)$"
    )
    with pytest.raises(KernelAssertion, match=msg):
        pmm.pmap_kenter_pa(kva(m), pg.pa, R)


def test_pmap_repr_names_its_ptes_and_cpus(m: Machine) -> None:
    pm = user_pmap(m, (1, 0))
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, zeroed_page(m).pa, RW, 0)
    assert repr(pm) == "<Pmap p 1 PTEs on CPUs [0, 1]>"


# --------------------------------------------------------------- pv lists


def test_pv_entries_are_kept_in_the_order_they_were_entered(m: Machine) -> None:
    """``VMPageMD``: the first mapping inline, the others in ``pv_more``,
    ``pv`` oldest first."""
    p1, p2 = m.pmap.pmap_create("p1"), m.pmap.pmap_create("p2")
    md = zeroed_page(m).mdpage
    m.pmap._pv_enter(md, p1, UVA)
    assert (md.pv_pmap, md.pv_va, md.pv_more) == (p1, UVA, None)
    m.pmap._pv_enter(md, p2, UVA)
    m.pmap._pv_enter(md, p1, UVA + PS)
    assert md.pv == [(p1, UVA), (p2, UVA), (p1, UVA + PS)]
    assert md.pv_count == 3
    assert md.pv_more is not None and list(md.pv_more) == [(p2, UVA), (p1, UVA + PS)]


def test_removing_a_pv_entry_that_is_not_there_is_an_assertion(m: Machine) -> None:
    """pmap.c ``pmap_remove_pv``: the entry must exist (KASSERT), and the
    frame must have a vm_page; each assertion names what it looked for."""
    pm = m.pmap.pmap_create("p")
    pg = zeroed_page(m)
    with pytest.raises(
        KernelAssertion, match=rf"^pmap: no pv entry for p va {UVA:#x} on frame {pg.frame}$"
    ):
        m.pmap._pv_remove(pg.frame, pm, UVA, 0)
    frame = free_frame(m)
    with pytest.raises(KernelAssertion, match=rf"^pv entry for frame {frame} without a vm_page$"):
        m.pmap._pv_remove(frame, pm, UVA, 0)


def test_an_unmanaged_mapping_is_removed_without_a_pv_entry(m: Machine) -> None:
    """E1/R1: a frame without a vm_page is mapped without ``PTE_PVLIST`` and
    removed without touching any pv list."""
    pm = user_pmap(m, (0,))
    frame = free_frame(m)
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, frame * PS, RW, 0)
        assert not pm.pte(UVA) & PTE_PVLIST
        m.pmap.pmap_remove(pm, UVA, UVA + 2 * PS)
    assert not pm.ptes and pm.resident_count == 0


# ------------------------------------------------------- PTEs and attributes


def test_write_protect_sets_nx_unless_execute_is_kept(m: Machine) -> None:
    """R3 (pmap.c ``pmap_write_protect``): W cleared; NX set when the new
    protection has no VM_PROT_EXECUTE, not when it keeps it."""
    pm = user_pmap(m, (0,))
    a, b = zeroed_page(m), zeroed_page(m)
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, a.pa, VM_PROT_ALL, 0)
        m.pmap.pmap_enter(pm, UVA + PS, b.pa, VM_PROT_ALL, 0)
        m.pmap.pmap_protect(pm, UVA, UVA + PS, R)
        m.pmap.pmap_protect(pm, UVA + PS, UVA + 2 * PS, R | X)
    assert pm.pte(UVA) == (a.frame << 12) | PTE_P | PTE_U | PTE_PVLIST | PTE_NX
    assert pm.pte(UVA + PS) == (b.frame << 12) | PTE_P | PTE_U | PTE_PVLIST


def test_page_protect_keeps_the_attributes_already_saved(m: Machine) -> None:
    """PP3: ``pmap_pp_clear_attrs`` ORs each mapping's A/D into ``pp_attrs``:
    the D and A a removed mapping left there survive a write-protect of the
    page's other (clean) mapping."""
    pm = user_pmap(m, (0,))
    pg = zeroed_page(m)
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, int(RW))  # A|D preset (E2)
        m.pmap.pmap_enter(pm, UVA + PS, pg.pa, RW, 0)
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
        m.pmap.pmap_update(pm)
        m.pmap.pmap_page_protect(pg, R)
    assert pg.mdpage.attrs == PTE_A | PTE_D
    assert m.pmap.pmap_is_modified(pg) and m.pmap.pmap_is_referenced(pg)


def test_page_protect_of_an_untouched_mapping_saves_no_attribute(m: Machine) -> None:
    """PP2/PP3: a mapping never accessed has neither A nor D; protecting it
    leaves the page unreferenced and unmodified."""
    pm = user_pmap(m, (0,))
    pg = zeroed_page(m)
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, 0)
        m.pmap.pmap_page_protect(pg, R)
    assert pg.mdpage.attrs == 0
    assert not m.pmap.pmap_is_modified(pg) and not m.pmap.pmap_is_referenced(pg)


# ------------------------------------------------------------ the events


def test_each_pte_operation_reports_its_own_fields(m: Machine) -> None:
    """specs/trace.md: ``pmap page_protect`` (emitted before any PTE
    changes: frame, prot, the mappings it covers), ``pmap protect``,
    ``pmap remove`` and ``pmap kenter_pa`` (each after its PTE change, which
    costs ``pte_update_ns``, T1), in the operation's address space."""
    pm = user_pmap(m, (0,))
    pg, q = zeroed_page(m), zeroed_page(m)
    c0 = m.cpu(0)
    ns = m.platform.costs.pte_update_ns
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, 0)
        m.pmap.pmap_enter(pm, UVA + PS, pg.pa, RW, 0)
        m.pmap.pmap_enter(pm, UVA + 2 * PS, q.pa, RW, 0)
        t0 = c0.clock
        m.pmap.pmap_page_protect(pg, R)
        t1 = c0.clock
        m.pmap.pmap_protect(pm, UVA + 2 * PS, UVA + 3 * PS, R)
        t2 = c0.clock
        m.pmap.pmap_remove(pm, UVA + 2 * PS, UVA + 3 * PS)
        t3 = c0.clock
        m.pmap.pmap_kenter_pa(kva(m), q.pa, R)
    assert t1 == t0 + 2 * ns  # both mappings lost W
    assert dicts(m, PageProtect) == [
        {
            "ev": "pmap page_protect",
            "t": t0,
            "cpu": 0,
            "space": "-",
            "frame": pg.frame,
            "prot": 1,
            "prot_name": "r",
            "mappings": 2,
        }
    ]
    assert dicts(m, PmapProtect) == [
        {
            "ev": "pmap protect",
            "t": t1 + ns,
            "cpu": 0,
            "space": "p",
            "va": UVA + 2 * PS,
            "prot": 1,
            "prot_name": "r",
        }
    ]
    assert dicts(m, PmapRemove) == [
        {
            "ev": "pmap remove",
            "t": t2 + ns,
            "cpu": 0,
            "space": "p",
            "va": UVA + 2 * PS,
            "frame": q.frame,
        }
    ]
    assert dicts(m, KEnter) == [
        {
            "ev": "pmap kenter_pa",
            "t": t3 + ns,
            "cpu": 0,
            "space": "kernel",
            "va": kva(m),
            "frame": q.frame,
            "prot": 1,
            "prot_name": "r",
        }
    ]


def test_page_protect_none_shoots_down_a_used_mapping_as_sync_pv(m: Machine) -> None:
    """PP4: ``pmap_pp_remove`` syncs each mapping (reason SYNC_PV) and shoots
    at once: the local round invalidates the page (``tlb invlpg``, space
    ``-``) after the PTE's removal (``pte_update_ns`` then ``invlpg_ns``)."""
    pm = user_pmap(m, (0,))
    pg = zeroed_page(m)
    c0 = m.cpu(0)
    costs = m.platform.costs
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, pg.pa, R, int(R))  # A preset (E2)
        t0 = c0.clock
        m.pmap.pmap_page_protect(pg, VM_PROT_NONE)
    (q,) = events(m, ShootdownQueued)
    assert (q.space, q.va, q.reason, q.scopes) == ("p", UVA, "SYNC_PV", ("local",))
    assert dicts(m, TLBInvalidate) == [
        {
            "ev": "tlb invlpg",
            "t": t0 + costs.pte_update_ns + costs.invlpg_ns,
            "cpu": 0,
            "space": "-",
            "va": UVA,
        }
    ]


def test_a_full_flush_round_is_a_shootdown_flush(m: Machine) -> None:
    """S3/S9: 17 requests make the packet ALLVA; the round flushes (not
    globally: no PTE_G request) and says why."""
    pm = user_pmap(m, (0,))
    with m.on_cpu(0):
        for i in range(17):
            m.pmap.pmap_tlb_shootdown(pm, UVA + i * PS, PTE_P | PTE_A, "REMOVE_PTE")
        n = len(events(m, TLBFlush))  # the CR3 load of pmap_activate
        m.pmap.pmap_tlb_shootnow()
    (fl,) = events(m, TLBFlush)[n:]
    assert (fl.cpu, fl.space, fl.global_flush, fl.why) == (0, "-", False, "shootdown")


def test_unload_on_x86_reloads_cr3_and_leaves_the_pmap(m: Machine) -> None:
    """``pmap_unload`` (the process exited): the CPU leaves ``pm_cpus`` and,
    on x86, loading the kernel's CR3 is a non-global flush (A1: global
    kernel entries survive) costing ``tlbflush_ns``."""
    pm = user_pmap(m, (0, 1))
    pg = zeroed_page(m)
    c0 = m.cpu(0)
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, 0)
        m.pmap.pmap_kenter_pa(kva(m), pg.pa, R)
    m.mmu.load(c0, UVA, 1)
    m.mmu.load(c0, kva(m), 1, user=False)
    assert set(c0.tlb.entries) == {(0, UVA >> 12), (0, kva(m) >> 12)}
    t0 = c0.clock
    n = len(events(m, TLBFlush))  # the CR3 loads of pmap_activate
    m.pmap.pmap_unload(c0)
    assert pm.cpus == {1} and c0.curpmap is None
    assert set(c0.tlb.entries) == {(0, kva(m) >> 12)}
    (fl,) = dicts(m, TLBFlush)[n:]
    assert fl == {
        "ev": "tlb flush",
        "t": t0 + m.platform.costs.tlbflush_ns,
        "cpu": 0,
        "space": "-",
        "global_flush": False,
        "why": "cr3 load",
    }
    assert type(fl["global_flush"]) is bool


def test_deactivate_without_a_cpu_is_the_current_cpu(m: Machine) -> None:
    """A3: ``pmap_deactivate()`` acts on curcpu (the LWP leaving it)."""
    pm = user_pmap(m, (0, 1))
    with m.on_cpu(1):
        m.pmap.pmap_deactivate()
    assert m.cpu(1).tlbstate is TLBState.LAZY and m.cpu(0).tlbstate is TLBState.VALID
    assert pm.cpus == {0, 1}


# ------------------------------------------------------------ target sets


def test_kernel_vas_of_a_user_pmap_also_target_its_kernel_cpus() -> None:
    """S4 (x86_tlb.c ``pmap_tlb_shootdown``): a user pmap's request merges
    ``pm_cpus``, and ``pm_kernel_cpus`` too when ``va >= VM_MAXUSER_ADDRESS``
    (the first kernel address included), not for a user VA."""
    m = _machine(3)
    try:
        pm = user_pmap(m, (0,))
        pm.kernel_cpus = {2}
        top = m.profile.vm_maxuser_address
        pkt = m.cpu(0).packet
        with m.on_cpu(0):
            m.pmap.pmap_tlb_shootdown(pm, top, 0, "REMOVE_PTE")
            assert pkt.targets == {0, 2}
            m.pmap.pmap_tlb_shootnow()
            m.pmap.pmap_tlb_shootdown(pm, top - PS, 0, "REMOVE_PTE")
            assert pkt.targets == {0}
            m.pmap.pmap_tlb_shootnow()
        assert [r.targets for r in events(m, ShootdownRound)] == [(0, 2), (0,)]
    finally:
        m.close()


def test_requests_of_two_pmaps_target_both_cpu_sets() -> None:
    """S4: the packet's targets are the union over its requests."""
    m = _machine(3)
    try:
        a = user_pmap(m, (1,), "a")
        b = user_pmap(m, (2,), "b")
        with m.on_cpu(0):
            m.pmap.pmap_tlb_shootdown(a, UVA, 0, "REMOVE_PTE")
            m.pmap.pmap_tlb_shootdown(b, UVA, 0, "REMOVE_PTE")
            assert m.cpu(0).packet.targets == {1, 2}
    finally:
        m.close()


def test_asid_of_is_zero_on_x86_and_for_the_kernel(m: Machine) -> None:
    """M-A1: only user pmaps under the MI policy are tagged; x86 entries and
    kernel entries carry tag 0."""
    pm = user_pmap(m, (0,))
    assert m.pmap.asid_of(m.cpu(0), pm) == 0
    assert m.pmap.asid_of(m.cpu(1), pm) == 0


def test_asid_of_under_the_mi_policy_acquires_the_first_free_asid(mi: Machine) -> None:
    """M-A4: a CPU's pool starts at ASID 1 (0 is the kernel's); the pmap
    keeps its ASID; the next pmap gets 2; the kernel pmap is 0."""
    c2 = mi.cpu(2)
    a, b = mi.pmap.pmap_create("a"), mi.pmap.pmap_create("b")
    assert mi.pmap.asid_of(c2, mi.pmap.pmap_kernel()) == 0
    assert mi.pmap.asid_of(c2, a) == 1
    assert mi.pmap.asid_of(c2, a) == 1
    assert mi.pmap.asid_of(c2, b) == 2


# ------------------------------------------------------- the MI ASID policy


def _four_cpus() -> Machine:
    return _machine(4, tlb_policy="mi-asid")


def test_mi_round_posts_ipis_where_on_processor_and_resets_where_only_active() -> None:
    """M-A2/M-A3 (``pmap_tlb_shootdown_bystanders``): CPU 0 drops the page
    at once; CPU 1, where ``p`` is on-processor, gets an IPI; CPU 2, which
    switched from ``p`` to ``q`` and still holds an ASID for ``p``, has that
    ASID reset without an IPI; CPU 3 never ran ``p``: nothing.  The round
    (allva, global flush and broadcast all false under this policy) names
    its initiator and its IPI target; the initiator does not wait (its clock
    moved by one invlpg and one IPI send)."""
    m = _four_cpus()
    try:
        pm = user_pmap(m, (0, 1, 2))
        q = user_pmap(m, (2,), "q")
        assert m.cpu(2).curpmap is q and pm in m.cpu(2).asids
        c0 = m.cpu(0)
        costs = m.platform.costs
        with m.on_cpu(0):
            start = c0.clock
            m.pmap.pmap_tlb_shootdown(pm, UVA, PTE_P | PTE_A, "REMOVE_PTE")
            m.pmap.pmap_update(pm)
        t_inv = start + costs.invlpg_ns
        t_ipi = t_inv + costs.ipi_send_ns
        assert dicts(m, TLBInvalidate) == [
            {"ev": "tlb invlpg", "t": t_inv, "cpu": 0, "space": "-", "va": UVA}
        ]
        assert dicts(m, IPISent) == [
            {
                "ev": "ipi sent",
                "t": t_ipi,
                "cpu": 0,
                "space": "p",
                "target": 1,
                "vector": "IPI_SHOOTDOWN",
            }
        ]
        assert dicts(m, ASIDReset) == [
            {"ev": "asid reset", "t": t_ipi, "cpu": 0, "space": "p", "target": 2}
        ]
        assert pm not in m.cpu(2).asids and pm not in m.cpu(3).asids
        (rnd,) = dicts(m, ShootdownRound)
        assert rnd == {
            "ev": "TLB shootdown",
            "t": t_ipi,
            "cpu": 0,
            "space": "-",
            "targets": [0, 1],
            "nva": 1,
            "allva": False,
            "global_flush": False,
            "broadcast": False,
            "waited_ns": t_ipi - start,
        }
        assert m.counters["tlbshoot single page issues"] == 1
        c1 = m.cpu(1)
        t1 = c1.clock
        asid = c1.asids[pm]
        m.pmap.take_interrupts(c1)
        assert dicts(m, IPIDelivered) == [
            {
                "ev": "ipi delivered",
                "t": t1 + costs.ipi_deliver_ns,
                "cpu": 1,
                "space": "p",
                "source": 0,
                "vector": "IPI_SHOOTDOWN",
            }
        ]
        # still on-processor: its ASID is invalidated (a flush), not reset
        assert c1.asids[pm] == asid
        assert c1.clock == t1 + costs.ipi_deliver_ns + costs.tlbflush_ns
        assert len(events(m, ASIDReset)) == 1
        check_invariants(m)
    finally:
        m.close()


def test_mi_ipi_taken_after_switching_away_resets_the_asid() -> None:
    """``pmap_tlb_shootdown_process`` (TLBINV_ONE): when the target takes
    the IPI the victim is no longer on-processor there (CPU 1 switched to
    ``q`` first), so its ASID is reset (one ``asid reset`` event on CPU 1,
    naming CPU 1) and nothing is flushed."""
    m = _four_cpus()
    try:
        pm = user_pmap(m, (0, 1))
        with m.on_cpu(0):
            m.pmap.pmap_tlb_shootdown(pm, UVA, PTE_P | PTE_A, "REMOVE_PTE")
            m.pmap.pmap_update(pm)
        c1 = m.cpu(1)
        q = m.pmap.pmap_create("q")
        with m.on_cpu(1):
            m.pmap.pmap_activate(q, c1)
        assert pm in c1.asids
        t1 = c1.clock
        m.pmap.take_interrupts(c1)
        assert pm not in c1.asids and q in c1.asids
        t = t1 + m.platform.costs.ipi_deliver_ns
        assert c1.clock == t
        assert dicts(m, ASIDReset) == [
            {"ev": "asid reset", "t": t, "cpu": 1, "space": "p", "target": 1}
        ]
        check_invariants(m)
    finally:
        m.close()


def test_mi_kernel_work_flushes_every_other_cpu_globally(mi: Machine) -> None:
    """The kernel pmap's work goes to every other CPU by IPI; the handler
    flushes everything, global entries included (``shootdown ALLKERNEL``)."""
    with mi.on_cpu(0):
        mi.pmap.pmap_tlb_shootdown(mi.pmap.pmap_kernel(), kva(mi), PTE_P | PTE_A, "KREMOVE")
        mi.pmap.pmap_update()
    for c in (1, 2):
        mi.pmap.take_interrupts(mi.cpu(c))
    flushes = [(e.cpu, e.space, e.global_flush, e.why) for e in events(mi, TLBFlush)]
    assert flushes == [(1, "-", True, "shootdown ALLKERNEL"), (2, "-", True, "shootdown ALLKERNEL")]
    assert [e.target for e in events(mi, IPISent)] == [1, 2]


# ---------------------------------------------------------- pmap_enter


def _page(m: Machine) -> Page:
    """A zeroed page whose frame is not 0 (frame 0 shifted either way is 0,
    which would hide a frame computed with the wrong shift)."""
    pg = zeroed_page(m)
    if pg.frame == 0:
        pg = zeroed_page(m)
    assert pg.frame != 0
    return pg


def test_enter_sets_nx_iff_the_protection_lacks_execute(m: Machine) -> None:
    """P2/E1 (``protection_codes``): NX without VM_PROT_EXECUTE, W with
    VM_PROT_WRITE, U below VM_MAXUSER_ADDRESS, PVLIST for a managed frame."""
    pm = user_pmap(m, (0,))
    a, b = _page(m), _page(m)
    with m.on_cpu(0):
        assert m.pmap.pmap_enter(pm, UVA, a.pa, R, 0) == 0
        assert m.pmap.pmap_enter(pm, UVA + PS, b.pa, R | X, 0) == 0
    assert pm.pte(UVA) == (a.frame << 12) | PTE_P | PTE_U | PTE_PVLIST | PTE_NX
    assert pm.pte(UVA + PS) == (b.frame << 12) | PTE_P | PTE_U | PTE_PVLIST


def test_kernel_enter_is_global_iff_the_profile_says_so() -> None:
    """E1/K2: ``pmap_pg_g`` (PTE_G) in the kernel pmap when the CPU has PGE
    and SVS is off (profile ``kernel_global``); no U above
    VM_MAXUSER_ADDRESS."""
    for kglobal in (True, False):
        m = _machine(1, kernel_global=kglobal)
        try:
            pg = _page(m)
            m.pmap.pmap_enter(m.pmap.pmap_kernel(), kva(m), pg.pa, RW, 0)
            g = PTE_G if kglobal else 0
            assert m.pmap.kernel.pte(kva(m)) == (
                (pg.frame << 12) | PTE_P | PTE_W | PTE_NX | PTE_PVLIST | g
            )
        finally:
            m.close()


def test_reentering_the_same_frame_keeps_a_d_and_the_pv_entry(m: Machine) -> None:
    """E3: "if the same page, inherit PTE_A and PTE_D"; the pv entry stays
    (one entry), no shootdown is needed (neither frame nor W changed)."""
    pm = user_pmap(m, (0,))
    pg = _page(m)
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, int(RW))  # A|D preset (E2)
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, 0)
    assert pm.pte(UVA) & (PTE_A | PTE_D) == PTE_A | PTE_D
    assert pg.mdpage.pv == [(pm, UVA)]
    assert m.cpu(0).packet.empty and pm.resident_count == 1


def test_reentering_the_same_frame_keeps_the_saved_attributes(m: Machine) -> None:
    """E3/E5: the page's ``pp_attrs`` accumulate: the D a removed mapping
    left there survives re-entering another, clean, mapping of the page."""
    pm = user_pmap(m, (0,))
    pg = _page(m)
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, int(RW))
        m.pmap.pmap_remove(pm, UVA, UVA + PS)
        m.pmap.pmap_update(pm)
        m.pmap.pmap_enter(pm, UVA + PS, pg.pa, RW, int(R))  # A only
        m.pmap.pmap_enter(pm, UVA + PS, pg.pa, RW, 0)
    assert pm.pte(UVA + PS) & (PTE_A | PTE_D) == PTE_A
    assert pg.mdpage.attrs & PTE_D
    assert m.pmap.pmap_is_modified(pg)


def test_reentering_an_untouched_mapping_references_nothing(m: Machine) -> None:
    pm = user_pmap(m, (0,))
    pg = _page(m)
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, 0)
        m.pmap.pmap_enter(pm, UVA, pg.pa, R, 0)
    assert pg.mdpage.attrs == 0
    assert not m.pmap.pmap_is_referenced(pg) and not m.pmap.pmap_is_modified(pg)


def test_a_managed_frame_replaces_an_unmanaged_one(m: Machine) -> None:
    """E5: the old PTE had no pv entry (no PTE_PVLIST), so none is removed;
    the new frame's page gets one."""
    pm = user_pmap(m, (0,))
    pg = _page(m)
    with m.on_cpu(0):
        m.pmap.pmap_enter(pm, UVA, free_frame(m) * PS, RW, 0)
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, 0)
    assert pm.pte(UVA) & PTE_PVLIST and pm.resident_count == 1
    assert pg.mdpage.pv == [(pm, UVA)]


def test_enter_refuses_the_end_of_its_ranges(m: Machine) -> None:
    """A va at the pmap's end, a frame one past the end of memory and a
    flags argument of the wrong type are refused, named, nothing entered."""
    pm = user_pmap(m, (0,))
    pg = _page(m)
    npages = m.physmem.npages
    with m.on_cpu(0):
        with pytest.raises(ValueError, match=rf"^va {pm.maxva:#x} is outside pmap p's range"):
            m.pmap.pmap_enter(pm, pm.maxva, pg.pa, RW, 0)
        with pytest.raises(ValueError, match=rf"\(frame {npages}\) is outside physical memory"):
            m.pmap.pmap_enter(pm, UVA, npages * PS, RW, 0)
        with pytest.raises(TypeError, match=r"^flags must be an int, not str$"):
            m.pmap.pmap_enter(pm, UVA, pg.pa, RW, "0")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^va must be an int, not str$"):
            m.pmap.pmap_enter(pm, "va", pg.pa, RW, 0)  # type: ignore[arg-type]
    assert not pm.ptes and pg.mdpage.pv == []


def test_enter_reports_its_fields(m: Machine) -> None:
    """specs/trace.md ``pmap enter``: va, frame, prot, managed (the frame
    has a vm_page), wired (PMAP_WIRED), after the PTE update (T1)."""
    pm = user_pmap(m, (0,))
    pg = _page(m)
    frame = free_frame(m)
    c0 = m.cpu(0)
    ns = m.platform.costs.pte_update_ns
    with m.on_cpu(0):
        t0 = c0.clock
        m.pmap.pmap_enter(pm, UVA, pg.pa, RW, PMAP_WIRED)
        m.pmap.pmap_enter(pm, UVA + PS, frame * PS, R, 0)
    assert dicts(m, PmapEnter) == [
        {
            "ev": "pmap enter",
            "t": t0 + ns,
            "cpu": 0,
            "space": "p",
            "va": UVA,
            "frame": pg.frame,
            "prot": 3,
            "prot_name": "rw",
            "managed": True,
            "wired": True,
        },
        {
            "ev": "pmap enter",
            "t": t0 + 2 * ns,
            "cpu": 0,
            "space": "p",
            "va": UVA + PS,
            "frame": frame,
            "prot": 1,
            "prot_name": "r",
            "managed": False,
            "wired": False,
        },
    ]


# ------------------------------------------------------------ pmap_kremove


def test_kremove_of_nothing_and_across_a_hole(m: Machine) -> None:
    """K3: a zero-length kremove is nothing; an unmapped page in the range is
    skipped and the pages after it are still removed, each reported (space
    ``kernel``, the frame it mapped)."""
    a, b = _page(m), _page(m)
    pmm = m.pmap
    pmm.pmap_kenter_pa(kva(m, 0), a.pa, R)
    pmm.pmap_kenter_pa(kva(m, 2), b.pa, R)
    pmm.pmap_kremove(kva(m), 0)
    assert len(pmm.kernel.ptes) == 2
    pmm.pmap_kremove(kva(m), 3 * PS)
    assert not pmm.kernel.ptes
    assert pmm.kernel.resident_count == 0 and pmm.kernel.wired_count == 0
    got = [(e["space"], e["va"], e["frame"]) for e in dicts(m, KRemove)]
    assert got == [("kernel", kva(m, 0), a.frame), ("kernel", kva(m, 2), b.frame)]


def test_kremove_refuses_a_partial_page_and_leaving_kernel_space(m: Machine) -> None:
    top = m.pmap.kernel.maxva
    with pytest.raises(ValueError, match=r"size 4097 must be a non-negative page multiple"):
        m.pmap.pmap_kremove(kva(m), PS + 1)
    msg = rf"^pmap_kremove: range \[{top - PS:#x}, {top + PS:#x}\) leaves kernel space$"
    with pytest.raises(ValueError, match=msg):
        m.pmap.pmap_kremove(top - PS, 2 * PS)


# ------------------------------------------------ more argument checks


def test_the_other_entry_points_name_their_bad_arguments(m: Machine) -> None:
    pmm = m.pmap
    pm = user_pmap(m, (0,))
    with pytest.raises(TypeError, match=r"^cpu must be a CPU \(machine.cpu\(i\)\), not str$"):
        pmm.pmap_unload("0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^prot must be an int of VM_PROT_\* bits, not str$"):
        pmm.pmap_protect(pm, UVA, UVA + PS, "r")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^name must be a str, not int$"):
        pmm.pmap_create(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^pmap_activate: the kernel pmap is always active$"):
        pmm.pmap_activate(pmm.pmap_kernel(), m.cpu(0))
    big = _machine(3)
    try:
        with pytest.raises(ValueError, match=r"^cpu 2 belongs to another machine$"):
            pmm.pmap_unload(big.cpu(2))
        foreign = big.pmap.pmap_create("f")
        with pytest.raises(ValueError, match=r"^pmap f belongs to another machine$"):
            pmm.pmap_update(foreign)
    finally:
        big.close()
    gone = pmm.pmap_create("gone")
    pmm.pmap_destroy(gone)
    with pytest.raises(ValueError, match=r"^pmap gone has been destroyed$"):
        pmm.pmap_update(gone)


# ----------------------------------------------- activation and updates


def test_activation_reports_the_switch_and_the_cr3_load(m: Machine) -> None:
    """A1: ``pmap_activate()`` on curcpu when no CPU is named; a context
    switch (``context_switch_ns``) names the old and the new pmap ("-" for
    none), then CR3 is reloaded: a non-global flush (``tlbflush_ns``)."""
    p, q = m.pmap.pmap_create("p"), m.pmap.pmap_create("q")
    c1 = m.cpu(1)
    costs = m.platform.costs
    t0 = c1.clock
    with m.on_cpu(1):
        m.pmap.pmap_activate(p)
        m.pmap.pmap_activate(q)
    assert c1.curpmap is q and p.cpus == set() and q.cpus == {1}
    step = costs.context_switch_ns + costs.tlbflush_ns
    assert dicts(m, ContextSwitch) == [
        {
            "ev": "context switch",
            "t": t0 + costs.context_switch_ns,
            "cpu": 1,
            "space": "p",
            "old": "-",
            "new": "p",
        },
        {
            "ev": "context switch",
            "t": t0 + step + costs.context_switch_ns,
            "cpu": 1,
            "space": "q",
            "old": "p",
            "new": "q",
        },
    ]
    flushes = dicts(m, TLBFlush)
    assert flushes == [
        {
            "ev": "tlb flush",
            "t": t0 + step,
            "cpu": 1,
            "space": "-",
            "global_flush": False,
            "why": "cr3 load",
        },
        {
            "ev": "tlb flush",
            "t": t0 + 2 * step,
            "cpu": 1,
            "space": "-",
            "global_flush": False,
            "why": "cr3 load",
        },
    ]
    assert all(type(f["global_flush"]) is bool for f in flushes)


def test_update_without_a_pmap_is_reported_in_no_address_space(m: Machine) -> None:
    with m.on_cpu(0):
        m.pmap.pmap_update()
    assert [e.space for e in events(m, PmapUpdate)] == ["-"]


# ----------------------------------------------------- x86 shootdown rounds


def test_x86_round_reports_requests_ipis_and_deliveries() -> None:
    """S4/S7/S8 and specs/trace.md: a user request names its pmap and has no
    PTE_G; a kernel PTE_G request has; the unicast IPI to CPU 1 (not every
    CPU is a target: no broadcast) carries LAPIC_TLB_VECTOR in no address
    space, sent after ``ipi_send_ns``, delivered ``ipi_deliver_ns`` later."""
    m = _machine(3)
    try:
        pm = user_pmap(m, (0, 1))
        c0, c1 = m.cpu(0), m.cpu(1)
        costs = m.platform.costs
        with m.on_cpu(0):
            m.pmap.pmap_tlb_shootdown(pm, UVA, PTE_P | PTE_A, "REMOVE_PTE")
            start, t1 = c0.clock, c1.clock
            m.pmap.pmap_tlb_shootnow()
            m.pmap.pmap_tlb_shootdown(m.pmap.kernel, kva(m), PTE_P | PTE_A | PTE_G, "KREMOVE")
        queued = [(d["space"], d["global_pte"]) for d in dicts(m, ShootdownQueued)]
        assert queued == [("p", False), ("kernel", True)]
        assert all(type(d["global_pte"]) is bool for d in dicts(m, ShootdownQueued))
        sent = start + costs.ipi_send_ns
        assert dicts(m, IPISent) == [
            {
                "ev": "ipi sent",
                "t": sent,
                "cpu": 0,
                "space": "-",
                "target": 1,
                "vector": "LAPIC_TLB_VECTOR",
            }
        ]
        assert dicts(m, IPIDelivered) == [
            {
                "ev": "ipi delivered",
                "t": max(t1, sent + costs.ipi_deliver_ns),
                "cpu": 1,
                "space": "-",
                "source": 0,
                "vector": "LAPIC_TLB_VECTOR",
            }
        ]
    finally:
        m.close()


def test_a_local_only_round_is_no_broadcast(m: Machine) -> None:
    pm = user_pmap(m, (0,))
    with m.on_cpu(0):
        m.pmap.pmap_tlb_shootdown(pm, UVA, PTE_P | PTE_A, "REMOVE_PTE")
        m.pmap.pmap_tlb_shootnow()
    (rnd,) = dicts(m, ShootdownRound)
    assert (rnd["ev"], rnd["targets"], rnd["broadcast"]) == (
        "tlbshoot local-only round",
        [0],
        False,
    )
    assert type(rnd["broadcast"]) is bool


def test_counting_mode_counts_each_request_as_its_event_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S11 in counting mode (the default trace), the key cache starting
    empty: a single-page request counts ``single page requests``, a full
    flush request does not, a single-page request after it (the packet now
    ALLVA) does again; each counts its scopes with its reason."""
    monkeypatch.setattr(pmap_mod, "_SQ_KEYS", {})
    with Machine(ncpus=2, memory="256k") as m:
        pm = user_pmap(m, (0, 1))

        def shoot(va: int) -> dict[str, int]:
            with m.on_cpu(0):
                m.pmap.pmap_tlb_shootdown(pm, va, PTE_P | PTE_A, "REMOVE_PTE")
            return {k: v for k, v in m.counters.items() if k.startswith("tlbshoot")}

        def counts(n: int, single: int) -> dict[str, int]:
            return {
                "tlbshoot request": n,
                "tlbshoot single page requests": single,
                "tlbshoot local REMOVE_PTE": n,
                "tlbshoot remote REMOVE_PTE": n,
            }

        assert shoot(UVA) == counts(1, 1)
        assert shoot(ALLVA) == counts(2, 1)
        assert shoot(UVA + PS) == counts(3, 2)
