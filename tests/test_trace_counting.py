"""Counting without events agrees with counting from events.

A machine built with ``trace="counters"`` takes the fast path at the hot
event sites: it bumps the counters an event would have (``Tracer.count``
with the event class's ``keys`` helper) without building the event.  A
``trace="record"`` machine builds every event and derives the counters from
``Event.counter_keys``.  These are different code paths, so running the
same workload both ways and comparing the counters is a real check: a site
that counts the wrong keys, or counts where it should not, shows up as a
difference.  (That a recording machine's counters equal ``counters_from``
its own trace holds by construction and is tested in test_trace_sim.py.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

import uvmloan
from uvmloan import MAP_SHARED, UVM_LOAN_TOANON, UVM_LOAN_TOPAGE, Machine
from uvmloan.errors import SegmentationFault, UVMError
from uvmloan.param import VM_PROT_READ
from uvmloan.testing.scenario import load_scenario, run_scenario, scenario_files
from uvmloan.trace import (
    ContextSwitch,
    Fault,
    IPIDelivered,
    IPISent,
    KEnter,
    KRemove,
    Loan,
    LoanBreak,
    ShootdownQueued,
    ShootdownRound,
)

PS = 4096
ROOT = Path(__file__).resolve().parent.parent / "specs" / "scenarios"

Workload = Callable[[Machine], None]


def _loan_loop(m: Machine) -> None:
    """Write fault, A->K loan, the write that breaks it (an orphan), unloan."""
    p = m.spawn("p", cpu=0)
    buf = p.mmap(8 * PS)
    for i in range(8):
        va = buf + i * PS
        p.write(va, b"a")
        pages = uvmloan.uvm_loan(p.map, va, PS, UVM_LOAN_TOPAGE)
        p.write(va, b"b")
        uvmloan.uvm_unloan(pages, UVM_LOAN_TOPAGE)


def _every_loan_kind(m: Machine) -> None:
    """A->K, O->K, zero->K, A->A; object and anon breaks; a failed loan."""
    p = m.spawn("p", cpu=0)
    anon = p.mmap(2 * PS)
    p.write(anon, b"x" * (2 * PS))
    hole = p.mmap(PS)  # never touched: lent as the zero page
    vn = m.vnode(b"f" * (2 * PS))
    fva = p.mmap(2 * PS, flags=MAP_SHARED, obj=vn)
    p.read(fva, 1)
    pages = uvmloan.uvm_loan(p.map, anon, 2 * PS, UVM_LOAN_TOPAGE)
    fpages = uvmloan.uvm_loan(p.map, fva, 2 * PS, UVM_LOAN_TOPAGE)
    zpages = uvmloan.uvm_loan(p.map, hole, PS, UVM_LOAN_TOPAGE)
    anons = uvmloan.uvm_loan(p.map, anon, PS, UVM_LOAN_TOANON)
    p.write(fva, b"y")  # object loan break
    p.write(anon + PS, b"z")  # anon loan break
    with pytest.raises(UVMError):
        uvmloan.uvm_loan(p.map, 0x1000, PS, UVM_LOAN_TOPAGE)  # a hole: ENOENT
    with pytest.raises(UVMError):
        uvmloan.uvm_loan(p.map, fva, 2 * PS, UVM_LOAN_TOANON)  # O->A: compiled out
    uvmloan.uvm_unloan(pages, UVM_LOAN_TOPAGE)
    uvmloan.uvm_unloan(fpages, UVM_LOAN_TOPAGE)
    uvmloan.uvm_unloan(zpages, UVM_LOAN_TOPAGE)
    uvmloan.uvm_unloan(anons, UVM_LOAN_TOANON)
    p.exit()


def _faults_that_fail(m: Machine) -> None:
    """EFAULT faults: no mapping, a protection failure, a read-only store."""
    p = m.spawn("p", cpu=0)
    ro = p.mmap(PS, prot=VM_PROT_READ)
    with pytest.raises(SegmentationFault):
        p.write(0x1000, b"x")
    with pytest.raises(SegmentationFault):
        p.write(ro, b"x")
    assert p.read(ro, 1) == b"\0"


def _borrowers_and_shootdowns(m: Machine) -> None:
    """Kernel borrowers on several CPUs: remote shootdowns, IPIs, invlpg."""
    p = m.spawn("p", cpu=0)
    buf = p.mmap(20 * PS)
    p.write(buf, b"q" * (20 * PS))
    p.read(buf, 1, cpu=1)
    p.read(buf + PS, 1, cpu=2)
    kl = m.kernel_loan(p, buf, 20 * PS)  # past tp_maxva: a full flush
    kl.read(0, 16)
    p.write(buf, b"w", cpu=1)
    kl.release()
    vn = m.vnode(b"n" * (3 * PS))
    kf = m.kernel_loan_file(vn, 0, 3 * PS)
    vn.write(0, b"t")  # write(2) into a loaned file page
    kf.release()
    child = p.fork("c", cpu=1)
    child.write(buf, b"c")
    p.mlock(buf, 2 * PS)
    p.munlock(buf, 2 * PS)
    p.mprotect(buf, PS, VM_PROT_READ)
    p.munmap(buf, 4 * PS)
    m.reclaim()
    child.exit()
    p.exit()


WORKLOADS: dict[str, tuple[dict[str, object], Workload]] = {
    "loan loop": ({"ncpus": 2}, _loan_loop),
    "every loan kind": ({"ncpus": 2}, _every_loan_kind),
    "faults that fail": ({"ncpus": 1}, _faults_that_fail),
    "borrowers, 3 CPUs": ({"ncpus": 3}, _borrowers_and_shootdowns),
    "borrowers, mi-asid": (
        {"ncpus": 3, "profile_overrides": {"tlb_policy": "mi-asid", "asid_max": 3}},
        _borrowers_and_shootdowns,
    ),
    "borrowers, fresh zero loans": (
        {"ncpus": 2, "profile_overrides": {"zero_loan_style": "fresh", "loan_dequeues": True}},
        _every_loan_kind,
    ),
}


def _counters(mode: str, kwargs: dict[str, object], work: Workload) -> Counter[str]:
    m = Machine(memory="2M", trace=mode, **kwargs)  # type: ignore[arg-type]
    try:
        work(m)
        uvmloan.check_invariants(m)
        return Counter(m.counters)
    finally:
        m.close()


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_counting_mode_matches_recording_mode(name: str) -> None:
    kwargs, work = WORKLOADS[name]
    counted = _counters("counters", kwargs, work)
    recorded = _counters("record", kwargs, work)
    assert counted == recorded
    assert counted, "the workload counted nothing"


def test_workloads_reach_the_fast_path_sites() -> None:
    """The workloads above take every counting-only branch the model has:
    resolved and failed faults, every loan kind, loan failures, both loan
    breaks with their orphans, unloans, kenter/kremove, IPIs sent (broadcast
    and unicast) and delivered, context switches (so a comparison of empty
    counters cannot pass for agreement)."""
    total: Counter[str] = Counter()
    for kwargs, work in WORKLOADS.values():
        total += _counters("counters", kwargs, work)
    for key in (
        *Fault.keys("resolved"),
        *Fault.keys("EFAULT"),
        *Loan.keys("A->K"),
        *Loan.keys("O->K"),
        *Loan.keys("zero->K"),
        *Loan.keys("A->A"),
        *LoanBreak.keys("anon"),
        *LoanBreak.keys("object"),
        "loan.orphan",
        "loan.fail",
        "unloan",
        *IPISent.keys(-1),
        *IPISent.keys(1),
        IPIDelivered.KIND,
        KEnter.KIND,
        KRemove.KIND,
        ContextSwitch.KIND,
        ShootdownQueued.KIND,
        ShootdownRound.KIND,
        ShootdownRound.LOCAL,
    ):
        assert total[key] > 0, key


def _scenario_params() -> list[object]:
    out: list[object] = []
    for path in scenario_files(ROOT):
        sc = load_scenario(path)
        if sc.xfail:
            continue
        out.append(pytest.param(path, id=path.relative_to(ROOT).as_posix()))
    return out


@pytest.mark.parametrize("path", _scenario_params())
def test_scenario_counters_agree(path: Path) -> None:
    """Every scenario run counting only and recording: the same counters."""
    sc = load_scenario(path)
    got: dict[str, Counter[str]] = {}
    for mode in ("counters", "record"):
        ctx = run_scenario(attrs.evolve(sc, machine={**sc.machine, "trace": mode}))
        got[mode] = Counter(ctx.machine.counters)
        ctx.machine.close()
    assert got["counters"] == got["record"]
