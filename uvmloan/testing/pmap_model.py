"""The reference side of the pmap state machine: the hardware rules an
access follows (which translation it takes, whether it faults, what it
reads), the barrier bookkeeping, the invariants checked after every step and
:func:`pmap_state_snapshot`.

``PmapModel`` is a mixin of
:class:`~uvmloan.testing.pmap_machine.PmapStateMachine`; it draws nothing
(the rules, in ``pmap_machine``, do).  ``pmap_machine`` re-exports every
public name here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis.stateful import invariant

from ..errors import KernelAssertion, SegmentationFault
from ..invariants import check_pages, check_pmaps
from ..machine import Machine
from ..page import Page
from ..param import VMProt
from ..pmap.cpu import CPU, TLBState
from ..pmap.pmap import Pmap
from ..pmap.pte import PTE_D, PTE_P, PTE_U, PTE_W, pte_frame
from .failures import CheckFailure

R = VMProt.READ
RW = VMProt.READ | VMProt.WRITE
NONE = VMProt.NONE

FAULTS = ("fault", "tlbfault")

# Bytes of each frame that the machine reads and writes (the rest of the page
# is never touched, so the reference need not hold it).
WINDOW = 16


def pmap_state_snapshot(m: Machine) -> dict[str, Any]:
    """Everything a pmap/MMU call may change, as comparable plain data.

    Page tables, pmap statistics and CPU sets, pv lists and saved attributes
    of allocated pages, every CPU's TLB contents, packet, clock, loaded pmap
    and lazy state, the allocator's free list and the counters.  Two equal
    snapshots mean the call left the machine as it found it.
    """
    pmaps = {
        pm.name: (
            dict(pm.ptes),
            sorted(pm.cpus),
            pm.resident_count,
            pm.wired_count,
            pm.destroyed,
        )
        for pm in m.pmap.pmaps
    }
    pages = {
        frame: (
            sorted((pm.name, va) for pm, va in pg.mdpage.pv),
            pg.mdpage.attrs,
            int(pg.flags),
        )
        for frame, pg in m.uvm.pages.items()
    }
    cpus = []
    for c in m.cpus:
        pkt = c.packet
        cpus.append(
            (
                sorted((k, getattr(v[0], "name", "?"), v[1]) for k, v in c.tlb.entries.items()),
                (list(pkt.vas), pkt.allva, pkt.global_pte, pkt.userpmap, sorted(pkt.targets)),
                c.clock,
                c.curpmap.name if c.curpmap is not None else None,
                c.tlbstate,
                len(c.pending_ipis),
            )
        )
    return {
        "pmaps": pmaps,
        "pages": pages,
        "cpus": cpus,
        "free": list(m.uvm.free),
        "counters": dict(m.counters),
        "nevents": len(m.tracer.events or ()),  # 0 on a machine that does not record
    }


class _PmapState:
    """The attributes the machine's initialize rule sets (declared apart:
    one is named ``bytes``, which would shadow the type in a class that
    annotates with it)."""

    m: Machine | None
    ps: int
    pmaps: list[Pmap]
    kpm: Pmap
    pages: list[Page]
    uvas: list[int]
    kvas: list[int]
    maps: dict[tuple[str, int], tuple[int, bool]]
    kmaps: dict[int, tuple[int, bool]]
    referenced: dict[int, bool]
    modified: dict[int, bool]
    dirty: set[int]
    calls: Counter[str]
    expect_hits: int
    expect_walks: int
    bytes: dict[int, bytearray]  # the WINDOW bytes of every frame


class PmapModel(_PmapState):
    """The reference models of the pmap machine and the checks against them."""

    # --- barrier and reference bookkeeping ---------------------------------------

    @property
    def machine(self) -> Machine:
        assert self.m is not None
        return self.m

    @contextmanager
    def on_cpu(self, cpu: int) -> Iterator[CPU]:
        """Run pmap calls on ``cpu`` (modulo the machine's CPU count)."""
        m = self.machine
        with m.on_cpu(cpu % m.ncpus) as c:
            yield c

    @property
    def at_barrier(self) -> bool:
        return not self.dirty

    def mark_dirty(self, cpu: int) -> None:
        """``cpu`` ran a deferrable operation: the barrier needs its pmap_update."""
        self.dirty.add(cpu % self.machine.ncpus)

    def mark_flushed(self, cpu: int) -> None:
        self.dirty.discard(cpu % self.machine.ncpus)

    def ref_enter(self, pm: Pmap, va: int, frame: int, writable: bool) -> None:
        if pm.is_kernel:
            self.kmaps[va] = (frame, writable)
        else:
            self.maps[(pm.name, va)] = (frame, writable)

    def ref_remove(self, pm: Pmap, va: int) -> None:
        if pm.is_kernel:
            self.kmaps.pop(va, None)
        else:
            self.maps.pop((pm.name, va), None)

    def _pmap_named(self, name: str) -> Pmap:
        return next(pm for pm in self.pmaps if pm.name == name)

    def _check_page_protected(self, pg: Page, mappings: list[tuple[Pmap, int]], prot: int) -> None:
        """x86 pmap_page_protect is synchronous: no CPU may still write (or, for
        NONE, use at all) a managed mapping of ``pg`` that the call covered --
        even though the calling CPU's own earlier deferred work is pending."""
        m = self.machine
        shift = m.pmap.page_shift
        for cpu in m.cpus:
            if cpu.pending_ipis:
                continue  # MI policy: taken before that CPU's next access
            for pm, va in mappings:
                if cpu.tlbstate is TLBState.STALE and cpu.curpmap is pm:
                    continue
                if pm.is_kernel or m.profile.tlb_policy == "x86":
                    asid = 0
                elif pm in cpu.asids:
                    asid = cpu.asids[pm]
                else:
                    continue
                ent = cpu.tlb.entries.get((asid, va >> shift))
                if ent is None or ent[0] is not pm or pte_frame(ent[1]) != pg.frame:
                    continue
                if prot == NONE:
                    raise CheckFailure(
                        "page-protect",
                        f"pmap_page_protect(NONE) returned but CPU {cpu.index} still caches "
                        f"{pm.name} {va:#x} -> frame {pg.frame}",
                    )
                if ent[1] & PTE_W and ent[1] & PTE_D:
                    raise CheckFailure(
                        "page-protect",
                        f"pmap_page_protect(READ) returned but CPU {cpu.index} can still write "
                        f"{pm.name} {va:#x} -> frame {pg.frame} through a cached dirty entry",
                    )

    # --- the hardware ------------------------------------------------------------

    def _predict(
        self, cpu: CPU, pm: Pmap, va: int, write: bool, user: bool, use_tlb: bool
    ) -> tuple[str, int]:
        """What the MMU will do: ("hit"|"walk", frame), or ("fault", -1) for
        a fault found by the page walk and ("tlbfault", -1) for one found by
        the cached entry (no walk: SDM 4.10.4.1 drops the entry)."""
        m = self.machine
        vpn = va >> m.pmap.page_shift
        ent = None
        if use_tlb:
            if pm.is_kernel or m.profile.tlb_policy == "x86":
                ent = cpu.tlb.entries.get((0, vpn))
            elif pm in cpu.asids:
                ent = cpu.tlb.entries.get((cpu.asids[pm], vpn))
        if ent is not None:
            snap = ent[1]
            ok = not (user and not snap & PTE_U)
            walk = False
            if ok and write:
                if not snap & PTE_W:
                    ok = False
                elif not snap & PTE_D:
                    walk = True
            if not ok:
                return ("tlbfault", -1)
            if not walk:
                return ("hit", pte_frame(snap))
        pte = pm.ptes.get(va, 0)
        if not pte & PTE_P or (user and not pte & PTE_U) or (write and not pte & PTE_W):
            return ("fault", -1)
        return ("walk", pte_frame(pte))

    def _access(
        self, cpu: CPU, pm: Pmap, va: int, off: int, data: bytes | None, user: bool
    ) -> None:
        m = self.machine
        if cpu.pending_ipis:
            m.pmap.take_interrupts(cpu)  # what the CPU does before its next access
        write = data is not None
        kind, frame = self._predict(cpu, pm, va, write, user, use_tlb=True)
        if self.at_barrier:
            truth = self._predict(cpu, pm, va, write, user, use_tlb=False)
            if (kind in FAULTS) != (truth[0] in FAULTS) or (
                kind not in FAULTS and frame != truth[1]
            ):
                raise CheckFailure(
                    "stale-tlb",
                    f"after the barrier CPU {cpu.index} {'writes' if write else 'reads'} "
                    f"{pm.name} {va:#x} through a stale TLB entry: {kind} frame {frame}, "
                    f"page tables say {truth[0]} frame {truth[1]}",
                )
        expected_exc: type[BaseException] = SegmentationFault if user else KernelAssertion
        # The MMU's own statistics (kept by mmu.py, not by the tracer) must
        # follow the hardware rules the prediction applies: one translation
        # per access (WINDOW bytes never cross a page), a hit or a walk.
        if kind == "hit":
            self.expect_hits += 1
        elif kind != "tlbfault":
            self.expect_walks += 1
        if kind in FAULTS:
            try:
                if write:
                    assert data is not None
                    m.mmu.store(cpu, va + off, data, user=user)
                else:
                    m.mmu.load(cpu, va, WINDOW, user=user)
            except expected_exc:
                return
            raise CheckFailure(
                "fault",
                f"CPU {cpu.index} {'wrote' if write else 'read'} {pm.name} {va:#x}; "
                f"expected a {expected_exc.__name__}",
            )
        if write:
            assert data is not None
            m.mmu.store(cpu, va + off, data, user=user)
            self.bytes[frame][off : off + len(data)] = data
        else:
            got = m.mmu.load(cpu, va, WINDOW, user=user)
            want = bytes(self.bytes[frame])
            if got != want:
                raise CheckFailure(
                    "bytes",
                    f"CPU {cpu.index} read {pm.name} {va:#x} (frame {frame}): {got.hex()} "
                    f"!= reference {want.hex()}",
                )
        if kind == "walk" and not pm.is_kernel:
            self.referenced[frame] = True
            if write:
                self.modified[frame] = True

    # --- invariants --------------------------------------------------------------

    @invariant()
    def check_all(self) -> None:
        """The three checks below as one invariant (hypothesis pays a fixed
        cost per invariant and step), in the order it ran them as separate
        invariants (by name); override any of them to change it."""
        self.attributes_match_reference()
        self.counters_match_the_operations()
        self.mappings_match_reference()

    def mappings_match_reference(self) -> None:
        if self.m is None:
            return
        m = self.m
        for pm in self.pmaps:
            got = {va: (pte_frame(p), bool(p & PTE_W)) for va, p in pm.ptes.items()}
            want = {va: v for (name, va), v in self.maps.items() if name == pm.name}
            if got != want:
                raise CheckFailure("page-table", f"{pm.name} page table {got} != reference {want}")
        kgot = {va: (pte_frame(p), bool(p & PTE_W)) for va, p in self.kpm.ptes.items()}
        if kgot != self.kmaps:
            raise CheckFailure("page-table", f"kernel page table {kgot} != reference {self.kmaps}")
        for pg in self.pages:
            pv = sorted((pm.name, va) for pm, va in pg.mdpage.pv)
            want_pv = sorted(k for k, (f, _w) in self.maps.items() if f == pg.frame)
            if pv != want_pv:
                raise CheckFailure("page-table", f"pv list of frame {pg.frame}: {pv} != {want_pv}")
        check_pages(m)
        check_pmaps(m)

    def attributes_match_reference(self) -> None:
        if self.m is None:
            return
        pmm = self.m.pmap
        for pg in self.pages:
            mod, ref = pmm.pmap_is_modified(pg), pmm.pmap_is_referenced(pg)
            if mod != self.modified[pg.frame]:
                raise CheckFailure("attributes", f"pmap_is_modified(frame {pg.frame}) = {mod}")
            if ref != self.referenced[pg.frame]:
                raise CheckFailure("attributes", f"pmap_is_referenced(frame {pg.frame}) = {ref}")

    def counters_match_the_operations(self) -> None:
        """One event per pmap(9) call, by kind, against the machine's own
        tally of the calls its rules made; the MMU's hit and walk statistics
        against the hardware rules' prediction for every access."""
        if self.m is None:
            return
        m = self.m
        for kind, n in self.calls.items():
            if m.counters[kind] != n:
                raise CheckFailure("counters", f"{m.counters[kind]} {kind!r} events for {n} calls")
        if (m.mmu.tlb_hits, m.mmu.page_walks) != (self.expect_hits, self.expect_walks):
            raise CheckFailure(
                "counters",
                f"MMU counted {m.mmu.tlb_hits} TLB hits and {m.mmu.page_walks} walks; "
                f"the accesses take {self.expect_hits} and {self.expect_walks}",
            )


__all__ = ["PmapModel", "pmap_state_snapshot"]
