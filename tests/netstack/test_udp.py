"""UDP over a link: loaned datagrams released at transmit completion, copies, limits, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from netstack.network import Host, Network
from netstack.sockapi import SO_SNDBUF, SOL_SOCKET, UserSocket, get_layer
from netstack.sockerr import (
    EADDRINUSE,
    EADDRNOTAVAIL,
    EBADF,
    EDESTADDRREQ,
    EFAULT,
    EISCONN,
    EMSGSIZE,
    SocketError,
)
from netstack.udp import udp_table
from uvmloan import check_invariants
from uvmloan.process import Process

PS = 4096
PORT = 5000


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 13 + seed) & 0xFF for i in range(n))


@pytest.fixture
def net() -> Iterator[Network]:
    with Network(seed=3) as n:
        yield n


def pair(
    net: Network, *, mp: bool = False, **link: Any
) -> tuple[Host, Host, UserSocket, UserSocket, Process, int]:
    a = net.host("a", memory="16M", profile_overrides={"multiprocessor": mp})
    b = net.host("b", memory="16M")
    net.link(a, b, bandwidth_bps=100_000_000, delay_ns=20_000, **link)
    sa, sb = a.socket("udp"), b.socket("udp")
    sb.bind(("", PORT))
    p = a.machine.spawn("snd")
    va = p.mmap(16 * PS)
    p.write(va, pattern(16 * PS))
    return a, b, sa, sb, p, va


def counts(h: Host) -> dict[str, int]:
    c = h.machine.counters
    return {k[len("sosend ") :]: v for k, v in c.items() if k.startswith("sosend ")}


def quiescent(*hosts: Host) -> None:
    for h in hosts:
        layer = get_layer(h)
        assert not h.machine.kernel_loans and layer.socurkva == 0
        h.stack.mbpool.check_leaks()
        check_invariants(h.machine)


@pytest.mark.parametrize(("off", "n"), [(0, 4096), (100, 6000), (0, 9216), (4000, 9216)])
def test_datagrams_4096_to_9216_are_loaned_and_released_at_completion(
    net: Network, off: int, n: int
) -> None:
    a, b, sa, sb, p, va = pair(net)
    assert sa.sendto(p, va + off, n, (b.addr, PORT)) == n
    assert counts(a) == {"loan big": 1}
    pages = (-(-(off + n) // PS) * PS - (off - off % PS)) // PS
    assert a.machine.counters["loan"] == pages
    # In flight: the interface (or IP's fragments) still hold the loan.
    assert a.machine.kernel_loans
    net.run_until_idle()
    data, src = sb.recvfrom_bytes(20000)
    assert src is not None
    assert data == pattern(16 * PS)[off : off + n]
    assert src == (a.addr, udp_table(a.stack).pcbs[src[1]].lport)
    assert a.machine.counters["sodoloanfree"] == 1
    quiescent(a, b)


@pytest.mark.parametrize(
    ("n", "want"),
    [
        # First cluster leaves max_hdr (56): 1992, then 2048, then 55 small.
        (4095, {"copy big": 2, "copy small": 1}),
        (100, {"copy small": 1}),
        (857, {"copy big": 1}),  # MINCLSIZE
    ],
)
def test_smaller_datagrams_are_copied(net: Network, n: int, want: dict[str, int]) -> None:
    a, b, sa, sb, p, va = pair(net)
    sa.sendto(p, va, n, (b.addr, PORT))
    assert counts(a) == want and a.machine.counters["loan"] == 0
    net.run_until_idle()
    assert sb.recvfrom_bytes(20000)[0] == pattern(16 * PS)[:n]
    quiescent(a, b)


def test_multiprocessor_kernel_copies_everything(net: Network) -> None:
    a, b, sa, sb, p, va = pair(net, mp=True)
    sa.sendto(p, va, 8192, (b.addr, PORT))
    # 1992 + 3 x 2048 + 56 (< MINCLSIZE: a small mbuf).
    assert counts(a) == {"copy big": 4, "copy small": 1}
    assert a.machine.counters["loan"] == 0
    net.run_until_idle()
    assert sb.recvfrom_bytes(20000)[0] == pattern(16 * PS)[:8192]
    quiescent(a, b)


def test_larger_than_send_buffer_is_emsgsize(net: Network) -> None:
    a, b, sa, sb, p, va = pair(net)
    with pytest.raises(SocketError) as ei:
        sa.sendto(p, va, 9217, (b.addr, PORT))
    assert ei.value.errno == EMSGSIZE
    assert counts(a) == {}
    # A bigger SO_SNDBUF admits a bigger datagram (one 20000-byte loan).
    sa.setsockopt(SOL_SOCKET, SO_SNDBUF, 65536)
    sa.sendto(p, va, 20000, (b.addr, PORT))
    assert counts(a) == {"loan big": 1}
    net.run_until_idle()
    assert sb.recvfrom_bytes(30000)[0] == pattern(16 * PS)[:20000]
    quiescent(a, b)


def test_lost_datagram_still_releases_the_loan(net: Network) -> None:
    a, b, sa, sb, p, va = pair(net, loss=1.0)
    sa.sendto(p, va, 8192, (b.addr, PORT))
    net.run_until_idle()
    sb.setblocking(False)
    with pytest.raises(SocketError):
        sb.recvfrom_bytes(100)
    quiescent(a, b)


def test_overwrite_after_sendto_receiver_gets_old_bytes(net: Network) -> None:
    a, b, sa, sb, p, va = pair(net)
    sa.sendto(p, va, 8192, (b.addr, PORT))
    p.write(va, b"\xee" * 8192)
    assert a.machine.counters["loan.break"] == 2
    net.run_until_idle()
    assert sb.recvfrom_bytes(9000)[0] == pattern(16 * PS)[:8192]
    quiescent(a, b)


def test_receive_into_process_memory_and_truncation(net: Network) -> None:
    a, b, sa, sb, p, va = pair(net)
    sa.sendto(p, va, 3000, (b.addr, PORT))
    net.run_until_idle()
    q = b.machine.spawn("rcv")
    rva = q.mmap(PS)
    n, src = sb.recvfrom(q, rva, 1000)
    # PR_ATOMIC: the rest of the record is dropped (MSG_TRUNC).
    assert n == 1000 and q.read(rva, 1000) == pattern(16 * PS)[:1000]
    assert src is not None and src[0] == a.addr
    sb.setblocking(False)
    with pytest.raises(SocketError):
        sb.recv(q, rva, 10)
    quiescent(a, b)


def test_bad_input(net: Network) -> None:
    a, b, sa, _sb, p, va = pair(net)

    def errno_of(fn: Any) -> int:
        with pytest.raises(SocketError) as ei:
            fn()
        return ei.value.bsd_errno

    assert errno_of(lambda: sa.send(p, va, 100)) == EDESTADDRREQ
    assert errno_of(lambda: sa.sendto(p, va, 100, (b.addr, 0))) == EADDRNOTAVAIL
    assert errno_of(lambda: sa.sendto(p, 0x6000_0000_0000, 5000, (b.addr, PORT))) == EFAULT
    assert errno_of(lambda: sa.bind(("192.0.2.77", 9))) == EADDRNOTAVAIL
    s2 = b.socket("udp")
    assert errno_of(lambda: s2.bind(("", PORT))) == EADDRINUSE
    with pytest.raises(ValueError, match="port"):
        sa.sendto(p, va, 10, (b.addr, 70000))
    with pytest.raises(ValueError, match="address"):
        sa.sendto(p, va, 10, ("not.an.address", 1))
    with pytest.raises(ValueError, match="process"):
        sa.send(b.machine.spawn("other"), va, 10)
    sa.connect((b.addr, PORT))
    assert errno_of(lambda: sa.sendto(p, va, 100, (b.addr, PORT))) == EISCONN
    sa.close()
    assert errno_of(lambda: sa.send(p, va, 100)) == EBADF
    s2.close()
    net.run_until_idle()
    quiescent(a, b)
    assert not get_layer(a).sockets


def test_2002_per_socket_pendfree_over_the_network(net: Network) -> None:
    from netstack.sockapi import configure_sockets

    a = net.host("a", memory="16M", profile_overrides={"multiprocessor": False})
    b = net.host("b", memory="16M")
    net.link(a, b, bandwidth_bps=100_000_000, delay_ns=20_000)
    layer = configure_sockets(a, pendfree_style="per-socket")
    sa, sb = a.socket("udp"), b.socket("udp")
    sb.bind(("", PORT))
    p = a.machine.spawn("snd")
    va = p.mmap(4 * PS)
    p.write(va, pattern(4 * PS))
    sa.sendto(p, va, 8192, (b.addr, PORT))
    net.run_until_idle()
    # Transmitted and freed by the driver, but 1.66.4.1 keeps the loan on
    # the socket until the next sosend/soreceive/disconnect.
    assert len(sa.so.so_pendfree) == 1 and layer.socurkva == 2 * PS
    sa.sendto(p, va, 100, (b.addr, PORT))  # sosend entry: sodopendfree
    assert not sa.so.so_pendfree and layer.socurkva == 0
    net.run_until_idle()
    assert sb.recvfrom_bytes(9000)[0] == pattern(4 * PS)[:8192]
    assert sb.recvfrom_bytes(9000)[0] == pattern(4 * PS)[:100]
    sa.close()
    sb.close()
    quiescent(a, b)


def test_interface_queue_full_drop_releases_the_loan(net: Network) -> None:
    from netstack.sockerr import ENOBUFS

    # ifq_maxlen 1 (and an MTU that needs no fragments): the first datagram
    # waits in if_snd for the driver's start routine, which runs when the
    # network next does; the two sent back to back after it are dropped by
    # IFQ_ENQUEUE (ENOBUFS to the sender) and their loans freed at once.
    a, b, sa, sb, p, va = pair(net, queue_limit=1, mtu=9000)
    sa.sendto(p, va, 5000, (b.addr, PORT))
    errs = []
    for i in (1, 2):
        try:
            sa.sendto(p, va + i * 2 * PS, 5000, (b.addr, PORT))
        except SocketError as e:
            errs.append(e.bsd_errno)
    assert errs == [ENOBUFS, ENOBUFS]
    assert counts(a) == {"loan big": 3}
    assert a.stack.ifnet[0].ifq_drops == 2
    net.run_until_idle()
    assert sb.recvfrom_bytes(6000)[0] == pattern(16 * PS)[0:5000]
    assert a.machine.counters["sodoloanfree"] == 3
    quiescent(a, b)
