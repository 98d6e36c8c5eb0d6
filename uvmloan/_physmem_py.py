"""Pure-Python twin of the C module ``uvmloan._physmem`` (``cext/physmem.c``).

Every ``pm_*`` function has the C entry point's name, arguments, checks (in
the same order) and return codes, so :mod:`uvmloan.physmem` can drive either.
The differences are only in how arguments are passed:

* a handle is an :class:`Arena` (``None`` plays the NULL handle);
* arrays of frames are Python sequences of ints, piece lists are sequences
  of ``(frame, offset, length)`` triples;
* caller buffers are memoryviews of format ``'B'`` (writable for outputs);
* out-parameters are one-element lists (``out[0]`` receives the value).

Integer arguments are converted as cffi converts them for ``int64_t`` /
``uint64_t`` parameters: ``int`` (and ``bool``) as is, floats refused with
``TypeError``, other objects through ``__int__``; a value that does not fit
raises ``OverflowError``.  Like cffi, the conversion of *all* arguments
happens before any check, so a type error changes nothing.

This module is for correctness and for machines without a compiler; it is
reasonably fast (slice copies run in C inside CPython, and the checksum works
on big integers built with ``int.from_bytes``), but it is not the hot path.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import sys
from collections.abc import Sequence
from typing import Any

PM_OK = 0
PM_EFRAME = -1
PM_EPAGE = -2
PM_ERANGE = -3
PM_ENEGLEN = -4
PM_EINVAL = -5
PM_ENOMEM = -6
PM_EBUFSIZE = -7

PM_POISON_BYTE = 0xDB
PM_MIN_PAGE_SIZE = 512
PM_MAX_PAGE_SIZE = 1 << 30

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1

if sys.platform.startswith("linux"):
    _MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
else:  # pragma: no cover - the model is developed on Linux
    _MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0)


class Arena:
    """The twin's arena handle (the C ``pm_arena``)."""

    __slots__ = ("mm", "mv", "npages", "page_size", "shift")

    def __init__(self, npages: int, page_size: int) -> None:
        self.npages = npages
        self.page_size = page_size
        self.shift = page_size.bit_length() - 1
        self.mm: mmap.mmap | None = mmap.mmap(
            -1,
            npages * page_size,
            flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
        )
        # transparent huge pages for the frames, as pm_create asks (a hint:
        # fewer host faults on first touch; ignored where unavailable)
        hp = getattr(mmap, "MADV_HUGEPAGE", None)
        if hp is not None:
            with contextlib.suppress(OSError):
                self.mm.madvise(hp)
        self.mv: memoryview | None = memoryview(self.mm)


# ---------------------------------------------------------------------------
# argument conversion, as cffi does it


def as_int(v: Any) -> int:
    """Convert like cffi converts to a C integer type (range not checked).

    ``int`` passes, floats are refused, anything else goes through
    ``__int__``; ``TypeError`` when that is impossible.
    """
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float) or getattr(type(v), "__int__", None) is None:
        raise TypeError("an integer is required")
    r = type(v).__int__(v)
    if not isinstance(r, int):
        raise TypeError("integer conversion failed")
    return int(r)


def i64(v: Any) -> int:
    """Convert to int64_t like cffi: TypeError, or OverflowError out of range."""
    r = v if type(v) is int else as_int(v)
    if r < _INT64_MIN or r > _INT64_MAX:
        raise OverflowError("int too big to convert")
    return r


def u64(v: Any) -> int:
    """Convert to uint64_t like cffi."""
    r = v if type(v) is int else as_int(v)
    if r < 0:
        raise OverflowError("can't convert negative number to unsigned")
    if r > _UINT64_MAX:
        raise OverflowError("int too big to convert")
    return r


def _i64_list(seq: Sequence[Any], n: int) -> list[int]:
    if len(seq) < n:
        raise IndexError("array shorter than its count")
    return [i64(x) for x in seq[:n]]


def _pieces(seq: Sequence[Any], n: int) -> list[tuple[int, int, int]]:
    if len(seq) < n:
        raise IndexError("array shorter than its count")
    out: list[tuple[int, int, int]] = []
    for p in seq[:n]:
        if not isinstance(p, (tuple, list)):
            raise TypeError(
                "initializer for ctype 'struct pm_piece' must be a list or tuple, "
                f"not {type(p).__name__}"
            )
        if len(p) != 3:
            # (cffi would zero-fill a short initializer; the twin insists on
            # triples, as uvmloan.physmem does for both backends)
            raise ValueError(f"a piece needs 3 initializers for 'struct pm_piece' (got {len(p)})")
        out.append((i64(p[0]), i64(p[1]), i64(p[2])))
    return out


