"""``uvmloan sweep``, ``uvmloan trace summary|perfetto`` and ``uvmloan check``
as a user meets them: exit status 0 on success, 1 when a point or a
machine failed, 2 with a message naming the problem and the valid choices
for every user error, never a traceback, and help that shows examples."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from uvmloan import Machine
from uvmloan.cli import main
from uvmloan.trace import read_jsonl
from uvmloan.trace_summary import summarize

ROOT = Path(__file__).resolve().parent.parent
GRID = """\
experiment = "send_cost"
name = "cvl"
[grid]
policy = ["copy", "loan"]
size = ["4K"]
ncpus = [1, 2]
"""


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture
def trace_file(tmp_path: Path) -> tuple[Path, Machine]:
    path = tmp_path / "run.jsonl"
    m = Machine(ncpus=2, memory="4M", trace="record", trace_file=path)
    p = m.spawn("s", cpu=0)
    buf = p.mmap(3 * 4096)
    p.write(buf, b"a" * 3 * 4096)
    p.read(buf, 3 * 4096, cpu=1)
    kl = m.kernel_loan(p, buf, 3 * 4096)
    p.write(buf, b"b", cpu=1)
    kl.release()
    m.close()
    return path, m


# ------------------------------------------------------------------ sweep


def test_sweep_runs_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "g.toml"
    f.write_text(GRID)
    out = tmp_path / "out"
    argv = ["sweep", str(f), "--out", str(out), "--executor", "thread", "--workers", "2"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "cvl: 4 points of uvmloan.experiments:send_cost: 0 reused, 4 to run" in text
    assert (out / "results.csv").read_text().count("\n") == 5
    assert main(argv) == 0
    assert "0 computed, 4 reused, 0 failed" in capsys.readouterr().out


def test_sweep_default_out_is_named_after_the_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("g.toml").write_text(GRID.replace("ncpus = [1, 2]", "ncpus = [1]"))
    assert main(["sweep", "g.toml", "--executor", "thread", "--no-progress"]) == 0
    assert (tmp_path / "out" / "cvl" / "results.csv").exists()
    assert capsys.readouterr().out == ""


def test_sweep_with_a_failing_point_exits_1_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "g.toml"
    # a profile override send_cost refuses at run time: a per-point failure
    f.write_text(GRID + "[fixed]\nprofile_overrides = { costs = { no_such_cost = 1 } }\n")
    assert main(["sweep", str(f), "--out", str(tmp_path / "o"), "--executor", "thread"]) == 1
    out = capsys.readouterr().out
    assert "4 point(s) failed:" in out and "no_such_cost" in out
    assert "points/" in out


@pytest.mark.parametrize(
    ("content", "argv_extra", "words"),
    [
        (None, [], ["no such sweep file"]),
        ("[grid\n", [], ["not valid TOML"]),
        (GRID.replace("policy", "polcy"), [], ["no parameter 'polcy'", "policy, size, ncpus"]),
        (GRID.replace('"loan"', '"lend"'), [], ["'lend'", "valid: copy, loan"]),
        (GRID.replace("send_cost", "sendcost"), [], ["unknown experiment 'sendcost'"]),
        (GRID, ["--executor", "ray"], ["--executor 'ray'", "process, thread, dask"]),
        (GRID, ["--executor", "dask"], ["needs one ADDRESS"]),
        (GRID, ["--executor", "thread", "x"], ["takes no address"]),
        (GRID, ["--workers", "0"], ["--workers must be at least 1"]),
    ],
)
def test_sweep_user_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    argv_extra: list[str],
    words: list[str],
) -> None:
    f = tmp_path / "g.toml"
    if content is not None:
        f.write_text(content)
    err = _error(capsys, ["sweep", str(f), "--out", str(tmp_path / "o"), *argv_extra])
    assert "uvmloan sweep: error:" in err
    for w in words:
        assert w in err


def test_sweep_on_dask_local(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    f = tmp_path / "g.toml"
    f.write_text(GRID)
    argv = ["sweep", str(f), "--out", str(tmp_path / "o"), "--executor", "dask", "local"]
    assert main(argv) == 0
    assert "4 computed, 0 reused, 0 failed" in capsys.readouterr().out


# ------------------------------------------------------------------ trace


def test_trace_summary(
    trace_file: tuple[Path, Machine], capsys: pytest.CaptureFixture[str]
) -> None:
    path, m = trace_file
    assert main(["trace", "summary", str(path)]) == 0
    out = capsys.readouterr().out
    row = re.search(r"^  loan\s+([\d,]+)$", out, re.M)
    assert row is not None and int(row.group(1)) == m.counters["loan"] == 3
    assert "bytes lent: 12,288; bytes copied to break loans: 4,096" in out
    assert main(["trace", "summary", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {k: m.counters[k] for k in data["counts"]}
    assert data == summarize(read_jsonl(path)).as_dict()


def test_trace_perfetto(
    trace_file: tuple[Path, Machine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = trace_file
    assert main(["trace", "perfetto", str(path)]) == 0
    default = path.with_name("run.perfetto.json")
    doc = json.loads(default.read_text())
    assert doc["displayTimeUnit"] == "ns" and doc["traceEvents"]
    assert f"written to {default}" in capsys.readouterr().out
    out = tmp_path / "sub" / "t.json.gz"
    assert main(["trace", "perfetto", str(path), "-o", str(out), "--no-detail"]) == 0
    assert out.exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ["no such trace file"]),
        ("not json\n", ["not JSON", "starts with a header"]),
        ('{"ev": "loan"}\n', ["first record is not a trace header"]),
        ("", ["empty trace file"]),
        ('{"ev": "header", "schema": 99}\n', ["trace schema 99"]),
    ],
)
@pytest.mark.parametrize("sub", ["summary", "perfetto"])
def test_trace_user_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    words: list[str],
    sub: str,
) -> None:
    f = tmp_path / "t.jsonl"
    if content is not None:
        f.write_text(content)
    err = _error(capsys, ["trace", sub, str(f)])
    assert f"uvmloan trace {sub}: error:" in err
    for w in words:
        assert w in err


def test_trace_bad_records_and_segments(
    trace_file: tuple[Path, Machine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = trace_file
    broken = tmp_path / "broken.jsonl"
    broken.write_text(path.read_text().splitlines()[0] + '\n{"ev": "no such event"}\n')
    err = _error(capsys, ["trace", "summary", str(broken)])
    assert "broken.jsonl:2" in err and "unknown trace event 'no such event'" in err
    err = _error(capsys, ["trace", "perfetto", str(path), "--segments", str(tmp_path / "x")])
    assert "--segments" in err and "no such file" in err
    err = _error(capsys, ["trace", "frobnicate", str(path)])
    assert "invalid choice: 'frobnicate'" in err and "summary" in err
    err = _error(capsys, ["trace", "summary", str(tmp_path)])
    assert "is a directory" in err


# ------------------------------------------------------------------ check


def test_check_a_small_run_passes(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "--machine", "pmap", "--examples", "2", "--steps", "5", "--seed", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "pmap: PmapStateMachine, up to 2 examples of up to 5 steps, seed 3" in out
    assert "pmap: passed" in out


def test_check_finds_an_injected_bug_and_prints_the_program(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "check",
        "--machine",
        "loan",
        "--inject",
        "skip-loan-protect",
        "--seed",
        "1",
        "--examples",
        "300",
        "--no-shrink",
    ]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "loan: FAILED after" in out
    assert "state = LoanStateMachine()" in out
    assert "@reproduce_failure(" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--machine", "tcp"], ["--machine 'tcp'", "loan, vm, pmap, socket, all"]),
        (["--inject", "nope"], ["--inject 'nope'", "skip-loan-protect"]),
        (["--machine", "socket", "--inject", "skip-loan-protect"], ["free-loaned-early"]),
        (["--examples", "0"], ["--examples must be at least 1"]),
        (["--steps", "0"], ["--steps must be at least 1"]),
        (["--seed", "-1"], ["--seed must be a non-negative int"]),
        (["--examples", "many"], ["invalid int value: 'many'"]),
    ],
)
def test_check_user_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    err = _error(capsys, ["check", *argv])
    for w in words:
        assert w in err


def test_check_socket_machine_is_imported_only_when_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "--machine", "socket", "--examples", "1", "--steps", "3"]) == 0
    assert "socket: passed" in capsys.readouterr().out


def test_the_model_does_not_import_the_stack() -> None:
    code = (
        "import sys, uvmloan, uvmloan.sweep, uvmloan.perfetto, uvmloan.trace_summary, "
        "uvmloan.research_cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'netstack')\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["sweep", "--help"], ["[grid]", "[fixed]", "examples:", "resume", "dask"]),
        (["trace", "--help"], ["summary", "perfetto", "examples:", "ui.perfetto.dev"]),
        (["trace", "perfetto", "--help"], ["--segments", "async slices"]),
        (["check", "--help"], ["paste", "@reproduce_failure", "--inject", "examples:"]),
    ],
)
def test_help_teaches(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 0
    out = capsys.readouterr().out
    for w in words:
        assert w in out


def test_sweep_interrupted_on_a_process_pool_exits_130_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sweep_fixtures as fx

    f = tmp_path / "g.toml"
    f.write_text(
        'experiment = "sweep_fixtures:draw"\nseeds = [0]\n[grid]\nx = [0, 1, 2, 3, 4, 5]\n'
    )
    argv = [
        "sweep",
        str(f),
        "--out",
        str(tmp_path / "o"),
        "--executor",
        "process",
        "--workers",
        "1",
    ]
    fx.INTERRUPT_AT.add(3)  # the forked worker raises KeyboardInterrupt at x = 3
    try:
        assert main(argv) == 130
    finally:
        fx.INTERRUPT_AT.clear()
    err = capsys.readouterr().err
    assert "interrupted" in err and "run the same command to resume" in err
    done = len(list((tmp_path / "o" / "points").glob("*.json")))
    assert done < 6
    assert main(argv) == 0
    assert f"{6 - done} computed, {done} reused, 0 failed" in capsys.readouterr().out
