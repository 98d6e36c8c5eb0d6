"""Bad input to the pmap and the MMU: every refused call raises a clear
exception that names the offending argument and leaves the machine exactly
as it was (page tables, pv lists, TLBs, packets, clocks, counters, trace).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import PS, RW, UVA, R, user_pmap, zeroed_page

from uvmloan import (
    KernelAssertion,
    Machine,
    SegmentationFault,
)
from uvmloan.invariants import check_invariants
from uvmloan.pmap import Pmap
from uvmloan.testing.pmap_machine import pmap_state_snapshot


class Rig:
    """A 3-CPU machine with some state worth protecting: managed user
    mappings cached by CPU 1, a kenter mapping cached by CPU 2, and a
    shootdown already queued on CPU 0."""

    def __init__(self) -> None:
        m = Machine(ncpus=3, memory="1M", trace="record")
        m.platform.fault_handler = None
        self.m = m
        # Untyped handles: the cases below pass arguments of the wrong type on purpose.
        self.mach: Any = m
        self.pmm: Any = m.pmap
        self.mmu: Any = m.mmu
        self.pm = user_pmap(m, (0, 1, 2))
        self.pages = [zeroed_page(m) for _ in range(3)]
        self.kva = m.profile.vm_min_kernel_address + 0x100000
        with m.on_cpu(0):
            for i, pg in enumerate(self.pages[:2]):
                m.pmap.pmap_enter(self.pm, UVA + i * PS, pg.pa, RW, 0)
            m.pmap.pmap_kenter_pa(self.kva, self.pages[2].pa, R, 0)
            m.pmap.pmap_enter(m.pmap_kernel(), self.kva + PS, self.pages[2].pa, RW, 0)
            m.pmap.pmap_update(self.pm)
        m.mmu.store(m.cpu(1), UVA, b"one")
        m.mmu.load(m.cpu(1), UVA + PS, 1)
        m.mmu.load(m.cpu(2), self.kva, 1, user=False)
        with m.on_cpu(0):
            m.pmap.pmap_remove(self.pm, UVA + PS, UVA + 2 * PS)  # queued, not updated


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.m.close()


Call = Callable[[Rig], object]

# (id, call, exception type, regex the message must match)
CASES: list[tuple[str, Call, type[BaseException], str]] = [
    # --- pmap_enter
    (
        "enter unaligned va",
        lambda r: r.pmm.pmap_enter(r.pm, UVA + 1, r.pages[0].pa, R),
        ValueError,
        r"\bva\b.*not page aligned",
    ),
    (
        "enter va below user space",
        lambda r: r.pmm.pmap_enter(r.pm, 0, r.pages[0].pa, R),
        ValueError,
        r"\bva\b.*outside pmap p",
    ),
    (
        "enter kernel va in user pmap",
        lambda r: r.pmm.pmap_enter(r.pm, r.kva, r.pages[0].pa, R),
        ValueError,
        r"\bva\b.*outside",
    ),
    (
        "enter user va in kernel pmap",
        lambda r: r.pmm.pmap_enter(r.m.pmap_kernel(), UVA, r.pages[0].pa, R),
        ValueError,
        r"\bva\b.*outside pmap kernel",
    ),
    (
        "enter va str",
        lambda r: r.pmm.pmap_enter(r.pm, "0x10000", r.pages[0].pa, R),
        TypeError,
        r"\bva\b.*int",
    ),
    (
        "enter va float",
        lambda r: r.pmm.pmap_enter(r.pm, float(UVA), r.pages[0].pa, R),
        TypeError,
        r"\bva\b",
    ),
    (
        "enter va bool",
        lambda r: r.pmm.pmap_enter(r.pm, True, r.pages[0].pa, R),
        TypeError,
        r"\bva\b",
    ),
    (
        "enter pa unaligned",
        lambda r: r.pmm.pmap_enter(r.pm, UVA, r.pages[0].pa + 8, R),
        ValueError,
        r"\bpa\b.*not page aligned",
    ),
    (
        "enter pa outside memory",
        lambda r: r.pmm.pmap_enter(r.pm, UVA, 1 << 40, R),
        ValueError,
        r"\bpa\b.*outside physical memory",
    ),
    (
        "enter pa negative",
        lambda r: r.pmm.pmap_enter(r.pm, UVA, -PS, R),
        ValueError,
        r"\bpa\b.*outside",
    ),
    ("enter pa str", lambda r: r.pmm.pmap_enter(r.pm, UVA, "0", R), TypeError, r"\bpa\b"),
    (
        "enter bad prot bits",
        lambda r: r.pmm.pmap_enter(r.pm, UVA, r.pages[0].pa, 0x8),
        ValueError,
        r"\bprot\b.*VM_PROT",
    ),
    (
        "enter prot str",
        lambda r: r.pmm.pmap_enter(r.pm, UVA, r.pages[0].pa, "rw"),
        TypeError,
        r"\bprot\b",
    ),
    (
        "enter prot float",
        lambda r: r.pmm.pmap_enter(r.pm, UVA, r.pages[0].pa, 1.0),
        TypeError,
        r"\bprot\b",
    ),
    (
        "enter flags str",
        lambda r: r.pmm.pmap_enter(r.pm, UVA, r.pages[0].pa, R, "wired"),
        TypeError,
        r"\bflags\b",
    ),
    (
        "enter access above prot",
        lambda r: r.pmm.pmap_enter(r.pm, UVA, r.pages[0].pa, R, int(RW)),
        ValueError,
        r"access type",
    ),
    (
        "enter pmap not a pmap",
        lambda r: r.pmm.pmap_enter("p", UVA, r.pages[0].pa, R),
        TypeError,
        r"\bpmap\b",
    ),
    (
        "enter pmap of another machine",
        lambda r: r.pmm.pmap_enter(_foreign_pmap(), UVA, r.pages[0].pa, R),
        ValueError,
        r"another machine",
    ),
    # --- pmap_remove / pmap_protect
    (
        "remove unaligned sva",
        lambda r: r.pmm.pmap_remove(r.pm, UVA + 1, UVA + PS),
        ValueError,
        r"\bsva\b",
    ),
    (
        "remove unaligned eva",
        lambda r: r.pmm.pmap_remove(r.pm, UVA, UVA + 5),
        ValueError,
        r"\beva\b",
    ),
    (
        "remove eva below sva",
        lambda r: r.pmm.pmap_remove(r.pm, UVA + PS, UVA),
        ValueError,
        r"bad range",
    ),
    (
        "remove past the pmap",
        lambda r: r.pmm.pmap_remove(r.pm, UVA, r.kva),
        ValueError,
        r"bad range",
    ),
    ("remove eva str", lambda r: r.pmm.pmap_remove(r.pm, UVA, "end"), TypeError, r"\beva\b"),
    (
        "protect bad prot",
        lambda r: r.pmm.pmap_protect(r.pm, UVA, UVA + PS, 0x10),
        ValueError,
        r"\bprot\b",
    ),
    (
        "protect prot str",
        lambda r: r.pmm.pmap_protect(r.pm, UVA, UVA + PS, "r"),
        TypeError,
        r"\bprot\b",
    ),
    (
        "protect sva outside",
        lambda r: r.pmm.pmap_protect(r.pm, r.kva, r.kva + PS, R),
        ValueError,
        r"\bsva\b.*outside",
    ),
    # --- pmap_page_protect / attributes
    (
        "page_protect bad prot",
        lambda r: r.pmm.pmap_page_protect(r.pages[0], 0x40),
        ValueError,
        r"\bprot\b",
    ),
    ("page_protect not a page", lambda r: r.pmm.pmap_page_protect(5, R), TypeError, r"\bpg\b"),
    (
        "is_modified not a page",
        lambda r: r.pmm.pmap_is_modified(r.pages[0].frame),
        TypeError,
        r"\bpg\b",
    ),
    (
        "clear_reference not a page",
        lambda r: r.pmm.pmap_clear_reference(None),
        TypeError,
        r"\bpg\b",
    ),
    # --- pmap_kenter_pa / pmap_kremove
    (
        "kenter over a valid mapping",
        lambda r: r.pmm.pmap_kenter_pa(r.kva, r.pages[0].pa, R, 0),
        KernelAssertion,
        r"already maps",
    ),
    (
        "kenter over a managed kernel mapping",
        lambda r: r.pmm.pmap_kenter_pa(r.kva + PS, r.pages[0].pa, R, 0),
        KernelAssertion,
        r"already maps",
    ),
    (
        "kenter user va",
        lambda r: r.pmm.pmap_kenter_pa(UVA, r.pages[0].pa, R, 0),
        ValueError,
        r"\bva\b.*outside pmap kernel",
    ),
    (
        "kenter unaligned va",
        lambda r: r.pmm.pmap_kenter_pa(r.kva + 2 * PS + 1, r.pages[0].pa, R, 0),
        ValueError,
        r"\bva\b.*aligned",
    ),
    (
        "kenter pa outside",
        lambda r: r.pmm.pmap_kenter_pa(r.kva + 2 * PS, 1 << 40, R, 0),
        ValueError,
        r"\bpa\b",
    ),
    (
        "kenter bad prot",
        lambda r: r.pmm.pmap_kenter_pa(r.kva + 2 * PS, r.pages[0].pa, 9, 0),
        ValueError,
        r"\bprot\b",
    ),
    (
        "kenter flags str",
        lambda r: r.pmm.pmap_kenter_pa(r.kva + 2 * PS, r.pages[0].pa, R, "x"),
        TypeError,
        r"\bflags\b",
    ),
    (
        "kremove user range",
        lambda r: r.pmm.pmap_kremove(UVA, PS),
        ValueError,
        r"\bva\b.*outside pmap kernel",
    ),
    (
        "kremove managed mapping",
        lambda r: r.pmm.pmap_kremove(r.kva, 2 * PS),
        KernelAssertion,
        r"managed mapping",
    ),
    (
        "kremove size not a page multiple",
        lambda r: r.pmm.pmap_kremove(r.kva, 100),
        ValueError,
        r"\bsize\b",
    ),
    ("kremove negative size", lambda r: r.pmm.pmap_kremove(r.kva, -PS), ValueError, r"\bsize\b"),
    (
        "kremove past kernel space",
        lambda r: r.pmm.pmap_kremove(r.m.profile.vm_max_kernel_address - PS, 4 * PS),
        ValueError,
        r"kernel space",
    ),
    ("kremove va str", lambda r: r.pmm.pmap_kremove("k", PS), TypeError, r"\bva\b"),
    # --- pmap_update / extract / lifecycle
    ("update not a pmap", lambda r: r.pmm.pmap_update("p"), TypeError, r"\bpmap\b"),
    ("extract va str", lambda r: r.pmm.pmap_extract(r.pm, "x"), TypeError, r"\bva\b"),
    ("create name int", lambda r: r.pmm.pmap_create(7), TypeError, r"\bname\b"),
    ("destroy with mappings", lambda r: r.pmm.pmap_destroy(r.pm), KernelAssertion, r"mappings"),
    (
        "destroy kernel pmap",
        lambda r: r.pmm.pmap_destroy(r.m.pmap_kernel()),
        KernelAssertion,
        r"kernel pmap",
    ),
    # --- CPUs
    ("unknown cpu index", lambda r: r.m.cpu(3), ValueError, r"unknown CPU 3"),
    ("negative cpu index", lambda r: r.m.cpu(-1), ValueError, r"unknown CPU -1"),
    ("cpu index str", lambda r: r.mach.cpu("0"), TypeError, r"\bcpu\b"),
    ("on_cpu unknown", lambda r: r.m.on_cpu(9).__enter__(), ValueError, r"unknown CPU 9"),
    ("activate cpu as int", lambda r: r.pmm.pmap_activate(r.pm, 1), TypeError, r"\bcpu\b"),
    (
        "activate kernel pmap",
        lambda r: r.pmm.pmap_activate(r.m.pmap_kernel(), r.m.cpu(0)),
        ValueError,
        r"kernel pmap",
    ),
    (
        "activate foreign cpu",
        lambda r: r.pmm.pmap_activate(r.pm, _foreign_cpu()),
        ValueError,
        r"another machine",
    ),
    ("deactivate cpu as int", lambda r: r.pmm.pmap_deactivate(2), TypeError, r"\bcpu\b"),
    ("unload cpu as str", lambda r: r.pmm.pmap_unload("cpu0"), TypeError, r"\bcpu\b"),
    # --- the MMU
    ("load negative length", lambda r: r.mmu.load(r.m.cpu(1), UVA, -1), ValueError, r"length"),
    ("load length str", lambda r: r.mmu.load(r.m.cpu(1), UVA, "4"), TypeError, r"length"),
    ("load va str", lambda r: r.mmu.load(r.m.cpu(1), "va", 4), TypeError, r"\bva\b"),
    ("load cpu as int", lambda r: r.mmu.load(1, UVA, 4), TypeError, r"\bcpu\b"),
    ("store data str", lambda r: r.mmu.store(r.m.cpu(1), UVA, "text"), TypeError, r"\bdata\b"),
    (
        "user store to a read-only page",
        lambda r: r.mmu.store(r.m.cpu(2), r.kva, b"x"),
        SegmentationFault,
        r"write at",
    ),
    (
        "user load of kernel memory",
        lambda r: r.mmu.load(r.m.cpu(2), r.kva, 1),
        SegmentationFault,
        r"read at",
    ),
    (
        "kernel store to a read-only mapping",
        lambda r: r.mmu.store(r.m.cpu(2), r.kva, b"x", user=False),
        KernelAssertion,
        r"read-only kernel mapping",
    ),
    (
        "load beyond user space",
        lambda r: r.mmu.load(r.m.cpu(1), r.m.profile.vm_maxuser_address, 1),
        SegmentationFault,
        r"outside user and kernel",
    ),
]


_foreign: list[Machine] = []


def _foreign_machine() -> Machine:
    if not _foreign:
        _foreign.append(Machine(ncpus=1, memory="64k"))
    return _foreign[0]


def _foreign_pmap() -> Pmap:
    return _foreign_machine().pmap.pmap_create("foreign")


def _foreign_cpu() -> Any:
    return _foreign_machine().cpu(0)


@pytest.mark.parametrize(
    ("call", "exc", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_and_changes_nothing(
    rig: Rig, call: Call, exc: type[BaseException], pattern: str
) -> None:
    before = pmap_state_snapshot(rig.m)
    clocks = [c.clock for c in rig.m.cpus]
    with pytest.raises(exc, match=pattern):
        call(rig)
    after = pmap_state_snapshot(rig.m)
    # A faulting access is an attempt the hardware makes: it costs time, may
    # drop the faulting TLB entry (SDM 4.10.4.1) and records a fault event.
    # Everything else must be exactly as it was.
    if exc is SegmentationFault or (exc is KernelAssertion and "mmu" in _source(call)):
        for key in ("pmaps", "pages", "free"):
            assert after[key] == before[key], key
    else:
        assert after == before
        assert [c.clock for c in rig.m.cpus] == clocks
    # The queued shootdown is still owed: complete it, then the model is sane.
    with rig.m.on_cpu(0):
        rig.m.pmap.pmap_update(rig.pm)
    check_invariants(rig.m)


def _source(call: Call) -> str:
    code = getattr(call, "__code__", None)
    return " ".join(code.co_names) if code is not None else ""


def test_cases_cover_every_refusal_kind() -> None:
    kinds = {c[2] for c in CASES}
    assert {ValueError, TypeError, KernelAssertion, SegmentationFault} <= kinds


def teardown_module() -> None:
    for m in _foreign:
        m.close()
    _foreign.clear()
