"""vm_page, the page allocator and the paging queues.

Follows ``sys/uvm/uvm_page.c`` 1.246 and ``uvm_page.h`` 1.109.  A ``Page``
exists only while its frame is allocated, and a frame never allocated costs
nothing at all: the free list is a bump pointer over never-used frames plus a
stack (``array``) of freed ones, so a machine with millions of frames holds no
per-frame Python objects until they are used.  A stale reference to a freed
page is detectable (``PG_FREE``).
"""

from __future__ import annotations

import enum
from array import array
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .errors import KernelAssertion
from .pagetab import _FT_EMPTY, _FT_MASK, _FT_SHIFT, FrameTable, PageQueue
from .param import PG, UVM_PGA_USERESERVE, UVM_PGA_ZERO
from .pmap.pmap import VMPageMD
from .trace import Event, Orphan, PageAlloc, PageFree

if TYPE_CHECKING:
    from .pmap.cpu import Platform
    from .pmap.pmap import PmapModule


# Page dirtiness status (``uvm_page.h`` 1.109, ``uvm_page_status.c`` 1.6):
# the values are the PG_CLEAN / PG_DIRTY bits themselves, UNKNOWN is neither
# ("ask the pmap's modified bit").
UVM_PAGE_STATUS_UNKNOWN = 0
UVM_PAGE_STATUS_CLEAN = PG.CLEAN
UVM_PAGE_STATUS_DIRTY = PG.DIRTY
_STATUS_NAMES = {
    UVM_PAGE_STATUS_UNKNOWN: "UNKNOWN",
    UVM_PAGE_STATUS_CLEAN: "CLEAN",
    UVM_PAGE_STATUS_DIRTY: "DIRTY",
}


# A fresh page: PG_BUSY|PG_CLEAN|PG_FAKE (uvm_pagealloc_strat), plus PG_ANON
# for an anon's page.
_PG_NEW = PG.BUSY | PG.CLEAN | PG.FAKE
_PG_ANON_NEW = _PG_NEW | PG.ANON
# ... zero-filled: uvm_pagemarkdirty(DIRTY) of the fresh page, precomputed.
_PG_ANON_ZERO = (_PG_ANON_NEW & ~PG.CLEAN) | PG.DIRTY
_PG_FREE = PG.FREE


class PQ(enum.Enum):
    """Which paging queue a page is on (``uvm_pdpolicy_clock`` queues)."""

    NONE = "none"
    ACTIVE = "active"
    INACTIVE = "inactive"
    FREE = "free"


# The queue members as module constants: ``PQ.ACTIVE`` is a metaclass
# attribute lookup (~0.2 us in CPython 3.11), too slow for the page paths.
_PQ_NONE = PQ.NONE
_PQ_ACTIVE = PQ.ACTIVE
_PQ_INACTIVE = PQ.INACTIVE
_PQ_FREE = PQ.FREE


class PageOwnerObject(Protocol):
    """What the allocator needs of a uvm_object (see object.py)."""

    name: str
    pgflag: int

    def _page_insert(self, pg: Page) -> None: ...

    def _page_remove(self, pg: Page) -> None: ...


def _keys_of(cls: type[Event], *fields: object) -> tuple[str, ...]:
    """Counter keys of an event whose keys do not depend on its fields,
    computed once from a prototype (single-sourced with the event class)."""
    keys: tuple[str, ...] = cls(0, 0, "-", *fields).counter_keys()
    return keys


# Counting-only trace mode (Tracer.full False): the keys the events would add.
_K_ALLOC = _keys_of(PageAlloc, 0, "-")
_K_FREE = _keys_of(PageFree, 0)


