"""The x86 pmap(9): page tables, pv lists and deferred TLB shootdowns.

Follows ``sys/arch/x86/x86/pmap.c`` 1.381, ``sys/arch/x86/include/pmap.h``
1.127 and ``sys/arch/x86/x86/x86_tlb.c`` 1.20 (see ``specs/pmap.md`` for the
rule-by-rule sources).  The contract is pmap(9) (``share/man/man9/pmap.9``
1.43): enter/remove/protect/kenter_pa/kremove may defer their TLB work until
``pmap_update``; ``pmap_page_protect`` completes before it returns.

The MI layer reaches this module only through the operations below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import attrs

from ..errors import KernelAssertion
from ..param import VMProt
from ..ptetable import PTETable
from ..trace import (
    ASIDReset,
    ContextSwitch,
    Event,
    IPIDelivered,
    IPISent,
    KEnter,
    KRemove,
    PageProtect,
    PmapEnter,
    PmapProtect,
    PmapRemove,
    PmapUpdate,
    ShootdownQueued,
    ShootdownRound,
    TLBFlush,
    TLBInvalidate,
)
from ..vmscalars import PageScalars
from .asid import pmap_tlb_asid_acquire, pmap_tlb_pai_reset
from .cpu import CPU, Platform, TLBState
from .pte import (
    PTE_A,
    PTE_D,
    PTE_FRAME_MASK,
    PTE_FRAME_SHIFT,
    PTE_G,
    PTE_NX,
    PTE_P,
    PTE_PVLIST,
    PTE_U,
    PTE_W,
    PTE_WIRED,
    pte_frame,
    pte_make,
)

# pmap_enter flags (sys/uvm/uvm_pmap.h): the low bits carry the access type.
PMAP_WIRED = 0x00000010
PMAP_CANFAIL = 0x00000020

# TLB shootdown reasons (sys/arch/x86/include/pmap.h, tlbwhy_t, 2020 list).
TLBSHOOT_REMOVE_ALL = "REMOVE_ALL"
TLBSHOOT_KENTER = "KENTER"
TLBSHOOT_KREMOVE = "KREMOVE"
TLBSHOOT_FREE_PTP = "FREE_PTP"
TLBSHOOT_REMOVE_PTE = "REMOVE_PTE"
TLBSHOOT_SYNC_PV = "SYNC_PV"
TLBSHOOT_WRITE_PROTECT = "WRITE_PROTECT"
TLBSHOOT_ENTER = "ENTER"

ALLVA = -1
VECTOR_TLB = "LAPIC_TLB_VECTOR"


@attrs.define(slots=True, eq=False, weakref_slot=False)
class VMPageMD(PageScalars):
    """``struct vm_page_md`` / ``pmap_page``: the pv list and saved attributes.

    NetBSD embeds this struct in ``struct vm_page``; the MI ``Page`` does the
    same by subclassing it, so a page costs one object, not three (page,
    md, pv dict).  ``mdpage`` is the page itself.

    The pv list is packed the way x86's ``pp_pte`` embeds the first entry:
    the first managed mapping ``(pv_pmap, pv_va)`` lives inline and only a
    second one allocates ``pv_more`` (an insertion-ordered dict of
    ``(pmap, va)`` keys).  ``pv_more`` is None whenever ``pv_pmap`` is, and
    removing the inline entry promotes the oldest of ``pv_more``, so
    ``pv`` lists mappings in the order they were entered, as the single
    dict did.  ``attrs`` accumulates A/D bits of mappings that were removed
    or synced (x86 ``pp_attrs``), so referenced/modified survive the mapping.

    ``pv_va``, like the MI page's frame, flags and offset, is a machine word
    of the ``PageScalars`` base (uvmloan.vmscalars), not an int object.
    """

    pv_pmap: Pmap | None = attrs.field(default=None, init=False)
    pv_more: dict[tuple[Pmap, int], None] | None = attrs.field(default=None, init=False)
    attrs: int = attrs.field(default=0, init=False)

    @property
    def mdpage(self) -> VMPageMD:
        """The page's ``vm_page_md`` (embedded: the object itself)."""
        return self

    @property
    def pv(self) -> list[tuple[Pmap, int]]:
        """Every managed mapping ``(pmap, va)``, oldest first (a fresh list)."""
        if self.pv_pmap is None:
            return []
        out = [(self.pv_pmap, self.pv_va)]
        if self.pv_more is not None:
            out.extend(self.pv_more)
        return out

    @property
    def pv_count(self) -> int:
        if self.pv_pmap is None:
            return 0
        return 1 + (len(self.pv_more) if self.pv_more is not None else 0)


class ManagedPage(Protocol):
    """What the pmap needs of an MI vm_page."""

    @property
    def frame(self) -> int: ...

    @property
    def mdpage(self) -> VMPageMD: ...


PhysToPage = Callable[[int], ManagedPage | None]


@attrs.define(slots=True, eq=False, repr=False)
class Pmap:
    """One address space's page table (``struct pmap``)."""

    name: str
    module: PmapModule
    is_kernel: bool
    minva: int
    maxva: int
    # va -> pte (int), kept in 512-entry page-table pages as on x86
    # (uvmloan.ptetable: 8 bytes a PTE where a dict entry cost ~72).  Range
    # operations visit addresses in ascending order (``_vas_in``).
    ptes: PTETable = attrs.field(
        default=attrs.Factory(
            lambda self: PTETable(self.module.platform.profile.page_size.bit_length() - 1),
            takes_self=True,
        )
    )
    cpus: set[int] = attrs.field(factory=set)  # pm_cpus
    kernel_cpus: set[int] = attrs.field(factory=set)  # pm_kernel_cpus
    resident_count: int = 0
    wired_count: int = 0
    destroyed: bool = False

    def __repr__(self) -> str:
        return f"<Pmap {self.name} {len(self.ptes)} PTEs on CPUs {sorted(self.cpus)}>"

    def pte(self, va: int) -> int:
        """The current PTE at va (0 if none), for inspection."""
        p: int = self.ptes.get(va, 0)
        return p

    def mappings(self) -> Iterator[tuple[int, int]]:
        """(va, pte) of every mapping, in address order."""
        return iter(sorted(self.ptes.items()))


