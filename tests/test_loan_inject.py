"""Bug injection: every switch of :mod:`uvmloan.inject` is caught.

"An invariant that can never fail is worth nothing" (DESIGN.md): for each
deliberate bug there is a directed test (the smallest sequence that shows
it, caught by ``check_invariants`` or by the release-order check) and runs
of the loan state machine under five fixed seeds that must find it, each
through the check named for the bug in ``CAUGHT_BY`` (the failure's
identity: ``uvmloan.testing.failures.failure_id``); another check firing
first fails the test.  Three of the bugs are also found by the machine's
observational checks alone (bytes and faults), with ``check_invariants``
switched off, helped by two biased rules.  The bug-free machines run each
hunt's budget too.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
from helpers import PS, machine_fixture
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from uvmloan import InvariantViolation, KernelLoan, Machine, SegmentationFault, check_invariants
from uvmloan.inject import BUGS, inject
from uvmloan.testing.failures import CheckFailure, expect_caught, hunt
from uvmloan.testing.loan_machine import LoanRef, LoanStateMachine, Region, no_shrink_settings
from uvmloan.testing.loan_ops import mappings_of, page_at, release_order_problems
from uvmloan.trace import Event, PageFree

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

# What must catch each planted bug when the whole machine runs: the first
# failure a hunt reports must come from these checks and no other.
#
# * skip-pmap-update: TLB1 -- at the next barrier a CPU still caches what
#   the page tables no longer say.
# * sync-pv-no-shootdown: the TLB check, at the barrier (TLB1: a CPU can
#   still write a page pmap_page_protect made read-only) or at the moment
#   the page is freed (freed-while-mapped: pmap_page_protect(NONE) before
#   uvm_pagefree left the entry cached); which comes first depends on the run.
# * skip-loan-protect: I3 -- a loaned page keeps a writable mapping.
# * unloan-before-kremove: the release-order check (sodoloanfree's order).
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "skip-pmap-update": ("TLB1",),
    "sync-pv-no-shootdown": ("TLB1", "freed-while-mapped"),
    "skip-loan-protect": ("I3",),
    "unloan-before-kremove": ("release-order",),
}
HUNT_BUDGET = no_shrink_settings(50)
SEEDS = (1, 2, 3, 4, 5)


def _machine_with(bug: str) -> type[LoanStateMachine]:
    class Buggy(LoanStateMachine):
        INJECT: ClassVar[tuple[str, ...]] = (bug,)

    Buggy.__name__ = f"LoanStateMachine_{bug.replace('-', '_')}"
    return Buggy


def test_every_bug_names_its_check() -> None:
    assert set(CAUGHT_BY) == set(BUGS)


@pytest.mark.parametrize("bug", BUGS)
def test_state_machine_finds(bug: str) -> None:
    """Five fixed seeds, the CI budget, no shrinking: each run finds the
    bug, and through the check named for it (failure_id)."""
    expect_caught(_machine_with(bug), CAUGHT_BY[bug], HUNT_BUDGET, SEEDS)


def test_state_machine_passes_at_the_hunt_budget() -> None:
    """The bug-free machine survives a hunt's budget (examples and steps)."""
    exc = hunt(LoanStateMachine, HUNT_BUDGET, SEEDS[0])
    assert exc is None, repr(exc)


