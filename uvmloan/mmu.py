"""The "hardware": loads and stores through a CPU's TLB and page tables.

Per page of an access: a TLB hit, or a page walk that sets A (and D for a
write) in the PTE and caches a snapshot; a permission check; a fault into the
handler the VM layer registered, then a retry.  Two x86 rules matter for
loaning:

* a write through a cached entry whose D bit is clear re-walks the page
  table to set D, so a W bit removed since the entry was cached is seen and
  the write faults (this is why a W-only downgrade of a clean PTE needs no
  shootdown);
* a cached entry is otherwise used as it is: after a deferred pmap change
  and before ``pmap_update``, another CPU really reads and writes through
  its stale entry.
"""

from __future__ import annotations

import attrs

from .errors import KernelAssertion, SegmentationFault
from .param import VMProt
from .physmem import CopyIn1
from .pmap.cpu import CPU, Platform
from .pmap.pmap import Pmap, PmapModule
from .pmap.pte import PTE_A, PTE_D, PTE_FRAME_MASK, PTE_FRAME_SHIFT, PTE_P, PTE_U, PTE_W
from .trace import Fault, Tracer

MAX_FAULT_RETRIES = 16

# A cached entry that lets a store through without a walk: W and D (a clear
# D re-walks), and U for a user access.
_STORE_HIT = PTE_W | PTE_D
_STORE_HIT_USER = PTE_W | PTE_D | PTE_U
# Counting-only trace mode: a resolved fault's counter keys.
_K_FAULT_RESOLVED = Fault.keys("resolved")


