"""Reproductions of published results: a registry, their results, their files.

A reproduction is a function ``fn(out=None, *, quick=False, progress=None)``
that runs the model on the workload a published result describes and returns
a :class:`ReproductionResult`: the points it measured (written as a CSV), a
plot of them with the published figure marked (a PNG, when matplotlib is
installed), a table of model figure against published figure, and whether
the result's qualitative claim holds in the model, with the reason.

The model's own reproductions are registered here; the layers above it
(netstack's TCP transfers) register theirs through the
``uvmloan.reproductions`` entry-point group, so this package never imports
them.  ``reproduce(name)`` runs one by name; ``reproductions()`` lists all.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import attrs

Progress = Callable[[str], None]  # told a line of progress now and then


@attrs.frozen
class Comparison:
    """One row of a reproduction's table: a model figure beside the published one."""

    what: str
    model: float
    published: float | None
    unit: str = ""
    # How the published figure is to be read ("about", "at least", "between").
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.published is None or self.published == 0:
            return None
        return self.model / self.published


@attrs.frozen
class ReproductionResult:
    """What one reproduction found."""

    name: str
    title: str
    claim: str  # the published claim, in one sentence
    source: str  # where it was published
    holds: bool  # does the model show the claim's direction/band
    verdict: str  # why (or why not), in figures
    rows: tuple[Comparison, ...]
    points: tuple[Mapping[str, Any], ...]  # the CSV rows
    files: Mapping[str, str] = attrs.field(factory=dict)  # kind -> path
    wall_s: float = 0.0
    params: Mapping[str, Any] = attrs.field(factory=dict)

    def table(self) -> str:
        """The terminal table: model figure, published figure and their ratio."""
        head = ("", "model", "published", "ratio")
        body: list[tuple[str, str, str, str]] = []
        for r in self.rows:
            unit = f" {r.unit}" if r.unit else ""
            pub = "-" if r.published is None else f"{_num(r.published)}{unit}"
            if r.note and r.published is not None:
                pub = f"{r.note} {pub}"
            ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
            body.append((r.what, f"{_num(r.model)}{unit}", pub, ratio))
        widths = [max(len(row[i]) for row in (head, *body)) for i in range(4)]
        lines = [
            "  ".join(
                c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)
            )
            for row in (head, *body)
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def report(self) -> str:
        """The table with its title, the claim and the verdict, for a terminal."""
        mark = "holds" if self.holds else "DOES NOT HOLD"
        out = [
            f"{self.title}",
            f"  claim: {self.claim}",
            f"  source: {self.source}",
            "",
            self.table(),
            "",
            f"  the claim {mark} in the model: {self.verdict}",
        ]
        for kind, path in self.files.items():
            out.append(f"  {kind}: {path}")
        out.append(f"  wall time: {self.wall_s:.1f} s")
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self, recurse=True)
        d["rows"] = [dict(attrs.asdict(r), ratio=r.ratio) for r in self.rows]
        return d


def _num(x: float) -> str:
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


ReproductionFn = Callable[..., ReproductionResult]


@attrs.frozen
class Reproduction:
    """A registered reproduction: its name, what it reproduces, the function."""

    name: str
    title: str
    target: str  # "module:function", imported when run
    number: int = 0  # its number in the project's list of published results

    def load(self) -> ReproductionFn:
        from importlib import import_module

        mod, _, fn = self.target.partition(":")
        got: ReproductionFn = getattr(import_module(mod), fn)
        return got


_BUILTIN: dict[str, Reproduction] = {
    "shootdown-batching": Reproduction(
        name="shootdown-batching",
        title="x86 shootdown batching: 16 VAs one by one, a full flush from the 17th",
        target="uvmloan.experiments.batching:shootdown_batching",
        number=4,
    ),
}


def reproductions() -> dict[str, Reproduction]:
    """Every reproduction, by name, in the order of their numbers.

    The model's own, then those the installed layers register in the
    ``uvmloan.reproductions`` entry-point group (value "module:function",
    the function carrying ``title`` and ``number`` attributes set by
    :func:`reproduction`).
    """
    found = dict(_BUILTIN)
    for ep in entry_points(group="uvmloan.reproductions"):
        if ep.name in found:
            continue
        try:
            fn = ep.load()
        except ImportError:  # pragma: no cover - a broken plugin install
            continue
        found[ep.name] = Reproduction(
            name=ep.name,
            title=str(getattr(fn, "title", ep.name)),
            target=ep.value,
            number=int(getattr(fn, "number", 99)),
        )
    return dict(sorted(found.items(), key=lambda kv: (kv[1].number, kv[0])))


