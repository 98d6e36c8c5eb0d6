"""Wiring in the VM state machine: a regression hunt and a model bug it found.

* The fault on an already wired entry must enter a ``PMAP_WIRED`` mapping
  (``uvm_fault_check``: ``VM_MAPENT_ISWIRED(entry)`` sets ``wire_mapping``).
  The first version of ``fault.py`` did not (specs/fault.md section 6); the
  state machine finds that bug when it is put back (five seeds, with the
  biased rule of ``WiredRefault`` that reaches the refault).
* Truncating a file below pages that a shared mapping has wired: NetBSD
  frees them (``genfs_do_putpages`` with ``PGO_FREE`` calls
  ``pmap_page_protect(pg, VM_PROT_NONE)`` and ``uvm_pagefree`` on every page
  in the range, wired or not -- only ``PGO_DEACTIVATE`` tests
  ``wire_count`` -- and ``uvm_pagefree`` says "if the page was wired, unwire
  it now").  The model's ``pgo_put`` used to skip wired pages, so they stayed
  cached and mapped past end of file; the state machine found it, and the
  two tests below now hold the fix in place.
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

import uvmloan.fault as fault_mod
from uvmloan.errors import SegmentationFault
from uvmloan.invariants import check_invariants
from uvmloan.machine import Machine
from uvmloan.param import MAP_SHARED, VM_PROT_READ, VM_PROT_WRITE
from uvmloan.testing import run_machine
from uvmloan.testing.failures import expect_caught, hunt
from uvmloan.testing.vm_machine import ANON_PRIVATE, PROTS, VMStateMachine, vm_settings

PS = 4096


# A hunt: five fixed seeds at this budget, caught by the wiring check.
HUNT_BUDGET = vm_settings("default", max_examples=30)
SEEDS = (1, 2, 3, 4, 5)


def test_injected_fault_on_wired_entry_without_wire_mapping_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the mlock fault itself (UVM_FAULT_WIRE) enters PMAP_WIRED; a
    later fault on the wired entry (after mprotect PROT_NONE and back, say)
    enters a plain PTE.  The state machine's wiring invariant must notice.
    (Since uvm_fault_check sets wire_paging too for a wired entry, uvm_fault.c
    1.224/1.226, the injected bug now clears both, keyed on fault_wire.)"""
    real_check = fault_mod.uvm_fault_check

    def check(flt: fault_mod.FaultCtx) -> int:
        err = real_check(flt)
        if not flt.fault_wire:
            flt.wire_mapping = False
            flt.wire_paging = False
        return err

    monkeypatch.setattr(fault_mod, "uvm_fault_check", check)
    expect_caught(WiredRefault, "wiring", HUNT_BUDGET, SEEDS)


class WiredRefault(VMStateMachine):
    """The VM machine plus one biased rule, ``wired_refault``: map a private
    page, write it, mlock it, mprotect it PROT_NONE and back, and store into
    it again -- the fault on a wired entry that the hunt is about."""

    @precondition(lambda self: bool(self.procs))
    @rule(byte=st.integers(1, 255), cpu=st.integers(0, 7))
    def wired_refault(self, byte: int, cpu: int) -> None:
        rp = self.procs[0]
        if len(rp.regions) >= self.MAX_REGIONS:
            return
        c = cpu % self.m.ncpus
        self._mmap(rp, ANON_PRIVATE, PROTS[0], 1, self.files[0], 0)
        va = rp.regions[-1][0]
        self._write_checked(rp, va, bytes([byte]) * 8, c)
        rp.proc.mlock(va, self.ps)
        rp.pages[va].wired = True
        for prot in (PROTS[2], PROTS[0]):
            rp.proc.mprotect(va, self.ps, prot)
            rp.pages[va].prot = prot
        self._write_checked(rp, va, bytes([byte ^ 0xFF]) * 8, c)


@pytest.mark.parametrize("machine", [VMStateMachine, WiredRefault])
def test_state_machine_passes_at_the_hunt_budget(machine: type[VMStateMachine]) -> None:
    exc = hunt(machine, HUNT_BUDGET, SEEDS[0])
    assert exc is None, repr(exc)


def test_truncate_frees_pages_wired_through_a_shared_mapping() -> None:
    m = Machine(ncpus=1, memory="1M", page_size=PS)
    try:
        vn = m.vnode(b"A" * 2 * PS, name="f")
        p = m.spawn("p")
        va = p.mmap(2 * PS, prot=VM_PROT_READ | VM_PROT_WRITE, flags=MAP_SHARED, obj=vn)
        p.mlock(va, 2 * PS)
        with m.on_cpu(0):
            vn.truncate(0)
        check_invariants(m)
        # genfs_do_putpages(PGO_FREE): every page past the new EOF is unmapped
        # and freed, wired or not.
        assert not vn.uo_pages, f"truncate(0) left {list(vn.uo_pages.values())}"
        assert not p.pmap.ptes, "truncate(0) left PTEs of the freed pages"
        for off in (0, PS):
            with pytest.raises(SegmentationFault):
                p.read(va + off, 1)
        # Growing the file again must not bring the old bytes back.
        with m.on_cpu(0):
            vn.write(2 * PS, b"x")
        assert vn.read(0, 2 * PS) == bytes(2 * PS)
        assert p.read(va, 4) == bytes(4)
        p.munlock(va, 2 * PS)
        p.exit()
        check_invariants(m)
        assert not [pg for pg in m.uvm.pages.values() if pg.wire_count]
    finally:
        m.close()


class TruncatingWiredPages(VMStateMachine):
    """The state machine with truncates below wired shared pages allowed."""

    TRUNCATE_WIRED = True


def test_state_machine_truncating_wired_pages_passes() -> None:
    """Truncates below wired shared pages free them; every byte and fault
    still matches the reference."""
    run_machine(
        TruncatingWiredPages,
        settings=vm_settings("default", derandomize=True, database=None, print_blob=False),
    )
