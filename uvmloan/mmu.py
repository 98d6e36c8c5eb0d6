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
from .pmap.cpu import CPU, Platform
from .pmap.pmap import Pmap, PmapModule
from .pmap.pte import PTE_A, PTE_D, PTE_P, PTE_U, PTE_W, pte_frame
from .trace import Fault

MAX_FAULT_RETRIES = 16


@attrs.define(slots=True, eq=False)
class MMU:
    platform: Platform
    pmap_module: PmapModule
    # Statistics of the hardware itself (not trace events: they are not state
    # changes, and counting them must cost nothing).
    tlb_hits: int = 0
    page_walks: int = 0

    def _pmap_for(self, cpu: CPU, va: int, user: bool) -> Pmap:
        prof = self.platform.profile
        if va >= prof.vm_min_kernel_address:
            return self.pmap_module.kernel
        if va >= prof.vm_maxuser_address or va < 0:
            raise SegmentationFault(va, "access", "address outside user and kernel space")
        pm = cpu.curpmap
        if pm is None:
            raise KernelAssertion(f"user address {va:#x} accessed on CPU {cpu.index} with no pmap")
        return pm

    def translate(self, cpu: CPU, va: int, write: bool, user: bool) -> int:
        """The frame backing ``va`` for this access, faulting as needed."""
        plat = self.platform
        pmm = self.pmap_module
        shift = pmm.page_shift
        page_va = va & ~(plat.profile.page_size - 1)
        vpn = page_va >> shift
        costs = plat.costs
        for _ in range(MAX_FAULT_RETRIES):
            if cpu.pending_ipis:
                pmm.take_interrupts(cpu)
            pmap = self._pmap_for(cpu, va, user)
            key = (pmm.asid_of(cpu, pmap), vpn)
            ent = cpu.tlb.lookup(key)
            if ent is not None:
                pte = ent[1]
                ok = not (user and not pte & PTE_U)
                if ok and write:
                    if not pte & PTE_W:
                        ok = False
                    elif not pte & PTE_D:
                        # Setting D needs a locked page walk: the PTE as it is
                        # now decides, not the snapshot.
                        ent = None
                if ok and ent is not None:
                    self.tlb_hits += 1
                    return pte_frame(pte)
                if not ok:
                    # A faulting access drops the entry (SDM 4.10.4.1).
                    cpu.tlb.invalidate_key(key)
                    self._fault(cpu, pmap, page_va, write, user, "protection")
                    continue
            # Page walk.
            self.page_walks += 1
            cpu.charge(costs.page_walk_ns)
            pte = pmap.ptes.get(page_va, 0)
            if not pte & PTE_P:
                cpu.tlb.invalidate_key(key)
                self._fault(cpu, pmap, page_va, write, user, "miss")
                continue
            if (user and not pte & PTE_U) or (write and not pte & PTE_W):
                cpu.tlb.invalidate_key(key)
                self._fault(cpu, pmap, page_va, write, user, "protection")
                continue
            npte = pte | PTE_A | (PTE_D if write else 0)
            if npte != pte:
                pmap.ptes[page_va] = npte
            cpu.tlb.insert(key, pmap, npte)
            return pte_frame(npte)
        raise KernelAssertion(f"fault loop at {va:#x} on CPU {cpu.index}: no progress")

    def _fault(self, cpu: CPU, pmap: Pmap, va: int, write: bool, user: bool, why: str) -> None:
        plat = self.platform
        access = "write" if write else "read"
        cpu.charge(plat.costs.fault_entry_ns)
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
                tr.emit(Fault(cpu.clock, cpu.index, pmap.name, va, access, why, "EFAULT"))
            if pmap.is_kernel and not user:
                raise KernelAssertion(f"kernel {access} fault at {va:#x} with no fault handler")
            raise SegmentationFault(va, access, f"{why} fault and no fault handler")
        saved = plat.cur
        plat.cur = cpu.index
        try:
            handler(cpu, pmap, va, int(VMProt.WRITE if write else VMProt.READ), user)
        except SegmentationFault:
            if tr.on:
                tr.emit(Fault(cpu.clock, cpu.index, pmap.name, va, access, why, "EFAULT"))
            raise
        finally:
            plat.cur = saved
        if tr.on:
            tr.emit(Fault(cpu.clock, cpu.index, pmap.name, va, access, why, "resolved"))

    def _frames(self, cpu: CPU, va: int, n: int, write: bool, user: bool) -> list[int]:
        ps = self.platform.profile.page_size
        first = va & ~(ps - 1)
        last = (va + n - 1) & ~(ps - 1)
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
        if n == 0:
            return b""
        plat = self.platform
        frames = self._frames(cpu, va, n, False, user)
        cpu.charge(plat.costs.copy_ns(n))
        return plat.physmem.copyout(frames, va & (plat.profile.page_size - 1), n)

    def store(
        self, cpu: CPU, va: int, data: bytes | bytearray | memoryview, user: bool = True
    ) -> None:
        """Write ``data`` at ``va`` as ``cpu`` would (faulting as needed)."""
        self._check_args(cpu, va)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        n = len(data)
        if n == 0:
            return
        plat = self.platform
        frames = self._frames(cpu, va, n, True, user)
        cpu.charge(plat.costs.copy_ns(n))
        plat.physmem.copyin(frames, va & (plat.profile.page_size - 1), data)
