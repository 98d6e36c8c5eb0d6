"""Fault-path rules checked against NetBSD 10's sources (specs/fault.md 7).

``uvm_fault.c`` 1.224/1.226 (``uvm_fault_check``, ``uvm_fault_upper_enter``,
``uvm_fault_upper_done``, ``uvm_fault_lower_enter``, ``uvm_fault_lower_done``,
``uvmfault_anonget``), ``uvm_page.c`` 1.246 (``uvm_pagereadonly_p``,
``uvm_pagealloc_strat``), ``uvm_page_status.c`` 1.6 (``uvm_pagegetdirty``,
``uvm_pagemarkdirty``, ``uvm_pagecheckdirty``) and ``genfs_io.c`` 1.100
(``genfs_getpages``, ``genfs_do_putpages``).  Every test of a fix here
failed on the model before the fix; the write(2) and status-function tests
check rules the model already followed or that came with the status code.
"""

from __future__ import annotations

import pytest
from helpers import PS, machine_fixture
from hypothesis import Phase

import uvmloan.fault as fault_mod
from uvmloan import MAP_SHARED, VM_PROT_READ, VM_PROT_WRITE, Machine, UVMError
from uvmloan.errors import KernelAssertion, SegmentationFault
from uvmloan.fault import uvm_fault
from uvmloan.invariants import check_invariants
from uvmloan.object import VnodeObject
from uvmloan.page import (
    UVM_PAGE_STATUS_CLEAN,
    UVM_PAGE_STATUS_DIRTY,
    UVM_PAGE_STATUS_UNKNOWN,
    Page,
)
from uvmloan.param import EFAULT, EINVAL, PG
from uvmloan.pdaemon import uvmpd_reclaim_page
from uvmloan.pmap.pte import PTE_P, PTE_W, PTE_WIRED
from uvmloan.process import Process
from uvmloan.testing import run_machine
from uvmloan.testing.vm_machine import VMStateMachine, vm_settings

m = machine_fixture(ncpus=2, memory="1M", check=True)
RW = VM_PROT_READ | VM_PROT_WRITE


def pte(p: Process, va: int) -> int:
    v: int = p.map.pmap.ptes.get(va, 0)
    return v


def anon_page(p: Process, va: int) -> Page:
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    anon = e.amap.lookup(e.slot(va))
    assert anon is not None and anon.an_page is not None
    pg: Page = anon.an_page
    return pg


def status(m: Machine, pg: Page) -> int:
    return m.uvm.uvm_pagegetdirty(pg)


# ------------------------------------------------------------ item 1: wiring


def test_fault_on_wired_entry_wires_the_page_again(m: Machine) -> None:
    """VM_MAPENT_ISWIRED sets wire_paging: the refault after mprotect wires the
    page a second time; munlock unwires once, so the page stays wired and
    uvm_loan refuses it (the model used to end with wire_count 0 and lend)."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    p.mlock(va, PS)
    p.mprotect(va, PS, VM_PROT_READ)
    p.mprotect(va, PS, RW)
    p.write(va, b"y")
    pg = anon_page(p, va)
    assert pg.wire_count == 2 and pte(p, va) & PTE_WIRED and pte(p, va) & PTE_W
    p.munlock(va, PS)
    assert pg.wire_count == 1 and not pte(p, va) & PTE_WIRED
    with pytest.raises(UVMError) as ei:
        m.kernel_loan(p, va, PS)
    assert ei.value.errno == EINVAL and "wired" in str(ei.value)
    check_invariants(m)
    p.exit()
    assert m.uvm.allocated == 0  # uvm_pagefree unwires


def test_fault_on_wired_entry_wires_a_file_page_again(m: Machine) -> None:
    """The lower layer's done step does the same for an object page."""
    vn = m.vnode(b"f" * PS)
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    p.mlock(va, PS)
    pg = vn.uvm_pagelookup(0)
    assert pg is not None and pg.wire_count == 1
    p.mprotect(va, PS, 0)  # PROT_NONE removes the PTE
    p.mprotect(va, PS, RW)
    assert p.read(va, 1) == b"f"
    assert pg.wire_count == 2 and pte(p, va) & PTE_WIRED
    p.munmap(va, PS)
    assert pg.wire_count == 1  # the vnode's cached page stays wired
    check_invariants(m)


