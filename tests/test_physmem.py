"""Unit tests of uvmloan.physmem (run under every backend)."""

from __future__ import annotations

import array
import gc
import hashlib
import mmap
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from uvmloan import _physmem_py as py
from uvmloan.errors import FrameRangeError, PhysMemError, PhysMemTypeError, PhysMemValueError
from uvmloan.physmem import BACKEND, POISON_BYTE, PhysMem, available_backends

ROOT = Path(__file__).resolve().parent.parent
PS = 512
NPAGES = 16


@pytest.fixture
def pm(backend: str) -> Iterator[PhysMem]:
    with PhysMem(NPAGES, PS, backend=backend) as m:
        yield m


def digest(m: PhysMem) -> str:
    """Hash of every frame of a (small) arena."""
    h = hashlib.sha256()
    for f in range(m.npages):
        h.update(m.frame_view(f))
    return h.hexdigest()


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((seed * 131 + i * 7 + (i >> 8)) & 0xFF for i in range(n))


# ---------------------------------------------------------------------------
# construction and life cycle


def test_backend_selection() -> None:
    assert BACKEND in available_backends()
    assert set(available_backends()) <= {"c", "python"}
    assert "python" in available_backends()
    if os.environ.get("UVMLOAN_PUREPYTHON") == "1":
        assert BACKEND == "python"


def test_basic_attributes(backend: str) -> None:
    with PhysMem(8, 1024, backend=backend, poison=False) as m:
        assert (m.npages, m.page_size, m.nbytes) == (8, 1024, 8192)
        assert m.backend == backend
        assert m.poison is False
        assert not m.closed
        assert "PhysMem(npages=8, page_size=1024" in repr(m)
        assert m.read_frame(7) == bytes(1024)  # fresh frames are zero
    assert m.closed
    assert "closed" in repr(m)
    m.close()  # idempotent


def test_default_page_size(backend: str) -> None:
    with PhysMem(2, backend=backend) as m:
        assert m.page_size == 4096


@pytest.mark.parametrize("ps", [0, 1, 256, 511, 513, 1000, 3 * 4096, 1 << 31, -4096])
def test_bad_page_size(backend: str, ps: int) -> None:
    with pytest.raises(PhysMemValueError, match=f"page size {ps} is not a power of two"):
        PhysMem(4, ps, backend=backend)


@pytest.mark.parametrize("n", [0, -1])
def test_bad_npages(backend: str, n: int) -> None:
    with pytest.raises(PhysMemValueError, match="npages must be at least 1"):
        PhysMem(n, backend=backend)


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        ((4.0,), "npages must be an int, not float"),
        ((4, "4096"), "page_size must be an int, not str"),
        ((True,), "npages must be an int, not bool"),
    ],
)
def test_bad_constructor_types(backend: str, args: tuple[Any, ...], msg: str) -> None:
    with pytest.raises(PhysMemTypeError, match=msg):
        PhysMem(*args, backend=backend)


def test_arena_too_big(backend: str) -> None:
    with pytest.raises(MemoryError, match="cannot map an arena of 1099511627776 frames"):
        PhysMem(2**40, 4096, backend=backend)  # 4 PiB: more than the address space
    with pytest.raises(PhysMemValueError, match="does not fit in 64 bits"):
        PhysMem(2**60, 4096, backend=backend)


