"""vm_map, amaps, anons and objects (specs/map.md names the NetBSD source of each)."""

from __future__ import annotations

import pytest
from helpers import PS, machine_fixture

from uvmloan import (
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    VM_PROT_ALL,
    VM_PROT_READ,
    VM_PROT_WRITE,
    KernelAssertion,
    Machine,
    UVMError,
    check_invariants,
)
from uvmloan.anon import Anon, anon_unref, uvm_anfree
from uvmloan.errors import SegmentationFault
from uvmloan.map import MAP_INHERIT_NONE, MAP_INHERIT_SHARE, uvmspace_fork
from uvmloan.object import PGO_ALLPAGES, PGO_CLEANIT, PGO_FREE
from uvmloan.param import EACCES, EFAULT, EINVAL, ENOMEM, PG, VMProt
from uvmloan.pmap.pte import PTE_W, PTE_WIRED
from uvmloan.testing.loan_ops import machine_snapshot

m = machine_fixture(ncpus=2, memory="1M", check=True)


# --------------------------------------------------------------- uvm_map


def test_uvm_map_finds_holes_and_fixed_replaces(m: Machine) -> None:
    p = m.spawn("p")
    a = p.mmap(2 * PS)
    b = p.mmap(PS)
    assert b == a + 2 * PS
    p.munmap(a, PS)
    c = p.mmap(PS)
    assert c == a  # first fit from the base
    p.write(b, b"old")
    d = p.mmap(PS, flags=MAP_PRIVATE | MAP_FIXED, addr=b)
    assert d == b and p.read(b, 3) == bytes(3)
    assert m.uvm.allocated == 1  # the old page went with the old entry; a new zero page


def test_uvm_map_prot_beyond_maxprot_is_eacces(m: Machine) -> None:
    p = m.spawn("p")
    with pytest.raises(UVMError) as e:
        p.map.uvm_map(PS, None, 0, VM_PROT_READ | VM_PROT_WRITE, maxprot=VM_PROT_READ)
    assert e.value.errno == EACCES and not p.map.entries


def test_clip_shares_the_amap_and_references_the_object(m: Machine) -> None:
    """UVM_MAP_CLIP_START/END: amap_splitref and pgo_reference."""
    vn = m.vnode(b"z" * 4 * PS)
    p = m.spawn("p")
    va = p.mmap(4 * PS, flags=MAP_PRIVATE, obj=vn)
    p.write(va, b"w" * 4 * PS)
    refs = vn.uo_refs
    p.mprotect(va + PS, PS, VM_PROT_READ)
    ents = list(p.map.entries.values())
    assert len(ents) == 3
    amap = ents[0].amap
    assert amap is not None and all(e.amap is amap for e in ents)
    assert amap.am_ref == 3 and vn.uo_refs == refs + 2
    assert [e.slotoff for e in ents] == [0, 1, 2]
    p.munmap(va, 4 * PS)
    assert vn.uo_refs == refs - 1 and m.uvm.allocated == len(vn.uo_pages)


def test_unmap_removes_ptes_before_freeing(m: Machine) -> None:
    """uvm_unmap_remove (pmap_remove + pmap_update) then uvm_unmap_detach."""
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.write(va, b"x" * 2 * PS)
    p.write(va, b"y", cpu=1)  # both CPUs cache the mapping
    p.munmap(va, 2 * PS)
    assert not p.map.pmap.ptes and m.uvm.allocated == 0
    for cpu in m.cpus:
        assert all(pm is not p.map.pmap for _k, (pm, _pte) in cpu.tlb)
    with pytest.raises(SegmentationFault):
        p.read(va, 1, cpu=1)


# ---------------------------------------------------------- protection


