"""``expect_error = "InvariantViolation:I3"``: a scenario names the invariant
that must fire, and fails when another one does (issue: hunts that accept
any failure)."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from uvmloan.testing.scenario import ScenarioFailure, run_scenario

INJECT_CAUGHT = Path(__file__).parent.parent / "specs/scenarios/loan/inject-caught.toml"


def _scenario() -> dict[str, Any]:
    with INJECT_CAUGHT.open("rb") as f:
        return tomllib.load(f)


def _expects(sc: dict[str, Any]) -> list[dict[str, Any]]:
    return [st for st in sc["step"] if str(st.get("expect_error", "")).startswith("Invariant")]


def test_inject_caught_names_its_invariants() -> None:
    sc = _scenario()
    assert [st["expect_error"] for st in _expects(sc)] == [
        "InvariantViolation:I3",
        "InvariantViolation:TLB1",
    ]
    run_scenario(sc)


@pytest.mark.parametrize(("which", "wrong"), [(0, "TLB1"), (1, "I3"), (1, "I4")])
def test_another_invariant_firing_fails_the_scenario(which: int, wrong: str) -> None:
    sc = copy.deepcopy(_scenario())
    _expects(sc)[which]["expect_error"] = f"InvariantViolation:{wrong}"
    with pytest.raises(ScenarioFailure, match="expected InvariantViolation:" + wrong):
        run_scenario(sc)
