"""Parameter sweeps: a grid of experiment points, run on any Executor, resumable.

A sweep is an experiment function and a grid of its keyword arguments.  Each
key of ``grid`` is an axis (a list of values) and the sweep runs every
combination; ``fixed`` holds arguments every point shares.  Nothing about an
axis is special: policies, profiles, write sizes, CPU counts, loss rates and
seeds are all just keyword arguments of the experiment, checked against its
signature before anything runs.

The grid comes from a TOML file or a Python dict of the same shape::

    experiment = "send_cost"        # a registered name, or "package.module:function"
    name = "copy-vs-loan"
    [grid]
    policy = ["copy", "loan"]
    size = ["4K", "64K", "1M"]
    ncpus = [1, 2, 4]
    [fixed]
    reuse = true

Each point runs ``experiment(**params)`` through ``run_point`` on a
``concurrent.futures.Executor`` (a local process pool by default; threads;
Dask through ``distributed.Client(...).get_executor(pure=False)``) and its
outcome goes to ``points/<key>.json`` under the output directory, where
``key`` hashes the experiment and the point's arguments.  A point that
raised is recorded with its traceback and the sweep carries on; a rerun
reuses every finished point (and runs the failed ones again, unless
``retry_failed=False``), so an interrupted sweep resumes where it stopped.
The table of every point is written as ``results.csv`` (and
``results.parquet`` when pyarrow is importable), the resolved grid and the
model version as ``sweep.json``.

Randomness is explicit: an experiment that draws takes a ``seed`` argument
and the grid lists the seeds (``seed = [0, 1, 2]`` under ``[grid]``, or
``seeds = [...]`` at the top level as a shorthand).  Nothing derives a seed
from the clock or from the order in which workers finish.

Experiments are named by dotted path, so a layer above the model (the
network stack's transfer, say) joins without uvmloan importing it: pass
``"netstack.demo:run_transfer"``, or register a short name with
:func:`register_experiment` or through the ``uvmloan.experiments``
entry-point group.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import os
import time
import tomllib
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from importlib.metadata import entry_points
from itertools import product
from pathlib import Path
from typing import Any

import attrs

from ._sweep_out import SCHEMA, _Progress, _read_point, _row, _write_json, _write_tables
from ._version import __version__

__all__ = [
    "ExperimentSpec",
    "Grid",
    "Point",
    "SweepError",
    "SweepResult",
    "dask_executor",
    "experiments",
    "load_grid",
    "register_experiment",
    "run_point",
    "run_sweep",
]

TOP_KEYS = ("experiment", "name", "grid", "fixed", "seeds")


class SweepError(ValueError):
    """A grid that cannot run: unknown experiment, parameter or value."""


@attrs.frozen
class ExperimentSpec:
    """A named experiment: the function's dotted path and what its
    categorical arguments may be (checked before the sweep starts)."""

    name: str
    target: str  # "package.module:function"
    choices: Mapping[str, tuple[Any, ...]] = attrs.field(factory=dict)
    doc: str = ""


def _send_cost_choices() -> dict[str, tuple[Any, ...]]:
    from .experiments import POLICIES
    from .profile import PROFILES

    return {"policy": POLICIES, "profile": tuple(sorted(PROFILES))}


_REGISTRY: dict[str, ExperimentSpec] = {}


def register_experiment(
    name: str, target: str, choices: Mapping[str, Sequence[Any]] | None = None, doc: str = ""
) -> ExperimentSpec:
    """Give the experiment at ``target`` ("module:function") a short name."""
    if ":" not in target and "." not in target:
        raise SweepError(f"experiment target {target!r}: expected 'package.module:function'")
    spec = ExperimentSpec(name, target, {k: tuple(v) for k, v in (choices or {}).items()}, doc)
    _REGISTRY[name] = spec
    return spec


def experiments() -> dict[str, ExperimentSpec]:
    """Every named experiment: the built-in ones, registered ones and those of
    the ``uvmloan.experiments`` entry-point group (name = "module:function")."""
    out = {
        "send_cost": ExperimentSpec(
            "send_cost",
            "uvmloan.experiments:send_cost",
            _send_cost_choices(),
            "one send by copy or by page loan on a fresh machine (uvmloan.experiments)",
        )
    }
    for ep in entry_points(group="uvmloan.experiments"):
        out[ep.name] = ExperimentSpec(ep.name, ep.value, {}, f"entry point {ep.value}")
    out.update(_REGISTRY)
    return out


def _import_target(target: str) -> Callable[..., Any]:
    if ":" in target:
        mod, _, attr = target.partition(":")
    else:
        mod, _, attr = target.rpartition(".")
    if not mod or not attr:
        raise SweepError(f"experiment {target!r}: expected 'package.module:function'")
    try:
        obj: Any = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise SweepError(f"experiment {target!r} cannot be imported: {e}") from None
    if not callable(obj):
        raise SweepError(f"experiment {target!r} is not callable")
    return obj  # type: ignore[no-any-return]


def resolve_experiment(experiment: str | Callable[..., Any]) -> tuple[str, ExperimentSpec | None]:
    """(dotted target, spec if named) of a name, a dotted path or a function."""
    if callable(experiment):
        mod = getattr(experiment, "__module__", None)
        qual = getattr(experiment, "__qualname__", None)
        if not mod or not qual or "<" in qual:
            raise SweepError("an experiment function must be a module-level function")
        return f"{mod}:{qual}", None
    if not isinstance(experiment, str) or not experiment:
        raise SweepError(f"experiment must be a name or 'module:function', got {experiment!r}")
    named = experiments()
    if experiment in named:
        return named[experiment].target, named[experiment]
    if ":" not in experiment and "." not in experiment:
        raise SweepError(
            f"unknown experiment {experiment!r}; named experiments: {', '.join(sorted(named))}"
            " (or give 'package.module:function')"
        )
    return experiment, None


@attrs.frozen
class Point:
    """One point of a grid: its place, its arguments and its file key."""

    index: int
    params: Mapping[str, Any]
    key: str

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params.items())


def _jsonable_value(where: str, v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple):
        return [_jsonable_value(where, x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable_value(where, x) for k, x in v.items()}
    raise SweepError(f"{where}: {v!r} is not a number, string, bool, list or table")


def _point_key(target: str, params: Mapping[str, Any]) -> str:
    blob = json.dumps({"experiment": target, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@attrs.frozen
class Grid:
    """An experiment and the arguments of every point (see the module doc)."""

    experiment: str  # the dotted target ("module:function")
    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    fixed: tuple[tuple[str, Any], ...] = ()
    name: str = "sweep"

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], *, experiment: str | Callable[..., Any] | None = None
    ) -> Grid:
        """A checked grid from a dict shaped like the TOML file.

        ``experiment`` (a function, a name or a dotted path) replaces the
        dict's ``experiment`` key; Python callers pass their function here.
        """
        if not isinstance(d, Mapping):
            raise SweepError(f"a sweep is a table (dict), got {type(d).__name__}")
        unknown = sorted(set(d) - set(TOP_KEYS))
        if unknown:
            raise SweepError(
                f"unknown sweep key {unknown[0]!r}; valid keys: {', '.join(TOP_KEYS)}"
                " (the experiment's arguments go under [grid] or [fixed])"
            )
        exp = experiment if experiment is not None else d.get("experiment", "send_cost")
        target, spec = resolve_experiment(exp)
        fn = exp if callable(exp) else _import_target(target)
        name = d.get("name", "sweep")
        if not isinstance(name, str) or not name:
            raise SweepError(f"name must be a non-empty string, got {name!r}")
        grid = d.get("grid", {})
        fixed = d.get("fixed", {})
        for what, t in (("grid", grid), ("fixed", fixed)):
            if not isinstance(t, Mapping):
                raise SweepError(f"[{what}] must be a table, got {t!r}")
        grid = dict(grid)
        if "seeds" in d:
            if "seed" in grid:
                raise SweepError("give the seeds once: 'seeds' or grid.seed, not both")
            grid["seed"] = d["seeds"]
        axes: list[tuple[str, tuple[Any, ...]]] = []
        for k, vals in grid.items():
            if not isinstance(vals, list | tuple) or not vals:
                raise SweepError(f"grid.{k}: an axis is a non-empty list of values, got {vals!r}")
            vs = tuple(_jsonable_value(f"grid.{k}", v) for v in vals)
            if len({json.dumps(v, sort_keys=True) for v in vs}) != len(vs):
                raise SweepError(f"grid.{k}: a value is listed twice in {list(vs)!r}")
            axes.append((str(k), vs))
        fixed_items = tuple((str(k), _jsonable_value(f"fixed.{k}", v)) for k, v in fixed.items())
        both = sorted(set(grid) & {k for k, _ in fixed_items})
        if both:
            raise SweepError(f"{both[0]!r} is both an axis (grid) and fixed: give it once")
        g = cls(target, tuple(axes), fixed_items, name)
        g._check(fn, spec)
        return g

    def _check(self, fn: Callable[..., Any], spec: ExperimentSpec | None) -> None:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            return
        params = sig.parameters
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        named = [
            n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        given = [k for k, _ in self.axes] + [k for k, _ in self.fixed]
        for k in given:
            if k not in params and not var_kw:
                if k == "seed":
                    raise SweepError(
                        f"experiment {self.experiment} takes no seed (it draws nothing): "
                        "drop 'seeds' / grid.seed"
                    )
                raise SweepError(
                    f"experiment {self.experiment} has no parameter {k!r}; "
                    f"its parameters: {', '.join(named)}"
                )
        missing = [
            n
            for n, p in params.items()
            if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and n not in given
        ]
        if missing:
            raise SweepError(
                f"experiment {self.experiment} needs {', '.join(map(repr, missing))}: "
                "give each under [grid] (a list) or [fixed]"
            )
        for k, vals in [*self.axes, *((k, (v,)) for k, v in self.fixed)]:
            allowed = (spec.choices if spec else {}).get(k)
            if allowed is None:
                continue
            for v in vals:
                if v not in allowed:
                    raise SweepError(
                        f"{k} = {v!r} is not valid for {spec.name if spec else ''}; "
                        f"valid: {', '.join(map(str, allowed))}"
                    )

    def points(self) -> list[Point]:
        """Every combination of the axes, the first axis outermost."""
        keys = [k for k, _ in self.axes]
        fixed = dict(self.fixed)
        out = []
        for i, combo in enumerate(product(*(vals for _, vals in self.axes))):
            params = {**dict(zip(keys, combo, strict=True)), **fixed}
            out.append(Point(i, params, _point_key(self.experiment, params)))
        return out

    def as_dict(self) -> dict[str, Any]:
        """The grid as the TOML/dict shape (``Grid.from_dict`` reads it back)."""
        return {
            "experiment": self.experiment,
            "name": self.name,
            "grid": {k: list(v) for k, v in self.axes},
            "fixed": dict(self.fixed),
        }


def load_grid(source: str | Path | Mapping[str, Any]) -> Grid:
    """A grid from a TOML file's path or from a dict."""
    if isinstance(source, Mapping):
        return Grid.from_dict(source)
    path = Path(source)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SweepError(f"{path}: no such sweep file") from None
    except IsADirectoryError:
        raise SweepError(f"{path}: is a directory, not a sweep file") from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise SweepError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        return Grid.from_dict(data)
    except SweepError as e:
        raise SweepError(f"{path}: {e}") from None


