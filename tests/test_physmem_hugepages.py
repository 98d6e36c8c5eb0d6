"""The arena asks the host for transparent huge pages (both backends).

A hint, not semantics: with it the host takes one fault per 2 MiB of the
arena the model first touches instead of one per 4 KiB, which was about a
fifth of a zero-fill ``uvm_fault`` (BENCHMARKS.md, model section).  The test
reads the arena's mapping flags from /proc/self/smaps ("hg": MADV_HUGEPAGE
was applied), so dropping the madvise call from pm_create or from the twin's
Arena fails it.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from pathlib import Path

import pytest

from uvmloan.physmem import PhysMem

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or not hasattr(mmap, "MADV_HUGEPAGE")
    or not Path("/sys/kernel/mm/transparent_hugepage/enabled").exists(),
    reason="transparent huge pages are a Linux feature this kernel does not offer",
)


def _base_address(pm: PhysMem) -> int:
    if pm._c:
        return int(pm._ffi.cast("uintptr_t", pm._lib.pm_base(pm._h)))
    view = pm._lib.pm_base(pm._h)
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def _vmflags(addr: int) -> list[str]:
    """The VmFlags of the mapping of this process that holds ``addr``."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0] if line else ""
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {addr:#x}")


def test_the_arena_is_advised_for_huge_pages() -> None:
    with PhysMem(1024, 4096) as pm:
        flags = _vmflags(_base_address(pm))
        assert "hg" in flags, f"arena mapping flags {flags}: no MADV_HUGEPAGE"
        # the hint changes nothing the model sees: fresh frames read as zeros
        pm.copyin([3], 0, b"x")
        assert pm.copyout([3], 0, 1) == b"x"
        assert pm.copyout([5], 0, 16) == bytes(16)
