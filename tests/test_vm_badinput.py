"""Bad input to every facade method: a clear exception naming the problem, nothing changed.

Each case runs against a machine with some state (processes with touched
private, shared and file mappings, a forked child, an exited process, a
file).  The whole model is snapshotted before the call (map entries, amaps,
anons, every vm_page, the free list, page tables, TLBs, loaded pmaps,
processes, objects, page contents, counters) and must be identical after
it, and ``check_invariants`` must pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from uvmloan import (
    MAP_ANON,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    VM_PROT_READ,
    Machine,
    SegmentationFault,
    UVMError,
)
from uvmloan.invariants import check_invariants
from uvmloan.object import VnodeObject
from uvmloan.process import Process
from uvmloan.testing.loan_ops import machine_snapshot
from uvmloan.testing.scenario import ASPECTS, diff_snapshots, state_snapshot

PS = 4096


# what a user fault that ends in SIGSEGV may count (trace.py Fault)
FAULT_COUNTERS = ("fault", "fault EFAULT")


@attrs.define
class Env:
    m: Machine
    other: Machine
    p: Process
    child: Process
    dead: Process
    vn: VnodeObject
    foreign_vn: VnodeObject
    anon: int
    shared: int
    fmap: int


@pytest.fixture
def env() -> Iterator[Env]:
    m = Machine(ncpus=2, memory="1M")
    other = Machine(ncpus=1, memory="256K")
    vn = m.vnode(b"file bytes " * 1000, name="f")
    foreign = other.vnode(b"elsewhere", name="g")
    p = m.spawn("p", cpu=0)
    anon = p.mmap(4 * PS)
    p.write(anon, b"a" * (2 * PS))
    shared = p.mmap(2 * PS, flags=MAP_SHARED)
    p.write(shared + PS, b"shared")
    fmap = p.mmap(2 * PS, flags=MAP_PRIVATE, obj=vn)
    p.read(fmap, 16)
    p.write(fmap + PS, b"promoted")
    p.munmap(anon + 3 * PS, PS)  # a hole after the anonymous region
    child = p.fork("child", cpu=1)
    child.write(anon, b"C")
    dead = m.spawn("dead", cpu=1)
    dead.mmap(PS)
    dead.exit()
    p.run_on(0)
    yield Env(m, other, p, child, dead, vn, foreign, anon, shared, fmap)
    m.close()
    other.close()


Case = tuple[str, Callable[[Env], Any], type[BaseException], str]

CASES: list[Case] = [
    # ------------------------------------------------------------ spawn, vnode
    ("spawn-empty-name", lambda e: e.m.spawn(""), ValueError, "name"),
    ("spawn-int-name", lambda e: e.m.spawn(7), ValueError, "name"),  # type: ignore[arg-type]
    ("spawn-unknown-cpu", lambda e: e.m.spawn("x", cpu=2), ValueError, "CPU 2"),
    ("spawn-negative-cpu", lambda e: e.m.spawn("x", cpu=-1), ValueError, "CPU -1"),
    ("spawn-str-cpu", lambda e: e.m.spawn("x", cpu="0"), TypeError, "cpu"),  # type: ignore[arg-type]
    ("spawn-bool-cpu", lambda e: e.m.spawn("x", cpu=True), TypeError, "cpu"),
    ("vnode-str-data", lambda e: e.m.vnode("text"), TypeError, "data"),  # type: ignore[arg-type]
    ("vnode-int-data", lambda e: e.m.vnode(5), TypeError, "data"),  # type: ignore[arg-type]
    # ------------------------------------------------------------------ mmap
    ("mmap-zero-length", lambda e: e.p.mmap(0), ValueError, "length"),
    ("mmap-negative-length", lambda e: e.p.mmap(-PS), ValueError, "length"),
    ("mmap-float-length", lambda e: e.p.mmap(4096.0), ValueError, "length"),  # type: ignore[arg-type]
    ("mmap-bool-length", lambda e: e.p.mmap(True), ValueError, "length"),
    ("mmap-str-length", lambda e: e.p.mmap("4096"), ValueError, "length"),  # type: ignore[arg-type]
    ("mmap-unknown-prot-bit", lambda e: e.p.mmap(PS, prot=0x8), ValueError, "prot"),
    ("mmap-negative-prot", lambda e: e.p.mmap(PS, prot=-1), ValueError, "prot"),
    ("mmap-str-prot", lambda e: e.p.mmap(PS, prot="rw"), ValueError, "prot"),  # type: ignore[arg-type]
    ("mmap-no-sharing-flag", lambda e: e.p.mmap(PS, flags=MAP_ANON), ValueError, "MAP_SHARED"),
    (
        "mmap-shared-and-private",
        lambda e: e.p.mmap(PS, flags=MAP_SHARED | MAP_PRIVATE),
        ValueError,
        "MAP_PRIVATE",
    ),
    ("mmap-unknown-flag", lambda e: e.p.mmap(PS, flags=MAP_PRIVATE | 0x8000), ValueError, "flags"),
    ("mmap-str-flags", lambda e: e.p.mmap(PS, flags="private"), ValueError, "flags"),  # type: ignore[arg-type]
    ("mmap-anon-offset", lambda e: e.p.mmap(PS, offset=PS), ValueError, "offset"),
    (
        "mmap-anon-flag-with-obj",
        lambda e: e.p.mmap(PS, flags=MAP_PRIVATE | MAP_ANON, obj=e.vn),
        ValueError,
        "MAP_ANON",
    ),
    (
        "mmap-unaligned-offset",
        lambda e: e.p.mmap(PS, flags=MAP_SHARED, obj=e.vn, offset=100),
        ValueError,
        "offset",
    ),
    (
        "mmap-negative-offset",
        lambda e: e.p.mmap(PS, flags=MAP_SHARED, obj=e.vn, offset=-PS),
        ValueError,
        "offset",
    ),
    (
        "mmap-obj-of-another-machine",
        lambda e: e.p.mmap(PS, flags=MAP_SHARED, obj=e.foreign_vn),
        ValueError,
        "obj",
    ),
    (
        "mmap-obj-not-an-object",
        lambda e: e.p.mmap(PS, flags=MAP_SHARED, obj="file"),  # type: ignore[arg-type]
        ValueError,
        "obj",
    ),
    ("mmap-unaligned-addr", lambda e: e.p.mmap(PS, addr=e.anon + 1), ValueError, "aligned"),
    ("mmap-addr-in-kernel", lambda e: e.p.mmap(PS, addr=1 << 63), ValueError, "outside"),
    ("mmap-addr-zero-page", lambda e: e.p.mmap(PS, addr=0), ValueError, "outside"),
    (
        "mmap-fixed-without-addr",
        lambda e: e.p.mmap(PS, flags=MAP_PRIVATE | MAP_FIXED),
        ValueError,
        "MAP_FIXED",
    ),
    (
        "mmap-bigger-than-address-space",
        lambda e: e.p.mmap(1 << 48),
        UVMError,
        "no 0x1000000000000-byte hole",
    ),
    # ---------------------------------------------------------------- munmap
    ("munmap-unaligned", lambda e: e.p.munmap(e.anon + 8, PS), ValueError, "aligned"),
    ("munmap-zero-length", lambda e: e.p.munmap(e.anon, 0), ValueError, "length"),
    ("munmap-negative-length", lambda e: e.p.munmap(e.anon, -PS), ValueError, "length"),
    ("munmap-outside", lambda e: e.p.munmap(1 << 62, PS), ValueError, "outside"),
    ("munmap-str-addr", lambda e: e.p.munmap(str(e.anon), PS), TypeError, "address"),  # type: ignore[arg-type]
    ("munmap-float-length", lambda e: e.p.munmap(e.anon, 4096.0), TypeError, "length"),  # type: ignore[arg-type]
    # -------------------------------------------------------------- mprotect
    ("mprotect-bad-prot", lambda e: e.p.mprotect(e.anon, PS, 0x10), ValueError, "prot"),
    (
        "mprotect-unaligned",
        lambda e: e.p.mprotect(e.anon + 1, PS, VM_PROT_READ),
        ValueError,
        "aligned",
    ),
    ("mprotect-hole", lambda e: e.p.mprotect(e.anon, 4 * PS, VM_PROT_READ), UVMError, "not mapped"),
    (
        "mprotect-unmapped",
        lambda e: e.p.mprotect(0x7000_0000_0000, PS, VM_PROT_READ),
        UVMError,
        "not mapped",
    ),
    ("mprotect-outside", lambda e: e.p.mprotect(1 << 62, PS, VM_PROT_READ), ValueError, "outside"),
    # ------------------------------------------------------------ mlock etc.
    ("mlock-hole", lambda e: e.p.mlock(e.anon, 4 * PS), UVMError, "not mapped"),
    ("mlock-unmapped", lambda e: e.p.mlock(0x7000_0000_0000, PS), UVMError, "not mapped"),
    ("mlock-unaligned", lambda e: e.p.mlock(e.anon + 2, PS), ValueError, "aligned"),
    ("mlock-zero-length", lambda e: e.p.mlock(e.anon, 0), ValueError, "length"),
    ("munlock-unmapped", lambda e: e.p.munlock(0x7000_0000_0000, PS), UVMError, "not mapped"),
    ("munlock-hole", lambda e: e.p.munlock(e.anon, 4 * PS), UVMError, "not mapped"),
    ("munlock-str-length", lambda e: e.p.munlock(e.anon, "1"), TypeError, "length"),  # type: ignore[arg-type]
    # ----------------------------------------------------------- read, write
    ("read-str-addr", lambda e: e.p.read("0x20000000", 4), TypeError, "address"),  # type: ignore[arg-type]
    ("read-bool-addr", lambda e: e.p.read(True, 4), TypeError, "address"),
    ("read-negative-n", lambda e: e.p.read(e.anon, -1), ValueError, "length"),
    ("read-str-n", lambda e: e.p.read(e.anon, "4"), ValueError, "length"),  # type: ignore[arg-type]
    ("read-unknown-cpu", lambda e: e.p.read(e.anon, 4, cpu=2), ValueError, "CPU 2"),
    ("read-str-cpu", lambda e: e.p.read(e.anon, 4, cpu="1"), TypeError, "cpu"),  # type: ignore[arg-type]
    ("write-str-data", lambda e: e.p.write(e.anon, "text"), TypeError, "data"),  # type: ignore[arg-type]
    ("write-int-data", lambda e: e.p.write(e.anon, 5), TypeError, "data"),  # type: ignore[arg-type]
    ("write-list-data", lambda e: e.p.write(e.anon, [1, 2]), TypeError, "data"),  # type: ignore[arg-type]
    ("write-float-addr", lambda e: e.p.write(1.5, b"x"), TypeError, "address"),  # type: ignore[arg-type]
    ("write-unknown-cpu", lambda e: e.p.write(e.anon, b"x", cpu=5), ValueError, "CPU 5"),
    # ------------------------------------------------ fork, run_on, processes
    ("fork-empty-name", lambda e: e.p.fork(""), ValueError, "name"),
    ("fork-int-name", lambda e: e.p.fork(3), ValueError, "name"),  # type: ignore[arg-type]
    ("fork-unknown-cpu", lambda e: e.p.fork("x", cpu=4), ValueError, "CPU 4"),
    ("run-on-unknown-cpu", lambda e: e.p.run_on(9), ValueError, "CPU 9"),
    ("run-on-str-cpu", lambda e: e.p.run_on("0"), TypeError, "cpu"),  # type: ignore[arg-type]
    ("exited-mmap", lambda e: e.dead.mmap(PS), ValueError, "has exited"),
    ("exited-munmap", lambda e: e.dead.munmap(e.anon, PS), ValueError, "has exited"),
    ("exited-mprotect", lambda e: e.dead.mprotect(e.anon, PS, 1), ValueError, "has exited"),
    ("exited-mlock", lambda e: e.dead.mlock(e.anon, PS), ValueError, "has exited"),
    ("exited-munlock", lambda e: e.dead.munlock(e.anon, PS), ValueError, "has exited"),
    ("exited-read", lambda e: e.dead.read(e.anon, 1), ValueError, "has exited"),
    ("exited-write", lambda e: e.dead.write(e.anon, b"x"), ValueError, "has exited"),
    ("exited-fork", lambda e: e.dead.fork(), ValueError, "has exited"),
    ("exited-exit", lambda e: e.dead.exit(), ValueError, "has exited"),
    ("exited-run-on", lambda e: e.dead.run_on(0), ValueError, "has exited"),
    # ------------------------------------------------------- vnode read/write
    ("vnode-write-negative-offset", lambda e: e.vn.write(-1, b"x"), ValueError, "offset"),
    ("vnode-write-str-offset", lambda e: e.vn.write("0", b"x"), ValueError, "offset"),  # type: ignore[arg-type]
    ("vnode-write-str-data", lambda e: e.vn.write(0, "x"), TypeError, "data"),  # type: ignore[arg-type]
    ("vnode-read-str-n", lambda e: e.vn.read(0, "3"), ValueError, "length"),  # type: ignore[arg-type]
    ("vnode-read-negative-n", lambda e: e.vn.read(0, -3), ValueError, "length"),
    ("vnode-read-negative-offset", lambda e: e.vn.read(-5, 3), ValueError, "offset"),
    ("vnode-truncate-negative", lambda e: e.vn.truncate(-1), ValueError, "size"),
    ("vnode-truncate-str", lambda e: e.vn.truncate("10"), ValueError, "size"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("fn", "exc", "pattern"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_is_rejected_and_changes_nothing(
    env: Env, fn: Callable[[Env], Any], exc: type[BaseException], pattern: str
) -> None:
    before = state_snapshot(env.m, ASPECTS)
    with pytest.raises(exc, match=re.escape(pattern)):
        fn(env)
    diffs = diff_snapshots(before, state_snapshot(env.m, ASPECTS))
    assert not diffs, f"the rejected call changed the model: {diffs}"
    check_invariants(env.m)
    # The machine still works afterwards.
    assert env.p.read(env.anon, 1) == b"a"
    assert env.child.read(env.anon, 1) == b"C"


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"ncpus": 0}, ValueError, "ncpus"),
        ({"ncpus": 257}, ValueError, "ncpus"),
        ({"ncpus": "2"}, ValueError, "ncpus"),
        ({"ncpus": True}, ValueError, "ncpus"),
        ({"memory": "lots"}, ValueError, "memory size"),
        ({"memory": 1000}, ValueError, "multiple of the page size"),
        ({"memory": "1M", "npages": 16}, ValueError, "memory or npages"),
        ({"npages": 0}, ValueError, "npages"),
        ({"memory": 1.5}, TypeError, "memory"),
        ({"profile": "netbsd-1.6-nope"}, ValueError, "unknown profile"),
        ({"page_size": 1000}, ValueError, "page_size"),
        ({"trace": 3.5}, ValueError, "trace"),
        ({"profile_overrides": {"no_such_field": 1}}, ValueError, "no_such_field"),
    ],
)
def test_bad_machine_arguments(
    kwargs: dict[str, Any], exc: type[BaseException], pattern: str
) -> None:
    with pytest.raises(exc, match=re.escape(pattern)):
        Machine(**kwargs)


def test_user_access_to_kernel_address_is_sigsegv(env: Env) -> None:
    """A user load of a kernel address is SIGSEGV, even where the kernel map
    has memory (trap.c resolves a user-mode fault in the process's own map)."""
    ao = env.m.aobj()
    kva = env.m.kernel_map.uvm_map(PS, ao, 0, VM_PROT_READ)
    env.p.read(env.anon, 1)  # the process is current on its CPU
    before = state_snapshot(env.m, ASPECTS)
    snap = machine_snapshot(env.m, allow=FAULT_COUNTERS)
    counters = env.m.counters.copy()
    with pytest.raises(SegmentationFault, match="kernel address"):
        env.p.read(kva, 1)
    with pytest.raises(SegmentationFault, match="kernel address"):
        env.p.write(kva, b"x")
    after = state_snapshot(env.m, ASPECTS)
    assert not diff_snapshots(
        {k: v for k, v in before.items() if k != "counters"},
        {k: v for k, v in after.items() if k != "counters"},
    )
    # everything else, and of the counters only the two faults' own
    assert machine_snapshot(env.m, allow=FAULT_COUNTERS) == snap
    assert env.m.counters - counters == {"fault": 2, "fault EFAULT": 2}
    check_invariants(env.m)


def test_segv_leaves_the_model_unchanged(env: Env) -> None:
    """A user access that no fault resolves (a hole) raises SegmentationFault
    and changes nothing but the fault counters."""
    env.p.read(env.anon, 1)
    before = state_snapshot(env.m, ASPECTS)
    snap = machine_snapshot(env.m, allow=FAULT_COUNTERS)
    counters = env.m.counters.copy()
    with pytest.raises(SegmentationFault):
        env.p.write(env.anon + 3 * PS, b"x")
    after = state_snapshot(env.m, ASPECTS)
    diffs = diff_snapshots(before, after)
    assert all(d.startswith("counters") for d in diffs), diffs
    # of the counters only the fault's own: one fault, EFAULT (no entry)
    assert machine_snapshot(env.m, allow=FAULT_COUNTERS) == snap
    assert env.m.counters - counters == {"fault": 1, "fault EFAULT": 1}
    check_invariants(env.m)
