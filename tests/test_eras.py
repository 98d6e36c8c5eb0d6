"""The netbsd-1.6 era against netbsd-10, one switch at a time (specs/eras.md).

Each test runs the same operations on a netbsd-10 machine and a netbsd-1.6
one and checks each against what that era's source does, figures worked
out here from the source, not from the model:

* uvm_loan.c 1.104 (2020) vs 1.29.2.4 (2002-06-23, the code of mid 2002);
* uipc_socket.c 1.215 and later vs 1.66.4.1 (2002-06-11, the netbsd-1-6
  branch, options SOSEND_LOAN);
* x86_tlb.c 1.20 vs the 2001-2003 x86 pmap's PMAP_TLB_MAXJOBS.
"""

from __future__ import annotations

import pytest
from helpers import PS

from uvmloan import Machine, check_invariants, get_profile, uvm_unloan
from uvmloan import uvm_loan as _uvm_loan
from uvmloan.anon import Anon
from uvmloan.errors import KernelAssertion, UVMError
from uvmloan.map import VMMap
from uvmloan.object import VnodeObject
from uvmloan.page import PQ, Page
from uvmloan.param import EINVAL, ENOENT, MAP_SHARED, PG, UVM_LOAN_TOANON, UVM_LOAN_TOPAGE
from uvmloan.pmap.pte import PTE_W
from uvmloan.process import Process
from uvmloan.testing.loan_ops import page_role

OLD, NEW = "netbsd-1.6", "netbsd-10"


def loan_pages(vmmap: VMMap, va: int, n: int) -> list[Page]:
    out = [x for x in _uvm_loan(vmmap, va, n, UVM_LOAN_TOPAGE) if isinstance(x, Page)]
    assert len(out) == n // PS
    return out


def loan_anons(vmmap: VMMap, va: int, n: int) -> list[Anon]:
    out = [x for x in _uvm_loan(vmmap, va, n, UVM_LOAN_TOANON) if isinstance(x, Anon)]
    assert len(out) == n // PS
    return out


def _page(anon: Anon) -> Page:
    assert anon.an_page is not None
    return anon.an_page


def _file_mapping(m: Machine, npages: int = 2) -> tuple[VnodeObject, Process, int]:
    """A vnode of ``npages`` pages of 'o', mapped shared; the first page
    written through the mapping ('w'), so it is resident and mapped writable."""
    vn = m.vnode(b"o" * (npages * PS))
    p = m.spawn("p")
    va = p.mmap(npages * PS, flags=MAP_SHARED, obj=vn)
    p.write(va, b"w")  # the first page mapped writable
    return vn, p, va


def _pte(p: Process, va: int) -> int:
    return p.map.pmap.ptes[va]


# ------------------------------------------------------------------ (a)


@pytest.mark.parametrize("era", [NEW, OLD])
def test_kernel_loan_queue_membership(era: str) -> None:
    """1.104 uvm_loananon: uvm_pageactivate; 1.29.2.4: uvm_pagedequeue, and
    uvm_unloanpage re-activates an owned page whose last loan went."""
    m = Machine(memory="1M", profile=era)
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    (pg,) = loan_pages(p.map, va, PS)
    assert pg.wire_count == 0  # neither era wires (1.29.2.4 KASSERTs 0)
    assert pg.pqueue is (PQ.ACTIVE if era == NEW else PQ.NONE)
    check_invariants(m)
    uvm_unloan([pg], UVM_LOAN_TOPAGE)
    assert pg.pqueue is PQ.ACTIVE and pg.loan_count == 0
    check_invariants(m)


# ------------------------------------------------------------------ (b) O->A


def test_o2a_is_compiled_out_in_netbsd_10() -> None:
    m = Machine(memory="1M", profile=NEW)
    _vn, p, va = _file_mapping(m)
    with pytest.raises(UVMError) as ei:
        loan_anons(p.map, va, PS)
    assert ei.value.errno == EINVAL and "compiled out" in str(ei.value.reason)


