"""The TCP glue: sockets <-> the sans-I/O TCP core <-> ip_output.

What ``sys/netinet/tcp_usrreq.c`` (PRU_SEND, PRU_RCVD, PRU_CONNECT, ...),
the socket half of ``tcp_input.c`` (pcb lookup, sonewconn, sbappendstream)
and ``tcp_output.c`` (``tcp_build_datapkt``: the payload of a segment is
``m_copym`` of the send buffer, so a retransmission carries the very mbufs,
and the very loaned pages, of the first transmission) do around the
protocol state machine, which lives in ``netstack.tcp`` and never sees a
byte, an mbuf or a clock.

Payload ownership: a received chain is handed to the core as
``Segment.payload``; the core returns it in ``Deliver`` or keeps it in its
reassembly queue.  After every ``handle`` the glue frees each payload that
was neither delivered nor is still queued, so nothing leaks whatever the
core decides.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from uvmloan.errors import KernelAssertion

from .mbuf import (
    M_EXT,
    M_EXT_PAGES,
    M_EXT_ROMAP,
    MHLEN,
    Mbuf,
    m_adj,
    m_copydata,
    m_copym,
    m_freem,
    m_length,
    m_peek,
    m_prepend,
    mtod_bytes,
)
from .sockbuf import sbappendstream, sbdrop, sbflush, sbreserve
from .sockerr import (
    EADDRINUSE,
    EADDRNOTAVAIL,
    ECONNREFUSED,
    EINVAL,
    EISCONN,
    ENOBUFS,
    ENOTCONN,
    EOPNOTSUPP,
    EWOULDBLOCK,
    SocketError,
    WouldSleepForever,
)
from .socket import (
    PR_CONNREQUIRED,
    PR_WANTRCVD,
    SS_CANTRCVMORE,
    SS_CANTSENDMORE,
    SS_ISCONNECTED,
    SS_ISCONNECTING,
    SS_NOFDREF,
    Protocol,
    Socket,
    soalloc,
    sofree,
    soreserve,
    sorwakeup,
)
from .tcp import TCPConnection
from .tcp.config import TCPConfig
from .tcp.events import (
    TH_ACK,
    TH_RST,
    TH_SYN,
    ActiveOpen,
    CancelTimer,
    Closed,
    DataAcked,
    Deliver,
    Established,
    PassiveOpen,
    PeerClosed,
    Segment,
    SetTimer,
    TimerExpired,
    TimerKind,
    Transmit,
    UserAbort,
    UserClose,
    wire_segment,
)
from .tcp.reass import ReassQueue
from .udp import ANONPORTMAX, ANONPORTMIN, InPcb
from .wire import (
    IPPROTO_TCP,
    TCP_HDR_LEN,
    IPHeader,
    Malformed,
    TCPHeader,
    pack_tcp,
    parse_tcp,
)

if TYPE_CHECKING:
    from uvmloan.sim import Timer

    from .ip import IPStack

# struct tcphdr with th_off 5 (0x50) and no options, as wire.pack_tcp lays it out.
_TCP_NOOPT = struct.Struct("!HHIIBBHHH")

# max_linkhdr: room left in front of a header mbuf for the link header.
MAX_LINKHDR = 16
# tcp_usrreq.c: tcp_sendspace / tcp_recvspace 32 KiB.
TCP_SENDSPACE = 32 * 1024
TCP_RECVSPACE = 32 * 1024


@attrs.define(slots=True, eq=False)
class TCPPcb(InPcb):
    """``struct inpcb`` + ``struct tcpcb``: the core's connection and the glue's state."""

    conn: TCPConnection | None = None
    listening: bool = False
    backlog: int = 0
    timers: dict[TimerKind, Timer] = attrs.field(factory=dict)
    # Per timer kind, the callout function _act_set_timer schedules (the
    # kind's tcp_timer_* as a kernel activity): built once per connection
    # and reused at every re-arm, which happens for most segments.
    callouts: dict[TimerKind, Callable[[], None]] = attrs.field(factory=dict)
    pending: dict[int, Mbuf] = attrs.field(factory=dict)  # payloads the core may hold
    delivered: int = 0  # bytes appended to so_rcv
    read_reported: int = 0  # bytes reported to the core as read
    nodelay: bool = False
    closed: bool = False


@attrs.define(slots=True, eq=False)
class TCPTable:
    """``tcbtable`` and ``tcpstat`` of one host."""

    stack: IPStack
    conns: dict[tuple[int, int, int, int], TCPPcb] = attrs.field(factory=dict)
    listeners: dict[int, TCPPcb] = attrs.field(factory=dict)
    ports: Counter[int] = attrs.field(factory=Counter)
    tcpstat: Counter[str] = attrs.field(factory=Counter)
    next_anon: int = ANONPORTMIN

    def anon_port(self) -> int:
        for _ in range(ANONPORTMAX - ANONPORTMIN + 1):
            p = self.next_anon
            self.next_anon = p + 1 if p < ANONPORTMAX else ANONPORTMIN
            if not self.ports[p]:
                return p
        raise SocketError(EADDRINUSE, "no anonymous TCP port left")


def tcp_table(stack: IPStack) -> TCPTable:
    t = stack.pcbs.get("tcp")
    if t is None:
        t = TCPTable(stack)
        stack.pcbs["tcp"] = t
        stack.register(IPPROTO_TCP, functools.partial(tcp_input, t))
    assert isinstance(t, TCPTable)
    return t


class TCPProtocol(Protocol):
    name = "tcp"
    pr_flags = PR_CONNREQUIRED | PR_WANTRCVD

    def __init__(self, table: TCPTable) -> None:
        self.table = table

    # ---------------------------------------------------------- user calls

    def attach(self, so: Socket) -> None:
        if not soreserve(so, TCP_SENDSPACE, TCP_RECVSPACE):
            raise SocketError(ENOBUFS, "soreserve failed")
        so.so_pcb = TCPPcb(so)

    def pcb(self, so: Socket) -> TCPPcb:
        p = so.so_pcb
        if not isinstance(p, TCPPcb):
            raise SocketError(EINVAL, "the socket has no TCP control block")
        return p

    def bind(self, so: Socket, addr: int, port: int) -> None:
        inp = self.pcb(so)
        t = self.table
        if inp.lport:
            raise SocketError(EINVAL, "socket is already bound")
        if addr and addr not in t.stack.addrs:
            raise SocketError(EADDRNOTAVAIL, "not an address of this host")
        if port == 0:
            port = t.anon_port()
        elif t.ports[port]:
            raise SocketError(EADDRINUSE, f"TCP port {port} is in use")
        inp.laddr, inp.lport = addr, port
        t.ports[port] += 1

    def listen(self, so: Socket, backlog: int) -> None:
        inp = self.pcb(so)
        if so.so_state & (SS_ISCONNECTED | SS_ISCONNECTING):
            raise SocketError(EINVAL, "listen on a connected socket")
        if not inp.lport:
            self.bind(so, 0, 0)
        inp.listening = True
        so.so_qlimit = max(backlog, 0)
        self.table.listeners[inp.lport] = inp

    def _config(self, so: Socket, inp: TCPPcb, dst: int) -> TCPConfig:
        t = self.table
        ifp = t.stack.route(dst)
        mtu = ifp.if_mtu if ifp is not None else 1500
        iss = zlib.crc32(
            f"{t.stack.host.net.seed}:{inp.laddr}:{inp.lport}:{dst}:{inp.fport}".encode()
        )
        return TCPConfig(
            mss=max(216, mtu - 40),
            sndbuf=so.so_snd.sb_hiwat,
            rcvbuf=so.so_rcv.sb_hiwat,
            nodelay=inp.nodelay,
            iss=iss,
        )

    def connect(self, so: Socket, addr: int, port: int) -> None:
        inp = self.pcb(so)
        t = self.table
        if inp.listening:
            raise SocketError(EOPNOTSUPP, "connect on a listening socket")
        if so.so_state & SS_ISCONNECTED:
            raise SocketError(EISCONN, "already connected")
        if so.so_state & SS_ISCONNECTING:
            raise SocketError(EINVAL, "a connect is already in progress")
        if port == 0 or addr == 0:
            raise SocketError(EADDRNOTAVAIL, "connect to port 0 or address 0.0.0.0")
        if t.stack.route(addr) is None:
            raise SocketError(65, "no route to host")  # EHOSTUNREACH
        if not inp.lport:
            self.bind(so, 0, 0)
        if not inp.laddr:
            src = t.stack.source_for(addr)
            assert src is not None
            inp.laddr = src
        inp.faddr, inp.fport = addr, port
        key = (inp.laddr, inp.lport, inp.faddr, inp.fport)
        if key in t.conns:
            raise SocketError(EADDRINUSE, "that connection already exists")
        t.conns[key] = inp
        inp.conn = TCPConnection(self._config(so, inp, addr))
        so.so_state |= SS_ISCONNECTING
        self.drive(so, ActiveOpen())
        # connect(2) on a blocking socket sleeps until the handshake ends.
        layer = so.layer
        if not so.so_state & 0x080:  # SS_NBIO
            ok = layer.wait(lambda: not so.so_state & SS_ISCONNECTING)
            if not ok:
                raise WouldSleepForever("connect: no answer")
            if so.so_error:
                err, so.so_error = so.so_error, 0
                raise SocketError(err, "connect failed")
            if not so.so_state & SS_ISCONNECTED:
                raise SocketError(ECONNREFUSED, "connection refused")

    def accept(self, so: Socket, flags: int) -> tuple[Socket, tuple[str, int]]:
        from .wire import inet_ntoa

        inp = self.pcb(so)
        if not inp.listening:
            raise SocketError(EINVAL, "accept on a socket that is not listening")
        if not so.so_q:
            if flags & 0x80:
                raise SocketError(EWOULDBLOCK, "no connection to accept")
            if not so.layer.wait(lambda: bool(so.so_q)):
                raise WouldSleepForever("accept: nobody connects")
        nso = so.so_q.pop(0)
        nso.so_head = None
        ninp = self.pcb(nso)
        return nso, (inet_ntoa(ninp.faddr), ninp.fport)

    def send(self, so: Socket, top: Mbuf, addr: Any) -> None:
        """PRU_SEND: append to so_snd (sbappendstream), tell the core."""
        inp = self.pcb(so)
        n = m_length(top)
        if addr is not None:
            m_freem(top)
            raise SocketError(EISCONN, "sendto on a connected TCP socket")
        if inp.conn is None or inp.closed:
            m_freem(top)
            raise SocketError(ENOTCONN, "not connected")
        top.m_nextpkt = None
        sbappendstream(so.so_snd, top)
        if n:
            # drive(so, SendQueued(n)) without building the event
            conn = inp.conn
            self._carry_out(so, inp, conn.handle_send_queued(n, self.table.stack.host.clock()))

    def unsent(self, so: Socket) -> int:
        """Bytes at the end of so_snd not yet transmitted once (beyond snd_max)."""
        inp = so.so_pcb
        if not isinstance(inp, TCPPcb) or inp.conn is None:
            return so.so_snd.sb_cc
        conn = inp.conn
        return max(0, so.so_snd.sb_cc - ((conn.snd_max - conn.snd_una) & 0xFFFFFFFF))

    def rcvd(self, so: Socket) -> None:
        """PRU_RCVD: report what the user read; the window may open."""
        inp = so.so_pcb
        if not isinstance(inp, TCPPcb) or inp.conn is None or inp.closed:
            return
        read = inp.delivered - so.so_rcv.sb_cc - inp.read_reported
        if read > 0:
            inp.read_reported += read
            # drive(so, ReceiveRead(read)) without building the event
            conn = inp.conn
            self._carry_out(so, inp, conn.handle_receive_read(read, self.table.stack.host.clock()))

    def shutdown(self, so: Socket) -> None:
        inp = self.pcb(so)
        if inp.conn is not None and not inp.closed:
            self.drive(so, UserClose())

    def disconnect(self, so: Socket) -> None:
        """close(2): FIN after the queued data (a listener: drop its queue)."""
        inp = so.so_pcb
        if not isinstance(inp, TCPPcb):
            return
        so.so_state |= SS_NOFDREF
        if inp.listening:
            queued, so.so_q = list(so.so_q), []
            for q in queued:
                # soclose of a listener aborts what nobody accepted.
                q.so_state |= SS_NOFDREF
                q.so_head = None
                qp = q.so_pcb
                if isinstance(qp, TCPPcb) and qp.conn is not None and not qp.closed:
                    self.drive(q, UserAbort())
                elif q.so_pcb is None:
                    sofree(q)
            return
        if inp.conn is not None and not inp.closed:
            so.so_state |= SS_CANTSENDMORE
            self.drive(so, UserClose())

    def detach(self, so: Socket) -> None:
        inp = so.so_pcb
        if not isinstance(inp, TCPPcb):
            return
        if inp.conn is None or inp.closed:
            self._release(so, inp)

    def set_nodelay(self, so: Socket, on: bool) -> None:
        inp = self.pcb(so)
        inp.nodelay = on
        if inp.conn is not None and hasattr(inp.conn, "set_nodelay"):
            inp.conn.set_nodelay(on)

    def sockbuf_changed(self, so: Socket) -> None:
        inp = self.pcb(so)
        if inp.conn is not None and hasattr(inp.conn, "set_buffers"):
            inp.conn.set_buffers(so.so_snd.sb_hiwat, so.so_rcv.sb_hiwat)

    # ----------------------------------------------------------- the core

    def _release(self, so: Socket, inp: TCPPcb) -> None:
        """The pcb goes: cancel callouts, free what the core held, free the socket."""
        t = self.table
        for tm in inp.timers.values():
            tm.cancel()
        inp.timers.clear()
        inp.callouts.clear()  # they refer to the pcb and the socket
        for m in inp.pending.values():
            m_freem(m)
        inp.pending.clear()
        key = (inp.laddr, inp.lport, inp.faddr, inp.fport)
        if t.conns.get(key) is inp:
            del t.conns[key]
        if inp.listening and t.listeners.get(inp.lport) is inp:
            del t.listeners[inp.lport]
        if inp.lport and inp.so is so and t.ports[inp.lport]:
            t.ports[inp.lport] -= 1
            if not t.ports[inp.lport]:
                del t.ports[inp.lport]
        so.so_pcb = None
        if so.so_state & SS_NOFDREF:
            sofree(so)

    def drive(self, so: Socket, ev: Any) -> None:
        """Hand one event to the core and carry out its actions."""
        inp = self.pcb(so)
        conn = inp.conn
        if conn is None:
            raise KernelAssertion(f"{so!r}: no TCP connection to drive")
        self._carry_out(so, inp, conn.handle(ev, self.table.stack.host.clock()))

    def drive_segment(self, so: Socket, inp: TCPPcb, seg: Segment) -> None:
        """tcp_input's hand-off to the core for a segment of ``inp``'s connection."""
        conn = inp.conn
        assert conn is not None
        self._carry_out(so, inp, conn.handle_segment(seg, self.table.stack.host.clock()))

    def _carry_out(self, so: Socket, inp: TCPPcb, actions: list[Any]) -> None:
        for a in actions:
            _ACTORS[type(a)](self, so, inp, a)
        if inp.pending:
            conn = inp.conn
            assert conn is not None
            held = {id(e.payload) for q in _reass_queues(conn) for _s, e in q.entries()}
            for k in [k for k in inp.pending if k not in held]:
                m_freem(inp.pending.pop(k))

    def _act(self, so: Socket, inp: TCPPcb, a: Any) -> None:
        _ACTORS[type(a)](self, so, inp, a)

    def _act_acked(self, so: Socket, inp: TCPPcb, a: DataAcked) -> None:
        if a.nbytes:
            sbdrop(so.so_snd, a.nbytes)

    def _act_deliver(self, so: Socket, inp: TCPPcb, a: Deliver) -> None:
        m = inp.pending.pop(id(a.payload), None)
        if m is None:
            # Delivered twice, or not ours: share what is needed.
            assert isinstance(a.payload, Mbuf)
            m = m_copym(a.payload, 0, m_length(a.payload))
        if a.skip:
            m_adj(m, a.skip)
        extra = (m.m_len if m.m_next is None else m_length(m)) - a.length
        if extra > 0:
            m_adj(m, -extra)
        if a.length == 0 or so.so_state & SS_CANTRCVMORE:
            m_freem(m)
        else:
            sbappendstream(so.so_rcv, m)
            inp.delivered += a.length
            sorwakeup(so)

    def _act_set_timer(self, so: Socket, inp: TCPPcb, a: SetTimer) -> None:
        kind = a.kind
        timers = inp.timers
        old = timers.pop(kind, None)
        if old is not None:
            old.cancel()
        host = self.table.stack.host
        fn = inp.callouts.get(kind)
        if fn is None:
            # host.schedule's activity wrapper around _timer, made once
            fn = inp.callouts[kind] = functools.partial(
                host.kernel, functools.partial(self._timer, so, inp, kind), None
            )
        # host.schedule(a.when, ...), inlined: a timer is set for most segments
        sched = host.net.sched
        now = sched.now
        when = a.when
        t = timers[kind] = sched.post(when if when > now else now, fn)
        if kind is TimerKind.PERSIST:
            host.net.note_background(t)

    def _act_cancel_timer(self, so: Socket, inp: TCPPcb, a: CancelTimer) -> None:
        old = inp.timers.pop(a.kind, None)
        if old is not None:
            old.cancel()

    def _act_established(self, so: Socket, inp: TCPPcb, a: Established) -> None:
        so.so_state = (so.so_state & ~SS_ISCONNECTING) | SS_ISCONNECTED
        head = so.so_head
        if head is not None and so not in head.so_q:
            head.so_q.append(so)
            sorwakeup(head)
        sorwakeup(so)

    def _act_peer_closed(self, so: Socket, inp: TCPPcb, a: PeerClosed) -> None:
        so.so_state |= SS_CANTRCVMORE
        sorwakeup(so)

    def _act_closed(self, so: Socket, inp: TCPPcb, a: Closed) -> None:
        if a.errno is not None:
            so.so_error = a.errno
        so.so_state &= ~(SS_ISCONNECTING | SS_ISCONNECTED)
        so.so_state |= SS_CANTRCVMORE | SS_CANTSENDMORE
        inp.closed = True
        sorwakeup(so)
        head = so.so_head
        if head is not None and so in head.so_q and so.so_state & SS_NOFDREF:
            head.so_q.remove(so)
        self._release(so, inp)

    def _timer(self, so: Socket, inp: TCPPcb, kind: TimerKind) -> None:
        inp.timers.pop(kind, None)
        if inp.conn is not None and not inp.closed:
            self.drive(so, TimerExpired(kind))

    def _output(self, so: Socket, inp: TCPPcb, a: Transmit) -> None:
        """tcp_output's packet: the payload is m_copym of the send buffer."""
        t = self.table
        layer = so.layer
        hdr: bytes | bytearray | None
        if a.mss is None and a.wscale is None:
            # no options (every segment after the handshake): the 20 bytes
            # pack_tcp would lay out, packed in place below without building
            # a TCPHeader first
            hdr = None
            hlen = TCP_HDR_LEN
        else:
            hdr = pack_tcp(
                TCPHeader(
                    inp.lport, inp.fport, a.seq, a.ack, a.flags, a.wnd, mss=a.mss,
                    wscale=a.wscale,
                )
            )
            hlen = len(hdr)
        # tcp_build_datapkt: data that fits the header mbuf's trailing space
        # (MHLEN - max_linkhdr - IP and TCP headers) is copied there with
        # m_copydata (the CPU reads loaned pages through their KVA); more is
        # shared with m_copym (no bytes move; the loan rides along).
        room = MHLEN - MAX_LINKHDR - 20 - hlen
        sb = so.so_snd.sb_mb
        if a.data_len and a.data_len <= room:
            assert sb is not None
            m = layer.pool.m_gethdr()
            m.m_data = MAX_LINKHDR + 20
            m.m_len = hlen + a.data_len
            mtod_bytes(m)[hlen:] = m_copydata(sb, a.data_offset, a.data_len)
        else:
            payload: Mbuf | None = None
            if a.data_len:
                assert sb is not None
                payload = m_copym(sb, a.data_offset, a.data_len)
                if a.retransmit and "forget-retransmit-ref" in layer.inject:
                    _forget_refs(payload)
            else:
                payload = layer.pool.m_gethdr()
                payload.m_data = MAX_LINKHDR + 20 + hlen
            m = m_prepend(payload, hlen)
        if hdr is None:
            # into the storage at m_data (mtod without the view; M_PREPEND
            # made the 20 bytes)
            assert m.m_len >= TCP_HDR_LEN
            buf = m.m_dat if not m.m_flags & M_EXT else m._kmem()
            assert buf is not None
            _TCP_NOOPT.pack_into(
                buf, m.m_data, inp.lport, inp.fport, a.seq, a.ack, 0x50, a.flags, a.wnd, 0, 0
            )
        else:
            mtod_bytes(m)[0:hlen] = hdr
        st = t.tcpstat
        st["tcps_sndtotal"] += 1
        plat = t.stack.plat
        plat.cpus[plat.cur].clock += t.stack.per_packet_ns  # tcp_output's work per segment
        if a.data_len:
            st["tcps_sndrexmitpack" if a.retransmit else "tcps_sndpack"] += 1
            if _has_loan(m):
                st["tcps_sndrexmitloaned" if a.retransmit else "tcps_sndloaned"] += 1
        t.stack.ip_output(m, inp.laddr, inp.faddr, IPPROTO_TCP)


