"""copy_page, copy_pages, copyin1, cksum_sum, cksum_bytes, gather_cksum and
gather_frame are bound per arena (with the C backend, to uvmloan._physmem_fast): every
argument form and error behaves as the Python methods behind them, on both
backends, and a bound call never outlives the arena."""

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
    ("zero_page", lambda m: m.zero_page(3)),
    ("zero_page bool", lambda m: m.zero_page(True)),
    ("zero_page bad frame", lambda m: m.zero_page(N)),
    ("zero_page float", lambda m: m.zero_page(1.0)),  # type: ignore[arg-type]
    ("zero_page keyword", lambda m: m.zero_page(frame=2)),
    # copyin1: one frame of a user store
    ("copyin1 bytes", lambda m: m.copyin1(3, 100, b"abc")),
    ("copyin1 to the page end", lambda m: m.copyin1(3, PS - 2, b"yz")),
    ("copyin1 empty", lambda m: m.copyin1(3, 5, b"")),
    ("copyin1 bytearray", lambda m: m.copyin1(2, 0, bytearray(b"xy"))),
    ("copyin1 memoryview", lambda m: m.copyin1(2, 1, memoryview(b"xyz")[1:])),
    ("copyin1 past the page", lambda m: m.copyin1(3, PS - 2, b"xyz")),
    ("copyin1 view past the page", lambda m: m.copyin1(3, PS - 2, memoryview(bytearray(3)))),
    ("copyin1 strided view", lambda m: m.copyin1(2, 0, memoryview(b"abcdef")[::2])),
    ("copyin1 wide items", lambda m: m.copyin1(2, 3, memoryview(array.array("I", [1, 2 << 20])))),
    ("copyin1 view bad frame", lambda m: m.copyin1(N, 0, memoryview(bytearray(1)))),
    ("copyin1 bad frame", lambda m: m.copyin1(N, 0, b"x")),
    ("copyin1 negative offset", lambda m: m.copyin1(1, -1, b"x")),
    ("copyin1 bool frame", lambda m: m.copyin1(True, 0, b"x")),
    ("copyin1 str", lambda m: m.copyin1(1, 0, "x")),  # type: ignore[arg-type]
    ("copyin1 keywords", lambda m: m.copyin1(frame=1, offset=0, data=b"x")),
    # cksum_sum over piece lists
    ("cksum list", lambda m: m.cksum_sum([(1, 0, PS), (2, 1, 7), (3, 0, 3)])),
    ("cksum tuple", lambda m: m.cksum_sum(((1, 3, 9), (2, 0, PS)))),
    ("cksum empty", lambda m: m.cksum_sum([])),
    ("cksum initial", lambda m: m.cksum_sum([(1, 0, 5)], 0xFFFF_FFFF_FFFF_FFFF)),
    ("cksum initial keyword", lambda m: m.cksum_sum([(1, 0, 5)], initial=7)),
    ("cksum initial negative", lambda m: m.cksum_sum([(1, 0, 5)], -1)),
    ("cksum initial huge", lambda m: m.cksum_sum([(1, 0, 5)], 2**64)),
    ("cksum long list", lambda m: m.cksum_sum([(f % N, f % 5, 11) for f in range(70)])),
    ("cksum array", lambda m: m.cksum_sum(array.array("q", [1, 1, 100, 2, 0, PS]))),
    ("cksum array l", lambda m: m.cksum_sum(array.array("l", [1, 1, 100]))),
    ("cksum array ragged", lambda m: m.cksum_sum(array.array("q", [1, 1]))),
    ("cksum array i", lambda m: m.cksum_sum(array.array("i", [1, 1, 100]))),
    ("cksum list pieces", lambda m: m.cksum_sum([[1, 0, 5]])),  # type: ignore[list-item]
    ("cksum short piece", lambda m: m.cksum_sum([(1, 0)])),  # type: ignore[list-item]
    ("cksum bool piece", lambda m: m.cksum_sum([(True, 0, 5)])),
    ("cksum bad frame", lambda m: m.cksum_sum([(1, 0, 5), (N, 0, 5)])),
    ("cksum past the page", lambda m: m.cksum_sum([(1, PS - 1, 2)])),
    ("cksum negative length", lambda m: m.cksum_sum([(1, 0, -1)])),
    ("cksum not pieces", lambda m: m.cksum_sum(5)),  # type: ignore[arg-type]
    ("cksum bytes", lambda m: m.cksum_sum(b"abc")),  # type: ignore[arg-type]
    ("cksum memoryview", lambda m: m.cksum_sum(memoryview(array.array("q", [1, 0, 5])))),
    ("cksum generator", lambda m: m.cksum_sum((f, 0, 9) for f in range(3))),
    # cksum_bytes over a plain buffer
    ("cksum_bytes bytes", lambda m: m.cksum_bytes(b"\x01\x02\x03")),
    ("cksum_bytes bytearray", lambda m: m.cksum_bytes(bytearray(b"\xff\xff\x01"), 9)),
    ("cksum_bytes memoryview", lambda m: m.cksum_bytes(memoryview(b"abcdef")[1:])),
    ("cksum_bytes strided", lambda m: m.cksum_bytes(memoryview(b"abcdef")[::2])),
    ("cksum_bytes str", lambda m: m.cksum_bytes("ab")),  # type: ignore[arg-type]
    ("cksum_bytes initial negative", lambda m: m.cksum_bytes(b"ab", -5)),
    ("cksum_bytes initial keyword", lambda m: m.cksum_bytes(b"ab", initial=5)),
    # gather_cksum into a frame
    ("gather array", lambda m: gathered(m, array.array("q", [1, 0, PS, 2, 3, 5]), 8200)),
    ("gather list", lambda m: gathered(m, [(1, 1, 9), (2, 0, 4)], 20, 3)),
    ("gather tuple initial", lambda m: gathered(m, ((3, 2, 9),), 9, 0, 0x1_0001)),
    ("gather long list", lambda m: gathered(m, [(f % N, 1, 3) for f in range(70)], 300)),
    ("gather empty", lambda m: gathered(m, [], 0)),
    ("gather too small", lambda m: gathered(m, [(1, 0, 9)], 8)),
    ("gather offset past out", lambda m: gathered(m, [(1, 0, 1)], 4, 5)),
    ("gather negative offset", lambda m: gathered(m, [(1, 0, 1)], 4, -1)),
    ("gather bad frame", lambda m: gathered(m, array.array("q", [N, 0, 1]), 4)),
    ("gather bytes out", lambda m: m.gather_cksum([(1, 0, 1)], b"xx")),  # type: ignore[arg-type]
    ("gather memoryview out", lambda m: m.gather_cksum([(1, 0, 1)], memoryview(bytearray(3)))),
    ("gather keywords", lambda m: m.gather_cksum([(1, 0, 1)], bytearray(3), offset=1)),
    # gather_frame: kernel-memory parts and runs of pieces into a new frame
    ("frame mixed", lambda m: m.gather_frame([b"ab", array.array("q", [1, 1, 9]), b"c"], 12, 1)),
    ("frame no sum", lambda m: m.gather_frame([memoryview(b"xyz")[1:]], 2, -1)),
    ("frame empty", lambda m: m.gather_frame([], 0, 0)),
    (
        "frame initial",
        lambda m: m.gather_frame([b"ab", array.array("q", [2, 3, 7])], 9, 0, 2**64 - 9),
    ),
    ("frame initial negative", lambda m: m.gather_frame([b"ab"], 2, 0, -1)),
    ("frame initial too big", lambda m: m.gather_frame([b"ab"], 2, 0, 2**64)),
    ("frame initial SubInt", lambda m: m.gather_frame([b"ab"], 2, 0, SubInt(3))),
    ("frame run before sum", lambda m: m.gather_frame([array.array("q", [1, 0, 4])], 4, 1)),
    ("frame too short", lambda m: m.gather_frame([b"ab"], 3, 0)),
    ("frame too long", lambda m: m.gather_frame([b"ab", array.array("q", [1, 0, 4])], 5, 0)),
    ("frame bad frame", lambda m: m.gather_frame([array.array("q", [N, 0, 1])], 1, 0)),
    ("frame tuple parts", lambda m: m.gather_frame((b"ab",), 2, 0)),  # type: ignore[arg-type]
    ("frame str part", lambda m: m.gather_frame(["ab"], 2, 0)),
    ("frame list part", lambda m: m.gather_frame([[(1, 0, 2)]], 2, 0)),
    ("frame SubInt size", lambda m: m.gather_frame([b"ab"], SubInt(2), 0)),
    ("frame negative size", lambda m: m.gather_frame([], -1, 0)),
    ("frame keywords", lambda m: m.gather_frame([b"ab"], 2, sum_from=0)),
]