def test_o2a_loan_makes_an_object_page_with_an_anon() -> None:
    """1.29.2.4 uvm_loanuobj TOANON: a new anon (an_ref 1) points at the page,
    pg->uanon = anon without PQ_ANON (the object still owns it), the first
    loan write-protects it, loan_count 0 -> 1, uvm_pageactivate."""
    m = Machine(memory="1M", profile=OLD)
    vn, p, va = _file_mapping(m)
    assert _pte(p, va) & PTE_W
    (anon,) = loan_anons(p.map, va, PS)
    pg = _page(anon)
    assert pg is vn.uvm_pagelookup(0) and pg.uanon is anon and pg.uobject is vn
    assert not pg.flags & PG.ANON and page_role(pg) == "OBJ+A"
    assert anon.an_ref == 1 and pg.loan_count == 1 and pg.pqueue is PQ.ACTIVE
    assert not _pte(p, va) & PTE_W  # pmap_page_protect(pg, VM_PROT_READ)
    check_invariants(m)
    # A second O->A loan of the same page: "if (pg->uanon) an_ref++" only.
    (again,) = loan_anons(p.map, va, PS)
    assert again is anon and anon.an_ref == 2 and pg.loan_count == 1
    # And a kernel loan on top: the O page is lent to an A and a K at once.
    (k,) = loan_pages(p.map, va, PS)
    assert k is pg and pg.loan_count == 2
    check_invariants(m)


def test_o2a_unloan_drops_references_then_the_anon_loan() -> None:
    """uvm_unloananon 1.29.2.4: an_ref-- per item, uvm_anfree at 0; the
    anon of a page its object still owns only drops its loan (uvm_anfree)."""
    m = Machine(memory="1M", profile=OLD)
    vn, p, va = _file_mapping(m)
    (anon,) = loan_anons(p.map, va, PS)
    loan_anons(p.map, va, PS)
    pg = _page(anon)
    # Given back more often than referenced: KASSERT-like, nothing changes.
    with pytest.raises(KernelAssertion, match="given back 3 times"):
        uvm_unloan([anon, anon, anon], UVM_LOAN_TOANON)
    assert anon.an_ref == 2 and pg.loan_count == 1
    uvm_unloan([anon], UVM_LOAN_TOANON)
    assert anon.an_ref == 1 and pg.uanon is anon and pg.loan_count == 1
    uvm_unloan([anon], UVM_LOAN_TOANON)
    assert anon.an_ref == 0 and anon.an_page is None
    assert pg.uanon is None and pg.loan_count == 0 and page_role(pg) == "OBJ"
    assert vn.uvm_pagelookup(0) is pg
    check_invariants(m)


def test_o2a_adoption_when_the_object_lets_go() -> None:
    """The object frees an O->A page (truncate): uvm_pagefree disowns it and
    the anon keeps it with its loan (ANON-UNADOPTED).  O->A + O->K: the
    page's loan_count is 2.  uvm_unloanpage (1.29.2.4) drops the kernel's
    loan (2 -> 1), then, uobject NULL, uanon set, PQ_ANON clear, turns the
    anon's loan into ownership: loan_count 1 -> 0, PQ_ANON set.  The last
    an_ref then frees the anon and its page."""
    m = Machine(memory="1M", profile=OLD)
    vn, p, va = _file_mapping(m)
    (anon,) = loan_anons(p.map, va, PS)
    (pg,) = loan_pages(p.map, va, PS)
    assert pg.loan_count == 2
    p.exit()  # the mapping goes; the page stays in the vnode
    vn.truncate(0)
    assert page_role(pg) == "ANON-UNADOPTED" and pg.loan_count == 2
    check_invariants(m)
    uvm_unloan([pg], UVM_LOAN_TOPAGE)
    assert page_role(pg) == "ANON" and pg.loan_count == 0 and pg.flags & PG.ANON
    check_invariants(m)
    before = m.uvm.allocated
    uvm_unloan([anon], UVM_LOAN_TOANON)
    assert page_role(pg) == "FREE" and m.uvm.allocated == before - 1
    check_invariants(m)


