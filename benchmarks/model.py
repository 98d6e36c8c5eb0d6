"""The model's hot paths against their goals, in one run (project issue 10).

    python benchmarks/model.py [--quick] [--repeats N] [--no-markdown]
    python benchmarks/model.py --save-baseline      # results/model_baseline.json
    python benchmarks/model.py --compare [--compare-with FILE] [--compare-to FILE]

Every row is a median of at least five samples (``--repeats``, default 7;
``--quick`` uses 5 and smaller sizes), reported with its min and max; rows
that are ratios time both sides interleaved in the same run.  The load
average is read when the run starts and when it ends.

The model's Python paths are also reported as a multiple of a fixed
pure-Python calibration loop (50 attribute, dict and list updates) timed in
the same run, so that the figures compare across machines: "3.1 cal" means
the path costs 3.1 times that loop.

``--compare`` prints the saved baseline (``results/model_baseline.json``,
the code before the speed-ups) against the latest results
(``results/model.json``) row by row, without measuring.

Writes ``benchmarks/results/model.json`` and the "model" section of
``BENCHMARKS.md`` (only that section).  Importing this module measures
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import ROOT, fmt_table, machine_line, results_path, write_markdown

from uvmloan import UVM_LOAN_TOPAGE, VM_PROT_WRITE, Machine, uvm_loan, uvm_unloan
from uvmloan.fault import uvm_fault
from uvmloan.physmem import BACKEND, PhysMem

PS = 4096
NAME = "model"
BASELINE = ROOT / "benchmarks" / "results" / "model_baseline.json"


# ------------------------------------------------------------------ samples

_TINY = {"on": False}  # --tiny: sizes for a test that only checks the script runs


def _size(quick_n: int, full_n: int, quick: bool) -> int:
    """The size of one measurement: ``full_n``, ``quick_n`` with --quick,
    and a sixty-fourth of that (at least 1) with --tiny."""
    if _TINY["on"]:
        return max(1, quick_n // 64)
    return quick_n if quick else full_n


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of ``samples`` (and the samples themselves)."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
        "samples": list(samples),
    }


def per_call(fn: Callable[[], object], number: int) -> float:
    """Seconds per call of ``fn`` over ``number`` calls in a row."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def per_call_direct(fn: Callable[[Any, Any], object], a: Any, b: Any, number: int) -> float:
    """Seconds per call of ``fn(a, b)``, called straight from the loop: for
    rows that time one call of a fast method (copy_page is about 60 ns), a
    wrapping lambda's frame (about 35 ns here) would be most of the figure."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn(a, b)
    return (time.perf_counter() - t0) / number


class _Cal:
    __slots__ = ("a", "b")

    def __init__(self) -> None:
        self.a = 0
        self.b = 0


def calibration_loop() -> None:
    """The fixed pure-Python yardstick: 50 rounds of an attribute, a dict and
    a list update (about 10 µs on a 2020s x86 core under CPython 3.11)."""
    o = _Cal()
    d: dict[int, int] = {}
    lst = [0] * 8
    for i in range(50):
        o.a += i
        d[i & 7] = i
        lst[i & 7] += 1


def interleave(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, dict[str, Any]]:
    """Each ``fn`` returns one sample (seconds per operation); the functions
    are run in turn ``repeats`` times, after one warm-up round."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            samples[k].append(fn())
    return {k: summary(v) for k, v in samples.items()}


# ------------------------------------------------------------------ VM paths


def _fresh(npages: int, trace: str = "off") -> tuple[Machine, Any, int]:
    m = Machine(ncpus=1, memory=f"{npages * PS // (1 << 20) + 8}M", trace=trace)
    p = m.spawn("p")
    return m, p, p.mmap(npages * PS)


def sample_zero_fill_write(npages: int) -> float:
    """Seconds per zero-fill fault taken by ``Process.write`` of one byte."""
    m, p, buf = _fresh(npages)
    with m:
        t = time.perf_counter()
        for i in range(npages):
            p.write(buf + i * PS, b"z")
        return (time.perf_counter() - t) / npages


def sample_uvm_fault(npages: int) -> float:
    """Seconds per ``uvm_fault`` (write) of a fresh anonymous page, alone."""
    m, p, buf = _fresh(npages)
    with m:
        vm = p.map
        t = time.perf_counter()
        for i in range(npages):
            uvm_fault(vm, buf + i * PS, VM_PROT_WRITE)
        return (time.perf_counter() - t) / npages


