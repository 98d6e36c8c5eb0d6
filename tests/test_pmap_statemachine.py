"""Runs the shipped pmap state machine (uvmloan.testing.pmap_machine) and
proves it can fail: with a bug injected into the model, hypothesis must find
an invariant violation or wrong bytes.

The settings profile is "ci" unless ``UVMLOAN_HYPOTHESIS_PROFILE=deep``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings

from uvmloan import VM_PROT_READ, Machine
from uvmloan.testing import run_machine
from uvmloan.testing.pmap_machine import (
    PROFILE_ENV,
    PmapStateMachine,
    hypothesis_settings,
    pmap_state_snapshot,
)

# The x86 policy; the MI ASID run (pool small enough to wrap) is in
# test_sm_hooks.py.
TestPmapStateMachine = PmapStateMachine.TestCase
TestPmapStateMachine.settings = hypothesis_settings()


# --- bug injection ------------------------------------------------------------


class SkipUpdate(PmapStateMachine):
    """pmap_update does nothing: deferred shootdowns never happen."""

    INJECT = ("skip-pmap-update",)


class SkipUpdateMI(SkipUpdate):
    PROFILE_OVERRIDES: ClassVar[dict[str, Any]] = {"tlb_policy": "mi-asid"}


class SyncPvForgetsShootdown(PmapStateMachine):
    """pmap_sync_pv (pmap_page_protect, pmap_clear_*) changes PTEs but queues
    no TLB shootdown: a loan's write-protect would not be global."""

    INJECT = ("sync-pv-no-shootdown",)


def _hunt(machine: type[PmapStateMachine], examples: int) -> BaseException:
    """Run ``machine`` until hypothesis reports a failure; return it.

    Deterministic (derandomized) and without shrinking: the test only needs
    to know that a failure is found, not the smallest one.
    """
    hunt = settings(
        max_examples=examples,
        stateful_step_count=30,
        derandomize=True,
        database=None,
        deadline=None,
        report_multiple_bugs=False,
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )
    with pytest.raises(AssertionError) as info:
        run_machine(machine, settings=hunt)
    return info.value


@pytest.mark.parametrize("machine", [SkipUpdate, SkipUpdateMI])
def test_skip_pmap_update_is_found(machine: type[PmapStateMachine]) -> None:
    err = _hunt(machine, 300)
    # The barrier was believed reached, yet a shootdown is still queued (TLB1)
    # or a CPU used a stale entry.
    assert "TLB1" in str(err) or "stale" in str(err), err


def test_sync_pv_without_shootdown_is_found() -> None:
    err = _hunt(SyncPvForgetsShootdown, 300)
    msg = str(err)
    assert "pmap_page_protect" in msg or "TLB1" in msg or "stale" in msg, err


def test_injection_switches_are_off_by_default() -> None:
    with Machine(ncpus=1, memory="256k") as m:
        assert not m.pmap.inject_skip_update
        assert not m.pmap.inject_sync_pv_no_shootdown


# --- the helpers the module exports ---------------------------------------------


def test_settings_profiles() -> None:
    ci = hypothesis_settings("ci")
    deep = hypothesis_settings("deep")
    assert ci.max_examples < deep.max_examples
    assert ci.stateful_step_count <= deep.stateful_step_count
    expected = os.environ.get(PROFILE_ENV) or "ci"
    assert hypothesis_settings().max_examples == hypothesis_settings(expected).max_examples


def test_snapshot_sees_a_pmap_change() -> None:
    with Machine(ncpus=2, memory="256k", trace="record") as m:
        pm = m.pmap.pmap_create("p")
        pg = m.uvm.uvm_pagealloc(None, 0, None, 0)
        assert pg is not None
        before = pmap_state_snapshot(m)
        assert pmap_state_snapshot(m) == before
        m.pmap.pmap_enter(pm, 0x10000, pg.pa, VM_PROT_READ, 0)
        assert pmap_state_snapshot(m) != before