def test_iterables_and_diagnosis(pm: PhysMem) -> None:
    """Generators work, and a bad element is still named (they are listed first)."""
    pm.fill_pages((f for f in range(3)), 1)
    assert pm.read_frame(2)[0] == 1
    before = digest(pm)
    with pytest.raises(FrameRangeError, match=r"zero_pages: frames\[1\] = frame 99 out of range"):
        pm.zero_pages(f for f in (1, 99))
    with pytest.raises(FrameRangeError, match=r"gather: piece 1 \(frame 99, offset 0, length 1\)"):
        pm.gather(p for p in [(1, 0, 1), (99, 0, 1)])
    long_pieces = [(f % NPAGES, 0, 8) for f in range(40)]  # the struct-packed path
    assert pm.gather(iter(long_pieces)) == b"".join(
        pm.read_frame(f % NPAGES)[:8] for f in range(40)
    )
    with pytest.raises(FrameRangeError, match=r"piece 39 \(frame 99, offset 0, length 8\)"):
        pm.cksum_sum([*long_pieces[:39], (99, 0, 8)])
    with pytest.raises(PhysMemTypeError, match=r"piece 20 must be a \(frame, offset, length\)"):
        pm.cksum_sum([*long_pieces[:20], (1, 0), *long_pieces[:19]])  # type: ignore[list-item]
    with pytest.raises(PhysMemTypeError, match="piece 5 offset must be an int, not float"):
        pm.cksum_sum([*long_pieces[:5], (1, 0.0, 8), *long_pieces[:19]])  # type: ignore[list-item]
    assert digest(pm) == before


def test_unknown_backend() -> None:
    with pytest.raises(PhysMemValueError, match="unknown physmem backend 'fortran'"):
        PhysMem(4, backend="fortran")