# What the glue does with each kind of action the core returns (one dict
# lookup per action rather than a chain of isinstance tests).
_ACTORS: dict[type, Any] = {
    Transmit: TCPProtocol._output,
    DataAcked: TCPProtocol._act_acked,
    Deliver: TCPProtocol._act_deliver,
    SetTimer: TCPProtocol._act_set_timer,
    CancelTimer: TCPProtocol._act_cancel_timer,
    Established: TCPProtocol._act_established,
    PeerClosed: TCPProtocol._act_peer_closed,
    Closed: TCPProtocol._act_closed,
}


def _has_loan(m: Mbuf) -> bool:
    cur: Mbuf | None = m
    while cur is not None:
        if cur.m_flags & M_EXT_ROMAP:
            return True
        cur = cur.m_next
    return False


def _forget_refs(m: Mbuf) -> None:
    """The injected bug: the copy does not hold its reference to loaned storage."""
    for x in m.chain():
        ext = x.m_ext
        if x.m_flags & M_EXT_PAGES and ext is not None and ext.ext_refcnt > 1:
            ext.ext_refcnt -= 1


def _reass_queues(conn: TCPConnection) -> list[ReassQueue]:
    """The core's reassembly queue (tp->segq): the payloads it still holds."""
    return [conn.segq]


