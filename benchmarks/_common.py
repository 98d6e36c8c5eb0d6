"""What the benchmarks share: the machine description, timing helpers, table
printing, and writing ``benchmarks/results/<name>.json`` and the
"## <name>" section of ``BENCHMARKS.md``.

Imported as ``_common`` by the scripts next to it (``python benchmarks/x.py``
puts this directory on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN = ROOT / "BENCHMARKS.md"


def results_path(name: str) -> Path:
    """Where the benchmark ``name`` writes its figures."""
    return ROOT / "benchmarks" / "results" / f"{name}.json"


def machine_line() -> str:
    """One line naming the host: CPU count and model, Python version."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"Machine: {os.cpu_count()} CPUs (nproc), {model}, "
        f"Python {platform.python_version()} ({platform.machine()})"
    )


# ------------------------------------------------------------------ timing


def timed(fn: Callable[[], object], number: int = 1) -> float:
    """Seconds per call of ``fn``, over ``number`` calls in a row."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, number: int = 1
) -> dict[str, float]:
    """Median seconds per call of each function, runs interleaved (after a warm-up)."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            samples[k].append(timed(fn, number))
    return {k: statistics.median(v) for k, v in samples.items()}


def median_time(
    fn: Callable[[], Any], repeats: int, setup: Callable[[], Any] | None = None
) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` runs (``setup`` untimed)."""
    out = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def median_rate(run: Callable[[], int], repeats: int) -> tuple[float, list[float]]:
    """Run ``run`` (which returns how many operations it did) ``repeats``
    times; return the median operations per second and every rate."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = run()
        dt = time.perf_counter() - t0
        rates.append(n / dt)
    return statistics.median(rates), rates


# ------------------------------------------------------------------ output


def fmt_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, every column padded to its widest cell."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def write_markdown(name: str, section: str, machine: str) -> None:
    """Replace (or append) the "## <name>" section of BENCHMARKS.md; nothing else.
    A missing BENCHMARKS.md is created with a header naming the machine."""
    head = f"## {name}"
    body = f"{head}\n\n{section.rstrip()}\n"
    if MARKDOWN.exists():
        text = MARKDOWN.read_text(encoding="utf-8")
    else:
        text = f"# Benchmarks\n\n{machine}\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == head), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + body
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + body + ("\n" + tail if tail else "")
    MARKDOWN.write_text(new, encoding="utf-8")


def run_benchmark(
    name: str,
    doc: str | None,
    bench: Callable[[bool, int], dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
    argv: list[str] | None,
    *,
    quick_help: str,
    full_repeats: int,
    report_only: bool = False,
) -> int:
    """The command line every benchmark shares:

        [--quick] [--repeats N] [--no-markdown] [--report-only]

    measures with ``bench(quick, repeats)`` (3 repeats with ``--quick``,
    ``full_repeats`` otherwise), prints the machine line and
    ``report(results)``, writes ``benchmarks/results/<name>.json`` and,
    unless ``--no-markdown``, the "## <name>" section of BENCHMARKS.md.
    With ``report_only``, the option ``--report-only`` re-renders the
    report from the saved results instead of measuring."""
    results = results_path(name)
    ap = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--repeats", type=int, default=None, help="runs per measurement")
    ap.add_argument("--no-markdown", action="store_true", help="do not touch BENCHMARKS.md")
    if report_only:
        ap.add_argument(
            "--report-only",
            action="store_true",
            help=f"re-render the report from {results.relative_to(ROOT)} without measuring",
        )
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else full_repeats)
    if report_only and args.report_only:
        r = json.loads(results.read_text(encoding="utf-8"))
        text = report(r)
        print(text)
        if not args.no_markdown:
            write_markdown(name, f"{r['machine']}\n\n{text}", r["machine"])
        return 0
    r = bench(args.quick, repeats)
    text = report(r)
    print(r["machine"])
    print()
    print(text)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(r, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {results.relative_to(ROOT)}")
    if not args.no_markdown:
        write_markdown(name, f"{r['machine']}\n\n{text}", r["machine"])
        print(f"wrote the {name} section of {MARKDOWN.relative_to(ROOT)}")
    return 0
