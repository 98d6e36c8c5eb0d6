"""copy_page and copy_pages are bound per arena (with the C backend, to
uvmloan._physmem_fast): every argument form and error behaves as the Python
methods behind them, on both backends, and a bound copy never outlives the
arena."""

from __future__ import annotations

import array
import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from uvmloan.errors import FrameRangeError, PhysMemTypeError, PhysMemValueError
from uvmloan.physmem import PhysMem, available_backends

PS = 4096
N = 8


class Idx:
    """An object cffi takes as an int (``__int__``), not an ``int``."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __int__(self) -> int:
        return self.v


class SubInt(int):
    pass


def fresh(backend: str) -> PhysMem:
    m = PhysMem(N, PS, backend=backend)
    for f in range(N):
        m.fill_page(f, f + 1)
    return m


def outcome(fn: Callable[[PhysMem], object], backend: str) -> tuple[Any, list[bytes]]:
    """What ``fn`` did: its result or (exception class, message), and the frames."""
    with fresh(backend) as m:
        try:
            res: Any = ("ok", fn(m))
        except Exception as e:  # compared across backends
            res = (type(e), str(e))
        return res, [m.read_frame(f) for f in range(N)]


CALLS: list[tuple[str, Callable[[PhysMem], object]]] = [
    ("ints", lambda m: m.copy_page(1, 2)),
    ("same frame", lambda m: m.copy_page(3, 3)),
    ("bools", lambda m: m.copy_page(True, False)),
    ("int subclass", lambda m: m.copy_page(SubInt(4), SubInt(5))),
    ("__int__", lambda m: m.copy_page(Idx(1), Idx(6))),  # type: ignore[arg-type]
    ("keywords", lambda m: m.copy_page(src=2, dst=7)),
    ("one keyword", lambda m: m.copy_page(2, dst=0)),
    ("negative", lambda m: m.copy_page(-1, 2)),
    ("too high", lambda m: m.copy_page(1, N)),
    ("huge", lambda m: m.copy_page(1, 2**70)),
    ("float", lambda m: m.copy_page(1.0, 2)),  # type: ignore[arg-type]
    ("str", lambda m: m.copy_page("1", 2)),  # type: ignore[arg-type]
    ("too few", lambda m: m.copy_page(1)),  # type: ignore[call-arg]
    ("too many", lambda m: m.copy_page(1, 2, 3)),  # type: ignore[call-arg]
    ("batch list", lambda m: m.copy_pages([0, 1, 2], [5, 6, 7])),
    ("batch tuple", lambda m: m.copy_pages((0, 1), (6, 7))),
    ("batch empty", lambda m: m.copy_pages([], [])),
    ("batch overlap in order", lambda m: m.copy_pages([0, 1], [1, 2])),
    ("batch long", lambda m: m.copy_pages([0] * 100, [1 + i % 7 for i in range(100)])),
    ("batch array", lambda m: m.copy_pages(array.array("q", [1, 2]), array.array("q", [3, 4]))),
    ("batch range", lambda m: m.copy_pages(range(2), range(4, 6))),
    ("batch bools", lambda m: m.copy_pages([True], [False])),
    ("batch int subclass", lambda m: m.copy_pages([SubInt(1)], [SubInt(2)])),
    ("batch bad in middle", lambda m: m.copy_pages([1, 2, 3], [4, 99, 5])),
    ("batch bad long", lambda m: m.copy_pages([1] * 70 + [-1], [2] * 71)),
    ("batch lengths", lambda m: m.copy_pages([1, 2], [3])),
    ("batch float", lambda m: m.copy_pages([1.0], [2])),  # type: ignore[list-item]
    ("batch huge", lambda m: m.copy_pages([2**64], [2])),
    ("batch not a sequence", lambda m: m.copy_pages(5, [2])),  # type: ignore[arg-type]
    ("batch bytes", lambda m: m.copy_pages(b"\x01", [2])),
    ("batch keywords", lambda m: m.copy_pages(srcs=[1], dsts=[2])),
]


@pytest.mark.parametrize("fn", [c[1] for c in CALLS], ids=[c[0] for c in CALLS])
def test_bound_copies_behave_as_the_twin(fn: Callable[[PhysMem], object]) -> None:
    results = {be: outcome(fn, be) for be in available_backends()}
    first = next(iter(results.values()))
    for be, got in results.items():
        assert got == first, be


def test_bound_copies_move_the_bytes_and_check_first() -> None:
    for be in available_backends():
        with fresh(be) as m:
            m.copy_page(1, 2)
            assert m.read_frame(2) == bytes([2]) * PS
            with pytest.raises(FrameRangeError, match="copy_pages: dsts"):
                m.copy_pages([3, 4], [5, N])
            assert m.read_frame(5) == bytes([6]) * PS  # nothing was copied


@pytest.mark.parametrize("backend", available_backends())
def test_a_bound_copy_after_close_reports_the_closed_arena(backend: str) -> None:
    m = fresh(backend)
    cp, cps = m.copy_page, m.copy_pages
    m.close()
    with pytest.raises(PhysMemValueError, match="copy_page: the PhysMem is closed"):
        cp(1, 2)
    with pytest.raises(PhysMemValueError, match="copy_pages: the PhysMem is closed"):
        cps([1], [2])
    with pytest.raises(PhysMemValueError, match="closed"):
        m.copy_page(1, 2)


@pytest.mark.parametrize("backend", available_backends())
def test_a_dropped_arena_is_freed_without_a_collection(backend: str) -> None:
    # the bound copies hold their PhysMem weakly: no reference cycle
    gc.disable()
    try:
        m = fresh(backend)
        ref = weakref.ref(m)
        del m
        assert ref() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("backend", available_backends())
def test_a_bound_copy_kept_past_its_physmem(backend: str) -> None:
    m = fresh(backend)
    cp = m.copy_page
    del m
    gc.collect()
    # the arena may live on with the bound copy (C) or not; either way the
    # call is safe and either copies or reports the closed arena
    try:
        cp(1, 2)
    except PhysMemValueError as e:
        assert "closed" in str(e)


def test_type_errors_name_the_argument() -> None:
    for be in available_backends():
        with fresh(be) as m, pytest.raises(PhysMemTypeError, match="src must be an int, not"):
            m.copy_page(1.5, 2)  # type: ignore[arg-type]
