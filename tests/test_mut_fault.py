"""The fault handler (``uvmloan/fault.py``): the rules the mutation run of
the module found unchecked (TESTING.md, "Python: the kernel modules").

Rules and NetBSD sources: specs/fault.md (uvm_fault.c 1.224/1.226,
uvm_page.c 1.246), specs/loan.md section 3 (the loan branches), specs/eras.md
(O->A anons of the netbsd-1.6 profile); the x86 pmap_enter rule for the
referenced and modified bits is specs/pmap.md's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import PS, RW, R, events

from uvmloan import KernelAssertion, Machine, check_invariants, uvm_loan, uvm_loanuobjpages
from uvmloan.anon import Anon, anon_unref
from uvmloan.errors import UVMError
from uvmloan.fault import uvm_fault
from uvmloan.page import UVM_PAGE_STATUS_DIRTY, UVM_PAGE_STATUS_UNKNOWN, Page
from uvmloan.param import (
    EFAULT,
    ENOMEM,
    MAP_PRIVATE,
    MAP_SHARED,
    UVM_LOAN_TOANON,
    UVM_LOAN_TOPAGE,
)
from uvmloan.pdaemon import uvmpd_reclaim_page
from uvmloan.pmap.pte import PTE_A, PTE_D, PTE_W
from uvmloan.process import Process
from uvmloan.testing.loan_ops import page_role
from uvmloan.trace import LoanBreak, PmapUpdate

OLD, NEW = "netbsd-1.6", "netbsd-10"


@pytest.fixture
def m() -> Iterator[Machine]:
    mach = Machine(ncpus=2, memory="1M", trace="record")
    yield mach
    mach.close()


def _anon(p: Process, va: int) -> Anon:
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    a = e.amap.lookup(e.slot(va))
    assert a is not None
    return a


def _page(p: Process, va: int) -> Page:
    pg = _anon(p, va).an_page
    assert pg is not None
    return pg


def _squeeze_to_reserve(m: Machine, reserve: int = 4) -> None:
    """Leave only the reserve (``UVM_PGA_USERESERVE`` allocations) free."""
    m.uvm.reserve = reserve
    m.uvm.limit = m.uvm.allocated + reserve


# ------------------------------------------------------------------ messages


def test_fault_messages(m: Machine) -> None:
    """What uvm_fault's errors say: the access, the address, and why (no
    entry; a protection failure, naming the entry; no memory)."""
    p = m.spawn("p")
    with pytest.raises(UVMError) as ei:
        uvm_fault(p.map, 0x5000_0123, R)
    assert ei.value.errno == EFAULT
    assert str(ei.value) == "[EFAULT] read fault at 0x50000000: no mapping"
    va = p.mmap(PS, prot=R)
    e = p.map.uvm_map_lookup_entry(va)
    with pytest.raises(UVMError) as ei:
        uvm_fault(p.map, va + 8, RW)
    assert ei.value.errno == EFAULT
    assert str(ei.value) == f"[EFAULT] write fault at {va:#x}: protection {e!r}"
    rw = p.mmap(PS)
    m.uvm.limit = m.uvm.allocated
    with pytest.raises(UVMError) as ei:
        uvm_fault(p.map, rw, RW)
    assert ei.value.errno == ENOMEM
    assert str(ei.value) == f"[ENOMEM] write fault at {rw:#x}: out of memory"
    with pytest.raises(UVMError) as ei:
        uvm_fault(p.map, rw, R)
    assert str(ei.value) == f"[ENOMEM] read fault at {rw:#x}: out of memory"


# --------------------------------------------------------------- upper layer


def test_anon_without_page_or_swap_slot_is_an_assertion(m: Machine) -> None:
    """uvmfault_anonget reads a non-resident anon from its swap slot; an anon
    with neither is impossible (a KASSERT-class model error)."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    old = _anon(p, va)
    bad = Anon()
    e.amap.add(e.slot(va), bad, replace=True)
    anon_unref(m.uvm, old)
    p.map.pmap.module.pmap_remove(p.map.pmap, va, va + PS)
    with pytest.raises(KernelAssertion, match=r"^<Anon .* has neither a page nor a swap slot$"):
        uvm_fault(p.map, va, R)


