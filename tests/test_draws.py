"""uvmloan.testing.draws.draw: the same values as DataObject.draw, and a
failing example still lists every labelled draw."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvmloan.testing.draws import draw


def test_a_failure_report_lists_the_labelled_draws() -> None:
    @settings(database=None, derandomize=True)
    @given(st.data())
    def t(data: st.DataObject) -> None:
        x = draw(data, st.integers(0, 100), "x")
        y = draw(data, st.integers(0, 100), "y")
        assert x + y < 50

    with pytest.raises(AssertionError) as info:
        t()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Draw 1 (x): 0" in notes
    assert "Draw 2 (y): 50" in notes


def test_the_values_are_those_of_data_draw() -> None:
    seen: dict[str, list[tuple[int, ...]]] = {"fast": [], "plain": []}

    def body(data: st.DataObject, fast: bool) -> None:
        vals = tuple(
            draw(data, st.integers(0, 1000), f"v{i}")
            if fast
            else data.draw(st.integers(0, 1000), label=f"v{i}")
            for i in range(4)
        )
        seen["fast" if fast else "plain"].append(vals)

    def run(fast: bool) -> None:
        @settings(database=None, derandomize=True, max_examples=30)
        @given(st.data())
        def t(data: st.DataObject) -> None:
            body(data, fast)

        t()

    run(True)
    run(False)
    assert seen["fast"] == seen["plain"]


def test_draw_int_draws_nothing_for_a_single_value_and_stays_in_range() -> None:
    from uvmloan.testing.draws import draw_int

    @settings(database=None, derandomize=True, max_examples=40)
    @given(st.data(), st.integers(-5, 5), st.integers(0, 4))
    def t(data: st.DataObject, lo: int, width: int) -> None:
        before = data.conjecture_data.length
        if width == 0:
            assert draw_int(data, lo, lo, "one") == lo
            assert data.conjecture_data.length == before
        else:
            v = draw_int(data, lo, lo + width, "some")
            assert lo <= v <= lo + width
            assert data.conjecture_data.length > before

    t()
