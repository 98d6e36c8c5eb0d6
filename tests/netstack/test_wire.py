"""wire.py: header layouts, checksum vectors, parsing of bad input."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netstack.wire import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    TH_ACK,
    TH_SYN,
    IPHeader,
    Malformed,
    TCPHeader,
    UDPHeader,
    cksum_pieces,
    gather_pieces,
    in_cksum_bytes,
    inet_aton,
    inet_ntoa,
    pack_ip,
    pack_tcp,
    pack_udp,
    parse_ip,
    parse_tcp,
    parse_udp,
    pseudo_sum,
    transport_cksum,
    transport_cksum_ok,
)
from uvmloan.physmem import PhysMem

PS = 4096


@pytest.fixture
def pm(backend: str) -> PhysMem:
    return PhysMem(8, PS, backend=backend)


def naive_sum(data: bytes) -> int:
    """RFC 1071 section 4.1's loop, written out independently."""
    s = 0
    for i in range(0, len(data) - 1, 2):
        s += (data[i] << 8) | data[i + 1]
    if len(data) & 1:
        s += data[-1] << 8
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


# ------------------------------------------------------------ checksum vectors


def test_rfc1071_example_sum() -> None:
    # RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert naive_sum(data) == 0xDDF2
    assert in_cksum_bytes(data) == 0xFFFF - 0xDDF2


def test_rfc1071_example_over_odd_pieces(pm: PhysMem) -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")
    pm.copyin([0], 1, data[:3])  # 3 bytes at an odd page offset
    pm.copyin([1], 0, data[3:4])
    pieces: list[tuple[int, int, int] | memoryview] = [
        (0, 1, 3), memoryview(data[3:4]).toreadonly(), (1, 0, 0), memoryview(data[4:5]),
        (2, 7, 0),
    ]
    pm.copyin([2], 2, data[5:])
    pieces += [(2, 2, 3)]
    assert cksum_pieces(pm, pieces) == 0xDDF2


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=0, max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8),
       kinds=st.lists(st.booleans(), min_size=9, max_size=9), start=st.integers(0, 40))
def test_cksum_pieces_matches_the_concatenation(
    data: bytes, cuts: list[int], kinds: list[bool], start: int
) -> None:
    pm = PhysMem(4, PS)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    pieces: list[tuple[int, int, int] | memoryview] = []
    off = start
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        chunk = data[lo:hi]
        if kinds[i % len(kinds)]:
            pm.copyin([i % 4], off % 1024, chunk)
            pieces.append((i % 4, off % 1024, len(chunk)))
            off += 2 * len(chunk) + 1
        else:
            pieces.append(memoryview(chunk))
    assert cksum_pieces(pm, pieces) == (naive_sum(data) if data else 0)
    out = bytearray(len(data))
    assert gather_pieces(pm, pieces, memoryview(out)) == len(data)
    assert bytes(out) == data
    pm.close()


def test_ipv4_header_known_good() -> None:
    # The worked example of the IPv4 header checksum: 45 00 00 73 00 00 40 00
    # 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7 (checksum b861).
    hdr = pack_ip(length=0x73, id=0, off=0x4000, ttl=64, p=IPPROTO_UDP,
                  src=inet_aton("192.168.0.1"), dst=inet_aton("192.168.0.199"))
    assert bytes(hdr) == bytes.fromhex("450000730000400040 11b861c0a80001c0a800c7".replace(" ", ""))
    ip = parse_ip(hdr + bytes(0x73 - 20))
    assert isinstance(ip, IPHeader)
    assert (ip.len, ip.df, ip.mf, ip.ttl, ip.p, ip.sum) == (0x73, True, False, 64, 17, 0xB861)
    assert inet_ntoa(ip.dst) == "192.168.0.199"


