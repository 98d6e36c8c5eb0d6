"""The pagedaemon's view of loaned pages (``sys/uvm/uvm_pdaemon.c``).

Loaned pages stay on the paging queues (1.104 activates them), so the
pagedaemon may pick them.  An object page goes through its pager
(``pgo_put(PGO_CLEANIT|PGO_FREE)``); a swap-backed anon page loses every
user mapping (``pmap_page_protect(VM_PROT_NONE)``, which leaves the kernel's
``pmap_kenter_pa`` mappings alone), is paged out if dirty, and is freed: a
loaned page then becomes an orphan through ``uvm_pagefree``'s loan branch,
while its anon keeps the swap slot (uvm_pdaemon.c 1.133.16.1,
``uvmpd_scan_queue``).  A disowned O->A page (an anon holds it, no
``PG_ANON``) is adopted by that anon first (``uvmpd_trylockowner``) and
then paged out as an anon page.  A clean anon page must have a swap slot
(``KASSERT(anon->an_swslot != 0)``).  Wired and busy pages are skipped, and
so are aobj pages: they are swap-backed in NetBSD and the model has no aobj
swap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import KernelAssertion, UVMError
from .object import PGO_CLEANIT, PGO_FREE, AnonObject
from .param import ENOMEM, PG, VM_PROT_NONE
from .trace import Adopt, Reclaim

if TYPE_CHECKING:
    from .page import Page, PageAllocator


def uvmpd_reclaim_page(uvm: PageAllocator, pg: Page) -> str:
    """Take one page from its owner; returns what happened."""
    pmap = uvm.pmap
    assert pmap is not None
    plat = uvm.platform
    loaned = pg.loan_count > 0
    result: str
    if pg.wire_count:
        result = "skipped: wired"
    elif pg.flags & PG.BUSY:
        result = "skipped: busy"
    elif pg.uobject is not None:
        obj = pg.uobject
        if getattr(obj, "name", "") == "uvm_loanzero_object":
            obj.pgo_put(pg.offset, pg.offset + uvm.page_size, PGO_FREE)
            result = "skipped: zero page"
        elif isinstance(obj, AnonObject):
            # An aobj page is swap-backed (uvmpd_scan_queue pages it out
            # through uao_set_swslot, never through pgo_put); the model has
            # no aobj swap, so freeing it would lose its bytes: skip it.
            result = "skipped: aobj (no swap modelled)"
        else:
            obj.pgo_put(pg.offset, pg.offset + uvm.page_size, PGO_CLEANIT | PGO_FREE)
            result = "orphaned" if loaned else "freed"
    elif pg.uanon is not None:
        anon = pg.uanon
        uvmpd_trylockowner(uvm, pg)
        loaned = pg.loan_count > 0
        pmap.pmap_page_protect(pg, VM_PROT_NONE)
        dirty = bool(pg.flags & PG.DIRTY) or pmap.pmap_is_modified(pg)
        if not dirty and not anon.an_swslot:
            # uvmpd_scan_queue frees a clean anon page and then asserts its
            # anon has the copy in swap.  Only an adopted O->A page that was
            # clean in its object gets here: 1.246's uvm_pagefree no longer
            # marks a disowned object page dirty (it used to clear PG_CLEAN
            # "for the benefit of possible anon owners").
            raise KernelAssertion(
                f"uvmpd_scan_queue: clean anon page {pg!r} of {anon!r} has no swap slot"
            )
        if dirty:
            if not anon.an_swslot:
                anon.an_swslot = uvm.swap_next
                uvm.swap_next += 1
            uvm.swap[anon.an_swslot] = plat.physmem.read_frame(pg.frame)
            pmap.pmap_clear_modify(pg)
            pg.flags = (pg.flags & ~PG.DIRTY) | PG.CLEAN
        uvm.uvm_pagefree(pg)
        result = "orphaned" if loaned else ("paged out" if dirty else "freed")
    else:
        result = "skipped: no owner"
    tr = plat.tracer
    if tr.on:
        tr.emit(Reclaim(plat.now(), plat.cur, "-", pg.frame, loaned, result))
    return result


def uvmpd_trylockowner(uvm: PageAllocator, pg: Page) -> None:
    """The owner of an anon-held page is its anon: a disowned O->A page (no
    object, no ``PG_ANON``) is adopted here, the anon's loan becoming
    ownership (T7; ``uvmpd_trylockowner``, uvm_pdaemon.c 1.133.16.1)."""
    if pg.uobject is None and not pg.flags & PG.ANON:
        if pg.loan_count <= 0:
            raise KernelAssertion(f"uvmpd_trylockowner: adoption of {pg!r} with no anon loan")
        pg.loan_count -= 1
        pg.flags |= PG.ANON
        plat = uvm.platform
        if plat.tracer.on:
            plat.tracer.emit(Adopt(plat.now(), plat.cur, "-", pg.frame))


def uvmpd_scan(uvm: PageAllocator, target: int) -> int:
    """Free up to ``target`` pages: inactive queue first, then deactivate
    the oldest active pages (a one-handed clock).  Returns pages taken."""
    taken = 0
    for _ in range(2):
        for pg in list(uvm.inactive):
            if taken >= target:
                return taken
            if uvm.pages.get(pg.frame) is not pg:
                continue
            if uvmpd_reclaim_page(uvm, pg) in ("freed", "orphaned", "paged out"):
                taken += 1
        for pg in list(uvm.active):
            uvm.uvm_pagedeactivate(pg)
    return taken


def uvm_wait(uvm: PageAllocator, need: Callable[[], int], what: str) -> None:
    """Reserve before changing: make sure ``need()`` pages can be allocated.

    Every multi-step operation that allocates (write(2), truncate, fork,
    mlock, ``uvm_loan``) calls this before it changes anything, so it either
    completes or fails with the model unchanged.  NetBSD never fails there
    half done: it sleeps in ``uvm_wait()`` until the pagedaemon freed pages
    and retries (``ubc_fault``'s loan break, ``amap_cow_now``'s
    "cownowpage", the fault handler's "flt_noram").  With
    ``on_shortage="reclaim"`` the model runs the pagedaemon and counts again
    (its work can change what is needed); it raises ENOMEM when the
    pagedaemon frees nothing more, or at once with ``on_shortage="raise"``.
    """
    n = avail = 0
    for _ in range(64):
        n = need()
        avail = uvm._available(0)
        if n <= avail:
            return
        if uvm.on_shortage != "reclaim" or uvmpd_scan(uvm, n - avail) == 0:
            break
    raise UVMError(ENOMEM, f"{what}: needs {n} free pages, {max(avail, 0)} available")
