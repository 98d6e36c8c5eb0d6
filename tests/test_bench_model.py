"""benchmarks/model.py keeps running: its quick mode at a tiny size, then
--compare against the run it wrote (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("_bench_model", BENCH / "model.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # importing measures nothing
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_model_benchmark_quick_tiny_runs_and_compares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _load()
    out = tmp_path / "model.json"
    sys.path.insert(0, str(BENCH))  # the physmem rows reuse benchmarks/physmem.py
    try:
        assert model.main(["--quick", "--tiny", "--no-markdown", "--out", str(out)]) == 0
    finally:
        sys.path.remove(str(BENCH))
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["repeats"] >= 5
    rows = model.rows(r)
    whats = [x["what"] for x in rows]
    assert any("LoanStateMachine" in w for w in whats)
    assert any("Process.write" in w for w in whats)
    assert all(x["now"] for x in rows)
    for name in ("LoanStateMachine", "VMStateMachine", "PmapStateMachine"):
        assert r["state_machines"][name]["steps"] > 0
    capsys.readouterr()
    assert model.main(["--compare", "--compare-with", str(out), "--compare-to", str(out)]) == 0
    text = capsys.readouterr().out
    assert "before" in text and "after/before" in text
