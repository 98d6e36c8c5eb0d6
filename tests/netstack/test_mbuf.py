"""mbufs: flags, clusters, shared external storage, copies and the ledger."""

from __future__ import annotations

from typing import Any

import pytest

from netstack.mbuf import (
    M_COPYALL,
    M_EXT,
    M_EXT_CLUSTER,
    M_EXT_PAGES,
    M_EXT_ROMAP,
    M_EXT_RW,
    M_PKTHDR,
    M_READONLY,
    M_TRAILINGSPACE,
    MCLBYTES,
    MEXTADD,
    MHLEN,
    MINCLSIZE,
    MLEN,
    Mbuf,
    MbufPool,
    gather,
    is_free,
    m_adj,
    m_append,
    m_copyback,
    m_copydata,
    m_copym,
    m_devget,
    m_free,
    m_freem,
    m_length,
    m_pieces,
    m_prepend,
)
from uvmloan import Machine
from uvmloan.errors import InvariantViolation, KernelAssertion


def test_flag_values_are_netbsds() -> None:
    # sys/sys/mbuf.h 1.153 (and later): the values a kernel debugger shows.
    assert (M_EXT, M_PKTHDR) == (0x1, 0x2)
    assert M_EXT_CLUSTER == 0x01000000
    assert M_EXT_PAGES == 0x02000000
    assert M_EXT_ROMAP == 0x04000000
    assert M_EXT_RW == 0x08000000
    assert MCLBYTES == 2048
    # amd64 MSIZE 512 less the 56-byte LP64 m_hdr, less a 56-byte pkthdr.
    assert (MLEN, MHLEN, MINCLSIZE) == (456, 400, 857)


def test_cluster_alloc_free_ledger() -> None:
    pool = MbufPool()
    m = pool.m_getcl()
    assert m.m_flags & (M_EXT | M_EXT_CLUSTER | M_EXT_RW) == M_EXT | M_EXT_CLUSTER | M_EXT_RW
    assert (pool.mbufs, pool.clusters) == (1, 1)
    m_append(m, b"x" * 100)
    assert M_TRAILINGSPACE(m) == MCLBYTES - 100
    assert not M_READONLY(m)
    with pytest.raises(InvariantViolation, match="mbuf-leak"):
        pool.check_leaks()
    m_freem(m)
    pool.check_leaks()
    with pytest.raises(KernelAssertion):
        m_free(m)


def test_internal_data_trailing_space_and_append_chain() -> None:
    pool = MbufPool()
    m = pool.m_gethdr()
    assert M_TRAILINGSPACE(m) == MHLEN
    data = bytes(range(256)) * 20  # 5120 bytes: header mbuf, then clusters
    m_append(m, data)
    assert m.m_pkthdr_len == len(data) == m_length(m)
    assert m_copydata(m, 0, len(data)) == data
    assert m_copydata(m, 390, 30) == data[390:420]
    m_freem(m)
    pool.check_leaks()


def _loaned_like(pool: MbufPool, freed: list[Any]) -> Mbuf:
    """External storage with an ext_free callback (the way soloanfree is attached)."""
    m = pool.m_gethdr()

    def ext_free(mm: Mbuf, buf: int, size: int, arg: Any) -> None:
        freed.append((mm, buf, size, arg))
        pool.pool_cache_put(mm)

    MEXTADD(m, 0x1000, 3000, ext_free, "so")
    m.m_flags |= M_EXT_PAGES | M_EXT_ROMAP
    m.m_len = 3000
    return m


def test_shared_storage_lives_until_last_sharer() -> None:
    pool = MbufPool()
    freed: list[Any] = []
    m = _loaned_like(pool, freed)
    assert M_READONLY(m) and M_TRAILINGSPACE(m) == 0
    c1 = m_copym(m, 100, 1000)
    c2 = m_copym(m, 0, M_COPYALL)
    ext = m.m_ext
    assert ext is not None and ext.ext_refcnt == 3
    assert c1.m_ext is ext and c1.m_data == 100 and c1.m_len == 1000
    assert c2.m_pkthdr_len == 3000
    # The owner goes first: it stays allocated (sharers point at it).
    m_free(m)
    assert freed == [] and is_free(m) and pool.mbufs == 3
    m_free(c2)
    assert freed == [] and ext.ext_refcnt == 1
    m_free(c1)
    assert len(freed) == 1 and freed[0][0] is m and freed[0][1:] == (0x1000, 3000, "so")
    pool.check_leaks()