# ---------------------------------------------------------------------------
# checks (same order as physmem.c)


def _frame_ok(a: Arena, f: int) -> bool:
    return 0 <= f < a.npages


def _check_frames(a: Arena, frames: list[int]) -> int:
    for f in frames:
        if not 0 <= f < a.npages:
            return PM_EFRAME
    return PM_OK


def _check_range(a: Arena, frames: list[int], nframes: int, offset: int, length: int) -> int:
    if nframes < 0 or length < 0:
        return PM_ENEGLEN
    if offset < 0 or offset >= a.page_size:
        return PM_EPAGE
    if length > nframes * a.page_size - offset:
        return PM_ERANGE
    return _check_frames(a, frames)


def _check_pieces(a: Arena, pieces: list[tuple[int, int, int]]) -> tuple[int, int]:
    total = 0
    ps = a.page_size
    npages = a.npages
    for f, off, ln in pieces:
        if not 0 <= f < npages:
            return PM_EFRAME, 0
        if ln < 0:
            return PM_ENEGLEN, 0
        if off < 0 or off >= ps:
            return PM_EPAGE, 0
        if ln > ps - off:
            return PM_EPAGE, 0
        total += ln
    return PM_OK, total


# ---------------------------------------------------------------------------
# life cycle


def pm_create(npages: Any, page_size: Any, out: list[Any]) -> int:
    npages = i64(npages)
    page_size = i64(page_size)
    out[0] = None
    if (
        page_size < PM_MIN_PAGE_SIZE
        or page_size > PM_MAX_PAGE_SIZE
        or page_size & (page_size - 1) != 0
    ):
        return PM_EINVAL
    if npages < 1:
        return PM_EINVAL
    if npages > (sys.maxsize // 2) // page_size:
        return PM_ENOMEM
    try:
        out[0] = Arena(npages, page_size)
    except (OSError, OverflowError, ValueError, MemoryError):
        return PM_ENOMEM
    return PM_OK


def pm_destroy(a: Arena | None) -> None:
    if a is None or a.mm is None:
        return
    mm, mv = a.mm, a.mv
    a.mm = None
    a.mv = None
    a.npages = 0
    if mv is not None:
        mv.release()
    # with frame views still exported the mapping goes when they do
    with contextlib.suppress(BufferError):
        mm.close()


def pm_npages(a: Arena | None) -> int:
    return PM_EINVAL if a is None else a.npages


def pm_page_size(a: Arena | None) -> int:
    return PM_EINVAL if a is None else a.page_size


def pm_base(a: Arena | None) -> memoryview | None:
    """The whole arena as a writable memoryview (the C pointer's stand-in)."""
    return None if a is None else a.mv


# ---------------------------------------------------------------------------
# single pages


@functools.lru_cache(maxsize=64)
def _pattern(byte: int, size: int) -> bytes:
    return bytes((byte,)) * size


def _fill(mv: memoryview, start: int, size: int, byte: int) -> None:
    if size <= 1 << 16:
        mv[start : start + size] = _pattern(byte, size)
    else:
        chunk = _pattern(byte, 1 << 16)
        for s in range(start, start + size, 1 << 16):
            mv[s : s + (1 << 16)] = chunk


def pm_copy_page(a: Arena | None, src: Any, dst: Any) -> int:
    src = i64(src)
    dst = i64(dst)
    if a is None or a.mv is None:
        return PM_EINVAL
    if not (_frame_ok(a, src) and _frame_ok(a, dst)):
        return PM_EFRAME
    if src != dst:
        sh = a.shift
        ps = a.page_size
        mv = a.mv
        mv[dst << sh : (dst << sh) + ps] = mv[src << sh : (src << sh) + ps]
    return PM_OK


def pm_zero_page(a: Arena | None, frame: Any) -> int:
    frame = i64(frame)
    if a is None or a.mv is None:
        return PM_EINVAL
    if not _frame_ok(a, frame):
        return PM_EFRAME
    _fill(a.mv, frame << a.shift, a.page_size, 0)
    return PM_OK


def pm_fill_page(a: Arena | None, frame: Any, byte: Any) -> int:
    frame = i64(frame)
    byte = i64(byte)
    if a is None or a.mv is None or byte < 0 or byte > 255:
        return PM_EINVAL
    if not _frame_ok(a, frame):
        return PM_EFRAME
    _fill(a.mv, frame << a.shift, a.page_size, byte)
    return PM_OK


def pm_poison_page(a: Arena | None, frame: Any) -> int:
    return pm_fill_page(a, frame, PM_POISON_BYTE)


def pm_compare_pages(a: Arena | None, f1: Any, f2: Any, diff: list[Any]) -> int:
    f1 = i64(f1)
    f2 = i64(f2)
    if a is None or a.mv is None:
        return PM_EINVAL
    if not (_frame_ok(a, f1) and _frame_ok(a, f2)):
        return PM_EFRAME
    ps = a.page_size
    mv = a.mv
    p = mv[f1 << a.shift : (f1 << a.shift) + ps]
    q = mv[f2 << a.shift : (f2 << a.shift) + ps]
    diff[0] = -1
    if f1 == f2 or p == q:
        return PM_OK
    x = int.from_bytes(p, "big") ^ int.from_bytes(q, "big")
    diff[0] = ps - 1 - (x.bit_length() - 1) // 8
    return PM_OK


# ---------------------------------------------------------------------------
# batches


def pm_copy_pages(a: Arena | None, src: Sequence[Any], dst: Sequence[Any], n: Any) -> int:
    n = i64(n)
    srcs = _i64_list(src, max(n, 0))
    dsts = _i64_list(dst, max(n, 0))
    if a is None or a.mv is None:
        return PM_EINVAL
    if n < 0:
        return PM_ENEGLEN
    for s, d in zip(srcs, dsts, strict=True):
        if not (_frame_ok(a, s) and _frame_ok(a, d)):
            return PM_EFRAME
    sh = a.shift
    ps = a.page_size
    mv = a.mv
    for s, d in zip(srcs, dsts, strict=True):
        if s != d:
            mv[d << sh : (d << sh) + ps] = mv[s << sh : (s << sh) + ps]
    return PM_OK


def pm_zero_pages(a: Arena | None, frames: Sequence[Any], n: Any) -> int:
    return pm_fill_pages(a, frames, n, 0)


def pm_fill_pages(a: Arena | None, frames: Sequence[Any], n: Any, byte: Any) -> int:
    n = i64(n)
    fl = _i64_list(frames, max(n, 0))
    byte = i64(byte)
    if a is None or a.mv is None:
        return PM_EINVAL
    if n < 0:
        return PM_ENEGLEN
    if byte < 0 or byte > 255:
        return PM_EINVAL
    rc = _check_frames(a, fl)
    if rc != PM_OK:
        return rc
    mv = a.mv
    for f in fl:
        _fill(mv, f << a.shift, a.page_size, byte)
    return PM_OK


# ---------------------------------------------------------------------------
# byte ranges through a frame list


def _walk(a: Arena, frames: list[int], offset: int, length: int) -> list[tuple[int, int, int]]:
    """(arena start, buffer start, size) chunks of a checked range."""
    out = []
    ps = a.page_size
    sh = a.shift
    pos = 0
    off = offset
    i = 0
    while pos < length:
        chunk = min(ps - off, length - pos)
        out.append(((frames[i] << sh) + off, pos, chunk))
        pos += chunk
        off = 0
        i += 1
    return out


def _copy_range(
    a: Arena | None, frames: Sequence[Any], nframes: Any, offset: Any, buf: memoryview, length: Any
) -> tuple[int, list[tuple[int, int, int]]]:
    """The checks pm_copyin and pm_copyout share; the pieces to move if OK."""
    nframes = i64(nframes)
    fl = _i64_list(frames, max(nframes, 0))
    offset = i64(offset)
    length = i64(length)
    if a is None or a.mv is None:
        return PM_EINVAL, []
    rc = _check_range(a, fl, nframes, offset, length)
    if rc != PM_OK:
        return rc, []
    if length > len(buf):
        return PM_EINVAL, []
    return PM_OK, _walk(a, fl, offset, length)


def pm_copyin(
    a: Arena | None, frames: Sequence[Any], nframes: Any, offset: Any, src: memoryview, length: Any
) -> int:
    rc, pieces = _copy_range(a, frames, nframes, offset, src, length)
    if rc != PM_OK:
        return rc
    assert a is not None and a.mv is not None
    mv = a.mv
    for start, pos, size in pieces:
        mv[start : start + size] = src[pos : pos + size]
    return PM_OK


def pm_copyout(
    a: Arena | None, frames: Sequence[Any], nframes: Any, offset: Any, dst: memoryview, length: Any
) -> int:
    rc, pieces = _copy_range(a, frames, nframes, offset, dst, length)
    if rc != PM_OK:
        return rc
    assert a is not None and a.mv is not None
    mv = a.mv
    for start, pos, size in pieces:
        dst[pos : pos + size] = mv[start : start + size]
    return PM_OK


def pm_copyin1(a: Arena | None, frame: Any, offset: Any, src: memoryview, length: Any) -> int:
    return pm_copyin(a, [frame], 1, offset, src, length)


def pm_copyout1(a: Arena | None, frame: Any, offset: Any, dst: memoryview, length: Any) -> int:
    return pm_copyout(a, [frame], 1, offset, dst, length)


# ---------------------------------------------------------------------------
# scatter / gather


def pm_gather(
    a: Arena | None,
    pieces: Sequence[Any],
    n: Any,
    dst: memoryview,
    dstlen: Any,
    written: list[Any] | None,
) -> int:
    n = i64(n)
    pl = _pieces(pieces, max(n, 0))
    dstlen = i64(dstlen)
    if a is None or a.mv is None:
        return PM_EINVAL
    if dstlen < 0:
        return PM_ENEGLEN
    if n < 0:
        return PM_ENEGLEN
    rc, total = _check_pieces(a, pl)
    if rc != PM_OK:
        return rc
    if total > dstlen:
        return PM_EBUFSIZE
    if total > len(dst):
        return PM_EINVAL
    mv = a.mv
    sh = a.shift
    pos = 0
    for f, off, ln in pl:
        start = (f << sh) + off
        dst[pos : pos + ln] = mv[start : start + ln]
        pos += ln
    if written is not None:
        written[0] = total
    return PM_OK


def pm_scatter(a: Arena | None, pieces: Sequence[Any], n: Any, src: memoryview, srclen: Any) -> int:
    n = i64(n)
    pl = _pieces(pieces, max(n, 0))
    srclen = i64(srclen)
    if a is None or a.mv is None:
        return PM_EINVAL
    if srclen < 0:
        return PM_ENEGLEN
    if n < 0:
        return PM_ENEGLEN
    rc, total = _check_pieces(a, pl)
    if rc != PM_OK:
        return rc
    if total != srclen:
        return PM_EBUFSIZE
    if total > len(src):
        return PM_EINVAL
    mv = a.mv
    sh = a.shift
    pos = 0
    for f, off, ln in pl:
        start = (f << sh) + off
        mv[start : start + ln] = src[pos : pos + ln]
        pos += ln
    return PM_OK


# ---------------------------------------------------------------------------
# Internet checksum (RFC 1071)
#
# A big-endian byte string read as one integer N = sum(w_i * 65536**(k-1-i))
# is congruent to the sum of its 16-bit words modulo 0xffff, because
# 65536 == 1 (mod 0xffff).  Concatenation is int(X || Y) = int(X) *
# 256**len(Y) + int(Y), and 256**len(Y) is 1 or 256 (mod 0xffff) as len(Y)
# is even or odd; an odd-length stream is padded with one zero byte (* 256).
# The folded ones'-complement sum is the representative in 1..0xffff of that
# class, or 0 exactly when every byte (and the initial value) is zero.

_FOLD_BITS = 1 << 15


def _mod_ffff(x: int) -> int:
    """x % 0xffff, faster for huge x by folding halves that are multiples of 16 bits."""
    n = x.bit_length()
    while n > _FOLD_BITS:
        half = ((n + 31) // 32) * 16
        x = (x >> half) + (x & ((1 << half) - 1))
        n = x.bit_length()
    return x % 0xFFFF


class _Sum:
    """Running ones'-complement sum of a byte stream."""

    __slots__ = ("acc", "nonzero", "odd")

    def __init__(self) -> None:
        self.acc = 0
        self.nonzero = False
        self.odd = False

    def add(self, data: memoryview | bytes) -> None:
        if not data:
            return
        x = int.from_bytes(data, "big")
        if x:
            self.nonzero = True
        if len(data) & 1:
            self.acc = (self.acc * 256 + _mod_ffff(x)) % 0xFFFF
            self.odd = not self.odd
        else:
            self.acc = (self.acc + _mod_ffff(x)) % 0xFFFF

    def finish(self, initial: int) -> int:
        if not self.nonzero and initial == 0:
            return 0
        acc = self.acc * 256 if self.odd else self.acc
        r = (acc + initial) % 0xFFFF
        return r if r else 0xFFFF


def pm_cksum(
    a: Arena | None, pieces: Sequence[Any], n: Any, initial: Any, sum_out: list[Any]
) -> int:
    n = i64(n)
    pl = _pieces(pieces, max(n, 0))
    initial = u64(initial)
    if a is None or a.mv is None:
        return PM_EINVAL
    if n < 0:
        return PM_ENEGLEN
    rc, _total = _check_pieces(a, pl)
    if rc != PM_OK:
        return rc
    mv = a.mv
    sh = a.shift
    s = _Sum()
    for f, off, ln in pl:
        start = (f << sh) + off
        s.add(mv[start : start + ln])
    sum_out[0] = s.finish(initial)
    return PM_OK


def pm_gather_cksum(
    a: Arena | None,
    pieces: Sequence[Any],
    n: Any,
    dst: memoryview,
    dstlen: Any,
    initial: Any,
    written: list[Any] | None,
    sum_out: list[Any],
) -> int:
    """pm_gather and pm_cksum in one pass; on error nothing is written."""
    n = i64(n)
    pl = _pieces(pieces, max(n, 0))
    dstlen = i64(dstlen)
    initial = u64(initial)
    if a is None or a.mv is None:
        return PM_EINVAL
    if dstlen < 0 or n < 0:
        return PM_ENEGLEN
    rc, total = _check_pieces(a, pl)
    if rc != PM_OK:
        return rc
    if total > dstlen:
        return PM_EBUFSIZE
    if total > len(dst):
        return PM_EINVAL
    mv = a.mv
    sh = a.shift
    s = _Sum()
    pos = 0
    for f, off, ln in pl:
        start = (f << sh) + off
        dst[pos : pos + ln] = mv[start : start + ln]
        s.add(dst[pos : pos + ln])
        pos += ln
    if written is not None:
        written[0] = total
    sum_out[0] = s.finish(initial)
    return PM_OK


def pm_cksum_buf(buf: memoryview | bytes, length: Any, initial: Any, sum_out: list[Any]) -> int:
    length = i64(length)
    initial = u64(initial)
    if length < 0:
        return PM_ENEGLEN
    if length > len(buf):
        return PM_EINVAL
    s = _Sum()
    s.add(buf[:length])
    sum_out[0] = s.finish(initial)
    return PM_OK


def cksum_sum_bytes(data: memoryview | bytes, initial: int = 0) -> int:
    """Folded ones'-complement sum of one buffer (no argument checks)."""
    s = _Sum()
    s.add(data)
    return s.finish(initial)


__all__ = [
    "PM_EBUFSIZE",
    "PM_EFRAME",
    "PM_EINVAL",
    "PM_ENEGLEN",
    "PM_ENOMEM",
    "PM_EPAGE",
    "PM_ERANGE",
    "PM_MAX_PAGE_SIZE",
    "PM_MIN_PAGE_SIZE",
    "PM_OK",
    "PM_POISON_BYTE",
    "Arena",
    "as_int",
    "i64",
    "pm_base",
    "pm_cksum",
    "pm_cksum_buf",
    "pm_compare_pages",
    "pm_copy_page",
    "pm_copy_pages",
    "pm_copyin",
    "pm_copyin1",
    "pm_copyout",
    "pm_copyout1",
    "pm_create",
    "pm_destroy",
    "pm_fill_page",
    "pm_fill_pages",
    "pm_gather",
    "pm_npages",
    "pm_page_size",
    "pm_poison_page",
    "pm_scatter",
    "pm_zero_page",
    "pm_zero_pages",
    "u64",
]
