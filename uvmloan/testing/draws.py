"""``draw(data, strategy, label)``: ``data.draw(strategy, label=label)`` at a
fraction of the cost when nothing will be printed.

``DataObject.draw`` numbers and labels every draw, saves and compares the
global ``random`` state around it (to warn about strategies that use it) and
checks whether to note the value, on every call.  Only the note is ever seen,
and only in the final (reporting) run of a failing example or at verbose
verbosity: there this helper calls ``data.draw`` itself, so failure reports
list every draw as before.  Elsewhere it draws straight from the
underlying ``ConjectureData``: the same choices, so the same examples, and
the same shrinking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

_should_note: Callable[[], bool] | None
try:
    from hypothesis.control import should_note as _should_note
except ImportError:  # pragma: no cover - an older hypothesis: always the full path
    _should_note = None

__all__ = ["draw", "draw_int"]

T = TypeVar("T")


def draw(data: st.DataObject, strategy: SearchStrategy[T], label: str) -> T:
    """One draw from ``strategy`` through ``data`` (labelled when printed)."""
    fast: Any = getattr(data, "_uvmloan_fast", None)
    if fast is None:
        # once per example: the build context and verbosity do not change
        fast = _should_note is not None and hasattr(data, "conjecture_data") and not _should_note()
        data._uvmloan_fast = fast  # type: ignore[attr-defined]
    if fast:
        data.count += 1
        result: T = data.conjecture_data.draw(strategy)
        return result
    return data.draw(strategy, label=label)


def draw_int(data: st.DataObject, lo: int, hi: int, label: str) -> int:
    """An int in [lo, hi]; when that is one value, no choice is drawn (a
    range that shrank to one page, a machine of one CPU): the example costs
    one recorded choice less, and the value is what the draw would give."""
    if lo == hi:
        return lo
    return draw(data, st.integers(lo, hi), label)