def _send_rst(t: TCPTable, ip: IPHeader, th: TCPHeader, seglen: int) -> None:
    """tcp_respond for a segment to nobody (RFC 9293 3.10.7.1)."""
    if th.flags & TH_RST:
        return
    pool = t.stack.mbpool
    if th.flags & TH_ACK:
        h = TCPHeader(th.dport, th.sport, th.ack, 0, TH_RST, 0)
    else:
        h = TCPHeader(th.dport, th.sport, 0, (th.seq + seglen) & 0xFFFFFFFF, TH_RST | TH_ACK, 0)
    hdr = pack_tcp(h)
    m = m_prepend(pool.m_gethdr(), len(hdr))
    mtod_bytes(m)[0 : len(hdr)] = hdr
    t.tcpstat["tcps_sndctrl"] += 1
    t.stack.ip_output(m, ip.dst, ip.src, IPPROTO_TCP)


def tcp_input(t: TCPTable, m: Mbuf, ip: IPHeader, _ifp: object = None) -> None:
    """Validate, checksum, find the pcb (or a listener: sonewconn), drive the core."""
    st = t.tcpstat
    st["tcps_rcvtotal"] += 1
    plat = t.stack.plat
    plat.cpus[plat.cur].clock += t.stack.per_packet_ns  # tcp_input's work per segment
    n = m.m_len if m.m_next is None else m_length(m)  # one cluster: no walk
    # the header is read in place (tcp_input's M_REGION_GET of a header
    # that sits contiguous in the first mbuf), not copied
    th: TCPHeader | Malformed | None = None
    fl = m.m_flags
    kb: bytearray | None = None
    if m.m_len >= TCP_HDR_LEN and not fl & M_EXT_PAGES:
        kb = m.m_dat if not fl & M_EXT else m._kmem()
    if kb is not None and kb[m.m_data + 12] == 0x50:
        # th_off 5, no options (every segment after the handshake): the
        # fixed header is all parse_tcp would read, so unpack it here,
        # from the storage at m_data (m_peek without the view)
        sport, dport, seq, ack, _off, flags, win, _sum, _urp = _TCP_NOOPT.unpack_from(
            kb, m.m_data
        )
        hlen = TCP_HDR_LEN
        mss = wscale = None
    else:
        th = parse_tcp(m_peek(m, min(n, 60)), n)
        if isinstance(th, Malformed):
            st[th.stat] += 1
            m_freem(m)
            return
        sport, dport, seq, ack, flags, win = th.sport, th.dport, th.seq, th.ack, th.flags, th.win
        hlen, mss, wscale = th.hlen, th.mss, th.wscale
    if not t.stack.in4_cksum_ok(m, ip):
        st["tcps_rcvbadsum"] += 1
        m_freem(m)
        return
    plen = n - hlen
    inp = t.conns.get((ip.dst, dport, ip.src, sport))
    if inp is None or inp.closed:
        full = parse_tcp(m_peek(m, min(n, 60)), n) if th is None else th
        assert not isinstance(full, Malformed)
        m_adj(m, hlen)
        seglen = plen + (1 if flags & TH_SYN else 0) + (1 if flags & 0x01 else 0)
        lis = t.listeners.get(dport)
        if lis is None or not flags & TH_SYN or flags & (TH_ACK | TH_RST):
            st["tcps_noport" if lis is None else "tcps_drops"] += 1
            m_freem(m)
            if lis is None or flags & TH_ACK:
                _send_rst(t, ip, full, seglen)
            return
        inp = _sonewconn(t, lis, ip, full)
        if inp is None:
            st["tcps_listendrop"] += 1
            m_freem(m)
            return
    else:
        m_adj(m, hlen)
    so = inp.so
    proto = so.proto
    assert isinstance(proto, TCPProtocol)
    seg = wire_segment(seq, ack, flags, win, mss, wscale, plen, m if plen else None)
    if plen:
        inp.pending[id(m)] = m
    else:
        m_freem(m)
    proto.drive_segment(so, inp, seg)


