"""The pmap side of loaning (digest section 4, invariants I3, I4, I11).

* after ``uvm_loan`` returns, no managed mapping of a loaned page is
  writable and no CPU's TLB can complete a write to it (x86
  ``pmap_page_protect`` -> ``pmap_pp_clear_attrs`` ends in
  ``pmap_tlb_shootnow``; a cached entry with D clear re-walks);
* ``pmap_page_protect`` only on the 0->1 transition;
* kernel loan mappings: ``pmap_kenter_pa`` read-only, unmanaged, one
  ``pmap_update(pmap_kernel())`` before the loan is published, untouched by
  ``pmap_page_protect``;
* release in ``sodoloanfree``'s order: ``pmap_kremove`` -> ``pmap_update`` ->
  ``uvm_unloan`` -> free the KVA.
"""

from __future__ import annotations

import pytest
from helpers import PS, machine_fixture

from uvmloan import (
    MAP_SHARED,
    UVM_LOAN_TOPAGE,
    KernelAssertion,
    Machine,
    Page,
    check_invariants,
    uvm_loan,
)
from uvmloan.pmap.pte import PTE_D, PTE_P, PTE_PVLIST, PTE_W, pte_frame
from uvmloan.testing.loan_ops import page_at, release_order_problems, write_paths
from uvmloan.trace import (
    Event,
    IPISent,
    KEnter,
    KRemove,
    Loan,
    PageProtect,
    PmapUpdate,
    ShootdownQueued,
    ShootdownRound,
    Unloan,
)

m4 = machine_fixture(ncpus=4, memory="2M", trace="record")


def _since(m: Machine, n: int) -> list[Event]:
    return m.trace[n:]


def _tlb_frames(m: Machine, cpu: int) -> dict[int, int]:
    """frame -> snapshot PTE of every TLB entry of one CPU."""
    return {pte_frame(snap): snap for _k, (_pm, snap) in m.cpus[cpu].tlb}


@pytest.mark.parametrize("npages", [1, 3, 20])
def test_no_cpu_can_write_after_loan(m4: Machine, npages: int) -> None:
    """I3 with the sender having written its buffer from all four CPUs: every
    CPU caches W|D entries, so the protect must shoot them all down."""
    m = m4
    p = m.spawn("sender", cpu=0)
    buf = p.mmap(npages * PS)
    for cpu in range(4):
        p.run_on(cpu)
        for i in range(npages):
            p.write(buf + i * PS + cpu, b"%d" % cpu)
    frames = set()
    for i in range(npages):
        pg = page_at(p, buf + i * PS)
        assert pg is not None
        frames.add(pg.frame)
    # Before: each CPU that last ran the sender caches writable dirty entries.
    assert write_paths(m, frames)
    n = len(m.trace)
    rounds_before = m.counters["TLB shootdown"]
    pages = uvm_loan(p.map, buf, npages * PS, UVM_LOAN_TOPAGE)
    assert {pg.frame for pg in pages if isinstance(pg, Page)} == frames
    assert write_paths(m, frames) == []
    assert all(c.packet.empty for c in m.cpus)
    for pm in m.pmap.pmaps:
        for pte in pm.ptes.values():
            if pte_frame(pte) in frames:
                assert pte & PTE_PVLIST and not pte & PTE_W
    # The protect shot down synchronously (no pmap_update involved).
    assert m.counters["TLB shootdown"] > rounds_before
    assert not any(isinstance(e, PmapUpdate) for e in _since(m, n))
    check_invariants(m)
    # And every CPU's write now faults and breaks the loan.
    for cpu in range(4):
        p.write(buf + cpu, b"!", cpu=cpu)
    assert m.counters["loan.break"] == 1 and page_at(p, buf) is not pages[0]
    check_invariants(m)


