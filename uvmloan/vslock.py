"""Wiring a user range for the kernel's I/O: ``uvm_vslock``/``uvm_vsunlock``.

NetBSD's ``sys/uvm/uvm_glue.c`` (``uvm_vslock``: "wire the user pages of a
process for physio"; ``uvm_vsunlock``: unwire them) faults each page of the
range in with ``uvm_fault_wire`` and raises its ``wire_count``, so the
pagedaemon leaves it alone (``uvm_pagewire`` takes it off the paging
queues) while a device reads or writes it.  Nothing is write-protected, no
copy-on-write is set up and no kernel VA is needed: the caller hands the
pages (their frames) to the device.  This is also what Linux's
``get_user_pages``/``pin_user_pages`` does for ``MSG_ZEROCOPY``
(``net/core/datagram.c`` ``__zerocopy_sg_from_iter``), which is the user
in this project (``netstack.zerocopy``).

Two differences from ``uvm_glue.c``, both on purpose:

* the access is a read fault (``VM_PROT_READ``): the device only reads a
  send buffer, as ``iov_iter_get_pages`` without ``FOLL_WRITE``; a page
  that is copy-on-write shared stays shared, and a later user store gives
  the process a new page while the wired one keeps the old bytes;
* :func:`uvm_vsunlock_pages` unwires the very pages that were wired
  (``unpin_user_pages``), not whatever the map holds at those addresses
  now (``uvm_fault_unwire``'s lookup), since a store may have replaced a
  copy-on-write page in between.

Unmapping a range while it is wired is outside the model (NetBSD's
``physio`` callers sleep across the transfer, so it cannot happen there):
``uvm_pagefree`` clears ``wire_count`` and the later unwire raises
``KernelAssertion``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import UVMError
from .fault import uvm_fault
from .param import EFAULT, VM_PROT_READ

if TYPE_CHECKING:
    from .map import VMMap
    from .page import Page


def _check(vmmap: object, start: object, length: object) -> tuple[int, int]:
    from .map import VMMap

    if not isinstance(vmmap, VMMap):
        raise TypeError(f"uvm_vslock: expected a VMMap, not {type(vmmap).__name__}")
    for name, v in (("start", start), ("length", length)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"uvm_vslock: {name} must be an int, not {type(v).__name__}")
    assert isinstance(start, int) and isinstance(length, int)
    if length <= 0:
        raise ValueError(f"uvm_vslock: length must be positive, got {length}")
    if start < vmmap.minva or start + length > vmmap.maxva:
        raise UVMError(EFAULT, f"uvm_vslock: [{start:#x}, +{length}) is outside user space")
    ps = vmmap.page_size
    return start - start % ps, -(-(start + length) // ps) * ps


def uvm_vslock(vmmap: VMMap, start: int, length: int) -> list[Page]:
    """Wire the pages behind ``[start, start + length)``; returns them in order.

    Each page not resident (or not yet given to this address) is brought in
    by a read fault first.  All or nothing: a fault that fails (EFAULT: a
    hole or ``PROT_NONE``; ENOMEM) unwires what was wired and raises
    :class:`UVMError` with the map's pages as they were wired before.
    """
    sva, eva = _check(vmmap, start, length)
    ps = vmmap.page_size
    uvm = vmmap.uvm
    wired: list[Page] = []
    try:
        for va in range(sva, eva, ps):
            pg = _resident(vmmap, va)
            if pg is None:
                uvm_fault(vmmap, va, VM_PROT_READ)
                pg = _resident(vmmap, va)
                if pg is None:
                    raise UVMError(EFAULT, f"uvm_vslock: no page at {va:#x} after the fault")
            uvm.uvm_pagewire(pg)
            wired.append(pg)
    except UVMError:
        uvm_vsunlock_pages(wired)
        raise
    return wired


def _resident(vmmap: VMMap, va: int) -> Page | None:
    e = vmmap.uvm_map_lookup_entry(va)
    if e is None:
        raise UVMError(EFAULT, f"uvm_vslock: no mapping at {va:#x}")
    if not e.protection & VM_PROT_READ:
        raise UVMError(EFAULT, f"uvm_vslock: {e!r} cannot be read")
    return vmmap.page_at(e, va)


def uvm_vsunlock_pages(pages: list[Page]) -> None:
    """Unwire pages :func:`uvm_vslock` returned (each loses one wiring)."""
    for pg in pages:
        pg.allocator.uvm_pageunwire(pg)


__all__ = ["uvm_vslock", "uvm_vsunlock_pages"]
