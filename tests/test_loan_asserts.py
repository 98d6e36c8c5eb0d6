"""Smaller loan-side corrections of the review (item 6): ``ulz_put`` without
``PGO_FREE``, NetBSD's assertions in ``uvm_loanpage`` and ``uvm_anfree``, and
a lent page that is also wired (mlock through a mapping that can never be
written)."""

from __future__ import annotations

import pytest
from helpers import PS, machine_fixture

from uvmloan import (
    UVM_LOAN_TOPAGE,
    Machine,
    check_invariants,
    uvm_loan,
    uvm_unloan,
)
from uvmloan.anon import Anon, uvm_anfree
from uvmloan.errors import KernelAssertion
from uvmloan.loan import loanzero_page, uvm_loanpage
from uvmloan.object import PGO_CLEANIT, PGO_DEACTIVATE, PGO_FREE
from uvmloan.page import PQ
from uvmloan.param import PG, VM_PROT_READ
from uvmloan.testing.loan_ops import page_at

m = machine_fixture(ncpus=2, memory="1M", trace="record")


def test_zero_page_pgo_put_without_free_does_nothing(m: Machine) -> None:
    """ulz_put (uvm_loan.c 1.104): "Don't need to do any work here if we're
    not freeing pages" - the zero page stays where it is."""
    pg = loanzero_page(m.uvm)
    assert pg is not None and pg.pqueue is PQ.ACTIVE
    zobj = m.uvm.zero_object
    for flags in (0, PGO_CLEANIT, PGO_DEACTIVATE, PGO_CLEANIT | PGO_DEACTIVATE):
        assert zobj.pgo_put(0, PS, flags) == 0
        assert pg.pqueue is PQ.ACTIVE
    assert zobj.pgo_put(0, PS, PGO_FREE) == 0  # with PGO_FREE: dequeued, never freed
    assert pg.pqueue is not PQ.ACTIVE and not pg.flags & PG.FREE


def test_uvm_loanpage_asserts_an_owner(m: Machine) -> None:
    """KASSERT(pg->uobject != NULL) and the same object for every page."""
    orphan = m.uvm.uvm_pagealloc(None, 0, None, 0)
    assert orphan is not None
    with pytest.raises(KernelAssertion, match="uvm_loanpage"):
        uvm_loanpage(m.uvm, [orphan])
    assert orphan.loan_count == 0
    a = m.vnode(b"a" * PS).pgo_get(0)
    b = m.vnode(b"b" * PS).pgo_get(0)
    with pytest.raises(KernelAssertion, match="uvm_loanpage"):
        uvm_loanpage(m.uvm, [a, b])


@pytest.mark.parametrize("flag", [PG.RELEASED, PG.PAGEOUT], ids=["RELEASED", "PAGEOUT"])
def test_uvm_loanpage_asserts_not_released_or_pageout(m: Machine, flag: int) -> None:
    """KASSERT(!(pg->flags & (PG_RELEASED|PG_PAGEOUT)))."""
    pg = m.vnode(b"a" * PS).pgo_get(0)
    pg.flags |= flag
    with pytest.raises(KernelAssertion, match="PG_RELEASED or PG_PAGEOUT"):
        uvm_loanpage(m.uvm, [pg])
    assert pg.loan_count == 0


def test_uvm_anfree_of_o2a_receiver_asserts_its_loan(m: Machine) -> None:
    """uvm_anfree's O->A branch: KASSERT(pg->loan_count > 0) before it drops
    the anon's loan (uvm_anon.c 1.78)."""
    pg = m.vnode(b"a" * PS).pgo_get(0)
    anon = Anon(an_ref=0)
    anon.an_page = pg
    pg.uanon = anon  # an O->A receiver whose loan is missing
    with pytest.raises(KernelAssertion, match="uvm_anfree"):
        uvm_anfree(m.uvm, anon)
    assert pg.loan_count == 0


def test_mlock_through_a_never_writable_shared_mapping_wires_a_lent_page(m: Machine) -> None:
    """Loans and wire_count do meet: the wiring fault of a shared file entry
    whose maximum protection has no write is a read fault (``cow_now`` is
    false, uvm_fault.c 1.226 ``uvm_fault_check``), so a lent page is wired
    without a break.  The other order stays refused: a wired page is never
    lent (``uvm_loanpage``: EBUSY)."""
    vn = m.vnode(b"r" * PS)
    p = m.spawn("p")
    va = p.map.uvm_map(PS, vn, 0, VM_PROT_READ, maxprot=VM_PROT_READ, copy_on_write=False)
    assert p.read(va, 1) == b"r"
    pages = uvm_loan(p.map, va, PS, UVM_LOAN_TOPAGE)
    p.mlock(va, PS)
    pg = page_at(p, va)
    assert pg is not None and pg.loan_count == 1 and pg.wire_count == 1
    check_invariants(m)
    p.munlock(va, PS)
    uvm_unloan(pages, UVM_LOAN_TOPAGE)
    check_invariants(m)


def test_truncate_of_a_lent_wired_page_is_kernel_assertion(m: Machine) -> None:
    """uvm_pagefree's loan branch KASSERTs ``wire_count == 0`` (uvm_page.c
    1.246); genfs_do_putpages frees wired pages too, so truncating the file
    under such a page panics a DIAGNOSTIC kernel."""
    vn = m.vnode(b"r" * PS)
    p = m.spawn("p")
    va = p.map.uvm_map(PS, vn, 0, VM_PROT_READ, maxprot=VM_PROT_READ, copy_on_write=False)
    p.read(va, 1)
    uvm_loan(p.map, va, PS, UVM_LOAN_TOPAGE)
    p.mlock(va, PS)
    with pytest.raises(KernelAssertion, match="wired"):
        vn.truncate(0)
