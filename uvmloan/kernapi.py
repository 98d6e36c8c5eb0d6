"""Kernel operations under their NetBSD names and argument order.

NetBSD reaches its one kernel through globals; a model with several machines
finds the machine through the arguments instead (a pmap, a page, an object
or an anon).  Each function here forwards to the machine the arguments
belong to.  ``uvm_pagealloc`` with neither object nor anon needs the machine
(its ``uvm``) as a keyword, since nothing else names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .page import Page, PageAllocator
from .pmap.pmap import Pmap

if TYPE_CHECKING:
    from .object import UVMObject


def _pmap(pmap: Pmap) -> Pmap:
    if not isinstance(pmap, Pmap):
        raise TypeError(f"pmap must be a Pmap, not {type(pmap).__name__}")
    return pmap


def _page(pg: Page) -> Page:
    if not isinstance(pg, Page):
        raise TypeError(f"pg must be a Page, not {type(pg).__name__}")
    return pg


def pmap_enter(pmap: Pmap, va: int, pa: int, prot: int, flags: int = 0) -> int:
    return _pmap(pmap).module.pmap_enter(pmap, va, pa, prot, flags)


def pmap_remove(pmap: Pmap, sva: int, eva: int) -> None:
    _pmap(pmap).module.pmap_remove(pmap, sva, eva)


def pmap_protect(pmap: Pmap, sva: int, eva: int, prot: int) -> None:
    _pmap(pmap).module.pmap_protect(pmap, sva, eva, prot)


def pmap_update(pmap: Pmap) -> None:
    _pmap(pmap).module.pmap_update(pmap)


def pmap_extract(pmap: Pmap, va: int) -> int | None:
    return _pmap(pmap).module.pmap_extract(pmap, va)


def _pmod_of(pg: Page) -> Any:
    pm = _page(pg).allocator.pmap
    assert pm is not None
    return pm


def pmap_page_protect(pg: Page, prot: int) -> None:
    _pmod_of(pg).pmap_page_protect(pg, prot)


def pmap_is_modified(pg: Page) -> bool:
    return bool(_pmod_of(pg).pmap_is_modified(pg))


def pmap_is_referenced(pg: Page) -> bool:
    return bool(_pmod_of(pg).pmap_is_referenced(pg))


def pmap_clear_modify(pg: Page) -> bool:
    return bool(_pmod_of(pg).pmap_clear_modify(pg))


def uvm_pagealloc(
    obj: UVMObject | None,
    off: int,
    anon: Any,
    flags: int = 0,
    *,
    uvm: PageAllocator | None = None,
) -> Page | None:
    if obj is not None:
        uvm = obj.uvm
    elif uvm is None:
        raise ValueError("uvm_pagealloc: with no object, pass the machine's allocator as uvm=m.uvm")
    return uvm.uvm_pagealloc(obj, off, anon, flags)


def uvm_pagefree(pg: Page) -> None:
    _page(pg).allocator.uvm_pagefree(pg)
