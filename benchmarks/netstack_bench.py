"""Bulk TCP over the simulated network, loan versus copy, against ns.py and ns-3.

    python benchmarks/netstack_bench.py [--quick] [--repeats N] [--no-markdown] [--report-only]
                          (UVMLOAN_NSPY=0 skips ns.py, UVMLOAN_NS3=0 skips ns-3)

The workload is the ns-3 reference program's (``benchmarks/ns3_bulk.cc``):
two hosts on one 100 Mbit/s link with 1 ms of one-way delay, MTU 1500 (MSS
1460), a drop-tail queue of 100 packets, one TCP flow bulk-sending 16 MiB
in 64 KiB writes until all of it is acknowledged.  Each stack keeps its own
TCP settings otherwise (ours: NetBSD's defaults).

Our side: the sender's process writes a buffer, then ``send``s it in 64 KiB
calls (blocking, from its own memory); the receiver's process ``recv``s
into its memory (resident, written once before the transfer like the
sender's) whenever data arrives.  Four runs: loan (a kernel without
``options MULTIPROCESSOR``: sosend_loan lends the pages) and copy (the
netbsd-10 default), each with tracing off and with every event recorded.
Reported: simulated TCP segments carried (both directions: data and ACKs)
and data segments per second, acknowledged payload bytes per second, and
time per 64 KiB ``send``.  Every run checks that the receiver got the exact
bytes.

The peers run in the same invocation, on the same workload:

* ns.py (PyPI ``ns-py`` 0.4.5, a pure-Python simulator that carries no
  bytes) in its own environment (``benchmarks/ns_py_env.sh`` makes it): a
  TCPReno flow through a 100-packet Port and 1 ms wires, with the
  congestion control's MSS set to the sender's 1460 (the comparable
  configuration; with TCPReno()'s default of 512 the window grows in
  512-byte steps, which this benchmark used before and also reports), and a
  bare generator -> wire -> sink path (``benchmarks/_nspy_flow.py``).
  Issue 9 sets our goals as ratios to it.
* ns-3 (Debian's libns3-dev 3.37, C++; ``benchmarks/ns3_env.sh`` installs
  it and builds the program), the fastest peer: medians of five runs.

(Not ``benchmarks/netstack.py``: a module of that name next to the scripts
would shadow the ``netstack`` package for them, and for mypy.)

Writes ``benchmarks/results/netstack.json`` and the "netstack" section of
``BENCHMARKS.md``.  Wall-clock figures on a shared machine are noisy; the
ratios compare runs made side by side, by process CPU time as well.
"""

from __future__ import annotations

import cProfile
import importlib.util
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import fmt_table, machine_line, run_benchmark

from netstack.netif import Netif
from netstack.network import Network
from netstack.sockerr import EWOULDBLOCK, SocketError
from netstack.socket import MSG_DONTWAIT

HERE = Path(__file__).resolve().parent
# The workload of benchmarks/ns3_bulk.cc.
CHUNK = 64 * 1024
RATE = 100_000_000
DELAY_NS = 1_000_000
QUEUE = 100  # packets, drop-tail
MSS = 1460
RECV_BUF = 256 * 1024
NS3_RUNS = 5


