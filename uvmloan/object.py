"""uvm_object and its pagers: vnodes (files) and anonymous objects (aobj).

Pages of an object are kept in a SortedDict by offset (NetBSD's radix tree
``uo_pages``).  ``pgo_get`` brings a page in; ``pgo_put`` cleans and/or frees
pages.  ``VnodeObject.write``/``read`` are write(2)/read(2) through the
buffer cache (UBC, ``sys/uvm/uvm_bio.c``): the kernel copies into and out of
the object's pages directly.  The loan layer hooks ``ubc_fault_page``'s
loan break into ``write``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import attrs
from sortedcontainers import SortedDict

from .errors import KernelAssertion, MachineClosed, UVMError
from .page import UVM_PAGE_STATUS_CLEAN, UVM_PAGE_STATUS_DIRTY, UVM_PAGE_STATUS_UNKNOWN
from .param import ENOMEM, PG, VM_PROT_EXECUTE, VM_PROT_NONE, VM_PROT_READ, VM_PROT_WRITE

if TYPE_CHECKING:
    from .page import Page, PageAllocator

# pgo_put flags (sys/uvm/uvm_pager.h).
PGO_CLEANIT = 0x001
PGO_SYNCIO = 0x002
PGO_DEACTIVATE = 0x004
PGO_FREE = 0x008
PGO_ALLPAGES = 0x010
# pgo_get flags.
PGO_LOCKED = 0x040

_ids = itertools.count(1)


@attrs.define(slots=True, eq=False, repr=False)
class UVMObject:
    """``struct uvm_object``: pages by offset and a reference count."""

    uvm: PageAllocator
    name: str = ""
    pgflag: int = PG.AOBJ
    uo_pages: SortedDict[int, Page] = attrs.field(factory=SortedDict)  # offset -> Page
    uo_refs: int = 1

    def __attrs_post_init__(self) -> None:
        if not self.name:
            self.name = f"{type(self).__name__.lower()}{next(_ids)}"

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} {len(self.uo_pages)} resident refs={self.uo_refs}>"
        )

    # Protocol used by uvm_pagealloc / uvm_pagefree / uvm_pagereplace.
    def _page_insert(self, pg: Page) -> None:
        if pg.offset in self.uo_pages:
            raise KernelAssertion(
                f"uvm_pageinsert: {self.name} already has a page at {pg.offset:#x}"
            )
        self.uo_pages[pg.offset] = pg

    def _page_remove(self, pg: Page) -> None:
        if self.uo_pages.get(pg.offset) is not pg:
            raise KernelAssertion(f"uvm_pageremove: {pg!r} is not {self.name}'s page")
        del self.uo_pages[pg.offset]
        pg.flags &= ~PG.TABLED

    def uvm_pagelookup(self, off: int) -> Page | None:
        pg: Page | None = self.uo_pages.get(off)
        return pg

    @property
    def page_size(self) -> int:
        return self.uvm.page_size

    def _fill_new_page(self, pg: Page) -> None:
        """Pager-specific initial contents of a page just allocated."""
        self.uvm.uvm_pagezero(pg)

    def pgo_get(self, off: int, flags: int = 0, access_type: int = VM_PROT_READ) -> Page:
        """Return the resident page at ``off``, bringing it in if needed.

        A page read in from the backing store is CLEAN; a request with
        ``VM_PROT_WRITE`` in ``access_type`` starts the page's dirtiness
        tracking: CLEAN -> UNKNOWN (genfs_io.c 1.100 ``genfs_getpages``,
        both the PGO_LOCKED and the I/O path: "for a write fault, start
        dirtiness tracking of requested pages").  Raises UVMError(ENOMEM)
        when no page can be allocated (the caller waits or fails; nothing
        has changed).
        """
        if off % self.page_size or off < 0:
            raise ValueError(f"pgo_get: offset {off:#x} is not a page-aligned offset")
        uvm = self.uvm
        pg = self.uo_pages.get(off)
        if pg is None:
            pg = uvm.uvm_pagealloc(self, off, None, 0)
            if pg is None:
                raise UVMError(ENOMEM, f"{self.name}: no free page for offset {off:#x}")
            self._fill_new_page(pg)
            pg.flags &= ~(PG.BUSY | PG.FAKE)
            uvm.uvm_pageactivate(pg)
        if access_type & VM_PROT_WRITE and uvm.uvm_pagegetdirty(pg) == UVM_PAGE_STATUS_CLEAN:
            uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_UNKNOWN)
        return pg

    def _writeback(self, pg: Page) -> None:
        """Pager-specific cleaning (vnodes write to their backing store)."""

    def pgo_put(self, start: int, end: int, flags: int) -> int:
        """Clean and/or free pages in [start, end) (``PGO_ALLPAGES`` for all).

        Freeing removes every user mapping first (``pmap_page_protect(NONE)``),
        as ``genfs_putpages``/``uao_put`` do; a loaned page then takes the loan
        branch of ``uvm_pagefree``.  Wired pages are freed too (and unwired),
        as ``genfs_do_putpages`` does; callers that must keep them (the
        pagedaemon) skip them before calling.  Returns the
        number of pages freed.
        """
        uvm = self.uvm
        pmap = uvm.pmap
        assert pmap is not None
        if flags & PGO_ALLPAGES:
            offs = list(self.uo_pages.keys())
        else:
            offs = list(self.uo_pages.irange(start, end, inclusive=(True, False)))
        freed = 0
        # genfs_do_putpages (genfs_io.c 1.100): without FREE/DEACTIVATE only
        # possibly-dirty pages are visited (dirtyonly); a page is cleaned by
        # uvm_pagecheckdirty, CLEAN if it was write-protected first (always,
        # for PGO_FREE; for cleaning, while no wired page was met: cleanall),
        # else UNKNOWN, and written back if it was modified.
        dirtyonly = not flags & (PGO_FREE | PGO_DEACTIVATE)
        cleanall = True
        for off in offs:
            pg = self.uo_pages[off]
            if dirtyonly and uvm.uvm_pagegetdirty(pg) == UVM_PAGE_STATUS_CLEAN:
                continue
            if flags & PGO_CLEANIT:
                pgprotected = False
                if flags & PGO_FREE:
                    pmap.pmap_page_protect(pg, VM_PROT_NONE)
                    pgprotected = True
                elif cleanall and pg.wire_count == 0:
                    pmap.pmap_page_protect(pg, VM_PROT_READ | VM_PROT_EXECUTE)
                    pgprotected = True
                else:
                    cleanall = False
                if uvm.uvm_pagecheckdirty(pg, pgprotected):
                    self._writeback(pg)
            if flags & PGO_FREE:
                # genfs_do_putpages frees wired pages too (only PGO_DEACTIVATE
                # looks at wire_count); uvm_pagefree unwires them.  Without
                # PGO_CLEANIT dirty data is discarded, as truncate does.
                pmap.pmap_page_protect(pg, VM_PROT_NONE)
                uvm.uvm_pagefree(pg)
                freed += 1
            elif flags & PGO_DEACTIVATE:
                uvm.uvm_pagedeactivate(pg)
        return freed

    def reference(self) -> None:
        self.uo_refs += 1

    def detach(self) -> None:
        """Drop a reference; the last one frees every page (``pgo_detach``)."""
        if self.uo_refs <= 0:
            raise KernelAssertion(f"{self.name}: detach with no references")
        self.uo_refs -= 1
        if self.uo_refs == 0:
            self._last_detach()

    def _last_detach(self) -> None:
        self.pgo_put(0, 0, PGO_ALLPAGES | PGO_FREE)


@attrs.define(slots=True, eq=False, repr=False)
class AnonObject(UVMObject):
    """An anonymous uvm_object (``uao``): zero-filled pages, no backing file.

    Swap is not modelled for aobj pages; they stay resident until freed.
    """

    pgflag: int = PG.AOBJ


@attrs.define(slots=True, eq=False, repr=False)
class VnodeObject(UVMObject):
    """A regular file: ``size`` bytes of backing store with a vnode pager.

    ``backing`` is the file on "disk".  Pages are filled from it by
    ``pgo_get`` and written back to it by ``pgo_put(PGO_CLEANIT)``.  The
    vnode keeps one reference for the file itself (``uo_refs`` starts at 1)
    and its pages stay cached after the last mapping goes, as the page cache
    does.
    """

    pgflag: int = PG.FILE
    backing: bytearray = attrs.field(factory=bytearray)

    @property
    def size(self) -> int:
        return len(self.backing)

    def _fill_new_page(self, pg: Page) -> None:
        ps = self.page_size
        uvm = self.uvm
        chunk = bytes(self.backing[pg.offset : pg.offset + ps])
        plat = uvm.platform
        if len(chunk) < ps:
            plat.physmem.zero_page(pg.frame)
        if chunk:
            plat.physmem.copyin([pg.frame], 0, chunk)
        plat.charge(plat.costs.copy_ns(ps))
        pg.flags = (pg.flags & ~PG.DIRTY) | PG.CLEAN

    def _writeback(self, pg: Page) -> None:
        ps = self.page_size
        n = min(ps, self.size - pg.offset)
        if n > 0:
            self.backing[pg.offset : pg.offset + n] = self.uvm.platform.physmem.copyout(
                [pg.frame], 0, n
            )

    def _check_io(self, offset: int, n: int, what: str) -> None:
        self._check_open(what)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError(f"{what}: offset must be a non-negative int, got {offset!r}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"{what}: length must be a non-negative int, got {n!r}")

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """write(2) at ``offset`` through the buffer cache (``ubc_uiomove``).

        A page that is loaned is broken first (``ubc_fault_page`` calls
        ``uvm_loanbreak`` for a write access), so a borrower keeps the bytes
        it was lent.  Grows the file as needed.  The pages it needs (one per
        page not resident, one per loan to break) are reserved first
        (``uvm_wait``), so ENOMEM changes nothing; NetBSD's ``ubc_fault``
        waits for memory and retries instead of failing.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"write: data must be bytes-like, not {type(data).__name__}")
        n = len(data)
        self._check_io(offset, n, "write")
        if n == 0:
            return 0
        ps = self.page_size
        first = offset - offset % ps
        last = (offset + n - 1) - (offset + n - 1) % ps
        old_size = self.size
        offs = range(first, last + 1, ps)
        self._reserve(offs, f"write to {self.name}")
        pages = [self.pgo_get(off) for off in offs]
        for i, pg in enumerate(pages):
            if pg.loan_count:
                pages[i] = self._ubc_loanbreak(pg)
        plat = self.uvm.platform
        plat.physmem.copyin([pg.frame for pg in pages], offset - first, data)
        plat.charge(plat.costs.copy_ns(n))
        for pg in pages:
            # The UBC window is written by the kernel: the page is DIRTY.
            self.uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_DIRTY)
        if offset + n > old_size:
            self._extend(offset + n)
        return n

    def _reserve(self, offs: range, what: str, page_in: bool = True) -> None:
        """``uvm_wait`` for the pages UBC will take at ``offs``: one per loaned
        page (its break) and, with ``page_in``, one per page not resident
        (``pgo_get``)."""
        from .pdaemon import uvm_wait

        def need() -> int:
            n = 0
            for off in offs:
                pg = self.uo_pages.get(off)
                if (pg is None and page_in) or (pg is not None and pg.loan_count):
                    n += 1
            return n

        uvm_wait(self.uvm, need, what)

    def _ubc_loanbreak(self, pg: Page) -> Page:
        """``ubc_fault_page`` (uvm_bio.c): a write access breaks the loan first.

        Callers reserve the pages first (``_reserve``), so this cannot fail
        half way through a write or truncate.
        """
        from .loan import uvm_loanbreak

        new = uvm_loanbreak(pg, where="write(2)")
        if new is None:
            raise UVMError(ENOMEM, f"{self.name}: no page to break the loan at {pg.offset:#x}")
        return new

    def read(self, offset: int, n: int) -> bytes:
        """read(2): resident pages first (they may be newer than the disk)."""
        self._check_io(offset, n, "read")
        n = max(0, min(n, self.size - offset))
        if n == 0:
            return b""
        ps = self.page_size
        out = bytearray()
        pos = offset
        end = offset + n
        physmem = self.uvm.platform.physmem
        while pos < end:
            base = pos - pos % ps
            take = min(end, base + ps) - pos
            pg = self.uo_pages.get(base)
            if pg is not None:
                out += physmem.copyout([pg.frame], pos - base, take)
            else:
                out += self.backing[pos : pos + take]
            pos += take
        return bytes(out)

    def contents(self) -> bytes:
        return self.read(0, self.size)

    def _check_open(self, what: str) -> None:
        if self.uvm.platform.physmem.closed:
            raise MachineClosed(f"{what}: the machine is closed (close() unmapped its memory)")

    def fsync(self) -> None:
        self._check_open("fsync")
        self.pgo_put(0, 0, PGO_ALLPAGES | PGO_CLEANIT)

    def truncate(self, size: int) -> None:
        """ftruncate(2): the tail of a partial last page is zeroed in the page
        and the backing store, then pages wholly past the new end are freed
        (loaned ones become orphans through ``uvm_pagefree``).

        Zeroing a loaned tail page breaks its loan first (``ubc_zerorange``
        -> ``ubc_fault``); the page for that copy is reserved before anything
        changes (``uvm_wait``), so ENOMEM leaves the file as it was.  NetBSD
        waits for memory there and never fails half done.
        """
        self._check_open("truncate")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"truncate: size must be a non-negative int, got {size!r}")
        ps = self.page_size
        if size < self.size:
            tail = size % ps
            if tail:
                self._reserve(
                    range(size - tail, size - tail + 1), f"truncate of {self.name}", page_in=False
                )
                pg = self.uo_pages.get(size - tail)
                if pg is not None:
                    if pg.loan_count:
                        pg = self._ubc_loanbreak(pg)
                    phys = self.uvm.platform.physmem
                    phys.copyin([pg.frame], tail, bytes(ps - tail))
            keep = size + (-size) % ps
            self.pgo_put(keep, self.size + ps, PGO_FREE)
            del self.backing[size:]
        else:
            self._extend(size)

    def _extend(self, size: int) -> None:
        """Grow the file to ``size`` bytes (write(2) past EOF, or ftruncate up).

        The bytes of the old last page past the old end of file become file
        data: they are the page cache's (zero unless a store through a
        mapping put something there), and read(2) shows them.  So the page
        holding the old EOF is marked DIRTY, or fsync would skip a page an
        earlier fsync left CLEAN (or UNKNOWN with the modified bit cleared,
        if wired) and the disk would keep zeros where read(2) shows the
        stored bytes.  FFS does this in
        ``ufs_balloc_range`` (ufs_inode.c 1.95: "clear PG_CLEAN on all the
        pages" it gets from the start of the block holding the range, which
        includes the page of the old EOF whether ``ffs_truncate`` (ffs_inode.c
        1.117) or ``ffs_write`` (ufs_readwrite.c) calls it for the old partial
        block or for the new last byte).  A page that is not resident holds
        nothing past EOF: the disk's zeros are right and nothing is paged in.
        """
        old = self.size
        tail = old % self.page_size
        if tail:
            pg = self.uo_pages.get(old - tail)
            if pg is not None:
                self.uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_DIRTY)
        self.backing.extend(bytes(size - old))

    def _last_detach(self) -> None:
        # The vnode itself holds a reference until the file is reclaimed.
        pass
