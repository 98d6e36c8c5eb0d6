"""Moving bytes in and out of mbuf chains (``sys/kern/uipc_mbuf.c``).

``m_copydata``, ``m_copyback``, ``m_append``, ``m_devget``, ``M_PREPEND``
(``m_prepend``), ``m_adj``, ``m_cat`` and ``mtod``; re-exported from
:mod:`netstack.mbuf`, where the mbufs, storage and sharing rules live.
"""

from __future__ import annotations

from typing import Any

from uvmloan.errors import KernelAssertion

from .mbuf import (
    M_COPYFLAGS,
    M_EXT,
    M_EXT_PAGES,
    M_EXT_ROMAP,
    M_PKTHDR,
    M_READONLY,
    M_TRAILINGSPACE,
    MH_ALIGN,
    MHLEN,
    MINCLSIZE,
    MLEN,
    MT_DATA,
    Mbuf,
    MbufPool,
    _bufsize,
    gather,
    m_length,
    m_pieces,
)
from .zerocopy_hazard import note_copydata


def m_copydata(m: Mbuf, off: int, length: int) -> bytes:
    """Copy ``length`` bytes at ``off`` out of the chain (a kernel memcpy).

    The CPU reads loaned storage through the kernel's read-only mapping of
    it (``ext_buf``), so the loan KVA enters this CPU's TLB as it would in
    NetBSD; kernel memory is read directly.
    """
    if off < 0 or length < 0:
        raise KernelAssertion(f"m_copydata: off {off}, len {length}")
    out = bytearray()
    cur: Mbuf | None = m
    left = length
    while cur is not None and left > 0:
        if off >= cur.m_len:
            off -= cur.m_len
            cur = cur.m_next
            continue
        take = min(cur.m_len - off, left)
        mach = cur.pool.machine
        if cur.m_flags & M_EXT_ROMAP and mach is not None:
            ext = cur.m_ext
            assert ext is not None
            va = ext.ext_buf + cur.m_data + off
            out += mach.mmu.load(mach.platform.curcpu(), va, take, user=False)
        elif cur.m_flags & M_EXT_PAGES:
            # pinned user pages (linux-zerocopy) have no kernel mapping of
            # their own: the CPU reads the frames (Linux's kmap of the page
            # in skb_copy_bits) and pays the copy; what it reads is checked
            # against what the send took (zerocopy_hazard)
            data = gather(cur, m_pieces(cur, off, take))
            cur.pool.charge_copy(take)
            note_copydata(cur, off, data)
            out += data
        else:
            base = cur.m_data + off
            out += cur._kmem()[base : base + take]
            cur.pool.charge_copy(take)
        left -= take
        off = 0
        cur = cur.m_next
    if left > 0:
        raise KernelAssertion("m_copydata: range beyond the chain")
    return bytes(out)