def test_o2a_write_fault_on_the_file_breaks_the_loan_for_the_anon() -> None:
    """A write through the shared file mapping of an O->A page: the loan is
    broken (uvm_loanbreak): the object gets a copy, the anon keeps the old
    page and its bytes (ANON-UNADOPTED, its one loan)."""
    m = Machine(memory="1M", profile=OLD)
    vn, p, va = _file_mapping(m)
    (anon,) = loan_anons(p.map, va, PS)
    old = _page(anon)
    p.write(va, b"NEW")
    assert vn.uvm_pagelookup(0) is not old and page_role(old) == "ANON-UNADOPTED"
    assert old.loan_count == 1 and bytes(m.physmem.frame_view(old.frame)[:3]) == b"wo" + b"o"
    assert p.read(va, 3) == b"NEW"
    check_invariants(m)
    uvm_unloan([anon], UVM_LOAN_TOANON)  # uvm_anfree adopts, then frees it
    assert page_role(old) == "FREE"
    check_invariants(m)


@pytest.mark.parametrize("era", [NEW, OLD])
def test_zero_to_anon(era: str) -> None:
    """1.104: zero->A is #ifdef notdef (EINVAL).  1.29.2.4 uvm_loanzero TOANON:
    a new anon owning a new zeroed page (PQ_ANON), activated, no loan."""
    m = Machine(memory="1M", profile=era)
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    before = m.uvm.allocated
    if era == NEW:
        with pytest.raises(UVMError) as ei:
            loan_anons(p.map, va, 2 * PS)
        assert "zero->anon loans are compiled out" in str(ei.value.reason)
        return
    anons = loan_anons(p.map, va, 2 * PS)
    assert m.uvm.allocated == before + 2 and len({id(a) for a in anons}) == 2
    for a in anons:
        pg = _page(a)
        assert a.an_ref == 1 and page_role(pg) == "ANON" and pg.loan_count == 0
        assert pg.pqueue is PQ.ACTIVE
        assert bytes(m.physmem.frame_view(pg.frame)) == bytes(PS)
    check_invariants(m)
    uvm_unloan(anons, UVM_LOAN_TOANON)
    assert m.uvm.allocated == before
    check_invariants(m)


@pytest.mark.parametrize("era", [NEW, OLD])
def test_failed_toanon_loan_undo(era: str) -> None:
    """uvm_loan's fail: path calls uvm_unloananon on the anons lent so far:
    empty in 1.104 (an_ref stays 2, leaked), an_ref-- in 1.29.2.4 (back to 1)."""
    m = Machine(memory="1M", profile=era)
    p = m.spawn("p")
    va = p.mmap(PS, addr=0x10000)
    p.write(va, b"x")
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    anon = e.amap.lookup(e.slot(va))
    assert anon is not None
    with pytest.raises(UVMError) as ei:
        loan_anons(p.map, va, 2 * PS)  # the second page is a hole
    assert ei.value.errno == ENOENT
    assert anon.an_ref == (2 if era == NEW else 1)


# ------------------------------------------------------------------ wired pages


@pytest.mark.parametrize("era", [NEW, OLD])
def test_wired_anon_page_to_kernel(era: str) -> None:
    """1.104 uvm_loananon: a wired page fails the loan (-1 -> EINVAL);
    1.29.2.4: KASSERT(pg->wire_count == 0)."""
    m = Machine(memory="1M", profile=era)
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    p.mlock(va, PS)
    if era == NEW:
        with pytest.raises(UVMError) as ei:
            loan_pages(p.map, va, PS)
        assert ei.value.errno == EINVAL and str(ei.value.reason).startswith("EBUSY")
    else:
        with pytest.raises(KernelAssertion, match="wired"):
            loan_pages(p.map, va, PS)


