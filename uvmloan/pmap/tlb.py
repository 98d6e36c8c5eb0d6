"""A bounded per-CPU TLB of PTE snapshots.

Keys are ``(asid, vpn)``.  On the x86 policy every key has ASID 0: an x86 TLB
without PCIDs holds only the running address space plus global kernel
entries, and a CR3 load drops the non-global ones.  The MI ASID policy
(``sys/uvm/pmap/pmap_tlb.c``) gives each pmap an ASID per TLB instead.

A snapshot is the PTE integer the page walk read (with A, and D if the walk
was for a write, already set).  Nothing updates a snapshot when the page
table changes: that is what makes stale entries real.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import attrs

from .pte import PTE_G

Key = tuple[int, int]


@attrs.define(slots=True, eq=False)
class TLB:
    capacity: int
    policy: str = "lru"
    seed: int = 0
    # False when every key carries ASID 0 (the x86 policy: one address space
    # cached, plus the kernel's): invlpg then drops one key instead of
    # scanning the TLB.  True (the default) assumes nothing.
    tagged: bool = True
    entries: dict[Key, tuple[object, int]] = attrs.field(factory=dict)
    _rng: random.Random = attrs.field(init=False)
    # policy == "lru" and policy != "random", resolved once: the MMU's
    # inlined lookup and insert read them.
    lru: bool = attrs.field(init=False)
    evict_oldest: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"TLB capacity must be >= 1, got {self.capacity}")
        if self.policy not in ("lru", "fifo", "random"):
            raise ValueError(f"unknown TLB replacement policy {self.policy!r}")
        self._rng = random.Random(self.seed)
        self.lru = self.policy == "lru"
        self.evict_oldest = self.policy != "random"

    def lookup(self, key: Key) -> tuple[object, int] | None:
        """The cached (pmap, pte) for key, refreshing its LRU position."""
        ent = self.entries.get(key)
        if ent is not None and self.lru:
            # dict order is the LRU order: move to the most recent end.
            del self.entries[key]
            self.entries[key] = ent
        return ent

    def insert(self, key: Key, pmap: object, pte: int) -> None:
        ents = self.entries
        if key in ents:
            del ents[key]
        elif len(ents) >= self.capacity:
            if self.policy == "random":
                victim = self._rng.choice(list(ents))
            else:
                victim = next(iter(ents))
            del ents[victim]
        ents[key] = (pmap, pte)

    def invlpg(self, vpn: int) -> None:
        """INVLPG: drop the entry for this page in every ASID (global ones too)."""
        if not self.tagged:
            self.entries.pop((0, vpn), None)
            return
        for key in [k for k in self.entries if k[1] == vpn]:
            del self.entries[key]

    def invalidate_key(self, key: Key) -> None:
        self.entries.pop(key, None)

    def flush(self, include_global: bool) -> None:
        """tlbflushg() (everything) or tlbflush() (all but PTE_G entries)."""
        if include_global:
            self.entries.clear()
        else:
            self.entries = {k: v for k, v in self.entries.items() if v[1] & PTE_G}

    def flush_asid(self, asid: int) -> None:
        self.entries = {k: v for k, v in self.entries.items() if k[0] != asid}

    def flush_user_asids(self) -> None:
        """``tlb_invalidate_asids(KERNEL_PID + 1, ti_asid_max)``: every entry
        tagged with a user ASID goes; the kernel's (ASID 0) stay."""
        self.entries = {k: v for k, v in self.entries.items() if k[0] == 0}

    def asids_present(self) -> set[int]:
        """``tlb_record_asids``: the user ASIDs that tag some entry."""
        return {k[0] for k in self.entries if k[0] != 0}

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[tuple[Key, tuple[object, int]]]:
        return iter(list(self.entries.items()))
