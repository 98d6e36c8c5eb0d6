"""vm_map and its entries (``sys/uvm/uvm_map.c``).

Entries live in a SortedDict keyed by start address; lookups are floor
searches.  Every batch of pmap operations is followed by ``pmap_update``
before the lock would be dropped, and pages are released only after that
barrier (``uvm_unmap_remove`` then ``uvm_unmap_detach``), so no CPU can hold a
TLB entry for a freed frame.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import attrs
from sortedcontainers import SortedDict

from .anon import Amap, amap_unref_slots, uvm_analloc
from .errors import KernelAssertion, UVMError
from .object import UVMObject
from .param import EACCES, EINVAL, ENOMEM, PG, VM_PROT_ALL, VM_PROT_WRITE, VMProt

if TYPE_CHECKING:
    from .page import Page, PageAllocator
    from .pmap.pmap import Pmap

# Inheritance (sys/uvm/uvm_extern.h MAP_INHERIT_*).
MAP_INHERIT_SHARE = 0
MAP_INHERIT_COPY = 1
MAP_INHERIT_NONE = 2

_entry_ids = itertools.count(1)


@attrs.define(slots=True, eq=False, repr=False)
class MapEntry:
    """``struct vm_map_entry``."""

    start: int
    end: int
    page_shift: int
    object: UVMObject | None = None
    offset: int = 0  # object offset of ``start``
    amap: Amap | None = None
    slotoff: int = 0  # amap slot of ``start``
    protection: int = VMProt.READ | VMProt.WRITE
    max_protection: int = VM_PROT_ALL
    inheritance: int = MAP_INHERIT_COPY
    copy_on_write: bool = True  # UVM_ET_COPYONWRITE
    needs_copy: bool = False  # UVM_ET_NEEDSCOPY
    wired_count: int = 0
    vaonly: bool = False  # kernel VA reserved without backing (uvm_km_alloc VAONLY)
    id: int = attrs.field(factory=lambda: next(_entry_ids))

    @property
    def npages(self) -> int:
        return (self.end - self.start) >> self.page_shift

    def slot(self, va: int) -> int:
        return self.slotoff + ((va - self.start) >> self.page_shift)

    def covers_slot(self, slot: int) -> bool:
        return self.slotoff <= slot < self.slotoff + self.npages

    def objoff(self, va: int) -> int:
        return self.offset + (va - self.start)

    def __repr__(self) -> str:
        what = []
        if self.object is not None:
            what.append(f"obj={self.object.name}+{self.offset:#x}")
        if self.amap is not None:
            what.append(f"amap={self.amap.name}@{self.slotoff}")
        flags = "".join(
            c
            for c, on in (
                ("C", self.copy_on_write),
                ("N", self.needs_copy),
                ("W", self.wired_count),
            )
            if on
        )
        return (
            f"<MapEntry [{self.start:#x},{self.end:#x}) prot={int(self.protection)} "
            f"{flags} {' '.join(what)}>"
        )


@attrs.define(slots=True, eq=False, repr=False)
class VMMap:
    """``struct vm_map``: non-overlapping entries over one pmap."""

    name: str
    pmap: Pmap
    uvm: PageAllocator
    minva: int
    maxva: int
    entries: SortedDict[int, MapEntry] = attrs.field(factory=SortedDict)  # start -> MapEntry
    # Where uvm_map starts looking when no address is given.
    base: int = 0x20000000
    # The entry the last lookup found (``map->hint``, see uvm_map_lookup_entry).
    hint: MapEntry | None = attrs.field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"<VMMap {self.name} {len(self.entries)} entries>"

    @property
    def page_size(self) -> int:
        return self.uvm.page_size

    @property
    def page_shift(self) -> int:
        return self.uvm.page_size.bit_length() - 1

    def __iter__(self) -> Iterator[MapEntry]:
        return iter(list(self.entries.values()))

    # ------------------------------------------------------------- lookup

    def uvm_map_lookup_entry(self, va: int) -> MapEntry | None:
        """The entry containing ``va`` (floor search), or None.

        As NetBSD's, the search starts with the map's hint, the entry the
        last successful lookup found (``map->hint``): faults come in runs on
        one entry.  The hint is valid while it is still the entry at its
        start address (entries never overlap), so no map change has to
        reset it; an entry clipped in place keeps its identity and bounds
        are tested afresh.
        """
        ents = self.entries
        h = self.hint
        if h is not None and h.start <= va < h.end and ents.get(h.start) is h:
            return h
        i = ents.bisect_right(va) - 1
        if i < 0:
            return None
        e: MapEntry = ents.peekitem(i)[1]
        if e.start <= va < e.end:
            self.hint = e
            return e
        return None

    def entries_in(self, start: int, end: int) -> list[MapEntry]:
        """Entries overlapping [start, end), in address order."""
        out: list[MapEntry] = []
        first = self.uvm_map_lookup_entry(start)
        if first is not None:
            out.append(first)
        for s in self.entries.irange(start, end, inclusive=(first is None, False)):
            e = self.entries[s]
            if e is not first:
                out.append(e)
        return out

    def _find_space(self, size: int, hint: int | None) -> int:
        va = max(hint if hint is not None else self.base, self.minva)
        for e in list(self.entries.values()):
            if e.end <= va:
                continue
            if e.start >= va + size:
                break
            va = e.end
        if va + size > self.maxva:
            raise UVMError(ENOMEM, f"{self.name}: no {size:#x}-byte hole in the address space")
        return va

    def _check_range(self, start: int, size: int, what: str) -> None:
        ps = self.page_size
        if not isinstance(start, int) or isinstance(start, bool):
            raise TypeError(f"{what}: address must be an int, not {type(start).__name__}")
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"{what}: length must be an int, not {type(size).__name__}")
        if start % ps:
            raise ValueError(f"{what}: address {start:#x} is not page aligned")
        if size <= 0:
            raise ValueError(f"{what}: length must be positive, got {size}")
        if start < self.minva or start + size > self.maxva:
            raise ValueError(
                f"{what}: range [{start:#x}, {start + size:#x}) is outside "
                f"[{self.minva:#x}, {self.maxva:#x})"
            )

    # ---------------------------------------------------------- clipping

    def _clip(self, e: MapEntry, va: int) -> MapEntry:
        """Split ``e`` at ``va``; returns the new upper entry."""
        if not e.start < va < e.end:
            raise KernelAssertion(f"clip of {e!r} at {va:#x}")
        upper = attrs.evolve(e, id=next(_entry_ids))
        upper.start = va
        upper.offset = e.offset + (va - e.start)
        upper.slotoff = e.slot(va)
        e.end = va
        if e.amap is not None:
            e.amap.refs[upper] = None
        if e.object is not None:
            e.object.reference()
        self.entries[upper.start] = upper
        return upper

    def clip_range(self, start: int, end: int) -> list[MapEntry]:
        """Clip entries so [start, end) is covered by whole entries; return them."""
        ents = self.entries_in(start, end)
        if ents and ents[0].start < start:
            ents[0] = self._clip(ents[0], start)
        if ents and ents[-1].end > end:
            self._clip(ents[-1], end)
        return ents

    # ---------------------------------------------------------- mapping

    def uvm_map(
        self,
        size: int,
        uobj: UVMObject | None,
        uoffset: int,
        prot: int,
        maxprot: int = VM_PROT_ALL,
        inherit: int = MAP_INHERIT_COPY,
        copy_on_write: bool = True,
        addr: int | None = None,
        fixed: bool = False,
        vaonly: bool = False,
    ) -> int:
        """Create a mapping; returns its address.  ``fixed`` replaces what is there."""
        ps = self.page_size
        if size <= 0 or size % ps:
            raise ValueError(f"uvm_map: size {size!r} must be a positive multiple of {ps}")
        if prot & ~maxprot:
            raise UVMError(
                EACCES, f"uvm_map: protection {int(prot)} exceeds maximum {int(maxprot)}"
            )
        if fixed:
            if addr is None:
                raise ValueError("uvm_map: MAP_FIXED needs an address")
            self._check_range(addr, size, "uvm_map")
            if self.entries_in(addr, addr + size):
                self.uvm_unmap(addr, addr + size)
            va = addr
        else:
            if addr is not None:
                self._check_range(addr, size, "uvm_map")
            va = self._find_space(size, addr)
        e = MapEntry(
            va,
            va + size,
            self.page_shift,
            object=uobj,
            offset=uoffset,
            protection=int(prot),
            max_protection=int(maxprot),
            inheritance=inherit,
            copy_on_write=copy_on_write,
            needs_copy=copy_on_write,
            vaonly=vaonly,
        )
        if uobj is not None:
            uobj.reference()
        self.entries[va] = e
        return va

    def uvm_unmap(self, start: int, end: int) -> None:
        """Remove [start, end): unmap, ``pmap_update``, then drop references."""
        self._check_range(start, end - start, "uvm_unmap")
        ents = self.clip_range(start, end)
        pmod = self.pmap.module
        for e in ents:
            del self.entries[e.start]
            if not e.vaonly:
                pmod.pmap_remove(self.pmap, e.start, e.end)
        pmod.pmap_update(self.pmap)
        for e in ents:
            self._detach(e)

    def _detach(self, e: MapEntry) -> None:
        """uvm_unmap_detach: unwire, drop the amap's and the object's references."""
        uvm = self.uvm
        if e.wired_count:
            self._unwire_pages(e, e.start, e.end)
            e.wired_count = 0
        if e.amap is not None:
            amap = e.amap
            del amap.refs[e]
            amap_unref_slots(uvm, amap, range(e.slotoff, e.slotoff + e.npages))
            e.amap = None
        if e.object is not None:
            e.object.detach()
            e.object = None

    def _unwire_pages(self, e: MapEntry, start: int, end: int) -> None:
        """uvm_fault_unwire: the wired pages of [start, end) lose one wiring."""
        uvm = self.uvm
        for va in range(start, end, self.page_size):
            pg = self.page_at(e, va)
            if pg is not None and pg.wire_count:
                uvm.uvm_pageunwire(pg)

    def page_at(self, e: MapEntry, va: int) -> Page | None:
        """The page the entry's layers provide at va (anon first), if resident."""
        if e.amap is not None:
            anon = e.amap.lookup(e.slot(va))
            if anon is not None:
                return anon.an_page
        if e.object is not None:
            return e.object.uvm_pagelookup(e.objoff(va))
        return None

    def uvm_map_protect(self, start: int, end: int, prot: int) -> None:
        """mprotect(2): EACCES beyond max protection; lowering takes effect
        through ``pmap_protect`` (write removed for copy-on-write entries)."""
        self._check_range(start, end - start, "uvm_map_protect")
        ents = self.entries_in(start, end)
        self._check_covered(start, end, ents, "uvm_map_protect")
        for e in ents:
            if prot & ~e.max_protection:
                raise UVMError(
                    EACCES, f"mprotect: {int(prot)} exceeds the maximum protection of {e!r}"
                )
        ents = self.clip_range(start, end)
        pmod = self.pmap.module
        for e in ents:
            old = e.protection
            e.protection = int(prot)
            eff = prot & ~VM_PROT_WRITE if (e.copy_on_write and e.needs_copy) else prot
            if old & ~prot and not e.vaonly:
                pmod.pmap_protect(self.pmap, e.start, e.end, eff)
        pmod.pmap_update(self.pmap)

    def _check_covered(self, start: int, end: int, ents: list[MapEntry], what: str) -> None:
        pos = start
        for e in ents:
            if e.start > pos:
                raise UVMError(ENOMEM, f"{what}: [{pos:#x}, {e.start:#x}) is not mapped")
            pos = e.end
        if pos < end:
            raise UVMError(ENOMEM, f"{what}: [{pos:#x}, {end:#x}) is not mapped")

    def amap_copy(self, e: MapEntry) -> None:
        """Give ``e`` a private amap (``amap_copy``): clears needs-copy.

        If the entry is the amap's only reference nothing is copied;
        otherwise the new amap shares every anon of the entry's range
        (``an_ref`` + 1 each), and a later write promotes.
        """
        old = e.amap
        if old is not None and old.am_ref == 1:
            e.needs_copy = False
            return
        new = Amap()
        if old is not None:
            for slot in old.slots.irange(e.slotoff, e.slotoff + e.npages, inclusive=(True, False)):
                anon = old.slots[slot]
                anon.an_ref += 1
                new.slots[slot - e.slotoff] = anon
            del old.refs[e]
            amap_unref_slots(self.uvm, old, range(e.slotoff, e.slotoff + e.npages))
        new.refs[e] = None
        e.amap = new
        e.slotoff = 0
        e.needs_copy = False

    # ---------------------------------------------------- mlock's passes

    def wire_prepare(self, start: int, end: int) -> tuple[list[MapEntry], Callable[[], None]]:
        """``uvm_map_pageable``'s pass 1 for [start, end): clip, and give every
        entry that may become writable (or has no object) its private amap.

        Returns the entries and a function that undoes exactly this (the
        model's mlock undoes it when the pages cannot be had, so that a
        failed mlock leaves the map as it was).
        """
        clips: list[tuple[MapEntry, MapEntry]] = []
        ents = self.entries_in(start, end)
        if ents and ents[0].start < start:
            lower = ents[0]
            ents[0] = self._clip(lower, start)
            clips.append((lower, ents[0]))
        if ents and ents[-1].end > end:
            lower = ents[-1]
            clips.append((lower, self._clip(lower, end)))
        copies = [
            self._amap_copy_undoable(e)
            for e in ents
            if e.needs_copy and (e.max_protection & VMProt.WRITE or e.object is None)
        ]

        def undo() -> None:
            for u in reversed(copies):
                u()
            for lower, upper in reversed(clips):
                self._unclip(lower, upper)

        return ents, undo

    def _unclip(self, lower: MapEntry, upper: MapEntry) -> None:
        if lower.end != upper.start or self.entries.get(upper.start) is not upper:
            raise KernelAssertion(f"unclip of {lower!r} and {upper!r}")
        del self.entries[upper.start]
        lower.end = upper.end
        if upper.amap is not None:
            del upper.amap.refs[upper]
        if upper.object is not None:
            upper.object.uo_refs -= 1  # the reference _clip took; lower keeps one

    def _amap_copy_undoable(self, e: MapEntry) -> Callable[[], None]:
        old, slotoff = e.amap, e.slotoff
        self.amap_copy(e)
        new = e.amap

        def undo() -> None:
            if new is not old:
                assert new is not None
                for slot, anon in list(new.slots.items()):
                    if old is not None and old.slots.get(slot + slotoff) is anon:
                        anon.an_ref -= 1  # still in the old amap: drop the copy's ref
                    elif old is not None:
                        old.slots[slot + slotoff] = anon  # amap_unref_slots moved it
                    else:
                        raise KernelAssertion(f"undo of amap_copy: {anon!r} has no home")
                del new.refs[e]
                if old is not None:
                    old.refs[e] = None
                e.amap, e.slotoff = old, slotoff
            e.needs_copy = True

        return undo

    def wire_need(self, ents: list[MapEntry]) -> int:
        """Pages the wiring faults of ``ents`` will allocate (pass 2 of
        ``uvm_map_pageable``, after ``wire_prepare``): an anon paged in, a
        copy-on-write promote or a loan break when the maximum protection
        allows writing (``cow_now``), a zero fill, an object page brought
        in."""
        n = 0
        ps = self.page_size
        for e in ents:
            if e.wired_count:
                continue
            cow_now = bool(e.max_protection & VM_PROT_WRITE)
            for va in range(e.start, e.end, ps):
                anon = e.amap.lookup(e.slot(va)) if e.amap is not None else None
                if anon is not None:
                    pg = anon.an_page
                    if pg is None:
                        n += 1 + (cow_now and anon.an_ref > 1)
                    else:
                        # An unadopted O->A page's count includes the anon's loan.
                        unadopted = pg.uobject is None and not pg.flags & PG.ANON
                        loans = pg.loan_count - unadopted
                        n += cow_now and (anon.an_ref > 1 or loans > 0)
                elif e.object is None:
                    n += e.amap is not None  # zero fill
                else:
                    opg = e.object.uvm_pagelookup(e.objoff(va))
                    n += opg is None
                    if cow_now and e.copy_on_write:
                        n += 1  # promote into a new anon
                    elif cow_now and opg is not None and opg.loan_count:
                        n += 1  # uvm_loanbreak
        return n

    def check(self) -> None:
        """Map invariants: ordered, non-overlapping, aligned, amap back-references."""
        prev_end = self.minva
        for start, e in self.entries.items():
            if start != e.start or e.start >= e.end or e.start < prev_end:
                raise KernelAssertion(f"{self.name}: bad entry order at {e!r}")
            if e.start % self.page_size or e.end % self.page_size:
                raise KernelAssertion(f"{self.name}: unaligned {e!r}")
            if e.amap is not None and e not in e.amap.refs:
                raise KernelAssertion(f"{self.name}: {e!r} not among its amap's references")
            prev_end = e.end


