"""Benchmarks of the physical-memory arena (uvmloan.physmem), side by side in one run.

    python benchmarks/physmem.py [--quick] [--repeats N] [--no-markdown]

Measures, as medians over repeats (ratios use the medians of runs interleaved
with their baseline):

* batched page copy: ``PhysMem.copy_pages`` over 65536 pages of 4 KiB
  (256 MiB) against a plain C ``memcpy`` loop over the same arena and the
  same frame arrays, compiled in this run with the module's flags;
* the per-call cost of ``PhysMem.copy_page`` (ns per call);
* checksum bandwidth: ``in_cksum`` over a 64 KiB piece list and over a
  16 MiB one against a straightforward C loop (32-bit words into a 64-bit
  accumulator, folded at the end) over the same bytes;
* the C backend against the pure-Python twin for copy, zero, copyin/copyout
  of 64 KiB, gather and checksum.

Writes ``benchmarks/results/physmem.json`` and the "physmem" section of
``BENCHMARKS.md`` (created with a header naming the machine if absent).
Figures are wall-clock on a shared machine: compare ratios, not absolutes.
"""

from __future__ import annotations

import array
import importlib
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import ROOT, fmt_table, interleaved, machine_line, run_benchmark, timed
from cffi import FFI

from uvmloan.physmem import PhysMem, available_backends

PS = 4096

BASELINE_C = r"""
#include <stdint.h>
#include <string.h>

/* the plain memcpy loop copy_pages is measured against */
static void bench_copy_pages(char *base, const int64_t *src, const int64_t *dst,
                             int64_t n, int64_t ps)
{
    for (int64_t i = 0; i < n; i++)
        memcpy(base + dst[i] * ps, base + src[i] * ps, (size_t)ps);
}

/* a straightforward checksum loop: 32-bit words into a 64-bit accumulator */
static uint32_t bench_sum32(const char *p, int64_t n)
{
    uint64_t acc = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t w;
        memcpy(&w, p + i, 4);
        acc += w;
    }
    for (; i < n; i++)
        acc += (uint64_t)(unsigned char)p[i] << ((i & 1) * 8);
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint32_t)acc;
}

/* the same over (frame, offset, length) pieces, as in_cksum sees them */
static uint32_t bench_sum32_pieces(const char *base, const int64_t *pieces, int64_t n,
                                   int64_t ps)
{
    uint64_t acc = 0;
    for (int64_t k = 0; k < n; k++) {
        const char *p = base + pieces[3 * k] * ps + pieces[3 * k + 1];
        int64_t len = pieces[3 * k + 2];
        for (int64_t i = 0; i + 4 <= len; i += 4) {
            uint32_t w;
            memcpy(&w, p + i, 4);
            acc += w;
        }
    }
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint32_t)acc;
}

/* a NIC's gather followed by the checksum of what it gathered, as plain
 * loops: the baseline gather_cksum is measured against */
static uint32_t bench_gather_sum(const char *base, const int64_t *pieces, int64_t n,
                                 int64_t ps, char *dst)
{
    char *d = dst;
    for (int64_t k = 0; k < n; k++) {
        int64_t len = pieces[3 * k + 2];
        memcpy(d, base + pieces[3 * k] * ps + pieces[3 * k + 1], (size_t)len);
        d += len;
    }
    return bench_sum32(dst, d - dst);
}
"""

BASELINE_CDEF = """
void bench_copy_pages(char *base, const int64_t *src, const int64_t *dst, int64_t n, int64_t ps);
uint32_t bench_sum32(const char *p, int64_t n);
uint32_t bench_sum32_pieces(const char *base, const int64_t *pieces, int64_t n, int64_t ps);
uint32_t bench_gather_sum(const char *base, const int64_t *pieces, int64_t n, int64_t ps,
                          char *dst);
"""


def compile_baseline(tmp: Path) -> ModuleType:
    """Compile the baseline loops with the flags of uvmloan._physmem."""
    spec = importlib.util.spec_from_file_location(
        "_uvmloan_build_physmem", ROOT / "cext" / "build_physmem.py"
    )
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    flags: dict[str, Any] = build.build_flags()
    ffib = FFI()
    ffib.cdef(BASELINE_CDEF)
    ffib.set_source(
        "_physmem_bench",
        BASELINE_C,
        extra_compile_args=flags["extra_compile_args"],
        extra_link_args=flags["extra_link_args"],
    )
    ffib.compile(tmpdir=str(tmp), verbose=False)
    sys.path.insert(0, str(tmp))
    try:
        return importlib.import_module("_physmem_bench")
    finally:
        sys.path.remove(str(tmp))


def raw_address(m: PhysMem) -> int:
    """The arena's base address (C backend), to point the baseline at the same memory."""
    from uvmloan._physmem import ffi, lib

    return int(ffi.cast("uintptr_t", lib.pm_base(m._h)))


