"""ip.py: ip_output header fields, fragmentation and reassembly, ip_input's
checks with NetBSD's ipstat counters, routes and the protocol switch."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawnet import Sink, free_pages, ifp, kmem_chain, page_mbuf, pair, tcp_out, udp_out

from netstack.ip import EHOSTUNREACH, EMSGSIZE, IPFRAGTTL, SLOWTICK_NS
from netstack.link import FrameMeta
from netstack.network import Host
from netstack.wire import (
    IP_DF,
    IP_MF,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TH_ACK,
    IPHeader,
    TCPHeader,
    in_cksum_bytes,
    pack_ip,
    parse_ip,
)


def capture_frames(lk: object) -> list[bytes]:
    frames: list[bytes] = []
    lk.add_tap(lambda now, f, meta: frames.append(bytes(f)))  # type: ignore[attr-defined]
    return frames


def test_header_fields_ttl_df_id_checksum() -> None:
    net, a, b, lk = pair()
    frames = capture_frames(lk)
    Sink(b.stack).attach()
    dst = ifp(lk, 1).addr
    udp_out(a, dst, b"u" * 10)
    tcp_out(a, dst, TCPHeader(1, 2, 0, 0, TH_ACK, 100), b"t" * 10)
    net.run_until_idle()
    udp, tcp = (parse_ip(f) for f in frames)
    assert isinstance(udp, IPHeader) and isinstance(tcp, IPHeader)
    assert (udp.ttl, udp.df, udp.p, udp.len, udp.hl) == (64, False, IPPROTO_UDP, 38, 5)
    assert (tcp.ttl, tcp.df, tcp.p, tcp.len) == (64, True, IPPROTO_TCP, 50)
    assert tcp.id == (udp.id + 1) & 0xFFFF  # ip_do_randomid 0: a counter
    assert (udp.src, udp.dst) == (ifp(lk, 0).addr, dst)
    for f in frames:
        assert in_cksum_bytes(f[:20]) == 0
    assert a.stack.ipstat["ips_localout"] == 2
    assert b.stack.ipstat["ips_delivered"] == 2


def test_fragmentation_layout_and_reassembly() -> None:
    net, a, b, lk = pair()
    frames = capture_frames(lk)
    sink = Sink(b.stack).attach()
    payload = bytes(i * 7 & 255 for i in range(4000))
    assert udp_out(a, ifp(lk, 1).addr, payload) == 0
    net.run_until_idle()
    hdrs = [parse_ip(f) for f in frames]
    assert all(isinstance(h, IPHeader) for h in hdrs)
    # 4008 bytes of UDP: (1500 - 20) & ~7 = 1480 per fragment: 1480, 1480, 1048
    assert [(h.len, h.frag_offset, h.mf) for h in hdrs] == [  # type: ignore[union-attr]
        (1500, 0, True), (1500, 1480, True), (1068, 2960, False)]
    assert len({h.id for h in hdrs}) == 1  # type: ignore[union-attr]
    assert a.stack.ipstat["ips_fragmented"] == 1 and a.stack.ipstat["ips_ofragments"] == 3
    assert b.stack.ipstat["ips_fragments"] == 3 and b.stack.ipstat["ips_reassembled"] == 1
    assert len(sink.got) == 1 and sink.got[0].payload == payload and sink.got[0].cksum_ok
    assert sink.got[0].ip.len == 20 + 4008
    a.stack.check_leaks()
    b.stack.check_leaks()


def test_fragments_of_loaned_pages_share_the_storage() -> None:
    net, a, b, lk = pair()
    sink = Sink(b.stack).attach()
    data = bytes(range(256)) * 12
    m, pages = page_mbuf(a, data, offset=3)
    assert udp_out(a, ifp(lk, 1).addr, m, ) == 0
    net.run_until_idle()
    assert sink.got[0].payload == data and sink.got[0].cksum_ok
    a.stack.check_leaks()
    free_pages(a, pages)


def inject(host: Host, lk: object, frame: bytes) -> None:
    """Deliver a raw frame to ``host``'s interface as the wire would."""
    end = ifp(lk, 1)  # type: ignore[arg-type]
    end.frame_arrived(bytearray(frame), FrameMeta())


def ip_frame(payload: bytes, *, id: int = 9, off: int = 0, p: int = IPPROTO_UDP, src: int,
             dst: int, tos: int = 0) -> bytes:
    return bytes(pack_ip(length=20 + len(payload), id=id, off=off, p=p, src=src, dst=dst,
                         tos=tos)) + payload


