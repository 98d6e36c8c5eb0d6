"""Benchmarks of page loaning in the model (uvmloan.loan), side by side in one run.

    python benchmarks/loan.py [--quick] [--repeats N] [--no-markdown] [--report-only]

Measures, as medians over repeats:

* ``uvm_loan`` + ``uvm_unloan`` of a 256-page written buffer (TOPAGE), in
  pages per second of wall time (tracing off, and with counters on);
* loan breaks per second: a lent buffer is written one byte per page, each
  write a fault that runs ``uvm_loanbreak_anon`` (the timed part is the
  write loop);
* loan versus copy of the same bytes, by buffer size 4 KiB .. 1 MiB:
  - loan = ``Machine.kernel_loan`` + ``KernelLoan.release`` (sosend_loan's
    uvm_loan, kenter_pa, pmap_update; sodoloanfree's kremove, pmap_update,
    uvm_unloan), without a break; the sender rewrites its buffer (from
    every CPU) before each round, untimed, so every loan write-protects
    dirty, cached mappings as a real send after a fill would;
  - copy = the C copy path: ``PhysMem.copyout_into`` of the buffer's frames
    into a preallocated scratch buffer and ``PhysMem.copyin`` into kernel
    frames (what uiomove into an mbuf cluster does, in two memcpys);
  in wall time of the model itself (where, if anywhere, loaning gets
  cheaper than copying), and in simulated nanoseconds (``m.cpus[i].clock``
  deltas: the initiating CPU's, which includes waiting for shootdown
  acknowledgements, and the sum over all CPUs; the copy's simulated cost is
  a user-space read of the buffer through the MMU, i.e. the copyin's
  memcpy and page walks), for 1 and 4 CPUs.

Writes ``benchmarks/results/loan.json`` and the "loan" section of
``BENCHMARKS.md`` (only that section is replaced; it is appended if absent).
Wall-clock figures on a shared machine are noisy: compare within a run.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

from _common import fmt_table, machine_line, median_time, run_benchmark

from uvmloan import UVM_LOAN_TOPAGE, Machine, Page, uvm_loan, uvm_unloan
from uvmloan.testing.loan_ops import page_at

PS = 4096
SIZES = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20]


def _machine(ncpus: int, trace: str = "off") -> Machine:
    return Machine(ncpus=ncpus, memory="32M", trace=trace)


def _fill_from_all_cpus(m: Machine, p: Any, buf: int, size: int, seed: int) -> None:
    """The sender (a threaded program) writes its buffer from every CPU, CPU 0
    last: each CPU's TLB caches writable, dirty entries of the buffer (as
    many as it holds)."""
    for c in [*range(1, m.ncpus), 0]:
        p.write(buf, bytes([(seed + c) % 251]) * size, cpu=c)


# ------------------------------------------------------------- measurements


def bench_loan_unloan(repeats: int, npages: int, trace: str) -> dict[str, float]:
    m = _machine(2, trace)
    try:
        p = m.spawn("sender", cpu=0)
        buf = p.mmap(npages * PS)
        p.write(buf, b"x" * (npages * PS))
        rounds = 5

        def run() -> None:
            for _ in range(rounds):
                pages = uvm_loan(p.map, buf, npages * PS, UVM_LOAN_TOPAGE)
                uvm_unloan(pages, UVM_LOAN_TOPAGE)

        t = median_time(run, repeats)
        return {"pages": npages, "seconds": t, "pages_per_s": npages * rounds / t}
    finally:
        m.close()


def bench_loan_break(repeats: int, npages: int) -> dict[str, float]:
    m = _machine(2)
    try:
        p = m.spawn("sender", cpu=0)
        buf = p.mmap(npages * PS)
        state: dict[str, Any] = {}

        def setup() -> None:
            if "pages" in state:
                uvm_unloan(state["pages"], UVM_LOAN_TOPAGE)
            p.write(buf, b"y" * (npages * PS))
            state["pages"] = uvm_loan(p.map, buf, npages * PS, UVM_LOAN_TOPAGE)

        def run() -> None:
            for off in range(0, npages * PS, PS):
                p.write(buf + off, b"!")

        t = median_time(run, repeats, setup)
        uvm_unloan(state["pages"], UVM_LOAN_TOPAGE)
        assert m.uvm.allocated == npages
        return {"pages": npages, "seconds": t, "breaks_per_s": npages / t}
    finally:
        m.close()


def bench_loan_vs_copy(repeats: int, size: int, ncpus: int) -> dict[str, Any]:
    """One buffer size on one machine: wall and simulated cost of each path."""
    m = _machine(ncpus)
    try:
        p = m.spawn("sender", cpu=0)
        buf = p.mmap(size)
        npg = (size + PS - 1) // PS
        _fill_from_all_cpus(m, p, buf, size, 0)
        frames = []
        for off in range(0, size, PS):
            pg = page_at(p, buf + off)
            assert pg is not None
            frames.append(pg.frame)
        kpages: list[Page] = []
        for _ in range(npg):
            kp = m.uvm.uvm_pagealloc(None, 0, None, 0)
            assert kp is not None
            kpages.append(kp)
        kframes = [kp.frame for kp in kpages]
        physmem = m.physmem
        seed = [0]

        def refill() -> None:
            seed[0] += 1
            _fill_from_all_cpus(m, p, buf, size, seed[0])

        def loan() -> None:
            m.kernel_loan(p, buf, size, cpu=0).release()

        scratch = bytearray(size)  # preallocated: no host page faults per call

        def copy() -> None:
            physmem.copyout_into(frames, 0, scratch)
            physmem.copyin(kframes, 0, scratch)

        wall_loan = median_time(loan, repeats, refill)
        wall_copy = median_time(copy, repeats)
        assert physmem.copyout(kframes, 0, size) == physmem.copyout(frames, 0, size)

        # Simulated cost: clock deltas of one round each.
        sim_loan_init: list[int] = []
        sim_loan_all: list[int] = []
        sim_copy: list[int] = []
        for _ in range(repeats):
            refill()
            before = [c.clock for c in m.cpus]
            loan()
            after = [c.clock for c in m.cpus]
            sim_loan_init.append(after[0] - before[0])
            sim_loan_all.append(sum(after) - sum(before))
            before0 = m.cpus[0].clock
            p.read(buf, size, cpu=0)  # the copyin's memcpy through the MMU
            sim_copy.append(m.cpus[0].clock - before0)
        for kp in kpages:
            m.uvm.uvm_pagefree(kp)
        return {
            "size": size,
            "ncpus": ncpus,
            "wall_loan_us": wall_loan * 1e6,
            "wall_copy_us": wall_copy * 1e6,
            "sim_loan_ns": statistics.median(sim_loan_init),
            "sim_loan_all_cpus_ns": statistics.median(sim_loan_all),
            "sim_copy_ns": statistics.median(sim_copy),
        }
    finally:
        m.close()


def crossover(rows: list[dict[str, Any]], loan_key: str, copy_key: str) -> int | None:
    """The smallest size from which loaning is cheaper than copying (None: never)."""
    for i, r in enumerate(rows):
        if all(x[loan_key] < x[copy_key] for x in rows[i:]):
            return int(r["size"])
    return None


def bench(quick: bool, repeats: int) -> dict[str, Any]:
    sizes = SIZES[:4] if quick else SIZES
    npages = 64 if quick else 256
    results: dict[str, Any] = {
        "machine": machine_line(),
        "quick": quick,
        "repeats": repeats,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "loan_unloan": {
            "trace off": bench_loan_unloan(repeats, npages, "off"),
            "counters": bench_loan_unloan(repeats, npages, "counters"),
        },
        "loan_break": bench_loan_break(repeats, npages),
        "loan_vs_copy": [],
        "crossover": {},
    }
    for ncpus in (1, 4):
        rows = [bench_loan_vs_copy(repeats, s, ncpus) for s in sizes]
        results["loan_vs_copy"].extend(rows)
        results["crossover"][f"{ncpus} cpus"] = {
            "wall": crossover(rows, "wall_loan_us", "wall_copy_us"),
            "simulated": crossover(rows, "sim_loan_ns", "sim_copy_ns"),
        }
    return results


# ------------------------------------------------------------------ report


def _size(n: int | None) -> str:
    if n is None:
        return "none in range"
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def report(r: dict[str, Any]) -> str:
    lu = r["loan_unloan"]
    lb = r["loan_break"]
    out = [
        f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/loan.py"
        f"{' --quick' if r['quick'] else ''}` (medians of {r['repeats']} runs; wall time of "
        "the model itself, simulated time from the cost model).  Load average when it "
        f"started: {r['load_average']:.2f}.",
        "",
        f"**uvm_loan + uvm_unloan** (TOPAGE, {lu['trace off']['pages']} written pages, "
        f"5 rounds): {lu['trace off']['pages_per_s']:,.0f} pages/s with tracing off, "
        f"{lu['counters']['pages_per_s']:,.0f} pages/s with counters.",
        "",
        f"**Loan breaks** (a user write into each of {lb['pages']} lent pages, each a "
        f"fault running uvm_loanbreak_anon): {lb['breaks_per_s']:,.0f} breaks/s.",
        "",
        "**Loan (kernel_loan + release, no break) vs copy (PhysMem.copyout_into + copyin)**, "
        "the sender having written its buffer from every CPU:",
        "",
    ]
    rows = [
        [
            str(x["ncpus"]),
            _size(x["size"]),
            f"{x['wall_loan_us']:.1f}",
            f"{x['wall_copy_us']:.1f}",
            f"{x['wall_loan_us'] / x['wall_copy_us']:.1f}",
            f"{x['sim_loan_ns']:,}",
            f"{x['sim_loan_all_cpus_ns']:,}",
            f"{x['sim_copy_ns']:,}",
            f"{x['sim_loan_ns'] / x['sim_copy_ns']:.2f}",
        ]
        for x in r["loan_vs_copy"]
    ]
    out.append(
        fmt_table(
            [
                "CPUs",
                "size",
                "wall loan µs",
                "wall copy µs",
                "wall loan/copy",
                "sim loan ns",
                "sim loan ns (all CPUs)",
                "sim copy ns",
                "sim loan/copy",
            ],
            rows,
        )
    )
    out.append("")
    cross = "; ".join(
        f"{k}: wall {_size(v['wall'])}, simulated {_size(v['simulated'])}"
        for k, v in r["crossover"].items()
    )
    out.append(f"Crossover (smallest size from which loaning stays cheaper): {cross}.")
    out.append("")
    c1 = r["crossover"].get("1 cpus", {}).get("simulated")
    c4 = r["crossover"].get("4 cpus", {}).get("simulated")
    verdict = (
        f"on one CPU loaning is cheaper from {_size(c1)}"
        if c1 is not None
        else "on one CPU loaning is never cheaper in this range"
    ) + (
        f", on four from {_size(c4)}."
        if c4 is not None
        else ", on four CPUs it is dearer at every size: the effect that made NetBSD "
        "turn sosend loaning off on MULTIPROCESSOR kernels."
    )
    one = [x for x in r["loan_vs_copy"] if x["ncpus"] == 1]
    four = [x for x in r["loan_vs_copy"] if x["ncpus"] == 4]
    per_page = ""
    if one and four:
        pages1 = one[-1]["size"] // PS
        pages4 = four[-1]["size"] // PS
        per_page = (
            f"  Per page: a loan costs {one[-1]['sim_loan_ns'] / pages1:.0f} ns on one CPU "
            f"and {four[-1]['sim_loan_ns'] / pages4:.0f} ns on four (each first loan's "
            "pmap_page_protect is a synchronous shootdown round with IPIs to the CPUs "
            f"that cached the buffer), a copy {one[-1]['sim_copy_ns'] / pages1:.0f} ns."
        )
    out.append(
        "Reading: in wall time the model's loan path is Python (per page a map "
        "lookup, a pmap_page_protect and a kenter; then the release) while the copy "
        "is two memcpys in C, "
        + (
            "so loaning never wins on the host.  "
            if all(v["wall"] is None for v in r["crossover"].values())
            else "yet loaning wins on the host for the largest buffers.  "
        )
        + "In simulated time "
        "a loan costs per page (PTE updates, the protect, kenter/kremove) plus, on a "
        "multiprocessor whose other CPUs cached the buffer, synchronous shootdown "
        "IPIs, while a copy costs bytes at the modelled memory bandwidth: " + verdict + per_page
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(
        "loan",
        __doc__,
        bench,
        report,
        argv,
        quick_help="fewer sizes and pages, fewer repeats",
        full_repeats=7,
        report_only=True,
    )


if __name__ == "__main__":
    sys.exit(main())
