"""Hypothesis strategies and state machines for users of uvmloan.

* ``pmap_machine.PmapStateMachine``: random pmap operations and accesses on
  several CPUs, checked against reference page tables and bytes.
* ``vm_machine.VMStateMachine``: processes, mappings, forks and accesses,
  checked against a plain-bytes reference.
* ``loan_machine.LoanStateMachine``: loans, breaks, orphans and releases,
  checked for observational equivalence with copying.
* ``scenario``: the runner of the TOML scenarios under ``specs/scenarios``.
* ``profiles``: the machines' hypothesis settings profiles ("ci", "deep"),
  chosen by ``$UVMLOAN_HYPOTHESIS_PROFILE``.

Every machine is configured the same way (:mod:`.hooks`): the class
attributes ``NCPUS``, ``MEMORY``, ``PROFILE``, ``PROFILE_OVERRIDES`` and
``INJECT``, and the factory method ``make_machine(self, ncpus=None) ->
Machine`` that builds the machine of each example.  So one mixin changes
any of them; this one runs each machine on four CPUs under the MI ASID
policy with a pool so small that spawn/exit cycles wrap it (``tests/
test_sm_hooks.py`` runs this very block on every machine)::

    from typing import Any, ClassVar

    from uvmloan import Machine
    from uvmloan.testing import MachineHooks
    from uvmloan.testing.loan_machine import LoanStateMachine, loan_settings
    from uvmloan.testing.pmap_machine import PmapStateMachine, hypothesis_settings
    from uvmloan.testing.vm_machine import VMStateMachine, vm_settings


    class FourCPUsTinyASIDPool(MachineHooks):
        # Four CPUs, MI pmap_tlb.c ASIDs (3 per CPU), 8-entry TLBs.

        NCPUS: ClassVar[int | None] = 4
        MEMORY: ClassVar[int | str] = "4M"
        PROFILE_OVERRIDES: ClassVar[dict[str, Any]] = {
            "tlb_policy": "mi-asid",
            "tlb_entries": 8,
            "asid_max": 3,
        }

        def make_machine(self, ncpus: int | None = None) -> Machine:
            m = super().make_machine(ncpus)
            # Change the fresh machine here (e.g. m.pmap.inject_skip_update = True).
            return m


    class MyLoans(FourCPUsTinyASIDPool, LoanStateMachine):
        pass


    class MyPmap(FourCPUsTinyASIDPool, PmapStateMachine):
        pass


    class MyVM(FourCPUsTinyASIDPool, VMStateMachine):
        pass


    TestMyLoans = MyLoans.TestCase
    TestMyLoans.settings = loan_settings()
    TestMyPmap = MyPmap.TestCase
    TestMyPmap.settings = hypothesis_settings()
    TestMyVM = MyVM.TestCase
    TestMyVM.settings = vm_settings()

Subclass a machine to add rules, and run it with :func:`run_machine`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import settings as Settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from .hooks import MachineHooks

# Older hypothesis releases leave run_state_machine_as_test unannotated; a
# typed alias keeps callers mypy-clean with every release.
_run: Callable[..., None] = run_state_machine_as_test


def run_machine(
    machine: Callable[[], RuleBasedStateMachine], settings: Settings | None = None, **kw: Any
) -> None:
    """Run a state machine class (or factory) as a test with ``settings``."""
    _run(machine, settings=settings, **kw)


__all__ = ["MachineHooks", "run_machine"]