def pattern(n: int) -> bytes:
    block = bytes((i * 131 + 7) & 0xFF for i in range(65521))  # a prime period
    return (block * (n // len(block) + 1))[:n]


def our_transfer(
    size: int, loan: bool, trace: str, prof: cProfile.Profile | None = None
) -> dict[str, Any]:
    """One transfer; with ``prof``, that profiler runs around the transfer
    itself (the sends and the network running until the receiver has every
    byte), not the set-up or the teardown."""
    mem = f"{max(64, 4 * size >> 20)}M"
    net = Network(seed=1)
    a = net.host("a", memory=mem, trace=trace, profile_overrides={"multiprocessor": not loan})
    b = net.host("b", memory=mem, trace=trace)
    lk = net.link(a, b, bandwidth_bps=RATE, delay_ns=DELAY_NS, queue_limit=QUEUE)
    srv = b.socket("tcp")
    srv.bind(("", 5001))
    srv.listen()
    cli = a.socket("tcp")
    cli.connect((b.addr, 5001))
    conn, _ = srv.accept()
    p = a.machine.spawn("sender")
    va = p.mmap(size)
    data = pattern(size)
    p.write(va, data)
    q = b.machine.spawn("receiver")
    rva = q.mmap(size)
    # resident, as a receive buffer in use is (the sender's is written
    # above): the transfer then measures the network path, not first-touch
    # zero-fill faults of the receiver
    q.write(rva, bytes(size))
    got = [0]

    def drain(s: Any) -> None:
        # one read per wakeup, as a reader woken by select(2) does; again
        # only if that read filled the buffer it offered
        while got[0] < size:
            want = min(RECV_BUF, size - got[0])
            try:
                n = s.recv(q, rva + got[0], want, MSG_DONTWAIT)
            except SocketError as e:
                if e.errno == EWOULDBLOCK:
                    return
                raise
            if n <= 0:
                return
            got[0] += n
            if n < want:
                return

    conn.setblocking(False)
    conn.on_readable(drain)
    ends = [e for e in lk.ends if isinstance(e, Netif)]
    before = [(e.if_data.opackets) for e in ends]
    sends = 0
    if prof is not None:
        prof.enable()
    t0 = time.perf_counter()
    c0 = time.process_time()
    off = 0
    while off < size:
        # a blocking send(2) takes the whole chunk unless interrupted; count
        # every call anyway
        off += cli.send(p, va + off, min(CHUNK, size - off))
        sends += 1
    while got[0] < size and net.sched.step():
        pass
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if prof is not None:
        prof.disable()
    assert got[0] == size, f"received {got[0]} of {size}"
    assert q.read(rva, size) == data, "the receiver got other bytes"
    data_segs = ends[0].if_data.opackets - before[0]
    acks = ends[1].if_data.opackets - before[1]
    loans = a.machine.counters.get("sosend loan big", 0)
    cli.close()
    conn.close()
    srv.close()
    net.run_until_idle(max_events=1_000_000)
    net.close()
    return {
        "loan": loan, "trace": trace, "size": size, "sends": sends, "wall": wall, "cpu": cpu,
        "data_segments": data_segs, "acks": acks, "segments": data_segs + acks,
        "loan_big": loans, "sim_ns": net.now,
    }


def _peer_env(script: str, timeout: float) -> str:
    """Run a peer's set-up script (it installs or builds what is missing)
    and return the path it prints last: the peer's python or binary."""
    return subprocess.run(
        ["bash", str(HERE / script)], capture_output=True, text=True, check=True,
        timeout=timeout,
    ).stdout.strip().splitlines()[-1]


def nspy(size: int) -> dict[str, Any] | None:
    if os.environ.get("UVMLOAN_NSPY", "1") == "0":
        return None
    try:
        py = _peer_env("ns_py_env.sh", 900)
        out = subprocess.run(
            [py, str(HERE / "_nspy_flow.py"), str(size), str(float(RATE)),
             str(DELAY_NS / 1e9), str(MSS), str(QUEUE)],
            capture_output=True, text=True, check=True, timeout=3600,
        ).stdout
    except (subprocess.SubprocessError, OSError, IndexError) as e:
        print(f"ns.py not measured: {e}", file=sys.stderr)
        return None
    r: dict[str, Any] = json.loads(out)
    return r


def ns3(size: int, runs: int) -> dict[str, Any] | None:
    """The ns-3 program on the same workload: the median run by wall time
    of the simulation itself (``run_s``; ns-3 is single-threaded, so that is
    its CPU time too), with every run's figures."""
    if os.environ.get("UVMLOAN_NS3", "1") == "0":
        return None
    try:
        binary = _peer_env("ns3_env.sh", 1800)
        reps = []
        for _ in range(runs):
            out = subprocess.run(
                [binary, f"--bytes={size}", "--mode=trace", f"--queue={QUEUE}",
                 f"--seg={MSS}"],
                capture_output=True, text=True, check=True, timeout=600,
            ).stdout
            line = next(x for x in out.splitlines() if x.startswith("RESULT "))
            kv = dict(f.split("=", 1) for f in line.split()[1:])
            reps.append({
                "run_s": float(kv["run_s"]), "sim_s": float(kv["sim_s"]),
                "data_segments": int(kv["a2b_pkts"]), "acks": int(kv["b2a_pkts"]),
                "acked_bytes": int(kv["acked"]), "drops": int(kv["drops"]),
            })
    except (subprocess.SubprocessError, OSError, IndexError, StopIteration, KeyError,
            ValueError) as e:
        print(f"ns-3 not measured: {e}", file=sys.stderr)
        return None
    if any(x["acked_bytes"] < size for x in reps):
        print("ns-3 not measured: a run did not acknowledge every byte", file=sys.stderr)
        return None
    reps.sort(key=lambda x: x["run_s"])
    med = dict(reps[len(reps) // 2])
    med["runs"] = len(reps)
    med["run_s_min"], med["run_s_max"] = reps[0]["run_s"], reps[-1]["run_s"]
    return med


# Where the CPU time of a transfer goes, by layer: a module path (or, for
# a built-in, the layer of whoever called it) to a row of the table.  First
# match wins.
LAYERS: list[tuple[str, str]] = [
    ("C (physmem: gather, checksums, copies)", "_physmem"),
    ("TCP core (sans-I/O: input, output, timers)", "netstack/tcp/"),
    ("TCP glue (tcp_usrreq: events to actions)", "netstack/tcp_usrreq.py"),
    ("sockets (sosend, soreceive, sockbuf, loans)", "netstack/so"),
    ("mbufs", "netstack/mbuf"),
    ("IP (ip_input, ip_output, headers)", "netstack/ip.py"),
    ("IP (ip_input, ip_output, headers)", "netstack/wire.py"),
    ("interface (netif: queues, DMA, interrupts)", "netstack/netif.py"),
    ("link (serialisation, propagation)", "netstack/link.py"),
    ("events (Host.kernel, scheduler)", "netstack/network.py"),
    ("events (Host.kernel, scheduler)", "uvmloan/sim.py"),
    ("MMU (copyin/copyout through the TLB)", "uvmloan/mmu.py"),
    ("MMU (copyin/copyout through the TLB)", "uvmloan/process.py"),
    ("VM (uvm_loan, pmap, pages, faults)", "uvmloan/"),
    ("TCP core (sans-I/O: input, output, timers)", "<attrs generated"),
    ("the benchmark's reader and writer", "benchmarks/"),
]


def _layer(path: str) -> str | None:
    path = path.replace("\\", "/")
    for name, frag in LAYERS:
        if frag in path:
            return name
    return None


def profile_layers(size: int, loan: bool) -> dict[str, Any]:
    """One transfer under cProfile, its time summed by layer.  A built-in's
    own time (dict.get, heapq, memoryview...) is split among its callers'
    layers by the time each call site spent in it; a C method of the physmem
    extension counts as its own layer.  The profiler inflates small Python
    functions more than C, so the shares are approximate."""
    our_transfer(size >> 3, loan, "off")  # warm up
    prof = cProfile.Profile()
    r = our_transfer(size, loan, "off", prof)
    st: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    by: dict[str, float] = {}
    calls = 0
    total = 0.0
    for (path, _line, name), (_cc, nc, tt, _ct, callers) in st.items():
        calls += nc
        total += tt
        if path == "~":
            if "_physmem" in name:
                layer = _layer("_physmem") or "other"
                by[layer] = by.get(layer, 0.0) + tt
                continue
            # by the time spent in it from each call site, or (when too
            # short to time) by the calls
            w = 2 if sum(v[2] for v in callers.values()) > 0 else 1
            spent = sum(v[w] for v in callers.values())
            if not spent:
                by["other"] = by.get("other", 0.0) + tt
                continue
            for (cpath, _cl, _cn), v in callers.items():
                layer = _layer(cpath) or "other"
                by[layer] = by.get(layer, 0.0) + tt * v[w] / spent
            continue
        layer = _layer(path) or "other"
        by[layer] = by.get(layer, 0.0) + tt
    return {"loan": loan, "size": size, "segments": r["segments"], "calls": calls,
            "seconds": total, "layers": dict(sorted(by.items(), key=lambda kv: -kv[1]))}


def bench(quick: bool, repeats: int) -> dict[str, Any]:
    size = (2 if quick else 16) << 20
    load = os.getloadavg()[0]
    runs = []
    for loan in (True, False):
        for trace in ("off", "record"):
            reps = [our_transfer(size, loan, trace) for _ in range(max(1, repeats))]
            # the median run by wall time, with the spread of all of them
            reps.sort(key=lambda x: x["wall"])
            med = dict(reps[len(reps) // 2])
            med["repeats"] = len(reps)
            med["wall_min"], med["wall_max"] = reps[0]["wall"], reps[-1]["wall"]
            cpus = sorted(x["cpu"] for x in reps)
            med["cpu_median"] = cpus[len(cpus) // 2]
            med["cpu_min"], med["cpu_max"] = cpus[0], cpus[-1]
            runs.append(med)
    profiles = [profile_layers(size >> 2, loan) for loan in (False, True)]
    ns = nspy(size)
    n3 = ns3(size, NS3_RUNS)
    return {
        "machine": machine_line(), "size": size, "runs": runs, "nspy": ns, "ns3": n3,
        "profiles": profiles,
        "workload": {"rate_bps": RATE, "delay_ns": DELAY_NS, "queue": QUEUE, "mss": MSS,
                     "chunk": CHUNK},
        "loadavg_start": load, "loadavg_end": os.getloadavg()[0],
    }


def _rate(n: float, wall: float) -> str:
    return f"{n / wall:,.0f}"


def _mode(run: dict[str, Any]) -> str:
    return f"{'loan' if run['loan'] else 'copy'}/{run['trace']}"


def _peers(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The peers measured in this run, each with its segments (both
    directions), acknowledged bytes, wall and CPU seconds."""
    peers = []
    ns = r.get("nspy")
    if ns is not None:
        for key, name in (("tcp", "ns.py, TCPReno(mss=1460)"),
                          ("tcp_default_cc", "ns.py, TCPReno() defaults (MSS 512 in cwnd)")):
            t = ns.get(key)
            if t is not None:
                peers.append({"name": name, "key": key, "data": t["segments"],
                              "acks": t["acks"], "bytes": t["acked_bytes"],
                              "wall": t["wall"], "cpu": t["cpu"]})
    n3 = r.get("ns3")
    if n3 is not None:
        peers.append({"name": f"ns-3 3.37, NewReno (median of {n3['runs']})", "key": "ns3",
                      "data": n3["data_segments"], "acks": n3["acks"],
                      "bytes": n3["acked_bytes"], "wall": n3["run_s"], "cpu": n3["run_s"]})
    return peers


def report(r: dict[str, Any]) -> str:
    size = r["size"]
    wl = r.get("workload", {"delay_ns": 100_000, "queue": 256})
    peers = _peers(r)
    by_key = {p["key"]: p for p in peers}
    ref = by_key.get("tcp")  # issue 9's yardstick: ns.py, configured comparably
    fast = by_key.get("ns3")
    lines = []
    if peers:
        lines.append(
            f"The peers on the same workload ({size >> 20} MiB; segments count both "
            "directions, data and ACKs; ns-3 is single-threaded, so its CPU time is its "
            "wall time):"
        )
        lines.append("")
        lines.append(fmt_table(
            ["peer", "data segs", "ACKs", "acked bytes", "wall s", "segments/CPU s",
             "acked B/CPU s"],
            [[p["name"], f"{p['data']:,}", f"{p['acks']:,}", f"{int(p['bytes']):,}",
              f"{p['wall']:.3f}", f"{(p['data'] + p['acks']) / p['cpu']:,.0f}",
              f"{p['bytes'] / p['cpu']:,.0f}"] for p in peers]))
        lines.append("")
        ns = r.get("nspy")
        if ns is not None:
            bare = ns["bare"]
            lines.append(
                "ns.py sends most segments short of the MSS (its window is counted in bytes "
                "and grows fractionally) and retransmits on every duplicate ACK past the "
                f"third: {ns['tcp']['segments']:,} data segments carry {size:,} bytes that "
                f"fill {-(-size // MSS):,} full ones.  Its bare generator-wire-sink path: "
                f"{bare['packets'] / bare['cpu']:,.0f} packets per CPU second."
            )
            lines.append("")

    def x(ours: float, peer: dict[str, Any] | None, what: str, fmt: str) -> str:
        if peer is None:
            return "-"
        theirs = (peer["data"] + peer["acks"]) if what == "segs" else peer["bytes"]
        return format(ours / (theirs / peer["cpu"]), fmt)

    header = ["mode", "trace", "segments/s", "data segs/s", "acked B/s", "ms per 64 KiB send",
              "loan big"]
    rows = []
    for run in r["runs"]:
        wall = run["wall"]
        rows.append([
            "loan" if run["loan"] else "copy", run["trace"], _rate(run["segments"], wall),
            _rate(run["data_segments"], wall), _rate(size, wall),
            f"{wall / run['sends'] * 1000:.2f}",
            str(run["loan_big"]) if run["trace"] != "off" else "-",
        ])
    lines.append("Our stack, by wall time:")
    lines.append("")
    lines.append(fmt_table(header, rows))
    lines.append("")
    cpu_rows = []
    for run in r["runs"]:
        seg_c = run["segments"] / run["cpu"]
        byt_c = size / run["cpu"]
        cpu_rows.append([
            "loan" if run["loan"] else "copy", run["trace"], f"{seg_c:,.0f}", f"{byt_c:,.0f}",
            x(seg_c, ref, "segs", ".2f"), x(byt_c, ref, "bytes", ".1f"),
            x(byt_c, by_key.get("tcp_default_cc"), "bytes", ".1f"),
            x(seg_c, fast, "segs", ".2f"), x(byt_c, fast, "bytes", ".2f"),
        ])
    lines.append(
        "By process CPU time (robust to other load on the machine), as ratios to the peers "
        "(ns.py with TCPReno(mss=1460) unless said):"
    )
    lines.append("")
    lines.append(fmt_table(
        ["mode", "trace", "segments/CPU s", "acked B/CPU s", "x ns.py segs", "x ns.py B",
         "x ns.py B (default cc)", "x ns-3 segs", "x ns-3 B"], cpu_rows))
    lines.append("")
    if ref is not None:
        ref_seg = (ref["data"] + ref["acks"]) / ref["cpu"]
        ref_b = ref["bytes"] / ref["cpu"]
        seg_x = max(x_["segments"] / x_["cpu"] for x_ in r["runs"]) / ref_seg
        byt_x = max(size / x_["cpu"] for x_ in r["runs"]) / ref_b
        below = sorted({_mode(x_) for x_ in r["runs"] if size / x_["cpu"] < 10.0 * ref_b})
        lines.append(
            "Goal (issue 9): at least 1.0x ns.py's TCP segments per second and at least 10x "
            "its acknowledged bytes per second.  Best run by CPU time: "
            f"{seg_x:.2f}x its segments (1.0x: {'met' if seg_x >= 1.0 else 'not met'}) and "
            f"{byt_x:.1f}x its acknowledged bytes (10x: {'met' if byt_x >= 10.0 else 'not met'}"
            + (f"; below 10x: {', '.join(below)}" if below else "; every mode") + ")."
        )
        lines.append("")
    profiles = r.get("profiles")
    if profiles:
        names = list(profiles[0]["layers"])
        for p in profiles[1:]:
            names += [n for n in p["layers"] if n not in names]
        lines.append(
            "Where our CPU time goes (one transfer of "
            f"{profiles[0]['size'] >> 20} MiB per mode under cProfile, tracing off: each "
            "layer's share; a built-in's time goes to its caller's layer; approximate, as "
            "the profiler slows small Python functions more than C).  Python calls per "
            "segment: "
            + ", ".join(f"{'loan' if p['loan'] else 'copy'} {p['calls'] / p['segments']:.0f}"
                        for p in profiles)
            + ":"
        )
        lines.append("")
        lines.append(fmt_table(
            ["layer"] + [f"{'loan' if p['loan'] else 'copy'}" for p in profiles],
            [[n] + [f"{100 * p['layers'].get(n, 0.0) / p['seconds']:.1f}%" for p in profiles]
             for n in names]))
        lines.append("")
    if "loadavg_start" in r:
        spread = ", ".join(
            f"{_mode(x_)} {x_['wall_min']:.2f}-{x_['wall_max']:.2f} s" for x_ in r["runs"])
        n3 = r.get("ns3")
        lines.append(
            f"Each of our rows is the median of {r['runs'][0].get('repeats', 1)} runs by wall "
            f"time (range of the transfer's wall time: {spread}"
            + (f"; ns-3 {n3['run_s_min']:.3f}-{n3['run_s_max']:.3f} s" if n3 else "")
            + f"); load average {r['loadavg_start']:.2f} at the start and "
            f"{r['loadavg_end']:.2f} at the end."
        )
        lines.append("")
    if importlib.util.find_spec("matplotlib") is not None:
        lines.append("![acknowledged bytes per CPU second against the peers, and our time by "
                     "layer](benchmarks/results/netstack.png)")
        lines.append("")
    lines.append(
        f"{size >> 20} MiB in 64 KiB sends over 100 Mbit/s, {wl['delay_ns'] / 1e6:g} ms one-way "
        f"delay, a {wl['queue']}-packet drop-tail queue (the workload of "
        "benchmarks/ns3_bulk.cc); exact bytes checked.  "
        '"loan big" is the sosend counter (counters are off when tracing is off).'
    )
    return "\n".join(lines)


PLOT = HERE / "results" / "netstack.png"


def plot(r: dict[str, Any], path: Path = PLOT) -> Path | None:
    """Two panels: acknowledged bytes per CPU second of our four runs and the
    peers (log scale), and where our CPU time goes by layer (copy and loan).
    None without matplotlib."""
    from uvmloan.experiments.repro import new_figure, save_figure

    made = new_figure(ncols=2, width=6.4, height=4.4)
    if made is None:
        return None
    fig, (left, right) = made
    size = r["size"]
    names = [f"ours {_mode(x)}" for x in r["runs"]]
    rates = [size / x["cpu"] for x in r["runs"]]
    colours = ["tab:blue"] * len(names)
    for p in _peers(r):
        names.append(p["name"].replace(" (median of 5)", ""))
        rates.append(p["bytes"] / p["cpu"])
        colours.append("tab:gray" if p["key"] != "ns3" else "tab:green")
    ys = range(len(names))
    left.barh(list(ys), rates, color=colours)
    left.set_yticks(list(ys), names, fontsize=8)
    left.invert_yaxis()
    left.set_xscale("log")
    left.set_xlabel("acknowledged payload bytes per CPU second (log)")
    left.set_title(f"{size >> 20} MiB bulk TCP, 100 Mbit/s, 1 ms, 100-packet queue", fontsize=9)
    profiles = r.get("profiles") or []
    layers: list[str] = []
    for p in profiles:
        layers += [n for n in p["layers"] if n not in layers]
    bottom = [0.0] * len(profiles)
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    for k, name in enumerate(layers):
        share = [100 * p["layers"].get(name, 0.0) / p["seconds"] for p in profiles]
        colour = cmap(k % 20)
        right.bar([("loan" if p["loan"] else "copy") for p in profiles], share, bottom=bottom,
                  label=name, color=colour)
        bottom = [b + s for b, s in zip(bottom, share, strict=True)]
    right.set_ylabel("share of our CPU time (%), cProfile")
    right.set_title("where our time goes, by layer", fontsize=9)
    right.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    rc = run_benchmark(
        "netstack", __doc__, bench, report, argv,
        quick_help="2 MiB instead of 16 MiB", full_repeats=3, report_only=True,
    )
    if rc == 0:
        from _common import results_path

        r = json.loads(results_path("netstack").read_text(encoding="utf-8"))
        out = plot(r)
        print(f"wrote {out.relative_to(HERE.parent)}" if out else
              "no plot: matplotlib is not installed (pip install matplotlib)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
