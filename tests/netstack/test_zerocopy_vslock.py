"""uvm_vslock / uvm_vsunlock_pages: the pin under linux-zerocopy."""

from __future__ import annotations

import pytest

from uvmloan import Machine
from uvmloan.errors import UVMError
from uvmloan.param import EFAULT
from uvmloan.testing.loan_ops import page_at
from uvmloan.vslock import uvm_vslock, uvm_vsunlock_pages

PS = 4096


def test_wires_each_page_once_and_faults_in_the_missing() -> None:
    m = Machine(memory="4M")
    p = m.spawn("p")
    va = p.mmap(3 * PS)
    p.write(va, b"a")  # page 0 resident, pages 1 and 2 not yet
    pgs = uvm_vslock(p.map, va + 100, 2 * PS)
    # bytes 100 .. 8291 touch pages 0, 1 and 2
    assert [pg.wire_count for pg in pgs] == [1, 1, 1]
    assert pgs == [page_at(p, va + i * PS) for i in range(3)]
    uvm_vsunlock_pages(pgs)
    assert [pg.wire_count for pg in pgs] == [0, 0, 0]


def test_a_hole_unwires_what_was_wired() -> None:
    m = Machine(memory="4M")
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.munmap(va + PS, PS)
    p.write(va, b"a")
    with pytest.raises(UVMError) as ei:
        uvm_vslock(p.map, va, 2 * PS)
    assert ei.value.errno == EFAULT
    pg = page_at(p, va)
    assert pg is not None and pg.wire_count == 0


def test_arguments_are_validated() -> None:
    m = Machine(memory="4M")
    p = m.spawn("p")
    va = p.mmap(PS)
    with pytest.raises(TypeError):
        uvm_vslock("map", va, PS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        uvm_vslock(p.map, va, 0)
    with pytest.raises(UVMError):
        uvm_vslock(p.map, 0, PS)