@attrs.define(slots=True, eq=False)
class MMU:
    platform: Platform
    pmap_module: PmapModule
    # Statistics of the hardware itself (not trace events: they are not state
    # changes, and counting them must cost nothing).
    tlb_hits: int = 0
    page_walks: int = 0
    # The profile's constants, resolved once: every access reads them, and a
    # machine's profile never changes (attribute lookups through profile and
    # costs were a measurable part of a TLB hit).
    _page_size: int = attrs.field(init=False)
    _shift: int = attrs.field(init=False)
    _kernel_min: int = attrs.field(init=False)
    _user_max: int = attrs.field(init=False)
    _x86: bool = attrs.field(init=False)
    _page_walk_ns: int = attrs.field(init=False)
    _copy_bw: int = attrs.field(init=False)
    # The one-page TLB hit is inlined in load_checked and store_checked for
    # the common case: an x86 TLB (every key has ASID 0), a user address
    # below both the user and the kernel limits.  _hit_max is that limit (0:
    # never inline, as on the MI ASID policy).
    _hit_max: int = attrs.field(init=False)
    _copyin1: CopyIn1 = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        prof = self.platform.profile
        self._page_size = prof.page_size
        self._shift = prof.page_size.bit_length() - 1
        self._kernel_min = prof.vm_min_kernel_address
        self._user_max = prof.vm_maxuser_address
        self._x86 = prof.tlb_policy == "x86"
        self._page_walk_ns = self.platform.costs.page_walk_ns
        self._copy_bw = self.platform.costs.copy_bw
        self._hit_max = min(self._user_max, self._kernel_min) if self._x86 else 0
        self._copyin1 = self.platform.physmem.copyin1

    def _pmap_for(self, cpu: CPU, va: int, user: bool) -> Pmap:
        if va >= self._kernel_min:
            return self.pmap_module.kernel
        if va >= self._user_max or va < 0:
            raise SegmentationFault(va, "access", "address outside user and kernel space")
        pm = cpu.curpmap
        if pm is None:
            raise KernelAssertion(f"user address {va:#x} accessed on CPU {cpu.index} with no pmap")
        return pm

    def translate(self, cpu: CPU, va: int, write: bool, user: bool) -> int:
        """The frame backing ``va`` for this access, faulting as needed."""
        # Every user load and store runs this: the TLB hit is kept free of
        # calls but the TLB's own lookup (the pmap choice of _pmap_for, the
        # ASID of PmapModule.asid_of and pte_frame are inlined).
        pmm = self.pmap_module
        page_va = va & -self._page_size
        vpn = page_va >> self._shift
        tlb = cpu.tlb
        for _ in range(MAX_FAULT_RETRIES):
            if cpu.pending_ipis:
                pmm.take_interrupts(cpu)
            if va >= self._kernel_min or va >= self._user_max or va < 0 or cpu.curpmap is None:
                pmap = self._pmap_for(cpu, va, user)  # the kernel pmap, or the error
            else:
                pmap = cpu.curpmap
            # x86 tags every entry 0; the MI policy tags user pmaps by ASID.
            asid = 0 if self._x86 or pmap.is_kernel else pmm.asid_of(cpu, pmap)
            key = (asid, vpn)
            ents = tlb.entries  # (a flush replaces the dict: read it every round)
            ent = ents.get(key)
            if ent is not None:
                if tlb.lru:  # TLB.lookup's refresh, inlined
                    del ents[key]
                    ents[key] = ent
                pte = ent[1]
                if user and not pte & PTE_U:
                    ok = False
                elif not write:
                    self.tlb_hits += 1
                    return (pte & PTE_FRAME_MASK) >> PTE_FRAME_SHIFT
                elif not pte & PTE_W:
                    ok = False
                elif pte & PTE_D:
                    self.tlb_hits += 1
                    return (pte & PTE_FRAME_MASK) >> PTE_FRAME_SHIFT
                else:
                    # Setting D needs a locked page walk: the PTE as it is
                    # now decides, not the snapshot.
                    ok = True
                if not ok:
                    # A faulting access drops the entry (SDM 4.10.4.1).
                    tlb.invalidate_key(key)
                    self._fault(cpu, pmap, page_va, write, user, "protection")
                    continue
            # Page walk.
            self.page_walks += 1
            cpu.clock += self._page_walk_ns
            pte = pmap.ptes.get(page_va, 0)
            if not pte & PTE_P:
                ents.pop(key, None)  # tlb.invalidate_key, inlined (every miss fault)
                self._fault(cpu, pmap, page_va, write, user, "miss")
                continue
            if (user and not pte & PTE_U) or (write and not pte & PTE_W):
                tlb.invalidate_key(key)
                self._fault(cpu, pmap, page_va, write, user, "protection")
                continue
            npte = pte | PTE_A | (PTE_D if write else 0)
            if npte != pte:
                pmap.ptes[page_va] = npte
            if tlb.evict_oldest:  # TLB.insert, inlined for LRU and FIFO
                if key in ents:
                    del ents[key]
                elif len(ents) >= tlb.capacity:
                    del ents[next(iter(ents))]
                ents[key] = (pmap, npte)
            else:
                tlb.insert(key, pmap, npte)
            return (npte & PTE_FRAME_MASK) >> PTE_FRAME_SHIFT
        raise KernelAssertion(f"fault loop at {va:#x} on CPU {cpu.index}: no progress")

    def _fault(self, cpu: CPU, pmap: Pmap, va: int, write: bool, user: bool, why: str) -> None:
        plat = self.platform
        access = "write" if write else "read"
        cpu.clock += plat.costs.fault_entry_ns
        handler = plat.fault_handler
        tr = plat.tracer
        if pmap.is_kernel and not user:
            pte = pmap.ptes.get(va, 0)
            if write and pte & PTE_P and not pte & PTE_W:
                raise KernelAssertion(
                    f"kernel write to read-only kernel mapping at {va:#x} "
                    "(a kernel write to a loaned page is fatal: uvm_loan.c header comment)"
                )
        if handler is None:
            if tr.on:
                _trace_fault(tr, cpu, pmap, va, access, why, "EFAULT")
            if pmap.is_kernel and not user:
                raise KernelAssertion(f"kernel {access} fault at {va:#x} with no fault handler")
            raise SegmentationFault(va, access, f"{why} fault and no fault handler")
        saved = plat.cur
        plat.cur = cpu.index
        try:
            handler(cpu, pmap, va, VMProt.WRITE if write else VMProt.READ, user)
        except SegmentationFault:
            if tr.on:
                _trace_fault(tr, cpu, pmap, va, access, why, "EFAULT")
            raise
        finally:
            plat.cur = saved
        if tr.on:
            if tr.full:
                _trace_fault(tr, cpu, pmap, va, access, why, "resolved")
            else:
                tr.tally(_K_FAULT_RESOLVED)

    def _frames(self, cpu: CPU, va: int, n: int, write: bool, user: bool) -> list[int]:
        ps = self._page_size
        first = va & -ps
        last = (va + n - 1) & -ps
        return [self.translate(cpu, p, write, user) for p in range(first, last + 1, ps)]

    def _check_args(self, cpu: CPU, va: int) -> None:
        cpus = self.platform.cpus
        if not isinstance(cpu, CPU) or cpu.index >= len(cpus) or cpus[cpu.index] is not cpu:
            raise TypeError(f"cpu must be one of this machine's CPUs, not {cpu!r}")
        if not isinstance(va, int) or isinstance(va, bool):
            raise TypeError(f"va must be an int, not {type(va).__name__}")

    def load(self, cpu: CPU, va: int, n: int, user: bool = True) -> bytes:
        """Read ``n`` bytes at ``va`` as ``cpu`` would (faulting as needed)."""
        self._check_args(cpu, va)
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"length must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"length must be >= 0, got {n}")
        return self.load_checked(cpu, va, n, user)

    def load_checked(self, cpu: CPU, va: int, n: int, user: bool) -> bytes:
        """``load`` for a caller that has validated its arguments (the
        Process facade): ``cpu`` is this machine's, ``va`` an int, ``n >= 0``."""
        if n == 0:
            return b""
        plat = self.platform
        off = va & (self._page_size - 1)
        if off + n <= self._page_size:
            # One page: the common case.  translate's TLB hit, inlined (see
            # _hit_max); anything else (a miss, a protection fault, pending
            # IPIs, a kernel address) takes translate, which looks again.
            ent = None
            if 0 <= va < self._hit_max and not cpu.pending_ipis and cpu.curpmap is not None:
                tlb = cpu.tlb
                ents = tlb.entries
                key = (0, va >> self._shift)
                ent = ents.get(key)
            if ent is not None and (not user or ent[1] & PTE_U):
                if tlb.lru:  # TLB.lookup's refresh
                    del ents[key]
                    ents[key] = ent
                self.tlb_hits += 1
                frames = [(ent[1] & PTE_FRAME_MASK) >> PTE_FRAME_SHIFT]
            else:
                frames = [self.translate(cpu, va, False, user)]
        else:
            frames = self._frames(cpu, va, n, False, user)
        cpu.clock += n * 1000 // self._copy_bw if self._copy_bw else 0  # CostModel.copy_ns
        return plat.physmem.copyout(frames, off, n)

    def store(
        self, cpu: CPU, va: int, data: bytes | bytearray | memoryview, user: bool = True
    ) -> None:
        """Write ``data`` at ``va`` as ``cpu`` would (faulting as needed)."""
        self._check_args(cpu, va)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        self.store_checked(cpu, va, data, user)

    def store_checked(
        self, cpu: CPU, va: int, data: bytes | bytearray | memoryview, user: bool
    ) -> None:
        """``store`` for a caller that has validated its arguments (the
        Process facade): ``cpu`` is this machine's, ``va`` an int, ``data``
        bytes-like."""
        n = len(data)
        if n == 0:
            return
        off = va & (self._page_size - 1)
        if off + n <= self._page_size:
            # One page: the common case, with translate's TLB hit inlined as
            # in load_checked (a hit on a write needs W and D, and U for a
            # user access; anything else takes translate).
            ent = None
            if 0 <= va < self._hit_max and not cpu.pending_ipis and cpu.curpmap is not None:
                tlb = cpu.tlb
                ents = tlb.entries
                key = (0, va >> self._shift)
                ent = ents.get(key)
            need = _STORE_HIT_USER if user else _STORE_HIT
            if ent is not None and ent[1] & need == need:
                if tlb.lru:  # TLB.lookup's refresh
                    del ents[key]
                    ents[key] = ent
                self.tlb_hits += 1
                frame = (ent[1] & PTE_FRAME_MASK) >> PTE_FRAME_SHIFT
            else:
                frame = self.translate(cpu, va, True, user)
            cpu.clock += n * 1000 // self._copy_bw if self._copy_bw else 0  # CostModel.copy_ns
            self._copyin1(frame, off, data)
            return
        frames = self._frames(cpu, va, n, True, user)
        cpu.clock += n * 1000 // self._copy_bw if self._copy_bw else 0  # CostModel.copy_ns
        self.platform.physmem.copyin(frames, off, data)


def _trace_fault(
    tr: Tracer, cpu: CPU, pmap: Pmap, va: int, access: str, why: str, result: str
) -> None:
    """The Fault event, or only its counters when nobody wants the event."""
    if tr.full:
        tr.emit(Fault(cpu.clock, cpu.index, pmap.name, va, access, why, result))
    else:
        tr.tally(Fault.keys(result))
