"""Benchmarks of the machine-independent VM (faults, copy-on-write, MMU stores).

    python benchmarks/vm.py [--quick] [--repeats N] [--no-markdown]

Measures, as medians over repeats, in wall time of the model itself:

* zero-fill faults per second: a process stores one byte into each page of
  a fresh private anonymous buffer (each store a fault that allocates,
  zeroes and maps a page);
* copy-on-write faults per second: after fork the child stores one byte
  into each page its parent had written (each store promotes a copy);
* store bandwidth through the MMU for one 64 MiB buffer (16 MiB with
  ``--quick``): ``Process.write`` of the whole buffer, first touch (every
  page a zero-fill fault) and again with every page mapped (TLB misses and
  page walks only), against a raw arena copy of the same bytes into the same
  frames (``PhysMem.copyin``): the ratio is the cost of the MMU model.

Also reports the simulated nanoseconds the cost model charges per fault.
Tracing is off unless stated.  Writes ``benchmarks/results/vm.json`` and the
"vm" section of ``BENCHMARKS.md`` (appended if absent, else replaced; other
sections are left alone).  Wall-clock figures on a shared machine are noisy:
compare within a run.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import fmt_table, machine_line, run_benchmark

from uvmloan import Machine
from uvmloan.process import Process

PS = 4096


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _buffer_frames(p: Process, va: int, npages: int) -> list[int]:
    """The frames backing a written private anonymous buffer, in address order."""
    frames = []
    for i in range(npages):
        e = p.map.uvm_map_lookup_entry(va + i * PS)
        assert e is not None and e.amap is not None
        anon = e.amap.lookup(e.slot(va + i * PS))
        assert anon is not None and anon.an_page is not None
        frames.append(anon.an_page.frame)
    return frames


def _store_per_page(
    m: Machine, p: Process, buf: int, npages: int, cpu: int, one: bytes
) -> tuple[float, float]:
    """``p`` (running on ``cpu``) stores ``one`` into each page of the buffer:
    the wall seconds of the stores and the simulated ns per page."""
    clock0 = m.cpus[cpu].clock
    t = time.perf_counter()
    for i in range(npages):
        p.write(buf + i * PS, one)
    wall = time.perf_counter() - t
    return wall, (m.cpus[cpu].clock - clock0) / npages


def _fault_figures(npages: int, walls: list[float], sims: list[float]) -> dict[str, float]:
    w = _median(walls)
    return {
        "pages": npages,
        "seconds": w,
        "faults_per_s": npages / w,
        "sim_ns_per_fault": _median(sims),
    }


def bench_zero_fill(npages: int, repeats: int, trace: str) -> dict[str, float]:
    walls: list[float] = []
    sims: list[float] = []
    for _ in range(repeats):
        with Machine(ncpus=1, memory=f"{npages * PS // (1 << 20) + 8}M", trace=trace) as m:
            p = m.spawn("p")
            buf = p.mmap(npages * PS)
            wall, sim = _store_per_page(m, p, buf, npages, 0, b"z")
            walls.append(wall)
            sims.append(sim)
    return _fault_figures(npages, walls, sims)


def bench_cow(npages: int, repeats: int, trace: str) -> dict[str, float]:
    walls: list[float] = []
    sims: list[float] = []
    for _ in range(repeats):
        with Machine(ncpus=2, memory=f"{2 * npages * PS // (1 << 20) + 8}M", trace=trace) as m:
            p = m.spawn("p", cpu=0)
            buf = p.mmap(npages * PS)
            p.write(buf, b"p" * (npages * PS))
            c = p.fork("c", cpu=1)
            wall, sim = _store_per_page(m, c, buf, npages, 1, b"c")
            walls.append(wall)
            sims.append(sim)
            assert m.uvm.allocated == 2 * npages
    return _fault_figures(npages, walls, sims)


def bench_bandwidth(nbytes: int, repeats: int) -> dict[str, float]:
    npages = nbytes // PS
    data = bytes(range(256)) * (nbytes // 256)
    first: list[float] = []
    again: list[float] = []
    raw: list[float] = []
    for _ in range(repeats):
        with Machine(ncpus=1, memory=f"{nbytes // (1 << 20) + 16}M", trace="off") as m:
            p = m.spawn("p")
            buf = p.mmap(nbytes)
            t = time.perf_counter()
            p.write(buf, data)
            first.append(time.perf_counter() - t)
            t = time.perf_counter()
            p.write(buf, data)
            again.append(time.perf_counter() - t)
            frames = _buffer_frames(p, buf, npages)
            t = time.perf_counter()
            m.physmem.copyin(frames, 0, data)
            raw.append(time.perf_counter() - t)
            assert p.read(buf + nbytes - 4, 4) == data[-4:]
    f, a, r = _median(first), _median(again), _median(raw)
    mib = nbytes / (1 << 20)
    return {
        "bytes": nbytes,
        "first_touch_s": f,
        "mapped_s": a,
        "raw_copyin_s": r,
        "first_touch_mib_s": mib / f,
        "mapped_mib_s": mib / a,
        "raw_copyin_mib_s": mib / r,
        "ratio_first_touch": f / r,
        "ratio_mapped": a / r,
    }


def bench(quick: bool, repeats: int) -> dict[str, Any]:
    nfault = 1024 if quick else 4096
    nbytes = (16 if quick else 64) << 20
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    started = time.strftime("%Y-%m-%d")
    runs: dict[str, Callable[[], dict[str, float]]] = {
        "zero_fill": lambda: bench_zero_fill(nfault, repeats, "off"),
        "zero_fill_counters": lambda: bench_zero_fill(nfault, repeats, "counters"),
        "cow": lambda: bench_cow(nfault, repeats, "off"),
        "cow_counters": lambda: bench_cow(nfault, repeats, "counters"),
        "bandwidth": lambda: bench_bandwidth(nbytes, repeats),
    }
    out: dict[str, Any] = {
        "machine": machine_line(),
        "date": started,
        "load_average": load,
        "quick": quick,
        "repeats": repeats,
        "command": "python benchmarks/vm.py" + (" --quick" if quick else ""),
    }
    for name, fn in runs.items():
        out[name] = fn()
    return out


def report(r: dict[str, Any]) -> str:
    zf, zfc, cow, cowc, bw = (
        r[k] for k in ("zero_fill", "zero_fill_counters", "cow", "cow_counters", "bandwidth")
    )
    lines = [
        f"Measured {r['date']} with `{r['command']}` (medians of {r['repeats']} runs; wall time "
        f"of the model itself, simulated time from the cost model).  Load average when it "
        f"started: {r['load_average']:.2f}.",
        "",
        f"**Faults**, one 1-byte user store per page of {zf['pages']} pages:",
        "",
        fmt_table(
            [
                "fault",
                "faults/s (trace off)",
                "faults/s (counters)",
                "µs/fault",
                "simulated ns/fault",
            ],
            [
                [
                    "zero fill (first touch)",
                    f"{zf['faults_per_s']:,.0f}",
                    f"{zfc['faults_per_s']:,.0f}",
                    f"{1e6 / zf['faults_per_s']:.1f}",
                    f"{zf['sim_ns_per_fault']:,.0f}",
                ],
                [
                    "copy-on-write promote (child after fork)",
                    f"{cow['faults_per_s']:,.0f}",
                    f"{cowc['faults_per_s']:,.0f}",
                    f"{1e6 / cow['faults_per_s']:.1f}",
                    f"{cow['sim_ns_per_fault']:,.0f}",
                ],
            ],
        ),
        "",
        f"**Store bandwidth through the MMU**, one `Process.write` of "
        f"{bw['bytes'] >> 20} MiB, against `PhysMem.copyin` of the same bytes into the same "
        f"frames:",
        "",
        fmt_table(
            ["path", "ms", "MiB/s", "time / raw copyin"],
            [
                [
                    "Process.write, first touch (every page a zero-fill fault)",
                    f"{bw['first_touch_s'] * 1e3:,.1f}",
                    f"{bw['first_touch_mib_s']:,.0f}",
                    f"{bw['ratio_first_touch']:.1f}",
                ],
                [
                    "Process.write, every page mapped",
                    f"{bw['mapped_s'] * 1e3:,.1f}",
                    f"{bw['mapped_mib_s']:,.0f}",
                    f"{bw['ratio_mapped']:.1f}",
                ],
                [
                    "PhysMem.copyin (raw arena copy)",
                    f"{bw['raw_copyin_s'] * 1e3:,.1f}",
                    f"{bw['raw_copyin_mib_s']:,.0f}",
                    "1.0",
                ],
            ],
        ),
        "",
        "Reading: "
        f"a fault costs the model about {1e6 / zf['faults_per_s']:.0f} µs of host time "
        f"(zero fill) and {1e6 / cow['faults_per_s']:.0f} µs (copy-on-write): the MMU's "
        "walk, the fault entry, the map lookup, the amap, the page allocation, "
        "pmap_enter with its pv bookkeeping and pmap_update are Python; the page "
        "zeroing or copy is C.  The cost model charges "
        f"{zf['sim_ns_per_fault']:,.0f} ns (zero fill) and "
        f"{cow['sim_ns_per_fault']:,.0f} ns (copy-on-write) of simulated time per fault, "
        "trap entry included.  A store into mapped memory pays one Python-level "
        "translation per page (a TLB lookup or a page walk) and a single C copy for "
        f"all the bytes: {bw['ratio_mapped']:.1f} times a raw copy; on first touch every "
        f"page also takes a fault: {bw['ratio_first_touch']:.0f} times.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(
        "vm",
        __doc__,
        bench,
        report,
        argv,
        quick_help="smaller buffers, fewer repeats",
        full_repeats=5,
    )


if __name__ == "__main__":
    sys.exit(main())