def test_purepython_env_hides_c() -> None:
    code = (
        "import uvmloan.physmem as p, sys\n"
        "assert p.BACKEND == 'python', p.BACKEND\n"
        "assert p.available_backends() == ('python',)\n"
        "assert 'uvmloan._physmem' not in sys.modules\n"
        "try:\n"
        "    p.PhysMem(4, backend='c')\n"
        "except ValueError as e:\n"
        "    assert 'UVMLOAN_PUREPYTHON' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('backend c was available')\n"
    )
    env = {**os.environ, "UVMLOAN_PUREPYTHON": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


def test_poison_env(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UVMLOAN_POISON", "1")
    with PhysMem(2, PS, backend=backend) as m:
        assert m.poison is True
    monkeypatch.setenv("UVMLOAN_POISON", "0")
    with PhysMem(2, PS, backend=backend) as m:
        assert m.poison is False
    with PhysMem(2, PS, backend=backend, poison=True) as m:
        assert m.poison is True


def test_closed_arena_raises(backend: str) -> None:
    m = PhysMem(4, PS, backend=backend)
    m.close()
    ops: list[Callable[[], object]] = [
        lambda: m.zero_page(0),
        lambda: m.copy_page(0, 1),
        lambda: m.fill_page(0, 1),
        lambda: m.compare_pages(0, 1),
        lambda: m.zero_pages([0]),
        lambda: m.copyin([0], 0, b"x"),
        lambda: m.copyout([0], 0, 1),
        lambda: m.copyout([0, 1], 0, 1),
        lambda: m.gather([(0, 0, 1)]),
        lambda: m.scatter([(0, 0, 1)], b"x"),
        lambda: m.cksum_sum([(0, 0, 1)]),
        lambda: m.read_frame(0),
        lambda: m.frame_view(0),
        lambda: m.release_frame(0),
    ]
    for op in ops:
        with pytest.raises(PhysMemValueError, match="closed"):
            op()


def test_frame_view_outlives_close(backend: str) -> None:
    m = PhysMem(4, PS, backend=backend)
    m.fill_page(2, 0x5A)
    v = m.frame_view(2)
    m.close()
    gc.collect()
    assert v.readonly
    assert bytes(v) == b"\x5a" * PS  # still mapped: the view keeps the arena alive
    v.release()
    gc.collect()


def test_cheap_huge_arena(backend: str) -> None:
    """A 1 GiB arena is lazily backed (MAP_NORESERVE, untouched frames cost nothing)."""

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * mmap.PAGESIZE

    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc")
    before = rss()
    with PhysMem(262144, 4096, backend=backend) as m:
        assert m.nbytes == 1 << 30
        m.fill_page(262143, 1)
        m.fill_page(0, 2)
        assert m.read_frame(262143)[:1] == b"\x01"
        assert rss() - before < 64 << 20


def test_c_arena_mapping_flags() -> None:
    """The C arena is MAP_NORESERVE with PROT_NONE guards on both sides."""
    if "c" not in available_backends():
        pytest.skip("C backend not built")
    from uvmloan._physmem import ffi, lib

    if not os.path.exists("/proc/self/smaps"):
        pytest.skip("needs /proc")
    with PhysMem(64, 4096, backend="c") as m:
        base = int(ffi.cast("uintptr_t", lib.pm_base(m._h)))
        maps: list[tuple[int, int, str, str]] = []
        cur: tuple[int, int, str] | None = None
        with open("/proc/self/smaps") as f:
            for line in f:
                hdr = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
                if hdr:
                    cur = (int(hdr.group(1), 16), int(hdr.group(2), 16), hdr.group(3))
                elif line.startswith("VmFlags:") and cur is not None:
                    maps.append((*cur, line))
        body = next(x for x in maps if x[0] <= base < x[1])
        assert body[2].startswith("rw")
        assert " nr" in body[3]  # swap space not reserved
        assert body[1] - base == 64 * 4096
        below = next(x for x in maps if x[0] < base <= x[1] and x[1] == base)
        above = next(x for x in maps if x[0] == base + 64 * 4096)
        assert below[2].startswith("---") and above[2].startswith("---")


# ---------------------------------------------------------------------------
# pages


def test_copy_zero_fill_compare(pm: PhysMem) -> None:
    pm.copyin([1], 0, pattern(PS))
    assert pm.compare_pages(1, 2) == 0
    pm.copy_page(1, 2)  # NetBSD order: src, dst
    assert pm.read_frame(2) == pattern(PS)
    assert pm.compare_pages(1, 2) == -1
    pm.copyin([2], 300, b"\x00\xff")
    assert pm.compare_pages(1, 2) in (300, 301)
    assert pm.compare_pages(2, 2) == -1
    pm.copy_page(3, 3)
    pm.fill_page(3, 0xAB)
    assert pm.read_frame(3) == b"\xab" * PS
    pm.zero_page(3)
    assert pm.read_frame(3) == bytes(PS)
    pm.copyin([5], PS - 1, b"\x01")
    assert pm.compare_pages(4, 5) == PS - 1


def test_batches(pm: PhysMem) -> None:
    for f in range(4):
        pm.fill_page(f, f + 1)
    pm.copy_pages([0, 1, 2, 3], [8, 9, 10, 11])
    assert [pm.read_frame(f)[0] for f in range(8, 12)] == [1, 2, 3, 4]
    pm.copy_pages((8, 9), (9, 8))  # in order: 9 <- 8, then 8 <- 9 (already a copy of 8)
    assert pm.read_frame(8)[0] == pm.read_frame(9)[0] == 1
    pm.zero_pages(array.array("q", [8, 9]))
    assert pm.read_frame(8) == pm.read_frame(9) == bytes(PS)
    pm.fill_pages(range(12, 16), 0x77)
    assert all(pm.read_frame(f) == b"\x77" * PS for f in range(12, 16))
    pm.copy_pages([], [])
    pm.zero_pages([])


def test_batches_long_lists(pm: PhysMem) -> None:
    """Long lists take the array('q') conversion path on the C backend."""
    frames = [i % 4 for i in range(1000)]
    pm.fill_pages(frames, 9)
    assert pm.read_frame(3) == b"\x09" * PS
    pm.copy_pages([0] * 600, [5] * 600)
    assert pm.read_frame(5) == b"\x09" * PS
    before = digest(pm)
    with pytest.raises(FrameRangeError, match=r"frames\[999\] = frame 16 out of range"):
        pm.zero_pages([*frames[:999], 16])
    with pytest.raises(PhysMemTypeError, match=r"frames\[500\] must be an int, not float"):
        pm.zero_pages([*frames[:500], 1.5, *frames[:500]])  # type: ignore[list-item]
    assert digest(pm) == before


def test_poison(backend: str) -> None:
    assert POISON_BYTE == PhysMem.POISON_BYTE == 0xDB == py.PM_POISON_BYTE
    with PhysMem(4, PS, backend=backend, poison=True) as m:
        m.fill_page(1, 7)
        m.release_frame(1)
        assert m.read_frame(1) == bytes([POISON_BYTE]) * PS
    with PhysMem(4, PS, backend=backend, poison=False) as m:
        m.fill_page(1, 7)
        m.release_frame(1)
        assert m.read_frame(1) == b"\x07" * PS
        with pytest.raises(FrameRangeError, match="release_frame: frame 4 out of range"):
            m.release_frame(4)


# ---------------------------------------------------------------------------
# byte ranges


def test_copyin_copyout_across_pages(pm: PhysMem) -> None:
    data = pattern(3 * PS)
    pm.copyin([7, 2, 9, 4], 100, data)
    assert pm.read_frame(7)[100:] == data[: PS - 100]
    assert pm.read_frame(2) == data[PS - 100 : 2 * PS - 100]
    assert pm.read_frame(4)[:100] == data[3 * PS - 100 :]
    assert pm.copyout([7, 2, 9, 4], 100, 3 * PS) == data
    assert pm.copyout([7, 2, 9, 4], 100, 5) == data[:5]
    assert pm.copyout([2], 0, PS) == data[PS - 100 : 2 * PS - 100]
    assert pm.copyout((2,), 3, 0) == b""
    assert pm.copyout([], 0, 0) == b""
    out = bytearray(2 * PS)
    pm.copyout_into([9, 4], 0, out)
    assert bytes(out) == data[2 * PS - 100 :] + bytes(PS - 100)


@pytest.mark.parametrize(
    "make",
    [
        bytes,
        bytearray,
        lambda b: memoryview(b),
        lambda b: memoryview(bytearray(b)),
        lambda b: array.array("B", b),
        lambda b: memoryview(b).cast("H"),
    ],
)
def test_copyin_buffer_kinds(pm: PhysMem, make: Callable[[bytes], Any]) -> None:
    data = pattern(64, 3)
    pm.copyin([0, 1], PS - 32, make(data))
    assert pm.copyout([0, 1], PS - 32, 64) == data
    assert pm.cksum_bytes(make(data)) == pm.cksum_sum([(0, PS - 32, 32), (1, 0, 32)])


def test_copyout_into_buffer_kinds(pm: PhysMem) -> None:
    pm.copyin([3], 0, pattern(PS))
    out_arr = array.array("H", bytes(8))
    pm.copyout_into([3], 2, out_arr)
    assert out_arr.tobytes() == pattern(PS)[2:10]
    mv = memoryview(bytearray(16))
    pm.copyout_into([3], 10, mv[4:12])
    assert bytes(mv) == bytes(4) + pattern(PS)[10:18] + bytes(4)


def test_copyin_from_own_frame_view(pm: PhysMem) -> None:
    """An arena view as the source of a write that overlaps it (memmove semantics)."""
    pm.copyin([6], 0, pattern(PS))
    pm.copyin([6], 5, pm.frame_view(6)[:100])
    assert pm.read_frame(6)[:105] == pattern(PS)[:5] + pattern(PS)[:100]


def test_frame_view_is_zero_copy_and_readonly(pm: PhysMem) -> None:
    v = pm.frame_view(3)
    assert v.readonly and len(v) == PS
    pm.fill_page(3, 0x42)
    assert v[0] == 0x42 and v[PS - 1] == 0x42
    with pytest.raises(TypeError):
        v[0] = 1
    v.release()


# ---------------------------------------------------------------------------
# scatter / gather


def test_gather_scatter(pm: PhysMem) -> None:
    pm.copyin([1], 0, pattern(PS, 1))
    pm.copyin([2], 0, pattern(PS, 2))
    pieces = [(2, 7, 13), (1, 0, 0), (1, PS - 5, 5), (2, 0, PS)]
    want = pattern(PS, 2)[7:20] + pattern(PS, 1)[-5:] + pattern(PS, 2)
    assert pm.gather(pieces) == want
    out = bytearray(len(want) + 10)
    assert pm.gather_into(pieces, out) == len(want)
    assert bytes(out) == want + bytes(10)
    assert pm.gather([]) == b""
    pm.scatter([(5, 100, 18), (6, 0, len(want) - 18)], want)
    assert pm.copyout([5, 6], 100, 18) == want[:18]
    assert pm.copyout([6], 0, len(want) - 18) == want[18:]
    pm.scatter(iter([(7, 0, 2)]), memoryview(b"hi"))
    assert pm.copyout([7], 0, 2) == b"hi"


# ---------------------------------------------------------------------------
# bad input: right class, clear message, nothing changed

# fmt: off
BAD: list[tuple[str, Callable[[PhysMem], object], type[Exception], str]] = [
    ("frame high", lambda m: m.zero_page(NPAGES), FrameRangeError,
     f"zero_page: frame {NPAGES} out of range (arena has {NPAGES} frames)"),
    ("frame negative", lambda m: m.copy_page(-1, 2), FrameRangeError,
     "copy_page: src -1 out of range"),
    ("frame huge", lambda m: m.copy_page(1, 2**70), FrameRangeError,
     f"copy_page: dst {2**70} out of range"),
    ("frame float", lambda m: m.zero_page(1.0), PhysMemTypeError,  # type: ignore[arg-type]
     "zero_page: frame must be an int, not float"),
    ("frame str", lambda m: m.fill_page("1", 3), PhysMemTypeError,  # type: ignore[arg-type]
     "fill_page: frame must be an int, not str"),
    ("fill byte 256", lambda m: m.fill_page(1, 256), PhysMemValueError,
     "fill_page: fill byte 256 out of range 0..255"),
    ("fill byte -1", lambda m: m.fill_pages([1, 2], -1), PhysMemValueError,
     "fill_pages: fill byte -1 out of range 0..255"),
    ("fill byte huge", lambda m: m.fill_page(1, 2**64), PhysMemValueError,
     "out of range 0..255"),
    ("compare frame", lambda m: m.compare_pages(0, 99), FrameRangeError,
     "compare_pages: b 99 out of range"),
    ("batch bad frame in middle", lambda m: m.copy_pages([1, 2, 3], [4, 99, 5]), FrameRangeError,
     r"copy_pages: dsts[1] = frame 99 out of range"),
    ("batch length mismatch", lambda m: m.copy_pages([1, 2], [3]), PhysMemValueError,
     "copy_pages: 2 source frames but 1 destination frames"),
    ("batch not a list", lambda m: m.zero_pages(3), PhysMemTypeError,  # type: ignore[arg-type]
     "frames must be a sequence of frame numbers, not int"),
    ("batch str element", lambda m: m.fill_pages([1, "2"], 0), PhysMemTypeError,  # type: ignore[list-item]
     r"fill_pages: frames[1] must be an int, not str"),
    ("copyin past page list", lambda m: m.copyin([1, 2], PS - 10, bytes(PS + 11)),
     FrameRangeError, f"copyin: {PS + 11} bytes at offset {PS - 10} run past the end"),
    ("copyin offset = page size", lambda m: m.copyin([1], PS, b""), FrameRangeError,
     f"copyin: offset {PS} is outside the page (page size {PS})"),
    ("copyin offset negative", lambda m: m.copyin([1], -1, b"x"), FrameRangeError,
     "copyin: offset -1 is outside the page"),
    ("copyin bad frame", lambda m: m.copyin([1, 77], 0, b"x" * 600), FrameRangeError,
     r"copyin: frames[1] = frame 77 out of range"),
    ("copyin unused bad frame", lambda m: m.copyin([1, 77], 0, b"x"), FrameRangeError,
     r"copyin: frames[1] = frame 77 out of range"),
    ("copyin str", lambda m: m.copyin([1], 0, "text"), PhysMemTypeError,  # type: ignore[arg-type]
     "data must be a contiguous bytes-like object, not str"),
    ("copyin noncontiguous", lambda m: m.copyin([1], 0, memoryview(bytes(8))[::2]),
     PhysMemTypeError, "data must be a contiguous bytes-like object"),
    ("copyin float offset", lambda m: m.copyin([1], 0.0, b"x"), PhysMemTypeError,  # type: ignore[arg-type]
     "copyin: offset must be an int, not float"),
    ("copyout negative", lambda m: m.copyout([1], 0, -1), PhysMemValueError,
     "copyout: negative length -1"),
    ("copyout past", lambda m: m.copyout([1], 10, PS), FrameRangeError,
     f"copyout: {PS} bytes at offset 10 run past the end of the frame list"),
    ("copyout past arena frames", lambda m: m.copyout([NPAGES - 1, NPAGES], 0, 1), FrameRangeError,
     f"copyout: frames[1] = frame {NPAGES} out of range"),
    ("copyout huge", lambda m: m.copyout([1], 0, 2**62), FrameRangeError,
     "run past the end of the frame list"),
    ("copyout float length", lambda m: m.copyout([1], 0, 2.0), PhysMemTypeError,  # type: ignore[arg-type]
     "copyout: length must be an int, not float"),
    ("copyout_into readonly", lambda m: m.copyout_into([1], 0, b"abc"), PhysMemTypeError,  # type: ignore[arg-type]
     "out must be a writable, contiguous bytes-like object, not bytes (it is read-only)"),
    ("copyout_into readonly view", lambda m: m.copyout_into([1], 0, m.frame_view(2)),
     PhysMemTypeError, "(it is read-only)"),
    ("copyout_into list", lambda m: m.copyout_into([1], 0, [0, 0]), PhysMemTypeError,  # type: ignore[arg-type]
     "out must be a writable, contiguous bytes-like object, not list"),
    ("piece crosses page", lambda m: m.gather([(1, 0, 1), (2, 0, 1), (3, 0, 1), (5, PS - 96, 200)]),
     FrameRangeError,
     f"gather: piece 3 (frame 5, offset {PS - 96}, length 200) crosses the end of the page "
     f"(page size {PS})"),
    ("piece bad frame", lambda m: m.cksum_sum([(1, 0, 1), (NPAGES, 0, 1)]), FrameRangeError,
     f"cksum_sum: piece 1 (frame {NPAGES}, offset 0, length 1): frame {NPAGES} out of range"),
    ("piece negative length", lambda m: m.scatter([(1, 0, -1)], b""), PhysMemValueError,
     "scatter: piece 0 (frame 1, offset 0, length -1) has a negative length"),
    ("piece bad offset", lambda m: m.gather([(1, PS, 0)]), FrameRangeError,
     f"gather: piece 0 (frame 1, offset {PS}, length 0): offset {PS} is outside the page"),
    ("piece short tuple", lambda m: m.gather([(1, 0)]), PhysMemTypeError,  # type: ignore[list-item]
     "gather: piece 0 must be a (frame, offset, length) triple, not (1, 0)"),
    ("piece long tuple", lambda m: m.cksum_sum([(1, 0, 1, 1)]), PhysMemTypeError,  # type: ignore[list-item]
     "cksum_sum: piece 0 must be a (frame, offset, length) triple"),
    ("piece float", lambda m: m.scatter([(1, 0.5, 1)], b"x"), PhysMemTypeError,  # type: ignore[list-item]
     "scatter: piece 0 offset must be an int, not float"),
    ("pieces not a list", lambda m: m.gather(7), PhysMemTypeError,  # type: ignore[arg-type]
     "pieces must be a sequence of (frame, offset, length) triples, not int"),
    ("scatter size", lambda m: m.scatter([(1, 0, 10), (2, 0, 10)], bytes(19)), PhysMemValueError,
     "scatter: data has 19 bytes but the pieces cover 20"),
    ("gather_into small", lambda m: m.gather_into([(1, 0, 10)], bytearray(9)), PhysMemValueError,
     "gather_into: out has 9 bytes but the pieces hold 10"),
    # (a missing size check here would be a heap overflow ASan reports)
    ("gather_into far too small", lambda m: m.gather_into([(1, 0, 400)], bytearray(4)),
     PhysMemValueError, "gather_into: out has 4 bytes but the pieces hold 400"),
    ("scatter data far too short", lambda m: m.scatter([(1, 0, 400)], bytes(4)),
     PhysMemValueError, "scatter: data has 4 bytes but the pieces cover 400"),
    ("cksum initial negative", lambda m: m.cksum_sum([(1, 0, 1)], -1), PhysMemValueError,
     "cksum_sum: initial sum -1 is not in 0..2**64-1"),
    ("cksum initial huge", lambda m: m.cksum_bytes(b"ab", 2**64), PhysMemValueError,
     "cksum_bytes: initial sum 18446744073709551616 is not in 0..2**64-1"),
    ("cksum initial float", lambda m: m.in_cksum([(1, 0, 1)], 1.0), PhysMemTypeError,  # type: ignore[arg-type]
     "cksum_sum: initial must be an int, not float"),
    ("cksum_bytes str", lambda m: m.cksum_bytes("ab"), PhysMemTypeError,  # type: ignore[arg-type]
     "data must be a contiguous bytes-like object, not str"),
    ("frame_view out of range", lambda m: m.frame_view(NPAGES), FrameRangeError,
     f"frame_view: frame {NPAGES} out of range"),
    ("read_frame type", lambda m: m.read_frame(None), PhysMemTypeError,  # type: ignore[arg-type]
     "read_frame: frame must be an int, not NoneType"),
]
# fmt: on


@pytest.mark.parametrize(("op", "exc", "msg"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(
    pm: PhysMem, op: Callable[[PhysMem], object], exc: type[Exception], msg: str
) -> None:
    for f in range(NPAGES):
        pm.fill_page(f, f * 16 + 1)
    before = digest(pm)
    with pytest.raises(exc) as info:
        op(pm)
    assert isinstance(info.value, PhysMemError)
    assert msg in str(info.value), str(info.value)
    assert digest(pm) == before


def test_error_classes_are_builtin_compatible(pm: PhysMem) -> None:
    with pytest.raises(IndexError):
        pm.zero_page(NPAGES)
    with pytest.raises(ValueError):
        pm.fill_page(0, 300)
    with pytest.raises(TypeError):
        pm.zero_page("0")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# the compiled module and its stub


def _stub_names() -> set[str]:
    text = (ROOT / "uvmloan" / "_physmem.pyi").read_text()
    body = text.split("class _Lib:", 1)[1].split("\nlib: _Lib", 1)[0]
    names = set(re.findall(r"^    def (\w+)\(", body, re.M))
    names |= set(re.findall(r"^    (PM_\w+): Final\[int\]", body, re.M))
    return names


def test_stub_matches_compiled_module() -> None:
    if "c" not in available_backends():
        pytest.skip("C backend not built")
    from uvmloan._physmem import lib

    assert set(dir(lib)) == _stub_names()


def test_twin_has_every_c_name() -> None:
    names = _stub_names()
    missing = {n for n in names if not hasattr(py, n)}
    assert not missing
    for n in names:
        if n.startswith("PM_") and "c" in available_backends():
            from uvmloan._physmem import lib

            assert getattr(lib, n) == getattr(py, n), n


def test_error_codes_distinct() -> None:
    codes = [
        py.PM_EFRAME,
        py.PM_EPAGE,
        py.PM_ERANGE,
        py.PM_ENEGLEN,
        py.PM_EINVAL,
        py.PM_ENOMEM,
        py.PM_EBUFSIZE,
    ]
    assert len(set(codes)) == len(codes) and all(c < 0 for c in codes)
    assert py.PM_OK == 0


def test_c_lib_null_and_bad_arguments() -> None:
    """Raw entry points refuse NULL handles and bad sizes without touching memory."""
    if "c" not in available_backends():
        pytest.skip("C backend not built")
    from uvmloan._physmem import ffi, lib

    null = ffi.NULL
    out64 = ffi.new("int64_t *")
    out32 = ffi.new("uint32_t *")
    assert lib.pm_npages(null) == lib.PM_EINVAL
    assert lib.pm_page_size(null) == lib.PM_EINVAL
    assert lib.pm_base(null) == null
    assert lib.pm_copy_page(null, 0, 0) == lib.PM_EINVAL
    assert lib.pm_copyin(null, [0], 1, 0, b"x", 1) == lib.PM_EINVAL
    assert lib.pm_cksum(null, [(0, 0, 1)], 1, 0, out32) == lib.PM_EINVAL
    assert lib.pm_cksum_buf(b"ab", 2, 0, null) == lib.PM_EINVAL
    assert lib.pm_cksum_buf(null, 2, 0, out32) == lib.PM_EINVAL
    assert lib.pm_cksum_buf(b"ab", -2, 0, out32) == lib.PM_ENEGLEN
    lib.pm_destroy(null)
    pp = ffi.new("pm_arena **")
    assert lib.pm_create(4, 4096, null) == lib.PM_EINVAL
    assert lib.pm_create(0, 4096, pp) == lib.PM_EINVAL and pp[0] == null
    assert lib.pm_create(4, 4095, pp) == lib.PM_EINVAL
    assert lib.pm_create(1 << 62, 4096, pp) == lib.PM_ENOMEM
    assert lib.pm_create(4, 4096, pp) == lib.PM_OK
    h = pp[0]
    try:
        assert (lib.pm_npages(h), lib.pm_page_size(h)) == (4, 4096)
        assert lib.pm_compare_pages(h, 0, 1, null) == lib.PM_EINVAL
        assert lib.pm_compare_pages(h, 0, 1, out64) == lib.PM_OK and out64[0] == -1
        assert lib.pm_zero_pages(h, null, 1) == lib.PM_EINVAL
        assert lib.pm_zero_pages(h, null, 0) == lib.PM_OK
        assert lib.pm_zero_pages(h, [0], -1) == lib.PM_ENEGLEN
        assert lib.pm_copyin(h, [0], 1, 0, null, 1) == lib.PM_EINVAL
        assert lib.pm_copyin(h, [0], -1, 0, b"", 0) == lib.PM_ENEGLEN
        assert lib.pm_copyin(h, [0], 1, 0, b"x", -1) == lib.PM_ENEGLEN
        assert lib.pm_gather(h, null, 1, null, 0, out64) == lib.PM_EINVAL
        assert lib.pm_gather(h, [(0, 0, 1)], 1, null, -1, out64) == lib.PM_ENEGLEN
        assert lib.pm_gather(h, [(0, 0, 1)], 1, null, 1, out64) == lib.PM_EINVAL
        assert lib.pm_gather(h, [(0, 0, 0)], 1, null, 0, out64) == lib.PM_OK and out64[0] == 0
        assert lib.pm_scatter(h, [(0, 0, 1)], 1, null, 1) == lib.PM_EINVAL
        big = (1 << 63) - 1
        assert lib.pm_copyout(h, [0] * 3, 3, 1, ffi.new("char[]", 1), big) == lib.PM_ERANGE
        assert lib.pm_gather(h, [(0, 0, 4096)] * 2, 2, null, big, out64) == lib.PM_EINVAL
    finally:
        lib.pm_destroy(h)
