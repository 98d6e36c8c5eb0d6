"""IPv4: ip_output, ip_input, fragmentation and reassembly, routes.

One :class:`IPStack` per host: its interfaces (``ifnet``), host routes
(``rt``), the protocol switch (``register``), ``ipstat`` counters with
NetBSD's names (``netinet/ip_var.h`` struct ipstat) and the reassembly
queues.  The behaviour follows NetBSD's ``ip_output()``/``ip_fragment()``
(``sys/netinet/ip_output.c``), ``ip_input()`` (``ip_input.c``) and
``ip_reass_packet()``/``ip_reass()``/``ip_reass_slowtimo()``
(``ip_reass.c`` 1.16); specs/wire.md lists each rule and its source.

Checksums: a TCP or UDP segment handed to :meth:`IPStack.ip_output` has a
zero checksum field.  As ``tcp_output``/``udp_output`` do, the packet is
marked ``M_CSUM_TCPv4``/``M_CSUM_UDPv4`` with ``csum_data`` the field's
offset; if the interface offloads it the NIC fills it while gathering the
frame (not charged), else ``in_delayed_cksum`` sums the mbuf pieces in C and
charges the CPU at ``cksum_bw``.  A datagram that must be fragmented is
always summed in software first (no NIC sums across fragments).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from .mbuf import (
    M_EXT,
    M_EXT_PAGES,
    M_PKTHDR,
    MT_HEADER,
    Mbuf,
    MbufPool,
    m_adj,
    m_cat,
    m_copyback,
    m_copym,
    m_freem,
    m_length,
    m_peek,
    m_pieces,
    m_prepend,
)
from .wire import (
    IP_DF,
    IP_HDR_LEN,
    IP_MAXPACKET,
    IP_MF,
    IP_OFFMASK,
    IPDEFTTL,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPHeader,
    Malformed,
    cksum_pieces,
    parse_ip,
    pseudo_sum,
)

if TYPE_CHECKING:
    from uvmloan.sim import Timer

    from .netif import Netif
    from .network import Host

# sys/errno.h (NetBSD's numbers, not the host's)
EMSGSIZE = 40
ENOBUFS = 55
EHOSTUNREACH = 65

# sys/mbuf.h csum_flags
M_CSUM_TCPv4 = 0x00000001
M_CSUM_UDPv4 = 0x00000002
M_CSUM_TCP_UDP_BAD = 0x00000004
# Not a NetBSD flag.  ip_output sets it where NetBSD calls in_delayed_cksum
# for an interface without offload: the CPU is charged for the sum there and
# then, as in NetBSD, but the sum itself is taken in the same C pass as the
# NIC's DMA read of the chain (pm_gather_cksum over the page frames), and
# the field is written into the frame.  The bytes are the same: nothing
# writes a queued packet's storage (it is shared or read-only), so summing
# at the DMA read sees what in_delayed_cksum would have summed.
M_CSUM_CPU_DEFERRED = 0x40000000
# netinet/ip_var.h, ip.h
IPFRAGTTL = 60  # ip_reass queue lifetime in slow ticks (PR_SLOWHZ 2/s): 30 s
PR_SLOWHZ = 2
SLOWTICK_NS = 1_000_000_000 // PR_SLOWHZ
IP_MINFRAGSIZE = 69  # ip_var.h: smallest first fragment (a 68-byte datagram)
IP_MAXFRAGPACKETS = 200  # ip_reass_init: ip_maxfragpackets

# Offset of the checksum field inside the transport header.
_CSUM_FIELD = {IPPROTO_TCP: 16, IPPROTO_UDP: 6}
_CSUM_FLAG = {IPPROTO_TCP: M_CSUM_TCPv4, IPPROTO_UDP: M_CSUM_UDPv4}

ProtoInput = Callable[[Mbuf, IPHeader, "Netif"], None]
"""pr_input(m, ip, ifp): ``m`` starts at the transport header."""

# Every ipstat counter the model can bump (struct ipstat names).
IPSTAT_NAMES = (
    "ips_total", "ips_badsum", "ips_tooshort", "ips_toosmall", "ips_badhlen", "ips_badlen",
    "ips_badvers", "ips_fragments", "ips_fragdropped", "ips_fragtimeout", "ips_badfrags",
    "ips_toolong", "ips_reassembled", "ips_cantforward", "ips_noproto", "ips_delivered",
    "ips_localout", "ips_odropped", "ips_noroute", "ips_fragmented", "ips_ofragments",
    "ips_cantfrag",
)


@attrs.define(eq=False)
class _Frag:
    """ipfr_qent: one fragment; ``off``/``len`` are its payload bytes."""

    m: Mbuf  # the payload (IP header trimmed off)
    off: int
    len: int
    mff: bool


@attrs.define(eq=False)
class _ReassQueue:
    """ipfr_queue: fragments of one datagram, sorted by offset."""

    key: tuple[int, int, int, int]  # src, dst, id, p
    tos: int
    first: IPHeader | None = None  # the header of the offset-0 fragment
    frags: list[_Frag] = attrs.field(factory=list)
    ttl: int = IPFRAGTTL


def in_delayed_cksum_charge(stack: IPStack, m: Mbuf, hlen: int) -> None:
    """in_delayed_cksum for an unfragmented packet: charge the CPU for the
    sum now; the interface computes it while it gathers the frame
    (``M_CSUM_CPU_DEFERRED``)."""
    bw = stack.cksum_bw
    if bw:  # CostModel.cksum_ns
        plat = stack.plat
        plat.cpus[plat.cur].clock += (m.m_pkthdr_len - hlen) * 1000 // bw
    m.csum_flags |= M_CSUM_CPU_DEFERRED


def in_delayed_cksum(stack: IPStack, m: Mbuf, hlen: int, src: int, dst: int, p: int) -> None:
    """ip_output.c in_delayed_cksum: sum the transport segment over the mbuf
    pieces in C, charge the CPU, store the result in the header mbuf."""
    machine = stack.machine
    total = m_length(m) - hlen
    s = cksum_pieces(machine.physmem, m_pieces(m, hlen, total), pseudo_sum(src, dst, p, total))
    c = ~s & 0xFFFF
    if c == 0 and p == IPPROTO_UDP:
        c = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    machine.platform.charge(machine.profile.costs.cksum_ns(total))
    m_copyback(m, hlen + m.csum_data, struct.pack("!H", c))
    m.csum_flags &= ~(M_CSUM_TCPv4 | M_CSUM_UDPv4)


class IPStack:
    """The inet state of one host."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.machine = host.machine
        self.mbpool = MbufPool(machine=host.machine)
        self.ifnet: list[Netif] = []
        self.rt: dict[int, Netif] = {}
        self.addrs: set[int] = set()
        self.protosw: dict[int, ProtoInput] = {}
        self.ipstat: Counter[str] = Counter()
        # ip_do_randomid is 0 by default: ip_id is a per-host counter.  Its
        # start is derived from the network seed and host name (NetBSD seeds
        # it from the clock) so runs are reproducible.
        self.ip_id = _id_seed(host.net.seed, host.name) or 1
        self.ipq: dict[tuple[int, int, int, int], _ReassQueue] = {}
        self._slowtimo: Timer | None = None
        # Per-protocol state of the layers above (pcb tables ...).
        self.pcbs: dict[str, object] = {}
        # The platform and the profile's per-packet costs, resolved once for
        # the layers' per-packet charges (as the MMU does: a machine's profile
        # never changes; each charge was two calls and four attribute reads).
        # A charge is ``plat.cpus[plat.cur].clock += ns`` (Platform.charge).
        self.plat = host.machine.platform
        costs = host.machine.profile.costs
        self.ip_packet_ns: int = costs.ip_packet_ns
        self.per_packet_ns: int = costs.per_packet_ns
        self.intr_ns: int = costs.intr_ns
        self.cksum_bw: int = costs.cksum_bw
        self.syscall_ns: int = costs.syscall_ns  # the socket layer's, per system call

    # -------------------------------------------------------------- config

    def if_attach(self, ifp: Netif) -> None:
        self.ifnet.append(ifp)
        self.addrs.add(ifp.addr)

    def rt_add(self, dst: int, ifp: Netif) -> None:
        """A host route to ``dst`` through ``ifp``."""
        self.rt[dst] = ifp

    def register(self, proto: int, fn: ProtoInput) -> None:
        """Enter ``fn`` as pr_input for IP protocol ``proto`` (inetsw)."""
        if not isinstance(proto, int) or isinstance(proto, bool) or not 0 <= proto <= 255:
            raise ValueError(f"IP protocol must be an int 0..255, got {proto!r}")
        if not callable(fn):
            raise TypeError("register: the input function must be callable")
        self.protosw[proto] = fn

    def ip_newid(self) -> int:
        """in_var.h ip_newid_range(ia, 1) with ip_do_randomid 0: the counter,
        post-incremented, restarting at 1 rather than wrapping to 0."""
        if (self.ip_id + 1) & 0xFFFF < self.ip_id:
            self.ip_id = 1
        ident = self.ip_id
        self.ip_id = (self.ip_id + 1) & 0xFFFF
        return ident

    def route(self, dst: int) -> Netif | None:
        return self.rt.get(dst)

    def source_for(self, dst: int) -> int | None:
        """The source address ip_output would pick for ``dst`` (in_selectsrc)."""
        ifp = self.rt.get(dst)
        return None if ifp is None else ifp.addr

    # ------------------------------------------------------------- output

    def ip_output(
        self,
        m: Mbuf,
        src: int | None,
        dst: int,
        proto: int,
        *,
        ttl: int = IPDEFTTL,
        tos: int = 0,
        df: bool | None = None,
        csum: bool = True,
    ) -> int:
        """Send transport segment ``m`` to ``dst``; 0 or an errno.

        ``m`` is consumed whatever happens (freed on error, as ip_output
        does).  ``df`` defaults to on for TCP (NetBSD sets IP_DF on TCP
        segments: ip_mtudisc), off otherwise.
        """
        st = self.ipstat
        plat = self.plat
        plat.cpus[plat.cur].clock += self.ip_packet_ns
        ifp = self.rt.get(dst)
        if ifp is None:
            st["ips_noroute"] += 1
            m_freem(m)
            return EHOSTUNREACH
        if src is None:
            src = ifp.addr
        if df is None:
            df = proto == IPPROTO_TCP
        hlen = IP_HDR_LEN
        m = m_prepend(m, hlen)
        if csum:
            flag = _CSUM_FLAG.get(proto)
            if flag is not None:  # TCP or UDP
                m.csum_flags |= flag
                m.csum_data = _CSUM_FIELD[proto]
        m.m_flags |= M_PKTHDR
        length = m_length(m)
        m.m_pkthdr_len = length
        st["ips_localout"] += 1
        ident = self.ip_newid()
        off = IP_DF if df else 0
        mtu = ifp.if_mtu
        if length <= mtu:
            if m.csum_flags & (M_CSUM_TCPv4 | M_CSUM_UDPv4) and not ifp.csum_offload:
                in_delayed_cksum_charge(self, m, hlen)
            _write_ip(m, tos, length, ident, off, ttl, proto, src, dst)
            return ifp.if_output(m)
        if df:
            # ip_output: "if (ntohs(ip->ip_off) & IP_DF) ... IP_STAT_CANTFRAG"
            st["ips_cantfrag"] += 1
            m_freem(m)
            return EMSGSIZE
        if length > IP_MAXPACKET:
            m_freem(m)
            return EMSGSIZE
        if m.csum_flags & (M_CSUM_TCPv4 | M_CSUM_UDPv4):
            in_delayed_cksum(self, m, hlen, src, dst, proto)
        return self._ip_fragment(m, ifp, hlen, length, tos, ident, ttl, proto, src, dst)

    def _ip_fragment(
        self, m: Mbuf, ifp: Netif, hlen: int, length: int, tos: int, ident: int,
        ttl: int, proto: int, src: int, dst: int,
    ) -> int:
        """ip_fragment: payload pieces of (mtu - hlen) & ~7 bytes, each with
        a copy of the header, MF on all but the last."""
        st = self.ipstat
        flen = (ifp.if_mtu - hlen) & ~7
        payload = length - hlen
        frags: list[Mbuf] = []
        pos = 0
        while pos < payload:
            n = min(flen, payload - pos)
            more = pos + n < payload
            hm = self.mbpool.m_gethdr(MT_HEADER)
            hm.m_len = hlen
            hm.m_next = m_copym(m, hlen + pos, n)
            hm.m_pkthdr_len = hlen + n
            fragoff = (pos >> 3) | (IP_MF if more else 0)
            _write_ip(hm, tos, hlen + n, ident, fragoff, ttl, proto, src,
                      dst)
            frags.append(hm)
            pos += n
        m_freem(m)
        st["ips_fragmented"] += 1
        err = 0
        for f in frags:
            if err:
                m_freem(f)
                continue
            self.machine.platform.charge(self.machine.profile.costs.ip_packet_ns)
            err = ifp.if_output(f)
            if err == 0:
                st["ips_ofragments"] += 1
        return err

    # -------------------------------------------------------------- input

    def ip_input(self, m: Mbuf, ifp: Netif) -> None:
        """Validate a received packet, reassemble, deliver by protocol."""
        st = self.ipstat
        machine = self.machine
        plat = self.plat
        cpu = plat.cpus[plat.cur]
        cpu.clock += self.ip_packet_ns
        st["ips_total"] += 1
        pktlen = m.m_len if m.m_next is None else m_length(m)  # one cluster: no walk
        head = m_peek(m, pktlen if pktlen < 60 else 60)
        ip = parse_ip(head, pktlen=pktlen, pm=machine.physmem)
        bw = self.cksum_bw
        if bw:  # CostModel.cksum_ns(min(pktlen, 20))
            cpu.clock += (pktlen if pktlen < 20 else 20) * 1000 // bw
        if isinstance(ip, Malformed):
            st[ip.stat] += 1
            m_freem(m)
            return
        if pktlen > ip.len:
            # ip_input: a link-level frame longer than the datagram is trimmed
            m_adj(m, ip.len - pktlen)
        if ip.dst not in self.addrs:
            # ip_forwarding is 0 by default: not ours, not forwarded
            st["ips_cantforward"] += 1
            m_freem(m)
            return
        if ip.off & (IP_MF | IP_OFFMASK):
            got = self._ip_reass_packet(m, ip)
            if got is None:
                return
            m, ip = got
        else:
            m_adj(m, ip.hlen)
        fn = self.protosw.get(ip.p)
        if fn is None:
            # rip_input finds no raw socket and answers ICMP protocol
            # unreachable (ICMP is not modelled): counted, dropped.
            st["ips_noproto"] += 1
            m_freem(m)
            return
        st["ips_delivered"] += 1
        fn(m, ip, ifp)

    def in4_cksum_ok(self, m: Mbuf, ip: IPHeader) -> bool:
        """The transport checksum of delivered segment ``m`` is good: as the
        NIC reported it (csum_flags), else summed in C and charged."""
        p = ip.p
        flag = _CSUM_FLAG.get(p, 0)
        if m.csum_flags & flag:
            return not m.csum_flags & M_CSUM_TCP_UDP_BAD
        pm = self.machine.physmem
        if m.m_next is None and not m.m_flags & M_EXT_PAGES:
            # the usual received segment: one cluster, summed in place
            n = m.m_len
            d = m.m_data
            src, dst = ip.src, ip.dst
            # pseudo_sum(src, dst, p, n), inlined
            ps = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + p + n
            while ps > 0xFFFF:
                ps = (ps & 0xFFFF) + (ps >> 16)
            s = pm.cksum_bytes(memoryview(m._kmem())[d : d + n], ps)
        else:
            n = m_length(m)
            s = cksum_pieces(pm, m_pieces(m, 0, n), pseudo_sum(ip.src, ip.dst, p, n))
        bw = self.cksum_bw
        if bw:  # CostModel.cksum_ns(n)
            plat = self.plat
            plat.cpus[plat.cur].clock += n * 1000 // bw
        return s == 0xFFFF

    # ---------------------------------------------------------- reassembly

    def _ip_reass_packet(self, m: Mbuf, ip: IPHeader) -> tuple[Mbuf, IPHeader] | None:
        st = self.ipstat
        hlen = ip.hlen
        off = ip.frag_offset
        if (off + hlen if off > 0 else ip.len) < IP_MINFRAGSIZE - 1:
            st["ips_badfrags"] += 1
            m_freem(m)
            return None
        if off + ip.len > IP_MAXPACKET:
            st["ips_toolong"] += 1
            m_freem(m)
            return None
        flen = ip.len - hlen
        mff = ip.mf
        if mff and (flen == 0 or flen & 7):
            st["ips_badfrags"] += 1
            m_freem(m)
            return None
        key = (ip.src, ip.dst, ip.id, ip.p)
        fp = self.ipq.get(key)
        if fp is not None and fp.tos != ip.tos:
            st["ips_badfrags"] += 1
            m_freem(m)
            return None
        st["ips_fragments"] += 1
        m_adj(m, hlen)
        m.csum_flags = 0
        if fp is None:
            if len(self.ipq) >= IP_MAXFRAGPACKETS:
                st["ips_fragdropped"] += 1
                m_freem(m)
                return None
            fp = _ReassQueue(key, ip.tos)
            self.ipq[key] = fp
            self._arm_slowtimo()
        if off == 0:
            fp.first = ip
        done = self._ip_reass(fp, _Frag(m, off, flen, mff))
        if done is None:
            return None
        st["ips_reassembled"] += 1
        return done

    def _ip_reass(self, fp: _ReassQueue, fr: _Frag) -> tuple[Mbuf, IPHeader] | None:
        """ip_reass: trim overlaps against the neighbours, insert, and join
        the fragments once they cover [0, end) and the last has no MF."""
        q = fp.frags
        i = 0
        while i < len(q) and q[i].off <= fr.off:
            i += 1
        if i > 0:
            prev = q[i - 1]
            cut = prev.off + prev.len - fr.off
            if cut > 0:
                if cut >= fr.len:
                    self.ipstat["ips_fragdropped"] += 1
                    m_freem(fr.m)
                    return None
                m_adj(fr.m, cut)
                fr.off += cut
                fr.len -= cut
        while i < len(q):
            nxt = q[i]
            end = fr.off + fr.len
            if end <= nxt.off:
                break
            cut = end - nxt.off
            if cut < nxt.len:
                m_adj(nxt.m, cut)
                nxt.off += cut
                nxt.len -= cut
                break
            m_freem(nxt.m)
            del q[i]
        q.insert(i, fr)
        nextoff = 0
        for f in q:
            if f.off != nextoff:
                return None
            nextoff += f.len
        if q[-1].mff:
            return None
        first = fp.first
        assert first is not None  # covered from offset 0
        if nextoff + first.hlen > IP_MAXPACKET:
            self.ipstat["ips_toolong"] += 1
            self._ip_freef(fp)
            return None
        del self.ipq[fp.key]
        m = q[0].m
        for f in q[1:]:
            m_cat(m, f.m)
        m.m_pkthdr_len = m_length(m)
        ip = attrs.evolve(first, len=first.hlen + nextoff, off=first.off & IP_DF)
        return m, ip

    def _ip_freef(self, fp: _ReassQueue) -> None:
        for f in fp.frags:
            m_freem(f.m)
        fp.frags.clear()
        self.ipq.pop(fp.key, None)

    def _arm_slowtimo(self) -> None:
        if self._slowtimo is None:
            self._slowtimo = self.host.timeout(SLOWTICK_NS, self.ip_reass_slowtimo)

    def ip_reass_slowtimo(self) -> None:
        """Age every reassembly queue one slow tick; time out the dead ones.

        NetBSD's slowtimo runs every 500 ms for ever; here the tick runs only
        while a queue exists, counted from the first fragment's arrival."""
        self._slowtimo = None
        for fp in list(self.ipq.values()):
            fp.ttl -= 1
            if fp.ttl <= 0:
                self.ipstat["ips_fragtimeout"] += 1
                self._ip_freef(fp)
        if self.ipq:
            self._arm_slowtimo()

    def check_leaks(self) -> None:
        """The host holds no fragments and no mbufs."""
        self.mbpool.check_leaks()


def _id_seed(seed: int, name: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"ip_id:{seed}:{name}".encode()).digest()[:2], "big")


def _write_ip(
    m: Mbuf, tos: int, length: int, ident: int, off: int, ttl: int, p: int, src: int, dst: int
) -> None:
    """Fill the 20-byte header at the front of ``m`` and its checksum."""
    # The header checksum from the field values (the ten 16-bit words
    # ip_hdr_sum would read back), so the header is packed once
    s = (
        0x4500 + tos + length + ident + off + (ttl << 8) + p
        + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    )
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    # packed straight into the storage at m_data (mtod without the view;
    # the header mbuf's data holds the 20 bytes: M_PREPEND made them)
    assert m.m_len >= IP_HDR_LEN
    buf = m.m_dat if not m.m_flags & M_EXT else m._kmem()
    assert buf is not None
    _IP_HDR.pack_into(buf, m.m_data, 0x45, tos, length, ident, off, ttl, p, ~s & 0xFFFF, src, dst)


_IP_HDR = struct.Struct("!BBHHHBBHII")