def _vas_in(ptes: PTETable, sva: int, eva: int, page_size: int) -> list[int]:
    """The mapped page addresses in [sva, eva), ascending (SortedDict.irange's order).

    Walks the range when it has no more pages than the table has entries,
    else sorts the table's keys in the range: O(min(range, n log n)).  Keys
    are page aligned (pmap_enter/kenter check), so both ways agree.
    """
    if (eva - sva) // page_size <= len(ptes):
        return [va for va in range(sva, eva, page_size) if va in ptes]
    return sorted(va for va in ptes if sva <= va < eva)


def _keys_of(cls: type[Event], *fields: object) -> tuple[str, ...]:
    """The counter keys of ``cls``, for events whose keys do not depend on
    their fields (computed once from a prototype: single-sourced with the
    event class, never rebuilt per operation)."""
    keys: tuple[str, ...] = cls(0, 0, "-", *fields).counter_keys()
    return keys


# Counting-only trace mode (Tracer.full False): the keys the events would add.
_K_ENTER = _keys_of(PmapEnter, 0, 0, 0, False, False)
_K_REMOVE = _keys_of(PmapRemove, 0, 0)
_K_PROTECT = _keys_of(PmapProtect, 0, 0)
_K_UPDATE = _keys_of(PmapUpdate)
_K_PAGE_PROTECT = _keys_of(PageProtect, 0, 0, 0)
_K_INVLPG = _keys_of(TLBInvalidate, 0)
_K_FLUSH = _keys_of(TLBFlush, False, "-")
_K_FLUSHG = _keys_of(TLBFlush, True, "-")
_K_KENTER = _keys_of(KEnter, 0, 0, 0)
_K_KREMOVE = _keys_of(KRemove, 0, 0)
_K_IPI_DELIVERED = _keys_of(IPIDelivered, 0, VECTOR_TLB)
_K_CSW = _keys_of(ContextSwitch, "-", "-")

# pmap_tlb_shootdown's TLBSTATS scope of a user pmap, by (local, remote).
_SCOPES: dict[tuple[bool, bool], tuple[str, ...]] = {
    (False, False): (),
    (True, False): ("local",),
    (False, True): ("remote",),
    (True, True): ("local", "remote"),
}

_SQ_KEYS: dict[tuple[bool, str, tuple[str, ...], bool, bool], tuple[str, ...]] = {}


def _shootdown_queued_keys(
    allva_req: bool, why: str, scopes: tuple[str, ...], pte: int, allva: bool
) -> tuple[str, ...]:
    """ShootdownQueued's counter keys, from a prototype event per distinct
    (full-flush request, reason, scopes, PTE_G, packet allva): every field
    but the time, CPU, address space and the address itself (of which only
    "is it -1" is kept).  A handful of combinations exist, so the cache stays
    tiny; the keys still come from the event class's own method."""
    ck = (allva_req, why, scopes, bool(pte & PTE_G), allva)
    keys = _SQ_KEYS.get(ck)
    if keys is None:
        proto = ShootdownQueued(0, 0, "-", ALLVA if allva_req else 0, why, scopes, ck[3], allva)
        keys = _SQ_KEYS[ck] = proto.counter_keys()
    return keys


