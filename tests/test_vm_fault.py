"""uvm_fault, case by case (specs/fault.md names the NetBSD source of each)."""

from __future__ import annotations

import pytest
from helpers import PS, machine_fixture

from uvmloan import (
    MAP_PRIVATE,
    MAP_SHARED,
    VM_PROT_READ,
    VM_PROT_WRITE,
    Machine,
    UVMError,
)
from uvmloan.errors import SegmentationFault
from uvmloan.fault import uvm_fault
from uvmloan.param import EACCES, EFAULT, ENOMEM, PG
from uvmloan.pmap.pte import PTE_W, PTE_WIRED, pte_frame
from uvmloan.process import Process
from uvmloan.testing.loan_ops import machine_snapshot

m = machine_fixture(ncpus=2, memory="1M", check=True)


def pte(p: Process, va: int) -> int:
    v: int = p.map.pmap.ptes.get(va, 0)
    return v


# ------------------------------------------------------------ uvm_fault_check


def test_fault_without_entry_is_efault(m: Machine) -> None:
    p = m.spawn("p")
    with pytest.raises(UVMError) as e:
        uvm_fault(p.map, 0x30000000, VM_PROT_READ)
    assert e.value.errno == EFAULT


def test_fault_beyond_protection_is_efault(m: Machine) -> None:
    # uvm_fault.c 1.224/1.226 uvm_fault_check: a protection failure returns
    # EFAULT (the model said EACCES before; NetBSD never does here).
    p = m.spawn("p")
    va = p.mmap(PS, prot=VM_PROT_READ)
    with pytest.raises(UVMError) as e:
        uvm_fault(p.map, va, VM_PROT_WRITE)
    assert e.value.errno == EFAULT and e.value.errno != EACCES
    assert p.map.uvm_map_lookup_entry(va).amap is None  # type: ignore[union-attr]


def test_layerless_vaonly_entry_is_efault(m: Machine) -> None:
    kva = m.kernel_map.uvm_map(PS, None, 0, VM_PROT_READ, copy_on_write=False, vaonly=True)
    with pytest.raises(UVMError) as e:
        uvm_fault(m.kernel_map, kva, VM_PROT_READ)
    assert e.value.errno == EFAULT


def test_read_of_needs_copy_file_entry_maps_read_only_without_copy(m: Machine) -> None:
    """uvm_fault_check: needs-copy, a read, and an object: no amap_copy, enter R/O."""
    vn = m.vnode(b"v" * PS)
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_PRIVATE, obj=vn)
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.needs_copy
    assert p.read(va, 1) == b"v"
    assert e.needs_copy and e.amap is None
    assert not pte(p, va) & PTE_W


def test_first_touch_of_anon_resolves_needs_copy(m: Machine) -> None:
    """uvm_fault_check: needs-copy and no object: amap_copy even for a read."""
    p = m.spawn("p")
    va = p.mmap(PS)
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.needs_copy and e.amap is None
    p.read(va, 1)
    assert not e.needs_copy and e.amap is not None


# ------------------------------------------------------------------- upper


def test_shared_anon_read_maps_read_only(m: Machine) -> None:
    """uvm_fault_upper_direct: an_ref > 1 -> enter without VM_PROT_WRITE.

    The child's read of anonymous memory resolves needs-copy (no object), so
    its new amap shares the anon with the parent's (an_ref 2)."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    c = p.fork("c", cpu=1)
    assert c.read(va, 1) == b"x"
    e = c.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None and not e.needs_copy
    anon = e.amap.lookup(e.slot(va))
    assert anon is not None and anon.an_ref == 2
    assert pte(c, va) and not pte(c, va) & PTE_W


def test_promote_drops_one_reference(m: Machine) -> None:
    """uvm_fault_upper_promote: oanon->an_ref-- (never to zero here)."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    c = p.fork("c", cpu=1)
    c.write(va, b"c")
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    old = e.amap.lookup(e.slot(va))
    assert old is not None and old.an_ref == 1
    assert p.read(va, 1) == b"x"