def sample_loan_loop(npages: int, trace: str = "off") -> float:
    """Seconds per iteration of: a write that faults a fresh page in,
    ``uvm_loan`` of it, a write that breaks the loan, ``uvm_unloan``."""
    m, p, buf = _fresh(npages, trace)
    with m:
        vm = p.map
        t = time.perf_counter()
        for i in range(npages):
            va = buf + i * PS
            p.write(va, b"a")
            pages = uvm_loan(vm, va, PS, UVM_LOAN_TOPAGE)
            p.write(va, b"b")
            uvm_unloan(pages, UVM_LOAN_TOPAGE)
        return (time.perf_counter() - t) / npages


def tlb_hit_sampler(calls: int) -> tuple[Machine, Callable[[], float]]:
    m, p, buf = _fresh(4)
    p.write(buf, b"w")

    def sample() -> float:
        return per_call_direct(p.write, buf, b"x", calls)

    return m, sample


def bench_vm(quick: bool, repeats: int) -> dict[str, Any]:
    nf = _size(256, 2048, quick)
    nl = _size(128, 1024, quick)
    m, tlb = tlb_hit_sampler(_size(2000, 20000, quick))
    cal_n = _size(2000, 20000, quick)
    try:
        out = interleave(
            {
                "calibration": lambda: per_call(calibration_loop, cal_n),
                "zero_fill_write": lambda: sample_zero_fill_write(nf),
                "uvm_fault": lambda: sample_uvm_fault(nf),
                "loan_loop": lambda: sample_loan_loop(nl),
                "loan_loop_counters": lambda: sample_loan_loop(nl, "counters"),
                "tlb_hit_write": tlb,
            },
            repeats,
        )
    finally:
        m.close()
    ratios = [
        c / o
        for c, o in zip(
            out["loan_loop_counters"]["samples"], out["loan_loop"]["samples"], strict=True
        )
    ]
    out["counters_overhead"] = summary([r - 1.0 for r in ratios])
    _scale_by_calibration(out, out["calibration"]["samples"])
    out["sizes"] = {"fault_pages": nf, "loan_pages": nl}
    return out


def _scale_by_calibration(rows: dict[str, Any], cals: Sequence[float]) -> None:
    """Give every timed entry of ``rows`` the median of its samples scaled to
    the reference calibration, each by the calibration sample of its round."""
    for k, v in rows.items():
        if k != "calibration" and isinstance(v, dict) and len(v.get("samples", ())) == len(cals):
            v["scaled_median"] = statistics.median(
                x * REFERENCE_CAL / c for x, c in zip(v["samples"], cals, strict=True)
            )


# ------------------------------------------------------------- state machines


