"""Bug injection: every switch of :mod:`uvmloan.inject` is caught.

"An invariant that can never fail is worth nothing" (DESIGN.md): for each
deliberate bug there is a directed test (the smallest sequence that shows
it, caught by ``check_invariants`` or by the release-order check) and a run
of the loan state machine that must find it.  Two of the bugs are also
found by the state machine's observational checks alone (the bytes the
borrower holds, the lender's view), with ``check_invariants`` switched off.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
from helpers import PS, machine_fixture
from hypothesis.errors import Flaky
from hypothesis.stateful import RuleBasedStateMachine

from uvmloan import InvariantViolation, KernelLoan, Machine, check_invariants
from uvmloan.inject import BUGS, inject
from uvmloan.testing import run_machine
from uvmloan.testing.loan_machine import LoanRef, LoanStateMachine, no_shrink_settings
from uvmloan.testing.loan_ops import mappings_of, page_at, release_order_problems
from uvmloan.trace import Event, PageFree


def _run(cls: type[RuleBasedStateMachine], n: int) -> None:
    run_machine(cls, settings=no_shrink_settings(n))


m = machine_fixture(ncpus=3, memory="1M", trace="record")


def test_every_switch_is_covered() -> None:
    assert set(BUGS) == {
        "skip-pmap-update",
        "sync-pv-no-shootdown",
        "skip-loan-protect",
        "unloan-before-kremove",
    }


def test_unknown_switch_is_refused(m: Machine) -> None:
    with pytest.raises(ValueError, match="unknown injected bug"):
        inject(m, "skip-everything")


# ----------------------------------------------------------------- directed


def test_skip_loan_protect_directed(m: Machine) -> None:
    """The first loan leaves the sender's W mapping: I3 fires at once, and
    the sender really changes the bytes the borrower holds."""
    inject(m, "skip-loan-protect")
    p = m.spawn("p", cpu=0)
    buf = p.mmap(PS)
    p.write(buf, b"lent bytes")
    kl = m.kernel_loan(p, buf, 10)
    with pytest.raises(InvariantViolation) as ei:
        check_invariants(m)
    assert ei.value.invariant == "I3"
    p.write(buf, b"LENT", cpu=0)
    assert kl.read() == b"LENT bytes"  # the borrower was robbed
    assert m.counters["loan.break"] == 0


def test_skip_loan_protect_off_again(m: Machine) -> None:
    inject(m, "skip-loan-protect")
    inject(m, "skip-loan-protect", on=False)
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"x")
    m.kernel_loan(p, buf, 1)
    check_invariants(m)


def test_skip_pmap_update_directed(m: Machine) -> None:
    """The KREMOVE shootdown of a release is never sent: TLB1 fires, and a
    CPU that read through the loan mapping still caches the freed frame."""
    p = m.spawn("p", cpu=0)
    buf = p.mmap(PS)
    p.write(buf, b"gone soon")
    kl = m.kernel_loan(p, buf, 9)
    assert kl.read(cpu=2) == b"gone soon"
    p.exit()  # the page is an orphan: the release frees it
    inject(m, "skip-pmap-update")
    frame = kl.pages[0].frame
    kl.release()
    with pytest.raises(InvariantViolation) as ei:
        check_invariants(m)
    assert ei.value.invariant == "TLB1"
    assert m.uvm.pages.get(frame) is None
    assert any("CPU 2 TLB" in w for w in mappings_of(m, frame))


def _orphaned_loan(m: Machine) -> KernelLoan:
    """A kernel loan of a page its owner wrote, read through on CPU 1; the
    owner then exits, so the page is an orphan the release frees."""
    p = m.spawn("p", cpu=0)
    buf = p.mmap(PS)
    p.write(buf, b"order")
    kl = m.kernel_loan(p, buf, 5)
    kl.read(cpu=1)
    p.exit()
    return kl


def test_unloan_before_kremove_directed(m: Machine) -> None:
    """sodoloanfree's order reversed: the orphan is freed while the kernel
    still maps it.  The release-order check and the freed-while-mapped
    check see it; the final state alone does not (check_invariants passes),
    which is why the state machine reads the order from the trace."""
    inject(m, "unloan-before-kremove")
    kl = _orphaned_loan(m)
    frames = [pg.frame for pg in kl.pages]
    seen: list[str] = []

    def on_free(ev: Event) -> None:
        if isinstance(ev, PageFree):
            seen.extend(mappings_of(m, ev.frame))

    m.tracer.add_sink(on_free)
    n = len(m.trace)
    kl.release()
    problems = release_order_problems(m.trace[n:], kl.kva, PS, frames)
    assert problems and "before the kernel mappings were removed" in problems[0]
    assert any("kernel PTE" in w for w in seen)
    check_invariants(m)  # the end state is clean: only the order was wrong


def test_correct_release_has_no_order_problem(m: Machine) -> None:
    kl = _orphaned_loan(m)
    n = len(m.trace)
    kl.release()
    assert release_order_problems(m.trace[n:], kl.kva, PS, [pg.frame for pg in kl.pages]) == []


# ------------------------------------------------------------ state machine


def _machine_with(bug: str) -> type[LoanStateMachine]:
    class Buggy(LoanStateMachine):
        INJECT: ClassVar[tuple[str, ...]] = (bug,)

    Buggy.__name__ = f"LoanStateMachine_{bug.replace('-', '_')}"
    return Buggy


@pytest.mark.parametrize("bug", BUGS)
def test_state_machine_finds(bug: str) -> None:
    """Deterministic (derandomized) runs without shrinking: the machine
    reports the bug within the budget."""
    with pytest.raises((AssertionError, Flaky)):
        _run(_machine_with(bug), 200)


class _ObservationOnly(LoanStateMachine):
    """The state machine without check_invariants, the release-order check
    and the freed-while-mapped check: only bytes are compared."""

    def diagnostic(self) -> None:  # replaces the @invariant of the base class
        pass

    def release_loan(self, lr: LoanRef, cpu: int = 0) -> None:
        self.loans.remove(lr)
        with self.m.on_cpu(cpu):
            lr.kl.release()

    def teardown(self) -> None:
        self.m.close()


@pytest.mark.parametrize("bug", ["skip-loan-protect", "skip-pmap-update"])
def test_state_machine_finds_by_bytes_alone(bug: str) -> None:
    """Observational equivalence by itself catches the two bugs that change
    bytes: the borrower's (a write that should have broken the loan) or the
    lender's (a write through a stale TLB entry into a reused frame)."""

    class Buggy(_ObservationOnly):
        INJECT: ClassVar[tuple[str, ...]] = (bug,)

    with pytest.raises(AssertionError, match=r"bytes|reference"):
        _run(Buggy, 600)


def test_observation_only_machine_passes_without_bugs() -> None:
    """The reduced machine is not failing for another reason."""
    _run(_ObservationOnly, 30)


def test_page_at_helper(m: Machine) -> None:
    p = m.spawn("p")
    buf = p.mmap(PS)
    assert page_at(p, buf) is None
    p.write(buf, b"x")
    assert page_at(p, buf + 5) is page_at(p.map, buf)