def test_clean_cached_entry_needs_no_shootdown_but_faults(m4: Machine) -> None:
    """pmap_sync_pv: clearing W of a PTE with D clear needs no shootdown; a
    CPU caching the clean writable entry re-walks on write and faults."""
    m = m4
    vn = m.vnode(b"c" * PS)
    p = m.spawn("reader", cpu=1)
    fva = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    # A CLEAN page is entered read-only (uvm_fault.c 1.226
    # uvm_fault_lower_enter, uvm_pagereadonly_p in uvm_page.c 1.246), so
    # write(2) makes the page DIRTY first; then a read fault on the shared
    # writable mapping enters it with W set and D clear.
    vn.write(0, b"c")
    p.read(fva, 1)
    pg = vn.uvm_pagelookup(0)
    assert pg is not None
    pte = p.map.pmap.pte(fva)
    assert pte & PTE_W and not pte & PTE_D
    assert pg.frame in _tlb_frames(m, 1) and _tlb_frames(m, 1)[pg.frame] & PTE_W
    n = len(m.trace)
    uvm_loan(p.map, fva, PS, UVM_LOAN_TOPAGE)
    queued = [e for e in _since(m, n) if isinstance(e, ShootdownQueued)]
    assert queued == []
    # The stale W entry survives in CPU 1's TLB, but cannot write.
    assert _tlb_frames(m, 1)[pg.frame] & PTE_W
    assert write_paths(m, [pg.frame]) == []
    check_invariants(m)
    p.write(fva, b"X", cpu=1)
    assert m.counters["loan.break"] == 1 and vn.uvm_pagelookup(0) is not pg
    assert m.physmem.copyout([pg.frame], 0, 1) == b"c"
    check_invariants(m)


def test_page_protect_only_on_first_loan(m4: Machine) -> None:
    """I11: five loans of one page, one pmap_page_protect, one shootdown round."""
    m = m4
    p = m.spawn("p", cpu=0)
    buf = p.mmap(PS)
    p.write(buf, b"a", cpu=2)
    p.write(buf, b"b", cpu=0)
    pg = page_at(p, buf)
    assert pg is not None
    n = len(m.trace)
    loans = [m.kernel_loan(p, buf, PS) for _ in range(5)]
    evs = _since(m, n)
    prot = [e for e in evs if isinstance(e, PageProtect) and e.frame == pg.frame]
    assert len(prot) == 1
    rounds = [e for e in evs if isinstance(e, ShootdownRound) and e.targets != (0,)]
    assert len(rounds) == 1
    assert [e.protected for e in evs if isinstance(e, Loan)] == [True] + [False] * 4
    for kl in loans:
        kl.release()
    check_invariants(m)


def test_kernel_mapping_read_only_unmanaged_one_update(m4: Machine) -> None:
    """I4 / 4.3 rule 1: kenter_pa read-only per page, then exactly one
    pmap_update(pmap_kernel()), after uvm_loan; not on any pv list."""
    m = m4
    p = m.spawn("p", cpu=0)
    buf = p.mmap(3 * PS)
    p.write(buf, b"k" * (3 * PS))
    n = len(m.trace)
    kl = m.kernel_loan(p, buf + 10, 2 * PS)
    assert kl.npages == 3 and kl.data_va == kl.kva + 10
    evs = _since(m, n)
    kinds = [type(e).__name__ for e in evs if isinstance(e, Loan | KEnter | PmapUpdate)]
    assert kinds == ["Loan"] * 3 + ["KEnter"] * 3 + ["PmapUpdate"]
    upd = [e for e in evs if isinstance(e, PmapUpdate)]
    assert [e.space for e in upd] == ["kernel"]
    for i, pg in enumerate(kl.pages):
        pte = m.pmap.kernel.pte(kl.kva + i * PS)
        assert pte & PTE_P and not pte & PTE_W and not pte & PTE_PVLIST
        assert pte_frame(pte) == pg.frame
        assert all(not pm.is_kernel for pm, _va in pg.mdpage.pv)
    ke = [e for e in evs if isinstance(e, KEnter)]
    assert all(e.prot == 1 for e in ke)
    # Fresh KVA: kenter queues no shootdown.
    assert not any(isinstance(e, ShootdownQueued) and e.space == "kernel" for e in evs)
    check_invariants(m)
    kl.release()


def test_kernel_mapping_survives_page_protect_none(m4: Machine) -> None:
    """pmap(9): kenter mappings are unaffected by pmap_page_protect; a break
    (page_protect NONE) leaves the borrower's mapping and bytes."""
    m = m4
    p = m.spawn("p", cpu=0)
    buf = p.mmap(PS)
    p.write(buf, b"kept")
    kl = m.kernel_loan(p, buf, 4)
    assert kl.read(cpu=3) == b"kept"
    pg = kl.pages[0]
    n = len(m.trace)
    p.write(buf, b"gone", cpu=1)
    assert any(
        isinstance(e, PageProtect) and e.frame == pg.frame and e.prot == 0 for e in _since(m, n)
    )
    pte = m.pmap.kernel.pte(kl.kva)
    assert pte & PTE_P and pte_frame(pte) == pg.frame
    assert kl.read(cpu=2) == b"kept" and kl.read(cpu=3) == b"kept"
    m.reclaim()
    assert kl.read(cpu=1) == b"kept"
    check_invariants(m)
    kl.release()


