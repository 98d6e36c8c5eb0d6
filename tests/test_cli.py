"""The ``uvmloan`` command as a user meets it: the demo at every size, sizes
with suffixes, arguments checked up front with argparse errors and no
traceback for any user error, the demo's words from the trace vocabulary,
and a compare.json that reproduces itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from uvmloan import experiments
from uvmloan.cli import DEMO_MAX_SIZE, main
from uvmloan.profile import get_profile
from uvmloan.trace import _BY_NAME, read_header, read_jsonl

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("size", ["1", "100", "4096", "4097", "5000", "5025", "12388", "64K"])
def test_demo_runs_at_every_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], size: str
) -> None:
    assert main(["tour", "--out", str(tmp_path), "--size", size, "--ncpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "borrower reads the original bytes: True" in out
    assert "sender reads its own write: True" in out
    assert "the borrower still reads the original bytes: True" in out
    n = int(size[:-1]) * 1024 if size.endswith("K") else int(size)
    assert f"sender filled {n} bytes" in out


def test_demo_on_one_cpu_and_with_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["tour", "--out", str(tmp_path), "--ncpus", "1", "--size", "1M", "--memory", "3M"]
    assert main(argv) == 0
    assert "768 pages of 4096 B" in capsys.readouterr().out


def test_demo_speaks_the_trace_vocabulary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tour", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    texts = re.findall(r"^\s+t=\s*\d+ ns cpu\d+  (.*)$", out, flags=re.M)
    assert len(texts) > 5
    for text in texts:
        name = text.split(":")[0].split(" (")[0]
        if name.startswith("loan ") and name.endswith("->K"):
            name = "loan"  # "loan A->K: ..." names the event and its kind
        assert name in _BY_NAME, text
    for retired in ("shootdown round", "tlbshoot round", "IPI "):
        assert retired not in out
    assert "TLB shootdown: CPU 0 -> CPUs [0, 1]" in out
    assert "to broadcast" in out
    # The trace it wrote reads back, header first, with the events it counted.
    path = tmp_path / "demo-trace.jsonl"
    assert read_header(path)["ncpus"] == 2
    n = int(re.search(r"(\d+) events written", out).group(1))  # type: ignore[union-attr]
    assert len(read_jsonl(path)) == n


def test_demo_prints_a_bounded_number_of_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tour", "--out", str(tmp_path), "--size", "256K"]) == 0
    out = capsys.readouterr().out
    assert "more (all of them are in the trace)" in out
    assert len(out.splitlines()) < 80


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tour", "--size", "0"], "size must be positive"),
        (["tour", "--size", "lots"], "cannot parse size 'lots'"),
        (["tour", "--size", "-5"], "cannot parse size"),
        (["tour", "--size", "100G"], "the tour lends at most 64M"),
        (["tour", "--ncpus", "0"], "a CPU count is from 1 to 256"),
        (["tour", "--ncpus", "two"], "expected a CPU count"),
        (["tour", "--size", "1M", "--memory", "1M"], "too small for --size 1M"),
        (["tour", "--memory", "16385"], "not a multiple of the page size"),
        (["tour", "--memory", "1T"], "cannot parse size"),
        (["tour", "--memory", "8G"], "at most 4G"),
        (["compare", "--sizes", "4K,0"], "size must be positive"),
        (["compare", "--sizes", ","], "expected sizes"),
        (["compare", "--sizes", "1G"], "1G is more than 64M"),
        (["compare", "--cpus", "0"], "a CPU count is from 1 to 256"),
        (["compare", "--cpus", "1,x"], "expected a CPU count"),
        (["compare", "--cost", "copy_bw"], "expected NAME=INT"),
        (["compare", "--cost", "copy_bw=fast"], "expected NAME=INT"),
        (["compare", "--cost", "nope=1"], "unknown cost field"),
        (["compare", "--cost", "copy_bw=-1"], "copy_bw must be >= 0"),
        (["compare", "--profile", "netbsd-1"], "unknown profile 'netbsd-1'"),
        ([], "required"),
    ],
)
def test_user_errors_are_argparse_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out_dir = tmp_path / "out"
    full = [*argv, "--out", str(out_dir)] if argv else argv
    with pytest.raises(SystemExit) as exc:
        main(full)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err, err
    assert "Traceback" not in err
    # Nothing was run: no trace and no data were written.
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize("cmd", ["tour", "compare"])
def test_an_unwritable_out_is_an_error_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cmd: str
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for bad in (blocker / "sub", blocker):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--out", str(bad)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"--out '{bad}': cannot write there" in err
    assert capsys.readouterr().out == ""  # no work started


@pytest.mark.parametrize(
    "argv",
    [
        ["tour", "--size", "100G"],
        ["tour", "--out", "/proc/uvmloan-cannot-write-here"],
        ["compare", "--cost", "copy_bw=fast"],
    ],
)
def test_no_traceback_from_the_real_command(tmp_path: Path, argv: list[str]) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "uvmloan", *argv],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "error:" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_compare_json_reproduces_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", "--sizes", "4K,8K", "--cpus", "1,2", "--reuse", "--cost", "copy_bw=500"]
    assert main([*argv, "--out", str(tmp_path), "--no-plot"]) == 0
    rec = json.loads((tmp_path / "compare.json").read_text())
    assert rec["schema"] == 1 and rec["model_version"] == "0.1.0"
    assert rec["backend"] in ("c", "python")
    assert rec["command"][:len(argv) + 1] == ["uvmloan", *argv]
    sw = rec["sweep"]
    assert sw == {
        "sizes": [4096, 8192],
        "cpus": [1, 2],
        "reuse": True,
        "profile": "netbsd-10",
        "profile_overrides": {"costs": {"copy_bw": 500}},
    }
    assert rec["profile"]["costs"]["copy_bw"] == 500
    assert rec["profile"]["name"] == "netbsd-10"
    expected = get_profile("netbsd-10", costs={"copy_bw": 500})
    assert rec["profile"]["tp_maxva"] == expected.tp_maxva
    again = [p.as_dict() for p in experiments.sweep(**sw)]
    assert again == rec["points"] and len(again) == 8
    assert not (tmp_path / "compare.png").exists()
    capsys.readouterr()


def test_plot_has_one_column_per_cpu_count_and_both_costs() -> None:
    pytest.importorskip("matplotlib")
    pts = experiments.sweep([4096, 16384], [1, 2, 4])
    fig = experiments.figure(pts)
    assert len(fig.axes) == 6  # 2 rows (sending CPU, all CPUs) x 3 CPU counts
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == ["1 CPU", "2 CPUs", "4 CPUs"]
    assert fig.axes[0].get_ylabel().endswith("sending CPU")
    assert fig.axes[3].get_ylabel().endswith("all CPUs")
    for ax in fig.axes:
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert set(lines) == {"copy", "loan"}
        # Equal costs stay visible: a hollow large square under a small dot.
        assert lines["copy"].get_markerfacecolor() == "none"
        assert lines["copy"].get_markersize() > lines["loan"].get_markersize()
    # The bottom row is the total: on 4 CPUs the loan's total exceeds its sender cost.
    loan4 = [p for p in pts if p.ncpus == 4 and p.policy == "loan"]
    y_total = sorted(fig.axes[5].get_lines()[1].get_ydata())
    assert y_total == sorted(p.total_ns for p in loan4)
    assert all(p.total_ns > p.sender_ns for p in loan4)


def test_demo_max_size_is_what_the_help_says() -> None:
    assert DEMO_MAX_SIZE == 64 << 20


def test_the_python_api_takes_sizes_with_suffixes_too() -> None:
    assert experiments.send_cost("copy", "8K", 2) == experiments.send_cost("copy", 8192, 2)
    assert [p.size for p in experiments.sweep(["4K"], [1])] == [4096, 4096]
    with pytest.raises(ValueError, match="cannot parse size 'big'"):
        experiments.send_cost("copy", "big")