def bench(quick: bool, repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": machine_line(),
        "loadavg_before": list(os.getloadavg()),
        "quick": quick,
        "repeats": repeats,
        "page_size": PS,
    }
    have_c = "c" in available_backends()
    results["backends"] = list(available_backends())
    if not have_c:
        print("the C backend is not built: only the pure-Python figures are measured")

    if have_c:
        with tempfile.TemporaryDirectory(prefix="uvmloan-bench-") as tmp:
            base_mod = compile_baseline(Path(tmp))
            bffi: Any = base_mod.ffi
            blib: Any = base_mod.lib
            results.update(bench_c_vs_baseline(bffi, blib, quick, repeats))
    results["c_vs_python"] = bench_c_vs_python(quick, repeats) if have_c else {}
    return results


def bench_c_vs_baseline(bffi: Any, blib: Any, quick: bool, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = 16384 if quick else 65536  # pages copied: 64 MiB quick, 256 MiB full
    with PhysMem(2 * n + 16, PS, backend="c") as m:
        srcs = list(range(n))
        dsts = list(range(n, 2 * n))
        pattern = bytes((i * 7) & 0xFF for i in range(PS))
        m.copyin(srcs[:1], 0, pattern)
        m.copy_pages([0] * (n - 1), srcs[1:])  # touch every source frame
        m.zero_pages(dsts)  # and every destination frame
        base = bffi.cast("char *", raw_address(m))
        csrc = bffi.new("int64_t[]", srcs)
        cdst = bffi.new("int64_t[]", dsts)
        asrc = array.array("q", srcs)
        adst = array.array("q", dsts)

        t = interleaved(
            {
                "copy_pages(list)": lambda: m.copy_pages(srcs, dsts),
                "copy_pages(array)": lambda: m.copy_pages(asrc, adst),
                "memcpy loop": lambda: blib.bench_copy_pages(base, csrc, cdst, n, PS),
            },
            repeats,
        )
        mib = n * PS / 2**20
        out["copy_pages"] = {
            "pages": n,
            "mib": mib,
            "seconds": t,
            "gib_per_s": {k: mib / 1024 / v for k, v in t.items()},
            "ratio_list": t["memcpy loop"] / t["copy_pages(list)"],
            "ratio_array": t["memcpy loop"] / t["copy_pages(array)"],
        }

        # per-call overhead of a single page copy
        calls = 20000 if quick else 100000
        one = interleaved(
            {
                "PhysMem.copy_page": lambda: m.copy_page(1, n + 1),
                "memcpy 1 page": lambda: blib.bench_copy_pages(base, csrc, cdst, 1, PS),
            },
            repeats,
            number=calls,
        )
        out["copy_page_call"] = {
            "ns_per_call": one["PhysMem.copy_page"] * 1e9,
            "ns_cffi_memcpy_1_page": one["memcpy 1 page"] * 1e9,
        }

        # checksum bandwidth over the (warm) source frames
        pieces_64k = [(f, 0, PS) for f in range(16)]
        pieces_16m = [(f, 0, PS) for f in range(min(n, 4096))]
        flat_64k = bffi.new("int64_t[]", [x for p in pieces_64k for x in p])
        flat_16m = bffi.new("int64_t[]", [x for p in pieces_16m for x in p])
        nb16 = len(pieces_16m) * PS
        # the baseline computes the same sum (in native byte order)
        native = blib.bench_sum32_pieces(base, flat_16m, len(pieces_16m), PS)
        if sys.byteorder == "little":
            native = ((native & 0xFF) << 8) | (native >> 8)
        assert native == m.cksum_sum(pieces_16m), (native, m.cksum_sum(pieces_16m))
        ck_calls = 2000 if quick else 10000
        # the C entry point alone, on a prebuilt piece array (no Python tuples
        # to convert): the quality of the C loop itself
        from uvmloan._physmem import ffi as pffi
        from uvmloan._physmem import lib as plib

        cp_64k = pffi.new("pm_piece[]", pieces_64k)
        cp_16m = pffi.new("pm_piece[]", pieces_16m)
        cks_out = pffi.new("uint32_t *")
        h = m._h
        arr_64k = array.array("q", [x for p in pieces_64k for x in p])
        small = interleaved(
            {
                "in_cksum 64 KiB": lambda: m.in_cksum(pieces_64k),
                "in_cksum 64 KiB (array pieces)": lambda: m.in_cksum(arr_64k),
                "pm_cksum 64 KiB (C entry point)": lambda: plib.pm_cksum(h, cp_64k, 16, 0, cks_out),
                "C loop 64 KiB (pieces)": lambda: blib.bench_sum32_pieces(base, flat_64k, 16, PS),
                "C loop 64 KiB (contiguous)": lambda: blib.bench_sum32(base, 16 * PS),
            },
            repeats,
            number=ck_calls,
        )
        big = interleaved(
            {
                "in_cksum 16 MiB": lambda: m.in_cksum(pieces_16m),
                "pm_cksum 16 MiB (C entry point)": lambda: plib.pm_cksum(
                    h, cp_16m, len(pieces_16m), 0, cks_out
                ),
                "C loop 16 MiB (pieces)": lambda: blib.bench_sum32_pieces(
                    base, flat_16m, len(pieces_16m), PS
                ),
                "C loop 16 MiB (contiguous)": lambda: blib.bench_sum32(base, nb16),
            },
            repeats,
            number=10,
        )
        gbs = {k: 16 * PS / v / 1e9 for k, v in small.items()}
        gbs.update({k: nb16 / v / 1e9 for k, v in big.items()})
        out["cksum"] = {
            "seconds": {**small, **big},
            "gb_per_s": gbs,
            "ratio_64k": small["C loop 64 KiB (pieces)"] / small["in_cksum 64 KiB"],
            "ratio_16m": big["C loop 16 MiB (pieces)"] / big["in_cksum 16 MiB"],
            "ratio_16m_vs_contiguous": big["C loop 16 MiB (contiguous)"] / big["in_cksum 16 MiB"],
            "ratio_64k_array": small["C loop 64 KiB (pieces)"]
            / small["in_cksum 64 KiB (array pieces)"],
            "ratio_64k_c_entry": small["C loop 64 KiB (pieces)"]
            / small["pm_cksum 64 KiB (C entry point)"],
            "ratio_16m_c_entry": big["C loop 16 MiB (pieces)"]
            / big["pm_cksum 16 MiB (C entry point)"],
        }

        # the transmit path of a NIC without offload: gather a 64 KiB chain
        # of 16 page pieces into the frame and checksum it.  Before the fused
        # entry point the stack did two passes with Python tuples.
        frame = bytearray(16 * PS + 64)
        cframe = bffi.from_buffer(frame)
        expect = blib.bench_gather_sum(base, flat_64k, 16, PS, cframe)
        if sys.byteorder == "little":
            expect = ((expect & 0xFF) << 8) | (expect >> 8)
        got = m.gather_cksum(arr_64k, frame, 0)[1]
        assert got == expect, (got, expect)

        def two_pass() -> int:
            m.gather_into(pieces_64k, frame)
            return m.cksum_bytes(memoryview(frame)[: 16 * PS])

        gc = interleaved(
            {
                "gather_cksum (array pieces)": lambda: m.gather_cksum(arr_64k, frame, 0),
                "gather_cksum (tuple pieces)": lambda: m.gather_cksum(pieces_64k, frame, 0),
                "gather_into + cksum_bytes": two_pass,
                "C loop gather then sum": lambda: blib.bench_gather_sum(
                    base, flat_64k, 16, PS, cframe
                ),
            },
            repeats,
            number=ck_calls,
        )
        out["gather_cksum"] = {
            "seconds": gc,
            "ratio_array": gc["C loop gather then sum"] / gc["gather_cksum (array pieces)"],
            "ratio_tuples": gc["C loop gather then sum"] / gc["gather_cksum (tuple pieces)"],
            "ratio_two_pass": gc["C loop gather then sum"] / gc["gather_into + cksum_bytes"],
        }
    return out


def bench_c_vs_python(quick: bool, repeats: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    npg = 1024 if quick else 4096  # pages per batch op: 4 / 16 MiB
    arenas = {be: PhysMem(2 * npg + 32, PS, backend=be) for be in ("c", "python")}
    try:
        data64 = bytes((i * 13) & 0xFF for i in range(65536))
        srcs, dsts = list(range(npg)), list(range(npg, 2 * npg))
        io_frames = list(range(2 * npg, 2 * npg + 17))
        pieces = [(f, 0, PS) for f in range(16)]
        odd_pieces = [(f, 1, PS - 1) for f in range(16)]
        for m in arenas.values():
            m.fill_pages(srcs, 0x5A)
            m.zero_pages(dsts)
            m.copyin(io_frames, 0, data64)

        def ops(m: PhysMem) -> dict[str, Callable[[], object]]:
            return {
                f"copy_pages {npg * PS >> 20} MiB": lambda: m.copy_pages(srcs, dsts),
                f"zero_pages {npg * PS >> 20} MiB": lambda: m.zero_pages(dsts),
                "copy_page 4 KiB": lambda: m.copy_page(0, npg),
                "copyin 64 KiB (17 frames, offset 100)": lambda: m.copyin(io_frames, 100, data64),
                "copyout 64 KiB (17 frames, offset 100)": lambda: m.copyout(io_frames, 100, 65536),
                "copyout 8 B (1 frame)": lambda: m.copyout(io_frames[:1], 8, 8),
                "gather 16 x 4 KiB": lambda: m.gather(pieces),
                "in_cksum 16 x 4 KiB": lambda: m.in_cksum(pieces),
                "in_cksum 16 x 4095 B (odd)": lambda: m.in_cksum(odd_pieces),
            }

        table_c, table_py = ops(arenas["c"]), ops(arenas["python"])
        for name in table_c:
            # enough calls to make one sample last a few ms on the C side
            n_c = max(1, int(0.005 / max(timed(table_c[name]), 1e-7)))
            n_py = max(1, int(0.005 / max(timed(table_py[name]), 1e-7)))
            t = interleaved({"c": table_c[name]}, repeats, number=n_c) | interleaved(
                {"python": table_py[name]}, max(3, repeats // 2), number=n_py
            )
            res[name] = {
                "c_us": t["c"] * 1e6,
                "python_us": t["python"] * 1e6,
                "speedup": t["python"] / t["c"],
            }
    finally:
        for m in arenas.values():
            m.close()
    return res


def report(r: dict[str, Any]) -> str:
    parts = [
        f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/physmem.py"
        f"{' --quick' if r['quick'] else ''}` (medians of {r['repeats']} interleaved runs; "
        "ratios are baseline time / our time, so 1.0 means as fast as the baseline). "
        f"Load average when it started: {r['loadavg_before'][0]:.2f} "
        "(other jobs on the machine make absolute figures noisy; ratios less so).",
        "",
    ]
    if "copy_pages" in r:
        cp = r["copy_pages"]
        parts.append(f"**Batched page copy**, {cp['pages']} pages of 4 KiB ({cp['mib']:.0f} MiB):")
        parts.append("")
        rows: list[tuple[str, ...]] = []
        for k, v in cp["seconds"].items():
            ratio = cp["seconds"]["memcpy loop"] / v
            rows.append((k, f"{v * 1e3:.1f}", f"{cp['gib_per_s'][k]:.2f}", f"{ratio:.2f}"))
        parts += [fmt_table(("path", "ms", "GiB/s", "ratio to memcpy loop"), rows), ""]
        oc = r["copy_page_call"]
        parts.append(
            f"**Single-page copy call**: `PhysMem.copy_page` {oc['ns_per_call']:.0f} ns per call "
            f"(a 1-page memcpy through a bare cffi call: {oc['ns_cffi_memcpy_1_page']:.0f} ns)."
        )
        parts.append("")
        ck = r["cksum"]
        parts.append("**Checksum bandwidth** (`in_cksum` vs a plain C 32-bit-word loop):")
        parts.append("")
        rows = [(k, f"{v:.2f}") for k, v in ck["gb_per_s"].items()]
        parts += [fmt_table(("path", "GB/s"), rows), ""]
        parts.append(
            f"Ratios, `in_cksum` end to end: 64 KiB list {ck['ratio_64k']:.2f}, "
            f"16 MiB list {ck['ratio_16m']:.2f} (against the contiguous loop: "
            f"{ck['ratio_16m_vs_contiguous']:.2f}); the C entry point alone: "
            f"64 KiB {ck['ratio_64k_c_entry']:.2f}, 16 MiB {ck['ratio_16m_c_entry']:.2f}; "
            f"a 64 KiB list given as one flat `array('q')` of triples: "
            f"{ck['ratio_64k_array']:.2f}. "
            "A list of tuples pays for converting its 16 Python tuples; the array form is "
            "passed to C as it is."
        )
        parts.append("")
    if "gather_cksum" in r:
        g = r["gather_cksum"]
        parts.append(
            "**Transmit without checksum offload**: gather a 64 KiB chain of 16 page pieces "
            "into a frame and checksum it (ratio to plain C loops doing the same):"
        )
        parts.append("")
        base_t = g["seconds"]["C loop gather then sum"]
        rows = [(k, f"{v * 1e6:.2f}", f"{base_t / v:.2f}") for k, v in g["seconds"].items()]
        parts += [fmt_table(("path", "µs", "ratio to C loops"), rows), ""]
    if r["c_vs_python"]:
        parts.append("**C backend vs pure-Python twin**:")
        parts.append("")
        rows = [
            (k, f"{v['c_us']:.2f}", f"{v['python_us']:.1f}", f"{v['speedup']:.1f}x")
            for k, v in r["c_vs_python"].items()
        ]
        parts += [fmt_table(("operation", "C (µs)", "Python (µs)", "speed-up"), rows), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(
        "physmem",
        __doc__,
        bench,
        report,
        argv,
        quick_help="smaller sizes, fewer repeats",
        full_repeats=9,
    )


if __name__ == "__main__":
    raise SystemExit(main())
