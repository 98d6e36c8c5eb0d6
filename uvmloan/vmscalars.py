"""``PageScalars`` and ``AnonScalars``: the integer fields of ``struct
vm_page`` and ``struct vm_anon`` as machine words.

In NetBSD these are words inside the C structs.  In a Python object an int
field points to an int object, and for a value above 256 (a frame number, a
page's flags, an object offset, the va of its first mapping, an anon's
number) that is a separate 32-byte object per resident page.  The C types
(``uvmloan._vmscalars``, ``cext/vmscalars.c``) store them in the object
instead; ``Page`` (through the pmap's ``VMPageMD``) and ``Anon`` subclass
them and keep their other fields as slots.

The trade: a resident page costs about 100 bytes less, and a read of one of
these fields costs about 30 ns more than a slot's (it makes the int; the
interpreter does not specialise the access as it does a slot's).

``PyPageScalars`` and ``PyAnonScalars`` are the pure-Python twins (slots),
used with ``UVMLOAN_PUREPYTHON=1`` or where the extension was not built.
Both start every field at 0 and store any int the word can hold: signed
64-bit, except ``pv_va``, unsigned 64-bit (an amd64 kernel va is above
2**63).  Anything else is a TypeError (not an int) or OverflowError (too
big for the word), and the field keeps its value; the C type checks that
in its setter, the twin in ``_word``, which the tests use to hold it to
the same rule.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from ._cext import optional_c_module

__all__ = [
    "ANON_FIELDS",
    "BACKEND",
    "PAGE_FIELDS",
    "AnonScalars",
    "PageScalars",
    "PyAnonScalars",
    "PyPageScalars",
    "word_range",
]

#: The word fields of each type, and (low, high) of what each can hold.
PAGE_FIELDS: dict[str, tuple[int, int]] = {
    "frame": (-(1 << 63), (1 << 63) - 1),
    "flags": (-(1 << 63), (1 << 63) - 1),
    "offset": (-(1 << 63), (1 << 63) - 1),
    "pv_va": (0, (1 << 64) - 1),
}
ANON_FIELDS: dict[str, tuple[int, int]] = {
    "an_id": (-(1 << 63), (1 << 63) - 1),
    "an_swslot": (-(1 << 63), (1 << 63) - 1),
}


def word_range(field: str) -> tuple[int, int]:
    """(lowest, highest) value the word ``field`` holds."""
    if field in PAGE_FIELDS:
        return PAGE_FIELDS[field]
    return ANON_FIELDS[field]


def _word(field: str, value: object) -> int:
    """``value`` if the word ``field`` can hold it, else the C type's error.

    The twins' slots store without checking (a check on every store would
    slow the pure-Python backend's every page operation); this is the rule
    both backends' stores follow, which the tests apply to the twin."""
    if not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    lo, hi = word_range(field)
    if not lo <= value <= hi:
        width = "an unsigned" if lo == 0 else "a signed"
        raise OverflowError(f"{field} does not fit in {width} 64-bit word")
    return value


class PyPageScalars:
    """The pure-Python twin of ``uvmloan._vmscalars.PageScalars``."""

    __slots__ = ("flags", "frame", "offset", "pv_va")

    def __init__(self) -> None:
        self.frame = 0
        self.flags = 0
        self.offset = 0
        self.pv_va = 0


class PyAnonScalars:
    """The pure-Python twin of ``uvmloan._vmscalars.AnonScalars``."""

    __slots__ = ("an_id", "an_swslot")

    def __init__(self) -> None:
        self.an_id = 0
        self.an_swslot = 0


_c: ModuleType | None = optional_c_module("_vmscalars")

if TYPE_CHECKING:
    # the C types' stub (_vmscalars.pyi): declared without __slots__, so a
    # type checker takes the words as attributes of the subclasses, as the
    # C type's descriptors are
    from ._vmscalars import AnonScalars, PageScalars

    BACKEND: str
elif _c is not None:
    PageScalars = _c.PageScalars
    AnonScalars = _c.AnonScalars
    BACKEND = "c"
else:
    PageScalars = PyPageScalars
    AnonScalars = PyAnonScalars
    BACKEND = "python"
