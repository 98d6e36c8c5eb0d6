"""The ns.py side of benchmarks/netstack.py, run in ns.py's own environment
(benchmarks/ns_py_env.sh): prints one JSON object.

    python _nspy_flow.py SIZE_BYTES RATE_BPS DELAY_S MSS QLIMIT_PACKETS

* a TCP flow (TCPPacketGenerator with TCPReno) of SIZE bytes through a Port
  of RATE bit/s holding at most QLIMIT packets and a Wire of DELAY s to a
  TCPSink whose ACKs return over a Wire of the same delay, run until the
  sender's last_ack covers SIZE (as the ns-3 program stops at the last ACK):
  data segments the sender emitted (first transmissions and
  retransmissions), ACKs, the bytes acknowledged, and the wall and CPU time;
  twice: with the congestion control's MSS and initial window set to the
  sender's MSS ("tcp", the comparable configuration), and with TCPReno()'s
  defaults (an MSS of 512 in the window arithmetic and a 512-byte initial
  window while the sender cuts 1460-byte segments: "tcp_default_cc", how
  this benchmark configured ns.py before);
* a bare DistPacketGenerator -> Wire -> PacketSink path of MSS-sized packets
  at the line rate: packets delivered per wall second.

ns.py carries no bytes: packets are sizes and sequence numbers.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import simpy  # type: ignore[import-not-found]
from ns.flow.cc import TCPReno  # type: ignore[import-not-found]
from ns.flow.flow import Flow  # type: ignore[import-not-found]
from ns.packet.dist_generator import DistPacketGenerator  # type: ignore[import-not-found]
from ns.packet.sink import PacketSink  # type: ignore[import-not-found]
from ns.packet.tcp_generator import TCPPacketGenerator  # type: ignore[import-not-found]
from ns.packet.tcp_sink import TCPSink  # type: ignore[import-not-found]
from ns.port.port import Port  # type: ignore[import-not-found]
from ns.port.wire import Wire  # type: ignore[import-not-found]


class Counter:
    """Counts what passes, then hands it on."""

    def __init__(self) -> None:
        self.out: Any = None
        self.n = 0

    def put(self, pkt: Any) -> None:
        self.n += 1
        self.out.put(pkt)


def tcp_flow(
    size: int, rate: float, delay: float, mss: int, qlimit: int, cc_mss: bool
) -> dict[str, Any]:
    env = simpy.Environment()
    flow = Flow(fid=0, src="a", dst="b", size=size, start_time=0, finish_time=1e9)
    # TCPReno keeps its own MSS for the window arithmetic (default 512); the
    # generator's mss only cuts the segments.  Left at 512 the window grows
    # in 512-byte steps and most segments go out short of a full 1460.
    cc = TCPReno(mss=mss, cwnd=mss) if cc_mss else TCPReno()
    sender = TCPPacketGenerator(env, flow=flow, cc=cc, element_id="a")
    sender.mss = mss
    data = Counter()
    acks = Counter()
    port = Port(env, rate=rate, qlimit=qlimit)
    down = Wire(env, lambda: delay)
    up = Wire(env, lambda: delay)
    sink = TCPSink(env, rec_waits=False, rec_arrivals=False, rec_flow_ids=False)
    sender.out = data
    data.out = port
    port.out = down
    down.out = sink
    sink.out = acks
    acks.out = up
    up.out = sender
    t0 = time.perf_counter()
    c0 = time.process_time()
    # until the last byte is acknowledged, within a generous horizon (the
    # transfer needs size * 8 / rate seconds of simulated time plus
    # retransmission timeouts); env.step is what env.run loops over
    horizon = size * 8 / rate * 20 + 60
    step = env.step
    while sender.last_ack < size and env.peek() < horizon:
        step()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {
        "cpu": cpu,
        "segments": data.n,
        "acks": acks.n,
        "acked_bytes": sender.last_ack,
        "sim_seconds": env.now,
        "wall": wall,
    }


def bare_path(n: int, rate: float, delay: float, size: int) -> dict[str, Any]:
    env = simpy.Environment()
    gen = DistPacketGenerator(env, "gen", lambda: size * 8 / rate, lambda: size, size=n * size)
    wire = Wire(env, lambda: delay)
    sink = PacketSink(env, rec_arrivals=False, rec_waits=False, rec_flow_ids=False)
    gen.out = wire
    wire.out = sink
    t0 = time.perf_counter()
    c0 = time.process_time()
    env.run()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    got = sum(sink.packets_received.values())
    return {"packets": got, "wall": wall, "cpu": cpu}


def main() -> None:
    size, rate, delay = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    mss, qlimit = int(sys.argv[4]), int(sys.argv[5])
    print(json.dumps({
        "tcp": tcp_flow(size, rate, delay, mss, qlimit, cc_mss=True),
        "tcp_default_cc": tcp_flow(size, rate, delay, mss, qlimit, cc_mss=False),
        "bare": bare_path(max(size // mss, 1000), rate, delay, mss),
    }))


if __name__ == "__main__":
    main()
