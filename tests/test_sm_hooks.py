"""The hooks every shipped state machine shares (uvmloan.testing.hooks).

* The example in the :mod:`uvmloan.testing` docstring, executed as written,
  configures and runs on every machine (loan, pmap, VM).
* Every machine runs under the MI ASID policy through those hooks with a
  pool of 3 ASIDs per CPU, so that the CI budget's spawn/exit (and fork)
  cycles wrap the pool (``pmap_tlb_asid_reinitialize``, specs/pmap.md M-A6);
  each test asserts that the pool did wrap.  The x86 runs are the modules'
  default ``TestCase``s (``test_loan_statemachine.py``,
  ``test_pmap_statemachine.py``, ``test_vm_statemachine.py``): the x86 policy
  has no ASIDs (no PCID), so there is nothing of the kind to wrap there.
* ``INJECT`` and ``make_machine`` reach the machine on every machine.
"""

from __future__ import annotations

import textwrap
from typing import Any, ClassVar

import pytest
from hypothesis import settings

import uvmloan.testing
from uvmloan import Machine
from uvmloan.testing import MachineHooks, run_machine
from uvmloan.testing.hooks import injected_bugs
from uvmloan.testing.loan_machine import LoanStateMachine, loan_settings
from uvmloan.testing.pmap_machine import PmapStateMachine, hypothesis_settings
from uvmloan.testing.vm_machine import VMStateMachine, vm_settings

MACHINES: dict[str, tuple[type[Any], settings]] = {
    "loan": (LoanStateMachine, loan_settings()),
    "pmap": (PmapStateMachine, hypothesis_settings()),
    "vm": (VMStateMachine, vm_settings()),
}


def _docstring_example() -> dict[str, Any]:
    """Execute the literal block of the uvmloan.testing docstring."""
    doc = uvmloan.testing.__doc__ or ""
    _head, sep, rest = doc.partition("::\n\n")
    assert sep, "the uvmloan.testing docstring lost its example"
    lines = []
    for line in rest.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    ns: dict[str, Any] = {"__name__": "uvmloan_testing_example"}
    exec(compile(textwrap.dedent("\n".join(lines)), "<uvmloan.testing example>", "exec"), ns)
    return ns


EXAMPLE = _docstring_example()
EXAMPLE_CLASSES = {"loan": "MyLoans", "pmap": "MyPmap", "vm": "MyVM"}


def _build(cls: type[Any]) -> Any:
    """An instance of a machine class with its Machine built (the pmap
    machine builds it in its @initialize rule)."""
    sm = cls()
    if isinstance(sm, PmapStateMachine):
        sm.init_machine(n=0)
    return sm


@pytest.mark.parametrize("kind", sorted(EXAMPLE_CLASSES))
def test_docstring_example_configures_every_machine(kind: str) -> None:
    cls = EXAMPLE[EXAMPLE_CLASSES[kind]]
    assert issubclass(cls, MACHINES[kind][0])
    sm = _build(cls)
    try:
        m = sm.m
        assert m.ncpus == 4
        assert m.physmem.npages * m.page_size == 4 << 20
        assert (m.profile.tlb_policy, m.profile.tlb_entries, m.profile.asid_max) == (
            "mi-asid",
            8,
            3,
        )
    finally:
        sm.teardown()


@pytest.mark.parametrize("kind", sorted(EXAMPLE_CLASSES))
def test_docstring_example_runs_on_every_machine(kind: str) -> None:
    """The example's TestCase, as written, with a small budget."""
    case = EXAMPLE[f"Test{EXAMPLE_CLASSES[kind]}"]
    assert case.settings.max_examples == MACHINES[kind][1].max_examples
    # derandomized: the example is documentation, run the same programs each
    # time (bug hunting is the hunts' job, each under five fixed seeds)
    run_machine(
        EXAMPLE[EXAMPLE_CLASSES[kind]],
        settings=settings(case.settings, max_examples=8, derandomize=True, database=None),
    )


# ------------------------------------------------- both policies, pool wraps


