"""The allocator's tables of vm_pages: the frame table and the paging queues.

Both are stored the way NetBSD stores them, not as dicts: ``uvm.pages`` by
frame number (``vm_physmem``'s page array, here in chunks made on first
use) and the active/inactive queues as intrusive TAILQs through the pages'
``pageq`` links.  A resident page so costs 8 bytes in the frame table and
two fields on the page, where two dict entries cost ~80 bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from itertools import compress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .page import PQ, Page


class PageQueue:
    """A paging queue (``TAILQ_HEAD(pglist, vm_page)``), oldest page first.

    Intrusive like NetBSD's: the links are the pages' ``pq_prev``/``pq_next``.
    Iterating gives a snapshot list, so callers may requeue pages as they go
    (the pagedaemon does).  Only the allocator links and unlinks pages.
    """

    __slots__ = ("head", "n", "tail", "which")

    def __init__(self, which: PQ) -> None:
        self.which = which
        self.head: Page | None = None
        self.tail: Page | None = None
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Page]:
        out = []
        pg = self.head
        while pg is not None:
            out.append(pg)
            pg = pg.pq_next
        return iter(out)

    def __contains__(self, pg: object) -> bool:
        return getattr(pg, "pqueue", None) is self.which and (
            getattr(pg, "pq_prev", None) is not None or self.head is pg
        )

    def append(self, pg: Page) -> None:
        """TAILQ_INSERT_TAIL (the caller sets pg.pqueue)."""
        tail = self.tail
        pg.pq_prev = tail
        pg.pq_next = None
        if tail is None:
            self.head = pg
        else:
            tail.pq_next = pg
        self.tail = pg
        self.n += 1

    def remove(self, pg: Page) -> None:
        """TAILQ_REMOVE (the caller knows pg is on this queue)."""
        prev, nxt = pg.pq_prev, pg.pq_next
        if prev is None:
            self.head = nxt
        else:
            prev.pq_next = nxt
        if nxt is None:
            self.tail = prev
        else:
            nxt.pq_prev = prev
        pg.pq_prev = pg.pq_next = None
        self.n -= 1


# Frames per chunk of a FrameTable (a power of two).
_FT_SHIFT = 9
_FT_MASK = (1 << _FT_SHIFT) - 1
_FT_EMPTY: list[Page | None] = [None] * (1 << _FT_SHIFT)


class FrameTable(MutableMapping[int, "Page"]):
    """frame -> vm_page of the allocated frames (``uvm.pages``), as a mapping.

    Stored like NetBSD's ``vm_physmem`` page array, by frame number, but in
    chunks of 512 frames made on a chunk's first allocation: a frame never
    allocated costs nothing (one list slot per 512 frames), an allocated one
    8 bytes (a dict entry was ~40).  Frames are handed out lowest first, so
    chunks fill densely; a chunk stays once made.  Iteration is in frame
    order.  Keys that are not frames of the machine are simply absent.
    """

    __slots__ = ("_chunks", "_n")

    def __init__(self, npages: int) -> None:
        self._chunks: list[list[Page | None] | None] = [None] * ((npages + _FT_MASK) >> _FT_SHIFT)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def get(self, frame: int, default: Any = None) -> Any:
        try:
            ch = self._chunks[frame >> _FT_SHIFT] if frame >= 0 else None
        except (IndexError, TypeError):
            return default
        if ch is None:
            return default
        pg = ch[frame & _FT_MASK]
        return default if pg is None else pg

    def __getitem__(self, frame: int) -> Page:
        pg: Page | None = self.get(frame)
        if pg is None:
            raise KeyError(frame)
        return pg

    def __contains__(self, frame: object) -> bool:
        return type(frame) is int and self.get(frame) is not None

    def __setitem__(self, frame: int, pg: Page) -> None:
        # Internal: the allocator's frames only (0 <= frame < npages).
        ci = frame >> _FT_SHIFT
        ch = self._chunks[ci]
        if ch is None:
            ch = self._chunks[ci] = _FT_EMPTY.copy()
        i = frame & _FT_MASK
        if ch[i] is None:
            self._n += 1
        ch[i] = pg

    def __delitem__(self, frame: int) -> None:
        ch = self._chunks[frame >> _FT_SHIFT] if frame >= 0 else None
        if ch is None or ch[frame & _FT_MASK] is None:
            raise KeyError(frame)
        ch[frame & _FT_MASK] = None
        self._n -= 1

    def __iter__(self) -> Iterator[int]:
        # compress() picks the frames whose slot holds a page (a Page is
        # always true): C-level, where a generator over the 512 slots of a
        # chunk cost the invariant checks most of their time.
        out: list[int] = []
        for ci, ch in enumerate(self._chunks):
            if ch is not None:
                base = ci << _FT_SHIFT
                out.extend(compress(range(base, base + len(ch)), ch))
        return iter(out)

    def items(self) -> list[tuple[int, Page]]:  # type: ignore[override]
        """(frame, page) of every allocated frame, in frame order: a snapshot
        list (the invariant checks walk it every step; a view would look
        every frame up again)."""
        out: list[tuple[int, Page]] = []
        for ci, ch in enumerate(self._chunks):
            if ch is not None:
                base = ci << _FT_SHIFT
                out.extend(
                    zip(compress(range(base, base + len(ch)), ch), filter(None, ch), strict=True)
                )
        return out

    def values(self) -> list[Page]:  # type: ignore[override]
        """Every allocated page, in frame order (a snapshot list)."""
        out: list[Page] = []
        for ch in self._chunks:
            if ch is not None:
                out.extend(filter(None, ch))
        return out