def uvmspace_fork(parent: VMMap, child: VMMap) -> None:
    """Copy ``parent``'s entries into ``child`` by inheritance (``uvmspace_fork``).

    SHARE: both entries refer to the same amap (made first if needed) and
    object.  COPY: both refer to the same amap with needs-copy set and the
    parent's range is write-protected, so the first write on either side
    copies.  A wired COPY entry with an amap is copied at once instead
    (``amap_copy`` of the child's entry, then ``amap_cow_now``, as
    uvm_map.c does): the wired parent takes no fault and keeps its wired
    pages.  The pages those copies take are reserved before any entry is
    touched (``uvm_wait``; NetBSD's ``amap_cow_now`` sleeps in
    ``uvm_wait("cownowpage")`` and never fails), so ENOMEM leaves the parent
    as it was; ``Process.fork`` then tears the child down.
    """
    uvmspace_fork_reserve(parent)
    pmod = parent.pmap.module
    try:
        _uvmspace_fork_entries(parent, child)
    finally:
        pmod.pmap_update(parent.pmap)


def uvmspace_fork_reserve(parent: VMMap) -> None:
    """Wait for (or fail without) the pages fork's ``amap_cow_now`` copies
    will take; ``Process.fork`` calls it before it makes the child."""
    from .pdaemon import uvm_wait

    uvm_wait(parent.uvm, lambda: _fork_need(parent), f"fork of {parent.name}")


