"""The transmit fast paths of the arena: flat piece arrays and the fused
gather-and-checksum, on both backends, against an independent reference."""

from __future__ import annotations

import array
from collections.abc import Iterator

import pytest
from helpers import ref_sum
from hypothesis import given, settings
from hypothesis import strategies as st

from uvmloan.errors import FrameRangeError, PhysMemError, PhysMemValueError
from uvmloan.physmem import PhysMem, available_backends

BACKENDS = available_backends()
PS = 4096
NFRAMES = 8


@pytest.fixture(params=BACKENDS)
def pm(request: pytest.FixtureRequest) -> Iterator[PhysMem]:
    with PhysMem(NFRAMES, PS, backend=request.param) as m:
        # 0xff-heavy frames make carries; the others vary the bytes
        for f in range(NFRAMES):
            fill = bytes(0xFF if (i * 7 + f) % 5 else (i * 31 + f) & 0xFF for i in range(PS))
            m.copyin([f], 0, fill)
        yield m


def flat(pieces: list[tuple[int, int, int]]) -> array.array[int]:
    return array.array("q", [x for p in pieces for x in p])


def contents(m: PhysMem, pieces: list[tuple[int, int, int]]) -> bytes:
    return b"".join(m.read_frame(f)[o : o + n] for f, o, n in pieces)


piece = st.integers(0, NFRAMES - 1).flatmap(
    lambda f: st.integers(0, PS - 1).flatmap(
        lambda o: st.integers(0, PS - o).map(lambda n: (f, o, n))
    )
)


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(piece, max_size=12),
    offset=st.integers(0, 3),
    initial=st.one_of(st.integers(0, 0xFFFF), st.integers(2**64 - 2**20, 2**64 - 1)),
    backend=st.sampled_from(BACKENDS),
    as_array=st.booleans(),
)
def test_gather_cksum_matches_reference(
    pieces: list[tuple[int, int, int]], offset: int, initial: int, backend: str, as_array: bool
) -> None:
    with PhysMem(NFRAMES, PS, backend=backend) as m:
        for f in range(NFRAMES):
            m.fill_page(f, 0xFF if f % 2 else (f * 37 + 1) & 0xFF)
        m.copyin([3], 1, bytes(range(256)) * 8)
        data = contents(m, pieces)
        out = bytearray(b"\xaa" * (offset + len(data) + 5))
        arg = flat(pieces) if as_array else pieces
        n, s = m.gather_cksum(arg, out, offset, initial)
        assert n == len(data)
        assert bytes(out[offset : offset + n]) == data
        assert out[:offset] == b"\xaa" * offset  # nothing written before offset
        assert out[offset + n :] == b"\xaa" * 5  # nor after the gathered bytes
        assert s == ref_sum(data, initial)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_matches_the_two_passes_it_replaces(backend: str) -> None:
    # 16 page-sized pieces at odd offsets and odd lengths: 0xff runs carry
    with PhysMem(32, PS, backend=backend) as m:
        for f in range(32):
            m.fill_page(f, 0xFF)
        m.copyin([5], 0, b"\x01" * 17)
        pieces = [(f, f % 3, PS - (f % 3) - (f % 2)) for f in range(16)]
        out = bytearray(16 * PS)
        n, s = m.gather_cksum(flat(pieces), out)
        assert (n, s) == (n, m.cksum_sum(pieces))
        assert bytes(out[:n]) == m.gather(pieces)
        assert s == ref_sum(contents(m, pieces))


def test_piece_arrays_equal_piece_lists(pm: PhysMem) -> None:
    pieces = [(1, 3, 5), (2, 0, 4096), (0, 4095, 1), (7, 11, 1001)]
    arr = flat(pieces)
    assert pm.gather(arr) == pm.gather(pieces) == contents(pm, pieces)
    assert pm.cksum_sum(arr, 7) == pm.cksum_sum(pieces, 7) == ref_sum(contents(pm, pieces), 7)
    assert pm.in_cksum(arr) == ~ref_sum(contents(pm, pieces)) & 0xFFFF
    buf = bytearray(6000)
    assert pm.gather_into(arr, buf) == sum(p[2] for p in pieces)
    data = bytes(range(7, 250)) * 30
    data = data[: sum(p[2] for p in pieces)]
    pm.scatter(flat(pieces), data)
    assert pm.gather(pieces) == data


def test_empty_piece_array(pm: PhysMem) -> None:
    out = bytearray(4)
    assert pm.gather_cksum(array.array("q"), out, 0, 0x1234) == (0, 0x1234)
    assert pm.gather(array.array("q")) == b""
    assert out == bytearray(4)


def _state(m: PhysMem) -> bytes:
    return b"".join(m.read_frame(f) for f in range(m.npages))


