"""TCP sockets through the facade: connection life, errnos, bad input, no leaks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from netstack.mbuf import m_devget
from netstack.network import Host, Network
from netstack.sockapi import (
    IPPROTO_TCP,
    SHUT_WR,
    SO_RCVBUF,
    SO_SNDBUF,
    SOL_SOCKET,
    TCP_NODELAY,
    UserSocket,
    get_layer,
)
from netstack.sockcheck import check_quiescent
from netstack.sockerr import (
    EADDRINUSE,
    EADDRNOTAVAIL,
    EBADF,
    ECONNREFUSED,
    EFAULT,
    EINVAL,
    ENOBUFS,
    ENOPROTOOPT,
    ENOTCONN,
    EOPNOTSUPP,
    EPIPE,
    SocketError,
)
from netstack.tcp_usrreq import tcp_input, tcp_table
from netstack.wire import IPPROTO_TCP as P_TCP
from netstack.wire import IPHeader
from uvmloan import check_invariants


@pytest.fixture
def net() -> Iterator[Network]:
    with Network(seed=5) as n:
        yield n


def hosts(net: Network) -> tuple[Host, Host]:
    over = {"multiprocessor": False}
    a = net.host("a", memory="16M", profile_overrides=over)
    b = net.host("b", memory="16M", profile_overrides=over)
    net.link(a, b, bandwidth_bps=100_000_000, delay_ns=100_000)
    return a, b


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(SocketError) as ei:
        fn()
    return ei.value.bsd_errno


def connected(net: Network, a: Host, b: Host, port: int = 80) -> tuple[UserSocket, UserSocket]:
    ls = b.socket("tcp")
    ls.bind(("", port))
    ls.listen()
    c = a.socket("tcp")
    c.connect((b.addr, port))
    s, peer = ls.accept()
    assert peer == (a.addr, c.getsockname()[1])
    ls.close()
    return c, s


def quiescent(net: Network, *hs: Host) -> None:
    net.run_until_idle()
    for h in hs:
        check_quiescent(get_layer(h))
        check_invariants(h.machine)


def test_echo_both_ways_shutdown_and_eof(net: Network) -> None:
    a, b = hosts(net)
    c, s = connected(net, a, b)
    c.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
    c.sendall(b"hello")
    net.run_until_idle()
    assert s.recv_bytes(100) == b"hello"
    s.sendall(b"world!")
    net.run_until_idle()
    assert c.recv_bytes(100) == b"world!"
    c.shutdown(SHUT_WR)
    assert errno_of(lambda: c.sendall(b"x")) == EPIPE
    net.run_until_idle()
    assert s.recv_bytes(100) == b""  # end of file
    s.close()
    c.close()
    quiescent(net, a, b)


def test_send_from_process_memory_and_recv_into_it(net: Network) -> None:
    a, b = hosts(net)
    c, s = connected(net, a, b)
    p = a.machine.spawn("p")
    q = b.machine.spawn("q")
    va = p.mmap(5 * 4096)
    p.write(va, bytes(range(256)) * 80)
    assert c.send(p, va + 10, 20000) == 20000
    net.run_until_idle()
    rva = q.mmap(5 * 4096)
    got = 0
    while got < 20000:
        got += s.recv(q, rva + got, 20000 - got)
    assert q.read(rva, 20000) == (bytes(range(256)) * 80)[10:20010]
    # recv into unmapped memory: EFAULT.
    c.sendall(b"abc")
    net.run_until_idle()
    assert errno_of(lambda: s.recv(q, 0x5000_0000_0000, 3)) == EFAULT
    c.close()
    s.close()
    quiescent(net, a, b)


def test_connect_refused(net: Network) -> None:
    a, b = hosts(net)
    get_layer(b)  # b's inet protocols (it has no socket of its own)
    c = a.socket("tcp")
    assert errno_of(lambda: c.connect((b.addr, 9))) == ECONNREFUSED
    assert tcp_table(b.stack).tcpstat["tcps_noport"] == 1
    c.close()
    quiescent(net, a, b)


def test_errnos_of_bad_calls(net: Network) -> None:
    a, b = hosts(net)
    p = a.machine.spawn("p")
    va = p.mmap(4096)
    u = a.socket("tcp")
    assert errno_of(lambda: u.send(p, va, 10)) == ENOTCONN
    assert errno_of(lambda: u.recv_bytes(10)) == ENOTCONN
    assert errno_of(lambda: u.accept()) == EINVAL
    assert errno_of(lambda: u.connect((b.addr, 0))) == EADDRNOTAVAIL
    assert errno_of(lambda: u.bind(("192.0.2.200", 1))) == EADDRNOTAVAIL
    u.bind(("", 4000))
    assert errno_of(lambda: u.bind(("", 4001))) == EINVAL
    v = a.socket("tcp")
    assert errno_of(lambda: v.bind(("", 4000))) == EADDRINUSE
    v.listen()
    assert errno_of(lambda: v.connect((b.addr, 80))) == EOPNOTSUPP
    assert errno_of(lambda: u.setsockopt(SOL_SOCKET, SO_SNDBUF, 0)) == EINVAL
    assert errno_of(lambda: u.setsockopt(SOL_SOCKET, SO_RCVBUF, 10 << 20)) == ENOBUFS
    assert errno_of(lambda: u.setsockopt(SOL_SOCKET, 0x9999, 1)) == ENOPROTOOPT
    with pytest.raises(ValueError, match="port"):
        u.connect((b.addr, -1))
    with pytest.raises(ValueError, match="kind"):
        a.socket("sctp")
    with pytest.raises(TypeError):
        u.send(p, va, "10")
    for x in (u, v):
        x.close()
    assert errno_of(lambda: u.send(p, va, 1)) == EBADF
    assert errno_of(lambda: v.listen()) == EBADF
    quiescent(net, a, b)


def test_efault_send_on_a_connection_leaks_nothing(net: Network) -> None:
    a, b = hosts(net)
    c, s = connected(net, a, b)
    p = a.machine.spawn("p")
    assert errno_of(lambda: c.send(p, 0x6000_0000_0000, 70000)) == EFAULT
    c.close()
    s.close()
    quiescent(net, a, b)


def test_malformed_segments_are_counted_drops(net: Network) -> None:
    a, b = hosts(net)
    c, s = connected(net, a, b)
    t = tcp_table(b.stack)
    pool = b.stack.mbpool
    src, dst = a.stack.ifnet[0].addr, b.stack.ifnet[0].addr

    def ip(n: int) -> IPHeader:
        return IPHeader(0, 20 + n, 1, 0, 64, P_TCP, src, dst)

    before = dict(t.tcpstat)
    b.kernel(lambda: tcp_input(t, m_devget(pool, b"\x00" * 7), ip(7)))  # truncated
    bad_off = bytearray(20)
    bad_off[12] = 0x30  # data offset 3 words < 5
    b.kernel(lambda: tcp_input(t, m_devget(pool, bytes(bad_off)), ip(20)))
    good_hdr_bad_sum = bytearray(20)
    good_hdr_bad_sum[12] = 0x50
    good_hdr_bad_sum[16] = 0xAB
    b.kernel(lambda: tcp_input(t, m_devget(pool, bytes(good_hdr_bad_sum)), ip(20)))
    after = t.tcpstat
    assert after["tcps_rcvtotal"] == before.get("tcps_rcvtotal", 0) + 3
    assert sum(after.values()) - sum(before.values()) == 6  # 3 totals + 3 drop counters
    assert after["tcps_rcvbadsum"] == before.get("tcps_rcvbadsum", 0) + 1
    c.close()
    s.close()
    quiescent(net, a, b)


def test_run_until_idle_stops_at_a_zero_window_and_the_stream_resumes(net: Network) -> None:
    # The receiver does not read: its 32 KiB buffer fills, the window shuts
    # and the sender's persist timer probes it (tcp_timer_persist, as long as
    # the probes are answered).  run_until_idle stops when only that timer
    # is pending; once the receiver reads, the rest of the stream arrives.
    a, b = hosts(net)
    cli, conn = connected(net, a, b, 9)
    cli.setblocking(False)
    conn.setblocking(False)
    data = bytes(range(256)) * 400  # 100 KiB: more than both buffers hold
    proc = a.machine.spawn("writer")
    va = proc.mmap(len(data))
    proc.write(va, data)
    off = 0
    for _ in range(400):
        try:
            off += cli.send(proc, va + off, min(8192, len(data) - off))
        except SocketError as e:
            assert e.bsd_errno == 35  # EAGAIN: the send buffer is full
            net.run_until_idle(20_000)
        if off >= len(data):
            break
    net.run_until_idle()
    head = net.sched.peek()
    # only the persist callout is left
    assert net.sched.pending() == 1 and head is not None and head in net.background
    # tcp_sendspace + tcp_recvspace (32 KiB each) were taken before the stall
    assert off == 64 * 1024
    got = b""
    for _ in range(2000):
        with contextlib.suppress(SocketError):
            got += conn.recv_bytes(65536)
        if off < len(data):
            with contextlib.suppress(SocketError):
                off += cli.send(proc, va + off, min(8192, len(data) - off))
        if len(got) == len(data):
            break
        net.run_until_idle()
    assert got == data


def test_socket_calls_on_a_closed_machine_raise_machine_closed(net: Network) -> None:
    # The facade refuses before any kernel work: nothing reaches the
    # unmapped arena (it used to fail deep inside physmem).
    from uvmloan import MachineClosed

    a, b = hosts(net)
    cli, _conn = connected(net, a, b, 7)
    p = a.machine.spawn("p")
    va = p.mmap(8192)
    p.write(va, b"x" * 8192)
    a.machine.close()
    with pytest.raises(MachineClosed, match="socket send"):
        cli.send(p, va, 4096)
    with pytest.raises(MachineClosed, match="socket recv_bytes"):
        cli.recv_bytes(10)
