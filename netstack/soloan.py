"""Loan KVA, sosend_loan, soloanfree and the sopendfree thread.

``sys/kern/uipc_socket.c`` 1.246: ``sokvareserve``/``sokvaunreserve``,
``sokvaalloc``/``sokvafree``, ``sosend_loan``, ``soloanfree``,
``sopendfree_thread``, ``sodoloanfree``; and 1.66.4.1 (2002) for the
per-socket ``sodopendfree``.  ``sosend`` (netstack.socket) calls
``sosend_loan``; everything here is re-exported from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from uvmloan.borrow import KernelLoan, uvm_km_alloc_vaonly, uvm_km_free_vaonly
from uvmloan.errors import KernelAssertion, UVMError
from uvmloan.loan import uvm_loan, uvm_unloan
from uvmloan.param import UVM_LOAN_TOPAGE, VM_PROT_READ
from uvmloan.trace import Event

from .mbuf import M_EXT, M_EXT_PAGES, M_EXT_ROMAP, MEXTADD, Mbuf

if TYPE_CHECKING:
    from uvmloan.page import Page

    from .socket import Socket, SocketLayer, Uio


@attrs.frozen(slots=True)
class SoLoanFree(Event):
    """``sodoloanfree``: one loaned mbuf's pages unloaned and its KVA freed."""

    KIND: ClassVar[str] = "sodoloanfree"
    kva: int
    npages: int
    nbytes: int


# --------------------------------------------------------------------- KVA


def sokvareserve(layer: SocketLayer, length: int) -> int:
    """Reserve ``length`` bytes of loan KVA, waiting while over ``somaxkva``.

    Each wait bumps "kva limit".  A wait nothing can end is the model's
    signal: return 0, the caller falls back to copying.
    """
    while layer.socurkva + length > layer.somaxkva:
        layer.count("kva limit", length)
        if not layer.wait(lambda: layer.socurkva + length <= layer.somaxkva):
            return 0
    layer.socurkva += length
    return length


def sokvaunreserve(layer: SocketLayer, length: int) -> None:
    layer.socurkva -= length
    if layer.socurkva < 0:
        raise KernelAssertion(f"socurkva went negative ({layer.socurkva})")


def sokvaalloc(layer: SocketLayer, sva: int, length: int) -> int:
    """Reserve, then allocate VA-only kernel space (0 on failure)."""
    if sokvareserve(layer, length) == 0:
        return 0
    try:
        return uvm_km_alloc_vaonly(layer.machine, length)
    except UVMError:
        sokvaunreserve(layer, length)
        return 0


def sokvafree(layer: SocketLayer, sva: int, length: int) -> None:
    uvm_km_free_vaonly(layer.machine, sva, length)
    sokvaunreserve(layer, length)


