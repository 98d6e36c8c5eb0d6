"""``PTETable``: a pmap's PTEs, page-aligned va -> PTE, in page-table pages.

The C type (``uvmloan._ptetable``, ``cext/ptetable.c``) keeps the PTEs as
the x86 pmap does, in page-table pages (PTPs) of 512 entries each covering
512 pages of address space: 8 bytes a PTE where a dict entry cost about 72.
``PyPTETable`` is its pure-Python twin, used with ``UVMLOAN_PUREPYTHON=1``
or where the extension was not built; the tests run both against a dict.

Both are mappings with the dict operations the model uses (len, in, [],
[]=, del, get, pop, clear, keys/values/items) with two differences from a
dict, the same in both: iteration is in address order (a page-table walk's
order; keys/values/items return lists, so the caller may change the table
as it goes), and a stored key must be a page-aligned int in [0, 2**64) and
a PTE an int in [0, 2**64) (TypeError or ValueError otherwise; for a lookup
any other key is just absent).  ``nptp`` is the number of PTPs in use and
``nbytes`` the C memory held (0 for the twin, whose memory is Python's).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._cext import optional_c_module

__all__ = ["BACKEND", "PTETable", "PyPTETable"]

PTP_SHIFT = 9
"""log2 of the PTEs in one page-table page (512, as on x86)."""

_U64 = 1 << 64

T = TypeVar("T")

_c: ModuleType | None = optional_c_module("_ptetable")


class PyPTETable:
    """The pure-Python twin of ``uvmloan._ptetable.PTETable``."""

    __slots__ = ("_d", "_mask", "_ptps", "page_shift")

    def __init__(self, page_shift: int) -> None:
        if type(page_shift) is not int and not isinstance(page_shift, int):
            raise TypeError(f"PTETable: page_shift must be an int, not {type(page_shift).__name__}")
        shift = int(page_shift)  # a bool is the int it stands for, as in C
        if not 4 <= shift <= 30:
            raise ValueError(f"PTETable: page_shift must be in [4, 30], got {shift}")
        self.page_shift = shift
        self._mask = (1 << self.page_shift) - 1
        self._d: dict[int, int] = {}
        self._ptps: dict[int, int] = {}  # PTP number -> entries in it

    def _key(self, va: object) -> int | None:
        """va as a key, or None where the C type finds it absent."""
        if not isinstance(va, int) or not 0 <= va < _U64 or va & self._mask:
            return None
        return int(va)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, va: object) -> bool:
        k = self._key(va)
        return k is not None and k in self._d

    def __getitem__(self, va: int) -> int:
        k = self._key(va)
        if k is None or k not in self._d:
            raise KeyError(va)
        return self._d[k]

    @overload
    def get(self, va: int) -> int | None: ...
    @overload
    def get(self, va: int, default: T) -> int | T: ...

    def get(self, va: int, default: Any = None) -> Any:
        k = self._key(va)
        if k is None:
            return default
        return self._d.get(k, default)

    def __setitem__(self, va: int, pte: int) -> None:
        if not isinstance(va, int):
            raise TypeError(f"PTETable: a virtual address is an int, not {type(va).__name__}")
        if not 0 <= va < _U64:
            raise ValueError("PTETable: a virtual address is in [0, 2**64)")
        if va & self._mask:
            raise ValueError(f"PTETable: va {va:#x} is not page aligned")
        if not isinstance(pte, int):
            raise TypeError(f"PTETable: a PTE is an int, not {type(pte).__name__}")
        if not 0 <= pte < _U64:
            raise ValueError("PTETable: a PTE is in [0, 2**64)")
        k = int(va)
        if k not in self._d:
            p = k >> (self.page_shift + PTP_SHIFT)
            self._ptps[p] = self._ptps.get(p, 0) + 1
        self._d[k] = int(pte)

    def _drop(self, k: int) -> None:
        p = k >> (self.page_shift + PTP_SHIFT)
        n = self._ptps[p] - 1
        if n:
            self._ptps[p] = n
        else:
            del self._ptps[p]  # pmap_free_ptp: the last PTE went

    def __delitem__(self, va: int) -> None:
        k = self._key(va)
        if k is None or k not in self._d:
            raise KeyError(va)
        del self._d[k]
        self._drop(k)

    def pop(self, va: int, *default: Any) -> Any:
        if len(default) > 1:
            raise TypeError("pop(va[, default])")
        k = self._key(va)
        if k is None or k not in self._d:
            if default:
                return default[0]
            raise KeyError(va)
        self._drop(k)
        return self._d.pop(k)

    def keys(self) -> list[int]:
        return sorted(self._d)

    def values(self) -> list[int]:
        return [v for _, v in sorted(self._d.items())]

    def items(self) -> list[tuple[int, int]]:
        return sorted(self._d.items())

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys())

    def clear(self) -> None:
        self._d.clear()
        self._ptps.clear()

    @property
    def nptp(self) -> int:
        return len(self._ptps)

    @property
    def nbytes(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"<PTETable {len(self._d)} PTEs in {len(self._ptps)} PTPs>"


if TYPE_CHECKING:
    PTETable = PyPTETable
else:
    PTETable = _c.PTETable if _c is not None else PyPTETable

MutableMapping.register(PyPTETable)
if _c is not None:
    MutableMapping.register(_c.PTETable)

BACKEND: str = "c" if _c is not None else "python"
"""Which ``PTETable`` the pmaps use: ``"c"`` or ``"python"``."""
