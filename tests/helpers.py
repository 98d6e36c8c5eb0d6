"""Constants and plain helpers shared by the test modules.

Imported as ``helpers`` (pytest puts ``tests/`` on ``sys.path``; the directory
has no ``__init__.py``).  Fixtures every module may use live in ``conftest.py``;
``machine_fixture`` here builds a module's own machine fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import pytest

from uvmloan import VM_PROT_READ, VM_PROT_WRITE, Machine, check_invariants
from uvmloan.page import Page
from uvmloan.param import UVM_PGA_ZERO
from uvmloan.pmap import Pmap
from uvmloan.trace import Event

PS = 4096
UVA = 0x10000
R = VM_PROT_READ
RW = VM_PROT_READ | VM_PROT_WRITE

E = TypeVar("E", bound=Event)


def machine_fixture(*, check: bool = False, **machine_args: Any) -> Any:
    """A function-scoped fixture: a fresh ``Machine(**machine_args)`` per test,
    closed afterwards (after ``check_invariants`` when ``check``).  Its name is
    the module attribute it is assigned to::

        m = machine_fixture(ncpus=2, memory="2M", trace="record")
    """

    def fixture() -> Iterator[Machine]:
        mach = Machine(**machine_args)
        yield mach
        if check:
            check_invariants(mach)
        mach.close()

    return pytest.fixture(fixture)


def events(m: Machine, kind: type[E]) -> list[E]:
    """The recorded events of one class, typed as such."""
    return [e for e in m.tracer.select(kind) if isinstance(e, kind)]


def counted(m: Machine, *prefixes: str) -> dict[str, int]:
    """The non-zero counters whose names start with one of ``prefixes``
    (e.g. ``counted(m, "loan", "unloan")``: every loan, break and orphan count)."""
    return {k: v for k, v in m.counters.items() if v and k.startswith(prefixes)}


def zeroed_page(m: Machine) -> Page:
    """A freshly allocated zero-filled page, owned by no object or anon."""
    pg = m.uvm.uvm_pagealloc(None, 0, None, UVM_PGA_ZERO)
    assert pg is not None
    return pg


def user_pmap(m: Machine, cpus: tuple[int, ...] | range, name: str = "p") -> Pmap:
    """A new user pmap, activated on ``cpus``."""
    pm = m.pmap.pmap_create(name)
    for c in cpus:
        with m.on_cpu(c):
            m.pmap.pmap_activate(pm, m.cpu(c))
    return pm


def ref_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 by the book, the checksum tests' reference: big-endian 16-bit
    words, end-around carry, an odd trailing byte padded with zero."""
    if len(data) % 2:
        data += b"\x00"
    s = initial
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s
