"""mbufs: internal data, clusters and external storage (loaned pages).

Names and flag values are NetBSD's (``sys/sys/mbuf.h`` 1.153 and later,
``sys/kern/uipc_mbuf.c``).  Internal data and clusters are kernel memory
that is never loaned: Python ``bytearray``s.  External storage of loaned
pages (``M_EXT_PAGES``) references the lent ``vm_page``s; its bytes are the
arena frames of those pages, and nothing here copies them into Python
objects except where a copy is what is being modelled (``m_copydata``).

Storage sharing follows ``m_ext_free`` (uipc_mbuf.c): the mbuf that got the
storage (``MEXTADD``/``MCLGET``) owns the ``_m_ext_storage``; ``m_copym``
makes sharers that point at the owner (``m_ext_ref``) and bump
``ext_refcnt``.  Freeing a sharer while others remain releases only that
sharer; freeing the owner while sharers remain keeps the owner allocated
(other mbufs' ``m_ext_ref`` still point at it); the last reference frees the
storage: a cluster goes back to the pool, storage with ``ext_free`` is handed
to it (``soloanfree``), which owns the owner mbuf from then on.

Every host has one :class:`MbufPool` (``mb_cache``/``mcl_cache``) that keeps
a ledger of live mbufs and clusters, so tests can assert that nothing
leaked.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from uvmloan.errors import InvariantViolation, KernelAssertion

if TYPE_CHECKING:
    from uvmloan.machine import Machine
    from uvmloan.page import Page

# sys/arch/amd64/include/param.h: MSIZE 512, MCLBYTES 2048 (MCLSHIFT 11).
MSIZE = 512
MCLBYTES = 2048
# MLEN = MSIZE - offsetof(m_dat): the LP64 struct m_hdr is 56 bytes (five
# pointers, two ints, a short padded to 8).  MHLEN also leaves room for the
# netbsd-10 struct pkthdr (56 bytes on LP64).  Computed from the layouts.
MLEN = MSIZE - 56
MHLEN = MLEN - 56
MINCLSIZE = MHLEN + MLEN + 1  # mbuf.h: smallest amount to put in a cluster
M_MAXCOMPRESS = MHLEN // 2
# mbuf.h: (65536 / MIN_PAGE_SIZE) + 1, to hold SOCK_LOAN_CHUNK at any alignment.
MIN_PAGE_SIZE = 4096
M_EXT_MAXPAGES = 65536 // MIN_PAGE_SIZE + 1

# m_flags (mbuf.h)
M_EXT = 0x00000001
M_PKTHDR = 0x00000002
M_EOR = 0x00000004
M_PROTO1 = 0x00000008
M_BCAST = 0x00000100
M_MCAST = 0x00000200
M_EXT_FLAGS = 0xFF000000
M_EXT_CLUSTER = 0x01000000
M_EXT_PAGES = 0x02000000
M_EXT_ROMAP = 0x04000000
M_EXT_RW = 0x08000000
M_CLUSTER = M_EXT_CLUSTER
M_COPYFLAGS = M_PKTHDR | M_EOR | M_BCAST | M_MCAST
M_EXTCOPYFLAGS = M_EXT | M_EXT_FLAGS

# m_type
MT_FREE = 0
MT_DATA = 1
MT_HEADER = 2
MT_SONAME = 3
MT_CONTROL = 6

M_COPYALL = -1

Piece: TypeAlias = "tuple[int, int, int] | memoryview"
"""What a device sees of a chain: (frame, offset, length) in the arena, or kernel memory."""

ExtFree: TypeAlias = "Callable[[Mbuf, int, int, Any], None]"


@attrs.define(slots=True, eq=False, repr=False)
class ExtStorage:
    """``struct _m_ext_storage``: what ``m_ext`` of every sharer refers to.

    ``ext_buf`` is the kernel VA of the first byte for loaned pages (the
    loan KVA plus the buffer's offset in its first page) and 0 for kernel
    memory; ``ext_cl`` holds the bytes of a cluster or malloc'd storage.
    """

    ext_size: int
    ext_refcnt: int = 1
    ext_buf: int = 0
    ext_free: ExtFree | None = None
    ext_arg: Any = None
    ext_pgs: list[Page] = attrs.field(factory=list)
    ext_cl: bytearray | None = None
    # (frame, 0, page size) per page of ext_pgs, as one flat array('q'):
    # built at the first DMA read and sliced for each packet after (the
    # model's cache, not a NetBSD field; the page list is fixed at MEXTADD)
    ext_tri: array[int] | None = None

    def page_triples(self, ps: int) -> array[int]:
        tri = self.ext_tri
        if tri is None:
            tri = self.ext_tri = array("q", [x for pg in self.ext_pgs for x in (pg.frame, 0, ps)])
        return tri

    def __repr__(self) -> str:
        kind = f"{len(self.ext_pgs)} pages" if self.ext_pgs else "kernel memory"
        return f"<ext {self.ext_size} B, {kind}, refcnt {self.ext_refcnt}>"


class Mbuf:
    """``struct mbuf``.  ``m_data`` is an offset into the mbuf's storage.

    For external storage the offset counts from ``ext_buf``; otherwise from
    the start of the internal data area (``m_dat``/``m_pktdat``).
    """

    __slots__ = (
        "csum_data",
        "csum_flags",
        "m_dat",
        "m_data",
        "m_ext_ref",
        "m_ext_storage",
        "m_flags",
        "m_len",
        "m_next",
        "m_nextpkt",
        "m_pkthdr_len",
        "m_pkthdr_rcvif",
        "m_type",
        "pool",
        "serial",
    )

    def __init__(
        self, pool: MbufPool, mtype: int, pkthdr: bool, serial: int, dat: bool = True
    ) -> None:
        self.pool = pool
        self.serial = serial
        self.m_next: Mbuf | None = None
        self.m_nextpkt: Mbuf | None = None
        self.m_len = 0
        self.m_flags = M_PKTHDR if pkthdr else 0
        self.m_type = mtype
        self.m_data = 0
        # Internal data: a pkthdr mbuf has MHLEN bytes, others MLEN (none
        # for one that gets a cluster at once: m_getcl).
        self.m_dat: bytearray | None = bytearray(MHLEN if pkthdr else MLEN) if dat else None
        self.m_ext_storage: ExtStorage | None = None
        self.m_ext_ref: Mbuf | None = None
        self.m_pkthdr_len = 0
        self.m_pkthdr_rcvif: Any = None
        self.csum_flags = 0
        self.csum_data = 0

    @property
    def m_ext(self) -> ExtStorage | None:
        """The shared storage (the owner's ``_m_ext_storage``), or None."""
        if not self.m_flags & M_EXT:
            return None
        ref = self.m_ext_ref
        assert ref is not None and ref.m_ext_storage is not None
        return ref.m_ext_storage

    def __repr__(self) -> str:
        kind = "free" if self.m_type == MT_FREE else f"len {self.m_len}"
        fl = []
        for bit, name in (
            (M_PKTHDR, "PKTHDR"),
            (M_EXT, "EXT"),
            (M_EXT_CLUSTER, "CLUSTER"),
            (M_EXT_PAGES, "PAGES"),
            (M_EXT_ROMAP, "ROMAP"),
            (M_EXT_RW, "RW"),
            (M_EOR, "EOR"),
        ):
            if self.m_flags & bit:
                fl.append(name)
        return f"<mbuf #{self.serial} {kind} {'|'.join(fl) or '-'}>"

    def chain(self) -> Iterator[Mbuf]:
        """This mbuf and its successors through ``m_next``."""
        m: Mbuf | None = self
        while m is not None:
            yield m
            m = m.m_next

    # The bytes of one mbuf's data as kernel memory (clusters and internal).
    def _kmem(self) -> bytearray:
        if self.m_flags & M_EXT:
            # the m_ext property, inlined: every header read and DMA of a
            # cluster comes through here
            ref = self.m_ext_ref
            assert ref is not None and ref.m_ext_storage is not None
            cl = ref.m_ext_storage.ext_cl
            if cl is None:
                raise KernelAssertion(f"{self!r}: storage of loaned pages is not kernel memory")
            return cl
        assert self.m_dat is not None
        return self.m_dat


@attrs.define(slots=True, eq=False)
class MbufPool:
    """``mb_cache`` and ``mcl_cache`` of one host, with an allocation ledger."""

    machine: Machine | None = None
    live: dict[Mbuf, None] = attrs.field(factory=dict)
    clusters: int = 0
    mbufs_allocated: int = 0
    mbufs_freed: int = 0
    clusters_allocated: int = 0
    clusters_freed: int = 0
    _serial: int = 0

    # ------------------------------------------------------------ allocation

    def _get(self, mtype: int, pkthdr: bool, dat: bool = True) -> Mbuf:
        self._serial += 1
        m = Mbuf(self, mtype, pkthdr, self._serial, dat)
        self.live[m] = None
        self.mbufs_allocated += 1
        return m

    # m_get, m_gethdr and m_getcl spell _get out rather than call it: the
    # stack allocates about four mbufs per TCP segment, and the extra frame
    # was a visible part of each allocation.

    def m_get(self, mtype: int = MT_DATA) -> Mbuf:
        serial = self._serial = self._serial + 1
        m = Mbuf(self, mtype, False, serial, True)
        self.live[m] = None
        self.mbufs_allocated += 1
        return m

    def m_gethdr(self, mtype: int = MT_DATA) -> Mbuf:
        serial = self._serial = self._serial + 1
        m = Mbuf(self, mtype, True, serial, True)
        self.live[m] = None
        self.mbufs_allocated += 1
        return m

    def m_clget(self, m: Mbuf) -> None:
        """``MCLGET``: attach a fresh cluster (``M_EXT|M_CLUSTER|M_EXT_RW``)."""
        if m.m_flags & M_EXT:
            raise KernelAssertion(f"MCLGET on {m!r}, which already has storage")
        m.m_ext_storage = ExtStorage(MCLBYTES, ext_cl=bytearray(MCLBYTES))
        m.m_ext_ref = m
        m.m_dat = None
        m.m_data = 0
        m.m_flags = (m.m_flags & ~M_EXTCOPYFLAGS) | M_EXT | M_EXT_CLUSTER | M_EXT_RW
        self.clusters += 1
        self.clusters_allocated += 1

    def m_getcl(self, mtype: int = MT_DATA, pkthdr: bool = True) -> Mbuf:
        serial = self._serial = self._serial + 1
        m = Mbuf(self, mtype, pkthdr, serial, False)
        self.live[m] = None
        self.mbufs_allocated += 1
        # m_clget on the fresh mbuf, inlined (no storage to check for, no
        # flags of storage to clear): the NIC takes one per received frame
        m.m_ext_storage = ExtStorage(MCLBYTES, ext_cl=bytearray(MCLBYTES))
        m.m_ext_ref = m
        m.m_flags |= M_EXT | M_EXT_CLUSTER | M_EXT_RW
        self.clusters += 1
        self.clusters_allocated += 1
        return m

    def _put(self, m: Mbuf) -> None:
        if m not in self.live:
            raise KernelAssertion(f"pool_cache_put of {m!r}, which is not allocated")
        del self.live[m]
        self.mbufs_freed += 1
        m.m_type = MT_FREE
        m.m_next = None
        m.m_nextpkt = None

    def pool_cache_put(self, m: Mbuf) -> None:
        """Return an mbuf header to ``mb_cache`` (what ``ext_free`` callbacks do)."""
        self._put(m)

    # ---------------------------------------------------------------- ledger

    @property
    def mbufs(self) -> int:
        return len(self.live)

    def check_leaks(self) -> None:
        """Raise unless every mbuf and cluster has been freed."""
        if self.live or self.clusters:
            few = ", ".join(repr(m) for m in list(self.live)[:5])
            raise InvariantViolation(
                "mbuf-leak", f"{len(self.live)} mbufs and {self.clusters} clusters live: {few}"
            )

    def charge_copy(self, n: int) -> None:
        """The CPU copies ``n`` bytes of kernel memory (memcpy)."""
        m = self.machine
        if m is not None and n:
            m.platform.charge(m.platform.costs.copy_ns(n))


def MEXTADD(m: Mbuf, buf: int, size: int, free: ExtFree | None, arg: Any) -> ExtStorage:
    """Attach external storage (``MEXTADD``): refcnt 1, ``M_EXT`` only."""
    if m.m_flags & M_EXT:
        raise KernelAssertion(f"MEXTADD on {m!r}, which already has storage")
    ext = ExtStorage(size, ext_buf=buf, ext_free=free, ext_arg=arg)
    m.m_ext_storage = ext
    m.m_ext_ref = m
    m.m_dat = None
    m.m_data = 0
    m.m_flags = (m.m_flags & ~M_EXTCOPYFLAGS) | M_EXT
    return ext


# ------------------------------------------------------------------ macros


def M_READONLY(m: Mbuf) -> bool:
    """mbuf.h: external storage mapped read-only, not marked R/W, or shared."""
    fl = m.m_flags
    if not fl & M_EXT:
        return False
    if (fl & (M_EXT_ROMAP | M_EXT_RW)) != M_EXT_RW:
        return True
    ref = m.m_ext_ref  # m.m_ext, inlined
    assert ref is not None and ref.m_ext_storage is not None
    return ref.m_ext_storage.ext_refcnt > 1


def M_ROMAP(m: Mbuf) -> bool:
    return (m.m_flags & (M_EXT | M_EXT_ROMAP)) == (M_EXT | M_EXT_ROMAP)


def _bufsize(m: Mbuf) -> int:
    if m.m_flags & M_EXT:
        ext = m.m_ext
        assert ext is not None
        return ext.ext_size
    assert m.m_dat is not None
    return len(m.m_dat)


def M_TRAILINGSPACE(m: Mbuf) -> int:
    """Room after the data; 0 for read-only storage (so nothing merges into a loan)."""
    if M_READONLY(m):
        return 0
    return _bufsize(m) - (m.m_data + m.m_len)


def M_LEADINGSPACE(m: Mbuf) -> int:
    return 0 if M_READONLY(m) else m.m_data


def MH_ALIGN(m: Mbuf, length: int) -> None:
    """Place ``length`` bytes at the end of a pkthdr mbuf, long-aligned."""
    m.m_data += (MHLEN - length) & ~7


def M_ALIGN(m: Mbuf, length: int) -> None:
    m.m_data += (MLEN - length) & ~7


def m_length(m: Mbuf | None) -> int:
    """Bytes in the chain (summed, whatever the pkthdr says)."""
    n = 0
    while m is not None:
        n += m.m_len
        m = m.m_next
    return n


# ------------------------------------------------------------------- freeing


def m_ext_free(m: Mbuf) -> None:
    """uipc_mbuf.c ``m_ext_free``: drop one reference to the storage."""
    if m.m_type == MT_FREE:
        raise KernelAssertion(f"m_ext_free: {m!r} already freed")
    owner = m.m_ext_ref
    assert owner is not None
    ext = owner.m_ext_storage
    assert ext is not None
    if ext.ext_refcnt <= 0:
        raise KernelAssertion(f"m_ext_free: {m!r} storage refcnt {ext.ext_refcnt}")
    ext.ext_refcnt -= 1
    pool = m.pool
    embedded = owner is m
    if ext.ext_refcnt > 0:
        if not embedded:
            m.m_ext_ref = m
            m.m_flags &= ~M_EXTCOPYFLAGS
            pool._put(m)
        # else: other mbufs' m_ext_ref still point at this one; it stays.
        else:
            # Keeps the storage; counted live until the last sharer goes.
            m.m_next = None
            m.m_nextpkt = None
            m.m_flags |= _ORPHANED
        return
    # The last reference.
    if not embedded:
        m.m_ext_ref = m
        m.m_flags &= ~M_EXTCOPYFLAGS
        pool._put(m)
        ext.ext_refcnt += 1  # uipc_mbuf.c does the same before recursing
        m_ext_free(owner)
        return
    if m.m_flags & M_EXT_CLUSTER:
        pool.clusters -= 1
        pool.clusters_freed += 1
        ext.ext_cl = None
        pool._put(m)
    elif ext.ext_free is not None:
        # The callback (soloanfree) owns m from here and frees it later.
        m.m_next = None
        m.m_nextpkt = None
        m.m_flags &= ~_ORPHANED
        ext.ext_free(m, ext.ext_buf, ext.ext_size, ext.ext_arg)
    else:
        ext.ext_cl = None
        pool._put(m)


# An owner freed while sharers remained (model bookkeeping, not a NetBSD flag;
# a bit NetBSD leaves unused).
_ORPHANED = 0x00800000


def m_free(m: Mbuf) -> Mbuf | None:
    """Free one mbuf (and its reference to external storage); returns ``m_next``."""
    if m.m_type == MT_FREE:
        raise KernelAssertion(f"m_free: {m!r} already freed")
    if m.m_flags & _ORPHANED:
        raise KernelAssertion(f"m_free: {m!r} was already freed (its storage is shared)")
    n = m.m_next
    if m.m_flags & M_EXT:
        m_ext_free(m)
    else:
        m.pool._put(m)
    return n


def m_freem(m: Mbuf | None) -> None:
    """Free a whole chain."""
    # m_free, inlined: every packet's chain is freed here, mbuf by mbuf
    while m is not None:
        if m.m_type == MT_FREE:
            raise KernelAssertion(f"m_free: {m!r} already freed")
        fl = m.m_flags
        if fl & _ORPHANED:
            raise KernelAssertion(f"m_free: {m!r} was already freed (its storage is shared)")
        n = m.m_next
        if fl & M_EXT:
            m_ext_free(m)
        else:
            m.pool._put(m)
        m = n


def is_free(m: Mbuf) -> bool:
    """The mbuf has been given back (or only lingers as the owner of shared storage)."""
    return m.m_type == MT_FREE or bool(m.m_flags & _ORPHANED)


# -------------------------------------------------------------------- copies


def _share(n: Mbuf, m: Mbuf) -> None:
    """Make ``n`` another reference to ``m``'s external storage."""
    ref = m.m_ext_ref  # m.m_ext, inlined
    assert m.m_flags & M_EXT and ref is not None and ref.m_ext_storage is not None
    ref.m_ext_storage.ext_refcnt += 1
    n.m_ext_ref = ref
    n.m_dat = None
    n.m_flags = (n.m_flags & ~M_EXTCOPYFLAGS) | (m.m_flags & M_EXTCOPYFLAGS)


def m_copym(m: Mbuf, off: int, length: int) -> Mbuf:
    """Copy ``length`` bytes (``M_COPYALL``: to the end) from ``off``.

    External storage is shared by reference (no bytes move, a loan lives
    on); internal data is copied.  The copy gets a pkthdr if ``off`` is 0
    and ``m`` has one.
    """
    if off < 0 or (length < 0 and length != M_COPYALL):
        raise KernelAssertion(f"m_copym: off {off}, len {length}")
    pool = m.pool
    copyhdr = off == 0 and bool(m.m_flags & M_PKTHDR)
    cur: Mbuf | None = m
    while off > 0:
        if cur is None:
            raise KernelAssertion("m_copym: offset beyond the chain")
        if off < cur.m_len:
            break
        off -= cur.m_len
        cur = cur.m_next
    top: Mbuf | None = None
    tail: Mbuf | None = None
    left = length
    total = 0
    while left != 0:
        if cur is None:
            if length == M_COPYALL:
                break
            if top is not None:
                m_freem(top)
            raise KernelAssertion("m_copym: length beyond the chain")
        # a sharer of external storage never uses an internal data area
        # (_share drops it): do not allocate one
        n = pool._get(cur.m_type, copyhdr and top is None, not cur.m_flags & M_EXT)
        if copyhdr and top is None:
            n.m_flags |= m.m_flags & M_COPYFLAGS
            n.m_pkthdr_rcvif = m.m_pkthdr_rcvif
        take = cur.m_len - off if left == M_COPYALL else min(left, cur.m_len - off)
        n.m_len = take
        if cur.m_flags & M_EXT:
            _share(n, cur)
            n.m_data = cur.m_data + off
        else:
            src = cur._kmem()
            assert n.m_dat is not None
            n.m_dat[0:take] = src[cur.m_data + off : cur.m_data + off + take]
            pool.charge_copy(take)
        if tail is None:
            top = n
        else:
            tail.m_next = n
        tail = n
        total += take
        if left != M_COPYALL:
            left -= take
        off = 0
        cur = cur.m_next
    if top is None:
        top = pool.m_gethdr(MT_DATA) if copyhdr else pool.m_get(MT_DATA)
    if copyhdr:
        top.m_pkthdr_len = total if length == M_COPYALL else length
    return top


def m_copypacket(m: Mbuf) -> Mbuf:
    return m_copym(m, 0, M_COPYALL)


def _pieces_of(m: Mbuf, off: int, n: int, ps: int) -> Iterator[Piece]:
    """The pieces of ``n`` bytes at ``off`` within one mbuf's data."""
    if m.m_flags & M_EXT_PAGES:
        ext = m.m_ext
        assert ext is not None
        pos = ext.ext_buf % ps + m.m_data + off
        while n > 0:
            i, o = divmod(pos, ps)
            take = min(ps - o, n)
            yield (ext.ext_pgs[i].frame, o, take)
            pos += take
            n -= take
    else:
        base = m.m_data + off
        yield memoryview(m._kmem())[base : base + n]


def m_pieces(m: Mbuf, off: int = 0, length: int | None = None) -> list[Piece]:
    """The chain as the device sees it: arena pieces for loaned pages, views otherwise."""
    ps = m.pool.machine.page_size if m.pool.machine is not None else MIN_PAGE_SIZE
    out: list[Piece] = []
    left = m_length(m) - off if length is None else length
    if off < 0 or left < 0:
        raise KernelAssertion(f"m_pieces: off {off}, len {length}")
    cur: Mbuf | None = m
    while cur is not None and left > 0:
        if off >= cur.m_len:
            off -= cur.m_len
            cur = cur.m_next
            continue
        take = min(cur.m_len - off, left)
        out.extend(_pieces_of(cur, off, take, ps))
        left -= take
        off = 0
        cur = cur.m_next
    if left > 0:
        raise KernelAssertion("m_pieces: range beyond the chain")
    return out


def gather(m: Mbuf, pieces: list[Piece]) -> bytes:
    """Concatenate pieces (the arena ones through the C gather)."""
    mach = m.pool.machine
    out = bytearray()
    run: list[tuple[int, int, int]] = []
    for p in pieces:
        if isinstance(p, memoryview):
            if run:
                assert mach is not None
                out += mach.physmem.gather(run)
                run = []
            out += p
        else:
            run.append(p)
    if run:
        assert mach is not None
        out += mach.physmem.gather(run)
    return bytes(out)


__all__ = [
    "MCLBYTES",
    "MEXTADD",
    "MHLEN",
    "MINCLSIZE",
    "MLEN",
    "MSIZE",
    "MT_DATA",
    "MT_FREE",
    "MT_HEADER",
    "M_COPYALL",
    "M_EOR",
    "M_EXT",
    "M_EXT_CLUSTER",
    "M_EXT_MAXPAGES",
    "M_EXT_PAGES",
    "M_EXT_ROMAP",
    "M_EXT_RW",
    "M_LEADINGSPACE",
    "M_PKTHDR",
    "M_READONLY",
    "M_ROMAP",
    "M_TRAILINGSPACE",
    "ExtStorage",
    "Mbuf",
    "MbufPool",
    "Piece",
    "gather",
    "is_free",
    "m_adj",
    "m_append",
    "m_cat",
    "m_copyback",
    "m_copydata",
    "m_copym",
    "m_copypacket",
    "m_devget",
    "m_ext_free",
    "m_free",
    "m_freem",
    "m_length",
    "m_peek",
    "m_pieces",
    "m_prepend",
    "mtod_bytes",
]

# The byte movers live in mbuf_data (they need the definitions above).
from .mbuf_data import (  # noqa: E402
    m_adj,
    m_append,
    m_cat,
    m_copyback,
    m_copydata,
    m_devget,
    m_peek,
    m_prepend,
    mtod_bytes,
)