def udp_bytes(payload: bytes) -> bytes:
    # checksum 0: "no checksum" (RFC 768), so hand-made fragments need none
    return struct.pack("!HHHH", 1, 2, 8 + len(payload), 0) + payload


def test_reassembly_out_of_order_with_overlaps_and_duplicates() -> None:
    net, _a, b, lk = pair()
    sink = Sink(b.stack).attach()
    src, dst = ifp(lk, 0).addr, ifp(lk, 1).addr
    dgram = udp_bytes(bytes(range(200)) * 2)  # 408 bytes
    pieces = [(0, 128), (128, 256), (256, 408)]
    frag = {
        lo: ip_frame(dgram[lo:hi], off=(lo >> 3) | (IP_MF if hi < 408 else 0), src=src, dst=dst)
        for lo, hi in pieces
    }
    # an overlapping fragment [64, 192) and a duplicate of the last
    overlap = ip_frame(dgram[64:192], off=(64 >> 3) | IP_MF, src=src, dst=dst)
    for f in (frag[256], overlap, frag[256], frag[0]):
        inject(b, lk, f)
    net.run_for(1_000_000)  # well inside the reassembly timeout
    assert sink.got == []
    # the duplicate was wholly covered: dropped and counted
    assert b.stack.ipstat["ips_fragdropped"] == 1
    inject(b, lk, frag[128])
    net.run_until_idle()
    assert len(sink.got) == 1 and sink.got[0].payload == dgram[8:]
    assert b.stack.ipstat["ips_reassembled"] == 1
    b.stack.check_leaks()


def test_reassembly_timeout_frees_the_fragments() -> None:
    net, _a, b, lk = pair()
    sink = Sink(b.stack).attach()
    src, dst = ifp(lk, 0).addr, ifp(lk, 1).addr
    dgram = udp_bytes(bytes(300))
    inject(b, lk, ip_frame(dgram[:160], off=IP_MF, src=src, dst=dst))
    # the queue lives IPFRAGTTL slow ticks (60 x 500 ms = 30 s), counted
    # from the activity that queued the fragment (a couple of us of CPU)
    assert IPFRAGTTL * SLOWTICK_NS == 30_000_000_000
    net.run(until=30_000_000_000 - 1)
    assert b.stack.ipstat["ips_fragtimeout"] == 0 and len(b.stack.ipq) == 1
    net.run(until=30_000_010_000)
    assert net.sched.pending() == 0
    assert b.stack.ipstat["ips_fragtimeout"] == 1
    assert sink.got == [] and b.stack.ipq == {}
    b.stack.check_leaks()


@pytest.mark.parametrize(
    ("make", "stat"),
    [
        # MF with a payload that is not a multiple of 8
        (lambda s, d: ip_frame(bytes(100), off=IP_MF, src=s, dst=d), "ips_badfrags"),
        # a non-initial fragment starting below 68 bytes is refused (blind data)
        (lambda s, d: ip_frame(bytes(16), off=1, src=s, dst=d), "ips_badfrags"),
        # offset + length beyond 65535
        (lambda s, d: ip_frame(bytes(64), off=0x1FFF, src=s, dst=d), "ips_toolong"),
        (lambda s, d: ip_frame(udp_bytes(b"x"), p=99, src=s, dst=d), "ips_noproto"),
        (lambda s, d: ip_frame(udp_bytes(b"x"), src=s, dst=d + 50), "ips_cantforward"),
        (lambda s, d: ip_frame(udp_bytes(b"x"), src=s, dst=d)[:19], "ips_toosmall"),
        (lambda s, d: b"\x46" + ip_frame(udp_bytes(b"x"), src=s, dst=d)[1:], "ips_badsum"),
        (lambda s, d: b"\x65" + ip_frame(udp_bytes(b"x"), src=s, dst=d)[1:], "ips_badvers"),
        (lambda s, d: ip_frame(udp_bytes(b"xyz"), src=s, dst=d)[:-2], "ips_tooshort"),
    ],
)
def test_ip_input_drops_are_counted(make: Callable[[int, int], bytes], stat: str) -> None:
    net, _a, b, lk = pair()
    sink = Sink(b.stack).attach()
    inject(b, lk, make(ifp(lk, 0).addr, ifp(lk, 1).addr))
    net.run_until_idle()
    assert b.stack.ipstat[stat] == 1
    assert sink.got == [] and b.stack.ipstat["ips_delivered"] == 0
    assert b.stack.ipq == {}
    b.stack.check_leaks()


