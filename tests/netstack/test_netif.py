"""netif.py: if_snd, gather DMA from page frames, transmit completion frees
the chain, receive into clusters, if_data counters."""

from __future__ import annotations

import pytest
from rawnet import Sink, free_pages, ifp, kmem_chain, page_mbuf, pair, udp_out

from netstack.ip import ENOBUFS
from netstack.link import FrameMeta
from netstack.mbuf import M_EXT_CLUSTER, MCLBYTES, Mbuf, is_free, m_freem


def test_transmit_completion_frees_the_chain() -> None:
    net, a, b, lk = pair(delay_ns=50_000)
    Sink(b.stack).attach()
    m, pages = page_mbuf(a, b"p" * 1472)
    assert udp_out(a, ifp(lk, 1).addr, m) == 0
    start = a.machine.cpus[0].clock
    # on the wire for 120 us: still held (the loan would still be lent)
    net.run(until=start + 120_000 - 1)
    assert not is_free(m) and a.stack.mbpool.mbufs > 0
    # the completion interrupt at 120 us frees it, long before the frame arrives
    net.run(until=start + 120_000)
    assert is_free(m) and a.stack.mbpool.mbufs == 0
    assert ifp(lk, 1).if_data.ipackets == 0
    net.run_until_idle()
    assert ifp(lk, 1).if_data.ipackets == 1
    free_pages(a, pages)


def test_gather_reads_the_page_frames_at_transmit_start() -> None:
    net, a, b, lk = pair()
    sink = Sink(b.stack).attach()
    metas: list[FrameMeta] = []
    lk.add_tap(lambda now, f, meta: metas.append(meta))
    data = bytes(range(256)) * 5
    m, pages = page_mbuf(a, data, offset=4000)  # crosses a page boundary
    udp_out(a, ifp(lk, 1).addr, m)
    udp_out(a, ifp(lk, 1).addr, b"kernel memory only")
    net.run_until_idle()
    assert [g.payload for g in sink.got] == [data, b"kernel memory only"]
    assert all(g.cksum_ok for g in sink.got)
    assert [mt.loaned for mt in metas] == [True, False]
    free_pages(a, pages)


def test_if_snd_overflow_drops_with_enobufs() -> None:
    net, a, b, lk = pair(queue_limit=2)
    sink = Sink(b.stack).attach()
    dst = ifp(lk, 1).addr

    def burst() -> list[int]:
        return [udp_out(a, dst, bytes([i]) * 100) for i in range(5)]

    # all five are queued in one activity, before the NIC starts
    results = a.kernel(burst)
    assert results == [0, 0, ENOBUFS, ENOBUFS, ENOBUFS]
    assert ifp(lk, 0).ifq_drops == 3
    net.run_until_idle()
    assert [g.payload[0] for g in sink.got] == [0, 1]
    a.stack.check_leaks()


def test_if_data_counters() -> None:
    net, a, b, lk = pair()
    Sink(b.stack).attach()
    for n in (10, 100, 1000):
        udp_out(a, ifp(lk, 1).addr, bytes(n))
    net.run_until_idle()
    sa, sb = ifp(lk, 0).if_data, ifp(lk, 1).if_data
    assert (sa.opackets, sa.obytes) == (3, 3 * 28 + 1110)
    assert (sb.ipackets, sb.ibytes) == (3, 3 * 28 + 1110)
    assert sa.collisions == sa.oerrors == sb.ierrors == sb.iqdrops == 0


def test_receive_into_clusters_and_oversize_frames() -> None:
    net, a, b, lk = pair(mtu=9000)
    chains = []
    b.stack.register(17, lambda m, ip, _ifp: chains.append(m))
    udp_out(a, ifp(lk, 1).addr, bytes(5000))
    net.run_until_idle()
    m = chains[0]
    # 5028 bytes: three clusters (2048 + 2048 + 932), the IP header trimmed
    lens = []
    cur: Mbuf | None = m
    while cur is not None:
        assert cur.m_flags & M_EXT_CLUSTER
        lens.append(cur.m_len)
        cur = cur.m_next
    assert lens == [MCLBYTES - 20, MCLBYTES, 5028 - 2 * MCLBYTES]
    m_freem(m)
    b.stack.check_leaks()
    ifp(lk, 1).frame_arrived(bytearray(9001), FrameMeta())
    assert ifp(lk, 1).if_data.ierrors == 1
    b.stack.check_leaks()


def test_interrupts_are_charged_on_the_interrupt_cpu() -> None:
    net, a, b, lk = pair()
    sink = Sink(b.stack).attach()
    udp_out(a, ifp(lk, 1).addr, bytes(100))
    t0 = a.machine.cpus[0].clock  # the frame leaves when the sender's CPU is done
    net.run_until_idle()
    costs = b.machine.profile.costs
    # 128 bytes at 100 Mbit/s: 10.24 us; the receive interrupt starts then
    assert sink.got[0].when == t0 + 10_240
    assert b.machine.cpus[0].clock >= t0 + 10_240 + costs.intr_ns + costs.ip_packet_ns
    # the sender's CPU took the transmit completion interrupt at t0 + 10.24 us
    assert a.machine.cpus[0].clock == t0 + 10_240 + costs.intr_ns


@pytest.mark.parametrize("offload", [False, True])
@pytest.mark.parametrize("head", [0, 1, 3, 61])
def test_transmit_checksum_over_pages_at_odd_stream_positions(offload: bool, head: int) -> None:
    # The transport sum is taken in the DMA read: kernel-memory pieces by
    # cksum_bytes, page runs by gather_cksum, each placed at its parity in
    # the segment (RFC 1071 2(B)).  A kernel-memory piece of odd length puts
    # the page run at an odd position; 0xff-heavy bytes make its sum carry.
    from netstack.mbuf import m_cat
    from netstack.wire import in_cksum_bytes, pseudo_sum

    net, a, b, lk = pair(csum_offload=offload)
    sink = Sink(b.stack).attach()
    frames: list[bytes] = []
    lk.add_tap(lambda now, f, meta: frames.append(bytes(f)))
    pre = bytes([0xFF, 0xFE, 0xFF] * 400)[:head]
    data = bytes([0xFF] * 901 + [0x01, 0xFF] * 200)  # odd: the tail starts odd
    body = kmem_chain(a, pre) if pre else None
    m, pages = page_mbuf(a, data, offset=4093)  # two pages, odd offset
    tail = bytes([0xFF, 0x80, 0xFF] * 5)
    m_cat(m, kmem_chain(a, tail))  # kernel memory after the pages
    if body is not None:
        m_cat(body, m)
    udp_out(a, ifp(lk, 1).addr, body if body is not None else m)
    net.run_until_idle()
    assert [g.payload for g in sink.got] == [pre + data + tail] and sink.got[0].cksum_ok
    (frame,) = frames
    seg = frame[20:]
    src = int.from_bytes(frame[12:16], "big")
    dst = int.from_bytes(frame[16:20], "big")
    # the plain RFC 1071 reference over the whole segment and pseudo-header
    assert in_cksum_bytes(seg, pseudo_sum(src, dst, 17, len(seg))) == 0
    free_pages(a, pages)