def sodoloanfree(layer: SocketLayer, pgs: list[Page], buf: int, size: int) -> None:
    """kremove, pmap_update, uvm_unloan, free the KVA: in that order."""
    m = layer.machine
    ps = m.page_size
    eva = -(-(buf + size) // ps) * ps
    sva = buf - buf % ps
    length = eva - sva
    m.pmap.pmap_kremove(sva, length)
    if "skip-kremove-barrier" not in layer.inject:
        m.pmap.pmap_update(m.pmap.kernel)
    uvm_unloan(pgs, UVM_LOAN_TOPAGE)
    sokvafree(layer, sva, length)
    kl = layer.loans.pop(sva, None)
    if kl is not None:
        kl.released = True
        m.kernel_loans.pop(kl, None)
    tr = m.tracer
    if tr.on:
        cpu = m.platform.curcpu()
        tr.emit(SoLoanFree(cpu.clock, cpu.index, "kernel", sva, len(pgs), size))


def soloanfree(m: Mbuf, buf: int, size: int, arg: Any) -> None:
    """``ext_free`` of loaned storage: queue the mbuf; never free here.

    It may run in interrupt context (transmit completion), where KVA cannot
    be given back; the "sopendfree" thread does it.  The 2002 code queued on
    the socket and freed at the next sosend/soreceive/disconnect instead.
    """
    so: Socket = arg
    layer = so.layer
    if layer.pendfree_style == "per-socket" and not so.freed:
        so.so_pendfree.append(m)
        return
    # (2002 style with the socket already gone: nothing will enter it
    # again, so a kernel activity frees it as the thread would.)
    layer.so_pendfree.append(m)
    if not layer.pendfree_scheduled:
        layer.pendfree_scheduled = True
        layer.kick(lambda: sopendfree_thread(layer))


def _free_pending(layer: SocketLayer, mbufs: list[Mbuf]) -> int:
    rv = 0
    for m in mbufs:
        ext = m.m_ext
        if ext is None or (~m.m_flags & (M_EXT | M_EXT_PAGES)):
            raise KernelAssertion(f"sopendfree: {m!r} is not loaned storage")
        if ext.ext_refcnt != 0:
            raise KernelAssertion(f"sopendfree: {m!r} refcnt {ext.ext_refcnt}")
        rv += ext.ext_size
        sodoloanfree(layer, ext.ext_pgs, ext.ext_buf, ext.ext_size)
        m.pool.pool_cache_put(m)
    return rv


def sopendfree_thread(layer: SocketLayer) -> None:
    """One run of the "sopendfree" kernel thread: take the whole list, free it."""
    layer.pendfree_scheduled = False
    while layer.so_pendfree:
        batch = layer.so_pendfree
        layer.so_pendfree = []
        _free_pending(layer, batch)
    # cv_broadcast(&socurkva_cv): waiters poll their condition (see wait()).


def sodopendfree(so: Socket) -> None:
    """2002: free this socket's pending loans synchronously."""
    while so.so_pendfree:
        batch = so.so_pendfree
        so.so_pendfree = []
        _free_pending(so.layer, batch)


def sosend_loan(so: Socket, uio: Uio, m: Mbuf, space: int) -> int:
    """Lend the user pages behind the next ``space`` bytes; 0 to copy instead."""
    if uio.vmmap is None:
        return 0  # VMSPACE_IS_KERNEL_P
    layer = so.layer
    mach = layer.machine
    ps = mach.page_size
    space = min(space, uio.iov_len, layer.sock_loan_chunk)
    base = uio.iov_base
    eva = -(-(base + space) // ps) * ps
    sva = base - base % ps
    length = eva - sva
    npgs = length // ps
    if npgs > layer.sock_loan_chunk // ps + 1:
        raise KernelAssertion(f"sosend_loan: {npgs} pages > M_EXT_MAXPAGES")
    if sva < uio.vmmap.minva or eva > uio.vmmap.maxva:
        return 0  # uvm_loan would refuse the range; copying reports EFAULT
    lva = sokvaalloc(layer, sva, length)
    if lva == 0:
        return 0
    try:
        pgs = uvm_loan(uio.vmmap, sva, length, UVM_LOAN_TOPAGE)
    except UVMError:
        sokvafree(layer, lva, length)
        return 0
    pages: list[Page] = pgs  # type: ignore[assignment]
    for i, pg in enumerate(pages):
        mach.pmap.pmap_kenter_pa(lva + i * ps, pg.pa, VM_PROT_READ, 0)
    mach.pmap.pmap_update(mach.pmap.kernel)
    kl = KernelLoan(mach, lva, pages, base % ps, space)
    mach.kernel_loans[kl] = None
    layer.loans[lva] = kl
    ext = MEXTADD(m, lva + base % ps, space, soloanfree, so)
    ext.ext_pgs = pages
    m.m_flags |= M_EXT_PAGES | M_EXT_ROMAP
    uio.iov_base += space
    uio.iov_len -= space
    return space


__all__ = [
    "SoLoanFree",
    "sodoloanfree",
    "sodopendfree",
    "sokvaalloc",
    "sokvafree",
    "sokvareserve",
    "sokvaunreserve",
    "soloanfree",
    "sopendfree_thread",
    "sosend_loan",
]
