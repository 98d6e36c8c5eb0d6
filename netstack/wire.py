"""IPv4, TCP and UDP headers on the wire, and the Internet checksum.

Everything here is big-endian and byte-exact (RFC 791, RFC 9293, RFC 768),
so a frame the stack emits is one a real kernel accepts.  Parsing never
raises on bad input: ``parse_*`` return the header or a :class:`Malformed`
carrying the statistics counter NetBSD bumps for that defect and a reason.

Checksums (RFC 1071) are summed in C over the pieces the device sees: a
piece is ``(frame, offset, length)`` in the machine's arena or a
``memoryview`` of kernel memory (mbuf internal data, clusters).  Pieces may
have any length; a piece that starts at an odd byte of the stream has its
16-bit sum byte-swapped before it is added (RFC 1071 section 2(B), byte
order independence), which is exactly what summing the concatenation gives.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import TypeAlias

import attrs

from uvmloan.physmem import PhysMem

Piece: TypeAlias = "tuple[int, int, int] | memoryview"
"""What the device sees of an mbuf chain: arena bytes or kernel memory."""

# netinet/in.h
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
# netinet/ip.h
IPVERSION = 4
IP_RF = 0x8000
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFMASK = 0x1FFF
IP_MAXPACKET = 65535
IPDEFTTL = 64
IP_HDR_LEN = 20
# netinet/tcp.h
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PUSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20
TH_ECE = 0x40
TH_CWR = 0x80
TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_MAXSEG = 2
TCPOLEN_MAXSEG = 4
TCPOPT_WINDOW = 3
TCPOLEN_WINDOW = 3
TCP_MAX_WINSHIFT = 14
TCP_HDR_LEN = 20
UDP_HDR_LEN = 8

_IP = struct.Struct("!BBHHHBBH4s4s")
_IP_INT = struct.Struct("!BBHHHBBHII")  # the same header, addresses as ints
_IP_WORDS = struct.Struct("!10H")  # an option-less header as 16-bit words
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")


@attrs.frozen
class Malformed:
    """Why a header was rejected: ``stat`` is the counter to bump."""

    stat: str
    reason: str


# --------------------------------------------------------------- addresses


def inet_aton(addr: str | int) -> int:
    """Dotted quad (or an int already) to a host-order 32-bit int."""
    if isinstance(addr, bool):
        raise TypeError("an IPv4 address is a dotted quad or an int, not a bool")
    if isinstance(addr, int):
        if not 0 <= addr <= 0xFFFFFFFF:
            raise ValueError(f"IPv4 address {addr} is not a 32-bit value")
        return addr
    if not isinstance(addr, str):
        raise TypeError(f"an IPv4 address is a dotted quad or an int, not {type(addr).__name__}")
    parts = addr.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        raise ValueError(f"{addr!r} is not a dotted-quad IPv4 address")
    vals = [int(p) for p in parts]
    if any(v > 255 for v in vals):
        raise ValueError(f"{addr!r} has an octet above 255")
    return (vals[0] << 24) | (vals[1] << 16) | (vals[2] << 8) | vals[3]


def inet_ntoa(addr: int) -> str:
    return f"{addr >> 24 & 255}.{addr >> 16 & 255}.{addr >> 8 & 255}.{addr & 255}"


# ---------------------------------------------------------------- checksum


def fold(s: int) -> int:
    """Fold a ones'-complement accumulator to 16 bits (end-around carry)."""
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _swap16(s: int) -> int:
    return ((s >> 8) | (s << 8)) & 0xFFFF


def cksum_pieces(pm: PhysMem, pieces: Iterable[Piece], initial: int = 0) -> int:
    """Folded ones'-complement sum (not inverted) of the pieces' byte stream.

    Runs of arena pieces go to the C sum in one call; kernel-memory pieces
    are summed by the C buffer sum.  A run that begins at an odd offset of
    the stream contributes its byte-swapped sum.
    """
    total = fold(initial)
    pos = 0
    run: list[tuple[int, int, int]] = []
    run_start = 0
    for p in pieces:
        if isinstance(p, memoryview):
            if run:
                s = pm.cksum_sum(run)
                total += _swap16(s) if run_start & 1 else s
                run = []
            if len(p):
                s = pm.cksum_bytes(p)
                total += _swap16(s) if pos & 1 else s
                pos += len(p)
        else:
            if not run:
                run_start = pos
            run.append(p)
            pos += p[2]
    if run:
        s = pm.cksum_sum(run)
        total += _swap16(s) if run_start & 1 else s
    return fold(total)