def m_copyback(m: Mbuf, off: int, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` into the chain at ``off``; read-only storage is refused.

    NetBSD's ``m_copyback`` may not write into shared or read-only storage
    (``m_copyback0`` asserts it; writers use ``m_makewritable`` first).  The
    chain is not extended here: the range must already exist.
    """
    n = len(data)
    cur: Mbuf | None = m
    pos = off
    while cur is not None and pos >= cur.m_len:
        pos -= cur.m_len
        cur = cur.m_next
    # Check the whole range before writing a byte.
    probe, ppos, left = cur, pos, n
    while left > 0:
        if probe is None:
            raise KernelAssertion(f"m_copyback: [{off}, {off + n}) beyond the chain")
        if M_READONLY(probe):
            raise KernelAssertion(f"m_copyback: {probe!r} has read-only storage")
        left -= min(probe.m_len - ppos, left)
        ppos = 0
        probe = probe.m_next
    done = 0
    while done < n:
        assert cur is not None
        take = min(cur.m_len - pos, n - done)
        buf = cur._kmem()
        start = cur.m_data + pos
        buf[start : start + take] = data[done : done + take]
        done += take
        pos = 0
        cur = cur.m_next
    m.pool.charge_copy(n)


def m_append(m: Mbuf, data: bytes | bytearray | memoryview) -> None:
    """Append bytes at the tail, in trailing space then new mbufs/clusters."""
    pool = m.pool
    last = m
    while last.m_next is not None:
        last = last.m_next
    done = 0
    n = len(data)
    while done < n:
        space = M_TRAILINGSPACE(last)
        if space == 0:
            nm = pool.m_get(MT_DATA)
            if n - done >= MINCLSIZE:
                pool.m_clget(nm)
            last.m_next = nm
            last = nm
            space = M_TRAILINGSPACE(last)
        take = min(space, n - done)
        buf = last._kmem()
        start = last.m_data + last.m_len
        buf[start : start + take] = data[done : done + take]
        last.m_len += take
        done += take
    if m.m_flags & M_PKTHDR:
        m.m_pkthdr_len += n
    pool.charge_copy(n)


def m_devget(pool: MbufPool, data: bytes | bytearray | memoryview, rcvif: Any = None) -> Mbuf:
    """A received frame copied into a fresh chain of clusters (or one small mbuf)."""
    n = len(data)
    top = pool.m_gethdr(MT_DATA)
    top.m_pkthdr_rcvif = rcvif
    if n > MHLEN:
        pool.m_clget(top)
    cur = top
    done = 0
    while True:
        take = min(_bufsize(cur) - cur.m_data, n - done)
        buf = cur._kmem()
        buf[cur.m_data : cur.m_data + take] = data[done : done + take]
        cur.m_len = take
        done += take
        if done >= n:
            break
        nm = pool.m_get(MT_DATA)
        if n - done > MLEN:
            pool.m_clget(nm)
        cur.m_next = nm
        cur = nm
    top.m_pkthdr_len = n
    pool.charge_copy(n)
    return top


def m_prepend(m: Mbuf, plen: int) -> Mbuf:
    """``M_PREPEND``: make room for ``plen`` header bytes in front of the chain.

    Uses leading space when the first mbuf is writable and has it; else a
    new pkthdr mbuf (its data placed at the end, ``MH_ALIGN``) goes in front
    and takes over the packet header.
    """
    if plen < 0 or plen > MHLEN:
        raise KernelAssertion(f"M_PREPEND of {plen} bytes")
    # M_LEADINGSPACE, with its M_READONLY test skipped for internal data
    # (never read-only): every packet is prepended to twice (TCP, IP)
    if (m.m_data if not m.m_flags & M_EXT or not M_READONLY(m) else 0) >= plen:
        m.m_data -= plen
        m.m_len += plen
        if m.m_flags & M_PKTHDR:
            m.m_pkthdr_len += plen
        return m
    n = m.pool._get(m.m_type, True)  # m_gethdr
    if m.m_flags & M_PKTHDR:
        n.m_flags |= m.m_flags & M_COPYFLAGS
        n.m_pkthdr_len = m.m_pkthdr_len
        n.m_pkthdr_rcvif = m.m_pkthdr_rcvif
        m.m_flags &= ~M_PKTHDR
    else:
        n.m_pkthdr_len = m_length(m)
    n.m_next = m
    MH_ALIGN(n, plen)
    n.m_len = plen
    n.m_pkthdr_len += plen
    return n


def mtod_bytes(m: Mbuf) -> memoryview:
    """A writable view of one mbuf's kernel-memory data (``mtod``)."""
    buf = m.m_dat if not m.m_flags & M_EXT else m._kmem()
    assert buf is not None
    d = m.m_data
    return memoryview(buf)[d : d + m.m_len]


def m_peek(m: Mbuf, n: int) -> bytes | memoryview:
    """The first ``n`` bytes, as header code reads them in place (not a
    charged copy: m_pullup leaves a contiguous header in the first mbuf)."""
    if m.m_len >= n and not m.m_flags & M_EXT_PAGES:
        buf = m.m_dat if not m.m_flags & M_EXT else m._kmem()  # mtod_bytes(m)[:n]
        assert buf is not None
        d = m.m_data
        return memoryview(buf)[d : d + n]
    return gather(m, m_pieces(m, 0, n))


def m_adj(m: Mbuf, req_len: int) -> None:
    """Trim ``req_len`` bytes from the head (positive) or the tail (negative)."""
    if 0 <= req_len < m.m_len:
        # the common case, a header in the first mbuf with data after it
        # (ip_input and tcp_input strip theirs from every received segment)
        m.m_data += req_len
        m.m_len -= req_len
        if m.m_flags & M_PKTHDR:
            m.m_pkthdr_len -= req_len
        return
    if req_len >= 0:
        left = req_len
        cur: Mbuf | None = m
        while cur is not None and left > 0:
            take = min(cur.m_len, left)
            cur.m_len -= take
            cur.m_data += take
            left -= take
            cur = cur.m_next
        if m.m_flags & M_PKTHDR:
            m.m_pkthdr_len -= req_len - left
    else:
        keep = m_length(m) + req_len
        keep = max(keep, 0)
        cur = m
        while cur is not None:
            if cur.m_len >= keep:
                cur.m_len = keep
                keep = 0
            else:
                keep -= cur.m_len
            cur = cur.m_next
        if m.m_flags & M_PKTHDR:
            m.m_pkthdr_len = m_length(m)


def m_cat(m: Mbuf, n: Mbuf | None) -> None:
    """Append chain ``n`` to ``m`` (no pkthdr fix-up, as in NetBSD)."""
    last = m
    while last.m_next is not None:
        last = last.m_next
    last.m_next = n


__all__ = [
    "m_adj",
    "m_append",
    "m_cat",
    "m_copyback",
    "m_copydata",
    "m_devget",
    "m_peek",
    "m_prepend",
    "mtod_bytes",
]
