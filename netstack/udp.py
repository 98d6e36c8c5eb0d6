"""UDP: udp_output and udp_input (``sys/netinet/udp_usrreq.c`` 1.190.2.2).

``PR_ATOMIC|PR_ADDR``: each send is one datagram built by ``sosend`` and
handed straight to ``ip_output``; nothing stays in the send buffer, whose
``sb_hiwat`` (``udp_sendspace``, 9216) is the largest datagram a socket
may send (EMSGSIZE above it, from ``sosend``).  A loaned mbuf therefore
lives exactly as long as the interface (or IP's fragments) hold the chain:
transmit completion or any drop frees it.  The rules and sources are in
``specs/udp.md``.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs

from .mbuf import Mbuf, m_adj, m_copydata, m_freem, m_length, m_prepend, mtod_bytes
from .sockbuf import sbappendaddr
from .sockerr import EADDRINUSE, EADDRNOTAVAIL, EINVAL, EISCONN, EMSGSIZE, ENOBUFS, SocketError
from .socket import PR_ADDR, PR_ATOMIC, SS_ISCONNECTED, Protocol, Socket, soreserve, sorwakeup
from .wire import (
    IP_MAXPACKET,
    IPPROTO_UDP,
    UDP_HDR_LEN,
    IPHeader,
    Malformed,
    UDPHeader,
    inet_aton,
    inet_ntoa,
    pack_udp,
    parse_udp,
)

if TYPE_CHECKING:
    from .ip import IPStack

# udp_usrreq.c: udp_sendspace 9216 ("really max datagram size"),
# udp_recvspace 40 * (1024 + sizeof(struct sockaddr_in)).
UDP_SENDSPACE = 9216
UDP_RECVSPACE = 40 * (1024 + 16)
# in.h: the default anonymous port range (IP_PORTRANGE_DEFAULT).
ANONPORTMIN = 49152
ANONPORTMAX = 65535


def pack_sockaddr(addr: int, port: int) -> bytes:
    return addr.to_bytes(4, "big") + port.to_bytes(2, "big")


def unpack_sockaddr(b: bytes) -> tuple[str, int]:
    return inet_ntoa(int.from_bytes(b[0:4], "big")), int.from_bytes(b[4:6], "big")


@attrs.define(slots=True, eq=False)
class InPcb:
    """``struct inpcb``: the local and foreign address and port (0 = unset)."""

    so: Socket
    laddr: int = 0
    lport: int = 0
    faddr: int = 0
    fport: int = 0


@attrs.define(slots=True, eq=False)
class UDPTable:
    """``udbtable`` and ``udpstat`` of one host."""

    stack: IPStack
    pcbs: dict[int, InPcb] = attrs.field(factory=dict)  # by local port
    udpstat: Counter[str] = attrs.field(factory=Counter)
    next_anon: int = ANONPORTMIN

    def anon_port(self) -> int:
        for _ in range(ANONPORTMAX - ANONPORTMIN + 1):
            p = self.next_anon
            self.next_anon = p + 1 if p < ANONPORTMAX else ANONPORTMIN
            if p not in self.pcbs:
                return p
        raise SocketError(EADDRINUSE, "no anonymous UDP port left")


def udp_table(stack: IPStack) -> UDPTable:
    t = stack.pcbs.get("udp")
    if t is None:
        t = UDPTable(stack)
        stack.pcbs["udp"] = t
        stack.register(IPPROTO_UDP, lambda m, ip, ifp: udp_input(t, m, ip))
    assert isinstance(t, UDPTable)
    return t


class UDPProtocol(Protocol):
    name = "udp"
    pr_flags = PR_ATOMIC | PR_ADDR

    def __init__(self, table: UDPTable) -> None:
        self.table = table

    def attach(self, so: Socket) -> None:
        if not soreserve(so, UDP_SENDSPACE, UDP_RECVSPACE):
            raise SocketError(ENOBUFS, "soreserve failed")
        so.so_pcb = InPcb(so)

    def pcb(self, so: Socket) -> InPcb:
        p = so.so_pcb
        assert isinstance(p, InPcb)
        return p

    def bind(self, so: Socket, addr: int, port: int) -> None:
        """in_pcbbind: a local address of this host (or any), a free port (0: anonymous)."""
        inp = self.pcb(so)
        if inp.lport:
            raise SocketError(EINVAL, "socket is already bound")
        if addr and addr not in self.table.stack.addrs:
            raise SocketError(EADDRNOTAVAIL, f"{inet_ntoa(addr)} is not an address of this host")
        if port == 0:
            port = self.table.anon_port()
        elif port in self.table.pcbs:
            raise SocketError(EADDRINUSE, f"UDP port {port} is in use")
        inp.laddr = addr
        inp.lport = port
        self.table.pcbs[port] = inp

    def connect(self, so: Socket, addr: int, port: int) -> None:
        inp = self.pcb(so)
        if port == 0 or addr == 0:
            raise SocketError(EADDRNOTAVAIL, "connect to port 0 or address 0.0.0.0")
        if not inp.lport:
            self.bind(so, 0, 0)
        inp.faddr, inp.fport = addr, port
        so.so_state |= SS_ISCONNECTED

    def send(self, so: Socket, top: Mbuf, addr: Any) -> None:
        """udp_output: prepend the header, ip_output; the chain is consumed."""
        inp = self.pcb(so)
        t = self.table
        if addr is not None:
            if so.so_state & SS_ISCONNECTED:
                m_freem(top)
                raise SocketError(EISCONN, "sendto on a connected UDP socket")
            dst, dport = addr
        else:
            dst, dport = inp.faddr, inp.fport
        if dport == 0 or dst == 0:
            m_freem(top)
            raise SocketError(EADDRNOTAVAIL, "send to port 0 or address 0.0.0.0")
        if not inp.lport:
            try:
                self.bind(so, 0, 0)
            except SocketError:
                m_freem(top)
                raise
        length = m_length(top)
        if length + 28 > IP_MAXPACKET:
            m_freem(top)
            raise SocketError(EMSGSIZE, f"{length}-byte datagram exceeds IP_MAXPACKET")
        m = m_prepend(top, UDP_HDR_LEN)
        mtod_bytes(m)[0:UDP_HDR_LEN] = pack_udp(
            UDPHeader(inp.lport, dport, length + UDP_HDR_LEN, 0)
        )
        t.udpstat["udps_opackets"] += 1
        mach = t.stack.machine
        mach.platform.charge(mach.profile.costs.per_packet_ns)  # udp_output's work per datagram
        src = inp.laddr or None
        err = t.stack.ip_output(m, src, dst, IPPROTO_UDP)
        if err:
            raise SocketError(err, "ip_output failed")

    def detach(self, so: Socket) -> None:
        inp = so.so_pcb
        if isinstance(inp, InPcb) and inp.lport and self.table.pcbs.get(inp.lport) is inp:
            del self.table.pcbs[inp.lport]
        so.so_pcb = None


def udp_input(t: UDPTable, m: Mbuf, ip: IPHeader) -> None:
    """Validate, checksum, find the socket, append with the sender's address."""
    st = t.udpstat
    st["udps_ipackets"] += 1
    mach = t.stack.machine
    mach.platform.charge(mach.profile.costs.per_packet_ns)  # udp_input's work per datagram
    n = m_length(m)
    hdr = m_copydata(m, 0, min(n, UDP_HDR_LEN))
    uh = parse_udp(hdr, n)
    if isinstance(uh, Malformed):
        st[uh.stat] += 1
        m_freem(m)
        return
    if uh.dport == 0:
        # "destination port of 0 is illegal, based on RFC768": dropped.
        m_freem(m)
        return
    if uh.ulen < n:
        m_adj(m, uh.ulen - n)
    if uh.sum and not t.stack.in4_cksum_ok(m, ip):
        st["udps_badsum"] += 1
        m_freem(m)
        return
    inp = t.pcbs.get(uh.dport)
    if (
        inp is None
        or (inp.laddr and inp.laddr != ip.dst)
        or (inp.fport and (inp.fport != uh.sport or inp.faddr != ip.src))
    ):
        st["udps_noport"] += 1
        m_freem(m)
        return
    m_adj(m, UDP_HDR_LEN)
    so = inp.so
    if not sbappendaddr(so.so_rcv, pack_sockaddr(ip.src, uh.sport), m):
        st["udps_fullsock"] += 1
        m_freem(m)
        return
    sorwakeup(so)


def parse_addr(addr: object) -> tuple[int, int]:
    """(dotted or int address, port) -> (int, int); ValueError names the problem."""
    if not isinstance(addr, tuple) or len(addr) != 2:
        raise ValueError(f"address must be (host, port), got {addr!r}")
    host, port = addr
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int 0..65535, got {port!r}")
    if host in ("", None):
        return 0, port
    try:
        a = inet_aton(host)
    except (ValueError, TypeError) as e:
        raise ValueError(f"bad IPv4 address {host!r}: {e}") from None
    return a, port


__all__ = [
    "UDP_RECVSPACE",
    "UDP_SENDSPACE",
    "InPcb",
    "UDPProtocol",
    "UDPTable",
    "parse_addr",
    "udp_input",
    "udp_table",
]