@pytest.mark.parametrize(
    ("pieces", "out_len", "offset", "initial", "exc", "words"),
    [
        (array.array("q", [0, 0]), 100, 0, 0, PhysMemValueError, "multiple of 3"),
        ([(NFRAMES, 0, 1)], 100, 0, 0, FrameRangeError, f"frame {NFRAMES} out of range"),
        ([(0, PS, 1)], 100, 0, 0, FrameRangeError, "outside the page"),
        ([(0, 10, PS)], 10000, 0, 0, FrameRangeError, "crosses the end of the page"),
        ([(0, 0, -1)], 100, 0, 0, PhysMemValueError, "negative length"),
        ([(0, 0, 64)], 63, 0, 0, PhysMemValueError, "out has 63 bytes but the pieces hold 64"),
        ([(0, 0, 64)], 100, 40, 0, PhysMemValueError, "out has 60 bytes but the pieces hold 64"),
        ([(0, 0, 8)], 100, 101, 0, PhysMemValueError, "offset 101 is outside out"),
        ([(0, 0, 8)], 100, -1, 0, PhysMemValueError, "offset -1 is outside out"),
        ([(0, 0, 8)], 100, 0, 2**64, PhysMemValueError, "initial sum"),
        ([(0, 0)], 100, 0, 0, PhysMemError, "triple"),
    ],
)
def test_gather_cksum_bad_input_changes_nothing(
    pm: PhysMem,
    pieces: object,
    out_len: int,
    offset: int,
    initial: int,
    exc: type[Exception],
    words: str,
) -> None:
    before = _state(pm)
    out = bytearray(b"\x5a" * out_len)
    with pytest.raises(exc, match=words):
        pm.gather_cksum(pieces, out, offset, initial)  # type: ignore[arg-type]
    assert out == bytearray(b"\x5a" * out_len)
    assert _state(pm) == before


def test_gather_cksum_refuses_a_readonly_output(pm: PhysMem) -> None:
    with pytest.raises(PhysMemError, match="out"):
        pm.gather_cksum([(0, 0, 8)], b"\0" * 16)  # type: ignore[arg-type]


@pytest.mark.skipif("c" not in BACKENDS, reason="needs the C module")
def test_twin_and_c_agree_on_a_64k_chain() -> None:
    pieces = [(f, (f * 5) % 7, PS - (f * 5) % 7 - f % 2) for f in range(16)]
    results = []
    for backend in ("c", "python"):
        with PhysMem(16, PS, backend=backend) as m:
            for f in range(16):
                m.copyin([f], 0, bytes((0xFF if i % 3 else i * f) & 0xFF for i in range(PS)))
            out = bytearray(16 * PS)
            results.append((m.gather_cksum(flat(pieces), out, 0, 2**64 - 1), bytes(out)))
    assert results[0] == results[1]


# ---------------------------------------------------------------- gather_frame

kmem_part = st.binary(max_size=90)
frame_part = st.one_of(kmem_part, st.lists(piece, max_size=4))


def _parts(spec: list[bytes | list[tuple[int, int, int]]]) -> list[memoryview | array.array[int]]:
    """The parts as dma_read lists them: views of kernel memory, piece arrays."""
    return [memoryview(bytearray(p)) if isinstance(p, bytes) else flat(p) for p in spec]


@settings(max_examples=150, deadline=None)
@given(
    spec=st.lists(frame_part, max_size=6),
    sum_from=st.integers(-1, 45),
    initial=st.one_of(st.just(0), st.integers(0, 0xFFFF), st.integers(2**64 - 2**20, 2**64 - 1)),
    backend=st.sampled_from(BACKENDS),
)
def test_gather_frame_matches_reference(
    spec: list[bytes | list[tuple[int, int, int]]], sum_from: int, initial: int, backend: str
) -> None:
    with PhysMem(NFRAMES, PS, backend=backend) as m:
        for f in range(NFRAMES):
            m.fill_page(f, 0xFF if f % 2 else (f * 37 + 1) & 0xFF)
        m.copyin([3], 1, bytes(range(256)) * 8)
        data = b"".join(p if isinstance(p, bytes) else contents(m, p) for p in spec)
        # a run of arena pieces before the summed segment is refused
        pos, early = 0, False
        for p in spec:
            if not isinstance(p, bytes):
                early = early or (0 <= pos < sum_from)
            pos += len(p) if isinstance(p, bytes) else sum(x[2] for x in p)
        parts = _parts(spec)
        if early:
            with pytest.raises(PhysMemValueError, match="before sum_from"):
                m.gather_frame(parts, len(data), sum_from, initial)
            return
        frame, s = m.gather_frame(parts, len(data), sum_from, initial)
        assert type(frame) is bytearray and bytes(frame) == data
        assert s == (ref_sum(data[sum_from:], initial) if sum_from >= 0 else 0)
        # the bound method (C with the extension) and the Python twin agree
        assert m._gather_frame(parts, len(data), sum_from, initial) == (frame, s)


def test_gather_frame_refuses_parts_of_another_size(pm: PhysMem) -> None:
    parts = _parts([b"abcd", [(1, 0, 10)]])
    for size in (13, 15):
        with pytest.raises(PhysMemValueError, match="hold"):
            pm.gather_frame(parts, size, 0)
    with pytest.raises(PhysMemValueError, match="negative size"):
        pm.gather_frame([], -1, 0)
    assert pm.gather_frame([], 0, 0) == (bytearray(), 0)


@pytest.mark.skipif("c" not in BACKENDS, reason="needs the C module")
def test_gather_frame_twin_and_c_agree_on_a_64k_chain() -> None:
    # a TCP/IP header in kernel memory, then 16 lent pages: netif's transmit path
    pieces = [(f, (f * 5) % 7, PS - (f * 5) % 7 - f % 2) for f in range(16)]
    hdr = bytes(range(40))
    results = []
    for backend in ("c", "python"):
        with PhysMem(16, PS, backend=backend) as m:
            for f in range(16):
                m.copyin([f], 0, bytes((0xFF if i % 3 else i * f) & 0xFF for i in range(PS)))
            size = 40 + sum(p[2] for p in pieces)
            results.append(m.gather_frame([memoryview(hdr), flat(pieces)], size, 20, 0x1_2345))
    assert results[0] == results[1]
    assert results[0][1] == ref_sum(bytes(results[0][0][20:]), 0x1_2345)
