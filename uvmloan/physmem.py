"""Physical memory: the page-frame arena and the byte-moving fast paths.

All page frames of a machine live in one arena (an anonymous, private,
``MAP_NORESERVE`` mapping: untouched frames cost nothing).  A frame is a
plain ``int`` in ``range(npages)``.  :class:`PhysMem` is the only interface the
rest of the model uses; it drives one of two backends with the same low-level
API and error codes:

``"c"``
    the compiled cffi module ``uvmloan._physmem`` (``cext/physmem.c``);
``"python"``
    the pure-Python twin :mod:`uvmloan._physmem_py`.

The backend is selected once, at import: C, unless the environment sets
``UVMLOAN_PUREPYTHON=1`` (then the C module is not even imported) or the C
module is missing (only possible with an optional build).  ``BACKEND`` names
the default, :func:`available_backends` lists what can be asked for.

Every operation checks all of its arguments before it moves a byte; a failed
call changes nothing and raises :class:`~uvmloan.errors.FrameRangeError`
(frame, offset or length outside a page, the frame list or the arena),
:class:`~uvmloan.errors.PhysMemValueError` (negative length, fill byte out of
range, size mismatch, closed arena) or
:class:`~uvmloan.errors.PhysMemTypeError` (wrong type, read-only output
buffer), with a message naming the offending frame, offset and length.

Integers are accepted as cffi accepts them (``int`` and ``bool``, or objects
with ``__int__``; never floats), on both backends.

A ``PhysMem`` is not meant to be shared between threads without a lock.
"""

from __future__ import annotations

import array
import contextlib
import functools
import mmap
import os
import struct
import weakref
from collections.abc import Iterable
from itertools import starmap
from operator import itemgetter
from types import ModuleType
from typing import Any, ClassVar, Final, Protocol, TypeAlias

import attrs

from . import _physmem_py as _py
from .errors import FrameRangeError, PhysMemError, PhysMemTypeError, PhysMemValueError

_cmod: ModuleType | None = None
_fastmod: ModuleType | None = None
if os.environ.get("UVMLOAN_PUREPYTHON", "") != "1":
    try:
        from . import _physmem as _imported_c
    except ImportError:  # only with UVMLOAN_OPTIONAL_EXT=1 builds
        pass
    else:
        _cmod = _imported_c
        try:
            from . import _physmem_fast as _imported_fast
        except ImportError:  # optional builds; the cffi path does the same work
            pass
        else:
            _fastmod = _imported_fast

# result buffers of copyout/gather are written in full before they are read:
# skip cffi's zero-fill
_c_alloc_noclear: Any = (
    _cmod.ffi.new_allocator(should_clear_after_alloc=False) if _cmod is not None else None
)

BACKEND: Final[str] = "c" if _cmod is not None else "python"
"""The backend a ``PhysMem`` uses unless told otherwise: ``"c"`` or ``"python"``."""

POISON_BYTE: Final[int] = _py.PM_POISON_BYTE
"""The byte released frames are filled with when poisoning is on (0xDB)."""

Piece: TypeAlias = tuple[int, int, int]
"""A scatter/gather piece: (frame, offset, length), within one page."""

PieceArray: TypeAlias = "array.array[int]"
"""Pieces as one flat ``array('q')`` of (frame, offset, length) triples."""

BufferLike: TypeAlias = "bytes | bytearray | memoryview | array.array[Any] | mmap.mmap"
WritableBuffer: TypeAlias = "bytearray | memoryview | array.array[Any] | mmap.mmap"


def available_backends() -> tuple[str, ...]:
    """The backends that can be asked for (``"c"`` first when it is there)."""
    return ("c", "python") if _cmod is not None else ("python",)


_LENGTH = itemgetter(2)
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1
_BIG_ARRAY = 256  # convert longer frame lists through array('q'), it is faster
_BIG_PIECES = 8  # pack longer piece lists with struct, it is faster
_PIECE = struct.Struct("=qqq")  # the layout of struct pm_piece (three int64_t)

# error code -> (class, what it means); the fallback when no diagnosis applies
_CODES: dict[int, tuple[type[PhysMemError], str]] = {
    _py.PM_EFRAME: (FrameRangeError, "frame out of range"),
    _py.PM_EPAGE: (FrameRangeError, "offset or length outside the page"),
    _py.PM_ERANGE: (FrameRangeError, "range past the end of the frame list"),
    _py.PM_ENEGLEN: (PhysMemValueError, "negative length"),
    _py.PM_EINVAL: (PhysMemValueError, "invalid argument"),
    _py.PM_ENOMEM: (PhysMemValueError, "cannot map the arena"),
    _py.PM_EBUFSIZE: (PhysMemValueError, "buffer size mismatch"),
}


def _tname(v: object) -> str:
    return type(v).__name__


def _as_int(name: str, v: object) -> int:
    """cffi's integer conversion, as a PhysMemTypeError naming the argument."""
    try:
        return _py.as_int(v)
    except TypeError:
        raise PhysMemTypeError(f"{name} must be an int, not {_tname(v)}") from None


class CopyPage(Protocol):
    """The type of :attr:`PhysMem.copy_page`."""

    def __call__(self, src: int, dst: int) -> None: ...


class CopyPages(Protocol):
    """The type of :attr:`PhysMem.copy_pages`."""

    def __call__(self, srcs: Iterable[int], dsts: Iterable[int]) -> None: ...


class ZeroPage(Protocol):
    """The type of :attr:`PhysMem.zero_page`."""

    def __call__(self, frame: int) -> None: ...


class CopyIn1(Protocol):
    """The type of :attr:`PhysMem.copyin1`."""

    def __call__(self, frame: int, offset: int, data: BufferLike) -> None: ...


class CksumSum(Protocol):
    """The type of :attr:`PhysMem.cksum_sum`."""

    def __call__(self, pieces: Iterable[Piece] | PieceArray, initial: int = 0) -> int: ...


class CksumBytes(Protocol):
    """The type of :attr:`PhysMem.cksum_bytes`."""

    def __call__(self, data: BufferLike, initial: int = 0) -> int: ...


