"""The VM state machine (uvmloan.testing.vm_machine) and proof that it can fail.

The default run takes well under a minute; ``UVMLOAN_HYPOTHESIS_PROFILE=deep``
runs it much longer.  The bug-injection tests break the model on purpose and
assert that hypothesis finds it, under five fixed seeds, through the check
named for the bug (``uvmloan.testing.failures``): an oracle that cannot fail
is worth nothing, and one that fails for another reason proves nothing.
Besides the copy-on-write and TLB bugs there are two wiring bugs (wiring
faults that never enter PMAP_WIRED mappings; a fork that shares a wired
entry's pages instead of copying them now).  More wiring tests, and
the truncate bug the machine found, are in ``test_vm_statemachine_wiring.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

import uvmloan.fault as fault_mod
import uvmloan.map as map_mod
import uvmloan.process as process_mod
from uvmloan.anon import Amap
from uvmloan.map import MapEntry, VMMap
from uvmloan.pmap.pmap import Pmap, PmapModule
from uvmloan.testing.failures import expect_caught, hunt
from uvmloan.testing.vm_machine import ANON_PRIVATE, PROTS, VMStateMachine, vm_settings

TestVMStateMachine = VMStateMachine.TestCase
TestVMStateMachine.settings = vm_settings()


# Every hunt: five fixed seeds at this budget, no shrinking; the first
# failure must come from the check named for the bug.
HUNT_BUDGET = vm_settings("default", max_examples=30)
SEEDS = (1, 2, 3, 4, 5)


def _hunt(machine: type[VMStateMachine], by: str | tuple[str, ...]) -> None:
    expect_caught(machine, by, HUNT_BUDGET, SEEDS)


def test_injected_amap_copy_sharing_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """amap_copy that keeps sharing the old amap: a write after fork leaks to the other side."""

    def share_instead_of_copy(self: VMMap, e: MapEntry) -> None:
        if e.amap is None:
            e.amap = Amap()
            e.amap.refs[e] = None
            e.slotoff = 0
        e.needs_copy = False

    monkeypatch.setattr(VMMap, "amap_copy", share_instead_of_copy)
    # A store that leaks to the other side (bytes), or -- when the page was
    # wired -- the fork rule's check that the child got its own copy (wiring).
    _hunt(VMStateMachine, ("bytes", "wiring"))


def test_injected_fork_without_write_protect_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvmspace_fork that forgets to write-protect the parent: its stores reach the child."""
    real_fork = getattr(process_mod, "uvmspace_fork")  # noqa: B009 - imported name
    real_protect = PmapModule.pmap_protect
    forking: list[bool] = []

    def protect(self: PmapModule, pmap: Pmap, sva: int, eva: int, prot: int) -> None:
        if not forking:
            real_protect(self, pmap, sva, eva, prot)

    def fork_no_protect(parent: VMMap, child: VMMap) -> None:
        forking.append(True)
        try:
            real_fork(parent, child)
        finally:
            forking.pop()

    monkeypatch.setattr(PmapModule, "pmap_protect", protect)
    monkeypatch.setattr(process_mod, "uvmspace_fork", fork_no_protect)
    # The fork rule checks the parent's PTEs on the spot (page-table); a
    # store that reaches the child shows in the bytes only later.
    _hunt(VMStateMachine, "page-table")


def test_injected_skip_pmap_update_is_found() -> None:
    """uvmloan.inject's skip-pmap-update: deferred shootdowns never complete."""

    class Broken(VMStateMachine):
        INJECT = "skip-pmap-update"

    _hunt(Broken, "TLB1")


def test_injected_wiring_fault_without_wire_mapping_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Wiring faults (and faults on wired entries) that never set wire_mapping:
    mlock wires the pages but enters plain PTEs, without PTE_WIRED."""
    real_check = fault_mod.uvm_fault_check

    def check_without_wire_mapping(flt: fault_mod.FaultCtx) -> int:
        err = real_check(flt)
        flt.wire_mapping = False
        return err

    monkeypatch.setattr(fault_mod, "uvm_fault_check", check_without_wire_mapping)
    _hunt(VMStateMachine, "wiring")


class WiredFork(VMStateMachine):
    """The VM machine plus one biased rule, ``wired_fork``: a single process
    maps a private page, writes it, mlocks it and forks, then the parent
    stores into it and the child reads it.  The unbiased machine reaches
    mlock-then-fork of a written private page too rarely for five seeds."""

    @precondition(lambda self: len(self.procs) == 1)
    @rule(data=st.data(), byte=st.integers(1, 255))
    def wired_fork(self, data: st.DataObject, byte: int) -> None:
        rp = self.procs[0]
        if len(rp.regions) >= self.MAX_REGIONS:
            return
        self._mmap(rp, ANON_PRIVATE, PROTS[0], 1, self.files[0], 0)
        va = rp.regions[-1][0]
        self._write_checked(rp, va, bytes([byte]) * 8, 0)
        assert self._expect_mlock(rp, [va]) is None
        rp.proc.mlock(va, self.ps)
        rp.pages[va].wired = True
        self.fork(data)
        child = self.procs[-1]
        self._write_checked(rp, va, bytes([byte ^ 0xFF]) * 8, 0)
        self._read_checked(child, va, 8, 1 % self.m.ncpus)


def test_injected_fork_without_cow_now_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvmspace_fork that skips amap_cow_now for a wired entry: parent and child
    share the wired pages, writable in the parent, so its stores reach the child.
    The fork rule's own wiring checks see it first (the child has no private
    copy).  Hunted with the biased rule of WiredFork."""
    monkeypatch.setattr(map_mod, "amap_cow_now", lambda m, e: None)
    _hunt(WiredFork, "wiring")


@pytest.mark.parametrize("machine", [VMStateMachine, WiredFork])
def test_state_machine_passes_at_the_hunt_budget(machine: type[VMStateMachine]) -> None:
    """The correct model survives a hunt's budget (examples and steps)."""
    exc = hunt(machine, HUNT_BUDGET, SEEDS[0])
    assert exc is None, repr(exc)