class TinyASIDPool(MachineHooks):
    """Four CPUs, the MI ASID policy, 3 ASIDs per CPU, 8-entry TLBs."""

    NCPUS: ClassVar[int | None] = 4
    PROFILE_OVERRIDES: ClassVar[dict[str, Any]] = {
        "tlb_policy": "mi-asid",
        "tlb_entries": 8,
        "asid_max": 3,
    }
    # Per test: the largest number of pool reinitialisations one CPU saw in
    # each example (read off the machine's CPUs at teardown).
    reinits: ClassVar[list[int]] = []

    def make_machine(self, ncpus: int | None = None) -> Machine:
        m = super().make_machine(ncpus)
        self._built = m
        return m

    def teardown(self) -> None:
        m = getattr(self, "_built", None)
        if m is not None:
            self.reinits.append(max(c.asid_reinits for c in m.cpus))
        super().teardown()  # type: ignore[misc]


class LoanWrap(TinyASIDPool, LoanStateMachine):
    MEMORY: ClassVar[int | str] = "1M"


class PmapWrap(TinyASIDPool, PmapStateMachine):
    """The pmap machine has two pmaps that live for the whole example (no
    spawn/exit): with one ASID per CPU every switch between them on a CPU
    that used both wraps the pool."""

    NCPUS: ClassVar[int | None] = None  # drawn from 2..4, as the default machine
    PROFILE_OVERRIDES: ClassVar[dict[str, Any]] = {
        **TinyASIDPool.PROFILE_OVERRIDES,
        "asid_max": 1,
    }


class VMWrap(TinyASIDPool, VMStateMachine):
    MEMORY: ClassVar[int | str] = "4M"


# The MI runs replace the modules' former MI variants; their budgets are
# the ones those had (the loan machine with four CPUs costs more per step).
_loan = loan_settings()
WRAP_RUNS: dict[str, tuple[type[Any], settings]] = {
    "loan": (LoanWrap, settings(_loan, max_examples=max(20, _loan.max_examples // 6))),
    "pmap": (PmapWrap, hypothesis_settings()),
    "vm": (VMWrap, settings(vm_settings(), max_examples=max(20, vm_settings().max_examples // 5))),
}


@pytest.mark.parametrize("kind", sorted(WRAP_RUNS))
def test_mi_asid_run_wraps_the_asid_pool(kind: str) -> None:
    cls, budget = WRAP_RUNS[kind]
    cls.reinits = []
    run_machine(cls, settings=budget)
    wrapped = sum(1 for n in cls.reinits if n)
    assert wrapped >= max(1, len(cls.reinits) // 10), (
        f"{kind}: the ASID pool wrapped in {wrapped} of {len(cls.reinits)} examples"
    )


# ------------------------------------------------------------ INJECT, factory


@pytest.mark.parametrize("kind", sorted(MACHINES))
def test_inject_reaches_every_machine(kind: str) -> None:
    base = MACHINES[kind][0]

    class Buggy(base):  # type: ignore[misc, valid-type]
        INJECT = ("skip-pmap-update", "skip-loan-protect")

    class OneName(base):  # type: ignore[misc, valid-type]
        INJECT = "sync-pv-no-shootdown"

    sm = _build(Buggy)
    try:
        assert sm.m.pmap.inject_skip_update
        assert "skip-loan-protect" in sm.m.uvm.inject
    finally:
        sm.teardown()
    sm = _build(OneName)
    try:
        assert sm.m.pmap.inject_sync_pv_no_shootdown
        assert not sm.m.pmap.inject_skip_update
    finally:
        sm.teardown()


def test_unknown_injected_bug_is_refused_before_a_machine_is_built() -> None:
    with pytest.raises(ValueError, match="unknown injected bug 'skip-everything'"):
        injected_bugs(("skip-pmap-update", "skip-everything"))

    class Typo(LoanStateMachine):
        INJECT = ("skip-pmap-updat",)

    with pytest.raises(ValueError, match="INJECT: unknown injected bug"):
        Typo()


def test_ncpus_none_needs_a_count() -> None:
    class NoCount(LoanStateMachine):
        NCPUS = None

    with pytest.raises(ValueError, match="NCPUS is None"):
        NoCount()