class GatherCksum(Protocol):
    """The type of :attr:`PhysMem.gather_cksum`."""

    def __call__(
        self,
        pieces: Iterable[Piece] | PieceArray,
        out: WritableBuffer,
        offset: int = 0,
        initial: int = 0,
    ) -> tuple[int, int]: ...


class GatherFrame(Protocol):
    """The type of :attr:`PhysMem.gather_frame`."""

    def __call__(
        self, parts: list[Any], size: int, sum_from: int, initial: int = 0
    ) -> tuple[bytearray, int]: ...


def _live(ref: weakref.ReferenceType[PhysMem], op: str) -> PhysMem:
    pm = ref()
    if pm is None:  # a bound method outlived its PhysMem
        raise PhysMemValueError(f"{op}: the PhysMem is closed")
    return pm


def _slow_zero_page(ref: weakref.ReferenceType[PhysMem], frame: int) -> None:
    _live(ref, "zero_page")._zero_page(frame)


def _slow_copyin1(
    ref: weakref.ReferenceType[PhysMem], frame: int, offset: int, data: BufferLike
) -> None:
    _live(ref, "copyin").copyin([frame], offset, data)


def _slow_cksum_sum(
    ref: weakref.ReferenceType[PhysMem], pieces: Iterable[Piece] | PieceArray, initial: int = 0
) -> int:
    return _live(ref, "cksum_sum")._cksum_sum(pieces, initial)


def _slow_cksum_bytes(
    ref: weakref.ReferenceType[PhysMem], data: BufferLike, initial: int = 0
) -> int:
    return _live(ref, "cksum_bytes")._cksum_bytes(data, initial)


def _slow_gather_cksum(
    ref: weakref.ReferenceType[PhysMem],
    pieces: Iterable[Piece] | PieceArray,
    out: WritableBuffer,
    offset: int = 0,
    initial: int = 0,
) -> tuple[int, int]:
    return _live(ref, "gather_cksum")._gather_cksum(pieces, out, offset, initial)


def _swap16(s: int) -> int:
    return ((s >> 8) | (s << 8)) & 0xFFFF


def _slow_gather_frame(
    ref: weakref.ReferenceType[PhysMem],
    parts: list[Any],
    size: int,
    sum_from: int,
    initial: int = 0,
) -> tuple[bytearray, int]:
    return _live(ref, "gather_frame")._gather_frame(parts, size, sum_from, initial)


def _slow_copy_page(ref: weakref.ReferenceType[PhysMem], src: int, dst: int) -> None:
    pm = ref()
    if pm is None:  # a bound copy_page outlived its PhysMem
        raise PhysMemValueError("copy_page: the PhysMem is closed")
    pm._copy_page(src, dst)


def _slow_copy_pages(
    ref: weakref.ReferenceType[PhysMem], srcs: Iterable[int], dsts: Iterable[int]
) -> None:
    pm = ref()
    if pm is None:
        raise PhysMemValueError("copy_pages: the PhysMem is closed")
    pm._copy_pages(srcs, dsts)


def _c_destroyer(lib: Any, h: Any) -> Any:
    def destroy(_base: Any) -> None:
        lib.pm_destroy(h)

    return destroy


@attrs.define(slots=True)
class _Cells:
    """Result cells reused by the hot C calls (one arena, one thread)."""

    written: Any
    sum: Any