def _fork_need(parent: VMMap) -> int:
    """Pages ``amap_cow_now`` will take: one per resident, unloaned anon page
    of every wired copy-inherited entry (the child's ``amap_copy`` leaves
    each of them shared)."""
    n = 0
    for e in parent.entries.values():
        if e.inheritance != MAP_INHERIT_COPY or not e.wired_count or e.amap is None:
            continue
        for slot in e.amap.slots.irange(e.slotoff, e.slotoff + e.npages, inclusive=(True, False)):
            pg = e.amap.slots[slot].an_page
            n += pg is not None and not pg.loan_count
    return n


def _uvmspace_fork_entries(parent: VMMap, child: VMMap) -> None:
    pmod = parent.pmap.module
    for e in list(parent.entries.values()):
        if e.inheritance == MAP_INHERIT_NONE or e.vaonly:
            continue
        ce = attrs.evolve(e, id=next(_entry_ids), wired_count=0)
        if e.object is not None:
            e.object.reference()
        if e.inheritance == MAP_INHERIT_SHARE:
            if e.amap is None or e.needs_copy:
                parent.amap_copy(e)
            ce.amap = e.amap
            ce.slotoff = e.slotoff
            ce.needs_copy = False
        else:
            ce.needs_copy = True
            ce.copy_on_write = True
            if e.amap is not None and not e.needs_copy and not e.wired_count:
                e.needs_copy = True
                pmod.pmap_protect(parent.pmap, e.start, e.end, e.protection & ~VM_PROT_WRITE)
        if ce.amap is not None:
            ce.amap.refs[ce] = None
        child.entries[ce.start] = ce
        if e.inheritance == MAP_INHERIT_COPY and e.wired_count and e.amap is not None:
            # uvmspace_fork (uvm_map.c): "if the parent's entry is wired down
            # ... we cannot do copy-on-write ... resolve all copy-on-write
            # faults now, using amap_cow_now".
            child.amap_copy(ce)
            amap_cow_now(child, ce)


