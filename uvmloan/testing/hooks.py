"""The configuration hooks every shipped state machine shares.

``MachineHooks`` is a mixin for a ``RuleBasedStateMachine`` that drives one
:class:`~uvmloan.Machine`.  A subclass changes the machine with class
attributes and, where attributes are not enough, by overriding the one
factory method :meth:`MachineHooks.make_machine`:

``NCPUS``
    CPUs (``None``: the machine draws a count per example; the pmap
    machine draws it between its ``MIN_CPUS`` and ``MAX_CPUS``).
``MEMORY``
    physical memory, bytes or a size string (``"1M"``).
``PROFILE``
    the semantic profile's name (``uvmloan.profile.PROFILES``).
``PROFILE_OVERRIDES``
    profile fields to change (``{"tlb_policy": "mi-asid", "asid_max": 3}``).
``INJECT``
    names of :mod:`uvmloan.inject` bugs to switch on (one name or several).
``TRACE``
    the ``Machine(trace=...)`` mode the machine needs (``"counters"``; the
    pmap machine records).

``make_machine()`` builds the machine from those attributes (and from
:meth:`machine_options`, the machine-specific ``Machine`` arguments such as
the VM machine's page size), switches on the injected bugs and returns it;
every shipped machine calls it exactly once per example.  Override it to
build the machine some other way or to change it before use::

    def make_machine(self, ncpus: int | None = None) -> Machine:
        m = super().make_machine(ncpus)
        m.pmap.inject_skip_update = True
        return m

The same subclass works on every machine (``LoanStateMachine``,
``PmapStateMachine``, ``VMStateMachine`` and the socket machine to come):
see the example in the :mod:`uvmloan.testing` docstring, which
``tests/test_sm_hooks.py`` runs on each of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..inject import BUGS, inject
from ..machine import Machine

__all__ = ["MachineHooks", "injected_bugs"]


def injected_bugs(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``INJECT`` as a tuple of bug names (a single name is accepted), each
    checked against :data:`uvmloan.inject.BUGS`."""
    if spec is None:
        return ()
    names = (spec,) if isinstance(spec, str) else tuple(spec)
    for name in names:
        if name not in BUGS:
            raise ValueError(f"INJECT: unknown injected bug {name!r}; known: {', '.join(BUGS)}")
    return names


class MachineHooks:
    """The class attributes and the factory shared by the shipped machines."""

    NCPUS: ClassVar[int | None] = 2
    MEMORY: ClassVar[int | str] = "1M"
    PROFILE: ClassVar[str] = "netbsd-10"
    PROFILE_OVERRIDES: ClassVar[Mapping[str, Any]] = {}
    INJECT: ClassVar[str | Sequence[str] | None] = ()
    TRACE: ClassVar[str] = "counters"

    def machine_options(self) -> dict[str, Any]:
        """Further ``Machine`` keyword arguments of this kind of machine."""
        return {}

    def make_machine(self, ncpus: int | None = None) -> Machine:
        """The machine of one example: ``Machine`` built from the class
        attributes (``ncpus`` overrides ``NCPUS``), injected bugs on."""
        n = self.NCPUS if ncpus is None else ncpus
        if n is None:
            raise ValueError(f"{type(self).__name__}: NCPUS is None and no ncpus was given")
        bugs = injected_bugs(self.INJECT)
        m = Machine(
            ncpus=n,
            memory=self.MEMORY,
            profile=self.PROFILE,
            profile_overrides=dict(self.PROFILE_OVERRIDES),
            trace=self.TRACE,
            **self.machine_options(),
        )
        for bug in bugs:
            inject(m, bug)
        return m
