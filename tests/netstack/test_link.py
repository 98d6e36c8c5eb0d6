"""link.py: serialisation and propagation times worked out by hand, queues,
seeded impairments, the switch."""

from __future__ import annotations

from typing import Any

import pytest
from rawnet import Sink, ifp, pair, udp_out

from netstack.link import Channel, FrameMeta, Link, LinkParams
from netstack.network import Network


class Recorder:
    def __init__(self, net: Network) -> None:
        self.net = net
        self.got: list[tuple[int, bytes]] = []

    def frame_arrived(self, frame: bytearray, meta: FrameMeta) -> None:
        self.got.append((self.net.now, bytes(frame)))


def bare_channel(seed: int = 0, **params: Any) -> tuple[Network, Channel, Recorder]:
    net = Network(seed=seed)
    lk = Link(net, 0, LinkParams(**params), "x-y")
    rec = Recorder(net)
    ch = Channel(lk, "x>y", rec)
    return net, ch, rec


def test_serialisation_time_by_hand() -> None:
    # 1500 B * 8 = 12000 bits at 100 Mbit/s = 120 us
    assert LinkParams(bandwidth_bps=100_000_000).serialization_ns(1500) == 120_000
    # 1 Gbit/s: 12 us; 64 B at 10 Mbit/s: 51.2 us
    assert LinkParams(bandwidth_bps=1_000_000_000).serialization_ns(1500) == 12_000
    assert LinkParams(bandwidth_bps=10_000_000).serialization_ns(64) == 51_200
    # rounded up: 1 byte at 3 bit/s is 8/3 s
    assert LinkParams(bandwidth_bps=3).serialization_ns(1) == 2_666_666_667
    # Ethernet framing overhead 38 B: 1538 * 8 / 100e6 = 123.04 us
    assert LinkParams(overhead_bytes=38).serialization_ns(1500) == 123_040


def test_back_to_back_frames_arrive_serialised_plus_delay() -> None:
    net, ch, rec = bare_channel(bandwidth_bps=100_000_000, delay_ns=5_000)
    done: list[int] = []
    for i in range(3):
        assert ch.send(bytearray([i]) * 1500, FrameMeta(), lambda: done.append(net.now))
    net.run_until_idle()
    assert [t for t, _ in rec.got] == [125_000, 245_000, 365_000]
    assert done == [120_000, 240_000, 360_000]
    assert [f[0] for _, f in rec.got] == [0, 1, 2]


def test_queue_limit_drop_tail_counted() -> None:
    net, ch, rec = bare_channel(queue_limit=2)
    results = [ch.send(bytearray([i]) * 100, FrameMeta()) for i in range(5)]
    # one on the wire, two queued, the last two dropped
    assert results == [True, True, True, False, False]
    assert ch.link.stats.drops_queue == 2
    net.run_until_idle()
    assert [f[0] for _, f in rec.got] == [0, 1, 2]


def _pattern(seed: int, **params: Any) -> list[int]:
    net, ch, rec = bare_channel(seed=seed, bandwidth_bps=10**9, queue_limit=2000, **params)
    for i in range(1000):
        ch.send(bytearray(i.to_bytes(2, "big")) * 10, FrameMeta())
    net.run_until_idle()
    return [int.from_bytes(f[:2], "big") for _, f in rec.got]


def test_loss_is_deterministic_for_a_seed() -> None:
    a = _pattern(7, loss=0.1)
    assert a == _pattern(7, loss=0.1)
    assert a != _pattern(8, loss=0.1)
    assert 850 < len(a) < 950  # about 10% of 1000 lost
    assert a == sorted(a)  # loss alone never reorders


def test_duplication_and_reordering() -> None:
    dup = _pattern(1, duplicate=1.0)
    assert dup == [i for i in range(1000) for _ in (0, 1)]
    net, ch, rec = bare_channel(seed=3, reorder=0.3, queue_limit=100)
    for i in range(50):
        ch.send(bytearray([i]) * 100, FrameMeta())
    net.run_until_idle()
    order = [f[0] for _, f in rec.got]
    assert sorted(order) == list(range(50))
    assert order != list(range(50))
    assert ch.link.stats.reordered > 0


def test_reorder_delay_by_hand() -> None:
    net, ch, rec = bare_channel(reorder=1.0, reorder_delay_ns=1_000_000)
    ch.send(bytearray(1500), FrameMeta())
    net.run_until_idle()
    assert rec.got[0][0] == 120_000 + 1_000_000
    net, ch, rec = bare_channel(reorder=1.0)  # default: 4 MTU serialisation times
    ch.send(bytearray(100), FrameMeta())
    net.run_until_idle()
    assert rec.got[0][0] == 8_000 + 4 * 120_000