@pytest.mark.parametrize("era", [NEW, OLD])
def test_wired_object_page_to_kernel(era: str) -> None:
    """1.104 uvm_loanpage: EBUSY at a wired page (uvm_loan: EINVAL);
    1.29.2.4 uvm_loanuobj: no wire check, the page is lent (loan_count 1,
    wire_count still 1)."""
    m = Machine(memory="1M", profile=era)
    _vn, p, va = _file_mapping(m, 1)
    p.mlock(va, PS)
    if era == NEW:
        with pytest.raises(UVMError) as ei:
            loan_pages(p.map, va, PS)
        assert str(ei.value.reason).startswith("EBUSY")
        return
    (pg,) = loan_pages(p.map, va, PS)
    assert pg.loan_count == 1 and pg.wire_count == 1
    uvm_unloan([pg], UVM_LOAN_TOPAGE)
    assert pg.loan_count == 0 and pg.wire_count == 1 and pg.pqueue is PQ.NONE


# ------------------------------------------------------------------ zero page


@pytest.mark.parametrize("era", [NEW, OLD])
def test_zero_loan_to_kernel(era: str) -> None:
    """1.104: every hole is the one shared zero page, kept after unloan.
    1.29.2.4: a fresh zeroed ownerless page per loan with loan_count 1,
    freed by the unloan."""
    m = Machine(memory="1M", profile=era)
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    a, b = loan_pages(p.map, va, 2 * PS)
    if era == NEW:
        assert a is b and page_role(a) == "ZERO" and a.loan_count == 2
    else:
        assert a is not b and page_role(a) == page_role(b) == "ORPHAN"
        assert a.loan_count == b.loan_count == 1
    check_invariants(m)
    uvm_unloan([a, b], UVM_LOAN_TOPAGE)
    assert page_role(a) == ("ZERO" if era == NEW else "FREE")
    check_invariants(m)


# ------------------------------------------------------------------ socket layer


def test_sock_loan_thresh_and_pendfree() -> None:
    """uipc_socket.c 1.66.4.1 (options SOSEND_LOAN): SOCK_LOAN_THRESH 4096
    on every kernel and per-socket so_pendfree drained by sodopendfree;
    1.215 and later: -1 under MULTIPROCESSOR, the sopendfree thread."""
    new, old = get_profile(NEW), get_profile(OLD)
    assert new.multiprocessor and old.multiprocessor
    assert new.sock_loan_thresh == -1 and old.sock_loan_thresh == 4096
    assert get_profile("embedded-2002-up").sock_loan_thresh == 4096
    assert (new.sosend_pendfree, old.sosend_pendfree) == ("thread", "per-socket")


def test_shootdown_queue_size_is_16_in_both_eras() -> None:
    """PMAP_TLB_MAXJOBS 16 (2001-2003 x86 pmap) and TP_MAXVA 16 (x86_tlb.c
    1.20): the 17th request of a round is a full flush in both."""
    for era in (NEW, OLD):
        m = Machine(ncpus=2, memory="1M", profile=era, trace="record")
        p = m.spawn("p", cpu=0)
        va = p.mmap(17 * PS)
        p.write(va, b"x" * (17 * PS))
        p.read(va, 17 * PS, cpu=1)
        before = m.counters.get("tlb flush", 0)
        p.mprotect(va, 16 * PS, 1)  # 16 VAs: a packet of 16, no full flush
        assert m.counters.get("tlb flush", 0) == before
        p.mprotect(va, 17 * PS, 3)
        p.write(va, b"x" * (17 * PS), cpu=1)
        before = m.counters.get("tlb flush", 0)
        p.mprotect(va, 17 * PS, 1)  # 17 VAs: full flush on both CPUs
        assert m.counters.get("tlb flush", 0) > before
        check_invariants(m)