def test_wiring_a_swapped_anon_marks_it_dirty_and_drops_its_slot(m: Machine) -> None:
    """uvm_fault_upper_done: "since the now-wired page cannot be paged out,
    release its swap resources ... and since an anon with no swap cannot be
    clean, mark it dirty now"."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"s" * 8)
    pg = anon_page(p, va)
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    anon = e.amap.lookup(e.slot(va))
    assert anon is not None
    assert uvmpd_reclaim_page(m.uvm, pg) == "paged out"
    slot = anon.an_swslot
    assert slot and anon.an_page is None and slot in m.uvm.swap
    p.mlock(va, PS)
    npg = anon_page(p, va)
    assert npg.wire_count == 1 and status(m, npg) == UVM_PAGE_STATUS_DIRTY
    assert anon.an_swslot == 0 and slot not in m.uvm.swap
    assert p.read(va, 8) == b"s" * 8
    check_invariants(m)


# --------------------------------------------------- item 2: dirtiness status


def test_page_swapped_back_in_is_unknown(m: Machine) -> None:
    """uvmfault_anonget: uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_UNKNOWN) after
    the swap read (the model said CLEAN, which the upper layer forbids)."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"q")
    assert uvmpd_reclaim_page(m.uvm, anon_page(p, va)) == "paged out"
    assert p.read(va, 1) == b"q"
    pg = anon_page(p, va)
    assert status(m, pg) == UVM_PAGE_STATUS_UNKNOWN
    assert pte(p, va) & PTE_W  # the upper layer maps it as it is
    check_invariants(m)


def test_upper_layer_asserts_its_page_is_not_clean(m: Machine) -> None:
    """uvm_fault_upper_enter: KASSERT(uvm_pagegetdirty(pg) != CLEAN)."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"a")
    p.mprotect(va, PS, 0)
    p.mprotect(va, PS, RW)
    pg = anon_page(p, va)
    pg.flags = (pg.flags & ~PG.DIRTY) | PG.CLEAN  # a state the kernel never makes
    with pytest.raises(KernelAssertion, match=r"uvm_fault_upper_enter: .* is CLEAN"):
        uvm_fault(p.map, va, VM_PROT_READ)


def test_clean_shared_file_page_is_read_only_until_a_write_fault(m: Machine) -> None:
    """uvm_fault_lower_enter maps with uvm_pagereadonly_p (true for CLEAN): a
    read maps the page read-only although the entry allows writing, and the
    first store faults again, has the pager mark it UNKNOWN and re-enters
    it writable, with the ENTER shootdown of a changed W bit."""
    vn = m.vnode(b"." * PS)
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    p.read(va, 1)
    pg = vn.uvm_pagelookup(0)
    assert pg is not None and status(m, pg) == UVM_PAGE_STATUS_CLEAN
    assert pte(p, va) & PTE_P and not pte(p, va) & PTE_W
    faults, enters = m.counters["fault"], m.counters["tlbshoot local ENTER"]
    p.write(va, b"!")
    assert m.counters["fault"] == faults + 1
    assert m.counters["tlbshoot local ENTER"] == enters + 1
    assert pte(p, va) & PTE_W and status(m, pg) == UVM_PAGE_STATUS_UNKNOWN
    assert m.pmap.pmap_is_modified(pg)
    p.write(va + 1, b"!")
    assert m.counters["fault"] == faults + 1
    vn.fsync()
    assert vn.backing[:3] == b"!!."
    check_invariants(m)


def test_lower_enter_asserts_a_write_never_meets_a_read_only_page(
    m: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KASSERT((access_type & VM_PROT_WRITE) == 0 || !readonly): with a pager
    that forgets to start dirtiness tracking for a write, the CLEAN page
    reaches uvm_fault_lower_enter with a write access, and that check (not
    a later one) stops it."""
    vn = m.vnode(b"." * PS)
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    real = VnodeObject.pgo_get

    def forgetful(self: VnodeObject, off: int, flags: int = 0, access_type: int = 1) -> Page:
        return real(self, off, flags, VM_PROT_READ)

    monkeypatch.setattr(VnodeObject, "pgo_get", forgetful)
    with pytest.raises(KernelAssertion, match="uvm_fault_lower_enter: write access"):
        uvm_fault(p.map, va, VM_PROT_WRITE)


