"""T7: an anon adopts a disowned O->A page at every site NetBSD does.

``uvm_anon_lockloanpg`` (uvm_anon.c 1.78) is called by ``uvmfault_anonget``
(uvm_fault.c 1.226) for every *resident* anon page with ``loan_count != 0``,
so the fault's upper layer and ``uvm_loananon`` (uvm_loan.c 1.104, which
gets the page through ``uvmfault_anonget``) see an adopted page; the
pagedaemon adopts in ``uvmpd_trylockowner`` (uvm_pdaemon.c 1.133.16.1) and
then pages the anon page out.  NetBSD 10 cannot make an O->A loan (the code
is ``#ifdef notdef``), so the state is built by hand: a process whose anon
holds an object page with the anon's loan, after the object let go of it
(truncate), i.e. the digest's ANON-UNADOPTED state.
"""

from __future__ import annotations

import pytest
from helpers import PS, events, machine_fixture

from uvmloan import Machine, check_invariants, uvm_loanuobjpages, uvm_unloan
from uvmloan.anon import Anon, anon_unref
from uvmloan.errors import KernelAssertion
from uvmloan.page import Page
from uvmloan.param import PG, UVM_LOAN_TOPAGE
from uvmloan.process import Process
from uvmloan.testing.loan_ops import page_at, page_role
from uvmloan.trace import Adopt, LoanBreak, Reclaim

m = machine_fixture(ncpus=2, memory="1M", trace="record")


def _unadopted(
    m: Machine, *, kernel_loan: bool = False, dirty: bool = False
) -> tuple[Process, int, Anon, Page, list[Page]]:
    """A process whose anon holds a disowned O->A page of a file."""
    vn = m.vnode(b"o" * PS)
    if dirty:
        vn.write(0, b"d" * PS)
    pg = vn.pgo_get(0)
    klist = uvm_loanuobjpages(vn, 0, 1) if kernel_loan else []
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    old = e.amap.lookup(e.slot(va))
    assert old is not None
    anon = Anon()
    anon.an_page = pg  # the O->A loan uvm_loanuobj's #ifdef notdef code made
    pg.uanon = anon
    pg.loan_count += 1
    e.amap.add(e.slot(va), anon, replace=True)
    anon_unref(m.uvm, old)
    vn.truncate(0)  # the object lets go: uvm_pagefree's loan branch disowns it
    assert page_role(pg) == "ANON-UNADOPTED" and pg.loan_count == 1 + len(klist)
    check_invariants(m)
    return p, va, anon, pg, klist


def test_read_fault_adopts(m: Machine) -> None:
    # A dirty page: uvm_anon_lockloanpg (uvm_anon.c, NetBSD 10) sets PG_ANON
    # and drops the loan but leaves the dirtiness alone, and the upper layer
    # asserts its page is not CLEAN (test below).
    p, va, anon, pg, _ = _unadopted(m, dirty=True)
    assert p.read(va, 4) == b"dddd"
    assert page_role(pg) == "ANON" and pg.loan_count == 0 and anon.an_page is pg
    assert [e.frame for e in events(m, Adopt)] == [pg.frame]
    check_invariants(m)


def test_write_fault_adopts_and_writes_in_place(m: Machine) -> None:
    """No kernel loan: after adoption the page is the anon's own, so the
    write needs no break (NetBSD's upper layer sees loan_count 0)."""
    p, va, anon, pg, _ = _unadopted(m, dirty=True)
    p.write(va, b"w")
    assert anon.an_page is pg and page_role(pg) == "ANON" and pg.loan_count == 0
    assert not events(m, LoanBreak)
    assert p.read(va, 3) == b"wdd"
    check_invariants(m)


def test_clean_adopted_page_trips_the_upper_layers_assertion(m: Machine) -> None:
    """A clean file page adopted by its anon stays CLEAN (uvm_anon_lockloanpg
    changes only PG_ANON and loan_count), and uvm_fault_upper_enter asserts
    ``uvm_pagegetdirty(pg) != UVM_PAGE_STATUS_CLEAN``: a DIAGNOSTIC NetBSD 10
    kernel would panic there, had O->A loans not been compiled out."""
    p, va, _anon, pg, _ = _unadopted(m)
    with pytest.raises(KernelAssertion, match="CLEAN"):
        p.read(va, 4)
    assert page_role(pg) == "ANON" and pg.loan_count == 0  # adopted first


def test_write_fault_adopts_then_breaks_the_kernel_loan(m: Machine) -> None:
    """With a kernel loan left the anon is now the lender (A->K): the write
    breaks the loan with ``uvm_loanbreak_anon(anon, NULL)`` and the old page
    becomes the kernel's orphan."""
    p, va, anon, pg, klist = _unadopted(m, kernel_loan=True)
    p.write(va, b"w")
    assert anon.an_page is not pg and page_role(pg) == "ORPHAN" and pg.loan_count == 1
    assert m.physmem.copyout([pg.frame], 0, 2) == b"oo"  # the borrower's bytes
    assert p.read(va, 2) == b"wo"
    uvm_unloan(klist, UVM_LOAN_TOPAGE)
    assert pg.flags & PG.FREE
    check_invariants(m)


def test_uvm_loananon_adopts_before_lending(m: Machine) -> None:
    p, va, _anon, pg, _ = _unadopted(m)
    kl = m.kernel_loan(p, va, PS)
    assert kl.pages == [pg]
    assert page_role(pg) == "ANON" and pg.loan_count == 1
    p.write(va, b"w")  # the ordinary A->K break
    assert page_role(pg) == "ORPHAN" and kl.read(0, 2) == b"oo"
    assert p.read(va, 2) == b"wo"
    kl.release()
    check_invariants(m)


def test_pagedaemon_adopts_and_pages_out(m: Machine) -> None:
    p, va, anon, pg, _ = _unadopted(m, dirty=True)
    assert m.reclaim(page=pg) == 1
    assert [e.result for e in events(m, Reclaim)] == ["paged out"]
    assert events(m, Adopt)
    assert anon.an_page is None and anon.an_swslot and pg.flags & PG.FREE
    check_invariants(m)
    assert p.read(va, 2) == b"dd"  # paged back in from swap
    assert page_role(page_at(p, va)) == "ANON"  # type: ignore[arg-type]
    check_invariants(m)


def test_pagedaemon_adopts_and_orphans_to_the_kernel(m: Machine) -> None:
    p, va, anon, pg, klist = _unadopted(m, kernel_loan=True, dirty=True)
    assert m.reclaim(page=pg) == 1
    assert [e.result for e in events(m, Reclaim)] == ["orphaned"]
    assert page_role(pg) == "ORPHAN" and pg.loan_count == 1 and anon.an_swslot
    assert p.read(va, 2) == b"dd"
    uvm_unloan(klist, UVM_LOAN_TOPAGE)
    check_invariants(m)


def test_pagedaemon_clean_adopted_page_without_swap_slot_asserts(m: Machine) -> None:
    """uvmpd_scan_queue frees a clean anon page and KASSERTs
    ``anon->an_swslot != 0``; a page clean in its object keeps that status
    through 1.246's uvm_pagefree, so the assertion fires (unreachable in
    NetBSD 10, where no O->A page exists)."""
    _p, _va, _anon, pg, _ = _unadopted(m)
    assert pg.flags & PG.CLEAN
    with pytest.raises(KernelAssertion, match="no swap slot"):
        m.reclaim(page=pg)
