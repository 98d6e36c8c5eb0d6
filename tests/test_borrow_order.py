"""Kernel borrowers reserve kernel VA before they lend (item 5 of the review).

``sosend_loan`` (uipc_socket.c) and ``nfsrv_read`` (nfs_serv.c 1.172) call
``sokvaalloc`` before ``uvm_loan`` / ``uvm_loanuobjpages`` and give the VA
back (``sokvafree``) when the loan fails; both assert
``npgs <= M_EXT_MAXPAGES`` first.  So running out of kernel VA happens
before any user mapping is write-protected or shot down.
"""

from __future__ import annotations

import pytest
from helpers import PS, events, machine_fixture

from uvmloan import Machine, UVMError
from uvmloan.borrow import kernel_loan, uvm_km_alloc_vaonly
from uvmloan.errors import KernelAssertion
from uvmloan.param import ENOMEM
from uvmloan.process import Process
from uvmloan.testing.loan_ops import machine_snapshot
from uvmloan.trace import Loan, PageProtect, ShootdownQueued, ShootdownRound

m = machine_fixture(ncpus=2, memory="1M", trace="record", check=True)


def _exhaust_kva(m: Machine, leave_pages: int = 0) -> int:
    """Take all kernel VA above the first hole but ``leave_pages`` pages."""
    km = m.kernel_map
    va = km._find_space(PS, None)
    size = km.maxva - va - leave_pages * PS
    return uvm_km_alloc_vaonly(m, size)


def _writable_on_two_cpus(m: Machine) -> tuple[Process, int]:
    p = m.spawn("p")
    buf = p.mmap(2 * PS)
    p.write(buf, b"a" * 2 * PS, cpu=0)
    p.write(buf, b"b" * 2 * PS, cpu=1)
    return p, buf


def test_kva_exhaustion_leaves_no_protect_no_shootdown_no_loan(m: Machine) -> None:
    p, buf = _writable_on_two_cpus(m)
    _exhaust_kva(m, leave_pages=1)  # one page of VA left, the loan needs two
    before = machine_snapshot(m)
    mark = len(m.trace)
    with pytest.raises(UVMError) as ei:
        m.kernel_loan(p, buf, 2 * PS)
    assert ei.value.errno == ENOMEM
    new = m.trace[mark:]
    assert not [e for e in new if isinstance(e, PageProtect | ShootdownQueued | ShootdownRound)]
    assert not [e for e in new if isinstance(e, Loan)]
    assert machine_snapshot(m) == before
    # The user keeps writing without a fault: its PTEs still have W.
    nfault = m.counters["fault"]
    p.write(buf, b"c", cpu=1)
    assert m.counters["fault"] == nfault


def test_file_loan_kva_exhaustion_lends_nothing(m: Machine) -> None:
    vn = m.vnode(b"f" * 2 * PS)
    vn.pgo_get(0)
    _exhaust_kva(m, leave_pages=1)
    before = machine_snapshot(m)
    with pytest.raises(UVMError) as ei:
        m.kernel_loan_file(vn, 0, 2 * PS)
    assert ei.value.errno == ENOMEM
    assert machine_snapshot(m) == before
    assert not events(m, Loan)


def test_failed_loan_gives_the_kva_back(m: Machine) -> None:
    """sokvafree after a failed uvm_loan: the VA is free again."""
    p = m.spawn("p")
    buf = p.mmap(PS)
    entries = list(m.kernel_map.entries)
    with pytest.raises(UVMError):  # buf + PS is unmapped: ENOENT
        m.kernel_loan(p, buf, 2 * PS)
    assert list(m.kernel_map.entries) == entries


def test_m_ext_maxpages_is_asserted_before_anything(m: Machine) -> None:
    p, buf = _writable_on_two_cpus(m)
    before = machine_snapshot(m)
    with pytest.raises(KernelAssertion, match="M_EXT_MAXPAGES"):
        kernel_loan(m, p.map, buf, 2 * PS, max_pages=1)
    assert machine_snapshot(m) == before
    kl = kernel_loan(m, p.map, buf, 2 * PS, max_pages=2)
    kl.release()
