"""Runs the shipped pmap state machine (uvmloan.testing.pmap_machine) and
proves it can fail: with a bug injected into the model, hypothesis must find
an invariant violation or wrong bytes.

The settings profile is "ci" unless ``UVMLOAN_HYPOTHESIS_PROFILE=deep``.
"""

from __future__ import annotations

import inspect
import os
import textwrap
from typing import Any, ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

import uvmloan.pmap.pmap as pmap_mod
from uvmloan import VM_PROT_READ, Machine
from uvmloan.mmu import MMU
from uvmloan.pmap.cpu import CPU
from uvmloan.pmap.pmap import PmapModule
from uvmloan.testing.failures import expect_caught, hunt
from uvmloan.testing.pmap_machine import (
    PROFILE_ENV,
    PmapStateMachine,
    R,
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


# Every hunt: five fixed seeds at this budget (the pmap-ci steps), no
# shrinking; the first failure must come from the checks named for the bug.
HUNT_BUDGET = settings(hypothesis_settings("ci"), max_examples=100)
SEEDS = (1, 2, 3, 4, 5)


@pytest.mark.parametrize("machine", [SkipUpdate, SkipUpdateMI])
def test_skip_pmap_update_is_found(machine: type[PmapStateMachine]) -> None:
    """The barrier is believed reached, yet a shootdown is still queued or a
    CPU caches what its PTE no longer grants: TLB1 at the barrier, or an
    access through the stale entry (stale-tlb)."""
    expect_caught(machine, ("TLB1", "stale-tlb"), HUNT_BUDGET, SEEDS)


def test_sync_pv_without_shootdown_is_found() -> None:
    """pmap_page_protect returns with a covered mapping still writable in a
    TLB: its synchronous check (page-protect), TLB1 at the next barrier, or
    a stale access."""
    expect_caught(SyncPvForgetsShootdown, ("page-protect", "TLB1", "stale-tlb"), HUNT_BUDGET, SEEDS)


def _inverted_d_bit_protect() -> Any:
    """pmap_protect with pmap_write_protect's D-bit rule inverted: the
    shootdown is queued for clean PTEs and skipped for dirty ones (whose
    cached writable entries then survive the write-protect)."""
    src = textwrap.dedent(inspect.getsource(PmapModule.pmap_protect))
    needle = "if opte & PTE_D:\n"
    assert src.count(needle) == 1, "pmap_protect's D-bit test moved: update the mutation"
    ns: dict[str, Any] = {}
    exec(
        compile(src.replace(needle, "if not opte & PTE_D:\n"), "<mutant>", "exec"),
        vars(pmap_mod),
        ns,
    )
    return ns["pmap_protect"]


class ProtectAfterDirtyWrite(PmapStateMachine):
    """The pmap machine plus one biased rule, ``dirty_then_protect``: a
    user store through a fresh writable mapping on one CPU (its TLB caches
    the entry with D set), pmap_protect of that mapping to read-only, and
    the barrier.  The unbiased machine reaches a dirty cached entry being
    write-protected under some seeds only."""

    @rule(cpu=st.integers(0, 15), vi=st.integers(0, 15), pgi=st.integers(0, 15))
    def dirty_then_protect(self, cpu: int, vi: int, pgi: int) -> None:
        m = self.machine
        c = m.cpu(cpu % m.ncpus)
        self.fault_in(c.index, vi, pgi, True, 0, b"\x01")
        pm = c.curpmap
        assert pm is not None
        self.protect(c.index, self.pmaps.index(pm), vi % len(self.uvas), 1, R)
        self.update_all(c.index)


def test_inverted_d_bit_rule_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """The write-protect shootdown rule inverted (pmap.c 1.381
    pmap_write_protect tests the old D bit): found under five seeds, by TLB1
    at the barrier (a CPU can still write through a W|D entry) or a stale
    access, with the biased rule of ProtectAfterDirtyWrite."""
    monkeypatch.setattr(PmapModule, "pmap_protect", _inverted_d_bit_protect())
    expect_caught(ProtectAfterDirtyWrite, ("TLB1", "stale-tlb"), HUNT_BUDGET, SEEDS)


@pytest.mark.parametrize("machine", [PmapStateMachine, ProtectAfterDirtyWrite])
def test_state_machine_passes_at_the_hunt_budget(machine: type[PmapStateMachine]) -> None:
    exc = hunt(machine, HUNT_BUDGET, SEEDS[0])
    assert exc is None, repr(exc)


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


def test_a_tlb_that_never_hits_is_found_by_the_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model bug that changes no byte at the barrier: TLB lookups always
    miss, so every access walks.  Only the MMU statistics against the
    hardware rules' prediction can see it (counters); the old check, counters
    against counters_from(trace), held by construction.  (The MMU looks its
    TLB's dict up inline, so the bug is injected at the accesses: the entry
    for the accessed page is hidden from the MMU, as a lookup that always
    misses would; the walk then caches it again, as before.)"""
    real_load, real_store = MMU.load, MMU.store

    def miss(mmu: MMU, cpu: CPU, va: int) -> None:
        pm = mmu.pmap_module.kernel if va >= mmu._kernel_min else cpu.curpmap
        if pm is not None:
            asid = 0 if mmu._x86 or pm.is_kernel else cpu.asids.get(pm)
            if asid is not None:
                cpu.tlb.entries.pop((asid, va >> mmu._shift), None)

    def load(mmu: MMU, cpu: CPU, va: int, n: int, user: bool = True) -> bytes:
        miss(mmu, cpu, va)
        return real_load(mmu, cpu, va, n, user)

    def store(mmu: MMU, cpu: CPU, va: int, data: bytes, user: bool = True) -> None:
        miss(mmu, cpu, va)
        real_store(mmu, cpu, va, data, user)

    monkeypatch.setattr(MMU, "load", load)
    monkeypatch.setattr(MMU, "store", store)
    expect_caught(PmapStateMachine, "counters", HUNT_BUDGET, SEEDS)