class _ObservationOnly(LoanStateMachine):
    """The state machine without check_invariants, the release-order check
    and the freed-while-mapped check: only bytes (and faults) are compared.

    Two rules bias it towards the states the byte-changing bugs need, so
    that a short hunt reaches them under any seed:

    * ``lend_then_store``: lend part of a written private buffer, then
      store into the lent range on some CPU (a missing write-protect lets
      the store reach the borrower's page; a missing shootdown lets a CPU
      that cached the writable entry do the same);
    * ``store_unmap_remap``: store into a fresh page on a CPU, unmap it, map
      a new one and store there on the same CPU (a missing pmap_update
      leaves the old translation cached: the second store lands in the freed
      frame and the new page reads back zeros, or the old address still
      reads: the fault check).
    """

    def diagnostic(self) -> None:  # replaces the @invariant of the base class
        pass

    def release_loan(self, lr: LoanRef, cpu: int = 0) -> None:
        self.loans.remove(lr)
        with self.m.on_cpu(cpu):
            lr.kl.release()

    def teardown(self) -> None:
        self.m.close()

    @precondition(lambda self: self.procs and len(self.loans) < self.MAX_LOANS)
    @rule(i=st.integers(0, 7), cpu=st.integers(0, 7), seed=st.integers(0, 250))
    def lend_then_store(self, i: int, cpu: int, seed: int) -> None:
        pr = self.pick(self.procs, i)
        if len(pr.regions) >= self.MAX_REGIONS:
            return
        va = pr.proc.mmap(PS)
        r = Region(va, 1, "anon", data=bytearray(PS))
        pr.regions.append(r)
        first = bytes([seed % 251 + 1]) * 64
        pr.proc.write(va, first, cpu=(cpu + 1) % self.m.ncpus)
        self.apply_write(r, 0, first)
        self.lend(pr, va, 64, cpu % self.m.ncpus)
        later = bytes([(seed + 1) % 251 + 1]) * 8
        pr.proc.write(va, later, cpu=(cpu + 1) % self.m.ncpus)
        self.apply_write(r, 0, later)

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 7), cpu=st.integers(0, 7))
    def store_unmap_remap(self, i: int, cpu: int) -> None:
        pr = self.pick(self.procs, i)
        if len(pr.regions) >= self.MAX_REGIONS:
            return
        c = cpu % self.m.ncpus
        va = pr.proc.mmap(PS)
        pr.proc.write(va, b"old", cpu=c)
        pr.proc.munmap(va, PS)
        va2 = pr.proc.mmap(PS)
        pr.proc.write(va2, b"new", cpu=c)
        if va2 != va:
            try:
                old = pr.proc.read(va, 3, cpu=c)
            except SegmentationFault:
                pass
            else:
                raise CheckFailure("fault", f"{pr.proc.name}: unmapped {va:#x} reads {old!r}")
        # The new page joins the reference: lenders_hold_reference_bytes
        # reads it from the VM structures (a store that went through the
        # old translation left it zero).
        r = Region(va2, 1, "anon", data=bytearray(PS))
        self.apply_write(r, 0, b"new")
        pr.regions.append(r)


OBSERVATION_BUDGET = no_shrink_settings(25)


@pytest.mark.parametrize("bug", ["skip-loan-protect", "skip-pmap-update", "sync-pv-no-shootdown"])
def test_state_machine_finds_by_bytes_alone(bug: str) -> None:
    """Observational equivalence by itself (bytes and faults) catches the
    bugs that change what a program sees: the borrower's bytes (a store that
    should have broken the loan), a stale TLB entry (a store into a freed
    frame, an unmapped address that still reads).  Five seeds; the biased
    rules of _ObservationOnly reach the states."""

    class Buggy(_ObservationOnly):
        INJECT: ClassVar[tuple[str, ...]] = (bug,)

    expect_caught(Buggy, ("bytes", "fault"), OBSERVATION_BUDGET, SEEDS)


def test_observation_only_machine_passes_at_the_hunt_budget() -> None:
    """The reduced machine, biased rules included, survives a hunt's budget."""
    exc = hunt(_ObservationOnly, OBSERVATION_BUDGET, SEEDS[0])
    assert exc is None, repr(exc)


def test_page_at_helper(m: Machine) -> None:
    p = m.spawn("p")
    buf = p.mmap(PS)
    assert page_at(p, buf) is None
    p.write(buf, b"x")
    assert page_at(p, buf + 5) is page_at(p.map, buf)