def test_page_in_does_not_take_the_reserve(m: Machine) -> None:
    """uvmfault_anonget allocates without UVM_PGA_USERESERVE: with only the
    reserve free, bringing a swapped anon back fails (ENOMEM)."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"s")
    a = _anon(p, va)
    assert uvmpd_reclaim_page(m.uvm, _page(p, va)) == "paged out"
    _squeeze_to_reserve(m)
    with pytest.raises(UVMError) as ei:
        uvm_fault(p.map, va, R)
    assert ei.value.errno == ENOMEM and a.an_page is None and a.an_swslot


def test_cow_promote_does_not_take_the_reserve(m: Machine) -> None:
    """uvmfault_promote allocates without UVM_PGA_USERESERVE."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    c = p.fork("c")
    a = _anon(c, va)
    _squeeze_to_reserve(m)
    with pytest.raises(UVMError) as ei:
        uvm_fault(c.map, va, RW)
    assert ei.value.errno == ENOMEM and _anon(c, va) is a and a.an_ref == 2


def test_wired_upper_mapping_is_referenced_and_modified(m: Machine) -> None:
    """A wiring fault is a fault for the entry's full protection, so
    pmap_enter gets VM_PROT_READ|VM_PROT_WRITE with PMAP_WIRED; x86
    pmap_enter sets PTE_A for any access and PTE_D for a write."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    c = p.fork("c")
    c.mlock(va, PS)  # the child's copy-on-write is resolved: upper promote
    pte = c.map.pmap.ptes[va]
    assert pte & PTE_W and pte & PTE_A and pte & PTE_D


def test_upper_fault_updates_the_faulting_pmap(m: Machine) -> None:
    """uvm_fault_upper_enter ends with pmap_update(pmap) of the faulting map."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    c = p.fork("c")
    n = len(events(m, PmapUpdate))
    c.read(va, 1)  # the child's first touch: an upper fault, shared anon
    assert [e.space for e in events(m, PmapUpdate)[n:]] == [c.map.pmap.name]


def _o2a_in_amap(m: Machine) -> tuple[Process, int, Anon, Page]:
    """netbsd-1.6: an O->A anon of a file page in process "q"'s amap."""
    vn = m.vnode(b"o" * PS, name="f")
    p = m.spawn("p")
    fva = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    p.write(fva, b"w")
    (a,) = uvm_loan(p.map, fva, PS, UVM_LOAN_TOANON)
    assert isinstance(a, Anon) and a.an_page is not None
    pg = a.an_page
    q = m.spawn("q")
    va = q.mmap(PS)
    q.write(va, b"x")
    e = q.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    prev = _anon(q, va)
    e.amap.add(e.slot(va), a, replace=True)
    anon_unref(m.uvm, prev)
    return q, va, a, pg


def test_write_to_an_o2a_anon_breaks_its_loan_from_the_object() -> None:
    """uvm_fault_upper_loan, an_ref 1, the page not PG_ANON (an O->A
    receiver): uvm_loanbreak_anon(anon, uobj) with the owning object: the
    anon gets a copy, the old page drops the anon's loan and stays the
    object's."""
    m = Machine(ncpus=2, memory="1M", profile=OLD, trace="record")
    q, va, a, pg = _o2a_in_amap(m)
    vn = pg.uobject
    q.write(va, b"Q")
    assert a.an_page is not pg and q.read(va, 2) == b"Qo"
    assert pg.uobject is vn and pg.loan_count == 0 and page_role(pg) == "OBJ"
    (br,) = events(m, LoanBreak)
    assert (br.kind, br.where, br.va, br.space) == ("anon", "fault", va, "q")
    check_invariants(m)
    m.close()