@attrs.define(slots=True, eq=False, repr=False, init=False, weakref_slot=False)
class Page(VMPageMD):
    """``struct vm_page``: NetBSD's field names, one instance per allocated frame.

    The machine-dependent ``vm_page_md`` (pv list, saved A/D bits) is embedded
    as in NetBSD, by subclassing: ``pg.mdpage is pg``.
    """

    # frame, flags and offset (with the pmap's pv_va) are machine words of
    # the PageScalars base (uvmloan.vmscalars): no int object per page.
    allocator: PageAllocator
    loan_count: int = 0
    wire_count: int = 0
    uobject: Any = None  # owning uvm_object (or the zero-loan object)
    uanon: Any = None  # owning anon, or the anon an object page is O->A loaned to
    pqueue: PQ = PQ.NONE
    # The paging queue links (``pageq``, a TAILQ_ENTRY in NetBSD): the queue
    # is intrusive, as there, so being on it costs two fields, not a dict
    # entry.  Meaningful only while pqueue is ACTIVE or INACTIVE.
    pq_prev: Page | None = None
    pq_next: Page | None = None
    # Model bookkeeping: the page has been loaned at least once (I6 applies
    # only to such pages; freshly allocated unowned pages are not orphans).
    ever_loaned: bool = False

    # Written out rather than generated: attrs' __init__ fetches each
    # init=False default from a dict per call, and one runs per allocation.
    def __init__(
        self,
        frame: int,
        allocator: PageAllocator,
        flags: int = PG.NONE,
        loan_count: int = 0,
        wire_count: int = 0,
        uobject: Any = None,
        uanon: Any = None,
        offset: int = 0,
        pqueue: PQ = _PQ_NONE,
        ever_loaned: bool = False,
    ) -> None:
        self.pv_pmap = None
        self.pv_va = 0
        self.pv_more = None
        self.attrs = 0
        self.frame = frame
        self.allocator = allocator
        self.flags = flags
        self.loan_count = loan_count
        self.wire_count = wire_count
        self.uobject = uobject
        self.uanon = uanon
        self.offset = offset
        self.pqueue = pqueue
        self.pq_prev = None
        self.pq_next = None
        self.ever_loaned = ever_loaned

    @property
    def pa(self) -> int:
        """VM_PAGE_TO_PHYS(pg)."""
        return self.frame * self.allocator.page_size

    @property
    def is_orphan(self) -> bool:
        return self.loan_count > 0 and self.uobject is None and self.uanon is None

    def __repr__(self) -> str:
        owner = "-"
        if self.uobject is not None:
            owner = f"obj={getattr(self.uobject, 'name', '?')}@{self.offset:#x}"
        if self.uanon is not None:
            owner += f" anon={getattr(self.uanon, 'name', id(self.uanon))}"
        return (
            f"<Page frame={self.frame} {PG.names(self.flags)} loan={self.loan_count} "
            f"wire={self.wire_count} {owner} q={self.pqueue.value} pv={self.pv_count}>"
        )