def test_upper_promote_enomem_changes_no_page(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    c = p.fork("c", cpu=1)
    pe0 = p.map.uvm_map_lookup_entry(va)
    assert pe0 is not None and pe0.amap is not None
    old_anon = pe0.amap.lookup(0)
    assert old_anon is not None and old_anon.an_ref == 1
    m.uvm.limit = m.uvm.allocated
    c.run_on(1)  # scheduled first: that context switch is not the fault's
    before = machine_snapshot(m)
    with pytest.raises(UVMError) as e:
        c.write(va, b"c")
    assert e.value.errno == ENOMEM
    # uvm_fault_check (uvm_fault.c 1.226) resolves needs-copy with amap_copy
    # before the promotion fails, and that stays: c has its own amap holding
    # the same anon (an_ref 2).  Nothing else changes, counters included.
    after = machine_snapshot(m)
    assert {k for k in before if after[k] != before[k]} == {"anons", "maps", "amaps"}
    ce, pe = c.map.uvm_map_lookup_entry(va), p.map.uvm_map_lookup_entry(va)
    assert ce is not None and pe is not None and ce.amap is not None and pe.amap is not None
    assert not ce.needs_copy and ce.amap is not pe.amap
    assert ce.amap.lookup(0) is pe.amap.lookup(0) is old_anon and old_anon.an_ref == 2
    m.uvm.limit = None
    c.write(va, b"c")
    assert p.read(va, 1) == b"x" and c.read(va, 1) == b"c"


# ------------------------------------------------------------------- lower


def test_zero_fill_page_is_anon_dirty_zeroed(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    assert p.read(va + 100, 8) == bytes(8)
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    anon = e.amap.lookup(0)
    assert anon is not None and anon.an_page is not None
    assert anon.an_page.flags & PG.ANON and anon.an_page.flags & PG.DIRTY


def test_shared_file_write_maps_the_object_page(m: Machine) -> None:
    """uvm_fault_lower_direct: no promote on a shared entry; the page is the vnode's."""
    vn = m.vnode(b"." * PS)
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    p.write(va, b"!")
    pg = vn.uvm_pagelookup(0)
    # The write fault's pgo_get started dirtiness tracking: status UNKNOWN
    # (genfs_io.c 1.100 genfs_getpages), and the pmap's D bit has the write.
    assert pg is not None and not pg.flags & (PG.DIRTY | PG.CLEAN)
    assert m.pmap.pmap_is_modified(pg)
    assert pte(p, va) & PTE_W and pte_frame(pte(p, va)) == pg.frame
    assert vn.read(0, 1) == b"!" and vn.backing[:1] == b"."


def test_private_file_write_promotes(m: Machine) -> None:
    """uvm_fault_lower_promote: cow_now on a copy-on-write entry copies the page."""
    vn = m.vnode(b"." * PS)
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_PRIVATE, obj=vn)
    p.write(va, b"!")
    assert vn.read(0, 1) == b"."
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None and e.amap.lookup(0) is not None


def test_fault_past_end_of_file_is_efault(m: Machine) -> None:
    vn = m.vnode(b"x" * 10)
    p = m.spawn("p")
    va = p.mmap(2 * PS, flags=MAP_SHARED, obj=vn)
    assert p.read(va + 9, 2) == b"x\x00"  # the rest of the last page reads 0
    with pytest.raises(SegmentationFault):
        p.read(va + PS, 1)
    with pytest.raises(UVMError) as e:
        uvm_fault(p.map, va + PS, VM_PROT_READ)
    assert e.value.errno == EFAULT


def test_file_page_shortage_is_enomem(m: Machine) -> None:
    vn = m.vnode(b"x" * PS)
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    m.uvm.limit = m.uvm.allocated
    p.run_on(0)  # scheduled first: that context switch is not the fault's
    before = machine_snapshot(m)
    with pytest.raises(UVMError) as e:
        p.read(va, 1)
    assert e.value.errno == ENOMEM
    assert not vn.uo_pages and machine_snapshot(m) == before
    m.uvm.limit = None
    assert p.read(va, 1) == b"x"


# ------------------------------------------------------------------ wiring


def test_wiring_fault_is_a_write_fault_on_a_writable_entry(m: Machine) -> None:
    """uvm_fault_check: a wiring fault asks for the entry's protection (cow_now)."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    c = p.fork("c", cpu=1)
    p.mlock(va, PS)
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    anon = e.amap.lookup(e.slot(va))
    assert anon is not None and anon.an_ref == 1 and anon.an_page is not None
    assert anon.an_page.wire_count == 1
    assert pte(p, va) & PTE_WIRED and pte(p, va) & PTE_W
    assert c.read(va, 1) == b"x"
    c.exit()
    p.exit()


def test_refault_on_wired_entry_keeps_the_wired_pte(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    p.mlock(va, PS)
    p.mprotect(va, PS, VM_PROT_READ)
    p.mprotect(va, PS, VM_PROT_READ | VM_PROT_WRITE)
    p.write(va, b"y")
    assert pte(p, va) & PTE_WIRED
    assert p.map.pmap.wired_count == 1


def test_mlock_of_read_only_private_entry_copies_first(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    c = p.fork("c", cpu=1)
    p.mprotect(va, PS, VM_PROT_READ)
    p.mlock(va, PS)
    pe = p.map.uvm_map_lookup_entry(va)
    assert pe is not None and pe.amap is not None
    anon = pe.amap.lookup(pe.slot(va))
    assert anon is not None and anon.an_ref == 1, "the wired page is still shared"
    p.mprotect(va, PS, VM_PROT_READ | VM_PROT_WRITE)
    p.write(va, b"y")
    c.exit()  # frees the child's page: must not be the wired one
    p.exit()