def gathered(m: PhysMem, pieces: Any, size: int, *rest: int) -> tuple[object, bytes]:
    """gather_cksum's result and the frame it wrote."""
    out = bytearray(b"\xee" * size)
    res = m.gather_cksum(pieces, out, *rest)
    return res, bytes(out)


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
def test_the_bound_io_and_sums_after_close_report_the_closed_arena(backend: str) -> None:
    m = fresh(backend)
    calls: list[Callable[[], object]] = [
        lambda: m.zero_page(1),
        lambda: m.copyin1(1, 0, b"x"),
        lambda: m.cksum_sum([(1, 0, 4)]),
        lambda: m.gather_cksum([(1, 0, 4)], bytearray(4)),
        lambda: m.gather_frame([array.array("q", [1, 0, 4])], 4, 0),
    ]
    m.close()
    for call in calls:
        with pytest.raises(PhysMemValueError, match="closed"):
            call()


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


@pytest.mark.parametrize("backend", available_backends())
def test_gather_frame_names_a_part_it_cannot_read(backend: str) -> None:
    with fresh(backend) as m:
        for bad, kind in (("ab", "str"), ([(1, 0, 2)], "list")):
            want = rf"gather_frame: part 1 is a {kind}: expected"
            with pytest.raises(PhysMemTypeError, match=want):
                m.gather_frame([b"x", bad], 3, 0)
