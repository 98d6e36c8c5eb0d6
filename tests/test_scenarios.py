"""Every executable scenario under specs/scenarios/ (recursively), one test each.

A scenario whose ``[scenario] xfail`` names a known bug is expected to fail
(strictly: when the bug is fixed the test reports XPASS and fails, so the
marker must be removed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from uvmloan.testing.scenario import load_scenario, run_scenario, scenario_files

ROOT = Path(__file__).resolve().parent.parent / "specs" / "scenarios"
FILES = scenario_files(ROOT)


def _param(path: Path) -> object:
    rel = path.relative_to(ROOT).as_posix()
    marks = []
    try:
        sc = load_scenario(path)
    except Exception:  # a malformed file fails in the test body, with its message
        sc = None
    if sc is not None and sc.xfail:
        marks.append(pytest.mark.xfail(strict=True, reason=sc.xfail))
    return pytest.param(path, id=rel, marks=marks)


def test_scenarios_exist() -> None:
    assert any(p.parent.name == "vm" for p in FILES), f"no scenarios found under {ROOT}"


@pytest.mark.parametrize("path", [_param(p) for p in FILES])
def test_scenario(path: Path) -> None:
    ctx = run_scenario(path)
    ctx.machine.close()


def test_scenario_names_are_unique() -> None:
    names: dict[str, Path] = {}
    for p in FILES:
        name = load_scenario(p).name
        assert name not in names, f"{p} and {names[name]} are both named {name!r}"
        names[name] = p