def pieces_len(pieces: Iterable[Piece]) -> int:
    return sum(len(p) if isinstance(p, memoryview) else p[2] for p in pieces)


def gather_pieces(pm: PhysMem, pieces: Sequence[Piece], out: memoryview) -> int:
    """DMA the pieces into ``out`` (arena runs by the C gather); returns bytes."""
    pos = 0
    run: list[tuple[int, int, int]] = []
    run_len = 0
    for p in pieces:
        if isinstance(p, memoryview):
            if run:
                pos += pm.gather_into(run, out[pos : pos + run_len])
                run = []
                run_len = 0
            n = len(p)
            out[pos : pos + n] = p
            pos += n
        else:
            run.append(p)
            run_len += p[2]
    if run:
        pos += pm.gather_into(run, out[pos : pos + run_len])
    return pos


def pseudo_sum(src: int, dst: int, proto: int, length: int) -> int:
    """The TCP/UDP pseudo-header's contribution (RFC 9293 3.1, RFC 768)."""
    return fold((src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + length)


def in_cksum_bytes(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """Internet checksum of a plain buffer, in Python (headers; tests)."""
    mv = memoryview(data)
    s = initial
    n = len(mv)
    if n & 1:
        s += mv[n - 1] << 8
        n -= 1
    s += sum(struct.unpack_from(f"!{n // 2}H", mv))
    return ~fold(s) & 0xFFFF


# -------------------------------------------------------------------- IPv4


@attrs.frozen
class IPHeader:
    """struct ip (netinet/ip.h), host-order fields."""

    tos: int
    len: int
    id: int
    off: int  # flags and fragment offset in 8-byte units, as ip_off
    ttl: int
    p: int
    src: int
    dst: int
    sum: int = 0
    hl: int = 5  # 32-bit words
    options: bytes = b""

    @property
    def hlen(self) -> int:
        return self.hl << 2

    @property
    def frag_offset(self) -> int:
        return (self.off & IP_OFFMASK) << 3

    @property
    def mf(self) -> bool:
        return bool(self.off & IP_MF)

    @property
    def df(self) -> bool:
        return bool(self.off & IP_DF)


def pack_ip(
    *,
    tos: int = 0,
    length: int,
    id: int,
    off: int = 0,
    ttl: int = IPDEFTTL,
    p: int,
    src: int,
    dst: int,
    options: bytes = b"",
) -> bytearray:
    """An IPv4 header with its header checksum (RFC 791 3.1)."""
    if len(options) % 4:
        raise ValueError("IP options must be padded to a multiple of 4 bytes")
    hl = (IP_HDR_LEN + len(options)) >> 2
    if hl > 15:
        raise ValueError("IP options longer than 40 bytes")
    hdr = bytearray(_IP.pack(
        (IPVERSION << 4) | hl, tos, length, id & 0xFFFF, off, ttl, p, 0,
        src.to_bytes(4, "big"), dst.to_bytes(4, "big"),
    ))
    hdr += options
    struct.pack_into("!H", hdr, 10, in_cksum_bytes(hdr))
    return hdr


def parse_ip(
    buf: bytes | bytearray | memoryview,
    *,
    pktlen: int | None = None,
    verify: bool = True,
    pm: PhysMem | None = None,
) -> IPHeader | Malformed:
    """Validate and parse an IPv4 header at the start of ``buf``.

    ``pktlen`` is the length of the whole packet (default ``len(buf)``: the
    buffer is the packet).  The checks and counters are ip_input()'s, in its
    order.  With ``pm`` the header checksum is summed by its C code.
    """
    n = len(buf) if pktlen is None else pktlen
    if len(buf) < min(n, IP_HDR_LEN):
        return Malformed("ips_toosmall", f"{len(buf)} header bytes present")
    if n < IP_HDR_LEN:
        return Malformed("ips_toosmall", f"{n} bytes is shorter than an IPv4 header")
    vhl, tos, length, ident, off, ttl, p, s, src, dst = _IP_INT.unpack_from(buf)
    if vhl >> 4 != IPVERSION:
        return Malformed("ips_badvers", f"IP version {vhl >> 4}")
    hl = vhl & 15
    hlen = hl << 2
    if hlen < IP_HDR_LEN:
        return Malformed("ips_badhlen", f"header length {hlen} < 20")
    if hlen > n or hlen > len(buf):
        return Malformed("ips_badhlen", f"header length {hlen} > packet of {n} bytes")
    if verify and (
        ip_hdr_sum(buf) != 0xFFFF
        if hlen == IP_HDR_LEN
        else in_cksum_bytes(memoryview(buf)[:hlen]) != 0
        if pm is None
        else pm.cksum_bytes(memoryview(buf)[:hlen]) != 0xFFFF
    ):
        return Malformed("ips_badsum", "bad IP header checksum")
    if length < hlen:
        return Malformed("ips_badlen", f"total length {length} < header length {hlen}")
    if n < length:
        return Malformed("ips_tooshort", f"total length {length} > {n} bytes received")
    return IPHeader(
        tos, length, ident, off, ttl, p, src, dst, s, hl,
        bytes(memoryview(buf)[IP_HDR_LEN:hlen]) if hlen > IP_HDR_LEN else b"",
    )


def ip_hdr_sum(buf: bytes | bytearray | memoryview) -> int:
    """Folded ones'-complement sum (not inverted) of a 20-byte IP header.

    Ten words summed by struct in one call: for a header this short the
    C entry point's call overhead costs more than the sum (RFC 1071).
    """
    s: int = sum(_IP_WORDS.unpack_from(buf))
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


# --------------------------------------------------------------------- TCP


@attrs.frozen
class TCPHeader:
    """struct tcphdr (netinet/tcp.h) plus the options tcp_dooptions() reads."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    win: int
    off: int = 5  # data offset, 32-bit words
    sum: int = 0
    urp: int = 0
    mss: int | None = None
    wscale: int | None = None

    @property
    def hlen(self) -> int:
        return self.off << 2


def tcp_options(mss: int | None = None, wscale: int | None = None) -> bytes:
    """Options as tcp_output() lays them out: MSS; NOP, window scale."""
    opt = b""
    if mss is not None:
        opt += struct.pack("!BBH", TCPOPT_MAXSEG, TCPOLEN_MAXSEG, mss)
    if wscale is not None:
        # NetBSD tcp_output: *optp = htonl(TCPOPT_NOP << 24 | TCPOPT_WINDOW << 16 | ...)
        opt += struct.pack("!BBBB", TCPOPT_NOP, TCPOPT_WINDOW, TCPOLEN_WINDOW, wscale)
    return opt


def pack_tcp(h: TCPHeader) -> bytearray:
    """The TCP header with ``h.sum`` as given (0 until the checksum is computed).

    The data offset is computed from the options (padded with EOL to a
    32-bit boundary); ``h.off`` is ignored.
    """
    opt = tcp_options(h.mss, h.wscale)
    if len(opt) % 4:
        opt += bytes(4 - len(opt) % 4)  # TCPOPT_EOL
    off = (TCP_HDR_LEN + len(opt)) >> 2
    hdr = bytearray(_TCP.pack(
        h.sport, h.dport, h.seq & 0xFFFFFFFF, h.ack & 0xFFFFFFFF, off << 4, h.flags & 0xFF,
        h.win, h.sum, h.urp,
    ))
    hdr += opt
    return hdr


def parse_tcp(buf: bytes | bytearray | memoryview, seglen: int) -> TCPHeader | Malformed:
    """Parse a TCP header from ``buf`` (at least the header); ``seglen`` is the
    segment length from the IP header.  Counters are tcpstat's.

    Options follow tcp_dooptions(): EOL ends, NOP is one byte, every other
    option has a length byte >= 2 that must fit; MSS and window scale are
    honoured only with their exact lengths (and only on SYN, which the
    caller decides); unknown options are skipped.
    """
    if seglen < TCP_HDR_LEN or len(buf) < TCP_HDR_LEN:
        return Malformed("tcps_rcvshort", f"segment of {seglen} bytes < 20-byte header")
    sport, dport, seq, ack, offx, flags, win, s, urp = _TCP.unpack_from(buf)
    off = offx >> 4
    hlen = off << 2
    if hlen < TCP_HDR_LEN or hlen > seglen:
        return Malformed("tcps_rcvbadoff", f"data offset {hlen} bytes in a {seglen}-byte segment")
    if len(buf) < hlen:
        return Malformed("tcps_rcvshort", f"header of {hlen} bytes, {len(buf)} present")
    mss: int | None = None
    wscale: int | None = None
    opts = memoryview(buf)[TCP_HDR_LEN:hlen]
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= len(opts):
            return Malformed("tcps_rcvbadopt", f"option {kind} has no length byte")
        olen = opts[i + 1]
        if olen < 2 or i + olen > len(opts):
            return Malformed("tcps_rcvbadopt", f"option {kind} has bad length {olen}")
        if kind == TCPOPT_MAXSEG and olen == TCPOLEN_MAXSEG:
            mss = (opts[i + 2] << 8) | opts[i + 3]
        elif kind == TCPOPT_WINDOW and olen == TCPOLEN_WINDOW:
            # tcp_dooptions: a shift above TCP_MAX_WINSHIFT is clamped to it
            wscale = min(opts[i + 2], TCP_MAX_WINSHIFT)
        i += olen
    return TCPHeader(sport, dport, seq, ack, flags, win, off, s, urp, mss, wscale)


# --------------------------------------------------------------------- UDP


@attrs.frozen
class UDPHeader:
    """struct udphdr (netinet/udp.h)."""

    sport: int
    dport: int
    ulen: int
    sum: int = 0


def pack_udp(h: UDPHeader) -> bytearray:
    return bytearray(_UDP.pack(h.sport, h.dport, h.ulen, h.sum))


def parse_udp(buf: bytes | bytearray | memoryview, iplen: int) -> UDPHeader | Malformed:
    """Parse and length-check a UDP header; ``iplen`` is the IP payload length.

    udp_input(): fewer than 8 bytes is udps_hdrops; a uh_ulen that is not
    the IP payload length is udps_badlen (NetBSD trims a shorter IP payload
    to uh_ulen only when uh_ulen is smaller; a larger uh_ulen is bad).
    """
    if iplen < UDP_HDR_LEN or len(buf) < UDP_HDR_LEN:
        return Malformed("udps_hdrops", f"{iplen} bytes is shorter than a UDP header")
    sport, dport, ulen, s = _UDP.unpack_from(buf)
    if ulen < UDP_HDR_LEN or ulen > iplen:
        return Malformed("udps_badlen", f"UDP length {ulen} with {iplen} bytes of IP payload")
    return UDPHeader(sport, dport, ulen, s)


def transport_cksum(
    pm: PhysMem, pieces: Iterable[Piece], src: int, dst: int, proto: int, length: int
) -> int:
    """The checksum field value for a TCP or UDP segment whose checksum field
    is zero in the pieces (RFC 9293 3.1; RFC 768: a computed 0 is sent as
    0xFFFF for UDP, since 0 there means "no checksum")."""
    c = ~cksum_pieces(pm, pieces, pseudo_sum(src, dst, proto, length)) & 0xFFFF
    if proto == IPPROTO_UDP and c == 0:
        c = 0xFFFF
    return c


def transport_cksum_ok(
    pm: PhysMem, pieces: Iterable[Piece], src: int, dst: int, proto: int, length: int
) -> bool:
    """Receive-side check: the sum over pseudo-header and segment is 0xFFFF."""
    return cksum_pieces(pm, pieces, pseudo_sum(src, dst, proto, length)) == 0xFFFF
