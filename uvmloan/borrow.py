"""Kernel borrowers: loan KVA, read-only kernel mappings, the release order.

What ``sosend_loan`` and ``nfsrv_read`` do with loaned pages
(``sys/kern/uipc_socket.c``, ``sys/nfs/nfs_serv.c``), factored for every
borrower of the model:

* reserve kernel VA first (``sokvaalloc`` -> ``uvm_km_alloc(kernel_map,
  ..., UVM_KMF_VAONLY)``): both ``sosend_loan`` and ``nfsrv_read`` do this
  *before* lending, so running out of kernel VA fails before any user
  mapping is write-protected or shot down;
* ``uvm_loan(..., UVM_LOAN_TOPAGE)`` (which write-protects every user
  mapping and shoots it down); if it fails the VA is given back
  (``sokvafree``);
* ``pmap_kenter_pa(va, pa, VM_PROT_READ, 0)`` per page, then one
  ``pmap_update(pmap_kernel())`` before the data is published;
* release strictly as ``sodoloanfree``: ``pmap_kremove`` ->
  ``pmap_update(pmap_kernel())`` -> ``uvm_unloan`` -> free the KVA.  Freeing
  the pages before the barrier would let a CPU read a reused frame through a
  stale TLB entry.

A kernel store through a loan mapping is a fatal kernel fault
(``KernelAssertion``), as the header comment of ``uvm_loan.c`` says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .errors import KernelAssertion, UVMError
from .loan import uvm_loan, uvm_loanuobjpages, uvm_unloan
from .param import EINVAL, ENOMEM, UVM_LOAN_TOPAGE, VM_PROT_NONE, VM_PROT_READ

if TYPE_CHECKING:
    from .machine import Machine
    from .map import VMMap
    from .object import UVMObject
    from .page import Page


def uvm_km_alloc_vaonly(m: Machine, size: int) -> int:
    """Reserve ``size`` bytes of kernel VA with nothing behind it."""
    return m.kernel_map.uvm_map(size, None, 0, VM_PROT_READ, copy_on_write=False, vaonly=True)


def uvm_km_free_vaonly(m: Machine, va: int, size: int) -> None:
    """Give back VA-only kernel space (its mappings must already be gone)."""
    kpm = m.pmap.kernel
    ps = m.page_size
    for a in range(va, va + size, ps):
        if a in kpm.ptes:
            raise KernelAssertion(f"uvm_km_free: {a:#x} is still mapped")
    e = m.kernel_map.uvm_map_lookup_entry(va)
    if e is None or not e.vaonly or e.start != va or e.end != va + size:
        raise KernelAssertion(f"uvm_km_free: [{va:#x}, {va + size:#x}) is not a VA-only allocation")
    del m.kernel_map.entries[va]


@attrs.define(slots=True, eq=False, repr=False)
class KernelLoan:
    """Pages lent to the kernel and mapped read-only at ``kva``.

    ``data_va`` is where the borrowed bytes start (``kva`` plus the offset
    of the user buffer in its first page); ``length`` is their number.
    """

    machine: Machine
    kva: int
    pages: list[Page]
    data_off: int
    length: int
    released: bool = False

    @property
    def npages(self) -> int:
        return len(self.pages)

    @property
    def data_va(self) -> int:
        return self.kva + self.data_off

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        return f"<KernelLoan {self.length} B at {self.data_va:#x}, {self.npages} pages, {state}>"

    def read(self, offset: int = 0, n: int | None = None, cpu: int | None = None) -> bytes:
        """The kernel reads the borrowed bytes through its own mapping."""
        self.machine._check_open("KernelLoan.read")
        if self.released:
            raise KernelAssertion("read through a released kernel loan")
        if n is None:
            n = self.length - offset
        if offset < 0 or n < 0 or offset + n > self.length:
            raise ValueError(f"read [{offset}, {offset + n}) outside the {self.length}-byte loan")
        m = self.machine
        c = m.platform.cur if cpu is None else m.platform.cpu(cpu).index
        with m.platform.on_cpu(c) as cpuinfo:
            return m.mmu.load(cpuinfo, self.data_va + offset, n, user=False)

    def write(self, offset: int, data: bytes, cpu: int | None = None) -> None:
        """A kernel store through the loan mapping: always fatal."""
        self.machine._check_open("KernelLoan.write")
        m = self.machine
        c = m.platform.cur if cpu is None else m.platform.cpu(cpu).index
        with m.platform.on_cpu(c) as cpuinfo:
            m.mmu.store(cpuinfo, self.data_va + offset, data, user=False)

    def pieces(self) -> list[tuple[int, int, int]]:
        """(frame, offset, length) of the borrowed bytes: what a NIC would DMA."""
        ps = self.machine.page_size
        out = []
        pos = self.data_off
        left = self.length
        for pg in self.pages:
            if pos >= ps:
                pos -= ps
                continue
            take = min(ps - pos, left)
            if take <= 0:
                break
            out.append((pg.frame, pos, take))
            left -= take
            pos = 0
        return out

    def release(self) -> None:
        """``sodoloanfree``: kremove, pmap_update, uvm_unloan, free the KVA."""
        self.machine._check_open("KernelLoan.release")
        if self.released:
            raise KernelAssertion(f"{self!r} released twice")
        m = self.machine
        size = self.npages * m.page_size
        if "unloan-before-kremove" in m.uvm.inject:
            uvm_unloan(self.pages, UVM_LOAN_TOPAGE)  # the injected bug: pages freed first
        m.pmap.pmap_kremove(self.kva, size)
        m.pmap.pmap_update(m.pmap.kernel)
        if "unloan-before-kremove" not in m.uvm.inject:
            uvm_unloan(self.pages, UVM_LOAN_TOPAGE)
        uvm_km_free_vaonly(m, self.kva, size)
        self.released = True
        m.kernel_loans.pop(self, None)


def _reserve_kva(m: Machine, npages: int, max_pages: int | None, who: str) -> int:
    """``sokvaalloc``: kernel VA for ``npages`` pages, before anything is lent.

    ``max_pages`` is the borrower's ``KASSERT(npgs <= M_EXT_MAXPAGES)``
    (sosend_loan, nfsrv_read): a request the borrower never makes.
    """
    if max_pages is not None and npages > max_pages:
        raise KernelAssertion(f"{who}: {npages} pages > M_EXT_MAXPAGES ({max_pages})")
    try:
        return uvm_km_alloc_vaonly(m, npages * m.page_size)
    except UVMError:
        raise UVMError(ENOMEM, f"{who}: no kernel VA for {npages} pages") from None


def _map_loaned(m: Machine, kva: int, pages: list[Page], data_off: int, length: int) -> KernelLoan:
    ps = m.page_size
    for i, pg in enumerate(pages):
        m.pmap.pmap_kenter_pa(kva + i * ps, pg.pa, VM_PROT_READ, 0)
    m.pmap.pmap_update(m.pmap.kernel)
    kl = KernelLoan(m, kva, pages, data_off, length)
    m.kernel_loans[kl] = None
    return kl


def kernel_loan(
    m: Machine, map: VMMap, va: int, length: int, max_pages: int | None = None
) -> KernelLoan:
    """Borrow the user bytes [va, va+length) of ``map`` the way sosend_loan does:
    kernel VA first, then ``uvm_loan``, then the read-only kernel mappings."""
    if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
        raise ValueError(f"kernel_loan: length must be a positive int, got {length!r}")
    if not isinstance(va, int) or isinstance(va, bool) or va < 0:
        raise ValueError(f"kernel_loan: va must be a non-negative int, got {va!r}")
    ps = m.page_size
    sva = va - va % ps
    eva = va + length + (-(va + length)) % ps
    kva = _reserve_kva(m, (eva - sva) // ps, max_pages, "kernel_loan")
    try:
        pages = uvm_loan(map, sva, eva - sva, UVM_LOAN_TOPAGE)
    except BaseException:
        uvm_km_free_vaonly(m, kva, eva - sva)  # sokvafree
        raise
    return _map_loaned(m, kva, pages, va - sva, length)  # type: ignore[arg-type]


def kernel_loan_uobj(
    m: Machine, uobj: UVMObject, offset: int, length: int, max_pages: int | None = None
) -> KernelLoan:
    """Borrow file bytes the way nfsrv_read does: kernel VA first, then
    ``uvm_loanuobjpages``."""
    if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
        raise ValueError(f"kernel_loan_uobj: length must be positive, got {length!r}")
    ps = m.page_size
    soff = offset - offset % ps
    eoff = offset + length + (-(offset + length)) % ps
    kva = _reserve_kva(m, (eoff - soff) // ps, max_pages, "kernel_loan_uobj")
    try:
        pages = uvm_loanuobjpages(uobj, soff, (eoff - soff) // ps)
    except BaseException:
        uvm_km_free_vaonly(m, kva, eoff - soff)
        raise
    return _map_loaned(m, kva, pages, offset - soff, length)


__all__ = [
    "EINVAL",
    "VM_PROT_NONE",
    "KernelLoan",
    "kernel_loan",
    "kernel_loan_uobj",
    "uvm_km_alloc_vaonly",
    "uvm_km_free_vaonly",
]