@attrs.define(slots=True, eq=False)
class PmapModule:
    """The machine-dependent pmap module of one machine.

    Operations keep the pmap(9) names and argument order.  Physical
    addresses are byte addresses (``frame * page_size``) as in NetBSD.
    """

    platform: Platform
    phys_to_page: PhysToPage
    kernel: Pmap = attrs.field(init=False)
    pmaps: list[Pmap] = attrs.field(factory=list)
    # Bug injection (tests prove the state machines catch it): a pmap_update
    # that does nothing.
    inject_skip_update: bool = False
    # Bug injection: pmap_sync_pv (pmap_page_protect, clear_modify/reference)
    # changes PTEs but forgets to queue their TLB shootdowns.
    inject_sync_pv_no_shootdown: bool = False
    # The profile's page size and its log2, as plain attributes (read on
    # every translation and fault; a property costs a call each time).
    page_size: int = attrs.field(init=False, default=0)
    page_shift: int = attrs.field(init=False, default=0)
    _pgmask: int = attrs.field(init=False, default=0)
    _maxuser: int = attrs.field(init=False, default=0)
    _kglobal: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        prof = self.platform.profile
        self.kernel = Pmap(
            "kernel",
            self,
            True,
            prof.vm_min_kernel_address,
            prof.vm_max_kernel_address,
        )
        # The kernel pmap is active on every running CPU.
        self.kernel.cpus = set(range(self.platform.ncpus))
        self.pmaps.append(self.kernel)
        # Constants of the hot paths, read once (a profile is frozen).
        self.page_size = prof.page_size
        self.page_shift = prof.page_size.bit_length() - 1
        self._pgmask = prof.page_size - 1
        self._maxuser = prof.vm_maxuser_address
        self._kglobal = prof.kernel_global

    # ------------------------------------------------------------------ helpers

    def _check_va(self, pmap: Pmap, va: int, what: str = "va") -> None:
        if not isinstance(va, int) or isinstance(va, bool):
            raise TypeError(f"{what} must be an int, not {type(va).__name__}")
        if va & (self.page_size - 1):
            raise ValueError(f"{what} {va:#x} is not page aligned (page size {self.page_size})")
        if not pmap.minva <= va < pmap.maxva:
            raise ValueError(
                f"{what} {va:#x} is outside pmap {pmap.name}'s range "
                f"[{pmap.minva:#x}, {pmap.maxva:#x})"
            )

    def _check_range(self, pmap: Pmap, sva: int, eva: int) -> None:
        self._check_va(pmap, sva, "sva")
        if not isinstance(eva, int) or isinstance(eva, bool):
            raise TypeError(f"eva must be an int, not {type(eva).__name__}")
        if eva & (self.page_size - 1):
            raise ValueError(f"eva {eva:#x} is not page aligned (page size {self.page_size})")
        if eva < sva or eva > pmap.maxva:
            raise ValueError(f"bad range [{sva:#x}, {eva:#x}) for pmap {pmap.name}")

    def _check_pmap(self, pmap: Pmap) -> None:
        if not isinstance(pmap, Pmap):
            raise TypeError(f"pmap must be a Pmap, not {type(pmap).__name__}")
        if pmap.module is not self:
            raise ValueError(f"pmap {pmap.name} belongs to another machine")
        if pmap.destroyed:
            raise ValueError(f"pmap {pmap.name} has been destroyed")

    def _check_pa(self, pa: int) -> int:
        if not isinstance(pa, int) or isinstance(pa, bool):
            raise TypeError(f"pa must be an int physical address, not {type(pa).__name__}")
        if pa & (self.page_size - 1):
            raise ValueError(f"pa {pa:#x} is not page aligned (page size {self.page_size})")
        frame = pa >> self.page_shift
        if not 0 <= frame < self.platform.physmem.npages:
            raise ValueError(
                f"pa {pa:#x} (frame {frame}) is outside physical memory "
                f"({self.platform.physmem.npages} frames)"
            )
        return frame

    def _check_prot(self, prot: int) -> None:
        if not isinstance(prot, int) or isinstance(prot, bool):
            raise TypeError(f"prot must be an int of VM_PROT_* bits, not {type(prot).__name__}")
        if prot & ~int(VMProt.READ | VMProt.WRITE | VMProt.EXECUTE):
            raise ValueError(f"prot {prot!r} is not a combination of VM_PROT_* bits")

    @staticmethod
    def _check_flags(flags: int) -> None:
        if not isinstance(flags, int) or isinstance(flags, bool):
            raise TypeError(f"flags must be an int, not {type(flags).__name__}")

    @staticmethod
    def _check_page(pg: ManagedPage) -> None:
        if not isinstance(getattr(pg, "mdpage", None), VMPageMD):
            raise TypeError(f"pg must be a vm_page (Page), not {type(pg).__name__}")

    def _check_cpu(self, cpu: CPU) -> None:
        if not isinstance(cpu, CPU):
            raise TypeError(f"cpu must be a CPU (machine.cpu(i)), not {type(cpu).__name__}")
        if cpu.index >= self.platform.ncpus or self.platform.cpus[cpu.index] is not cpu:
            raise ValueError(f"cpu {cpu.index} belongs to another machine")

    def _space_of(self, pmap: Pmap) -> str:
        return pmap.name

    # ------------------------------------------------------------- lifecycle

    def pmap_create(self, name: str) -> Pmap:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        prof = self.platform.profile
        pm = Pmap(name, self, False, prof.vm_min_user_address, prof.vm_maxuser_address)
        self.pmaps.append(pm)
        return pm

    def pmap_destroy(self, pmap: Pmap) -> None:
        """Release an address space that has no mappings left."""
        self._check_pmap(pmap)
        if pmap.is_kernel:
            raise KernelAssertion("pmap_destroy: cannot destroy the kernel pmap")
        if pmap.ptes:
            raise KernelAssertion(
                f"pmap_destroy: pmap {pmap.name} still has {len(pmap.ptes)} mappings"
            )
        for cpu in self.platform.cpus:
            if cpu.curpmap is pmap:
                raise KernelAssertion(
                    f"pmap_destroy: pmap {pmap.name} is loaded on CPU {cpu.index}"
                )
            pmap_tlb_pai_reset(cpu, pmap)  # pmap_tlb_asid_release_all: no flush
        pmap.destroyed = True
        pmap.cpus.clear()
        self.pmaps.remove(pmap)

    def pmap_kernel(self) -> Pmap:
        return self.kernel

    # --------------------------------------------------------- pv bookkeeping

    @staticmethod
    def _pv_enter(md: VMPageMD, pmap: Pmap, va: int) -> None:
        """Add (pmap, va) to the page's pv list (the caller knows it is absent)."""
        if md.pv_pmap is None:
            md.pv_pmap = pmap
            md.pv_va = va
        elif md.pv_more is None:
            md.pv_more = {(pmap, va): None}
        else:
            md.pv_more[(pmap, va)] = None

    def _pv_remove(self, frame: int, pmap: Pmap, va: int, opte: int) -> None:
        pg = self.phys_to_page(frame)
        if pg is None:
            raise KernelAssertion(f"pv entry for frame {frame} without a vm_page")
        md = pg.mdpage
        more = md.pv_more
        if md.pv_pmap is pmap and md.pv_va == va:
            if more is None:
                md.pv_pmap = None
                md.pv_va = 0
            else:
                # Promote the oldest other entry: pv keeps its entry order.
                key = next(iter(more))
                del more[key]
                md.pv_pmap, md.pv_va = key
                if not more:
                    md.pv_more = None
        elif more is not None and (pmap, va) in more:
            del more[(pmap, va)]
            if not more:
                md.pv_more = None
        else:
            raise KernelAssertion(f"pmap: no pv entry for {pmap.name} va {va:#x} on frame {frame}")
        md.attrs |= opte & (PTE_A | PTE_D)

    # ------------------------------------------------------------ operations

    def pmap_enter(self, pmap: Pmap, va: int, pa: int, prot: int, flags: int = 0) -> int:
        """Enter a managed (or, for frames without a vm_page, unmanaged) mapping.

        x86 ``pmap_enter_ma``: a shootdown is queued only when the old PTE was
        present and accessed and the frame or the W bit changes.
        """
        # The argument checks, in one test of exact types and ranges for the
        # usual case (this runs on every fault); anything unusual takes the
        # _check_* path, which accepts or explains exactly as before.
        shift = self.page_shift
        frame = pa >> shift if type(pa) is int else -1
        if not (
            type(pmap) is Pmap
            and pmap.module is self
            and not pmap.destroyed
            and type(va) is int
            and not va & self._pgmask
            and pmap.minva <= va < pmap.maxva
            and 0 <= frame < self.platform.physmem.npages
            and not pa & self._pgmask
            and type(prot) is int
            and not prot & ~7
            and type(flags) is int
        ):
            self._check_pmap(pmap)
            self._check_va(pmap, va)
            frame = self._check_pa(pa)
            self._check_prot(prot)
            self._check_flags(flags)
        access = flags & 7  # VM_PROT_READ | VM_PROT_WRITE | VM_PROT_EXECUTE
        if access & ~prot:
            raise ValueError(
                f"pmap_enter: access type {access:#x} exceeds protection {int(prot):#x}"
            )
        plat = self.platform
        # pte_make, inlined (hot path).
        npte = (frame << PTE_FRAME_SHIFT) | PTE_P
        if prot & VMProt.WRITE:
            npte |= PTE_W
        if not prot & VMProt.EXECUTE:
            npte |= PTE_NX
        wired = bool(flags & PMAP_WIRED)
        if wired:
            npte |= PTE_WIRED
        if va < self._maxuser:
            npte |= PTE_U
        if pmap.is_kernel and self._kglobal:
            npte |= PTE_G
        if access:
            # x86 pre-sets A (and D for a write access): the fault that asked
            # for the mapping is about to use it.
            npte |= PTE_A
            if access & VMProt.WRITE:
                npte |= PTE_D
        pg = self.phys_to_page(frame)
        if pg is not None:
            npte |= PTE_PVLIST
        ptes = pmap.ptes
        opte: int = ptes.get(va, 0)
        same = (opte & PTE_FRAME_MASK) >> PTE_FRAME_SHIFT == frame
        if opte & PTE_P:
            # pmap.c 1.381 pmap_enter_ma: "if the same page, inherit PTE_A and
            # PTE_D" -- a CPU may still cache the old entry (W|D), so the bits
            # must survive for a later write-protect to shoot it down.
            if same:
                npte |= opte & (PTE_A | PTE_D)
            # Replace the old mapping's pv/stat bookkeeping.
            if opte & PTE_PVLIST:
                if not same:
                    self._pv_remove(pte_frame(opte), pmap, va, opte)
                elif pg is not None:
                    pg.mdpage.attrs |= opte & (PTE_A | PTE_D)
            if opte & PTE_WIRED:
                pmap.wired_count -= 1
        else:
            pmap.resident_count += 1
        if wired:
            pmap.wired_count += 1
        ptes[va] = npte
        if pg is not None and not (opte & PTE_PVLIST and same):
            # _pv_enter, inlined (one per fault)
            md = pg.mdpage
            if md.pv_pmap is None:
                md.pv_pmap = pmap
                md.pv_va = va
            elif md.pv_more is None:
                md.pv_more = {(pmap, va): None}
            else:
                md.pv_more[(pmap, va)] = None
        plat.cpus[plat.cur].clock += plat.costs.pte_update_ns  # plat.charge, inlined
        tr = plat.tracer
        if tr.on:
            if tr.full:
                tr.emit(
                    PmapEnter(
                        plat.now(), plat.cur, pmap.name, va, frame, int(prot), pg is not None, wired
                    )
                )
            else:
                tr.tally(_K_ENTER)
        if opte & (PTE_P | PTE_A) == (PTE_P | PTE_A) and (opte ^ npte) & (PTE_FRAME_MASK | PTE_W):
            self.pmap_tlb_shootdown(pmap, va, opte, TLBSHOOT_ENTER)
        return 0

    def pmap_remove(self, pmap: Pmap, sva: int, eva: int) -> None:
        """Remove mappings in [sva, eva); shootdown only for accessed PTEs."""
        mask = self._pgmask
        # One exact-type test for the usual case, the explaining checks else.
        if not (
            type(pmap) is Pmap
            and pmap.module is self
            and not pmap.destroyed
            and type(sva) is int
            and type(eva) is int
            and not (sva | eva) & mask
            and pmap.minva <= sva <= eva <= pmap.maxva
            and sva < pmap.maxva
        ):
            self._check_pmap(pmap)
            self._check_range(pmap, sva, eva)
        ptes = pmap.ptes
        ps = mask + 1
        if eva - sva == ps:
            vas = [sva] if sva in ptes else []  # one page: the common case
        else:
            vas = _vas_in(ptes, sva, eva, ps)
        for va in vas:
            opte = ptes.pop(va)
            self._remove_pte_bookkeeping(pmap, va, opte)
            if opte & PTE_A:
                self.pmap_tlb_shootdown(pmap, va, opte, TLBSHOOT_REMOVE_PTE)

    def _remove_pte_bookkeeping(self, pmap: Pmap, va: int, opte: int) -> None:
        plat = self.platform
        pmap.resident_count -= 1
        if opte & PTE_WIRED:
            pmap.wired_count -= 1
        if opte & PTE_PVLIST:
            self._pv_remove(pte_frame(opte), pmap, va, opte)
        plat.charge(plat.costs.pte_update_ns)
        tr = plat.tracer
        if tr.on:
            if tr.full:
                tr.emit(PmapRemove(plat.now(), plat.cur, pmap.name, va, pte_frame(opte)))
            else:
                tr.tally(_K_REMOVE)

    def pmap_protect(self, pmap: Pmap, sva: int, eva: int, prot: int) -> None:
        """Lower the protection of [sva, eva); never adds permissions.

        x86 ``pmap_protect`` (pmap.h): a protection without READ/EXECUTE is a
        remove; with WRITE it does nothing; otherwise ``pmap_write_protect``,
        which shoots down only PTEs that had D set (a CPU caching a clean
        entry must re-walk to set D and will see W gone).
        """
        self._check_pmap(pmap)
        self._check_range(pmap, sva, eva)
        self._check_prot(prot)
        if prot & VMProt.WRITE:
            return
        if not prot & (VMProt.READ | VMProt.EXECUTE):
            self.pmap_remove(pmap, sva, eva)
            return
        plat = self.platform
        bit_rem = PTE_W
        bit_put = 0 if prot & VMProt.EXECUTE else PTE_NX
        tr = plat.tracer
        ptes = pmap.ptes
        for va in _vas_in(ptes, sva, eva, self._pgmask + 1):
            opte = ptes[va]
            npte = (opte & ~bit_rem) | bit_put
            if npte != opte:
                ptes[va] = npte
                plat.charge(plat.costs.pte_update_ns)
                if tr.on:
                    if tr.full:
                        tr.emit(PmapProtect(plat.now(), plat.cur, pmap.name, va, int(prot)))
                    else:
                        tr.tally(_K_PROTECT)
            # pmap_write_protect (pmap.c 1.381) tests the old D bit only, even
            # when the PTE was already read-only.
            if opte & PTE_D:
                self.pmap_tlb_shootdown(pmap, va, opte, TLBSHOOT_WRITE_PROTECT)

    def pmap_page_protect(self, pg: ManagedPage, prot: int) -> None:
        """Lower every managed mapping of ``pg``; complete when it returns.

        x86 (pmap.h 1.127 inline): WRITE in prot -> nothing; READ or EXECUTE
        left -> ``pmap_pp_clear_attrs(W)``; otherwise ``pmap_pp_remove``.
        Both end in ``pmap_tlb_shootnow()``: synchronous, unlike the
        deferrable operations.  ``pmap_kenter_pa`` mappings are not on the pv
        list and are untouched.
        """
        self._check_page(pg)
        self._check_prot(prot)
        md = pg.mdpage
        plat = self.platform
        n = md.pv_count
        if prot & VMProt.WRITE:
            return
        tr = plat.tracer
        if tr.on:
            if tr.full:
                tr.emit(PageProtect(plat.now(), plat.cur, "-", pg.frame, int(prot), n))
            else:
                tr.tally(_K_PAGE_PROTECT)
        if prot & (VMProt.READ | VMProt.EXECUTE):
            for pmap, va in list(md.pv):
                self._sync_pv(pmap, va, PTE_W)
            self.pmap_tlb_shootnow()
        else:
            for pmap, va in list(md.pv):
                opte = pmap.ptes.pop(va)
                self._remove_pte_bookkeeping(pmap, va, opte)
                if opte & PTE_A and not self.inject_sync_pv_no_shootdown:
                    self.pmap_tlb_shootdown(pmap, va, opte, TLBSHOOT_SYNC_PV)
                # x86 pmap_pp_remove: shoot now after each mapping.
                self.pmap_tlb_shootnow()

    def _sync_pv(self, pmap: Pmap, va: int, clearbits: int) -> bool:
        """x86 ``pmap_sync_pv``: clear bits in one mapping; True if it was modified.

        A shootdown is needed only if the PTE was accessed, except that
        clearing W alone from a PTE with D clear needs none.  When shooting
        down, A and D are cleared too (their old values go to pp_attrs).
        """
        plat = self.platform
        opte: int = pmap.ptes[va]
        # pmap.c 1.381: "Check if there's anything to do on this PTE."
        need = bool(opte & PTE_A) and bool(opte & clearbits)
        if clearbits == PTE_W and not opte & PTE_D:
            need = False
        npte = opte & ~clearbits
        if need:
            npte &= ~(PTE_A | PTE_D)
        pg = self.phys_to_page(pte_frame(opte))
        if pg is not None:
            pg.mdpage.attrs |= opte & (PTE_A | PTE_D)
        if npte != opte:
            pmap.ptes[va] = npte
            plat.charge(plat.costs.pte_update_ns)
        if need and not self.inject_sync_pv_no_shootdown:
            self.pmap_tlb_shootdown(pmap, va, opte, TLBSHOOT_SYNC_PV)
        return bool(opte & PTE_D)

    def pmap_kenter_pa(self, va: int, pa: int, prot: int, flags: int = 0) -> None:
        """An unmanaged, wired kernel mapping (never on a pv list).

        pmap(9): MI code must not kenter over a valid mapping; the model
        refuses it (x86 would print "mapping already present" and shoot it
        down).  Fresh KVA therefore never needs a shootdown.
        """
        kpm = self.kernel
        self._check_va(kpm, va)
        frame = self._check_pa(pa)
        self._check_flags(flags)
        self._check_prot(prot)
        opte: int = kpm.ptes.get(va, 0)
        if opte & PTE_P:
            raise KernelAssertion(
                f"pmap_kenter_pa: va {va:#x} already maps frame {pte_frame(opte)} "
                "(pmap(9): never kenter over a valid mapping)"
            )
        plat = self.platform
        npte = pte_make(frame, prot) | PTE_WIRED
        if plat.profile.kernel_global:
            npte |= PTE_G
        kpm.ptes[va] = npte
        kpm.resident_count += 1
        kpm.wired_count += 1
        plat.charge(plat.costs.pte_update_ns)
        tr = plat.tracer
        if tr.on:
            if tr.full:
                tr.emit(KEnter(plat.now(), plat.cur, "kernel", va, frame, int(prot)))
            else:
                tr.tally(_K_KENTER)

    def pmap_kremove(self, sva: int, size: int) -> None:
        """Remove kernel mappings made by kenter; shootdown for accessed ones.

        x86 ``pmap_kremove1``: a page whose PTE was never accessed (e.g. only
        DMA'd by a NIC through its physical address) needs no shootdown.
        Must be followed by ``pmap_update`` before the pages are reused.
        """
        kpm = self.kernel
        self._check_va(kpm, sva, "va")
        if not isinstance(size, int) or size < 0 or size & (self.page_size - 1):
            raise ValueError(f"pmap_kremove: size {size!r} must be a non-negative page multiple")
        if sva + size > kpm.maxva:
            raise ValueError(f"pmap_kremove: range [{sva:#x}, {sva + size:#x}) leaves kernel space")
        for va in range(sva, sva + size, self.page_size):
            opte = kpm.ptes.get(va, 0)
            if opte & PTE_PVLIST:
                raise KernelAssertion(f"pmap_kremove: managed mapping at {va:#x}")
        plat = self.platform
        tr = plat.tracer
        for va in range(sva, sva + size, self.page_size):
            opte = kpm.ptes.pop(va, 0)
            if not opte & PTE_P:
                continue
            kpm.resident_count -= 1
            kpm.wired_count -= 1
            plat.charge(plat.costs.pte_update_ns)
            if tr.on:
                if tr.full:
                    tr.emit(KRemove(plat.now(), plat.cur, "kernel", va, pte_frame(opte)))
                else:
                    tr.tally(_K_KREMOVE)
            if opte & (PTE_P | PTE_A) == (PTE_P | PTE_A):
                self.pmap_tlb_shootdown(kpm, va, opte, TLBSHOOT_KREMOVE)

    def pmap_update(self, pmap: Pmap | None = None) -> None:
        """Complete every deferred update: flush this CPU's shootdown packet.

        x86 ``pmap_update`` runs ``pmap_tlb_shootnow()``, which processes the
        *current CPU's* packet whatever pmap it is given.
        """
        if pmap is not None and (
            type(pmap) is not Pmap or pmap.module is not self or pmap.destroyed
        ):
            self._check_pmap(pmap)
        plat = self.platform
        tr = plat.tracer
        if tr.on:
            if tr.full:
                tr.emit(PmapUpdate(plat.now(), plat.cur, pmap.name if pmap else "-"))
            else:
                tr.tally(_K_UPDATE)
        if self.inject_skip_update:
            return
        # Both shootnow flavours return at once on an empty packet; test it
        # here, as most updates (one after every fault) have nothing to do.
        pkt = plat.cpus[plat.cur].packet
        if pkt.vas or pkt.allva or pkt.pmaps:
            self.pmap_tlb_shootnow()

    def pmap_unwire(self, pmap: Pmap, va: int) -> None:
        """Clear the wired attribute of one mapping (no TLB effect)."""
        self._check_pmap(pmap)
        opte: int = pmap.ptes.get(va, 0)
        if opte & PTE_WIRED:
            pmap.ptes[va] = opte & ~PTE_WIRED
            pmap.wired_count -= 1

    def pmap_extract(self, pmap: Pmap, va: int) -> int | None:
        """The physical address va maps to, or None."""
        self._check_pmap(pmap)
        if not isinstance(va, int) or isinstance(va, bool):
            raise TypeError(f"va must be an int, not {type(va).__name__}")
        off = va & (self.page_size - 1)
        pte = pmap.ptes.get(va - off, 0)
        if not pte & PTE_P:
            return None
        return (pte_frame(pte) << self.page_shift) | off

    def _page_attr(self, pg: ManagedPage, bit: int) -> bool:
        self._check_page(pg)
        md = pg.mdpage
        if md.attrs & bit:
            return True
        if md.pv_pmap is None:
            return False
        return any(pm.ptes[va] & bit for pm, va in md.pv)

    def pmap_is_modified(self, pg: ManagedPage) -> bool:
        return self._page_attr(pg, PTE_D)

    def pmap_is_referenced(self, pg: ManagedPage) -> bool:
        return self._page_attr(pg, PTE_A)

    def _clear_attr(self, pg: ManagedPage, bit: int) -> bool:
        self._check_page(pg)
        md = pg.mdpage
        was = self._page_attr(pg, bit)
        for pmap, va in list(md.pv):
            if pmap.ptes[va] & bit:
                self._sync_pv(pmap, va, bit)
        md.attrs &= ~bit
        self.pmap_tlb_shootnow()
        return was

    def pmap_clear_modify(self, pg: ManagedPage) -> bool:
        return self._clear_attr(pg, PTE_D)

    def pmap_clear_reference(self, pg: ManagedPage) -> bool:
        return self._clear_attr(pg, PTE_A)

    # --------------------------------------------------- activation (pmap_load)

    def pmap_activate(self, pmap: Pmap, cpu: CPU | None = None) -> None:
        """Make ``pmap`` the user address space of ``cpu`` (x86 ``pmap_load``).

        Switching pmaps reloads CR3: on x86 every non-global TLB entry is
        dropped; with the MI ASID policy entries stay, tagged by ASID.
        """
        self._check_pmap(pmap)
        if pmap.is_kernel:
            raise ValueError("pmap_activate: the kernel pmap is always active")
        plat = self.platform
        cpu = plat.curcpu() if cpu is None else cpu
        self._check_cpu(cpu)
        old = cpu.curpmap
        if old is pmap and cpu.tlbstate is not TLBState.STALE:
            cpu.tlbstate = TLBState.VALID
            return
        if old is not None and old is not pmap:
            old.cpus.discard(cpu.index)
        pmap.cpus.add(cpu.index)
        cpu.curpmap = pmap
        cpu.tlbstate = TLBState.VALID
        cpu.charge(plat.costs.context_switch_ns)
        tr = plat.tracer
        if tr.on:
            if tr.full:
                tr.emit(
                    ContextSwitch(
                        cpu.clock, cpu.index, pmap.name, old.name if old else "-", pmap.name
                    )
                )
            else:
                tr.tally(_K_CSW)
        if plat.profile.tlb_policy == "x86":
            self._local_flush(cpu, False, "cr3 load")
        else:
            # pmap_activate -> pmap_tlb_asid_acquire (a pmap whose ASID was
            # reset later gets a new one at its next use: asid_of).
            pmap_tlb_asid_acquire(plat, cpu, pmap)

    def pmap_deactivate(self, cpu: CPU | None = None) -> None:
        """The CPU leaves user mode for good (idle, exit): x86 lazy TLB state.

        The CPU stays in ``pm_cpus`` and keeps its entries; the next
        shootdown for that pmap removes it (``TLBSTATE_STALE``).
        """
        plat = self.platform
        cpu = plat.curcpu() if cpu is None else cpu
        self._check_cpu(cpu)
        # pmap.c 1.381 pmap_deactivate: "Wait for pending TLB shootdowns to
        # complete" -- the packet is per-CPU and the LWP is leaving it.
        with plat.on_cpu(cpu.index):
            self.pmap_tlb_shootnow()
        # Only a loaded (VALID) pmap goes lazy: pmap_deactivate KASSERTs
        # TLBSTATE_VALID, and a CPU already off its user pmap returns early
        # (ci_want_pmapload / kernel pmap), so a STALE CPU stays STALE.
        if cpu.curpmap is not None and cpu.tlbstate is TLBState.VALID:
            cpu.tlbstate = TLBState.LAZY

    def pmap_unload(self, cpu: CPU) -> None:
        """Drop a pmap from a CPU entirely (the process exited)."""
        self._check_cpu(cpu)
        old = cpu.curpmap
        if old is not None:
            old.cpus.discard(cpu.index)
            cpu.curpmap = None
            cpu.tlbstate = TLBState.VALID
            if self.platform.profile.tlb_policy == "x86":
                self._local_flush(cpu, False, "cr3 load")
            # MI policy: pmap_tlb_asid_deactivate only leaves the CPU; the
            # ASID goes at pmap_destroy (pmap_tlb_asid_release_all), without
            # a flush (pmap_tlb_pai_reset).

    # ------------------------------------------------------------ shootdowns

    def asid_of(self, cpu: CPU, pmap: Pmap) -> int:
        """The TLB tag of ``pmap`` on ``cpu`` (always 0 on x86)."""
        if pmap.is_kernel or self.platform.profile.tlb_policy == "x86":
            return 0
        return pmap_tlb_asid_acquire(self.platform, cpu, pmap)

    def pmap_tlb_shootdown(self, pmap: Pmap, va: int, pte: int, why: str) -> None:
        """x86_tlb.c ``pmap_tlb_shootdown``: add a request to this CPU's packet."""
        plat = self.platform
        cpu = plat.curcpu()
        pkt = cpu.packet
        if pte & PTE_G and not pmap.is_kernel:
            raise KernelAssertion("pmap_tlb_shootdown: PTE_G on a user pmap")
        if pte & PTE_G:
            pkt.global_pte = True
        if plat.profile.tlb_policy == "mi-asid":
            pkt.pmaps[pmap] = None
            if va != ALLVA:
                pkt.vas.append(va)
        elif pkt.allva:
            pass  # already flushing everything (x86_tlb.c: tp_count == -1)
        elif len(pkt.vas) < plat.profile.tp_maxva and va != ALLVA:
            pkt.vas.append(va)
        else:
            pkt.allva = True
            pkt.vas.clear()
        me = cpu.index
        if pmap.is_kernel:
            pkt.targets = set(range(plat.ncpus))  # kcpuset_copy(kcpuset_running)
            scopes: tuple[str, ...] = ("kernel",)
        else:
            cpus = pmap.cpus  # only read below: no copy
            if va != ALLVA and va >= self._maxuser:
                cpus = cpus | pmap.kernel_cpus
            pkt.targets |= cpus
            pkt.userpmap = True
            local = me in cpus
            scopes = _SCOPES[local, len(cpus) > local]  # "local" and/or "remote"
        tr = plat.tracer
        if tr.on:
            if tr.full:
                tr.emit(
                    ShootdownQueued(
                        cpu.clock, me, pmap.name, va, why, scopes, bool(pte & PTE_G), pkt.allva
                    )
                )
            else:
                # _shootdown_queued_keys' cache, looked up inline first
                keys = _SQ_KEYS.get((va == ALLVA, why, scopes, bool(pte & PTE_G), pkt.allva))
                if keys is None:
                    keys = _shootdown_queued_keys(va == ALLVA, why, scopes, pte, pkt.allva)
                tr.tally(keys)

    def _local_flush(self, cpu: CPU, include_global: bool, why: str) -> None:
        plat = self.platform
        cpu.tlb.flush(include_global)
        cpu.charge(plat.costs.tlbflush_ns)
        tr = plat.tracer
        if tr.on:
            if tr.full:
                tr.emit(TLBFlush(cpu.clock, cpu.index, "-", include_global, why))
            else:
                tr.tally(_K_FLUSHG if include_global else _K_FLUSH)

    def _invalidate_packet(self, cpu: CPU, vas: list[int], allva: bool, glob: bool) -> None:
        """x86_tlb.c ``pmap_tlb_invalidate`` on one CPU."""
        plat = self.platform
        if allva:
            self._local_flush(cpu, glob, "shootdown")
            return
        shift = self.page_shift
        tr = plat.tracer
        cost = plat.costs.invlpg_ns
        for va in reversed(vas):
            cpu.tlb.invlpg(va >> shift)
            cpu.charge(cost)
            if tr.on:
                if tr.full:
                    tr.emit(TLBInvalidate(cpu.clock, cpu.index, "-", va))
                else:
                    tr.tally(_K_INVLPG)

    def _trace_round(
        self,
        cpu: CPU,
        start: int,
        targets: tuple[int, ...],
        nva: int,
        *,
        allva: bool = False,
        global_flush: bool = False,
        broadcast: bool = False,
    ) -> None:
        """The ShootdownRound event of a round ``cpu`` began at time ``start``
        and has just finished (only its counters when nobody wants events)."""
        tr = self.platform.tracer
        if not tr.full:
            # ShootdownRound.remote: some target is not this CPU
            remote = targets.count(cpu.index) != len(targets)
            tr.tally(ShootdownRound.keys(remote, allva, nva))
            return
        tr.emit(
            ShootdownRound(
                cpu.clock,
                cpu.index,
                "-",
                targets,
                nva,
                allva,
                global_flush,
                broadcast,
                cpu.clock - start,
            )
        )

    def pmap_tlb_shootnow(self) -> None:
        """x86_tlb.c ``pmap_tlb_shootnow``: process this CPU's packet.

        Remote targets get one broadcast IPI when the target set equals every
        attached CPU, else one IPI each; the local flush runs while they are
        in flight; the initiator then spins until every target acknowledged
        (targets acknowledge *before* flushing, x86_tlb.c 1.20).  One
        ``TLB shootdown`` evcnt per round with a remote target.
        """
        plat = self.platform
        if plat.profile.tlb_policy == "mi-asid":
            self._mi_shootnow()
            return
        cpu = plat.curcpu()
        pkt = cpu.packet
        if pkt.empty:
            return
        me = cpu.index
        targets = tuple(sorted(pkt.targets))
        local = me in pkt.targets
        remote = [c for c in targets if c != me]
        vas = list(pkt.vas)
        allva, glob, userpmap = pkt.allva, pkt.global_pte, pkt.userpmap
        costs = plat.costs
        tr = plat.tracer
        start = cpu.clock
        broadcast = False
        acks: list[int] = []
        if remote:
            broadcast = set(targets) == set(range(plat.ncpus))
            sends = [-1] if broadcast else remote
            for dst in sends:
                cpu.charge(costs.ipi_send_ns)
                if tr.on:
                    if tr.full:
                        tr.emit(IPISent(cpu.clock, me, "-", dst, VECTOR_TLB))
                    else:
                        tr.tally(IPISent.keys(dst))
            sent_at = cpu.clock
            for dst in remote:
                tcpu = plat.cpus[dst]
                tcpu.clock = max(tcpu.clock, sent_at + costs.ipi_deliver_ns)
                if tr.on:
                    if tr.full:
                        tr.emit(IPIDelivered(tcpu.clock, dst, "-", me, VECTOR_TLB))
                    else:
                        tr.tally(_K_IPI_DELIVERED)
                acks.append(tcpu.clock + costs.ipi_ack_ns)
                self._invalidate_packet(tcpu, vas, allva, glob)
                # pmap_tlb_intr: a lazy CPU asked to shoot a user pmap leaves it.
                if tcpu.tlbstate is TLBState.LAZY and userpmap and tcpu.curpmap is not None:
                    tcpu.curpmap.cpus.discard(dst)
                    tcpu.tlbstate = TLBState.STALE
                tcpu.charge(costs.ipi_ack_ns)
        # x86_tlb.c 1.20: the local-only fast path (rcpucount == 0) invalidates
        # on this CPU even when it is not in the target set.
        if local or not remote:
            self._invalidate_packet(cpu, vas, allva, glob)
        pkt.clear()
        if acks:
            cpu.clock = max(cpu.clock, *acks)
        if tr.on:
            if not tr.full:  # _trace_round's counting, inline: one round per update
                tr.tally(ShootdownRound.keys(bool(remote), allva, 0 if allva else len(vas)))
                return
            self._trace_round(
                cpu,
                start,
                targets,
                0 if allva else len(vas),
                allva=allva,
                global_flush=allva and glob,
                broadcast=broadcast,
            )

    def _mi_shootnow(self) -> None:
        """MI ``pmap_tlb.c`` style: address spaces, not addresses; no waiting.

        For each pmap with pending work: the local TLB drops the requested
        pages now; on every other CPU where the pmap is on-processor an IPI
        is posted (taken before that CPU's next access; the initiator does not
        wait); where it is merely active its ASID is retired without an IPI.
        Kernel pmap work goes to every other CPU by IPI.
        """
        plat = self.platform
        cpu = plat.curcpu()
        pkt = cpu.packet
        if pkt.empty:
            return
        me = cpu.index
        costs = plat.costs
        tr = plat.tracer
        shift = self.page_shift
        start = cpu.clock
        vas = list(pkt.vas)
        pmaps = list(pkt.pmaps)
        targets: set[int] = set()
        for va in vas:
            cpu.tlb.invlpg(va >> shift)
            cpu.charge(costs.invlpg_ns)
            if tr.on:
                tr.emit(TLBInvalidate(cpu.clock, me, "-", va))
        ipis = 0
        for pm in pmaps:
            for other in plat.cpus:
                if other.index == me:
                    continue
                if pm.is_kernel:
                    on_proc = True
                elif other.index not in pm.cpus and pm not in other.asids:
                    continue
                else:
                    on_proc = other.curpmap is pm
                if on_proc:
                    targets.add(other.index)
                    ipis += 1
                    cpu.charge(costs.ipi_send_ns)
                    if tr.on:
                        tr.emit(IPISent(cpu.clock, me, pm.name, other.index, "IPI_SHOOTDOWN"))
                    other.pending_ipis.append(self._mi_handler(other, pm, me))
                else:
                    # pmap_tlb_pai_reset.  NetBSD leaves the entries to natural
                    # replacement (orphaned: the ASID stays marked in use until
                    # the pool is reinitialised); the model drops them at once
                    # (specs/pmap.md M-A5), which no access can tell apart.
                    if pm in other.asids:
                        other.tlb.flush_asid(other.asids[pm])
                        pmap_tlb_pai_reset(other, pm)
                    if tr.on:
                        tr.emit(ASIDReset(cpu.clock, me, pm.name, other.index))
        pkt.clear()
        if tr.on:
            self._trace_round(cpu, start, tuple(sorted(targets | {me})), len(vas))

    def _mi_handler(self, target: CPU, pm: Pmap, source: int) -> Callable[[], None]:
        def run() -> None:
            plat = self.platform
            target.charge(plat.costs.ipi_deliver_ns)
            tr = plat.tracer
            if tr.on:
                tr.emit(IPIDelivered(target.clock, target.index, pm.name, source, "IPI_SHOOTDOWN"))
            if pm.is_kernel:
                self._local_flush(target, True, "shootdown ALLKERNEL")
            else:
                # pmap_tlb_shootdown_process, TLBINV_ONE: invalidate the
                # ASID if the victim is still on-processor, else reset it.
                asid = target.asids.get(pm)
                if asid is not None and target.curpmap is pm:
                    target.tlb.flush_asid(asid)
                    target.charge(plat.costs.tlbflush_ns)
                elif asid is not None:
                    pmap_tlb_pai_reset(target, pm)
                    if tr.on:
                        tr.emit(ASIDReset(target.clock, target.index, pm.name, target.index))

        return run

    def take_interrupts(self, cpu: CPU) -> None:
        """Run IPIs posted to ``cpu`` (taken at its next instruction boundary)."""
        while cpu.pending_ipis:
            cpu.pending_ipis.pop(0)()
