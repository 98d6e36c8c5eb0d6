"""A hypothesis state machine for the socket layer over a lossy link.

``SocketStateMachine`` builds a :class:`~netstack.network.Network` of two
hosts (uniprocessor kernels, so sockets loan) joined by a link with seeded
loss, duplication and reordering, and one TCP connection from ``a`` to
``b``.  Its rules, in random interleavings:

* ``send``: a non-blocking ``send(2)`` of a random size from a random
  offset (any alignment) of the sender's buffer (loaned or copied as
  NetBSD's rules decide);
* ``overwrite``: the sender stores into its buffer right after sending
  (breaking the loans of the pages it touches);
* ``receive``: a non-blocking ``recv(2)`` of a random size;
* ``reply``/``receive_reply``: the same in the other direction, from the
  receiver's process memory (``REPLIES``);
* ``datagram``/``receive_datagram``: UDP datagrams of up to 9216 bytes
  from the sender's buffer; they may be lost, never altered (``DATAGRAMS``);
* ``advance``: simulated time passes (segments, ACKs, retransmissions,
  the sopendfree thread).

Invariants after every step: ``check_invariants`` of both machines (the
VM's loan and TLB invariants), ``check_socket_invariants`` of both socket
layers (S1-S4, also after every simulation event), and the bytes
received so far are a prefix of the bytes each send call took (as they
were when it took them).  At the end
(``teardown``) the sender closes, everything is delivered: the receiver
got exactly those bytes, and no loan, loan KVA, mbuf, cluster or frame is
left (``check_quiescent``; the sender's pages return to the allocator).

Subclass to change ``LINK`` (link parameters), ``BUFPAGES`` or ``INJECT``
(bugs of :mod:`netstack.inject`); run with
:func:`uvmloan.testing.run_machine` and :func:`socket_settings`.

``POLICY`` is the sender's send policy (netstack.policy).  For ``copy`` and
``netbsd-loan`` the reference above holds exactly, overwrites included.
For ``linux-zerocopy`` the sender opts in (``SO_ZEROCOPY``) and sends with
``MSG_ZEROCOPY``; the ``overwrite_completed`` rule writes only buffer
regions whose sends have completed (the error queue said so), and with
``HAZARD`` on, ``overwrite`` writes anywhere: a byte of a send still in
flight may then reach the receiver as any value it held before its send
completed (Linux's documented behaviour).  The reference predicts exactly
that set per stream byte; a received byte outside it fails, and a received
byte other than the one the send took must have been counted by the
kernel's ``zerocopy.tx_modified``.  Without ``HAZARD`` the run must be
exact and ``tx_modified`` zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from uvmloan.invariants import check_invariants
from uvmloan.testing.failures import CheckFailure, hunt_settings
from uvmloan.testing.profiles import machine_settings

from ..inject import inject
from ..network import Network
from ..sockapi import SO_SNDBUF, SO_ZEROCOPY, SOL_SOCKET, UserSocket, configure_sockets, get_layer
from ..sockcheck import check_quiescent, check_socket_invariants
from ..sockerr import SocketError
from ..zerocopy import MSG_ZEROCOPY, zc_host

__all__ = ["SOCKET_SIZES", "SocketStateMachine", "no_shrink_settings", "socket_settings"]

# Short profile name -> (max_examples, stateful_step_count).
SOCKET_SIZES = {"ci": (12, 25), "deep": (200, 60)}

PS = 4096
# The UDP socket's send ids, kept apart from the TCP socket's.
UDP_KEYS = 1 << 40


def socket_settings(name: str | None = None) -> settings:
    """ "socket-ci" (default) or "socket-deep" (``UVMLOAN_HYPOTHESIS_PROFILE=deep``)."""
    return machine_settings("socket", SOCKET_SIZES, name)


def no_shrink_settings(max_examples: int, steps: int = 30) -> settings:
    """Settings for proving an injected bug is found: deterministic, no shrink."""
    return hunt_settings(socket_settings(), max_examples, steps)


class SocketStateMachine(RuleBasedStateMachine):
    LINK: ClassVar[dict[str, Any]] = {
        "bandwidth_bps": 100_000_000,
        "delay_ns": 200_000,
        "loss": 0.05,
        "duplicate": 0.03,
        "reorder": 0.03,
    }
    BUFPAGES: ClassVar[int] = 40
    SNDBUF: ClassVar[int] = 3 * 65536
    INJECT: ClassVar[Sequence[str]] = ()
    SEED: ClassVar[int] = 0
    # Also drive the reverse direction (b sends from its process memory)
    # and UDP datagrams from a's buffer.
    REPLIES: ClassVar[bool] = True
    DATAGRAMS: ClassVar[bool] = True
    # The sender's send policy, and (linux-zerocopy) whether it may
    # overwrite buffers still in flight.
    POLICY: ClassVar[str] = "netbsd-loan"
    HAZARD: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.net = Network(seed=self.SEED)
        over = {"multiprocessor": False}
        self.a = self.net.host("a", memory="16M", profile_overrides=over)
        self.b = self.net.host("b", memory="16M", profile_overrides=over)
        self.net.link(self.a, self.b, **self.LINK)
        configure_sockets(self.a, send_policy=self.POLICY)
        self.zc = self.POLICY == "linux-zerocopy"
        self.flags = MSG_ZEROCOPY if self.zc else 0
        # zerocopy bookkeeping: send id -> (buffer offset, length, stream
        # offset or -1 - datagram index); per stream byte (and per datagram
        # byte) the values it may arrive as
        self.inflight: dict[int, tuple[int, int, int]] = {}
        self.risk: dict[int, set[int]] = {}
        self.drisk: dict[int, dict[int, set[int]]] = {}
        for bug in self.INJECT:
            inject(self.a, bug)
        self.base_pages = self.a.machine.uvm.allocated
        ls = self.b.socket("tcp")
        ls.bind(("", 7))
        ls.listen()
        self.c = self.a.socket("tcp")
        self.c.setsockopt(SOL_SOCKET, SO_SNDBUF, self.SNDBUF)
        self.c.connect((self.b.addr, 7))
        self.s, _ = ls.accept()
        ls.close()
        self.c.setblocking(False)
        self.s.setblocking(False)
        self.p = self.a.machine.spawn("sender")
        self.size = self.BUFPAGES * PS
        self.va = self.p.mmap(self.size)
        self.buf = bytearray((7 * i + 1) % 251 for i in range(self.size))
        self.p.write(self.va, bytes(self.buf))
        self.expected = bytearray()
        self.got = bytearray()
        self.closed = False
        # The reverse direction: b's process sends on the accepted socket.
        self.q = self.b.machine.spawn("replier")
        self.qva = self.q.mmap(4 * PS)
        self.qbuf = bytes((3 * i + 5) % 253 for i in range(4 * PS))
        self.q.write(self.qva, self.qbuf)
        self.rexpected = bytearray()
        self.rgot = bytearray()
        # UDP from a's buffer to b: datagrams may be lost, never altered.
        self.ua = self.a.socket("udp")
        self.ub = self.b.socket("udp")
        self.ub.bind(("", 9))
        self.ub.setblocking(False)
        self.ua.setblocking(False)
        self.datagrams: list[bytes] = []
        if self.zc:
            self.c.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)
            self.ua.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)

    # ------------------------------------------------------------------ rules

    @precondition(lambda self: not self.closed)
    @rule(
        off=st.integers(0, 1 << 20),
        # Any size, and sizes just above three segments (MSS 1460) whose
        # last segment is small enough for tcp_build_datapkt to copy it
        # into the header mbuf: the CPU then reads lent pages through the
        # loan KVA.
        n=st.one_of(st.integers(1, 80_000), st.integers(3 * 1460 + 1, 3 * 1460 + 300)),
    )
    def send(self, off: int, n: int) -> None:
        off %= self.size
        n = min(n, self.size - off)
        key = self._zckey(self.c)
        try:
            took = self.c.send(self.p, self.va + off, n, self.flags)
        except SocketError as e:
            # EWOULDBLOCK: the buffer is full; ENOBUFS: MSG_ZEROCOPY's optmem
            assert e.bsd_errno == 35 or (self.zc and e.bsd_errno == 55), e
            return
        if self.zc and took:
            self.inflight[key] = (off, took, len(self.expected))
        self.expected += self.buf[off : off + took]

    @precondition(lambda self: not self.closed)
    @rule(off=st.integers(0, 1 << 20), n=st.integers(1, 3 * PS), byte=st.integers(0, 255))
    def overwrite(self, off: int, n: int, byte: int) -> None:
        off %= self.size
        n = min(n, self.size - off)
        if self.zc and not self.HAZARD:
            return
        self._store(off, n, byte)

    @precondition(lambda self: self.zc and self.HAZARD and not self.closed and self.inflight)
    @rule(data=st.data(), byte=st.integers(0, 255))
    def overwrite_in_flight(self, data: st.DataObject, byte: int) -> None:
        """The hazard reached on purpose: rewrite part of a send still in
        flight (a uniform offset in the 1 MiB buffer seldom lands in one)."""
        boff, blen, _ = data.draw(st.sampled_from(sorted(self.inflight.values())))
        lo = data.draw(st.integers(boff, boff + blen - 1))
        n = data.draw(st.integers(1, boff + blen - lo))
        self._store(lo, n, byte)

    @precondition(lambda self: self.zc and not self.closed)
    @rule(off=st.integers(0, 1 << 20), n=st.integers(1, 3 * PS), byte=st.integers(0, 255))
    def overwrite_completed(self, off: int, n: int, byte: int) -> None:
        """msg_zerocopy.c's sender: reuse only what the error queue released."""
        self._completions()
        off %= self.size
        n = min(n, self.size - off)
        for boff, blen, _ in self.inflight.values():
            if boff < off + n and off < boff + blen:
                return
        self._store(off, n, byte)

    def _store(self, off: int, n: int, byte: int) -> None:
        if self.zc:
            self._completions()
            for boff, blen, where in self.inflight.values():
                lo, hi = max(off, boff), min(off + n, boff + blen)
                if lo >= hi:
                    continue
                # bytes of a send still in flight: the wire may carry the
                # new value (at this or any later transmission)
                if where >= 0:
                    for i in range(lo, hi):
                        pos = where + i - boff
                        self.risk.setdefault(pos, {self.expected[pos]}).add(byte)
                else:
                    dg = self.drisk.setdefault(-1 - where, {})
                    for i in range(lo, hi):
                        dg.setdefault(i - boff, {self.buf[i]}).add(byte)
        data = bytes([byte]) * n
        self.p.write(self.va + off, data)
        self.buf[off : off + n] = data

    def _zckey(self, us: UserSocket) -> int:
        st = us.so.so_zc
        return st.zckey if st is not None else 0

    def _completions(self) -> None:
        """Read both sockets' error queues; forget the sends they complete."""
        for us, base in ((self.c, 0), (self.ua, UDP_KEYS)):
            while us.errqueue_len():
                n = us.recv_errqueue(self.p)
                mine = [k for k in self.inflight if (k >= UDP_KEYS) == bool(base)]
                for k in mine:
                    if n.covers(k - base):
                        del self.inflight[k]

    @precondition(lambda self: self.REPLIES and not self.closed)
    @rule(off=st.integers(0, 4 * PS - 1), n=st.integers(1, 4 * PS))
    def reply(self, off: int, n: int) -> None:
        n = min(n, 4 * PS - off)
        try:
            took = self.s.send(self.q, self.qva + off, n)
        except SocketError as e:
            assert e.bsd_errno == 35, e
            return
        self.rexpected += self.qbuf[off : off + took]

    @precondition(lambda self: self.REPLIES)
    @rule(n=st.integers(1, 100_000))
    def receive_reply(self, n: int) -> None:
        try:
            d = self.c.recv_bytes(n)
        except SocketError as e:
            assert e.bsd_errno == 35, e
            return
        self.rgot += d

    @precondition(lambda self: self.DATAGRAMS and not self.closed)
    @rule(off=st.integers(0, 1 << 20), n=st.integers(1, 9216))
    def datagram(self, off: int, n: int) -> None:
        off %= self.size
        n = min(n, self.size - off)
        key = self._zckey(self.ua)
        try:
            self.ua.sendto(self.p, self.va + off, n, (self.b.addr, 9), self.flags)
        except SocketError as e:
            assert e.bsd_errno in (35, 55), e  # EWOULDBLOCK, ENOBUFS
            return
        if self.zc:
            self.inflight[key + UDP_KEYS] = (off, n, -1 - len(self.datagrams))
        self.datagrams.append(bytes(self.buf[off : off + n]))

    @precondition(lambda self: self.DATAGRAMS)
    @rule()
    def receive_datagram(self) -> None:
        try:
            d, _src = self.ub.recvfrom_bytes(9216)
        except SocketError as e:
            assert e.bsd_errno == 35, e
            return
        if d in self.datagrams:
            return
        for i, sent in enumerate(self.datagrams):
            allowed = self.drisk.get(i)
            if (
                allowed
                and len(sent) == len(d)
                and all(
                    a == b or b in allowed.get(j, ())
                    for j, (a, b) in enumerate(zip(sent, d, strict=True))
                )
            ):
                assert zc_host(get_layer(self.a)).tx_modified, "a hazard went uncounted"
                return
        raise AssertionError("a datagram arrived that was never sent")

    @rule(n=st.integers(1, 100_000))
    def receive(self, n: int) -> None:
        try:
            d = self.s.recv_bytes(n)
        except SocketError as e:
            assert e.bsd_errno == 35, e
            return
        self.got += d

    @rule(ns=st.sampled_from([10_000, 300_000, 2_000_000, 50_000_000, 1_500_000_000]))
    def advance(self, ns: int) -> None:
        self._run(self.net.now + ns)

    def _run(self, until: int | None) -> None:
        """Run the network event by event, checking the socket layers after each."""
        sched = self.net.sched
        while True:
            nxt = sched.next_time()
            if nxt is None or (until is not None and nxt > until):
                break
            sched.step()
            for h in (self.a, self.b):
                check_socket_invariants(get_layer(h))
        if until is not None:
            self.net.run(until)

    # ------------------------------------------------------------- invariants

    @invariant()
    def machines_consistent(self) -> None:
        for h in (self.a, self.b):
            check_invariants(h.machine)
            check_socket_invariants(get_layer(h))

    def _check_stream(self, got: bytearray, final: bool) -> None:
        exp = self.expected if final else self.expected[: len(got)]
        if final and len(got) != len(exp):
            raise CheckFailure(
                "bytes", f"received {len(got)} bytes (not the ones sent), sent {len(exp)}"
            )
        if got == exp:
            return
        for i, (a, b) in enumerate(zip(exp, got, strict=True)):
            if a != b and b not in self.risk.get(i, ()):
                raise CheckFailure("bytes", f"received byte {i} differs from sent")
        # every difference was a predicted hazard; the kernel must have seen it
        if not zc_host(get_layer(self.a)).tx_modified:
            raise CheckFailure("bytes", "an in-flight overwrite reached the wire uncounted")

    @invariant()
    def stream_is_a_prefix(self) -> None:
        self._check_stream(self.got, False)
        if self.rgot != self.rexpected[: len(self.rgot)]:
            raise CheckFailure("bytes", "reply bytes differ from sent")

    # --------------------------------------------------------------- teardown

    def _drain(self, us: UserSocket, into: bytearray) -> None:
        while True:
            try:
                d = us.recv_bytes(65536)
            except SocketError:
                return
            if not d:
                return
            into += d

    def teardown(self) -> None:
        try:
            self.closed = True
            self.s.on_readable(lambda us: self._drain(us, self.got))
            self.c.on_readable(lambda us: self._drain(us, self.rgot))
            self._drain(self.s, self.got)
            self._drain(self.c, self.rgot)
            self.ua.close()
            self.ub.close()
            self.c.shutdown(1)
            self.s.shutdown(1)
            self._run(None)
            self._drain(self.s, self.got)
            self._drain(self.c, self.rgot)
            self.c.close()
            self.s.close()
            self._run(None)
            self._check_stream(self.got, True)
            if self.zc and not self.HAZARD and zc_host(get_layer(self.a)).tx_modified:
                raise CheckFailure("bytes", "the sender waited, yet modified bytes left")
            if self.rgot != self.rexpected:
                raise CheckFailure(
                    "bytes", f"reply: received {len(self.rgot)} bytes (not the ones sent), "
                    f"sent {len(self.rexpected)}"
                )
            for h in (self.a, self.b):
                check_quiescent(get_layer(h))
                check_invariants(h.machine)
            self.p.exit()
            self.q.exit()
            assert self.a.machine.uvm.allocated == self.base_pages, "frames leaked"
        finally:
            self.net.close()
