"""Kernel operations under their NetBSD names and argument order.

NetBSD reaches its one kernel through globals; a model with several machines
finds the machine through the arguments instead (a pmap, a page, an object,
an anon or a map).  Each function here forwards to the machine the arguments
belong to, after checking the argument's type and that the machine is not
closed (``MachineClosed``).  ``uvm_pagealloc`` with neither object nor anon
needs the machine (its ``uvm``) as a keyword, since nothing else names it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import fault as _fault
from . import loan as _loan
from .anon import Anon
from .errors import MachineClosed
from .map import VMMap
from .page import Page, PageAllocator
from .pmap.cpu import Platform
from .pmap.pmap import Pmap

if TYPE_CHECKING:
    from .object import UVMObject


def _open(plat: Platform, what: str) -> None:
    # A machine's close() unmaps its arena; everything then is refused here
    # before any state changes (Machine._check_open for the facade).
    if plat.physmem.closed:
        raise MachineClosed(f"{what}: the machine is closed (close() unmapped its memory)")


def _pmap(pmap: Pmap, what: str) -> Pmap:
    if not isinstance(pmap, Pmap):
        raise TypeError(f"{what}: pmap must be a Pmap, not {type(pmap).__name__}")
    _open(pmap.module.platform, what)
    return pmap


def _page(pg: Page, what: str) -> Page:
    if not isinstance(pg, Page):
        raise TypeError(f"{what}: pg must be a Page, not {type(pg).__name__}")
    _open(pg.allocator.platform, what)
    return pg


def _map(map: VMMap, what: str) -> VMMap:
    if not isinstance(map, VMMap):
        raise TypeError(f"{what}: map must be a VMMap (e.g. proc.map), not {type(map).__name__}")
    _open(map.uvm.platform, what)
    return map


def pmap_enter(pmap: Pmap, va: int, pa: int, prot: int, flags: int = 0) -> int:
    """Map physical address ``pa`` at ``va`` in ``pmap`` with ``prot`` (0 or an errno)."""
    return _pmap(pmap, "pmap_enter").module.pmap_enter(pmap, va, pa, prot, flags)


def pmap_remove(pmap: Pmap, sva: int, eva: int) -> None:
    """Remove the mappings of [sva, eva); shootdowns wait for ``pmap_update``."""
    _pmap(pmap, "pmap_remove").module.pmap_remove(pmap, sva, eva)


def pmap_protect(pmap: Pmap, sva: int, eva: int, prot: int) -> None:
    """Lower the protection of [sva, eva) to ``prot`` (never raises it)."""
    _pmap(pmap, "pmap_protect").module.pmap_protect(pmap, sva, eva, prot)


def pmap_update(pmap: Pmap) -> None:
    """Complete the deferred TLB shootdowns queued on this CPU (pmap_tlb_shootnow)."""
    _pmap(pmap, "pmap_update").module.pmap_update(pmap)


def pmap_extract(pmap: Pmap, va: int) -> int | None:
    """The physical address ``va`` maps to in ``pmap``, or None."""
    return _pmap(pmap, "pmap_extract").module.pmap_extract(pmap, va)


def _pmod_of(pg: Page, what: str) -> Any:
    pm = _page(pg, what).allocator.pmap
    assert pm is not None
    return pm


def pmap_page_protect(pg: Page, prot: int) -> None:
    """Lower every managed mapping of page ``pg`` to ``prot`` (NONE removes them)."""
    _pmod_of(pg, "pmap_page_protect").pmap_page_protect(pg, prot)


def pmap_is_modified(pg: Page) -> bool:
    """Whether any mapping of ``pg`` has its dirty (D) bit set."""
    return bool(_pmod_of(pg, "pmap_is_modified").pmap_is_modified(pg))


def pmap_is_referenced(pg: Page) -> bool:
    """Whether any mapping of ``pg`` has its accessed (A) bit set."""
    return bool(_pmod_of(pg, "pmap_is_referenced").pmap_is_referenced(pg))


def pmap_clear_modify(pg: Page) -> bool:
    """Clear the dirty bit of every mapping of ``pg``; True if one was set."""
    return bool(_pmod_of(pg, "pmap_clear_modify").pmap_clear_modify(pg))


def uvm_pagealloc(
    obj: UVMObject | None,
    off: int,
    anon: Any,
    flags: int = 0,
    *,
    uvm: PageAllocator | None = None,
) -> Page | None:
    """Allocate a page for ``obj`` at ``off`` or for ``anon`` (None when memory is short)."""
    if obj is not None:
        uvm = obj.uvm
    elif uvm is None:
        raise ValueError("uvm_pagealloc: with no object, pass the machine's allocator as uvm=m.uvm")
    if not isinstance(uvm, PageAllocator):
        raise TypeError(f"uvm_pagealloc: uvm must be m.uvm, not {type(uvm).__name__}")
    _open(uvm.platform, "uvm_pagealloc")
    return uvm.uvm_pagealloc(obj, off, anon, flags)


def uvm_pagefree(pg: Page) -> None:
    """Free page ``pg`` (a loaned page is orphaned instead: uvm_pagefree's loan branch)."""
    _page(pg, "uvm_pagefree").allocator.uvm_pagefree(pg)


# uvm_loan and uvm_fault are spelled out rather than by a generic *args
# wrapper: that costs a microsecond per call on paths run per page.


@functools.wraps(_loan.uvm_loan)
def uvm_loan(map: VMMap, start: int, len: int, flags: int) -> list[Page] | list[Anon]:
    _map(map, "uvm_loan")
    return _loan.uvm_loan(map, start, len, flags)


@functools.wraps(_fault.uvm_fault)
def uvm_fault(
    map: VMMap, va: int, access_type: int, wire: bool = False, maxprot: bool = False
) -> None:
    _map(map, "uvm_fault")
    _fault.uvm_fault(map, va, access_type, wire, maxprot)


@functools.wraps(_loan.uvm_unloan)
def uvm_unloan(items: Iterable[Page] | Iterable[Anon], flags: int) -> None:
    if isinstance(items, Page | Anon) or not isinstance(items, Iterable):
        what = type(items).__name__
        raise TypeError(
            f"uvm_unloan: expected a list of pages (TOPAGE) or anons (TOANON), got {what}; "
            "pass what uvm_loan returned, or [page]"
        )
    seq: list[Any] = list(items)
    for it in seq:
        if isinstance(it, Page):
            _open(it.allocator.platform, "uvm_unloan")
            break
    _loan.uvm_unloan(seq, flags)