@attrs.define(slots=True, init=False, eq=False, repr=False)
class PhysMem:
    """The physical memory of one machine: ``npages`` frames of ``page_size`` bytes.

    ``backend`` is ``"c"``, ``"python"`` or ``None`` (the default backend,
    :data:`BACKEND`); asking for a backend that is not available raises
    ``PhysMemValueError``.  ``poison`` (default: environment
    ``UVMLOAN_POISON=1``) makes :meth:`release_frame` fill released frames
    with :data:`POISON_BYTE`, so a use after free shows as 0xDB bytes.

    Use as a context manager, or call :meth:`close`; frame views handed out
    by :meth:`frame_view` keep the mapping alive until they are released.

    ``copy_page(src, dst)`` copies frame ``src`` onto frame ``dst``
    (pmap_copy_page(src, dst)); ``copy_pages(srcs, dsts)`` copies
    ``srcs[i]`` onto ``dsts[i]`` for every i, in order, in one call.  Both
    are attributes bound when the arena is made: with the C backend they are
    the methods of a ``uvmloan._physmem_fast.Fast`` bound to this arena (no
    Python frame, no cffi conversion per call) which hand anything but the
    common case to the Python methods, so arguments and errors are those of
    every other operation.  ``zero_page(frame)``, ``copyin1(frame, offset, data)``
    (``copyin`` of one frame: a user store), :meth:`cksum_sum`, :meth:`cksum_bytes`,
    :meth:`gather_cksum` and :meth:`gather_frame` are bound the same way.
    """

    POISON_BYTE: ClassVar[int] = POISON_BYTE

    copy_page: CopyPage
    copy_pages: CopyPages
    zero_page: ZeroPage
    copyin1: CopyIn1
    cksum_sum: CksumSum
    cksum_bytes: CksumBytes
    gather_cksum: GatherCksum
    gather_frame: GatherFrame

    npages: int
    page_size: int
    backend: str
    poison: bool
    _h: Any
    _keep: Any
    _view: memoryview | None
    _c: bool
    _lib: Any
    _ffi: Any
    _shift: int
    _closed: bool
    _cells: _Cells
    _fast: Any

    def __init__(
        self,
        npages: int,
        page_size: int = 4096,
        *,
        backend: str | None = None,
        poison: bool | None = None,
    ) -> None:
        if isinstance(npages, bool) or not isinstance(npages, int):
            raise PhysMemTypeError(f"npages must be an int, not {_tname(npages)}")
        if isinstance(page_size, bool) or not isinstance(page_size, int):
            raise PhysMemTypeError(f"page_size must be an int, not {_tname(page_size)}")
        if not (
            _py.PM_MIN_PAGE_SIZE <= page_size <= _py.PM_MAX_PAGE_SIZE
            and page_size & (page_size - 1) == 0
        ):
            raise PhysMemValueError(
                f"page size {page_size} is not a power of two between "
                f"{_py.PM_MIN_PAGE_SIZE} and {_py.PM_MAX_PAGE_SIZE}"
            )
        if npages < 1:
            raise PhysMemValueError(f"npages must be at least 1, not {npages}")
        if npages > _INT64_MAX // page_size:
            raise PhysMemValueError(
                f"an arena of {npages} frames of {page_size} bytes does not fit in 64 bits"
            )
        if backend is None:
            backend = BACKEND
        if backend not in ("c", "python"):
            raise PhysMemValueError(f"unknown physmem backend {backend!r} (want 'c' or 'python')")
        if backend == "c" and _cmod is None:
            why = (
                "UVMLOAN_PUREPYTHON=1 is set"
                if os.environ.get("UVMLOAN_PUREPYTHON", "") == "1"
                else "the C module uvmloan._physmem is not built"
            )
            raise PhysMemValueError(f"physmem backend 'c' is not available: {why}")
        if poison is None:
            poison = os.environ.get("UVMLOAN_POISON", "") == "1"

        self.npages = npages
        self.page_size = page_size
        self.backend = backend
        self.poison = bool(poison)
        self._shift = page_size.bit_length() - 1
        self._closed = True
        self._h = None
        self._keep = None
        self._view = None
        self._fast = None
        nbytes = npages * page_size
        if backend == "c":
            assert _cmod is not None
            ffi: Any = _cmod.ffi
            lib: Any = _cmod.lib
            pp = ffi.new("pm_arena **")
            rc = lib.pm_create(npages, page_size, pp)
            if rc != 0:
                self._create_failed(rc)
            h = pp[0]
            # The gc'd base pointer owns the arena: the whole-arena buffer (and
            # so every frame view sliced from it) keeps it alive, and dropping
            # the last of them unmaps it.
            keep = ffi.gc(lib.pm_base(h), _c_destroyer(lib, h))
            view = memoryview(ffi.buffer(keep, nbytes)).toreadonly()
            self._c = True
            self._ffi = ffi
            self._cells = _Cells(ffi.new("int64_t *"), ffi.new("uint32_t *"))
            self._lib = lib
        else:
            out: list[Any] = [None]
            rc = _py.pm_create(npages, page_size, out)
            if rc != 0:
                self._create_failed(rc)
            h = keep = out[0]
            base = _py.pm_base(h)
            assert base is not None
            view = base.toreadonly()
            self._c = False
            self._ffi = None
            self._lib = _py
        self._h = h
        self._keep = keep
        self._view = view
        self._closed = False
        # The hot copies: bound once, cycle-free (the slow paths hold this
        # PhysMem weakly, so dropping it still unmaps the arena at once).
        ref = weakref.ref(self)
        slow_one = functools.partial(_slow_copy_page, ref)
        slow_many = functools.partial(_slow_copy_pages, ref)
        slow_zero = functools.partial(_slow_zero_page, ref)
        slow_in1 = functools.partial(_slow_copyin1, ref)
        slow_sum = functools.partial(_slow_cksum_sum, ref)
        slow_bytes = functools.partial(_slow_cksum_bytes, ref)
        slow_gather = functools.partial(_slow_gather_cksum, ref)
        slow_frame = functools.partial(_slow_gather_frame, ref)
        if self._c and _fastmod is not None:
            addr = int(self._ffi.cast("uintptr_t", h))
            fast = _fastmod.Fast(
                addr,
                keep,
                slow_one,
                slow_many,
                slow_zero,
                slow_in1,
                slow_sum,
                slow_bytes,
                slow_gather,
                slow_frame,
            )
            self._fast = fast
            self.copy_page = fast.copy_page
            self.copy_pages = fast.copy_pages
            self.zero_page = fast.zero_page
            self.copyin1 = fast.copyin1
            self.cksum_sum = fast.cksum_sum
            self.cksum_bytes = fast.cksum_bytes
            self.gather_cksum = fast.gather_cksum
            self.gather_frame = fast.gather_frame
        else:
            self.copy_page = slow_one
            self.copy_pages = slow_many
            self.zero_page = slow_zero
            self.copyin1 = slow_in1
            self.cksum_sum = slow_sum
            self.cksum_bytes = slow_bytes
            self.gather_cksum = slow_gather
            self.gather_frame = slow_frame

    def _create_failed(self, rc: int) -> None:
        if rc == _py.PM_ENOMEM:
            raise MemoryError(
                f"cannot map an arena of {self.npages} frames of {self.page_size} bytes"
            )
        raise PhysMemValueError(
            f"cannot create an arena of {self.npages} frames of {self.page_size} bytes (error {rc})"
        )

    # -- life cycle ---------------------------------------------------------

    def close(self) -> None:
        """Release the arena (idempotent).  Outstanding frame views stay valid."""
        if self._closed:
            return
        self._closed = True
        if self._fast is not None:
            self._fast.invalidate()  # before the arena can go
        view, self._view = self._view, None
        if view is not None:
            with contextlib.suppress(BufferError):  # we never export it
                view.release()
        if self._c:
            self._h = self._ffi.NULL
            self._keep = None  # unmapped now, or when the last frame view goes
        else:
            _py.pm_destroy(self._h)
            self._keep = None

    def __enter__(self) -> PhysMem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"PhysMem(npages={self.npages}, page_size={self.page_size}, "
            f"backend={self.backend!r}, poison={self.poison}, {state})"
        )

    @property
    def nbytes(self) -> int:
        """Size of the arena in bytes."""
        return self.npages * self.page_size

    @property
    def closed(self) -> bool:
        return self._closed

    # -- single pages ---------------------------------------------------------

    def _copy_page(self, src: int, dst: int) -> None:
        """``copy_page`` through the backend's module (see the class docstring)."""
        try:
            rc = self._lib.pm_copy_page(self._h, src, dst)
        except (TypeError, OverflowError):
            rc = None
        if rc != 0:
            raise self._diag_scalar("copy_page", rc, (("src", src), ("dst", dst)))

    def _zero_page(self, frame: int) -> None:
        """``zero_page``: fill ``frame`` with zeros."""
        try:
            rc = self._lib.pm_zero_page(self._h, frame)
        except (TypeError, OverflowError):
            rc = None
        if rc != 0:
            raise self._diag_scalar("zero_page", rc, (("frame", frame),))

    def fill_page(self, frame: int, byte: int) -> None:
        """Fill ``frame`` with ``byte`` (0..255)."""
        try:
            rc = self._lib.pm_fill_page(self._h, frame, byte)
        except (TypeError, OverflowError):
            rc = None
        if rc != 0:
            raise self._diag_scalar("fill_page", rc, (("frame", frame),), byte=byte)

    def compare_pages(self, a: int, b: int) -> int:
        """-1 if frames ``a`` and ``b`` hold the same bytes, else the first differing offset."""
        if self._c:
            out = self._ffi.new("int64_t *")
        else:
            out = [None]
        try:
            rc = self._lib.pm_compare_pages(self._h, a, b, out)
        except (TypeError, OverflowError):
            rc = None
        if rc != 0:
            raise self._diag_scalar("compare_pages", rc, (("a", a), ("b", b)))
        return int(out[0])

    # -- batches --------------------------------------------------------------

    def _copy_pages(self, srcs: Iterable[int], dsts: Iterable[int]) -> None:
        """``copy_pages`` through the backend's module (see the class docstring)."""
        s = self._frame_seq(srcs, "srcs")
        d = self._frame_seq(dsts, "dsts")
        n = len(s)
        if len(d) != n:
            raise PhysMemValueError(
                f"copy_pages: {n} source frames but {len(d)} destination frames"
            )
        try:
            if self._c:
                rc = self._lib.pm_copy_pages(self._h, self._c_frames(s), self._c_frames(d), n)
            else:
                rc = _py.pm_copy_pages(self._h, s, d, n)
        except (TypeError, OverflowError):
            rc = None
        if rc != 0:
            raise self._diag_batch("copy_pages", rc, (("srcs", s), ("dsts", d)))

    def zero_pages(self, frames: Iterable[int]) -> None:
        """Zero every frame of ``frames`` (all are checked first)."""
        f = self._frame_seq(frames, "frames")
        try:
            cf = self._c_frames(f) if self._c else f
            rc = self._lib.pm_zero_pages(self._h, cf, len(f))
        except (TypeError, OverflowError):
            rc = None
        if rc != 0:
            raise self._diag_batch("zero_pages", rc, (("frames", f),))

    def fill_pages(self, frames: Iterable[int], byte: int) -> None:
        """Fill every frame of ``frames`` with ``byte`` (all are checked first)."""
        f = self._frame_seq(frames, "frames")
        try:
            cf = self._c_frames(f) if self._c else f
            rc = self._lib.pm_fill_pages(self._h, cf, len(f), byte)
        except (TypeError, OverflowError):
            rc = None
        if rc != 0:
            raise self._diag_batch("fill_pages", rc, (("frames", f),), byte=byte)

    # -- byte ranges through a frame list ---------------------------------------

    def copyin(self, frames: Iterable[int], offset: int, data: BufferLike) -> None:
        """Write ``data`` at byte ``offset`` of ``frames[0]``, continuing into frames[1:]."""
        if self._c:
            if type(data) is bytes:
                buf: Any = data
                n = len(data)
            else:
                buf = self._c_inbuf(data, "data")
                n = len(buf)
            lib = self._lib
            h = self._h
            f = self._frame_seq(frames, "frames")
            try:
                if len(f) == 1:
                    rc = lib.pm_copyin1(h, f[0], offset, buf, n)
                else:
                    rc = lib.pm_copyin(h, self._c_frames(f), len(f), offset, buf, n)
            except (TypeError, OverflowError):
                rc = None
        else:
            mv = self._py_inbuf(data, "data")
            n = len(mv)
            f = self._frame_seq(frames, "frames")
            try:
                rc = _py.pm_copyin(self._h, f, len(f), offset, mv, n)
            except (TypeError, OverflowError):
                rc = None
        if rc != 0:
            raise self._diag_range("copyin", rc, f, offset, n)

    def copyout(self, frames: Iterable[int], offset: int, length: int) -> bytes:
        """Read ``length`` bytes from byte ``offset`` of ``frames[0]`` on."""
        if type(frames) is list and len(frames) == 1:
            # the common case (a user load): one frame, read through the
            # read-only view; anything unusual takes the checked path below
            f0 = frames[0]
            view = self._view
            if (
                type(f0) is int
                and type(offset) is int
                and type(length) is int
                and 0 <= f0 < self.npages
                and 0 <= offset < self.page_size
                and 0 <= length <= self.page_size - offset
                and view is not None
            ):
                start = (f0 << self._shift) + offset
                return view[start : start + length].tobytes()
        f = self._frame_seq(frames, "frames")
        if type(length) is not int:
            length = _as_int("copyout: length", length)
        # check the size before allocating the result
        if not 0 <= length <= len(f) << self._shift:
            raise self._diag_range("copyout", None, f, offset, length)
        if self._c:
            ffi = self._ffi
            buf = _c_alloc_noclear("char[]", length)  # fully written before use
            try:
                if len(f) == 1:
                    rc = self._lib.pm_copyout1(self._h, f[0], offset, buf, length)
                else:
                    cf = self._c_frames(f)
                    rc = self._lib.pm_copyout(self._h, cf, len(f), offset, buf, length)
            except (TypeError, OverflowError):
                rc = None
            if rc == 0:
                res: bytes = ffi.unpack(buf, length)
                return res
        else:
            out = bytearray(length)
            try:
                rc = _py.pm_copyout(self._h, f, len(f), offset, memoryview(out), length)
            except (TypeError, OverflowError):
                rc = None
            if rc == 0:
                return bytes(out)
        raise self._diag_range("copyout", rc, f, offset, length)

    def copyout_into(self, frames: Iterable[int], offset: int, out: WritableBuffer) -> None:
        """Fill the writable buffer ``out`` from byte ``offset`` of ``frames[0]`` on."""
        f = self._frame_seq(frames, "frames")
        if self._c:
            buf = self._c_outbuf(out, "out")
            n = len(buf)
            try:
                rc = self._lib.pm_copyout(self._h, self._c_frames(f), len(f), offset, buf, n)
            except (TypeError, OverflowError):
                rc = None
        else:
            mv = self._py_outbuf(out, "out")
            n = len(mv)
            try:
                rc = _py.pm_copyout(self._h, f, len(f), offset, mv, n)
            except (TypeError, OverflowError):
                rc = None
        if rc != 0:
            raise self._diag_range("copyout_into", rc, f, offset, n)

    # -- scatter / gather -------------------------------------------------------

    def gather(self, pieces: Iterable[Piece] | PieceArray) -> bytes:
        """The concatenation of the (frame, offset, length) pieces (a NIC's DMA read)."""
        p = self._piece_seq(pieces)
        try:
            total = sum(p[2::3]) if type(p) is array.array else sum(map(_LENGTH, p))
        except (TypeError, IndexError, KeyError):
            total = -1
        if type(total) is not int or not 0 <= total <= len(p) << self._shift:
            raise self._diag_pieces("gather", None, p)
        if self._c:
            ffi = self._ffi
            buf = _c_alloc_noclear("char[]", total)  # fully written before use
            rc = self._c_pieces_call(self._lib.pm_gather, p, buf, total, ffi.NULL)
            if rc == 0:
                res: bytes = ffi.unpack(buf, total)
                return res
        else:
            out = bytearray(total)
            try:
                rc = _py.pm_gather(self._h, p, len(p), memoryview(out), total, None)
            except (TypeError, OverflowError, ValueError, IndexError):
                rc = None
            if rc == 0:
                return bytes(out)
        raise self._diag_pieces("gather", rc, p)

    def gather_into(self, pieces: Iterable[Piece] | PieceArray, out: WritableBuffer) -> int:
        """Gather the pieces into the start of ``out``; returns the number of bytes."""
        p = self._piece_seq(pieces)
        if self._c:
            buf = self._c_outbuf(out, "out")
            n = len(buf)
            written = self._ffi.new("int64_t *")
            rc = self._c_pieces_call(self._lib.pm_gather, p, buf, n, written)
            if rc == 0:
                return int(written[0])
        else:
            mv = self._py_outbuf(out, "out")
            n = len(mv)
            cell: list[Any] = [None]
            try:
                rc = _py.pm_gather(self._h, p, len(p), mv, n, cell)
            except (TypeError, OverflowError, ValueError, IndexError):
                rc = None
            if rc == 0:
                return int(cell[0])
        raise self._diag_pieces("gather_into", rc, p, bufsize=n)

    def _gather_cksum(
        self,
        pieces: Iterable[Piece] | PieceArray,
        out: WritableBuffer,
        offset: int = 0,
        initial: int = 0,
    ) -> tuple[int, int]:
        """``gather_cksum``: gather the pieces into ``out`` at ``offset`` and sum them, in one pass.

        What a NIC without checksum offload costs the CPU: the payload is read
        once, copied into the frame and summed while it is in cache.  Returns
        ``(nbytes, sum)``, the sum folded and not inverted as :meth:`cksum_sum`
        (``initial`` is added in: a pseudo-header sum, say).  ``pieces`` may be
        a flat ``array('q')`` of triples, the form that builds no Python object
        per piece.  On error nothing is written.
        """
        if type(offset) is not int:
            offset = _as_int("gather_cksum: offset", offset)
        if self._c:
            # The per-segment path of a NIC without offload: a flat piece
            # array and a bytearray frame go straight to C, with result cells
            # kept on the arena (the model is single threaded).
            if type(pieces) is array.array and type(out) is bytearray and pieces.typecode == "q":
                size = len(out)
                if 0 <= offset <= size and not len(pieces) % 3:
                    ffi = self._ffi
                    cells = self._cells
                    rc = self._lib.pm_gather_cksum(
                        self._h,
                        ffi.from_buffer("pm_piece[]", pieces),
                        len(pieces) // 3,
                        ffi.from_buffer(out) + offset,
                        size - offset,
                        initial,
                        cells.written,
                        cells.sum,
                    )
                    if rc == 0:
                        return int(cells.written[0]), int(cells.sum[0])
            p = self._piece_seq(pieces)
            buf = self._c_outbuf(out, "out")
            size = len(buf)
            if not 0 <= offset <= size:
                raise PhysMemValueError(
                    f"gather_cksum: offset {offset} is outside out ({size} bytes)"
                )
            n = size - offset
            written = self._ffi.new("int64_t *")
            res = self._ffi.new("uint32_t *")
            rc = self._c_pieces_call(
                self._lib.pm_gather_cksum, p, buf + offset, n, initial, written, res
            )
            if rc == 0:
                return int(written[0]), int(res[0])
        else:
            p = self._piece_seq(pieces)
            mv = self._py_outbuf(out, "out")
            size = len(mv)
            if not 0 <= offset <= size:
                raise PhysMemValueError(
                    f"gather_cksum: offset {offset} is outside out ({size} bytes)"
                )
            n = size - offset
            cell: list[Any] = [None]
            sum_cell: list[Any] = [None]
            try:
                rc = _py.pm_gather_cksum(
                    self._h, p, len(p), mv[offset:], n, initial, cell, sum_cell
                )
            except (TypeError, OverflowError, ValueError, IndexError):
                rc = None
            if rc == 0:
                return int(cell[0]), int(sum_cell[0])
        raise self._diag_pieces("gather_cksum", rc, p, bufsize=n, initial=initial)

    def _gather_frame(
        self, parts: list[Any], size: int, sum_from: int, initial: int = 0
    ) -> tuple[bytearray, int]:
        """``gather_frame``: a new ``size``-byte frame of ``parts``, and its sum from ``sum_from``.

        What a NIC reads for one transmitted packet: each part is either a
        flat ``array('q')`` of (frame, offset, length) triples (a run of arena
        pieces, gathered and summed in one pass as :meth:`gather_cksum`) or
        any other contiguous buffer (kernel memory, copied).  The parts must
        hold exactly ``size`` bytes.  The sum is the folded ones'-complement
        sum (not inverted, as :meth:`cksum_sum`) of the frame's bytes from
        offset ``sum_from`` on (the transport segment: the checksum field
        still zero) plus ``initial`` (a pseudo-header sum; any value in
        [0, 2**64)), or 0 when ``sum_from`` is negative; a run of arena pieces
        must then start at or after ``sum_from``.  The bound method is the C
        one when the extension is built: the frame is a new bytearray filled
        part by part, without a Python object per piece.  This is its
        Python twin, built on :meth:`gather_cksum` and :meth:`cksum_bytes`.
        """
        if type(size) is not int:
            size = _as_int("gather_frame: size", size)
        if type(sum_from) is not int:
            sum_from = _as_int("gather_frame: sum_from", sum_from)
        if type(initial) is not int:
            initial = _as_int("gather_frame: initial", initial)
        if not 0 <= initial < 1 << 64:
            raise PhysMemValueError(f"gather_frame: initial {initial} is not in [0, 2**64)")
        if size < 0:
            raise PhysMemValueError(f"gather_frame: negative size {size}")
        summing = sum_from >= 0
        frame = bytearray(size)
        pos = 0
        total = 0  # each part's sum placed at its parity in the segment, unfolded
        for i, part in enumerate(parts):
            if type(part) is array.array:
                if summing and pos < sum_from:
                    raise PhysMemValueError(
                        f"gather_frame: a run of arena pieces at {pos}, before sum_from {sum_from}"
                    )
                n, s = self.gather_cksum(part, frame, pos)
                if summing:
                    total += _swap16(s) if (pos - sum_from) & 1 else s
                pos += n
            else:
                try:
                    mv = memoryview(part).cast("B")
                except TypeError:
                    raise PhysMemTypeError(
                        f"gather_frame: part {i} is a {type(part).__name__}: expected an"
                        " array('q') of (frame, offset, length) triples or a contiguous buffer"
                    ) from None
                end = pos + len(mv)
                if end > size:
                    raise PhysMemValueError(
                        f"gather_frame: the parts hold more than {size} bytes"
                    )
                frame[pos:end] = mv
                if summing and end > sum_from:
                    start = pos if pos > sum_from else sum_from
                    s = self.cksum_bytes(memoryview(frame)[start:end])
                    total += _swap16(s) if (start - sum_from) & 1 else s
                pos = end
        if pos != size:
            raise PhysMemValueError(f"gather_frame: the parts hold {pos} bytes, not {size}")
        if summing:
            total += initial
        while total > 0xFFFF:
            total = (total & 0xFFFF) + (total >> 16)
        return frame, total

    def scatter(self, pieces: Iterable[Piece] | PieceArray, data: BufferLike) -> None:
        """Write ``data`` over the pieces in order; ``len(data)`` must equal their total."""
        p = self._piece_seq(pieces)
        if self._c:
            if type(data) is bytes:
                buf: Any = data
                n = len(data)
            else:
                buf = self._c_inbuf(data, "data")
                n = len(buf)
            rc = self._c_pieces_call(self._lib.pm_scatter, p, buf, n)
        else:
            mv = self._py_inbuf(data, "data")
            n = len(mv)
            try:
                rc = _py.pm_scatter(self._h, p, len(p), mv, n)
            except (TypeError, OverflowError, ValueError, IndexError):
                rc = None
        if rc != 0:
            raise self._diag_pieces("scatter", rc, p, bufsize=n)

    # -- Internet checksum --------------------------------------------------------

    def _cksum_sum(self, pieces: Iterable[Piece] | PieceArray, initial: int = 0) -> int:
        """``cksum_sum``: the folded 16-bit ones'-complement sum (RFC 1071, not
        inverted) of the pieces.

        The sum is over the byte stream the pieces form when concatenated, so
        odd lengths and offsets anywhere in the list are fine.  ``initial`` (any
        integer in 0..2**64-1, e.g. a pseudo-header sum) is added in.
        """
        p = self._piece_seq(pieces)
        if self._c:
            out = self._ffi.new("uint32_t *")
            rc = self._c_pieces_call(self._lib.pm_cksum, p, initial, out)
        else:
            out = [None]
            try:
                rc = _py.pm_cksum(self._h, p, len(p), initial, out)
            except (TypeError, OverflowError, ValueError, IndexError):
                rc = None
        if rc != 0:
            raise self._diag_pieces("cksum_sum", rc, p, initial=initial)
        return int(out[0])

    def in_cksum(self, pieces: Iterable[Piece] | PieceArray, initial: int = 0) -> int:
        """The Internet checksum of the pieces: ``~cksum_sum(pieces, initial) & 0xffff``."""
        return ~self.cksum_sum(pieces, initial) & 0xFFFF

    def _cksum_bytes(self, data: BufferLike, initial: int = 0) -> int:
        """``cksum_bytes``: the folded ones'-complement sum (not inverted) of a
        plain buffer (a header)."""
        if self._c:
            if type(data) is bytes:
                buf: Any = data
                n = len(data)
            else:
                buf = self._c_inbuf(data, "data")
                n = len(buf)
            out = self._ffi.new("uint32_t *")
            try:
                rc = self._lib.pm_cksum_buf(buf, n, initial, out)
            except (TypeError, OverflowError):
                rc = None
        else:
            mv = self._py_inbuf(data, "data")
            out = [None]
            try:
                rc = _py.pm_cksum_buf(mv, len(mv), initial, out)
            except (TypeError, OverflowError):
                rc = None
        if rc != 0:
            raise self._diag_initial("cksum_bytes", rc, initial)
        return int(out[0])

    # -- reading frames -------------------------------------------------------------

    def frame_view(self, frame: int) -> memoryview:
        """A zero-copy, read-only view of ``frame`` (it keeps the mapping alive)."""
        view = self._view
        if type(frame) is not int:
            frame = _as_int("frame_view: frame", frame)
        if not 0 <= frame < self.npages or view is None:
            raise self._diag_scalar("frame_view", None, (("frame", frame),))
        start = frame << self._shift
        return view[start : start + self.page_size]

    def read_frame(self, frame: int) -> bytes:
        """A copy of the bytes of ``frame``."""
        view = self._view
        if type(frame) is not int:
            frame = _as_int("read_frame: frame", frame)
        if not 0 <= frame < self.npages or view is None:
            raise self._diag_scalar("read_frame", None, (("frame", frame),))
        start = frame << self._shift
        return view[start : start + self.page_size].tobytes()

    def release_frame(self, frame: int) -> None:
        """The page allocator freed ``frame``: poison it if poisoning is on.

        The frame number is checked either way.
        """
        if self.poison:
            try:
                rc = self._lib.pm_poison_page(self._h, frame)
            except (TypeError, OverflowError):
                rc = None
        else:
            f = frame if type(frame) is int else _as_int("release_frame: frame", frame)
            rc = 0 if 0 <= f < self.npages and not self._closed else None
        if rc != 0:
            raise self._diag_scalar("release_frame", rc, (("frame", frame),))

    # -- argument marshalling ---------------------------------------------------------

    def _frame_seq(self, frames: Any, name: str) -> Any:
        """The frames as a Python sequence: list, tuple or int64 array as is."""
        t = type(frames)
        if t is list or t is tuple:
            return frames
        if isinstance(frames, array.array) and frames.typecode in "ql" and frames.itemsize == 8:
            return frames
        if isinstance(frames, (str, bytes, bytearray, memoryview)) or not isinstance(
            frames, Iterable
        ):
            raise PhysMemTypeError(
                f"{name} must be a sequence of frame numbers, not {_tname(frames)}"
            )
        return list(frames)

    def _c_frames(self, seq: Any) -> Any:
        """A frame sequence as the C module takes it (int64 arrays zero-copy)."""
        if type(seq) is array.array:
            return self._ffi.from_buffer("int64_t[]", seq)
        if len(seq) > _BIG_ARRAY:  # array('q', list) converts faster than cffi
            try:
                return self._ffi.from_buffer("int64_t[]", array.array("q", seq))
            except (TypeError, OverflowError):
                return seq  # let the call fail and the diagnosis explain
        return seq

    def _piece_seq(self, pieces: Any) -> Any:
        """Pieces as a list/tuple of triples, or (C backend) a flat int64 array.

        A flat ``array('q')`` of (frame, offset, length) triples is the fast
        form: the C backend passes its buffer as ``pm_piece[]`` with no Python
        object per piece.  The twin takes it as a list of triples.
        """
        t = type(pieces)
        if t is list or t is tuple:
            return pieces
        if t is array.array and pieces.typecode in "ql" and pieces.itemsize == 8:
            if len(pieces) % 3:
                raise PhysMemValueError(
                    f"a piece array holds (frame, offset, length) triples: its length "
                    f"{len(pieces)} is not a multiple of 3"
                )
            if self._c:
                return pieces
            it = iter(pieces)
            return list(zip(it, it, it, strict=True))
        if isinstance(pieces, (str, bytes, bytearray, memoryview)) or not isinstance(
            pieces, Iterable
        ):
            raise PhysMemTypeError(
                "pieces must be a sequence of (frame, offset, length) triples, "
                f"not {_tname(pieces)}"
            )
        return list(pieces)

    def _c_pieces_call(self, fn: Any, p: Any, *rest: Any) -> int | None:
        """Call a pm_* entry point that takes a piece list; None if the list is malformed."""
        if type(p) is array.array:  # flat triples, laid out as pm_piece[] already
            try:
                rc0: int = fn(self._h, self._ffi.from_buffer("pm_piece[]", p), len(p) // 3, *rest)
            except (TypeError, OverflowError):
                return None
            return rc0
        n = len(p)
        if n > _BIG_PIECES:
            # packing the triples with struct is ~3x faster than cffi's
            # struct-by-struct conversion, and refuses anything but triples
            try:
                packed = b"".join(starmap(_PIECE.pack, p))
            except (struct.error, TypeError):
                pass  # odd values: cffi's conversion (below) decides
            else:
                try:
                    rc: int = fn(self._h, self._ffi.from_buffer("pm_piece[]", packed), n, *rest)
                except (TypeError, OverflowError):
                    return None
                return rc
        # cffi fills missing struct fields with zeros: insist on triples first
        try:
            if p and min(map(len, p)) != 3:
                return None
            rc = fn(self._h, p, n, *rest)
        except (TypeError, OverflowError, ValueError, KeyError):
            return None
        return rc

    def _c_inbuf(self, data: object, name: str) -> Any:
        try:
            return self._ffi.from_buffer(data)
        except (TypeError, BufferError, ValueError):
            raise self._buffer_error(name, data, writable=False) from None

    def _c_outbuf(self, out: object, name: str) -> Any:
        try:
            return self._ffi.from_buffer(out, require_writable=True)
        except (TypeError, BufferError, ValueError):
            raise self._buffer_error(name, out, writable=True) from None

    def _py_inbuf(self, data: object, name: str, *, writable: bool = False) -> memoryview:
        try:
            mv = memoryview(data)  # type: ignore[arg-type]
        except TypeError:
            raise self._buffer_error(name, data, writable=writable) from None
        if not mv.c_contiguous or (writable and mv.readonly):
            raise self._buffer_error(name, data, writable=writable)
        return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")

    def _py_outbuf(self, out: object, name: str) -> memoryview:
        return self._py_inbuf(out, name, writable=True)

    @staticmethod
    def _buffer_error(name: str, obj: object, *, writable: bool) -> PhysMemTypeError:
        if writable:
            return PhysMemTypeError(
                f"{name} must be a writable, contiguous bytes-like object, not {_tname(obj)}"
                + (" (it is read-only)" if _is_readonly_buffer(obj) else "")
            )
        return PhysMemTypeError(f"{name} must be a contiguous bytes-like object, not {_tname(obj)}")

    # -- diagnosis: why did a call fail? ------------------------------------------------
    #
    # The backends only return a code (or raise TypeError/OverflowError while
    # converting arguments).  On that rare path the arguments are checked again
    # here, in the order physmem.c checks them (types first, as cffi converts
    # every argument before the call), to name the culprit.  Both backends go
    # through the same diagnosis, so they raise the same error and message.

    def _closed_error(self, op: str) -> PhysMemValueError:
        return PhysMemValueError(f"{op}: the PhysMem is closed")

    def _frame_error(self, op: str, name: str, f: int) -> FrameRangeError:
        return FrameRangeError(f"{op}: {name} {f} out of range (arena has {self.npages} frames)")

    def _fallback(self, op: str, rc: int | None) -> PhysMemError:
        cls, what = _CODES.get(rc if rc is not None else 0, (PhysMemError, "failed"))
        return cls(f"{op}: {what} (error {rc})")

    def _diag_scalar(
        self,
        op: str,
        rc: int | None,
        frames: tuple[tuple[str, object], ...],
        *,
        byte: object = None,
    ) -> PhysMemError:
        vals = [(name, _as_int(f"{op}: {name}", v)) for name, v in frames]
        b = _as_int(f"{op}: fill byte", byte) if op == "fill_page" else 0
        if self._closed:
            return self._closed_error(op)
        if not 0 <= b <= 255:
            return PhysMemValueError(f"{op}: fill byte {b} out of range 0..255")
        for name, f in vals:
            if not 0 <= f < self.npages:
                return self._frame_error(op, name, f)
        return self._fallback(op, rc)

    def _diag_frame_list(self, op: str, name: str, frames: object) -> list[int]:
        if isinstance(frames, (str, bytes, bytearray, memoryview)) or not isinstance(
            frames, Iterable
        ):
            raise PhysMemTypeError(
                f"{name} must be a sequence of frame numbers, not {_tname(frames)}"
            )
        return [_as_int(f"{op}: {name}[{i}]", v) for i, v in enumerate(frames)]

    def _diag_batch(
        self,
        op: str,
        rc: int | None,
        lists: tuple[tuple[str, object], ...],
        *,
        byte: object = None,
    ) -> PhysMemError:
        vals = [(name, self._diag_frame_list(op, name, fl)) for name, fl in lists]
        b = _as_int(f"{op}: fill byte", byte) if op == "fill_pages" else 0
        if self._closed:
            return self._closed_error(op)
        if not 0 <= b <= 255:
            return PhysMemValueError(f"{op}: fill byte {b} out of range 0..255")
        if len(vals) == 2:  # copy_pages checks src[i], dst[i] pairwise
            (sn, sl), (dn, dl) = vals
            for i, (s, d) in enumerate(zip(sl, dl, strict=False)):
                if not 0 <= s < self.npages:
                    return self._frame_error(op, f"{sn}[{i}] = frame", s)
                if not 0 <= d < self.npages:
                    return self._frame_error(op, f"{dn}[{i}] = frame", d)
        else:
            name, fl = vals[0]
            for i, f in enumerate(fl):
                if not 0 <= f < self.npages:
                    return self._frame_error(op, f"{name}[{i}] = frame", f)
        return self._fallback(op, rc)

    def _diag_range(
        self, op: str, rc: int | None, frames: object, offset: object, length: object
    ) -> PhysMemError:
        fl = self._diag_frame_list(op, "frames", frames)
        off = _as_int(f"{op}: offset", offset)
        ln = _as_int(f"{op}: length", length)
        if self._closed:
            return self._closed_error(op)
        ps = self.page_size
        if ln < 0:
            return PhysMemValueError(f"{op}: negative length {ln}")
        if not 0 <= off < ps:
            return FrameRangeError(f"{op}: offset {off} is outside the page (page size {ps})")
        if ln > len(fl) * ps - off:
            return FrameRangeError(
                f"{op}: {ln} bytes at offset {off} run past the end of the frame list "
                f"({len(fl)} frames of {ps} bytes hold {len(fl) * ps - off} bytes from there)"
            )
        for i, f in enumerate(fl):
            if not 0 <= f < self.npages:
                return self._frame_error(op, f"frames[{i}] = frame", f)
        return self._fallback(op, rc)

    def _diag_initial(self, op: str, rc: int | None, initial: object) -> PhysMemError:
        init = _as_int(f"{op}: initial", initial)
        if not 0 <= init <= _UINT64_MAX:
            return PhysMemValueError(f"{op}: initial sum {init} is not in 0..2**64-1")
        return self._fallback(op, rc)

    def _diag_pieces(
        self,
        op: str,
        rc: int | None,
        pieces: object,
        *,
        bufsize: int | None = None,
        initial: object = 0,
    ) -> PhysMemError:
        if isinstance(pieces, (str, bytes, bytearray, memoryview)) or not isinstance(
            pieces, Iterable
        ):
            return PhysMemTypeError(
                f"{op}: pieces must be a sequence of (frame, offset, length) triples, "
                f"not {_tname(pieces)}"
            )
        if isinstance(pieces, array.array):
            it = iter(pieces)
            pieces = list(zip(it, it, it, strict=True))
        checked: list[tuple[int, int, int]] = []
        for i, p in enumerate(pieces):
            if not isinstance(p, (tuple, list)) or len(p) != 3:
                return PhysMemTypeError(
                    f"{op}: piece {i} must be a (frame, offset, length) triple, not {p!r}"
                )
            f, o, n = (
                _as_int(f"{op}: piece {i} {k}", v)
                for k, v in zip(("frame", "offset", "length"), p, strict=True)
            )
            checked.append((f, o, n))
        if op in ("cksum_sum", "gather_cksum"):
            init = _as_int(f"{op}: initial", initial)
            if not 0 <= init <= _UINT64_MAX:
                return PhysMemValueError(f"{op}: initial sum {init} is not in 0..2**64-1")
        if self._closed:
            return self._closed_error(op)
        ps = self.page_size
        total = 0
        for i, (f, o, n) in enumerate(checked):
            where = f"{op}: piece {i} (frame {f}, offset {o}, length {n})"
            if not 0 <= f < self.npages:
                return FrameRangeError(
                    f"{where}: frame {f} out of range (arena has {self.npages} frames)"
                )
            if n < 0:
                return PhysMemValueError(f"{where} has a negative length")
            if not 0 <= o < ps:
                return FrameRangeError(f"{where}: offset {o} is outside the page (page size {ps})")
            if n > ps - o:
                return FrameRangeError(f"{where} crosses the end of the page (page size {ps})")
            total += n
        if bufsize is not None:
            if op == "scatter" and bufsize != total:
                return PhysMemValueError(
                    f"scatter: data has {bufsize} bytes but the pieces cover {total}"
                )
            if op in ("gather_into", "gather_cksum") and bufsize < total:
                return PhysMemValueError(
                    f"{op}: out has {bufsize} bytes but the pieces hold {total}"
                )
        return self._fallback(op, rc)


def _is_readonly_buffer(obj: object) -> bool:
    try:
        with memoryview(obj) as mv:  # type: ignore[arg-type]
            return mv.readonly
    except TypeError:
        return False


__all__ = [
    "BACKEND",
    "POISON_BYTE",
    "BufferLike",
    "PhysMem",
    "Piece",
    "WritableBuffer",
    "available_backends",
]