def test_corruption_flips_one_bit_of_the_copy() -> None:
    net, ch, rec = bare_channel(seed=5, corrupt=1.0, queue_limit=100)
    sent = [bytearray(range(i, i + 40)) for i in range(20)]
    for f in sent:
        ch.send(f, FrameMeta())
    net.run_until_idle()
    for f, (_, got) in zip(sent, rec.got, strict=True):
        assert f == bytearray(range(f[0], f[0] + 40))  # the sender's bytes untouched
        diff = sum(bin(x ^ y).count("1") for x, y in zip(f, got, strict=True))
        assert diff == 1


def test_corrupted_datagrams_are_caught_by_checksums() -> None:
    net, a, b, lk = pair(seed=11, corrupt=1.0)
    sink = Sink(b.stack).attach()
    for i in range(30):
        assert udp_out(a, ifp(lk, 1).addr, bytes([i]) * 200) == 0
    net.run_until_idle()
    ip_bad = sum(b.stack.ipstat[k] for k in ("ips_badsum", "ips_badvers", "ips_badhlen",
                                             "ips_badlen", "ips_tooshort", "ips_cantforward",
                                             "ips_noproto"))
    udp_bad = sum(1 for g in sink.got if not g.cksum_ok) + len(sink.bad)
    assert ip_bad + udp_bad == 30
    assert all(not g.cksum_ok for g in sink.got)
    b.stack.check_leaks()
    a.stack.check_leaks()


def test_switch_forwards_by_ip_destination() -> None:
    net = Network(seed=0)
    hs = [net.host(n, memory="4M") for n in "abc"]
    sw = net.switch("sw")
    links = [net.link(h, sw, bandwidth_bps=100_000_000, delay_ns=1_000) for h in hs]
    sinks = [Sink(h.stack).attach() for h in hs]
    addr_c = ifp(links[2], 0).addr
    assert udp_out(hs[0], addr_c, b"x" * 1472) == 0
    t0 = hs[0].machine.cpus[0].clock  # the sender's activity ended here
    net.run_until_idle()
    assert [len(s.got) for s in sinks] == [0, 0, 1]
    # host link, then the switch's output port: 2 x (120 us + 1 us) after the
    # sender's CPU finished
    g = sinks[2].got[0]
    assert g.when == t0 + 2 * (120_000 + 1_000)
    assert g.payload == b"x" * 1472
    assert hs[0].addr != hs[2].addr
    # every pair is routed
    for h in hs:
        assert len(h.stack.rt) == 2
    assert sw.drops_noroute == 0


def test_switch_output_port_queue() -> None:
    net = Network(seed=0)
    a, b, c = (net.host(n, memory="4M") for n in "abc")
    sw = net.switch("sw")
    net.link(a, sw, bandwidth_bps=10**9)
    net.link(b, sw, bandwidth_bps=10**9)
    lc = net.link(c, sw, bandwidth_bps=10**7, queue_limit=3)
    sink = Sink(c.stack).attach()
    dst = ifp(lc, 0).addr
    for _ in range(10):
        udp_out(a, dst, b"y" * 1000)
        udp_out(b, dst, b"z" * 1000)
    net.run_until_idle()
    assert sw.drops_queue > 0
    assert len(sink.got) + sw.drops_queue == 20


def test_switch_drops_frames_too_big_for_the_output_port() -> None:
    net = Network(seed=0)
    a, b = net.host("a", memory="4M"), net.host("b", memory="4M")
    sw = net.switch("sw")
    net.link(a, sw, mtu=9000)
    lb = net.link(b, sw, mtu=1500)
    sink = Sink(b.stack).attach()
    assert udp_out(a, ifp(lb, 0).addr, bytes(5000)) == 0  # one 5028-byte frame
    assert udp_out(a, ifp(lb, 0).addr, bytes(1000)) == 0
    net.run_until_idle()
    assert sw.drops_mtu == 1
    assert [len(g.payload) for g in sink.got] == [1000]


@pytest.mark.parametrize(
    "params",
    [{"loss": 1.5}, {"mtu": 20}, {"bandwidth_bps": 0}, {"delay_ns": -1}, {"queue_limit": 0},
     {"reorder_delay_ns": -5}, {"duplicate": "x"}],
)
def test_bad_link_parameters(params: dict[str, Any]) -> None:
    net = Network()
    a, b = net.host("a", memory="1M"), net.host("b", memory="1M")
    with pytest.raises(ValueError):
        net.link(a, b, **params)
    assert net.links == [] and a.stack.ifnet == []


def test_bad_link_ends() -> None:
    net = Network()
    a = net.host("a", memory="1M")
    other = Network().host("z", memory="1M")
    with pytest.raises(ValueError):
        net.link(a, a)
    with pytest.raises(ValueError):
        net.link(a, other)
    with pytest.raises(TypeError):
        net.link(a, "b")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        net.link(a, net.host("b", memory="1M"), speed=1)