def test_readonly_storage_refuses_copyback() -> None:
    pool = MbufPool()
    freed: list[Any] = []
    m = _loaned_like(pool, freed)
    with pytest.raises(KernelAssertion, match="read-only"):
        m_copyback(m, 0, b"zz")
    m_freem(m)
    # A shared cluster is read-only too (refcnt > 1).
    c = pool.m_getcl()
    m_append(c, b"abc")
    d = m_copym(c, 0, 3)
    assert M_READONLY(c) and M_TRAILINGSPACE(c) == 0
    with pytest.raises(KernelAssertion):
        m_copyback(c, 0, b"q")
    m_freem(d)
    m_copyback(c, 1, b"Q")
    assert m_copydata(c, 0, 3) == b"aQc"
    m_freem(c)
    pool.check_leaks()


def test_m_copym_copies_internal_data() -> None:
    pool = MbufPool()
    m = pool.m_gethdr()
    m_append(m, b"hello world")
    c = m_copym(m, 6, 5)
    m_copyback(m, 6, b"WORLD")
    assert m_copydata(c, 0, 5) == b"world"
    m_freem(m)
    m_freem(c)
    pool.check_leaks()


def test_pieces_of_pages_and_kernel_memory() -> None:
    mach = Machine(memory="1M", trace="off")
    try:
        pool = MbufPool(mach)
        pgs = [mach.uvm.uvm_pagealloc(None, 0, None, 0) for _ in range(3)]
        assert all(p is not None for p in pgs)
        for i, p in enumerate(pgs):
            assert p is not None
            mach.physmem.fill_page(p.frame, 0x41 + i)
        m = pool.m_gethdr()
        # ext_buf at KVA offset 4000 in the first page; 5000 bytes span 3 pages.
        MEXTADD(m, 0xFFFF800000000000 + 4000, 5000, None, None)
        m.m_flags |= M_EXT_PAGES | M_EXT_ROMAP
        ext = m.m_ext
        assert ext is not None
        ext.ext_pgs = [p for p in pgs if p is not None]
        m.m_len = 5000
        hdr = pool.m_get()
        m_append(hdr, b"HDR")
        hdr.m_next = m
        pieces = m_pieces(hdr)
        assert isinstance(pieces[0], memoryview) and bytes(pieces[0]) == b"HDR"
        f = [p.frame for p in ext.ext_pgs]
        assert pieces[1:] == [(f[0], 4000, 96), (f[1], 0, 4096), (f[2], 0, 808)]
        # (DMA view: this storage is not mapped, so not m_copydata)
        assert gather(hdr, m_pieces(hdr, 3 + 95, 3)) == b"ABB"
        # sbdrop-style trim in place keeps the loan.
        m.m_data += 100
        m.m_len -= 100
        assert m_pieces(m)[0] == (f[1], 4, 4092)
        hdr.m_next = None
        m_freem(hdr)
        m_freem(m)
        pool.check_leaks()
        for p in ext.ext_pgs:
            mach.uvm.uvm_pagefree(p)
    finally:
        mach.close()


def test_devget_prepend_adj() -> None:
    pool = MbufPool()
    data = bytes(range(256)) * 12
    m = m_devget(pool, data)
    assert m.m_flags & M_EXT_CLUSTER and m_length(m) == len(data) == m.m_pkthdr_len
    assert m_copydata(m, 0, len(data)) == data
    m_adj(m, 20)
    assert m.m_pkthdr_len == len(data) - 20 and m_copydata(m, 0, 4) == data[20:24]
    m_adj(m, -10)
    assert m_length(m) == len(data) - 30
    # Prepend: a cluster has leading space after the trim.
    m2 = m_prepend(m, 20)
    assert m2 is m and m_length(m) == len(data) - 10
    small = m_devget(pool, b"abc")
    hdr = m_prepend(small, 40)
    assert hdr is not small and hdr.m_flags & M_PKTHDR and not small.m_flags & M_PKTHDR
    assert hdr.m_pkthdr_len == 43
    m_freem(m)
    m_freem(hdr)
    pool.check_leaks()
