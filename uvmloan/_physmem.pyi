# Hand-written stub of the compiled cffi module uvmloan._physmem
# (cext/physmem.h, between the CDEF markers).  tests/test_physmem.py checks
# that the names here and dir(lib) agree.
#
# Pointers are FFI.CData; Python lists/tuples of ints (int64_t *), lists of
# (frame, offset, length) tuples (pm_piece *) and bytes (const char *) are
# also accepted where cffi converts them to a temporary array.

from collections.abc import Sequence
from typing import Final

from _cffi_backend import FFI

_Frames = FFI.CData | Sequence[int]
_Pieces = FFI.CData | Sequence[tuple[int, int, int]]
_InBuf = FFI.CData | bytes

ffi: FFI

class _Lib:
    PM_OK: Final[int]
    PM_EFRAME: Final[int]
    PM_EPAGE: Final[int]
    PM_ERANGE: Final[int]
    PM_ENEGLEN: Final[int]
    PM_EINVAL: Final[int]
    PM_ENOMEM: Final[int]
    PM_EBUFSIZE: Final[int]
    PM_POISON_BYTE: Final[int]
    PM_MIN_PAGE_SIZE: Final[int]
    PM_MAX_PAGE_SIZE: Final[int]

    def pm_create(self, npages: int, page_size: int, out: FFI.CData, /) -> int: ...
    def pm_destroy(self, a: FFI.CData, /) -> None: ...
    def pm_npages(self, a: FFI.CData, /) -> int: ...
    def pm_page_size(self, a: FFI.CData, /) -> int: ...
    def pm_base(self, a: FFI.CData, /) -> FFI.CData: ...
    def pm_copy_page(self, a: FFI.CData, src: int, dst: int, /) -> int: ...
    def pm_zero_page(self, a: FFI.CData, frame: int, /) -> int: ...
    def pm_fill_page(self, a: FFI.CData, frame: int, byte: int, /) -> int: ...
    def pm_poison_page(self, a: FFI.CData, frame: int, /) -> int: ...
    def pm_compare_pages(self, a: FFI.CData, f1: int, f2: int, diff: FFI.CData, /) -> int: ...
    def pm_copy_pages(self, a: FFI.CData, src: _Frames, dst: _Frames, n: int, /) -> int: ...
    def pm_zero_pages(self, a: FFI.CData, frames: _Frames, n: int, /) -> int: ...
    def pm_fill_pages(self, a: FFI.CData, frames: _Frames, n: int, byte: int, /) -> int: ...
    def pm_copyin(
        self,
        a: FFI.CData,
        frames: _Frames,
        nframes: int,
        offset: int,
        src: _InBuf,
        len: int,
        /,
    ) -> int: ...
    def pm_copyout(
        self,
        a: FFI.CData,
        frames: _Frames,
        nframes: int,
        offset: int,
        dst: FFI.CData,
        len: int,
        /,
    ) -> int: ...
    def pm_copyin1(
        self, a: FFI.CData, frame: int, offset: int, src: _InBuf, len: int, /
    ) -> int: ...
    def pm_copyout1(
        self, a: FFI.CData, frame: int, offset: int, dst: FFI.CData, len: int, /
    ) -> int: ...
    def pm_gather(
        self,
        a: FFI.CData,
        pieces: _Pieces,
        n: int,
        dst: FFI.CData,
        dstlen: int,
        written: FFI.CData,
        /,
    ) -> int: ...
    def pm_scatter(
        self, a: FFI.CData, pieces: _Pieces, n: int, src: _InBuf, srclen: int, /
    ) -> int: ...
    def pm_cksum(
        self, a: FFI.CData, pieces: _Pieces, n: int, initial: int, sum: FFI.CData, /
    ) -> int: ...
    def pm_cksum_buf(self, buf: _InBuf, len: int, initial: int, sum: FFI.CData, /) -> int: ...
    def pm_gather_cksum(
        self,
        a: FFI.CData,
        pieces: _Pieces,
        n: int,
        dst: FFI.CData,
        dstlen: int,
        initial: int,
        written: FFI.CData,
        sum: FFI.CData,
        /,
    ) -> int: ...

lib: _Lib