def test_write2_makes_a_page_dirty_so_a_read_maps_it_writable(m: Machine) -> None:
    """write(2) through UBC leaves the page DIRTY, so uvm_pagereadonly_p is
    false and a read fault on a shared writable mapping enters it writable."""
    vn = m.vnode(b"." * PS)
    vn.write(0, b"w")
    pg = vn.uvm_pagelookup(0)
    assert pg is not None and status(m, pg) == UVM_PAGE_STATUS_DIRTY
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    assert p.read(va, 1) == b"w"
    assert pte(p, va) & PTE_W


def test_fsync_write_protects_and_cleans_so_the_next_store_faults(m: Machine) -> None:
    """genfs_do_putpages: cleaning write-protects the page (pgprotected) and
    uvm_pagecheckdirty marks it CLEAN; the model left it writable."""
    vn = m.vnode(b"." * PS)
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    p.write(va, b"1")
    pg = vn.uvm_pagelookup(0)
    assert pg is not None
    vn.fsync()
    assert vn.backing[:1] == b"1" and status(m, pg) == UVM_PAGE_STATUS_CLEAN
    assert pte(p, va) & PTE_P and not pte(p, va) & PTE_W
    faults = m.counters["fault"]
    p.write(va, b"2")
    assert m.counters["fault"] == faults + 1 and status(m, pg) == UVM_PAGE_STATUS_UNKNOWN
    vn.fsync()
    assert vn.backing[:1] == b"2"
    check_invariants(m)


def test_fsync_of_a_wired_page_leaves_it_unknown_and_writable(m: Machine) -> None:
    """A wired page is not write-protected (cleanall goes false), so
    uvm_pagecheckdirty(pg, false) leaves it UNKNOWN: later stores through the
    wired writable PTE are still caught by the pmap's modified bit."""
    vn = m.vnode(b"." * PS)
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    p.mlock(va, PS)
    p.write(va, b"1")
    pg = vn.uvm_pagelookup(0)
    assert pg is not None
    vn.fsync()
    assert vn.backing[:1] == b"1" and status(m, pg) == UVM_PAGE_STATUS_UNKNOWN
    assert pte(p, va) & PTE_W
    faults = m.counters["fault"]
    p.write(va, b"2")
    assert m.counters["fault"] == faults
    vn.fsync()
    assert vn.backing[:1] == b"2"
    check_invariants(m)


def test_markdirty_unknown_clears_the_modified_bit(m: Machine) -> None:
    """uvm_pagemarkdirty(UNKNOWN): "start relying on pmap-level dirtiness
    tracking" -- pmap_clear_modify, so only later stores count."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    pg = anon_page(p, va)
    assert m.pmap.pmap_is_modified(pg)
    m.uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_UNKNOWN)
    assert not m.pmap.pmap_is_modified(pg)
    assert not m.uvm.uvm_pagecheckdirty(pg, False)
    p.write(va, b"y")
    assert m.uvm.uvm_pagecheckdirty(pg, False)
    m.uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_DIRTY)
    pg.flags |= PG.CLEAN
    with pytest.raises(KernelAssertion, match="both CLEAN and DIRTY"):
        m.uvm.uvm_pagegetdirty(pg)
    pg.flags &= ~PG.CLEAN


# ------------------------------------------------------ item 6: fault parts


def test_protection_failure_is_efault_and_sigsegv(m: Machine) -> None:
    """uvm_fault_check returns EFAULT for a protection failure (not EACCES);
    the user process gets SIGSEGV either way."""
    p = m.spawn("p")
    va = p.mmap(PS, prot=VM_PROT_READ)
    with pytest.raises(UVMError) as ei:
        uvm_fault(p.map, va, VM_PROT_WRITE)
    assert ei.value.errno == EFAULT and "protection" in str(ei.value)
    with pytest.raises(SegmentationFault):
        p.write(va, b"x")


def test_state_machine_finds_a_wired_entry_fault_that_does_not_wire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Put the old bug back (a fault on a wired entry sets wire_mapping only,
    not wire_paging): the VM state machine's prediction of wired-entry
    refaults, not another check, must catch it."""
    real_check = fault_mod.uvm_fault_check

    def check(flt: fault_mod.FaultCtx) -> int:
        err = real_check(flt)
        flt.wire_paging = flt.fault_wire
        return err

    monkeypatch.setattr(fault_mod, "uvm_fault_check", check)
    hunt = vm_settings(
        "default",
        max_examples=300,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        print_blob=False,
    )
    with pytest.raises(AssertionError, match=r"fault\(s\) on a wired entry"):
        run_machine(VMStateMachine, settings=hunt)
