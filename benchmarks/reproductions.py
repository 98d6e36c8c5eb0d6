"""The reproductions of published results: their figures and their wall time.

Runs every registered reproduction (``uvmloan reproduce all``; the full
sizes, or the quick ones with ``--quick``), ``repeats`` times for the wall
time (median; the simulated figures are deterministic and the same in every
run), and writes the table of model figure, published figure and ratio, and
each reproduction's wall time, to the "reproductions" section of
BENCHMARKS.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from typing import Any

import _common

from uvmloan.experiments import reproduce, reproductions


def bench(quick: bool, repeats: int) -> dict[str, Any]:
    load = os.getloadavg()
    out: dict[str, Any] = {"quick": quick, "repeats": repeats, "load": load, "runs": []}
    for name in reproductions():
        walls: list[float] = []
        res = None
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as d:
                res = reproduce(name, d, quick=quick)
            walls.append(res.wall_s)
        assert res is not None
        out["runs"].append(
            {
                "name": name,
                "title": res.title,
                "holds": res.holds,
                "verdict": res.verdict,
                "wall_s": statistics.median(walls),
                "walls": walls,
                "rows": [
                    {"what": r.what, "model": r.model, "published": r.published,
                     "unit": r.unit, "ratio": r.ratio}
                    for r in res.rows
                ],
            }
        )
    out["load_end"] = os.getloadavg()
    out["machine"] = _common.machine_line()
    return out


def _num(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if float(x).is_integer():
        s = f"{int(x):,}"
    else:
        s = f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"
    return f"{s} {unit}".strip()


def report(r: dict[str, Any]) -> str:
    mode = "--quick sizes" if r["quick"] else "full sizes"
    walls = "of one run" if r["repeats"] == 1 else f"the median of {r['repeats']} runs"
    lines = [
        f"Measured with `python benchmarks/reproductions.py{' --quick' if r['quick'] else ''}` "
        f"({mode}; wall time {walls}, simulated figures deterministic: every run gives "
        "the same). "
        f"Load average at the start {r['load'][0]:.2f}, at the end {r['load_end'][0]:.2f}.",
        "",
    ]
    rows = []
    for run in r["runs"]:
        for i, row in enumerate(run["rows"]):
            rows.append(
                [
                    run["name"] if i == 0 else "",
                    row["what"],
                    _num(row["model"], row["unit"]),
                    _num(row["published"], row["unit"]),
                    "-" if row["ratio"] is None else f"{row['ratio']:.2f}",
                    (("holds" if run["holds"] else "DOES NOT HOLD") if i == 0 else ""),
                    f"{run['wall_s']:.1f} s" if i == 0 else "",
                ]
            )
    lines.append(
        _common.fmt_table(
            ["reproduction", "figure", "model", "published", "ratio", "claim", "wall time"], rows
        )
    )
    lines.append("")
    lines.extend(f"- `{run['name']}`: {run['verdict']}." for run in r["runs"])
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(
        _common.run_benchmark(
            "reproductions",
            __doc__,
            bench,
            report,
            sys.argv[1:],
            quick_help="the quick sizes (seconds each)",
            full_repeats=1,
            report_only=True,
        )
    )
