"""Output of ``uvmloan.sweep``: point files, result tables and progress lines."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sweep import Point

SCHEMA = 1


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # a point file is whole or absent, never half written


def _read_point(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("schema") == SCHEMA else None


def _row(pt: Point, rec: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"point": pt.index, "key": pt.key, "status": rec["status"]}
    for k, v in pt.params.items():
        row[k] = json.dumps(v) if isinstance(v, list | dict) else v
    for k, v in (rec.get("result") or {}).items():
        col = k if k not in row or row[k] == v else f"result.{k}"
        row[col] = json.dumps(v) if isinstance(v, list | dict) else v
    row["error"] = rec.get("error", "")
    row["wall_s"] = rec.get("wall_s")
    return row


def _write_tables(out: Path, rows: list[dict[str, Any]]) -> tuple[Path, ...]:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    # error and wall_s last, whatever the results' own columns
    cols = [c for c in cols if c not in ("error", "wall_s")] + ["error", "wall_s"]
    path = out / "results.csv"
    tmp = path.with_name("results.csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
    files = [path]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return tuple(files)
    table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows])
    pq.write_table(table, out / "results.parquet")
    files.append(out / "results.parquet")
    return tuple(files)


class _Progress:
    """Plain lines (not a terminal, CI, or no rich); rich's bar on a TTY."""

    def __init__(self, mode: bool | None, total: int, reused: int, name: str) -> None:
        self.total, self.done, self.failed = total, reused, 0
        self.name = name
        self.enabled = mode is not False
        self._bar: Any = None
        self._task: Any = None
        tty = os.isatty(1) and not os.environ.get("CI") and os.environ.get("TERM") != "dumb"
        if self.enabled and (mode is None and tty):
            try:
                from rich.progress import Progress
            except ImportError:
                pass
            else:
                self._bar = Progress(transient=False)
                self._task = self._bar.add_task(name, total=total, completed=reused)
                self._bar.start()

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, flush=True)

    def advance(self, pt: Point, rec: Mapping[str, Any]) -> None:
        self.done += 1
        if rec["status"] != "ok":
            self.failed += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1)
            if rec["status"] != "ok":
                self.say(f"  point {pt.index} failed: {pt.label()}: {rec.get('error')}")
        elif self.enabled:
            what = "ok" if rec["status"] == "ok" else f"FAILED: {rec.get('error')}"
            print(
                f"{self.name}: [{self.done}/{self.total}] {pt.label()}: {what}"
                f" ({rec.get('wall_s') or 0:.2f} s)",
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