def machine_steps(cls: type, examples: int, steps: int) -> tuple[int, float]:
    """Run the state machine ``cls`` for ``examples`` derandomized examples of
    up to ``steps`` steps; return (steps run, wall seconds)."""
    from hypothesis import HealthCheck, Phase, settings

    from uvmloan.testing import run_machine

    counts = {"inits": 0, "checks": 0}

    class Counted(cls):  # type: ignore[misc]
        def __init__(self) -> None:
            counts["inits"] += 1
            super().__init__()

        def check_invariants(self, *a: Any, **kw: Any) -> None:
            counts["checks"] += 1
            super().check_invariants(*a, **kw)

    Counted.__name__ = cls.__name__
    s = settings(
        max_examples=examples,
        stateful_step_count=steps,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    t = time.perf_counter()
    run_machine(Counted, settings=s)
    wall = time.perf_counter() - t
    # hypothesis checks the invariants once after __init__ and once per step
    return counts["checks"] - counts["inits"], wall


def bench_state_machines(quick: bool, repeats: int) -> dict[str, Any]:
    from uvmloan.testing.loan_machine import LoanStateMachine, loan_settings
    from uvmloan.testing.pmap_machine import PmapStateMachine, hypothesis_settings
    from uvmloan.testing.vm_machine import VMStateMachine, vm_settings

    examples = _size(3, 10, quick)
    # each machine at the step count of its CI profile
    machines: dict[str, tuple[type, int]] = {
        "LoanStateMachine": (LoanStateMachine, loan_settings("ci").stateful_step_count),
        "VMStateMachine": (VMStateMachine, vm_settings("default").stateful_step_count),
        "PmapStateMachine": (PmapStateMachine, hypothesis_settings("ci").stateful_step_count),
    }
    out: dict[str, Any] = {}
    for name, (cls, steps) in machines.items():
        rates: list[float] = []
        cals: list[float] = []
        total = 0
        # one run unrecorded, as the VM rows have: the first run of a machine
        # class pays hypothesis's one-time set-up (its rules sorted, its
        # strategies built and cached), which no later run pays
        machine_steps(cls, examples, steps)
        for _ in range(repeats):
            # a calibration sample next to each run: the load changes
            cals.append(per_call(calibration_loop, _size(2000, 5000, quick)))
            n, wall = machine_steps(cls, examples, steps)
            rates.append(n / wall)
            total += n
        out[name] = summary(rates) | {
            "calibration": cals,
            "scaled_median": statistics.median(
                rt * c / REFERENCE_CAL for rt, c in zip(rates, cals, strict=True)
            ),
            "steps": total,
            "examples_per_run": examples,
            "max_steps": steps,
        }
    return out


# ------------------------------------------------------------- big machine


def bench_big_machine(quick: bool, repeats: int) -> dict[str, Any]:
    """Touching memory on a 1M-frame machine: pages/s; Python memory per
    untouched frame and per resident page (tracemalloc, separate runs)."""
    frames = _size(1 << 16, 1 << 20, quick)
    touch = frames // 4  # 1 GiB of a 4 GiB (1M-frame) machine
    memory = frames * PS

    def rate() -> float:
        with Machine(ncpus=1, memory=memory, trace="off") as m:
            p = m.spawn("p")
            buf = p.mmap(touch * PS)
            t = time.perf_counter()
            for i in range(touch):
                p.write(buf + i * PS, b"t")
            return touch / (time.perf_counter() - t)

    rates: list[float] = []
    cals: list[float] = []
    for _ in range(repeats):
        cals.append(per_call(calibration_loop, _size(2000, 5000, quick)))
        rates.append(rate())
    mem_touch = min(touch, 1 << 14)

    def held(m: Machine) -> int:
        # Python memory (tracemalloc) plus what the C PTE tables hold
        # (uvmloan._ptetable's page-table pages, invisible to tracemalloc)
        return tracemalloc.get_traced_memory()[0] + sum(pm.ptes.nbytes for pm in m.pmap.pmaps)

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        m = Machine(ncpus=1, memory=memory, trace="off")
        built = held(m)
        p = m.spawn("p")
        buf = p.mmap(mem_touch * PS)
        before = held(m)
        for i in range(mem_touch):
            p.write(buf + i * PS, b"t")
        after = held(m)
        c_bytes = sum(pm.ptes.nbytes for pm in m.pmap.pmaps)
        m.close()
    finally:
        tracemalloc.stop()
    return {
        "frames": frames,
        "touched_pages": touch,
        "pages_per_s": summary(rates)
        | {
            "calibration": cals,
            "scaled_median": statistics.median(
                rt * c / REFERENCE_CAL for rt, c in zip(rates, cals, strict=True)
            ),
        },
        "bytes_per_untouched_frame": (built - base) / frames,
        "bytes_per_resident_page": (after - before) / mem_touch,
        "memory_touched_pages": mem_touch,
        "c_ptetable_bytes": c_bytes,
    }


# ------------------------------------------------------------- physmem rows


def bench_physmem(quick: bool, repeats: int) -> dict[str, Any]:
    """copy_page per call, copy_pages of 1 MiB from lists, in_cksum of a
    16-piece 64 KiB list, and the transmit gather+checksum of a 64 KiB
    chain, each against plain C loops compiled in this run."""
    if BACKEND != "c":
        return {"skipped": f"backend is {BACKEND!r}: the C baselines need the C backend"}
    from physmem import compile_baseline

    with tempfile.TemporaryDirectory(prefix="uvmloan-bench-") as tmp:
        mod = compile_baseline(Path(tmp))
        return _physmem_rows(mod.ffi, mod.lib, quick, repeats)


def _loaned_segment(pool: Any, pages: list[Any], n: int) -> Any:
    """A TCP/IPv4 packet as ip_output hands it to a NIC without offload: a
    40-byte header mbuf, then ``n`` bytes of lent pages, the transport sum
    owed by the CPU (M_CSUM_TCPv4 | M_CSUM_CPU_DEFERRED)."""
    import struct

    from netstack.ip import M_CSUM_CPU_DEFERRED, M_CSUM_TCPv4
    from netstack.mbuf import M_EXT_PAGES, M_EXT_ROMAP, MEXTADD, MT_DATA

    body = pool.m_get(MT_DATA)
    ext = MEXTADD(body, 0, n, None, None)
    ext.ext_pgs = pages
    body.m_flags |= M_EXT_PAGES | M_EXT_ROMAP
    body.m_len = n
    hdr = pool.m_gethdr(MT_DATA)
    hdr.m_len = 40
    v = memoryview(hdr.m_dat)
    # (a 64 KiB frame overflows ip_len; dma_read sums by the chain length)
    struct.pack_into("!BBHHHBBHII", v, 0, 0x45, 0, (40 + n) & 0xFFFF, 1, 0, 64, 6, 0,
                     0xC0000201, 0xC0000202)
    struct.pack_into("!HHIIBBHHH", v, 20, 1000, 5001, 1, 1, 0x50, 0x10, 65535, 0, 0)
    hdr.m_next = body
    hdr.m_pkthdr_len = 40 + n
    hdr.csum_flags = M_CSUM_TCPv4 | M_CSUM_CPU_DEFERRED
    hdr.csum_data = 16
    return hdr


def _physmem_rows(bffi: Any, blib: Any, quick: bool, repeats: int) -> dict[str, Any]:
    from physmem import raw_address

    from netstack.mbuf import MbufPool, m_freem
    from netstack.netif import dma_read

    n1 = 256  # 1 MiB of pages
    calls = _size(20000, 100000, quick)
    ck_calls = _size(2000, 10000, quick)
    out: dict[str, Any] = {}
    with PhysMem(4 * n1 + 64, PS) as pm:
        base = bffi.cast("char *", raw_address(pm))
        srcs = list(range(n1))
        dsts = list(range(n1, 2 * n1))
        pm.fill_pages(srcs, 0x5A)
        pm.zero_pages(dsts)
        csrc = bffi.new("int64_t[]", srcs)
        cdst = bffi.new("int64_t[]", dsts)
        # a scattered piece list: every other frame, as a chain's pages are
        pieces = [(2 * n1 + 2 * k, 0, PS) for k in range(16)]
        for f, _, _ in pieces:
            pm.fill_pages([f], f & 0xFF)
        flat = bffi.new("int64_t[]", [x for p in pieces for x in p])
        frame = bytearray(16 * PS)
        cframe = bffi.from_buffer(frame)

        out.update(
            interleave(
                {
                    "calibration": lambda: per_call(calibration_loop, ck_calls),
                    "copy_page": lambda: per_call_direct(pm.copy_page, 1, n1 + 1, calls),
                    "copy_page_c": lambda: per_call(
                        lambda: blib.bench_copy_pages(base, csrc, cdst, 1, PS), calls
                    ),
                    "copy_pages_1m_lists": lambda: per_call_direct(pm.copy_pages, srcs, dsts, 200),
                    "copy_pages_1m_c": lambda: per_call(
                        lambda: blib.bench_copy_pages(base, csrc, cdst, n1, PS), 200
                    ),
                    "in_cksum_64k": lambda: per_call(lambda: pm.in_cksum(pieces), ck_calls),
                    "cksum_64k_c": lambda: per_call(
                        lambda: blib.bench_sum32_pieces(base, flat, 16, PS), ck_calls
                    ),
                    "gather_cksum_c": lambda: per_call(
                        lambda: blib.bench_gather_sum(base, flat, 16, PS, cframe), ck_calls
                    ),
                },
                repeats,
            )
        )

        # (Inside the arena block: the C baseline reads ``base``, pm's arena.)
        # The transmit path of a NIC without checksum offload, as netif
        # runs it (netif.dma_read): a TCP/IP header mbuf in kernel memory and
        # a 64 KiB payload of 16 lent pages (M_EXT_PAGES, as sosend_loan
        # builds it), read into the frame with the CPU's deferred transport
        # sum taken in the same C pass.  The C baseline gathers and sums the
        # same 64 KiB from 16 arena pages.
        with Machine(ncpus=1, memory="8M", trace="off") as m:
            pool = MbufPool(machine=m)
            mpm = m.physmem
            pages = [m.uvm.uvm_pagealloc(None, 0, None) for _ in range(16)]
            frames_ = [pg.frame for pg in pages if pg is not None]
            mpm.copyin(frames_, 0, bytes((i * 31) & 0xFF for i in range(16 * PS)))
            chain = _loaned_segment(pool, pages, 16 * PS)

            chain_calls = max(200, ck_calls // 10)
            g = interleave(
                {
                    "gather_cksum_chain": lambda: per_call(
                        lambda: dma_read(mpm, PS, chain), chain_calls
                    ),
                    "gather_cksum_chain_c": lambda: per_call(
                        lambda: blib.bench_gather_sum(base, flat, 16, PS, cframe), chain_calls
                    ),
                },
                repeats,
            )
            m_freem(chain)
            for pg in pages:
                if pg is not None:
                    m.uvm.uvm_pagefree(pg)
    out.update(g)
    _scale_by_calibration(out, out["calibration"]["samples"])

    def ratio(base_k: str, ours_k: str) -> dict[str, Any]:
        return summary(
            [b / o for b, o in zip(out[base_k]["samples"], out[ours_k]["samples"], strict=True)]
        )

    out["ratio_copy_pages_1m"] = ratio("copy_pages_1m_c", "copy_pages_1m_lists")
    out["ratio_in_cksum_64k"] = ratio("cksum_64k_c", "in_cksum_64k")
    out["ratio_gather_cksum_chain"] = ratio("gather_cksum_chain_c", "gather_cksum_chain")
    return out


# ------------------------------------------------------------------ rows


def _us(s: float) -> str:
    return f"{s * 1e6:.1f} µs"


REFERENCE_CAL = 9.7e-6
"""The calibration loop's time on the machine the goals were set on: a
figure is scaled by (this / the run's calibration) before it is held
against its goal, so a slower or busier machine is not failed for it."""


def rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's table, one dict per row: what, now (median), min .. max,
    cal (time in calibration loops), scaled (the median at the reference
    calibration), goal, met? (judged on the scaled figure where there is
    one: the Python paths and rates; ratios to C and memory as they are)."""
    vm, sm, big, ph = r["vm"], r["state_machines"], r["big"], r["physmem"]
    cal = vm["calibration"]["median"]
    speed = REFERENCE_CAL / cal  # > 1: this run's machine was faster
    out: list[dict[str, Any]] = []

    def add(
        what: str,
        s: dict[str, Any],
        fmt: Callable[[float], str],
        goal: float,
        goal_s: str,
        kind: str,
    ) -> None:
        v = s["median"]
        if kind == "time":  # lower is better, scaled to the reference machine
            scaled = s.get("scaled_median", v * speed)
            met, c = scaled <= goal, f"{scaled / REFERENCE_CAL:.2f}"
        elif kind == "rate":  # higher is better, scaled (by its own calibrations if any)
            scaled = s.get("scaled_median", v / speed)
            met, c = scaled >= goal, ""
        elif kind == "ratio":  # higher is better, machine-independent
            scaled, met, c = v, v >= goal, ""
        else:  # "max": lower is better, machine-independent
            scaled, met, c = v, v <= goal, ""
        out.append(
            {
                "what": what,
                "now": fmt(v),
                "range": f"{fmt(s['min'])} .. {fmt(s['max'])}" if "min" in s else "",
                "cal": c,
                "scaled": fmt(scaled) if kind in ("time", "rate") else "",
                "goal": goal_s,
                "met": met,
                "value": v,
                "scaled_value": scaled,
            }
        )

    def ns(x: float) -> str:
        return f"{x * 1e9:.0f} ns"

    def x_(x: float) -> str:
        return f"{x:.2f}x"

    add(
        "zero-fill fault through `Process.write`",
        vm["zero_fill_write"],
        _us,
        14e-6,
        "<= 14 µs",
        "time",
    )
    add("`uvm_fault` alone, fresh page", vm["uvm_fault"], _us, 7e-6, "<= 7 µs", "time")
    add(
        "loan loop: write fault, `uvm_loan`, breaking write, `uvm_unloan` (per iter)",
        vm["loan_loop"],
        _us,
        40e-6,
        "<= 40 µs",
        "time",
    )
    add(
        "`Process.write` to a mapped page (TLB hit)",
        vm["tlb_hit_write"],
        _us,
        2e-6,
        "<= 2 µs",
        "time",
    )
    add(
        'trace="counters" overhead on the loan loop',
        vm["counters_overhead"],
        lambda x: f"{x * 100:+.0f}%",
        0.15,
        "<= +15%",
        "max",
    )
    goals = {"LoanStateMachine": 1500, "VMStateMachine": 1200, "PmapStateMachine": 2000}
    for name, goal in goals.items():
        add(f"`{name}` steps/s", sm[name], lambda x: f"{x:,.0f}", goal, f">= {goal:,}", "rate")
    frames = big["frames"]
    add(
        f"touching {big['touched_pages'] * PS >> 20} MiB on a {frames >> 10}K-frame machine",
        big["pages_per_s"],
        lambda x: f"{x / 1000:.1f}k pages/s",
        60e3,
        ">= 60k pages/s",
        "rate",
    )
    add(
        "Python memory per resident page",
        {"median": big["bytes_per_resident_page"]},
        lambda x: f"{x:.0f} B",
        256,
        "<= 256 B",
        "max",
    )
    add(
        "Python memory per untouched frame",
        {"median": big["bytes_per_untouched_frame"]},
        lambda x: f"{x:.0f} B",
        4,
        "<= 4 B",
        "max",
    )
    if "skipped" not in ph:
        add(
            "`in_cksum` over a 16-piece 64 KiB page list (x plain C loop)",
            ph["ratio_in_cksum_64k"],
            x_,
            1.0,
            ">= 1.0x",
            "ratio",
        )
        add(
            "gather+checksum of one 64 KiB chain, netif's path (x plain C loop)",
            ph["ratio_gather_cksum_chain"],
            x_,
            0.8,
            ">= 0.8x",
            "ratio",
        )
        add("`copy_page` single call", ph["copy_page"], ns, 250e-9, "<= 250 ns", "time")
        add(
            "`copy_pages` of 1 MiB given Python lists (x C memcpy loop)",
            ph["ratio_copy_pages_1m"],
            x_,
            0.9,
            ">= 0.9x",
            "ratio",
        )
    return out


def report(r: dict[str, Any]) -> str:
    cal = r["vm"]["calibration"]
    la0, la1 = r["loadavg_before"], r["loadavg_after"]
    head = (
        f"Measured {r['date']} with `{r['command']}` (backend {r['backend']}; medians of "
        f"{r['repeats']} samples, min .. max beside; ratio rows timed interleaved in the same "
        f"run).  Load average at the start {la0[0]:.2f} / {la0[1]:.2f} / {la0[2]:.2f}, at the "
        f"end {la1[0]:.2f} / {la1[1]:.2f} / {la1[2]:.2f}.  Calibration loop (50 attribute, "
        f"dict and list updates in pure Python): {cal['median'] * 1e6:.2f} µs "
        f'({cal["min"] * 1e6:.2f} .. {cal["max"] * 1e6:.2f}); the "cal" column is a path\'s '
        'time in units of that loop, comparable across machines; "at 9.7 µs cal" scales '
        "a time or rate to a machine where the loop takes 9.7 µs (the one the goals were "
        "set on), each sample by the calibration sample timed in its own round, and "
        '"met?" judges that scaled figure (ratios to C and memory as they are).'
    )
    table = fmt_table(
        ("what", "now", "min .. max", "cal", "at 9.7 µs cal", "goal", "met?"),
        [
            (
                x["what"],
                x["now"],
                x["range"],
                x["cal"],
                x["scaled"],
                x["goal"],
                "yes" if x["met"] else "no",
            )
            for x in rows(r)
        ],
    )
    tail = (
        "State machines: derandomized runs of "
        f"{r['state_machines']['LoanStateMachine']['examples_per_run']} examples each, up to "
        "the step count of the machine's CI profile (generation phase only, no database), "
        "after one unrecorded run of each machine (hypothesis's one-time set-up), "
        "each run next to a calibration sample of its own (its scaled figure uses it); "
        "steps/s counts the rules run, example set-up and invariants included.  "
        "Memory: tracemalloc, a separate run touching "
        f"{r['big']['memory_touched_pages']} pages, plus the C memory of the pmaps' PTE "
        "tables (uvmloan._ptetable's page-table pages, which tracemalloc does not see: "
        f"{r['big'].get('c_ptetable_bytes', 0):,} bytes at the end of that run); the "
        "words of the pages and anons (uvmloan._vmscalars) are in objects tracemalloc "
        "sees.  "
        "`python benchmarks/model.py --compare` prints these against the baseline saved "
        "before the speed-ups."
    )
    return "\n\n".join([head, table, tail])


# ------------------------------------------------------------------ driver


def bench(quick: bool, repeats: int, parts: Sequence[str]) -> dict[str, Any]:
    r: dict[str, Any] = {
        "machine": machine_line(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "backend": BACKEND,
        "quick": quick,
        "repeats": repeats,
        "command": "python benchmarks/model.py" + (" --quick" if quick else ""),
        "loadavg_before": list(os.getloadavg()),
    }
    r["vm"] = bench_vm(quick, repeats)
    if "physmem" in parts:
        r["physmem"] = bench_physmem(quick, repeats)
    else:
        r["physmem"] = {"skipped": "not asked for"}
    r["state_machines"] = bench_state_machines(quick, repeats)
    r["big"] = bench_big_machine(quick, repeats)
    r["loadavg_after"] = list(os.getloadavg())
    return r


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The two runs' rows side by side."""
    b = {x["what"]: x for x in rows(before)}
    lines = []
    for x in rows(after):
        old = b.get(x["what"])

        def cell(y: dict[str, Any]) -> str:
            return f"{y['now']} ({y['scaled']})" if y["scaled"] else str(y["now"])

        lines.append(
            (
                x["what"],
                cell(old) if old else "-",
                cell(x),
                f"{x['scaled_value'] / old['scaled_value']:.2f}"
                if old and old["scaled_value"]
                else "-",
                x["goal"],
                "yes" if x["met"] else "no",
            )
        )
    head = (
        f"before: {before['date']} ({before['command']}, load {before['loadavg_before'][0]:.2f}"
        f", calibration {before['vm']['calibration']['median'] * 1e6:.2f} µs)\n"
        f"after:  {after['date']} ({after['command']}, load {after['loadavg_before'][0]:.2f}"
        f", calibration {after['vm']['calibration']['median'] * 1e6:.2f} µs)\n"
    )
    note = (
        "In brackets: the figure scaled to a 9.7 µs calibration loop; after/before compares "
        "the scaled figures (ratios to C and memory as they are).\n"
    )
    return (
        head
        + note
        + "\n"
        + fmt_table(("what", "before", "after", "after/before", "goal", "met?"), lines)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, 5 samples")
    ap.add_argument("--repeats", type=int, default=None, help="samples per row (>= 5)")
    ap.add_argument("--no-markdown", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument(
        "--save-baseline",
        action="store_true",
        help=f"write {BASELINE.relative_to(ROOT)} instead of the results",
    )
    ap.add_argument("--compare", action="store_true", help="print baseline vs results; no run")
    ap.add_argument("--compare-with", type=Path, default=BASELINE, help="the 'before' file")
    ap.add_argument("--compare-to", type=Path, default=results_path(NAME), help="the 'after' file")
    ap.add_argument("--out", type=Path, default=None, help="write the results here instead")
    ap.add_argument("--no-physmem", action="store_true", help="skip the C-baseline rows")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    _TINY["on"] = args.tiny
    if args.compare:
        before = json.loads(args.compare_with.read_text(encoding="utf-8"))
        after = json.loads(args.compare_to.read_text(encoding="utf-8"))
        print(compare(before, after))
        return 0
    repeats = args.repeats or (5 if args.quick else 7)
    parts = () if args.no_physmem else ("physmem",)
    r = bench(args.quick, repeats, parts)
    text = report(r)
    print(r["machine"])
    print()
    print(text)
    dest = args.out or (BASELINE if args.save_baseline else results_path(NAME))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(r, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {dest}")
    if not args.no_markdown and not args.save_baseline and args.out is None:
        write_markdown(NAME, f"{r['machine']}\n\n{text}", r["machine"])
        print("wrote the model section of BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
