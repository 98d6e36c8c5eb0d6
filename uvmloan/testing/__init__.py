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

Subclass a machine to add rules or switch on an injected bug, and run it
with :func:`run_machine`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import settings as Settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

# Older hypothesis releases leave run_state_machine_as_test unannotated; a
# typed alias keeps callers mypy-clean with every release.
_run: Callable[..., None] = run_state_machine_as_test


def run_machine(
    machine: Callable[[], RuleBasedStateMachine], settings: Settings | None = None, **kw: Any
) -> None:
    """Run a state machine class (or factory) as a test with ``settings``."""
    _run(machine, settings=settings, **kw)


__all__ = ["run_machine"]