def _sonewconn(t: TCPTable, lis: TCPPcb, ip: IPHeader, th: TCPHeader) -> TCPPcb | None:
    head = lis.so
    if len(head.so_q) > 3 * max(head.so_qlimit, 1) // 2:
        return None
    proto = head.proto
    assert isinstance(proto, TCPProtocol)
    so = soalloc(head.layer, proto)
    sbreserve(so.so_snd, head.so_snd.sb_hiwat)
    sbreserve(so.so_rcv, head.so_rcv.sb_hiwat)
    inp = proto.pcb(so)
    inp.laddr, inp.lport, inp.faddr, inp.fport = ip.dst, th.dport, ip.src, th.sport
    inp.nodelay = lis.nodelay
    t.conns[(inp.laddr, inp.lport, inp.faddr, inp.fport)] = inp
    so.so_head = head
    so.so_state |= SS_ISCONNECTING
    inp.conn = TCPConnection(proto._config(so, inp, ip.src))
    proto.drive(so, PassiveOpen())
    return inp


def tcp_drain_close(so: Socket) -> None:
    """Flush both buffers of a socket whose connection is gone (teardown)."""
    sbflush(so.so_snd)
    sbflush(so.so_rcv)


__all__ = [
    "TCP_RECVSPACE",
    "TCP_SENDSPACE",
    "TCPPcb",
    "TCPProtocol",
    "TCPTable",
    "tcp_input",
    "tcp_table",
]