def test_mlock_breaks_an_anon_loan_as_mlock(m: Machine) -> None:
    """A wiring fault breaks the loan of an anon page lent to the kernel
    (cow_now from max_protection): the break is the mlock's."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"a")
    (pg,) = uvm_loan(p.map, va, PS, UVM_LOAN_TOPAGE)
    p.mlock(va, PS)
    assert _page(p, va) is not pg
    (br,) = events(m, LoanBreak)
    assert (br.kind, br.where) == ("anon", "mlock")


def test_mlock_breaks_an_object_loan_as_mlock(m: Machine) -> None:
    vn = m.vnode(b"o" * PS, name="f")
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    p.write(va, b"w")
    (pg,) = uvm_loanuobjpages(vn, 0, 1)
    p.mlock(va, PS)
    assert vn.uvm_pagelookup(0) is not pg
    (br,) = events(m, LoanBreak)
    assert (br.kind, br.where) == ("object", "mlock")


# --------------------------------------------------------------- lower layer


def test_read_of_a_private_file_mapping_is_read_only_on_a_dirty_page(m: Machine) -> None:
    """A private file mapping maps the object's page without write, even a
    DIRTY one (uvm_pagereadonly_p alone would allow write): on the first
    touch because the entry needs a copy (uvm_fault_check), later because
    it is copy-on-write (uvm_fault_lower_direct).  The fault is entered as
    a read access (pmap_enter's flags): x86 pmap_enter sets PTE_A for it.
    The writes that follow promote, and the file keeps its bytes."""
    vn = m.vnode(b"o" * (2 * PS), name="f")
    vn.write(0, b"d")  # write(2): both pages DIRTY
    vn.write(PS, b"e")
    p = m.spawn("p")
    va = p.mmap(2 * PS, flags=MAP_PRIVATE, obj=vn)
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.needs_copy
    uvm_fault(p.map, va, R)  # needs-copy read: no amap_copy
    pte = p.map.pmap.ptes[va]
    assert pte & PTE_A and not pte & PTE_W and e.needs_copy
    assert p.read(va, 2) == b"do"
    p.write(va, b"P")  # resolves needs-copy for the entry, promotes page 0
    assert not e.needs_copy
    uvm_fault(p.map, va + PS, R)  # copy-on-write, no longer needs-copy
    assert p.read(va + PS, 2) == b"eo"
    pte = p.map.pmap.ptes[va + PS]
    assert pte & PTE_A and not pte & PTE_W
    p.write(va + PS, b"Q")
    assert vn.read(0, 2) == b"do" and vn.read(PS, 2) == b"eo"
    assert p.read(va, 2) == b"Po" and p.read(va + PS, 2) == b"Qo"
    check_invariants(m)


def test_private_file_promote_does_not_take_the_reserve(m: Machine) -> None:
    """uvmfault_promote (copy of an object page) allocates without
    UVM_PGA_USERESERVE."""
    vn = m.vnode(b"o" * PS, name="f")
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_PRIVATE, obj=vn)
    assert p.read(va, 1) == b"o"
    _squeeze_to_reserve(m)
    with pytest.raises(UVMError) as ei:
        uvm_fault(p.map, va, RW)
    assert ei.value.errno == ENOMEM and vn.read(0, 1) == b"o"


@pytest.mark.parametrize(("size", "page", "ok"), [(PS + 1, 1, True), (7096, 2, False)])
def test_fault_at_the_page_holding_eof(m: Machine, size: int, page: int, ok: bool) -> None:
    """genfs_getpages refuses offsets from round_page(size): a 4097-byte
    file has a second page (its last byte, then zeros), a 7096-byte file
    has no third."""
    vn = m.vnode(b"o" * (size - 1) + b"z", name="f")
    p = m.spawn("p")
    va = p.mmap(3 * PS, flags=MAP_SHARED, obj=vn)
    at = va + page * PS
    if ok:
        uvm_fault(p.map, at, R)
        assert p.read(at, 2) == b"z\0"
    else:
        with pytest.raises(UVMError) as ei:
            uvm_fault(p.map, at, R)
        assert ei.value.errno == EFAULT and at not in p.map.pmap.ptes


def test_fault_address_is_truncated_to_its_page(m: Machine) -> None:
    """uvm_fault_internal: ufi.orig_rvaddr = trunc_page(vaddr)."""
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    uvm_fault(p.map, va + PS + 0x123, RW)
    assert set(p.map.pmap.ptes) == {va + PS}


def test_wiring_fault_meeting_needs_copy_is_an_assertion(m: Machine) -> None:
    """uvm_fault_check: KASSERT(!maxprot) before amap_copy: uvm_map_pageable
    resolves needs-copy before it wires (pass 1)."""
    p = m.spawn("p")
    va = p.mmap(PS)
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.needs_copy
    with pytest.raises(KernelAssertion, match=r"^uvm_fault_check: wiring fault meets needs-copy <"):
        uvm_fault(p.map, va, R, wire=True, maxprot=True)


def test_wired_lower_mapping_is_referenced_and_modified(m: Machine) -> None:
    """mlock of untouched anonymous memory: zero fill by a wiring fault for
    the full protection, so pmap_enter sets PTE_A and PTE_D (x86)."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.mlock(va, PS)
    pte = p.map.pmap.ptes[va]
    assert pte & PTE_W and pte & PTE_A and pte & PTE_D


def test_lower_fault_updates_the_faulting_pmap(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    n = len(events(m, PmapUpdate))
    p.read(va, 1)  # zero fill: the lower layer
    assert [e.space for e in events(m, PmapUpdate)[n:]] == [p.map.pmap.name]


def test_wiring_marks_only_an_aobj_page_dirty(m: Machine) -> None:
    """uvm_fault_lower_done: a wired aobj page is marked DIRTY (uao_dropswap);
    a wired vnode page keeps the status its write-access pgo_get gave it
    (UNKNOWN: genfs_getpages starts dirtiness tracking)."""
    vn = m.vnode(b"o" * PS, name="f")
    p = m.spawn("p")
    fva = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    p.mlock(fva, PS)
    fpg = vn.uvm_pagelookup(0)
    assert fpg is not None and fpg.wire_count == 1
    assert m.uvm.uvm_pagegetdirty(fpg) == UVM_PAGE_STATUS_UNKNOWN
    ao = m.aobj(name="ao")
    ava = p.mmap(PS, flags=MAP_SHARED, obj=ao)
    p.mlock(ava, PS)
    apg = ao.uvm_pagelookup(0)
    assert apg is not None and apg.wire_count == 1
    assert m.uvm.uvm_pagegetdirty(apg) == UVM_PAGE_STATUS_DIRTY
    check_invariants(m)


def test_read_of_a_lent_dirty_file_page_is_read_only(m: Machine) -> None:
    """uvm_fault_lower_direct_loan, read: enter_prot &= ~VM_PROT_WRITE, so a
    lent page is never writable through a mapping (I3), though it is DIRTY
    and the mapping is shared and writable."""
    vn = m.vnode(b"o" * PS, name="f")
    vn.write(0, b"d")
    (pg,) = uvm_loanuobjpages(vn, 0, 1)
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    assert p.read(va, 2) == b"do"
    assert not p.map.pmap.ptes[va] & PTE_W
    check_invariants(m)
    p.write(va, b"W")  # the write breaks the loan
    assert vn.uvm_pagelookup(0) is not pg and bytes(m.physmem.frame_view(pg.frame)[:2]) == b"do"


def test_copy_promote_does_not_zero_first() -> None:
    """uvmfault_promote: uvm_pagealloc(..., anon, opg == NULL ?
    UVM_PGA_ZERO : 0): a zero-fill page is zeroed, a copy is only copied.
    With zeroing made to cost 4,096,000 ns a page (zero_bw 1 B/us), a zero
    fill takes at least that long and a private file page's promote far
    less."""
    m = Machine(ncpus=2, memory="1M", profile_overrides={"costs": {"zero_bw": 1}})
    cpu = m.platform.cpus[0]
    vn = m.vnode(b"o" * PS, name="f")
    p = m.spawn("p", cpu=0)
    fva = p.mmap(PS, flags=MAP_PRIVATE, obj=vn)
    zva = p.mmap(PS)
    assert p.read(fva, 1) == b"o"  # the file page is resident, mapped read-only
    t = cpu.clock
    uvm_fault(p.map, fva, RW)
    assert cpu.clock - t < 4_096_000
    t = cpu.clock
    uvm_fault(p.map, zva, RW)
    assert cpu.clock - t >= 4_096_000
    m.close()
