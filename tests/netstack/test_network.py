"""network.py: kernel activities on the simulated clock, determinism, hosts."""

from __future__ import annotations

import pytest
from rawnet import Sink, ifp, pair, udp_out

from netstack.network import Network


def test_activity_starts_at_max_of_now_and_cpu_clock_and_emits_at_its_end() -> None:
    net = Network()
    h = net.host("h", ncpus=2, memory="1M")
    seen: list[tuple[str, int]] = []
    h.machine.cpus[1].clock = 5_000  # CPU 1 is busy until 5 us

    def work() -> int:
        seen.append(("start", h.clock()))
        h.machine.platform.charge(700)
        h.emit(lambda: seen.append(("emitted", net.now)))
        h.machine.platform.charge(300)
        return 42

    assert h.kernel(work, cpu=1) == 42
    assert h.machine.cpus[1].clock == 6_000
    net.run_until_idle()
    assert seen == [("start", 5_000), ("emitted", 6_000)]
    # an idle CPU starts at the network's now
    net.run(until=10_000)
    assert h.kernel(h.clock, cpu=0) == 10_000


def test_nested_activity_on_the_same_cpu_shares_the_emissions() -> None:
    net = Network()
    h = net.host("h", memory="1M")
    order: list[int] = []

    def inner() -> None:
        h.machine.platform.charge(50)
        h.emit(lambda: order.append(net.now))

    def outer() -> None:
        h.kernel(inner, cpu=0)
        h.machine.platform.charge(50)

    h.kernel(outer)
    net.run_until_idle()
    assert order == [100]


def test_timeout_runs_as_an_activity_later() -> None:
    net = Network()
    h = net.host("h", memory="1M")
    fired: list[int] = []
    h.timeout(1_000, lambda: fired.append(h.clock()))
    net.run(until=999)
    assert fired == []
    net.run(until=1_000)
    assert fired == [1_000]
    with pytest.raises(ValueError):
        h.timeout(-1, lambda: None)


def _run(seed: int) -> tuple[list[bytes], list[int]]:
    net, a, b, lk = pair(seed=seed, loss=0.2, duplicate=0.1, reorder=0.2, corrupt=0.05)
    sink = Sink(b.stack).attach()
    frames: list[bytes] = []
    lk.add_tap(lambda now, f, meta: frames.append(bytes(f)))
    for i in range(60):
        udp_out(a, ifp(lk, 1).addr, bytes([i]) * (100 + 37 * i))
    net.run_until_idle()
    return frames, [g.when for g in sink.got]


def test_same_seed_same_run() -> None:
    assert _run(3) == _run(3)
    assert _run(3)[1] != _run(4)[1]


def test_addresses_and_routes() -> None:
    _net, a, b, lk = pair()
    assert a.addr == "192.0.2.1" and b.addr == "192.0.2.2"
    assert a.stack.rt == {ifp(lk, 1).addr: ifp(lk, 0)}
    assert b.stack.source_for(ifp(lk, 0).addr) == ifp(lk, 1).addr


def test_bad_arguments() -> None:
    net = Network()
    net.host("a", memory="1M")
    with pytest.raises(ValueError):
        net.host("a", memory="1M")
    with pytest.raises(ValueError):
        net.host("", memory="1M")
    with pytest.raises(TypeError):
        Network(seed="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        net.run(until=1.5)  # type: ignore[arg-type]
    net.run(until=10)
    with pytest.raises(ValueError):
        net.run(until=5)
    with pytest.raises(ValueError):
        net.hosts["a"].kernel(lambda: None, cpu=3)
    with pytest.raises(ValueError):
        Network().host("h", ncpus=0)
    h = Network().host("lonely", memory="1M")
    with pytest.raises(ValueError):
        _ = h.addr
