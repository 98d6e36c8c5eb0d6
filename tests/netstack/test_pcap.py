"""pcap.py: file layouts checked by hand, then a real dissector (tshark):
every checksum good, the TCP stream reassembled to the sent bytes, the
pcapng comments on frames gathered from loaned pages."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from rawnet import Sink, free_pages, ifp, page_mbuf, pair, tcp_flow, udp_out
from tshark import assert_checksums_good, fields, follow_tcp

from netstack.pcap import LOANED_COMMENT, capture


def test_pcap_layout_by_hand(tmp_path: Path) -> None:
    net, a, b, lk = pair(delay_ns=0)
    Sink(b.stack).attach()
    path = tmp_path / "x.pcap"
    with capture(lk, path):
        net.run(until=1_500_000_123)
        udp_out(a, ifp(lk, 1).addr, b"abc")
        t0 = a.machine.cpus[0].clock
        net.run_until_idle()
    raw = path.read_bytes()
    magic, vmaj, vmin, zone, sigfigs, snap, lt = struct.unpack_from("<IHHiIII", raw)
    assert (magic, vmaj, vmin, zone, sigfigs, snap, lt) == (0xA1B23C4D, 2, 4, 0, 0, 65535, 101)
    sec, nsec, incl, orig = struct.unpack_from("<IIII", raw, 24)
    assert sec * 10**9 + nsec == t0 and t0 > 1_500_000_123
    assert incl == orig == 31
    assert raw[40] == 0x45 and len(raw) == 24 + 16 + 31


def _blocks(raw: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos < len(raw):
        btype, total = struct.unpack_from("<II", raw, pos)
        assert struct.unpack_from("<I", raw, pos + total - 4)[0] == total
        assert total % 4 == 0
        out.append((btype, raw[pos + 8 : pos + total - 4]))
        pos += total
    return out


def test_pcapng_layout_by_hand(tmp_path: Path) -> None:
    net, a, b, lk = pair()
    Sink(b.stack).attach()
    path = tmp_path / "x.pcapng"
    m, pages = page_mbuf(a, b"L" * 1000)
    with capture(ifp(lk, 0), path, "pcapng") as cap:
        udp_out(a, ifp(lk, 1).addr, m)
        udp_out(a, ifp(lk, 1).addr, b"copied")
        net.run_until_idle()
    assert cap.frames == 2 and cap.loaned_frames == 1
    blocks = _blocks(path.read_bytes())
    assert [t for t, _ in blocks] == [0x0A0D0D0A, 1, 6, 6]
    shb = blocks[0][1]
    assert struct.unpack_from("<IHHq", shb) == (0x1A2B3C4D, 1, 0, -1)
    idb = blocks[1][1]
    assert struct.unpack_from("<HHI", idb) == (101, 0, 65535)
    assert b"\x09\x00\x01\x00\x09" in idb  # if_tsresol, length 1, 10^-9
    epb1 = blocks[2][1]
    iface, _hi, _lo, cap_len, orig = struct.unpack_from("<IIIII", epb1)
    assert (iface, cap_len, orig) == (0, 1028, 1028)
    assert LOANED_COMMENT.encode() in epb1
    assert LOANED_COMMENT.encode() not in blocks[3][1]
    free_pages(a, pages)


@pytest.mark.parametrize(("fmt", "linktype"), [("pcap", "raw"), ("pcapng", "ethernet")])
def test_tshark_udp_checksums_good(tmp_path: Path, fmt: str, linktype: str) -> None:
    net, a, b, lk = pair(csum_offload=linktype == "ethernet")
    Sink(b.stack).attach()
    path = tmp_path / f"udp.{fmt}"
    with capture(lk, path, fmt, linktype):  # type: ignore[arg-type]
        for n in (0, 1, 17, 1472, 1473, 4000, 9000):
            udp_out(a, ifp(lk, 1).addr, bytes((i * 31) & 255 for i in range(n)))
        m, pages = page_mbuf(a, bytes(range(255)) * 20, offset=1)
        udp_out(a, ifp(lk, 1).addr, m)
        net.run_until_idle()
    assert assert_checksums_good(path) == 1 + 1 + 1 + 1 + 2 + 3 + 7 + 4
    rows = fields(path, "udp.length")
    assert sorted(int(r[0]) for r in rows if r[0]) == sorted(
        [8, 9, 25, 1480, 1481, 4008, 9008, 5108])
    free_pages(a, pages)


def test_tshark_tcp_stream_reassembled(tmp_path: Path) -> None:
    net, a, b, lk = pair()
    Sink(b.stack).attach()
    Sink(a.stack).attach()
    path = tmp_path / "tcp.pcapng"
    data = bytes((i * 131 + (i >> 9)) & 255 for i in range(20_000))
    with capture(lk, path, "pcapng"):
        pages = tcp_flow(net, a, b, lk, data, page_backed=True)
    n = assert_checksums_good(path)
    assert n == 3 + 2 * 14 + 3
    c2s, s2c = follow_tcp(path)
    assert c2s == data and s2c == b""
    rows = fields(path, "tcp.options.mss_val", "tcp.options.wscale.shift", "ip.flags.df",
                  "frame.comment")
    assert rows[0][:2] == ["1460", "3"] and all(r[2] == "1" for r in rows)
    assert [r[3] for r in rows].count(LOANED_COMMENT) == 14
    free_pages(a, pages)


def test_capture_bad_arguments(tmp_path: Path) -> None:
    _net, a, _b, lk = pair()
    with pytest.raises(TypeError):
        capture(a, tmp_path / "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        capture(lk, tmp_path / "y", "erf")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        capture(lk, tmp_path / "z", "pcap", "token-ring")  # type: ignore[arg-type]
    assert lk.taps == []
