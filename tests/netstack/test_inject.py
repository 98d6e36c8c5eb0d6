"""Each socket-layer bug switch is caught, and by the check meant for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_sosend import Sink

from netstack.inject import BUGS, inject
from netstack.mbuf import m_copydata
from netstack.sockbuf import sbdrop, sbflush
from netstack.sockcheck import check_quiescent, check_socket_invariants
from netstack.socket import Socket, SocketLayer, Uio, soalloc, sosend
from uvmloan import Machine, check_invariants
from uvmloan.errors import InvariantViolation

PS = 4096


@pytest.fixture
def mach() -> Iterator[Machine]:
    m = Machine(memory="8M", profile_overrides={"multiprocessor": False})
    yield m
    m.close()


def sender(m: Machine, layer: SocketLayer, n: int, nbytes: int) -> tuple[Socket, int]:
    so = soalloc(layer, Sink())
    p = m.spawn("s")
    va = p.mmap(n * PS)
    p.write(va, bytes(range(256)) * (n * PS // 256))
    with m.on_cpu(0):
        sosend(so, Uio(p.map, va, nbytes, proc=p))
    return so, va


@pytest.mark.parametrize("on", [False, True])
def test_sbcompress_merge_loaned_is_caught_by_I9(mach: Machine, on: bool) -> None:
    layer = SocketLayer.for_machine(mach)
    if on:
        inject(layer, "sbcompress-merge-loaned")
    so, va = sender(mach, layer, 2, 6000)
    p = mach.processes[0]
    with mach.on_cpu(0):
        sosend(so, Uio(p.map, va + 7000, 100, proc=p))
    if on:
        # The kernel wrote into lent frames: the loan's bytes changed.
        with pytest.raises(InvariantViolation) as ei:
            check_invariants(mach)
        assert ei.value.invariant == "I9"
    else:
        check_invariants(mach)
        check_socket_invariants(layer)
        assert len(so.so_snd.mbufs()) == 2


@pytest.mark.parametrize("on", [False, True])
def test_skip_kremove_barrier_is_caught_by_TLB1(mach: Machine, on: bool) -> None:
    layer = SocketLayer.for_machine(mach)
    if on:
        inject(layer, "skip-kremove-barrier")
    so, _va = sender(mach, layer, 2, 8192)
    with mach.on_cpu(0):
        # The CPU reads the data through the loan KVA (a TLB entry now) ...
        head = so.so_snd.sb_mb
        assert head is not None
        m_copydata(head, 0, 16)
        sbflush(so.so_snd)
        layer.run_deferred()  # ... sodoloanfree
    check_socket_invariants(layer)
    if on:
        with pytest.raises(InvariantViolation) as ei:
            check_invariants(mach)
        assert ei.value.invariant == "TLB1"
    else:
        check_invariants(mach)
        check_quiescent(layer)


@pytest.mark.parametrize("on", [False, True])
def test_free_loaned_early_is_caught_by_S2(mach: Machine, on: bool) -> None:
    layer = SocketLayer.for_machine(mach)
    if on:
        inject(layer, "free-loaned-early")
    so, _va = sender(mach, layer, 2, 8192)
    with mach.on_cpu(0):
        sbdrop(so.so_snd, 100)
    check_invariants(mach)  # the VM layer cannot tell yet
    if on:
        with pytest.raises(InvariantViolation) as ei:
            check_socket_invariants(layer)
        assert ei.value.invariant == "S2"
    else:
        check_socket_invariants(layer)
        with mach.on_cpu(0):
            sbflush(so.so_snd)
            layer.run_deferred()
        check_quiescent(layer)


def test_unknown_bug_is_refused(mach: Machine) -> None:
    layer = SocketLayer.for_machine(mach)
    with pytest.raises(ValueError, match="unknown injected bug"):
        inject(layer, "no-such-bug")
    assert "forget-retransmit-ref" in BUGS
    assert not layer.inject