def test_tcp_header_layout_with_options() -> None:
    # RFC 9293 3.1: ports, seq, ack, data offset 7 (28 bytes) << 4, flags SYN,
    # window, checksum, urgent; options MSS 1460 (02 04 05b4), NOP,
    # window scale 7 (01 03 03 07).
    h = TCPHeader(12345, 80, 1, 0, TH_SYN, 65535, mss=1460, wscale=7)
    want = bytes.fromhex("3039 0050 00000001 00000000 70 02 ffff 0000 0000 020405b4 01030307"
                         .replace(" ", ""))
    assert bytes(pack_tcp(h)) == want
    got = parse_tcp(want, 28)
    assert isinstance(got, TCPHeader)
    assert (got.sport, got.dport, got.seq, got.flags, got.win, got.hlen, got.mss, got.wscale) == (
        12345, 80, 1, TH_SYN, 65535, 28, 1460, 7)


def test_tcp_header_padding_to_a_word() -> None:
    # MSS alone is 4 bytes: no padding; wscale alone is NOP + 3: one word.
    assert len(pack_tcp(TCPHeader(1, 2, 0, 0, TH_SYN, 0, mss=536))) == 24
    assert len(pack_tcp(TCPHeader(1, 2, 0, 0, TH_SYN, 0, wscale=0))) == 24
    assert len(pack_tcp(TCPHeader(1, 2, 0, 0, TH_ACK, 0))) == 20


def test_udp_header_and_checksum_vector(pm: PhysMem) -> None:
    src, dst = inet_aton("192.0.2.1"), inet_aton("192.0.2.2")
    payload = b"hello"
    hdr = pack_udp(UDPHeader(1000, 2000, 13))
    assert bytes(hdr) == bytes.fromhex("03e807d0000d0000")
    # by hand: pseudo c000+0201+c000+0202+0011+000d, header 03e8+07d0+000d,
    # data 6865+6c6c+6f00
    words = [0xC000, 0x0201, 0xC000, 0x0202, 0x0011, 0x000D, 0x03E8, 0x07D0, 0x000D,
             0x6865, 0x6C6C, 0x6F00]
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    want = ~s & 0xFFFF
    seg = [memoryview(bytes(hdr)), memoryview(payload)]
    assert transport_cksum(pm, seg, src, dst, IPPROTO_UDP, 13) == want
    filled = bytes(hdr[:6]) + struct.pack("!H", want) + payload
    assert transport_cksum_ok(pm, [memoryview(filled)], src, dst, IPPROTO_UDP, 13)
    bad = bytearray(filled)
    bad[-1] ^= 1
    assert not transport_cksum_ok(pm, [memoryview(bytes(bad))], src, dst, IPPROTO_UDP, 13)


def test_udp_zero_checksum_sent_as_ones(pm: PhysMem) -> None:
    # Find a payload whose checksum computes to 0: make the sum 0xffff.
    src, dst = 0, 0
    hdr = bytes.fromhex("0000000000000000")  # ports 0, ulen patched below
    base = pseudo_sum(src, dst, IPPROTO_UDP, 10) + 10  # ulen 10 appears twice
    fill = 0xFFFF - base
    data = struct.pack("!H", fill)
    seg = hdr[:4] + struct.pack("!H", 10) + b"\0\0" + data
    assert naive_sum(seg) + pseudo_sum(src, dst, IPPROTO_UDP, 10) in (0xFFFF, 0x1FFFE)
    assert transport_cksum(pm, [memoryview(seg)], src, dst, IPPROTO_UDP, 10) == 0xFFFF
    assert transport_cksum(pm, [memoryview(seg)], src, dst, IPPROTO_TCP, 10) != 0xFFFF


# ------------------------------------------------------------------ bad input


def _good_ip(total: int = 40) -> bytearray:
    return pack_ip(length=total, id=7, p=IPPROTO_TCP, src=1, dst=2) + bytearray(total - 20)


def _reseal(b: bytearray) -> bytearray:
    b[10:12] = b"\0\0"
    hl = (b[0] & 15) * 4
    struct.pack_into("!H", b, 10, in_cksum_bytes(b[:hl]))
    return b