def amap_cow_now(m: VMMap, e: MapEntry) -> None:
    """Resolve every copy-on-write of ``e`` now (``amap_cow_now``, uvm_amap.c).

    Each anon of ``e``'s amap still shared (``an_ref > 1``) is replaced by a
    new anon holding a copy of its page; the old anon keeps its other
    references (the wired parent).  A loaned page is skipped, as NetBSD
    does (it is mapped read-only anyway).  Raises UVMError(ENOMEM) where
    NetBSD would ``uvm_wait("cownowpage")``; copies made so far stay in
    ``e``'s amap and go when the caller unmaps ``e``.
    """
    amap = e.amap
    if amap is None or e.needs_copy:
        raise KernelAssertion(f"amap_cow_now: {e!r} has no private amap")
    uvm = m.uvm
    for slot in list(amap.slots.irange(e.slotoff, e.slotoff + e.npages, inclusive=(True, False))):
        anon = amap.slots[slot]
        if anon.an_ref == 1:
            continue
        pg = anon.an_page
        if pg is None:
            raise KernelAssertion(f"amap_cow_now: {anon!r} of a wired entry is not resident")
        if pg.loan_count:
            continue
        nanon = uvm_analloc()
        npg = uvm.uvm_pagealloc(None, 0, nanon, 0)
        if npg is None:
            raise UVMError(ENOMEM, f"{m.name}: no page to copy wired {e!r} at fork")
        uvm.uvm_pagecopy(pg, npg)
        anon.an_ref -= 1
        amap.add(slot, nanon, replace=True)
        npg.flags &= ~(PG.BUSY | PG.FAKE)
        uvm.uvm_pageactivate(npg)


def check_map_args(prot: object) -> int:
    if not isinstance(prot, int) or int(prot) & ~int(VM_PROT_ALL):
        raise ValueError(f"prot {prot!r} is not a combination of VM_PROT_* bits")
    return int(prot)


__all__ = [
    "EINVAL",
    "MAP_INHERIT_COPY",
    "MAP_INHERIT_NONE",
    "MAP_INHERIT_SHARE",
    "MapEntry",
    "VMMap",
    "amap_cow_now",
    "check_map_args",
    "uvmspace_fork",
    "uvmspace_fork_reserve",
]
