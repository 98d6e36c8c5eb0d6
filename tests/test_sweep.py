"""uvmloan.sweep: grids from TOML and dicts checked against the experiment's
signature, one JSON file per point, failures recorded with their traceback,
resume after an interruption, CSV tables, and the executors (threads, a
process pool, a Dask LocalCluster)."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sweep_fixtures as fx

from uvmloan import experiments
from uvmloan.sweep import Grid, SweepError, load_grid, run_sweep

SEND = {"grid": {"policy": ["copy", "loan"], "size": ["4K", "16K"], "ncpus": [1, 2]}}
DRAW = "sweep_fixtures:draw"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    fx.FAIL_AT.clear()
    fx.INTERRUPT_AT.clear()
    fx.CALLS.clear()
    yield
    fx.FAIL_AT.clear()
    fx.INTERRUPT_AT.clear()


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_points_are_every_combination_first_axis_outermost() -> None:
    g = Grid.from_dict({"experiment": DRAW, "grid": {"x": [1, 2, 3]}, "seeds": [7, 8]})
    pts = g.points()
    assert [dict(p.params) for p in pts] == [{"x": x, "seed": s} for x in (1, 2, 3) for s in (7, 8)]
    assert [p.index for p in pts] == list(range(6))
    assert len({p.key for p in pts}) == 6


def test_toml_file_and_dict_give_the_same_grid(tmp_path: Path) -> None:
    f = tmp_path / "g.toml"
    f.write_text(
        'experiment = "send_cost"\nname = "cvl"\n[grid]\npolicy = ["copy", "loan"]\n'
        'size = ["4K", "16K"]\nncpus = [1, 2]\n[fixed]\nreuse = true\n'
    )
    from_file = load_grid(f)
    from_dict = Grid.from_dict({**SEND, "name": "cvl", "fixed": {"reuse": True}})
    assert from_file == from_dict
    assert from_file.experiment == "uvmloan.experiments:send_cost"
    assert Grid.from_dict(from_file.as_dict()) == from_file


@pytest.mark.parametrize(
    ("grid", "words"),
    [
        ({"grid": {"polcy": ["copy"]}}, ["'polcy'", "policy, size, ncpus"]),
        ({"grid": {"policy": ["cpy"], "size": [1]}}, ["'cpy'", "valid: copy, loan"]),
        ({"grid": {"policy": ["copy"], "size": [1], "profile": ["bsd"]}}, ["'bsd'", "netbsd-10"]),
        ({"grid": {"policy": ["copy"]}}, ["needs 'size'"]),
        ({"grid": {"policy": []}}, ["grid.policy", "non-empty list"]),
        ({"grid": {"policy": "copy"}}, ["grid.policy", "non-empty list"]),
        ({"grid": {"policy": ["copy", "copy"], "size": [1]}}, ["listed twice"]),
        ({"grid": {"size": [1]}, "fixed": {"size": 2, "policy": "copy"}}, ["both an axis"]),
        ({"grid": {"policy": ["copy"], "size": [1]}, "seeds": [1]}, ["takes no seed"]),
        ({"gird": {}}, ["'gird'", "valid keys: experiment, name, grid, fixed, seeds"]),
        ({"experiment": "sendcost"}, ["unknown experiment 'sendcost'", "send_cost"]),
        ({"experiment": "no_such_module:f"}, ["cannot be imported"]),
        ({"experiment": DRAW, "grid": {"x": [1]}, "name": ""}, ["name"]),
        ({"experiment": DRAW, "grid": {"x": [1], "seed": [{"a": object()}]}}, ["grid.seed"]),
    ],
)
def test_a_bad_grid_names_the_problem_and_the_choices(
    grid: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(SweepError) as ei:
        Grid.from_dict(grid)
    for w in words:
        assert w in str(ei.value)


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="no such sweep file"):
        load_grid(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid\n")
    with pytest.raises(SweepError, match="not valid TOML"):
        load_grid(bad)
    with pytest.raises(SweepError, match="is a directory"):
        load_grid(tmp_path)
    unk = tmp_path / "unk.toml"
    unk.write_text('[grid]\nwrite_size = ["4K"]\n')
    with pytest.raises(SweepError, match=r"unk\.toml: .*no parameter 'write_size'"):
        load_grid(unk)


def test_send_cost_sweep_writes_points_and_table_then_reuses_them(tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as ex:
        res = run_sweep(SEND, tmp_path, executor=ex, progress=False)
    assert (res.computed, res.reused, res.failed) == (8, 0, 0)
    assert len(list((tmp_path / "points").glob("*.json"))) == 8
    rows = _csv(tmp_path / "results.csv")
    assert [r["policy"] for r in rows] == ["copy"] * 4 + ["loan"] * 4
    assert [r["size"] for r in rows] == ["4K", "4K", "16K", "16K"] * 2
    # what the table holds is what send_cost answers for that point
    for r in rows:
        want = experiments.send_cost(r["policy"], r["size"], int(r["ncpus"]))  # type: ignore[arg-type]
        assert int(r["sender_ns"]) == want.sender_ns and int(r["ipis"]) == want.ipis
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    assert manifest["points"] == 8 and manifest["sweep"]["grid"]["ncpus"] == [1, 2]
    with ThreadPoolExecutor(2) as ex:
        again = run_sweep(SEND, tmp_path, executor=ex, progress=False)
    assert (again.computed, again.reused, again.failed) == (0, 8, 0)
    assert _csv(tmp_path / "results.csv") == rows


def test_a_failing_point_is_recorded_with_its_traceback_and_the_sweep_goes_on(
    tmp_path: Path,
) -> None:
    fx.FAIL_AT.add(2)
    grid = {"experiment": DRAW, "grid": {"x": [1, 2, 3]}, "seeds": [0]}
    with ThreadPoolExecutor(1) as ex:
        res = run_sweep(grid, tmp_path, executor=ex, progress=False)
    assert (res.computed, res.failed) == (3, 1)
    bad = [r for r in res.rows if r["status"] != "ok"]
    assert [r["x"] for r in bad] == [2]
    assert bad[0]["error"] == "ValueError: x = 2 is the bad point"
    rec = json.loads((tmp_path / "points" / f"{bad[0]['key']}.json").read_text())
    assert rec["status"] == "error" and "Traceback" in rec["traceback"]
    assert "raise ValueError" in rec["traceback"]
    assert [r["status"] for r in _csv(tmp_path / "results.csv")] == ["ok", "error", "ok"]
    # a rerun runs the failed point again (and only it) ...
    fx.FAIL_AT.clear()
    fx.CALLS.clear()
    with ThreadPoolExecutor(1) as ex:
        res2 = run_sweep(grid, tmp_path, executor=ex, progress=False)
    assert fx.CALLS == [(2, 0)] and (res2.computed, res2.reused, res2.failed) == (1, 2, 0)


def test_keep_failed_reuses_the_failure(tmp_path: Path) -> None:
    fx.FAIL_AT.add(1)
    grid = {"experiment": DRAW, "grid": {"x": [1]}, "seeds": [0]}
    with ThreadPoolExecutor(1) as ex:
        run_sweep(grid, tmp_path, executor=ex, progress=False)
        fx.CALLS.clear()
        res = run_sweep(grid, tmp_path, executor=ex, progress=False, retry_failed=False)
    assert fx.CALLS == [] and res.failed == 1 and res.reused == 1


def test_an_interrupted_sweep_resumes_with_the_points_not_done(tmp_path: Path) -> None:
    grid = {"experiment": DRAW, "grid": {"x": list(range(8))}, "seeds": [3]}
    fx.INTERRUPT_AT.add(4)
    with ThreadPoolExecutor(1) as ex, pytest.raises(KeyboardInterrupt):
        run_sweep(grid, tmp_path, executor=ex, progress=False)
    done = {json.loads(p.read_text())["params"]["x"] for p in (tmp_path / "points").glob("*.json")}
    assert 4 not in done and done <= {0, 1, 2, 3, 5, 6, 7}
    assert not (tmp_path / "results.csv").exists()
    fx.INTERRUPT_AT.clear()
    fx.CALLS.clear()
    with ThreadPoolExecutor(1) as ex:
        res = run_sweep(grid, tmp_path, executor=ex, progress=False)
    # exactly the points without a file ran, each once
    assert sorted(x for x, _ in fx.CALLS) == sorted(set(range(8)) - done)
    assert (res.computed, res.reused, res.failed) == (8 - len(done), len(done), 0)
    want = [random.Random(f"{x}/3").randrange(1 << 30) for x in range(8)]
    assert [r["draw"] for r in res.rows] == want


def test_seeds_are_explicit_and_results_repeat(tmp_path: Path) -> None:
    grid = {"experiment": DRAW, "grid": {"x": [5]}, "seeds": [1, 2], "fixed": {"scale": 3}}
    with ThreadPoolExecutor(2) as ex:
        a = run_sweep(grid, tmp_path / "a", executor=ex, progress=False)
        b = run_sweep(grid, tmp_path / "b", executor=ex, progress=False)
    assert [r["seed"] for r in a.rows] == [1, 2]
    assert [r["draw"] for r in a.rows] == [r["draw"] for r in b.rows]
    assert a.rows[0]["draw"] != a.rows[1]["draw"]
    assert a.rows[0]["draw"] == random.Random("5/1").randrange(1 << 30) * 3


def test_a_result_that_is_not_a_record_is_a_failure(tmp_path: Path) -> None:
    grid = {"experiment": "sweep_fixtures:returns_object", "grid": {"x": [1]}}
    with ThreadPoolExecutor(1) as ex:
        res = run_sweep(grid, tmp_path, executor=ex, progress=False)
    assert res.failed == 1 and "return an attrs class, a dict or a number" in res.rows[0]["error"]


def test_the_default_executor_is_a_process_pool(tmp_path: Path) -> None:
    grid = {"grid": {"policy": ["copy", "loan"], "size": ["8K"]}}
    res = run_sweep(grid, tmp_path, max_workers=2, progress=False)
    assert res.ok and res.computed == 2
    assert [r["loan_breaks"] for r in res.rows] == [0, 0]
    assert res.rows[1]["shootdown_rounds"] == experiments.send_cost("loan", "8K").shootdown_rounds


def test_plain_progress_lines_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = {"experiment": DRAW, "grid": {"x": [1, 2]}, "seeds": [0], "name": "demo"}
    with ThreadPoolExecutor(1) as ex:
        run_sweep(grid, tmp_path, executor=ex)
    out = capsys.readouterr().out
    assert "demo: 2 points of sweep_fixtures:draw: 0 reused, 2 to run" in out
    assert "demo: [1/2] x=" in out and "demo: [2/2] x=" in out
    assert "demo: 2 computed, 0 reused, 0 failed" in out


def test_a_python_function_can_be_the_experiment(tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as ex:
        res = run_sweep(
            {"grid": {"x": [2]}, "seeds": [0]},
            tmp_path,
            executor=ex,
            progress=False,
            experiment=fx.draw,
        )
    assert res.ok and res.rows[0]["x_squared"] == 4


def test_parquet_when_pyarrow_is_there(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    with ThreadPoolExecutor(1) as ex:
        run_sweep(
            {"experiment": DRAW, "grid": {"x": [1, 2]}, "seeds": [0]},
            tmp_path,
            executor=ex,
            progress=False,
        )
    assert pq.read_table(tmp_path / "results.parquet").num_rows == 2


def test_dask_local_cluster(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    from uvmloan.sweep import dask_executor

    grid = {"experiment": DRAW, "grid": {"x": [1, 2]}, "seeds": [4, 4.5]}
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        dask_executor(cluster.scheduler_address) as ex,
    ):
        res = run_sweep(grid, tmp_path, executor=ex, progress=False)
    assert res.ok and res.computed == 4
    want = [random.Random(f"{x}/{s}").randrange(1 << 30) for x in (1, 2) for s in (4, 4.5)]
    assert [r["draw"] for r in res.rows] == want


def test_the_shipped_example_sweep_file_loads() -> None:
    g = load_grid(Path(__file__).resolve().parent.parent / "docs" / "sweeps" / "copy-vs-loan.toml")
    assert g.name == "copy-vs-loan" and len(g.points()) == 2 * 4 * 3
    assert dict(g.fixed) == {"reuse": True, "profile": "netbsd-10"}


class _TTYOS:
    """``os`` for uvmloan._sweep_out, with stdout a terminal."""

    def __getattr__(self, name: str) -> Any:
        import os

        return getattr(os, name)

    def isatty(self, fd: int) -> bool:
        return True


def test_rich_progress_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("rich")
    import uvmloan._sweep_out

    # the sweep asks whether stdout is a terminal; rich then draws its bar
    monkeypatch.setattr(uvmloan._sweep_out, "os", _TTYOS())
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    fx.FAIL_AT.add(2)
    grid = {"experiment": DRAW, "grid": {"x": [1, 2]}, "seeds": [0], "name": "bar"}
    with ThreadPoolExecutor(1) as ex:
        res = run_sweep(grid, tmp_path, executor=ex)
    assert res.failed == 1
    text = capsys.readouterr().out
    assert "bar: 2 points" in text and "point 1 failed: x=2 seed=0" in text
    assert "[1/2]" not in text  # the bar, not the plain lines