def test_mprotect_lowers_with_pmap_protect_and_checks_max(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.write(va, b"x" * 2 * PS)
    p.mprotect(va, 2 * PS, VM_PROT_READ)
    assert not any(pte & PTE_W for pte in p.map.pmap.ptes.values())
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None
    e.max_protection = VMProt.READ
    with pytest.raises(UVMError) as err:
        p.mprotect(va, PS, VM_PROT_READ | VM_PROT_WRITE)
    assert err.value.errno == EACCES and e.protection == VMProt.READ


def test_mprotect_over_a_hole_is_enomem_and_changes_nothing(m: Machine) -> None:
    """The model is all-or-nothing (POSIX ENOMEM); NetBSD's uvm_map_protect skips holes."""
    p = m.spawn("p")
    va = p.mmap(3 * PS)
    p.munmap(va + PS, PS)
    # resident, written pages on both sides: a partial downgrade would show
    # in their PTEs, pv lists, TLB entries and shootdown packets
    p.write(va, b"a")
    p.write(va + 2 * PS, b"c")
    before = machine_snapshot(m)
    with pytest.raises(UVMError) as e:
        p.mprotect(va, 3 * PS, VM_PROT_READ)
    assert e.value.errno == ENOMEM
    assert all(x.protection == VMProt.READ | VMProt.WRITE for x in p.map.entries.values())
    assert machine_snapshot(m) == before


# -------------------------------------------------------------- amap_copy


def test_amap_copy_takes_over_a_sole_reference(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    c = p.fork("c", cpu=1)
    c.exit()  # the parent's amap is referenced by the parent alone again
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.needs_copy and e.amap is not None
    amap = e.amap
    n = m.uvm.allocated
    p.write(va, b"y")
    assert e.amap is amap and not e.needs_copy and m.uvm.allocated == n


def test_amap_copy_shares_the_anons(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.write(va, b"x" * 2 * PS)
    c = p.fork("c", cpu=1)
    e = c.map.uvm_map_lookup_entry(va)
    assert e is not None
    old = e.amap
    c.map.amap_copy(e)
    assert e.amap is not old and e.amap is not None and e.slotoff == 0
    for slot in (0, 1):
        a = e.amap.lookup(slot)
        assert a is not None and a.an_ref == 2


# ---------------------------------------------------------------- fork


def test_fork_inheritance_share_copy_none(m: Machine) -> None:
    p = m.spawn("p")
    priv = p.mmap(PS)
    shared = p.mmap(PS, flags=MAP_SHARED)
    gone = p.mmap(PS)
    ge = p.map.uvm_map_lookup_entry(gone)
    assert ge is not None
    ge.inheritance = MAP_INHERIT_NONE
    for va in (priv, shared, gone):
        p.write(va, b"p")
    c = p.fork("c", cpu=1)
    assert c.map.uvm_map_lookup_entry(gone) is None
    se = c.map.uvm_map_lookup_entry(shared)
    assert se is not None and se.inheritance == MAP_INHERIT_SHARE and not se.needs_copy
    pe = c.map.uvm_map_lookup_entry(priv)
    assert pe is not None and pe.needs_copy and pe.copy_on_write
    c.write(shared, b"c")
    c.write(priv, b"c")
    assert p.read(shared, 1) == b"c" and p.read(priv, 1) == b"p"
    with pytest.raises(SegmentationFault):
        c.read(gone, 1)


def test_fork_write_protects_the_parent_once(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    assert p.map.pmap.ptes[va] & PTE_W
    before = m.counters["pmap protect"]
    p.fork("c1", cpu=1)
    assert not p.map.pmap.ptes[va] & PTE_W
    assert m.counters["pmap protect"] == before + 1
    p.fork("c2", cpu=1)  # already needs-copy: not protected again
    assert m.counters["pmap protect"] == before + 1


def test_fork_of_a_wired_entry_copies_now(m: Machine) -> None:
    """uvmspace_fork + amap_cow_now: the wired parent is not write-protected."""
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.write(va, b"w" * 2 * PS)
    p.mlock(va, 2 * PS)
    c = p.fork("c", cpu=1)
    assert p.map.pmap.ptes[va] & PTE_W and p.map.pmap.ptes[va] & PTE_WIRED
    ce = c.map.uvm_map_lookup_entry(va)
    pe = p.map.uvm_map_lookup_entry(va)
    assert ce is not None and pe is not None and not ce.needs_copy and not pe.needs_copy
    assert ce.amap is not pe.amap and ce.wired_count == 0
    faults = m.counters["fault"]
    p.write(va, b"P")
    assert m.counters["fault"] == faults
    assert c.read(va, 1) == b"w"
    c.exit()
    p.exit()
    assert m.uvm.allocated == 0


# what building and tearing down the child may count
FORK_TEARDOWN = (
    "page alloc",
    "page free",
    "pmap page_protect",
    "pmap update",
    "context switch",
    "tlb flush",
    "tlb flush nonglobal",
)


def test_fork_enomem_refuses_before_the_child_exists(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.write(va, b"w" * 2 * PS)
    p.mlock(va, 2 * PS)
    m.uvm.limit = m.uvm.allocated + 1
    pmaps, procs, pages = len(m.pmap.pmaps), list(m.processes), dict(m.uvm.pages)
    before = machine_snapshot(m, allow=FORK_TEARDOWN)
    counters = m.counters.copy()
    with pytest.raises(UVMError) as e:
        p.fork("c", cpu=1)
    assert e.value.errno == ENOMEM
    assert len(m.pmap.pmaps) == pmaps and m.processes == procs and m.uvm.pages == pages
    assert machine_snapshot(m, allow=FORK_TEARDOWN) == before
    # fork counts the pages amap_cow_now will copy (two wired pages, one
    # free) before it makes the child (pdaemon.uvm_wait; specs/loan.md 5a):
    # no page is allocated and no child runs, so nothing needs tearing down
    d = m.counters - counters
    assert (d["page alloc"], d["page free"], d["context switch"]) == (0, 0, 0)
    m.uvm.limit = None


def test_uvmspace_fork_direct(m: Machine) -> None:
    from uvmloan.map import VMMap

    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"q")
    child = VMMap("raw", m.pmap.pmap_create("raw"), m.uvm, p.map.minva, p.map.maxva)
    uvmspace_fork(p.map, child)
    ce = child.uvm_map_lookup_entry(va)
    assert ce is not None and ce.amap is p.map.uvm_map_lookup_entry(va).amap  # type: ignore[union-attr]
    child.uvm_unmap(va, va + PS)
    m.pmap.pmap_destroy(child.pmap)


# ---------------------------------------------------------------- wiring


def test_mlock_twice_then_one_munlock_unwires(m: Machine) -> None:
    """uvm_map_pageable: only newly wired entries fault; munlock unwires all."""
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.write(va, b"x")
    p.mlock(va, 2 * PS)
    p.mlock(va, PS)
    pages = [pg for pg in m.uvm.pages.values()]
    assert [pg.wire_count for pg in pages] == [1, 1]
    p.munlock(va, 2 * PS)
    assert all(pg.wire_count == 0 for pg in pages)
    assert p.map.pmap.wired_count == 0
    p.exit()
    assert m.uvm.allocated == 0


def test_mlock_of_prot_none_is_einval(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS, prot=0)
    p.run_on(0)  # scheduled first: that context switch is not mlock's
    before = machine_snapshot(m)
    with pytest.raises(UVMError) as e:
        p.mlock(va, PS)
    assert e.value.errno == EINVAL and m.uvm.allocated == 0 and not p.map.pmap.ptes
    assert machine_snapshot(m) == before


def test_mlock_enomem_undoes_the_wiring(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(3 * PS)
    m.uvm.limit = m.uvm.allocated + 2
    with pytest.raises(UVMError):
        p.mlock(va, 3 * PS)
    assert all(pg.wire_count == 0 for pg in m.uvm.pages.values())
    assert all(e.wired_count == 0 for e in p.map.entries.values())
    assert p.map.pmap.wired_count == 0
    m.uvm.limit = None


def test_exit_with_wired_memory(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.mlock(va, 2 * PS)
    p.exit()
    assert m.uvm.allocated == 0


# --------------------------------------------------------------- anons


def test_anon_reference_rules(m: Machine) -> None:
    a = Anon()
    with pytest.raises(KernelAssertion):
        uvm_anfree(m.uvm, a)  # still referenced
    anon_unref(m.uvm, a)
    assert a.an_ref == 0
    with pytest.raises(KernelAssertion):
        anon_unref(m.uvm, a)


def test_anfree_frees_the_page_and_unmaps_it(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    anon = e.amap.slots.pop(0)
    anon_unref(m.uvm, anon)  # uvm_anfree: pmap_page_protect(NONE), uvm_pagefree
    assert anon.an_page is None and m.uvm.allocated == 0 and va not in p.map.pmap.ptes


# ------------------------------------------------------------- objects


def test_pgo_put_clean_and_free(m: Machine) -> None:
    vn = m.vnode(b"." * 2 * PS)
    p = m.spawn("p")
    va = p.mmap(2 * PS, flags=MAP_SHARED, obj=vn)
    p.write(va, b"AB")
    p.write(va + PS, b"CD")
    p.mlock(va + PS, PS)
    freed = vn.pgo_put(0, 0, PGO_ALLPAGES | PGO_CLEANIT | PGO_FREE)
    # genfs_do_putpages frees the wired page too; uvm_pagefree unwires it.
    assert freed == 2
    assert bytes(vn.backing[:2]) == b"AB" and bytes(vn.backing[PS : PS + 2]) == b"CD"
    assert vn.uvm_pagelookup(0) is None and va not in p.map.pmap.ptes
    assert p.read(va, 2) == b"AB"  # faulted in again from the backing store
    p.munlock(va + PS, PS)


def test_aobj_pages_go_with_the_last_reference(m: Machine) -> None:
    ao = m.aobj()
    pg = ao.pgo_get(0)
    assert pg.flags & PG.AOBJ and m.uvm.allocated == 1
    ao.detach()
    assert m.uvm.allocated == 0
    with pytest.raises(KernelAssertion):
        ao.detach()


def test_vnode_pages_stay_cached_after_the_last_mapping(m: Machine) -> None:
    vn = m.vnode(b"c" * PS)
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn, prot=VM_PROT_ALL)
    p.read(va, 1)
    p.exit()
    assert len(vn.uo_pages) == 1 and m.uvm.allocated == 1 and vn.uo_refs == 1


def test_vnode_write_grows_the_file(m: Machine) -> None:
    vn = m.vnode(b"ab")
    vn.write(PS + 3, b"z")
    assert vn.size == PS + 4
    assert vn.read(0, vn.size) == b"ab" + bytes(PS + 1) + b"z"
    vn.fsync()
    assert bytes(vn.backing) == b"ab" + bytes(PS + 1) + b"z"


def test_mlock_past_eof_keeps_what_earlier_faults_did(m: Machine) -> None:
    """uvm_map_pageable (uvm_map.c) wires page by page; the wiring fault on
    a page past EOF fails (EFAULT) and only the wiring is undone: page 0's
    promoted private copy (pass 2's first fault, maximum protection has
    write) stays, as the VM state machine's reference expects."""
    vn = m.vnode(b"f")  # one byte: page 1 of the mapping is past EOF
    p = m.spawn("p")
    va = p.mmap(2 * PS, flags=MAP_PRIVATE, obj=vn)
    with pytest.raises(UVMError) as e:
        p.mlock(va, 2 * PS)
    assert e.value.errno == EFAULT
    ent = p.map.uvm_map_lookup_entry(va)
    assert ent is not None and ent.wired_count == 0 and ent.amap is not None
    anon = ent.amap.lookup(ent.slot(va))
    assert anon is not None and anon.an_page is not None and anon.an_page.wire_count == 0
    assert p.read(va, 1) == b"f"
    check_invariants(m)