def test_kernel_write_through_loan_is_fatal(m4: Machine) -> None:
    """uvm_loan.c header: a kernel write to a loaned page is an error."""
    m = m4
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"ro")
    kl = m.kernel_loan(p, buf, 2)
    for cpu in range(4):
        with pytest.raises(KernelAssertion):
            kl.write(0, b"X", cpu=cpu)
    assert kl.read() == b"ro" and p.read(buf, 2) == b"ro"
    check_invariants(m)
    kl.release()


def test_release_order(m4: Machine) -> None:
    """4.3 rule 2 (sodoloanfree): kremove -> pmap_update -> uvm_unloan ->
    free KVA; the kernel read on every CPU makes the kremove shoot down all."""
    m = m4
    p = m.spawn("p", cpu=0)
    buf = p.mmap(2 * PS)
    p.write(buf, b"r" * (2 * PS))
    kl = m.kernel_loan(p, buf, 2 * PS)
    for cpu in range(4):
        kl.read(0, 1, cpu=cpu)
        kl.read(PS, 1, cpu=cpu)
    p.exit()  # the pages are orphans: the unloan frees them
    frames = [pg.frame for pg in kl.pages]
    n = len(m.trace)
    kl.release()
    evs = _since(m, n)
    assert release_order_problems(evs, kl.kva, 2 * PS, frames) == []
    order = [
        type(e).__name__
        for e in evs
        if isinstance(e, KRemove | PmapUpdate | Unloan | ShootdownRound)
    ]
    assert order == ["KRemove", "KRemove", "PmapUpdate", "ShootdownRound", "Unloan", "Unloan"]
    (rnd,) = [e for e in evs if isinstance(e, ShootdownRound)]
    assert rnd.targets == (0, 1, 2, 3) and rnd.broadcast
    for cpu in range(4):
        assert not any(f in frames for f in _tlb_frames(m, cpu))
    assert m.kernel_map.uvm_map_lookup_entry(kl.kva) is None
    assert kl.released and kl not in m.kernel_loans
    assert m.uvm.allocated == 0
    check_invariants(m)


def test_release_without_kernel_access_needs_no_shootdown(m4: Machine) -> None:
    """pmap_kremove1: a PTE never accessed (data only DMA'd by physical
    address) needs no shootdown."""
    m = m4
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"dma")
    kl = m.kernel_loan(p, buf, 3)
    assert m.physmem.gather(kl.pieces()) == b"dma"
    n = len(m.trace)
    kl.release()
    assert not any(isinstance(e, ShootdownQueued) for e in _since(m, n))
    check_invariants(m)


def test_kernel_loan_file_maps_like_sosend(m4: Machine) -> None:
    """nfsrv_read: uvm_loanuobjpages then the same read-only kernel mapping."""
    m = m4
    vn = m.vnode(bytes(range(256)) * 40)
    kl = m.kernel_loan_file(vn, 300, 5000)
    assert kl.read() == (bytes(range(256)) * 40)[300:5300]
    assert m.physmem.gather(kl.pieces()) == kl.read()
    for i in range(kl.npages):
        pte = m.pmap.kernel.pte(kl.kva + i * PS)
        assert not pte & PTE_W and not pte & PTE_PVLIST
    check_invariants(m)
    kl.release()
    check_invariants(m)


def test_loans_of_two_senders_on_different_cpus(m4: Machine) -> None:
    """Shootdown targets follow the pmap's CPUs: the loan of a process that ran
    only on CPU 2, made on CPU 2, protects with a local-only round (no IPI,
    no ``TLB shootdown`` evcnt); released without a kernel access, no IPI
    either."""
    m = m4
    a = m.spawn("a", cpu=2)
    buf = a.mmap(PS)
    a.write(buf, b"a")
    n = len(m.trace)
    evcnt = m.counters["TLB shootdown"]
    m.kernel_loan(a, buf, 1, cpu=2).release()
    evs = _since(m, n)
    rounds = [e for e in evs if isinstance(e, ShootdownRound)]
    assert [(e.cpu, e.targets) for e in rounds] == [(2, (2,))]
    assert not any(isinstance(e, IPISent) for e in evs)
    assert m.counters["TLB shootdown"] == evcnt
    # The same loan made from another CPU must interrupt CPU 2.
    a.write(buf, b"b")
    n = len(m.trace)
    m.kernel_loan(a, buf, 1, cpu=0).release()
    ipis = [e for e in _since(m, n) if isinstance(e, IPISent)]
    assert [(e.cpu, e.target) for e in ipis] == [(0, 2)]
    check_invariants(m)