def test_frame_longer_than_the_datagram_is_trimmed() -> None:
    net, _a, b, lk = pair()
    sink = Sink(b.stack).attach()
    f = ip_frame(udp_bytes(b"abc"), src=ifp(lk, 0).addr, dst=ifp(lk, 1).addr) + b"PAD!"
    inject(b, lk, f)
    net.run_until_idle()
    assert sink.got[0].payload == b"abc"


def test_df_too_big_and_no_route() -> None:
    net, a, b, lk = pair(mtu=576)
    Sink(b.stack).attach()
    dst = ifp(lk, 1).addr
    assert udp_out(a, dst, bytes(1000), df=True) == EMSGSIZE
    assert a.stack.ipstat["ips_cantfrag"] == 1
    assert tcp_out(a, dst, TCPHeader(1, 2, 0, 0, TH_ACK, 0), bytes(600)) == EMSGSIZE
    assert udp_out(a, dst + 77, b"x") == EHOSTUNREACH
    assert a.stack.ipstat["ips_noroute"] == 1
    net.run_until_idle()
    a.stack.check_leaks()


def test_software_checksum_is_charged_offload_is_not() -> None:
    n = 1400
    charged = {}
    for offload in (False, True):
        net, a, b, lk = pair(csum_offload=offload)
        sink = Sink(b.stack).attach()
        before = a.machine.cpus[0].clock
        udp_out(a, ifp(lk, 1).addr, bytes(n))
        charged[offload] = a.machine.cpus[0].clock - before
        net.run_until_idle()
        assert sink.got[0].cksum_ok
    # 1408 bytes of UDP summed at cksum_bw 15000 B/us: 1408 * 1000 // 15000 ns
    assert charged[False] - charged[True] == 1408 * 1000 // 15_000


def test_receive_offload_reports_bad_checksums() -> None:
    net, _a, b, lk = pair(csum_offload=True)
    sink = Sink(b.stack).attach()
    good = struct.pack("!HHHH", 1, 2, 11, 0x1234) + b"abc"  # a wrong, non-zero checksum
    inject(b, lk, ip_frame(good, src=ifp(lk, 0).addr, dst=ifp(lk, 1).addr))
    net.run_until_idle()
    assert len(sink.got) == 1 and not sink.got[0].cksum_ok


def test_register_rejects_bad_arguments() -> None:
    _net, a, _b, _lk = pair()
    with pytest.raises(ValueError):
        a.stack.register(256, lambda m, ip, ifp: None)
    with pytest.raises(TypeError):
        a.stack.register(17, "not callable")  # type: ignore[arg-type]
    m = kmem_chain(a, b"x")
    from netstack.mbuf import m_freem

    m_freem(m)
    a.stack.check_leaks()


def test_ip_id_never_zero() -> None:
    _net, a, _b, _lk = pair()
    a.stack.ip_id = 0xFFFE
    assert [a.stack.ip_newid() for _ in range(3)] == [0xFFFE, 1, 2]
    assert IP_DF == 0x4000 and IP_MF == 0x2000


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(
    st.tuples(
        st.integers(0, 3),  # ip_id
        st.integers(0, 0xFFFF),  # ip_off: any flags and offset
        st.binary(max_size=120),  # payload
        st.integers(-30, 30),  # total length error
        st.sampled_from([IPPROTO_UDP, IPPROTO_TCP, 99]),
        st.integers(0, 23),  # truncate the frame to this many bytes (>= 20: none)
    ),
    max_size=10,
))
def test_arbitrary_frames_never_raise_and_leak_nothing(
    frames: list[tuple[int, int, bytes, int, int, int]],
) -> None:
    net, _a, b, lk = pair()
    Sink(b.stack).attach()
    src, dst = ifp(lk, 0).addr, ifp(lk, 1).addr
    for ident, off, payload, lenerr, p, cut in frames:
        length = max(0, min(0xFFFF, 20 + len(payload) + lenerr))
        f = bytes(pack_ip(length=length, id=ident, off=off, p=p, src=src, dst=dst)) + payload
        if cut < 20:
            f = f[:cut] or b"\x45"
        ifp(lk, 1).frame_arrived(bytearray(f), FrameMeta())
    net.run_until_idle()  # reassembly queues time out
    assert b.stack.ipq == {}
    b.stack.check_leaks()
    total = b.stack.ipstat["ips_total"]
    assert total == len(frames)
