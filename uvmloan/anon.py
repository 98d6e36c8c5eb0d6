"""vm_anon and vm_amap: anonymous memory and its copy-on-write sharing.

Follows ``sys/uvm/uvm_anon.c`` 1.78 and ``uvm_amap.c``.  An amap maps slot
numbers to anons; a map entry refers to an amap at a slot offset.  Instead of
NetBSD's per-page reference array (``ppref``) the model keeps the set of
entries referring to each amap and asks which of them still cover a slot:
the same answer, computed rather than stored.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import attrs

from .errors import KernelAssertion
from .param import PG, VM_PROT_NONE
from .vmscalars import AnonScalars

if TYPE_CHECKING:
    from .page import Page, PageAllocator

_anon_ids = itertools.count(1)
_next_anon_id = _anon_ids.__next__
_amap_ids = itertools.count(1)


@attrs.define(slots=True, eq=False, repr=False, init=False, weakref_slot=False)
class Anon(AnonScalars):
    """``struct vm_anon``: ``an_ref`` references, ``an_page``, ``an_swslot``.

    ``an_swslot`` and ``an_id`` (the anon's number, fixed at creation;
    ``name`` is spelled from it only when asked, in traces and reprs) are
    machine words of the ``AnonScalars`` base (uvmloan.vmscalars): one anon
    per resident page, and no int object for its number.
    """

    an_ref: int = 1
    an_page: Page | None = None

    # Written out rather than generated: attrs' __init__ calls the id
    # factory through a lookup per call, and one anon is made per fault.
    def __init__(self, an_ref: int = 1, an_page: Page | None = None, an_swslot: int = 0) -> None:
        self.an_ref = an_ref
        self.an_page = an_page
        self.an_swslot = an_swslot
        self.an_id = _next_anon_id()

    @property
    def name(self) -> str:
        return f"a{self.an_id}"

    def __repr__(self) -> str:
        frame = self.an_page.frame if self.an_page is not None else None
        return f"<Anon {self.name} ref={self.an_ref} page={frame} swslot={self.an_swslot}>"


# Slots per chunk of an AmapSlots table (a power of two).
_CHUNK_SHIFT = 6
_CHUNK = 1 << _CHUNK_SHIFT
_CHUNK_MASK = _CHUNK - 1
_EMPTY_CHUNK: list[Anon | None] = [None] * _CHUNK


class AmapSlots(MutableMapping[int, Anon]):
    """An amap's slot -> anon table, stored as NetBSD's ``am_anon`` array is:
    by slot index, in chunks of 64 slots allocated on first use.

    A dense amap costs about 9 bytes a slot, with no int object per slot
    and no sorted-container insert on the fault path (a dict entry plus its
    key was ~72 bytes a resident page).  Iteration and ``irange`` go in
    ascending slot order, as the ``SortedDict`` this replaces did.  Slots
    are ints; ``None`` marks an empty slot, so it is never stored as a value.
    """

    __slots__ = ("_chunks", "_n")

    def __init__(self) -> None:
        self._chunks: dict[int, list[Anon | None]] = {}  # slot >> 6 -> 64 slots
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def get(self, slot: int, default: Any = None) -> Any:
        ch = self._chunks.get(slot >> _CHUNK_SHIFT)
        if ch is None:
            return default
        a = ch[slot & _CHUNK_MASK]
        return default if a is None else a

    def __getitem__(self, slot: int) -> Anon:
        ch = self._chunks.get(slot >> _CHUNK_SHIFT)
        a = ch[slot & _CHUNK_MASK] if ch is not None else None
        if a is None:
            raise KeyError(slot)
        return a

    def __contains__(self, slot: object) -> bool:
        if type(slot) is not int:
            return False
        ch = self._chunks.get(slot >> _CHUNK_SHIFT)
        return ch is not None and ch[slot & _CHUNK_MASK] is not None

    def __setitem__(self, slot: int, anon: Anon) -> None:
        ch = self._chunks.get(slot >> _CHUNK_SHIFT)
        if ch is None:
            ch = self._chunks[slot >> _CHUNK_SHIFT] = _EMPTY_CHUNK.copy()
        i = slot & _CHUNK_MASK
        if ch[i] is None:
            self._n += 1
        ch[i] = anon

    def __delitem__(self, slot: int) -> None:
        key = slot >> _CHUNK_SHIFT
        ch = self._chunks.get(key)
        i = slot & _CHUNK_MASK
        if ch is None or ch[i] is None:
            raise KeyError(slot)
        ch[i] = None
        self._n -= 1
        if ch.count(None) == _CHUNK:
            del self._chunks[key]  # an emptied chunk goes, as amaps shrink

    def pop(self, slot: int, *default: Any) -> Any:
        a = self.get(slot)
        if a is None:
            if default:
                return default[0]
            raise KeyError(slot)
        del self[slot]
        return a

    def __iter__(self) -> Iterator[int]:
        return iter(self._slots_in(sorted(self._chunks), None, None))

    def _slots_in(self, keys: Iterable[int], lo: int | None, hi: int | None) -> list[int]:
        chunks = self._chunks
        out = []
        for k in keys:
            ch = chunks.get(k)
            if ch is None:
                continue
            base = k << _CHUNK_SHIFT
            for i, a in enumerate(ch):
                if a is not None:
                    s = base + i
                    if (lo is None or s >= lo) and (hi is None or s < hi):
                        out.append(s)
        return out

    def irange(
        self, minimum: int, maximum: int, inclusive: tuple[bool, bool] = (True, True)
    ) -> Iterator[int]:
        """The slots in [minimum, maximum] (ends per ``inclusive``), ascending.

        Visits the chunks of the range, or the table's chunks sorted when
        there are fewer: O(min(range, chunks log chunks) + 64 per chunk).
        The slots are listed before the first is yielded, so callers may
        change the table while they iterate.
        """
        lo = minimum if inclusive[0] else minimum + 1
        hi = maximum + 1 if inclusive[1] else maximum
        if hi <= lo:
            return iter(())
        klo, khi = lo >> _CHUNK_SHIFT, ((hi - 1) >> _CHUNK_SHIFT) + 1
        if khi - klo <= len(self._chunks):
            keys: Iterable[int] = range(klo, khi)
        else:
            keys = sorted(k for k in self._chunks if klo <= k < khi)
        return iter(self._slots_in(keys, lo, hi))


@attrs.define(slots=True, eq=False, repr=False)
class Amap:
    """``struct vm_amap``: slot -> anon, and the entries that refer to it."""

    slots: AmapSlots = attrs.field(factory=AmapSlots)  # slot -> Anon
    refs: dict[Any, None] = attrs.field(factory=dict)  # MapEntry -> None
    name: str = attrs.field(factory=lambda: f"amap{next(_amap_ids)}")

    @property
    def am_ref(self) -> int:
        return len(self.refs)

    def __repr__(self) -> str:
        return f"<Amap {self.name} {len(self.slots)} anons, {self.am_ref} refs>"

    def lookup(self, slot: int) -> Anon | None:
        # AmapSlots.get inlined: every fault on an amap'd entry asks.
        ch = self.slots._chunks.get(slot >> _CHUNK_SHIFT)
        return ch[slot & _CHUNK_MASK] if ch is not None else None

    def add(self, slot: int, anon: Anon, replace: bool = False) -> None:
        """amap_add: install ``anon`` at ``slot`` (replacing only if asked)."""
        # AmapSlots.__setitem__ inlined (one add per promoting fault).
        slots = self.slots
        key = slot >> _CHUNK_SHIFT
        ch = slots._chunks.get(key)
        if ch is None:
            ch = slots._chunks[key] = _EMPTY_CHUNK.copy()
        i = slot & _CHUNK_MASK
        if ch[i] is not None:
            if not replace:
                raise KernelAssertion(f"amap_add: {self.name} slot {slot} already holds an anon")
        else:
            slots._n += 1
        ch[i] = anon

    def covered(self, slot: int) -> bool:
        """Does any referring entry still cover this slot?"""
        return any(e.covers_slot(slot) for e in self.refs)


def uvm_analloc() -> Anon:
    return Anon()


def uvm_anfree(uvm: PageAllocator, anon: Anon) -> None:
    """Free an anon whose last reference went (``uvm_anfree``, uvm_anon.c 1.78).

    An anon-owned page loses every user mapping (``pmap_page_protect(NONE)``)
    and is freed; a loaned page takes ``uvm_pagefree``'s loan branch and
    becomes an orphan (T6).  An O->A page still owned by its object only
    drops the anon's loan (not reachable in this era: O->A is compiled out).
    """
    if anon.an_ref != 0:
        raise KernelAssertion(f"uvm_anfree: {anon!r} still referenced")
    pg = anon.an_page
    if pg is not None and pg.loan_count:
        # uvm_anon_lockloanpg: adopt a disowned O->A page before freeing (T7).
        from .loan import uvm_anon_lockloanpg

        uvm_anon_lockloanpg(anon)
    if pg is not None:
        if pg.uobject is not None:
            # O->A receiver: the object keeps its page.
            if pg.loan_count <= 0:
                raise KernelAssertion(f"uvm_anfree: object page {pg!r} of {anon!r} has no loan")
            pg.loan_count -= 1
            pg.uanon = None
        else:
            assert uvm.pmap is not None
            uvm.pmap.pmap_page_protect(pg, VM_PROT_NONE)
            if pg.flags & PG.BUSY:
                pg.flags |= PG.RELEASED
            else:
                uvm.uvm_pagefree(pg)
        anon.an_page = None
    # uvm_anon_dropswap -> uvm_swap_free: the slot goes with the anon.
    if anon.an_swslot:
        uvm.swap.pop(anon.an_swslot, None)
    anon.an_swslot = 0


def anon_unref(uvm: PageAllocator, anon: Anon) -> None:
    """Drop one reference; free the anon at zero."""
    if anon.an_ref <= 0:
        raise KernelAssertion(f"anon_unref: {anon!r} has no references")
    anon.an_ref -= 1
    if anon.an_ref == 0:
        uvm_anfree(uvm, anon)


def amap_unref_slots(uvm: PageAllocator, amap: Amap, slots: range) -> None:
    """Drop anons in ``slots`` that no referring entry covers any more."""
    for slot in list(amap.slots.irange(slots.start, slots.stop, inclusive=(True, False))):
        if not amap.covered(slot):
            anon = amap.slots.pop(slot)
            anon_unref(uvm, anon)
