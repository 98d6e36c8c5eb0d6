"""Memory shortage: a fault that cannot get a page reports ENOMEM and changes
nothing, or (on_shortage="reclaim") runs the pagedaemon and restarts, as
NetBSD's uvm_wait() does."""

from __future__ import annotations

import pytest

from uvmloan import Machine, UVMError, check_invariants
from uvmloan.param import ENOMEM
from uvmloan.testing.loan_ops import machine_snapshot


def test_raise_mode_reports_enomem_and_changes_nothing() -> None:
    m = Machine(memory="1M")
    m.uvm.limit = 4
    p = m.spawn("a")
    buf = p.mmap(8 * m.page_size)
    for i in range(4):
        p.write(buf + i * m.page_size, bytes([i + 1]) * 8)
    assert m.counters["fault resolved"] == 4
    before = machine_snapshot(m)
    with pytest.raises(UVMError) as ei:
        p.write(buf + 4 * m.page_size, b"x")
    assert ei.value.errno == ENOMEM
    # pages and their bytes, anons, amaps, objects, PTEs, pv lists, TLBs,
    # the ledger and every counter: a fault that fails with ENOMEM emits no
    # event in the model, so not even the fault counters move
    assert machine_snapshot(m) == before
    check_invariants(m)


def test_reclaim_mode_pages_out_and_back_in() -> None:
    m = Machine(memory="1M", on_shortage="reclaim")
    m.uvm.limit = 8
    p = m.spawn("a")
    buf = p.mmap(40 * m.page_size)
    for i in range(40):
        p.write(buf + i * m.page_size, bytes([i]) * 100)
    assert m.uvm.allocated <= 8
    assert m.counters["pdaemon.paged out"] > 0
    # Every page reads back what was written, paged in from swap as needed.
    for i in range(40):
        assert p.read(buf + i * m.page_size, 100) == bytes([i]) * 100
    check_invariants(m)


def test_reclaim_mode_gives_up_when_nothing_can_be_freed() -> None:
    m = Machine(memory="1M", on_shortage="reclaim")
    m.uvm.limit = 4
    p = m.spawn("a")
    buf = p.mmap(8 * m.page_size)
    p.mlock(buf, 4 * m.page_size)  # the only pages are wired
    with pytest.raises(UVMError) as ei:
        p.write(buf + 4 * m.page_size, b"x")
    assert ei.value.errno == ENOMEM
    check_invariants(m)


def test_on_shortage_is_validated() -> None:
    with pytest.raises(ValueError, match="on_shortage"):
        Machine(memory="1M", on_shortage="wait")


def test_loan_dequeues_era() -> None:
    """Profile loan_dequeues (uvm_loan.c 1.29.2.4): loaned pages leave the
    paging queues; the last unloan re-activates an owned page."""
    from uvmloan.page import PQ

    m = Machine(memory="1M", profile_overrides={"loan_dequeues": True})
    p = m.spawn("a")
    b = p.mmap(2 * m.page_size)
    p.write(b, b"x" * 2 * m.page_size)
    kl = m.kernel_loan(p, b, 2 * m.page_size)
    assert [pg.pqueue for pg in kl.pages] == [PQ.NONE, PQ.NONE]
    check_invariants(m)
    pages = list(kl.pages)
    kl.release()
    assert [pg.pqueue for pg in pages] == [PQ.ACTIVE, PQ.ACTIVE]
    check_invariants(m)
