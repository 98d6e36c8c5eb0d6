"""Test helpers: two hosts on a link, hand-built UDP/TCP packets and a sink.

These drive the lower half of the stack (ip, netif, link) directly, below
any socket or TCP state machine.
"""

from __future__ import annotations

from typing import Any

import attrs

from netstack.ip import IPStack
from netstack.link import Link
from netstack.mbuf import (
    M_EXT_PAGES,
    M_EXT_ROMAP,
    MEXTADD,
    MT_DATA,
    Mbuf,
    m_append,
    m_copydata,
    m_freem,
    m_length,
)
from netstack.netif import Netif
from netstack.network import Host, Network
from netstack.wire import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    TH_ACK,
    TH_FIN,
    TH_PUSH,
    TH_SYN,
    IPHeader,
    TCPHeader,
    UDPHeader,
    pack_tcp,
    pack_udp,
    parse_tcp,
    parse_udp,
)
from uvmloan.page import Page

KVA_BASE = 0xFFFF_8000_4000_0000


def pair(seed: int = 0, **link: Any) -> tuple[Network, Host, Host, Link]:
    net = Network(seed=seed)
    a = net.host("a", memory="4M")
    b = net.host("b", memory="4M")
    lk = net.link(a, b, **link)
    return net, a, b, lk


def ifp(lk: Link, i: int) -> Netif:
    end = lk.ends[i]
    assert isinstance(end, Netif)
    return end


def kmem_chain(host: Host, data: bytes) -> Mbuf:
    """A packet of kernel memory (small mbufs and clusters)."""
    m = host.stack.mbpool.m_gethdr()
    m_append(m, data)
    return m


def page_mbuf(host: Host, data: bytes, offset: int = 0) -> tuple[Mbuf, list[Page]]:
    """An M_EXT_PAGES mbuf over fresh arena pages holding ``data`` at
    ``offset`` in the first page (as sosend_loan builds one)."""
    mach = host.machine
    ps = mach.page_size
    npages = -(-(offset + len(data)) // ps)
    pages = []
    for _ in range(npages):
        pg = mach.uvm.uvm_pagealloc(None, 0, None)
        assert pg is not None
        pages.append(pg)
    mach.physmem.copyin([p.frame for p in pages], offset, data)
    m = host.stack.mbpool.m_get(MT_DATA)
    ext = MEXTADD(m, KVA_BASE + offset, len(data), None, None)
    ext.ext_pgs = pages
    m.m_flags |= M_EXT_PAGES | M_EXT_ROMAP
    m.m_len = len(data)
    return m, pages


def free_pages(host: Host, pages: list[Page]) -> None:
    for pg in pages:
        host.machine.uvm.uvm_pagefree(pg)


def with_header(host: Host, hdr: bytes | bytearray, payload: Mbuf | None) -> Mbuf:
    m = host.stack.mbpool.m_gethdr()
    m_append(m, hdr)
    m.m_next = payload
    m.m_pkthdr_len = m_length(m)
    return m


def udp_out(host: Host, dst: int, payload: bytes | Mbuf, sport: int = 1000,
            dport: int = 2000, **kw: Any) -> int:
    """ip_output of one UDP datagram, run as a kernel activity."""

    def run() -> int:
        body = kmem_chain(host, payload) if isinstance(payload, bytes) else payload
        n = m_length(body)
        m = with_header(host, pack_udp(UDPHeader(sport, dport, 8 + n)), body)
        return host.stack.ip_output(m, None, dst, IPPROTO_UDP, **kw)

    return host.kernel(run)


def tcp_out(host: Host, dst: int, h: TCPHeader, payload: bytes | Mbuf | None = None) -> int:
    def run() -> int:
        body: Mbuf | None
        if isinstance(payload, bytes):
            body = kmem_chain(host, payload) if payload else None
        else:
            body = payload
        m = with_header(host, pack_tcp(h), body)
        return host.stack.ip_output(m, None, dst, IPPROTO_TCP)

    return host.kernel(run)


@attrs.define
class Got:
    when: int
    ip: IPHeader
    hdr: Any
    payload: bytes
    cksum_ok: bool


@attrs.define
class Sink:
    """pr_input for UDP and TCP that records what arrived and frees it."""

    stack: IPStack
    got: list[Got] = attrs.field(factory=list)
    bad: list[str] = attrs.field(factory=list)

    def attach(self) -> Sink:
        self.stack.register(IPPROTO_UDP, self.input)
        self.stack.register(IPPROTO_TCP, self.input)
        return self

    def input(self, m: Mbuf, ip: IPHeader, _ifp: Netif) -> None:
        n = m_length(m)
        head = m_copydata(m, 0, min(n, 60))
        hdr: Any
        if ip.p == IPPROTO_UDP:
            hdr = parse_udp(head, n)
            hl = 8
        else:
            hdr = parse_tcp(head, n)
            hl = getattr(hdr, "hlen", 20)
        ok = self.stack.in4_cksum_ok(m, ip)
        if not isinstance(hdr, UDPHeader | TCPHeader):
            self.bad.append(hdr.stat)
        else:
            self.got.append(Got(self.stack.host.net.now, ip, hdr,
                                m_copydata(m, hl, n - hl), ok))
        m_freem(m)

    def stream(self) -> bytes:
        return b"".join(g.payload for g in sorted(
            (g for g in self.got if isinstance(g.hdr, TCPHeader)), key=lambda g: g.hdr.seq))


def tcp_flow(net: Network, a: Host, b: Host, lk: Link, data: bytes, mss: int = 1460,
             page_backed: bool = False) -> list[Page]:
    """A scripted TCP connection a:40000 -> b:80 carrying ``data``: handshake,
    the data in MSS-sized segments each acknowledged, FIN both ways."""
    ia, ib = ifp(lk, 0).addr, ifp(lk, 1).addr
    isn_a, isn_b = 1000, 5000
    sa, sb = 40000, 80
    tcp_out(a, ib, TCPHeader(sa, sb, isn_a, 0, TH_SYN, 65535, mss=mss, wscale=3))
    net.run_until_idle()
    tcp_out(b, ia, TCPHeader(sb, sa, isn_b, isn_a + 1, TH_SYN | TH_ACK, 65535, mss=mss,
                             wscale=3))
    net.run_until_idle()
    tcp_out(a, ib, TCPHeader(sa, sb, isn_a + 1, isn_b + 1, TH_ACK, 8192))
    net.run_until_idle()
    pages: list[Page] = []
    seq = isn_a + 1
    for off in range(0, len(data), mss):
        chunk = data[off : off + mss]
        body: bytes | Mbuf = chunk
        if page_backed:
            pm, pgs = page_mbuf(a, chunk, offset=(off * 7) % 4096)
            pages += pgs
            body = pm
        tcp_out(a, ib, TCPHeader(sa, sb, seq, isn_b + 1, TH_ACK | TH_PUSH, 8192), body)
        net.run_until_idle()
        seq += len(chunk)
        tcp_out(b, ia, TCPHeader(sb, sa, isn_b + 1, seq, TH_ACK, 8192))
        net.run_until_idle()
    tcp_out(a, ib, TCPHeader(sa, sb, seq, isn_b + 1, TH_ACK | TH_FIN, 8192))
    net.run_until_idle()
    tcp_out(b, ia, TCPHeader(sb, sa, isn_b + 1, seq + 1, TH_ACK | TH_FIN, 8192))
    net.run_until_idle()
    tcp_out(a, ib, TCPHeader(sa, sb, seq + 1, isn_b + 2, TH_ACK, 8192))
    net.run_until_idle()
    return pages