def reproduction(name: str, title: str, number: int) -> Callable[[ReproductionFn], ReproductionFn]:
    """Decorator for a reproduction function: records its title and number."""

    def mark(fn: ReproductionFn) -> ReproductionFn:
        fn.title = title  # type: ignore[attr-defined]
        fn.number = number  # type: ignore[attr-defined]
        fn.reproduction_name = name  # type: ignore[attr-defined]
        return fn

    return mark


def get_reproduction(name: str) -> Reproduction:
    """The registered reproduction ``name`` (a ValueError lists the valid names)."""
    if not isinstance(name, str):
        raise TypeError(f"reproduction name must be a str, not {type(name).__name__}")
    known = reproductions()
    if name not in known:
        raise ValueError(f"unknown reproduction {name!r}; known: {', '.join(known)}")
    return known[name]


def reproduce(
    name: str,
    out: str | Path | None = None,
    *,
    quick: bool = False,
    progress: Progress | None = None,
) -> ReproductionResult:
    """Run reproduction ``name``; with ``out``, write its CSV and plot there."""
    rep = get_reproduction(name)
    return rep.load()(check_args(out, quick), quick=quick, progress=progress)


def check_args(out: object, quick: object) -> Path | None:
    """Validate a reproduction's common arguments; ``out`` as a Path (or None)."""
    if out is not None and not isinstance(out, str | Path):
        raise TypeError(f"out must be a path (str or Path), not {type(out).__name__}")
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be a bool, not {type(quick).__name__}")
    return None if out is None else Path(out)


# ------------------------------------------------------------ shared helpers


class Timer:
    """Wall time of a reproduction, for its result and BENCHMARKS.md."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def write_csv(path: Path, points: Sequence[Mapping[str, Any]]) -> Path:
    """The points as CSV, columns in the first point's order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for p in points:
        cols.extend(k for k in p if k not in cols)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for p in points:
            w.writerow(dict(p))
    return path


def new_figure(ncols: int = 1, width: float = 6.4, height: float = 4.2) -> tuple[Any, Any] | None:
    """A matplotlib Figure and its axes (no pyplot state), or None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    fig = Figure(figsize=(width * ncols, height))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def save_figure(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def finish(
    name: str,
    out: Path | None,
    points: Sequence[Mapping[str, Any]],
    draw: Callable[[], Any] | None,
    files: dict[str, str] | None = None,
) -> dict[str, str]:
    """Write ``out/name.csv`` and, when ``draw`` gives a figure, ``out/name.png``."""
    written: dict[str, str] = {}
    if out is None:
        return written
    written["csv"] = str(write_csv(out / f"{name}.csv", points))
    fig = draw() if draw is not None else None
    if fig is not None:
        written["plot"] = str(save_figure(fig, out / f"{name}.png"))
    else:
        written["plot"] = "(not drawn: matplotlib is not installed; pip install 'uvmloan[plot]')"
    written.update(files or {})
    return written


def conclude(
    fn: ReproductionFn,
    *,
    claim: str,
    source: str,
    holds: bool,
    verdict: str,
    rows: Sequence[Comparison],
    points: Sequence[Mapping[str, Any]],
    out: Path | None,
    draw: Callable[[], Any] | None,
    timer: Timer,
    params: Mapping[str, Any],
    files: dict[str, str] | None = None,
) -> ReproductionResult:
    """A reproduction's result: its files written (``finish``), the rest as given;
    its name and title are those the :func:`reproduction` decorator gave ``fn``."""
    name = str(getattr(fn, "reproduction_name"))  # noqa: B009 - set by @reproduction
    written = finish(name, out, points, draw, files)
    return ReproductionResult(
        name=name,
        title=str(getattr(fn, "title")),  # noqa: B009
        claim=claim,
        source=source,
        holds=holds,
        verdict=verdict,
        rows=tuple(rows),
        points=tuple(points),
        files=written,
        wall_s=timer.elapsed(),
        params=params,
    )
