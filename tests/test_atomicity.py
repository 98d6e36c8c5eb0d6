"""Multi-step operations either complete or change nothing (item 4 of the review).

NetBSD never fails these half done for want of memory: UBC's loan break
(``ubc_fault``), ``amap_cow_now`` ("cownowpage"), the wiring faults of
``uvm_map_pageable`` and ``uvm_loan``'s helpers sleep in ``uvm_wait()`` and
retry.  The model reserves the pages first (``pdaemon.uvm_wait``), running
the pagedaemon with ``on_shortage="reclaim"``; with ``"raise"`` it fails
with ENOMEM before changing anything.

The property checked here, for truncate, write(2), fork, mlock, ``uvm_loan``
(through ``kernel_loan``) and ``uvm_loanuobjpages`` (``kernel_loan_file``):
with the memory cut off at every possible allocation (``uvm.limit`` leaves
k free pages, k = 0, 1, ...), the operation fails with ENOMEM and leaves
:func:`machine_snapshot` (every page, anon, amap, map entry, object, file
contents, PTE, pv entry, TLB entry, pending shootdown, swap slot, kernel
loan) exactly as it was, until k reaches the number of pages the operation
allocates unconstrained; from there it completes.  The exact threshold also
proves the reservation counts neither too few nor too many pages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers import PS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uvmloan import MAP_PRIVATE, MAP_SHARED, Machine, UVMError, check_invariants
from uvmloan.object import UVMObject, VnodeObject
from uvmloan.param import EINVAL, ENOMEM
from uvmloan.testing.loan_ops import machine_snapshot, page_at

Op = Callable[[], object]
Build = Callable[[Machine], tuple[Op, list[UVMObject]]]


def _machine(on_shortage: str = "raise") -> Machine:
    return Machine(ncpus=2, memory="1M", trace="off", on_shortage=on_shortage)


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [k for k in a if a[k] != b.get(k)]


def _every_cut(build: Build) -> int:
    """Run ``build``'s operation with 0, 1, 2, ... free pages; returns the
    number it needs.  Each failure must leave the snapshot untouched."""
    with _machine() as m0:
        op, _ = build(m0)
        a0 = m0.uvm.npagealloc
        op()
        needed = m0.uvm.npagealloc - a0
        check_invariants(m0)
    for k in range(needed + 1):
        with _machine() as m:
            op, objs = build(m)
            m.uvm.limit = m.uvm.allocated + k
            before = machine_snapshot(m, objs)
            try:
                op()
            except UVMError as e:
                assert k < needed, f"failed with {k} free pages, needs {needed}: {e}"
                assert e.errno == ENOMEM or (
                    e.errno == EINVAL and (e.reason or "").startswith("ENOMEM")
                ), e
                after = machine_snapshot(m, objs)
                assert after == before, f"k={k}: changed {_diff(before, after)}: {e}"
                check_invariants(m)
                continue
            assert k == needed, f"completed with {k} free pages, counted {needed}"
            check_invariants(m)
    return needed


# ------------------------------------------------------------ the setups


def _truncate_loaned_tail(m: Machine) -> tuple[Op, list[UVMObject]]:
    """The review's sequence: data written with write(2), the tail page lent,
    truncate into that page (its loan must be broken to zero the tail)."""
    vn = m.vnode(b"0" * 3 * PS)
    vn.write(0, b"w" * 3 * PS)
    p = m.spawn("p")
    va = p.mmap(3 * PS, flags=MAP_SHARED, obj=vn)
    p.read(va + PS, 1)
    m.kernel_loan_file(vn, PS, PS)
    return (lambda: vn.truncate(PS + 100)), [vn]


def _write2(m: Machine) -> tuple[Op, list[UVMObject]]:
    """write(2) over two lent resident pages and two not resident ones."""
    vn = m.vnode(b"f" * 4 * PS)
    p = m.spawn("p")
    va = p.mmap(4 * PS, flags=MAP_SHARED, obj=vn)
    p.write(va, b"u" * 2 * PS)
    m.kernel_loan(p, va, 2 * PS)
    vn.pgo_put(2 * PS, 4 * PS, 0x008)  # PGO_FREE: pages 2 and 3 not resident
    return (lambda: vn.write(100, b"n" * (4 * PS - 200))), [vn]


def _fork_wired(m: Machine) -> tuple[Op, list[UVMObject]]:
    """fork of a wired copy-inherited entry: amap_cow_now copies its pages."""
    p = m.spawn("p")
    va = p.mmap(3 * PS)
    p.write(va, b"a" * 3 * PS)
    p.mlock(va, 3 * PS)
    sh = p.mmap(PS, flags=MAP_SHARED)
    p.write(sh, b"s")
    return (lambda: p.fork("c")), []


def _mlock_mixed(m: Machine) -> tuple[Op, list[UVMObject]]:
    """mlock across shared anons (fork), a zero fill, a swapped-out anon, a
    private file mapping (promote) and a lent page of a shared file mapping
    (loan break), starting and ending inside entries (clipping)."""
    p = m.spawn("p")
    buf = p.mmap(4 * PS)
    p.write(buf, b"x" * 2 * PS)
    p.write(buf + 3 * PS, b"y")
    pg3 = page_at(p, buf + 3 * PS)
    assert pg3 is not None
    m.reclaim(page=pg3)  # paged out: the wiring fault pages it in
    p.fork("c")  # the first two anons are shared now (an_ref 2)
    vn = m.vnode(b"v" * 2 * PS)
    priv = p.mmap(2 * PS, flags=MAP_PRIVATE, obj=vn)
    p.read(priv, 1)
    vs = m.vnode(b"s" * 2 * PS)
    shared = p.mmap(2 * PS, flags=MAP_SHARED, obj=vs)
    p.read(shared, 1)
    m.kernel_loan(p, shared, PS)
    assert priv == buf + 4 * PS and shared == priv + 2 * PS  # one contiguous range
    return (lambda: p.mlock(buf + PS, 8 * PS - PS)), [vn, vs]


def _loan_mixed(m: Machine) -> tuple[Op, list[UVMObject]]:
    """uvm_loan (kernel_loan) over a swapped-out anon, file pages not
    resident and a copy-on-write hole (the zero page's first use)."""
    p = m.spawn("p")
    buf = p.mmap(3 * PS)
    p.write(buf, b"a" * PS)
    p.write(buf + PS, b"b")
    pg = page_at(p, buf + PS)
    assert pg is not None
    m.reclaim(page=pg)
    vn = m.vnode(b"f" * 2 * PS)
    fva = p.mmap(2 * PS, flags=MAP_SHARED, obj=vn)
    assert fva == buf + 3 * PS
    return (lambda: m.kernel_loan(p, buf, 5 * PS)), [vn]


def _loan_file(m: Machine) -> tuple[Op, list[UVMObject]]:
    """uvm_loanuobjpages (kernel_loan_file) of pages partly resident."""
    vn = m.vnode(b"f" * 3 * PS)
    vn.pgo_get(PS)
    return (lambda: m.kernel_loan_file(vn, 0, 3 * PS)), [vn]


@pytest.mark.parametrize(
    ("build", "needed"),
    [
        (_truncate_loaned_tail, 1),
        (_write2, 4),
        (_fork_wired, 3),
        (_mlock_mixed, 9),
        (_loan_mixed, 4),
        (_loan_file, 2),
    ],
    ids=["truncate", "write2", "fork", "mlock", "uvm_loan", "uvm_loanuobjpages"],
)
def test_fails_unchanged_at_every_allocation(build: Build, needed: int) -> None:
    assert _every_cut(build) == needed


def test_truncate_enomem_keeps_written_data() -> None:
    """The review's symptom: the bytes written with write(2) past the new end
    are still there after a truncate that failed with ENOMEM."""
    with _machine() as m:
        op, (vn,) = _truncate_loaned_tail(m)
        m.uvm.limit = m.uvm.allocated
        with pytest.raises(UVMError) as ei:
            op()
        assert ei.value.errno == ENOMEM
        assert isinstance(vn, VnodeObject)
        assert vn.size == 3 * PS and vn.read(2 * PS, 4) == b"wwww"


def test_truncate_waits_for_the_pagedaemon_with_reclaim() -> None:
    """on_shortage="reclaim": truncate runs the pagedaemon for the page its
    loan break needs (NetBSD's ubc_fault waits in uvm_wait and retries)."""
    with _machine("reclaim") as m:
        op, (vn,) = _truncate_loaned_tail(m)
        other = m.vnode(b"c" * 4 * PS)
        for off in range(0, 4 * PS, PS):
            other.pgo_get(off)  # clean file pages the pagedaemon can take
        m.uvm.limit = m.uvm.allocated
        op()
        assert isinstance(vn, VnodeObject)
        assert vn.size == PS + 100 and vn.read(PS, 100) == b"w" * 100
        vn.truncate(2 * PS)  # the zeroed tail shows when the file grows back
        assert vn.read(PS + 98, 4) == b"ww\0\0"
        check_invariants(m)


def test_write2_waits_for_the_pagedaemon_with_reclaim() -> None:
    with _machine("reclaim") as m:
        op, (vn,) = _write2(m)
        other = m.vnode(b"c" * 8 * PS)
        for off in range(0, 8 * PS, PS):
            other.pgo_get(off)
        m.uvm.limit = m.uvm.allocated
        op()
        assert isinstance(vn, VnodeObject)
        assert vn.read(100, 4) == b"nnnn"
        check_invariants(m)


def test_fork_and_mlock_wait_for_the_pagedaemon_with_reclaim() -> None:
    for build in (_fork_wired, _mlock_mixed):
        with _machine("reclaim") as m:
            op, _ = build(m)
            other = m.vnode(b"c" * 8 * PS)
            for off in range(0, 8 * PS, PS):
                other.pgo_get(off)
            m.uvm.limit = m.uvm.allocated
            op()
            check_invariants(m)


# ------------------------------------------------ random setups (hypothesis)

# Page states of a file of up to four pages: not resident, resident clean,
# written with write(2) (dirty), lent to the kernel (nfsrv_read style).
_STATES = ("out", "clean", "dirty", "lent")


@st.composite
def _file_setups(draw: st.DrawFn) -> tuple[list[str], str, bool, int, int]:
    states = draw(st.lists(st.sampled_from(_STATES), min_size=1, max_size=4))
    size = len(states) * PS
    op = draw(st.sampled_from(["write", "truncate", "loan", "loan_file", "mlock"]))
    shared = draw(st.booleans())
    a = draw(st.integers(0, size - 1))
    b = draw(st.integers(1, size + PS))
    return states, op, shared, a, b


def _build_random(setup: tuple[list[str], str, bool, int, int]) -> Build:
    states, op, shared, a, b = setup
    npages = len(states)

    def build(m: Machine) -> tuple[Op, list[UVMObject]]:
        vn = m.vnode(b"o" * npages * PS)
        p = m.spawn("p")
        flags = MAP_SHARED if shared else MAP_PRIVATE
        va = p.mmap(npages * PS, flags=flags, obj=vn)
        for i, state in enumerate(states):
            if state == "clean":
                p.read(va + i * PS, 1)
            elif state == "dirty":
                vn.write(i * PS, b"d" * 10)
            elif state == "lent":
                p.read(va + i * PS, 1)
                m.kernel_loan_file(vn, i * PS, 10)
        if not shared and "dirty" in states:
            p.write(va, b"p")  # a private anon copy of page 0
        # the operation is a system call of p: p is on its CPU when it starts
        # (kernel_loan_file above ran as kernel work and switched it out)
        p.run_on(p.cpu)
        ops: dict[str, Op] = {
            "write": lambda: vn.write(a, b"n" * b),
            "truncate": lambda: vn.truncate(a),
            "loan": lambda: m.kernel_loan(p, va + a - a % PS, min(b, npages * PS - a + a % PS)),
            "loan_file": lambda: m.kernel_loan_file(vn, a, min(b, npages * PS - a)),
            "mlock": lambda: p.mlock(va + a - a % PS, PS * max(1, min(b // PS, npages - a // PS))),
        }
        return ops[op], [vn]

    return build


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_file_setups())
def test_random_file_operations_fail_unchanged_or_complete(
    setup: tuple[list[str], str, bool, int, int],
) -> None:
    """The same property over random file states and operations: every cut
    fails unchanged until the exact number of pages the operation takes."""
    _every_cut(_build_random(setup))
