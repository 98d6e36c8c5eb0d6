"""Failures of the state machines' own checks, with a structured identity.

``check_invariants`` raises :class:`~uvmloan.errors.InvariantViolation`,
whose ``invariant`` names the rule ("I3", "TLB1", ...).  The checks the
state machines make themselves raise :class:`CheckFailure`, whose ``check``
names which comparison failed, so that a test that plants a bug can assert
that the check meant for it is the one that fired (and fail when another
fires first):

``bytes``
    bytes read (by a process, a borrower, read(2), the structures) differ
    from the reference.
``fault``
    an access the reference calls illegal did not fault, or a legal one did
    in the wrong place.
``errno``
    a system call failed (or succeeded) against the reference's prediction.
``undo``
    a failed operation left state behind.
``release-order``
    a loan's release broke ``sodoloanfree``'s order.
``freed-while-mapped``
    a frame was freed while a PTE or a live TLB entry still had it.
``stale-tlb``
    after the barrier an access went through a stale TLB entry (pmap machine).
``page-protect``
    ``pmap_page_protect`` returned with a mapping it covered still usable.
``page-table``
    page tables or pv lists differ from the reference mappings.
``attributes``
    ``pmap_is_modified``/``pmap_is_referenced``/``pmap_clear_*`` disagree.
``wiring``
    wire counts or wired PTEs differ from the reference's mlocks.
``counters``
    an event counter differs from the model state it counts.
``leak``
    pages, loans or KVA left after everything was released.

:func:`failure_id` gives the identity of any failure: the invariant of an
``InvariantViolation``, the check of a ``CheckFailure``, else None.
:func:`hunt` runs a machine once as a bug hunt (no shrinking, the first
failure reported) and :func:`expect_caught` asserts that every hunt, under
each of several seeds, fails through the named checks and no other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hypothesis import Phase, settings
from hypothesis import seed as hyp_seed
from hypothesis.stateful import RuleBasedStateMachine

from ..errors import InvariantViolation
from . import run_machine

__all__ = ["CHECKS", "CheckFailure", "expect_caught", "failure_id", "failure_ids", "hunt"]

CHECKS = frozenset(
    {
        "bytes",
        "fault",
        "errno",
        "undo",
        "release-order",
        "freed-while-mapped",
        "stale-tlb",
        "page-protect",
        "page-table",
        "attributes",
        "wiring",
        "counters",
        "leak",
    }
)


class CheckFailure(AssertionError):
    """A state machine's own comparison failed; ``check`` says which one."""

    def __init__(self, check: str, message: str) -> None:
        if check not in CHECKS:
            raise ValueError(f"unknown check {check!r}; known: {', '.join(sorted(CHECKS))}")
        self.check = check
        super().__init__(f"[{check}] {message}")


def hunt_settings(base: settings, max_examples: int, steps: int) -> settings:
    """Settings for proving an injected bug is found: ``base`` made
    deterministic, without shrinking, the database or blobs."""
    return settings(
        base,
        max_examples=max_examples,
        stateful_step_count=steps,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        database=None,
        report_multiple_bugs=False,
        print_blob=False,
    )


def failure_id(exc: BaseException) -> str | None:
    """ "TLB1", "I3" ... for an invariant violation, "bytes", "wiring" ... for
    a check failure, None for anything else (the harness tripped)."""
    if isinstance(exc, InvariantViolation):
        return exc.invariant
    if isinstance(exc, CheckFailure):
        return exc.check
    return None


def failure_ids(exc: BaseException) -> list[str | None]:
    """:func:`failure_id` of every failure in ``exc`` (an exception group
    holds several)."""
    if isinstance(exc, BaseExceptionGroup):
        return [i for e in exc.exceptions for i in failure_ids(e)]
    return [failure_id(exc)]


def hunt(
    machine: type[RuleBasedStateMachine],
    budget: settings,
    seed: int | None = None,
) -> BaseException | None:
    """Run ``machine`` once as a bug hunt; the failure it raised, or None.

    Without shrinking and with one failure reported, so that the failure
    returned is the first check that fired.  ``seed`` None: derandomized
    (hypothesis's fixed seed for the machine); otherwise that seed.
    """
    cls: type[RuleBasedStateMachine] = machine
    if seed is not None:
        cls = type(f"{machine.__name__}_seed{seed}", (machine,), {})
        hyp_seed(seed)(cls)
    run = settings(
        budget,
        derandomize=seed is None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        report_multiple_bugs=False,
        print_blob=False,
    )
    try:
        run_machine(cls, settings=run)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return exc
    return None


def expect_caught(
    machine: type[RuleBasedStateMachine],
    by: str | Iterable[str],
    budget: settings,
    seeds: Iterable[int | None] = (None,),
) -> list[BaseException]:
    """Hunt ``machine`` under each seed; each hunt must fail, and only
    through the checks ``by`` names (failure ids: "TLB1", "I3", "bytes",
    "release-order" ...).  Raises AssertionError naming the seed and what
    fired otherwise; returns the failures."""
    want = {by} if isinstance(by, str) else set(by)
    unknown = {w for w in want if w not in CHECKS and not _is_invariant(w)}
    if unknown:
        raise ValueError(f"expect_caught: unknown checks {sorted(unknown)}")
    found = []
    for seed in seeds:
        exc = hunt(machine, budget, seed)
        where = f"{machine.__name__} (seed {seed if seed is not None else 'derandomized'})"
        if exc is None:
            raise AssertionError(f"{where}: not found in {budget.max_examples} examples")
        ids = failure_ids(exc)
        if not ids or any(i not in want for i in ids):
            raise AssertionError(
                f"{where}: caught by {ids}, not by {sorted(want)}: {exc!r}"
            ) from exc
        found.append(exc)
    return found


def _is_invariant(name: str) -> bool:
    """An invariant id of uvmloan.invariants: I1..I20, TLB1, TLB2, PM1.., PA1.., MAP1."""
    return bool(re.fullmatch(r"(I|TLB|PM|PA|MAP)\d+", name))