@attrs.define(slots=True, eq=False)
class PageAllocator:
    """The free list, the allocated pages and the paging queues (``uvm``/``uvmexp``).

    ``limit`` caps how many frames may be allocated at once (tests provoke
    memory shortage with it); ``reserve`` frames are kept for allocations
    that pass ``UVM_PGA_USERESERVE`` (the pagedaemon's and kernel's reserve).
    """

    platform: Platform
    npages: int
    page_size: int
    limit: int | None = None
    reserve: int = 0
    # What a multi-step operation does when it is short of pages (the
    # Machine's on_shortage): "raise" ENOMEM, or "reclaim" and retry.
    on_shortage: str = "raise"
    # The MD layer, reached only through pmap(9) operations.
    pmap: PmapModule | None = None
    pages: FrameTable = attrs.field(init=False)
    # The free list (see free): frames >= _bump were never allocated; freed
    # frames go on _recycled, a stack of C ints (4 or 8 bytes a frame).
    _bump: int = attrs.field(init=False, default=0)
    _recycled: array[int] = attrs.field(init=False)
    # Swap space for anon pages the pagedaemon paged out: slot -> bytes.
    swap: dict[int, bytes] = attrs.field(factory=dict)
    swap_next: int = 1
    # The loan layer's ledger (DIAGNOSTIC): outstanding kernel loans per page,
    # and each loaned page's contents when its first loan was made.
    loan_ledger: dict[Page, int] = attrs.field(factory=dict)
    loan_crc: dict[Page, int] = attrs.field(factory=dict)
    # The zero page every copy-on-write hole is loaned as (uvm_loanzero).
    zero_object: Any = None
    # Bug injection: names of deliberate bugs switched on (tests prove the
    # invariants and state machines catch each one).  See uvmloan.inject.
    inject: set[str] = attrs.field(factory=set)
    active: PageQueue = attrs.field(init=False)
    inactive: PageQueue = attrs.field(init=False)
    # Counters in the manner of uvmexp.
    npagealloc: int = 0
    npagefree: int = 0

    def __attrs_post_init__(self) -> None:
        self.pages = FrameTable(self.npages)
        self.active = PageQueue(PQ.ACTIVE)
        self.inactive = PageQueue(PQ.INACTIVE)
        self._recycled = array("i" if self.npages <= 0x7FFFFFFF else "q")

    @property
    def free(self) -> list[int]:
        """The free frames in the order a LIFO stack holds them (a fresh list).

        Allocation order (deterministic, as traces and tests rely on it): the
        most recently freed frame first; with none freed, the lowest frame
        never allocated.  It is the order of the old explicit stack that
        started as ``[npages - 1, ..., 1, 0]``: this list is that stack,
        ``pop()`` being the next frame handed out.
        """
        return list(range(self.npages - 1, self._bump - 1, -1)) + self._recycled.tolist()

    @property
    def free_count(self) -> int:
        return len(self._recycled) + self.npages - self._bump

    @property
    def allocated(self) -> int:
        return len(self.pages)

    def _available(self, flags: int) -> int:
        avail = len(self._recycled) + self.npages - self._bump
        if self.limit is not None:
            avail = min(avail, self.limit - len(self.pages))
        if not flags & UVM_PGA_USERESERVE:
            avail -= self.reserve
        return avail

    def phys_to_page(self, frame: int) -> Page | None:
        """PHYS_TO_VM_PAGE: the vm_page of an allocated frame, else None."""
        # FrameTable.get inlined (pmap_enter asks on every fault).
        if type(frame) is int and 0 <= frame < self.npages:
            ch = self.pages._chunks[frame >> _FT_SHIFT]
            if ch is not None:
                return ch[frame & _FT_MASK]
        return None

    def uvm_pagealloc(
        self, obj: PageOwnerObject | None, off: int, anon: Any, flags: int = 0
    ) -> Page | None:
        """Allocate a page owned by ``obj`` at ``off``, or by ``anon``, or by nobody.

        Returns None when no frame is available, as NetBSD does (callers
        wait or fail).  The page comes back ``PG_BUSY|PG_CLEAN|PG_FAKE``; a
        zeroed owned page is dirty (uvm_page.c 1.246).
        """
        if obj is not None and anon is not None:
            raise KernelAssertion("uvm_pagealloc: both an object and an anon given")
        recycled = self._recycled
        # _available(flags) > 0, inlined for the common case (no limit, no
        # reserve): this runs on every fault.
        if self.limit is not None or self.reserve:
            if self._available(flags) <= 0:
                return None
        elif not recycled and self._bump >= self.npages:
            return None
        plat = self.platform
        if recycled:
            frame = recycled.pop()
        else:
            frame = self._bump
            self._bump = frame + 1
        # FrameTable.__setitem__ inlined below (the frame was free: its slot
        # is empty).
        table = self.pages
        chunk = table._chunks[frame >> _FT_SHIFT]
        if chunk is None:
            chunk = table._chunks[frame >> _FT_SHIFT] = _FT_EMPTY.copy()
        table._n += 1
        zero = flags & UVM_PGA_ZERO
        # uvm_pagealloc_strat (uvm_page.c 1.246): "A zero'd page is not
        # clean": an owned zeroed page is DIRTY (uvm_pagemarkdirty of a CLEAN
        # page, done here by the flag constants).
        if anon is not None:
            pg = Page(frame, self, _PG_ANON_ZERO if zero else _PG_ANON_NEW, uanon=anon, offset=off)
            chunk[frame & _FT_MASK] = pg
            anon.an_page = pg
        elif obj is not None:
            pg = Page(frame, self, _PG_NEW, uobject=obj, offset=off)
            chunk[frame & _FT_MASK] = pg
            obj._page_insert(pg)
            pg.flags |= PG.TABLED | obj.pgflag
            if zero:
                pg.flags = (pg.flags & ~PG.CLEAN) | PG.DIRTY
        else:
            pg = Page(frame, self, _PG_NEW, offset=off)
            chunk[frame & _FT_MASK] = pg
        # (plat.charge and costs.zero_ns inlined)
        costs = plat.costs
        cpu = plat.cpus[plat.cur]
        if zero:
            plat.physmem.zero_page(frame)
            cpu.clock += self.page_size * 1000 // costs.zero_bw if costs.zero_bw else 0
        self.npagealloc += 1
        cpu.clock += costs.page_alloc_ns
        tr = plat.tracer
        if tr.on and not tr.full:
            tr.tally(_K_ALLOC)
        elif tr.on:
            owner = (
                f"anon {getattr(anon, 'name', '?')}"
                if anon is not None
                else f"{obj.name}@{off:#x}"
                if obj is not None
                else "-"
            )
            tr.emit(PageAlloc(plat.now(), plat.cur, "-", frame, owner))
        return pg

    def uvm_pagefree(self, pg: Page) -> None:
        """Free a page (uvm_page.c 1.246 ``uvm_pagefree``).

        The owner is detached first.  A page with ``loan_count > 0`` takes
        the loan branch (T5 of the digest): it is disowned, becomes an
        orphan and is *not* freed; that branch is ``_pagefree_loaned``.
        """
        self._check_live(pg, "uvm_pagefree")
        if pg.loan_count > 0:
            self._pagefree_loaned(pg)
            return
        if pg.wire_count:
            # uvm_page.c 1.246: "if the page was wired, unwire it now".
            pg.wire_count = 0
        if pg.pv_pmap is not None:
            raise KernelAssertion(f"uvm_pagefree: {pg!r} still has {pg.pv_count} managed mappings")
        if pg.uobject is not None:
            pg.uobject._page_remove(pg)
            pg.uobject = None
        if pg.uanon is not None:
            if pg.flags & PG.ANON:
                pg.uanon.an_page = None
            pg.uanon = None
        self._free_frame(pg)

    def _pagefree_loaned(self, pg: Page) -> None:
        """The loan branch of ``uvm_pagefree`` (uvm_page.c 1.246; digest T5).

        The owner lets go of the page but the borrowers keep it: an object
        page is removed from its object (``PG_FILE|PG_AOBJ`` cleared), an
        anon page loses ``PG_ANON`` and its anon; an unadopted O->A page also
        drops the anon's loan.  If loans remain the page is an orphan: off
        the paging queues and not freed; the last ``uvm_unloan`` frees it.
        """
        if pg.wire_count:
            raise KernelAssertion(f"uvm_pagefree: loaned {pg!r} is wired")
        why = "owner freed"
        if pg.uobject is not None:
            pg.uobject._page_remove(pg)
            why = f"object {pg.uobject.name} freed offset {pg.offset:#x}"
            pg.uobject = None
            pg.flags &= ~(PG.FILE | PG.AOBJ)
        elif pg.uanon is not None and pg.flags & PG.ANON:
            pg.flags &= ~PG.ANON
            pg.uanon.an_page = None
            why = f"anon {getattr(pg.uanon, 'name', '?')} freed"
            pg.uanon = None
        elif pg.uanon is not None:
            # An O->A page whose anon was its last owner: drop the anon's loan.
            pg.loan_count -= 1
            pg.uanon.an_page = None
            pg.uanon = None
        pg.flags &= ~(PG.BUSY | PG.RELEASED | PG.PAGER1)
        if pg.loan_count > 0:
            if pg.uobject is not None:
                raise KernelAssertion(f"uvm_pagefree: {pg!r} still owned after disowning")
            if pg.uanon is None:
                self.uvm_pagedequeue(pg)
            plat = self.platform
            tr = plat.tracer
            if tr.on:
                tr.emit(Orphan(plat.now(), plat.cur, "-", pg.frame, pg.loan_count, why))
            return
        self._free_frame(pg)

    def uvm_pagereplace(self, old: Page, new: Page) -> None:
        """Give ``new`` the identity of object page ``old`` (uvm_page.c 1.246).

        The new page takes the object and offset and the PG_STAT bits; the old
        page leaves the object (``PG_TABLED`` cleared) but keeps its other
        flags, so an orphan made by a loan break may still say ``PG_FILE``.
        """
        obj = old.uobject
        if obj is None or new.uobject is not None or new.uanon is not None:
            raise KernelAssertion(f"uvm_pagereplace: {old!r} -> {new!r}")
        obj._page_remove(old)
        old.uobject = None
        new.uobject = obj
        new.offset = old.offset
        obj._page_insert(new)
        new.flags |= PG.TABLED | (old.flags & PG.STAT)

    def _free_frame(self, pg: Page) -> None:
        plat = self.platform
        self.uvm_pagedequeue(pg)
        pg.flags = PG.FREE
        pg.pqueue = _PQ_FREE
        del self.pages[pg.frame]
        plat.physmem.release_frame(pg.frame)
        self._recycled.append(pg.frame)
        self.npagefree += 1
        plat.charge(plat.costs.page_alloc_ns)
        tr = plat.tracer
        if tr.on:
            if tr.full:
                tr.emit(PageFree(plat.now(), plat.cur, "-", pg.frame))
            else:
                tr.tally(_K_FREE)

    def _check_live(self, pg: Page, who: str) -> None:
        if not isinstance(pg, Page):
            raise TypeError(f"{who}: expected a Page, not {type(pg).__name__}")
        if pg.flags & PG.FREE or self.pages.get(pg.frame) is not pg:
            raise KernelAssertion(f"{who}: page of frame {pg.frame} is already free")

    # ----------------------------------------------------------- paging queues

    def uvm_pagedequeue(self, pg: Page) -> None:
        q = pg.pqueue
        if q is _PQ_ACTIVE:
            self.active.remove(pg)
        elif q is _PQ_INACTIVE:
            self.inactive.remove(pg)
        if q is not _PQ_FREE:
            pg.pqueue = _PQ_NONE

    def uvm_pageactivate(self, pg: Page) -> None:
        """Put (or move) the page on the active queue; wired pages stay off."""
        # _check_live (with FrameTable.get), uvm_pagedequeue and
        # PageQueue.append inlined: every fault ends here.
        if (
            type(pg) is not Page
            or pg.flags & _PG_FREE
            or pg.allocator is not self
            # (a live page of this allocator: its frame's chunk exists)
            or self.pages._chunks[pg.frame >> _FT_SHIFT][pg.frame & _FT_MASK] is not pg  # type: ignore[index]
        ):
            self._check_live(pg, "uvm_pageactivate")
        if pg.wire_count:
            return
        q = pg.pqueue
        active = self.active
        if q is _PQ_ACTIVE:
            if pg is active.tail:
                return  # already the newest page of the queue: no move
            active.remove(pg)
        elif q is _PQ_INACTIVE:
            self.inactive.remove(pg)
        tail = active.tail
        pg.pq_prev = tail
        pg.pq_next = None
        if tail is None:
            active.head = pg
        else:
            tail.pq_next = pg
        active.tail = pg
        active.n += 1
        pg.pqueue = _PQ_ACTIVE

    def uvm_pagedeactivate(self, pg: Page) -> None:
        self._check_live(pg, "uvm_pagedeactivate")
        if pg.wire_count:
            return
        self.uvm_pagedequeue(pg)
        self.inactive.append(pg)
        pg.pqueue = _PQ_INACTIVE

    def uvm_pagewire(self, pg: Page) -> None:
        self._check_live(pg, "uvm_pagewire")
        if pg.wire_count == 0:
            self.uvm_pagedequeue(pg)
        pg.wire_count += 1

    def uvm_pageunwire(self, pg: Page) -> None:
        self._check_live(pg, "uvm_pageunwire")
        if pg.wire_count <= 0:
            raise KernelAssertion(f"uvm_pageunwire: {pg!r} is not wired")
        pg.wire_count -= 1
        if pg.wire_count == 0:
            self.uvm_pageactivate(pg)

    def uvm_pagecopy(self, src: Page, dst: Page) -> None:
        """Copy contents (pmap_copy_page) and mark the destination DIRTY."""
        self.uvm_pagemarkdirty(dst, UVM_PAGE_STATUS_DIRTY)
        plat = self.platform
        plat.physmem.copy_page(src.frame, dst.frame)
        plat.charge(plat.costs.copy_ns(self.page_size))

    def uvm_pagezero(self, pg: Page) -> None:
        """Zero-fill (pmap_zero_page) and mark DIRTY (uvm_page.c 1.246)."""
        self.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_DIRTY)
        plat = self.platform
        plat.physmem.zero_page(pg.frame)
        plat.charge(plat.costs.zero_ns(self.page_size))

    # ------------------------------------------------------ dirtiness status

    def uvm_pagegetdirty(self, pg: Page) -> int:
        """The page's dirtiness status (``uvm_pagegetdirty``, uvm_page_status.c 1.6).

        UNKNOWN means "ask the pmap" (``pmap_is_modified``); a page is never
        both PG_CLEAN and PG_DIRTY (KASSERT).
        """
        status = pg.flags & (PG.CLEAN | PG.DIRTY)
        if status == PG.CLEAN | PG.DIRTY:
            raise KernelAssertion(f"uvm_pagegetdirty: {pg!r} is both CLEAN and DIRTY")
        return status

    def uvm_pagemarkdirty(self, pg: Page, newstatus: int) -> None:
        """Set the dirtiness status (``uvm_pagemarkdirty``, uvm_page_status.c 1.6).

        Going to UNKNOWN clears the pmap's modified bit ("start relying on
        pmap-level dirtiness tracking"), so a later ``uvm_pagecheckdirty``
        sees only writes made after it.  The object's dirty tag and syncer
        worklist are not modelled (see specs/fault.md 7).
        """
        if newstatus not in _STATUS_NAMES:
            raise KernelAssertion(f"uvm_pagemarkdirty: bad status {newstatus:#x}")
        if self.uvm_pagegetdirty(pg) == newstatus:
            return
        if newstatus == UVM_PAGE_STATUS_UNKNOWN and self.pmap is not None:
            self.pmap.pmap_clear_modify(pg)
        pg.flags = (pg.flags & ~(PG.CLEAN | PG.DIRTY)) | newstatus

    def uvm_pagecheckdirty(self, pg: Page, pgprotected: bool) -> bool:
        """Was the page modified?  Reset its status (``uvm_pagecheckdirty``).

        CLEAN stays CLEAN (not modified); otherwise the page becomes CLEAN if
        the caller write-protected it (``pgprotected``), else UNKNOWN, and
        the pmap's modified bit is cleared on the way (uvm_page_status.c 1.6).
        """
        oldstatus = self.uvm_pagegetdirty(pg)
        if oldstatus == UVM_PAGE_STATUS_CLEAN:
            return False
        newstatus = UVM_PAGE_STATUS_CLEAN if pgprotected else UVM_PAGE_STATUS_UNKNOWN
        pmap = self.pmap
        assert pmap is not None
        if oldstatus == UVM_PAGE_STATUS_DIRTY:
            modified = True
            if newstatus == UVM_PAGE_STATUS_UNKNOWN:
                pmap.pmap_clear_modify(pg)
        else:
            modified = pmap.pmap_clear_modify(pg)
        self.uvm_pagemarkdirty(pg, newstatus)
        return modified

    def uvm_pagereadonly_p(self, pg: Page) -> bool:
        """Must the page be mapped read-only?  (``uvm_pagereadonly_p``, uvm_page.c 1.246.)

        ``PG_RDONLY`` or a CLEAN status.  NetBSD also says yes for a vnode
        that needs write faults (``UVM_OBJ_NEEDS_WRITEFAULT``); in the model
        that adds nothing (specs/fault.md 7).
        """
        f = pg.flags
        if f & PG.RDONLY:
            return True
        # uvm_pagegetdirty inlined (with its KASSERT).
        if f & (PG.CLEAN | PG.DIRTY) == PG.CLEAN | PG.DIRTY:
            self.uvm_pagegetdirty(pg)  # raises
        return f & PG.CLEAN == UVM_PAGE_STATUS_CLEAN