@pytest.mark.parametrize(
    ("mutate", "stat"),
    [
        (lambda b: b[:19], "ips_toosmall"),
        (lambda b: _reseal(bytearray([0x65]) + b[1:]), "ips_badvers"),
        (lambda b: _reseal(bytearray([0x44]) + b[1:]), "ips_badhlen"),
        (lambda b: _reseal(bytearray([0x4F]) + b[1:]), "ips_badhlen"),
        (lambda b: b[:10] + bytearray([b[10] ^ 0xFF]) + b[11:], "ips_badsum"),
        (lambda b: _reseal(b[:2] + bytearray(struct.pack("!H", 19)) + b[4:]), "ips_badlen"),
        (lambda b: _reseal(b[:2] + bytearray(struct.pack("!H", 41)) + b[4:]), "ips_tooshort"),
    ],
)
def test_parse_ip_rejects(mutate: object, stat: str) -> None:
    bad = mutate(_good_ip())  # type: ignore[operator]
    got = parse_ip(bad)
    assert isinstance(got, Malformed) and got.stat == stat, got
    assert isinstance(parse_ip(_good_ip()), IPHeader)


@pytest.mark.parametrize(
    ("raw", "seglen", "stat"),
    [
        (bytes(19), 19, "tcps_rcvshort"),
        (bytes(12) + bytes([0x40]) + bytes(7), 20, "tcps_rcvbadoff"),  # offset 16 bytes
        (bytes(12) + bytes([0x60]) + bytes(7), 20, "tcps_rcvbadoff"),  # 24 > segment
        (bytes(12) + bytes([0x60]) + bytes(7), 24, "tcps_rcvshort"),  # options missing
        (bytes(12) + bytes([0x60]) + bytes(7) + bytes([1, 1, 1, 2]), 24, "tcps_rcvbadopt"),
        (bytes(12) + bytes([0x60]) + bytes(7) + bytes([2, 1, 0, 0]), 24, "tcps_rcvbadopt"),
        (bytes(12) + bytes([0x60]) + bytes(7) + bytes([2, 8, 0, 0]), 24, "tcps_rcvbadopt"),
    ],
)
def test_parse_tcp_rejects(raw: bytes, seglen: int, stat: str) -> None:
    got = parse_tcp(raw, seglen)
    assert isinstance(got, Malformed) and got.stat == stat, got


def test_parse_tcp_options_rules() -> None:
    base = bytearray(bytes(12) + bytes([0x70]) + bytes(7))
    # MSS with a wrong length is skipped, wscale above 14 is clamped, EOL ends
    opts = bytes([2, 3, 9, 3, 3, 20, 0, 2])
    got = parse_tcp(bytes(base) + opts, 28)
    assert isinstance(got, TCPHeader)
    assert (got.mss, got.wscale) == (None, 14)
    # unknown option kinds are skipped by their length
    got = parse_tcp(bytes(base) + bytes([30, 4, 1, 1, 2, 4, 1, 0]), 28)
    assert isinstance(got, TCPHeader) and got.mss == 256


@pytest.mark.parametrize(
    ("raw", "iplen", "stat"),
    [
        (bytes(7), 7, "udps_hdrops"),
        (bytes.fromhex("0001000200070000"), 8, "udps_badlen"),
        (bytes.fromhex("0001000200100000"), 12, "udps_badlen"),
    ],
)
def test_parse_udp_rejects(raw: bytes, iplen: int, stat: str) -> None:
    got = parse_udp(raw, iplen)
    assert isinstance(got, Malformed) and got.stat == stat


def test_inet_aton_errors() -> None:
    assert inet_aton("192.0.2.1") == 0xC0000201
    assert inet_ntoa(0xC0000201) == "192.0.2.1"
    for bad in ("192.0.2", "1.2.3.256", "a.b.c.d", "1..2.3", ""):
        with pytest.raises(ValueError):
            inet_aton(bad)
    with pytest.raises(TypeError):
        inet_aton(True)
    with pytest.raises(ValueError):
        inet_aton(1 << 32)


@given(st.binary(min_size=20, max_size=20) | st.sampled_from([b"\xff" * 20, b"\xff\xfe" * 10]))
def test_ip_hdr_sum_is_the_rfc1071_sum_of_the_header(hdr: bytes) -> None:
    # the struct fast path for option-less headers against the byte-wise
    # reference (0xff-heavy headers carry more than once)
    from netstack.wire import in_cksum_bytes, ip_hdr_sum

    assert ~ip_hdr_sum(hdr) & 0xFFFF == in_cksum_bytes(hdr)