# ------------------------------------------------------------------ running


def _as_record(res: Any) -> dict[str, Any]:
    if attrs.has(type(res)):
        rec = attrs.asdict(res)
    elif hasattr(res, "as_dict") and callable(res.as_dict):
        rec = res.as_dict()
    elif isinstance(res, Mapping):
        rec = dict(res)
    elif res is None or isinstance(res, bool | int | float | str):
        rec = {"value": res}
    else:
        raise TypeError(
            f"the experiment returned a {type(res).__name__}: return an attrs class, "
            "a dict or a number"
        )
    json.dumps(rec)  # a result must be JSON: fail here, in the worker, if not
    return rec


def run_point(experiment: str | Callable[..., Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Run one point (in a worker): ``{"status": "ok", "result": {...}}`` or
    ``{"status": "error", "error": ..., "traceback": ...}``; never raises
    for an ``Exception`` of the experiment."""
    t0 = time.perf_counter()
    try:
        fn = experiment if callable(experiment) else _import_target(experiment)
        result = _as_record(fn(**params))
    except Exception as e:
        return {
            "status": "error",
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
            "wall_s": time.perf_counter() - t0,
        }
    return {"status": "ok", "result": result, "wall_s": time.perf_counter() - t0}


@attrs.frozen
class SweepResult:
    """What a sweep did: one row per point (grid order) and its bookkeeping."""

    out: Path
    rows: list[dict[str, Any]]
    computed: int
    reused: int
    failed: int
    files: tuple[Path, ...]

    @property
    def ok(self) -> bool:
        return self.failed == 0


def run_sweep(
    grid: Grid | Mapping[str, Any] | str | Path,
    out: str | Path,
    *,
    executor: Executor | None = None,
    max_workers: int | None = None,
    progress: bool | None = None,
    retry_failed: bool = True,
    experiment: Callable[..., Any] | None = None,
) -> SweepResult:
    """Run every point of ``grid`` not already done in ``out``.

    ``executor``: any ``concurrent.futures.Executor`` (default: a process
    pool of ``max_workers``, made and shut down here; an executor you pass
    stays yours).  ``progress``: None shows rich's bar on a terminal and
    plain lines otherwise, True always lines or bar, False nothing.
    ``experiment``: a module-level function, for grids built in Python.
    A ``KeyboardInterrupt`` cancels what has not started and propagates;
    every point finished by then is on disk and the next run reuses it.
    """
    if isinstance(grid, Grid):
        g = grid
    elif isinstance(grid, Mapping):
        g = Grid.from_dict(grid, experiment=experiment)
    else:
        g = load_grid(grid)
    fn_or_target: str | Callable[..., Any] = experiment if experiment is not None else g.experiment
    outdir = Path(out)
    pdir = outdir / "points"
    pdir.mkdir(parents=True, exist_ok=True)
    pts = g.points()
    manifest = {
        "schema": SCHEMA,
        "model": "uvmloan",
        "model_version": __version__,
        "backend": _backend(),
        "sweep": g.as_dict(),
        "points": len(pts),
    }
    _write_json(outdir / "sweep.json", manifest)
    records: dict[int, dict[str, Any]] = {}
    todo: list[Point] = []
    for pt in pts:
        old = _read_point(pdir / f"{pt.key}.json")
        if old is not None and (old["status"] == "ok" or not retry_failed):
            records[pt.index] = old
        else:
            todo.append(pt)
    reused = len(records)
    bar = _Progress(progress, len(pts), reused, g.name)
    bar.say(f"{g.name}: {len(pts)} points of {g.experiment}: {reused} reused, {len(todo)} to run")
    owned = executor is None
    nworkers = max_workers or max(1, min(len(todo), os.cpu_count() or 1))
    ex = executor or ProcessPoolExecutor(max_workers=nworkers)
    futures: dict[Future[dict[str, Any]], Point] = {}
    try:
        for pt in todo:
            futures[ex.submit(run_point, fn_or_target, dict(pt.params))] = pt
        for fut in as_completed(futures):
            pt = futures[fut]
            try:
                rec = fut.result()
            except Exception as e:  # the worker died, or the call could not be shipped
                rec = {
                    "status": "error",
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": "".join(traceback.format_exception(e)),
                    "wall_s": None,
                }
            rec = {"schema": SCHEMA, "index": pt.index, "params": dict(pt.params), **rec}
            _write_json(pdir / f"{pt.key}.json", rec)
            records[pt.index] = rec
            bar.advance(pt, rec)
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    finally:
        bar.close()
        if owned:
            ex.shutdown(wait=True, cancel_futures=True)
    rows = [_row(pt, records[pt.index]) for pt in pts]
    files = _write_tables(outdir, rows)
    failed = sum(1 for r in rows if r["status"] != "ok")
    res = SweepResult(outdir, rows, len(todo), reused, failed, files)
    bar.say(
        f"{g.name}: {res.computed} computed, {res.reused} reused, {res.failed} failed;"
        f" table: {files[0]}"
    )
    return res


def _backend() -> str:
    from .physmem import BACKEND

    return BACKEND


@contextlib.contextmanager
def dask_executor(address: str | None = None, **client_kw: Any) -> Iterator[Executor]:
    """A Dask cluster as a ``concurrent.futures.Executor`` (``pure=False``, so
    two points with equal arguments are both run, never served from a cache).

    ``address``: a scheduler ("tcp://host:8786"), or None for a
    ``LocalCluster`` on this machine.  Needs ``pip install 'uvmloan[sweep]'``.
    """
    try:
        from distributed import Client
    except ImportError as e:
        raise RuntimeError(
            "the Dask executor needs distributed: pip install 'uvmloan[sweep]'"
        ) from e
    client_cls: Any = Client  # distributed's Client is not annotated
    with client_cls(address, **client_kw) as client:
        ex = client.get_executor(pure=False)
        try:
            yield ex
        finally:
            ex.shutdown(wait=True)
