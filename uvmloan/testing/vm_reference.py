"""The reference side of the VM state machine: what the processes and files
must hold under plain copy semantics (files, pages, processes), the
machine's constants and its hypothesis settings.

:mod:`uvmloan.testing.vm_machine` re-exports every public name here.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import attrs
from hypothesis import HealthCheck, settings

from ..object import VnodeObject
from ..param import (
    VM_PROT_READ,
    VM_PROT_WRITE,
)
from ..process import Process

ANON_PRIVATE = "anon-private"
ANON_SHARED = "anon-shared"
FILE_PRIVATE = "file-private"
FILE_SHARED = "file-shared"
KINDS = (ANON_PRIVATE, ANON_SHARED, FILE_PRIVATE, FILE_SHARED)
PRIVATE_KINDS = (ANON_PRIVATE, FILE_PRIVATE)
# Read/write first: hypothesis shrinks towards the first element.
PROTS = (int(VM_PROT_READ | VM_PROT_WRITE), int(VM_PROT_READ), 0)
MMAP_PROTS = (PROTS[0], PROTS[0], PROTS[0], PROTS[1], PROTS[2])


def roundup(n: int, ps: int) -> int:
    return n + (-n) % ps


_STEP7 = bytes((7 * i) % 256 for i in range(256))
_INV7 = pow(7, -1, 256)
_STEP1 = bytes(range(256))


def _periodic(period: bytes, start: int, n: int) -> bytes:
    """``n`` bytes of ``period`` repeated, from index ``start`` (< its length)."""
    return (period * ((start + n) // len(period) + 1))[start : start + n]


def store_payload(seed: int, n: int) -> bytes:
    """What a user store writes: byte i is ``(seed + 7 * i) % 256`` (a slice of
    one period rather than a generator over n bytes)."""
    return _periodic(_STEP7, (seed % 256) * _INV7 % 256, n)


def file_payload(seed: int, n: int) -> bytes:
    """What write(2) writes: byte i is ``(seed * 3 + i) % 256``."""
    return _periodic(_STEP1, (seed * 3) % 256, n)


@functools.cache
def file_body(i: int, size: int) -> bytes:
    """The initial contents of file ``i``: no zero byte, a period of 251."""
    return bytes((i * 37 + k) % 251 + 1 for k in range(size))


@attrs.define(eq=False)
class RefFile:
    """A file: the model's vnode, its size and what its pages hold.

    ``mem`` is the page cache's view of the file: ``size`` bytes of file,
    then the rest of the last page (zero, unless a store through a mapping
    put something there).  Its length is ``size`` rounded up to a page, so
    a file offset ``>= len(mem)`` is a page wholly past end of file.
    """

    vn: VnodeObject
    ps: int
    size: int
    mem: bytearray

    @classmethod
    def new(cls, vn: VnodeObject, body: bytes, ps: int) -> RefFile:
        mem = bytearray(body)
        mem.extend(bytes(roundup(len(body), ps) - len(body)))
        return cls(vn, ps, len(body), mem)

    @property
    def data(self) -> bytes:
        """What read(2) of the whole file returns."""
        return bytes(self.mem[: self.size])

    def write(self, off: int, payload: bytes) -> None:
        """write(2): store, growing the file (the gap keeps the page cache's bytes)."""
        end = off + len(payload)
        if end > len(self.mem):
            self.mem.extend(bytes(roundup(end, self.ps) - len(self.mem)))
        self.mem[off:end] = payload
        self.size = max(self.size, end)

    def truncate(self, size: int) -> None:
        """ftruncate(2): shrinking drops whole pages and zeroes the new tail;
        growing adds zero pages and keeps the old last page's tail bytes."""
        keep = roundup(size, self.ps)
        if size < self.size:
            del self.mem[keep:]
            self.mem[size:keep] = bytes(keep - size)
        else:
            self.mem.extend(bytes(keep - len(self.mem)))
        self.size = size


@attrs.define(eq=False)
class RefPage:
    """What one page of one process holds, by the reference semantics."""

    kind: str
    prot: int
    ps: int
    own: bytearray | None = None  # private bytes (anon-private; file-private once written)
    shared: bytearray | None = None  # anon-shared: one bytearray shared by reference
    file: RefFile | None = None
    foff: int = 0
    wired: bool = False  # the map entry holding this page is wired (mlock)

    def beyond_eof(self) -> bool:
        """A file page wholly past end of file, with no private copy: it faults."""
        return self.own is None and self.file is not None and self.foff >= len(self.file.mem)

    def view(self) -> bytearray | memoryview:
        """The bytes a load sees (and a store changes, once ``prepare_write`` ran)."""
        if self.own is not None:
            return self.own
        if self.shared is not None:
            return self.shared
        assert self.file is not None and not self.beyond_eof()
        return memoryview(self.file.mem)[self.foff : self.foff + self.ps]

    def prepare_write(self) -> None:
        """The write fault of a private file page: copy the file page now."""
        if self.kind == FILE_PRIVATE and self.own is None:
            assert self.file is not None and not self.beyond_eof()
            self.own = bytearray(self.file.mem[self.foff : self.foff + self.ps])

    def key(self) -> tuple[str, int, int]:
        """Which physical page this is: mappings with equal keys share a page."""
        if self.own is not None:
            return ("own", id(self.own), 0)
        if self.shared is not None:
            return ("shared", id(self.shared), 0)
        return ("file", id(self.file), self.foff)

    def forked(self) -> RefPage:
        own = bytearray(self.own) if self.own is not None else None
        return RefPage(self.kind, self.prot, self.ps, own, self.shared, self.file, self.foff)


@attrs.define(eq=False)
class RefProc:
    """A live process and the reference contents of its address space."""

    proc: Process
    pages: dict[int, RefPage] = attrs.field(factory=dict)  # page va -> page
    # (start, npages) of every mmap, for picking addresses (maybe partly unmapped).
    regions: list[tuple[int, int]] = attrs.field(factory=list)
    # Pages this process (or its parent before fork) accessed, oldest first.
    touched: list[int] = attrs.field(factory=list)


def vm_settings(profile: str | None = None, **overrides: Any) -> settings:
    """Settings for ``VMStateMachine.TestCase``: ``default`` (150 examples of up
    to 50 steps, ~15 s) or ``deep`` (1500 of up to 100, a few minutes).

    ``profile`` defaults to ``$UVMLOAN_HYPOTHESIS_PROFILE`` (else ``default``).
    """
    name = profile or os.environ.get("UVMLOAN_HYPOTHESIS_PROFILE", "default")
    base: dict[str, Any] = {
        "default": {"max_examples": 150, "stateful_step_count": 50},
        "deep": {"max_examples": 1500, "stateful_step_count": 100},
    }.get(name, {})
    if not base:
        raise ValueError(f"unknown hypothesis profile {name!r}; use 'default' or 'deep'")
    kw: dict[str, Any] = {
        "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
        **base,
        **overrides,
    }
    return settings(**kw)


__all__ = [
    "ANON_PRIVATE",
    "ANON_SHARED",
    "FILE_PRIVATE",
    "FILE_SHARED",
    "KINDS",
    "MMAP_PROTS",
    "PRIVATE_KINDS",
    "PROTS",
    "RefFile",
    "RefPage",
    "RefProc",
    "file_body",
    "file_payload",
    "roundup",
    "store_payload",
    "vm_settings",
]
