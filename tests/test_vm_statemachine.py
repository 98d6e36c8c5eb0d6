"""The VM state machine (uvmloan.testing.vm_machine) and proof that it can fail.

The default run takes well under a minute; ``UVMLOAN_HYPOTHESIS_PROFILE=deep``
runs it much longer.  The bug-injection tests break the model on purpose and
assert that hypothesis finds a failure: an oracle that cannot fail is worth
nothing.  Besides the copy-on-write and TLB bugs there are two wiring bugs
(wiring faults that never enter PMAP_WIRED mappings; a fork that shares a
wired entry's pages instead of copying them now).  More wiring tests, and
the truncate bug the machine found, are in ``test_vm_statemachine_wiring.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import Phase

import uvmloan.fault as fault_mod
import uvmloan.map as map_mod
import uvmloan.process as process_mod
from uvmloan.anon import Amap
from uvmloan.map import MapEntry, VMMap
from uvmloan.pmap.pmap import Pmap, PmapModule
from uvmloan.testing import run_machine
from uvmloan.testing.vm_machine import VMStateMachine, vm_settings

TestVMStateMachine = VMStateMachine.TestCase
TestVMStateMachine.settings = vm_settings()


def _found(exc: BaseException) -> bool:
    """Is this a failure of the model (not of the test harness)?"""
    if isinstance(exc, BaseExceptionGroup):
        return all(_found(e) for e in exc.exceptions)
    return isinstance(exc, AssertionError)


def _messages(exc: BaseException) -> str:
    """The messages of a failure (of every failure in a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join(_messages(e) for e in exc.exceptions)
    return str(exc)


def _hunt(machine: type[VMStateMachine]) -> BaseException:
    """Run ``machine`` until hypothesis finds a failure (no shrinking)."""
    with pytest.raises(BaseException) as info:
        run_machine(
            machine,
            settings=vm_settings(
                "default",
                max_examples=300,
                derandomize=True,
                database=None,
                phases=(Phase.explicit, Phase.generate),
                print_blob=False,
            ),
        )
    assert _found(info.value), f"the harness itself failed: {info.value!r}"
    return info.value


def test_injected_amap_copy_sharing_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """amap_copy that keeps sharing the old amap: a write after fork leaks to the other side."""

    def share_instead_of_copy(self: VMMap, e: MapEntry) -> None:
        if e.amap is None:
            e.amap = Amap()
            e.amap.refs[e] = None
            e.slotoff = 0
        e.needs_copy = False

    monkeypatch.setattr(VMMap, "amap_copy", share_instead_of_copy)
    _hunt(VMStateMachine)


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
    _hunt(VMStateMachine)


def test_injected_skip_pmap_update_is_found() -> None:
    """uvmloan.inject's skip-pmap-update: deferred shootdowns never complete."""

    class Broken(VMStateMachine):
        INJECT = "skip-pmap-update"

    _hunt(Broken)


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
    msg = _messages(_hunt(VMStateMachine))
    assert "PTE_WIRED" in msg or "is wired but its PTE" in msg, msg


def test_injected_fork_without_cow_now_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvmspace_fork that skips amap_cow_now for a wired entry: parent and child
    share the wired pages, writable in the parent, so its stores reach the child."""
    monkeypatch.setattr(map_mod, "amap_cow_now", lambda m, e: None)
    msg = _messages(_hunt(VMStateMachine))
    assert "wired" in msg or "the reference says" in msg, msg


def test_state_machine_passes_without_injection() -> None:
    """The same bounded run as the hunts, on the correct model, finds nothing."""
    run_machine(
        VMStateMachine,
        settings=vm_settings("default", max_examples=40, derandomize=True, database=None),
    )
