"""struct sockbuf: sbspace, sbcompress, sbdrop, records, sbflush (uipc_socket2.c 1.122)."""

from __future__ import annotations

from typing import Any

import pytest

from netstack.mbuf import (
    M_EXT_PAGES,
    M_EXT_ROMAP,
    MCLBYTES,
    MEXTADD,
    MSIZE,
    Mbuf,
    MbufPool,
    m_append,
    m_copydata,
)
from netstack.sockbuf import (
    SB_MAX_ADJ,
    SockBuf,
    sbappendaddr,
    sbappendstream,
    sbdrop,
    sbdroprecord,
    sbflush,
    sbreserve,
    sbspace,
)
from uvmloan.errors import KernelAssertion


def cluster(pool: MbufPool, n: int, byte: int = 0x61) -> Mbuf:
    m = pool.m_getcl()
    m_append(m, bytes([byte]) * n)
    return m


def small(pool: MbufPool, data: bytes) -> Mbuf:
    m = pool.m_gethdr()
    m_append(m, data)
    return m


def loaned_like(pool: MbufPool, n: int) -> tuple[Mbuf, list[Any]]:
    freed: list[Any] = []
    m = pool.m_gethdr()

    def ext_free(mm: Mbuf, buf: int, size: int, arg: Any) -> None:
        freed.append(mm)
        pool.pool_cache_put(mm)

    MEXTADD(m, 0x10000, 8192, ext_free, None)
    m.m_flags |= M_EXT_PAGES | M_EXT_ROMAP
    m.m_len = n
    return m, freed


def test_sbreserve_limits() -> None:
    sb = SockBuf(MbufPool())
    # sb_max_adj = 262144 * 2048 / (512 + 2048)
    assert SB_MAX_ADJ == 209715
    assert not sbreserve(sb, 0)
    assert not sbreserve(sb, SB_MAX_ADJ + 1)
    assert sbreserve(sb, SB_MAX_ADJ)
    assert sb.sb_mbmax == 262144  # min(2 * cc, sb_max)
    assert sbreserve(sb, 8192) and (sb.sb_hiwat, sb.sb_mbmax) == (8192, 16384)


def test_sbspace_counts_bytes_and_mbuf_memory() -> None:
    pool = MbufPool()
    sb = SockBuf(pool)
    sbreserve(sb, 8192)
    for _ in range(6):
        sbappendstream(sb, cluster(pool, 600))  # > MCLBYTES/4: never coalesced
    # cc 3600; mbcnt 6 x (MSIZE + MCLBYTES) = 15360: min(8192-3600, 16384-15360)
    assert (sb.sb_cc, sb.sb_mbcnt) == (3600, 6 * (MSIZE + MCLBYTES))
    assert sbspace(sb) == 1024
    sb.check()
    sbflush(sb)
    pool.check_leaks()


def test_sbcompress_coalesces_small_mbufs_into_trailing_space() -> None:
    pool = MbufPool()
    sb = SockBuf(pool)
    sbreserve(sb, 65536)
    sbappendstream(sb, cluster(pool, 100))
    for c in b"xyz":
        sbappendstream(sb, small(pool, bytes([c]) * 100))
    ms = sb.mbufs()
    assert len(ms) == 1 and ms[0].m_len == 400 and sb.sb_cc == 400
    assert m_copydata(ms[0], 100, 300) == b"x" * 100 + b"y" * 100 + b"z" * 100
    # 513 > MCLBYTES / 4: appended as its own mbuf despite the room.
    sbappendstream(sb, cluster(pool, 513))
    assert len(sb.mbufs()) == 2
    sb.check()
    sbflush(sb)
    pool.check_leaks()


def test_sbcompress_never_merges_into_loaned_storage() -> None:
    pool = MbufPool()
    sb = SockBuf(pool)
    sbreserve(sb, 65536)
    lm, freed = loaned_like(pool, 4096)  # ext_size 8192: "room" for 4096 more
    sbappendstream(sb, lm)
    sbappendstream(sb, small(pool, b"s" * 10))
    ms = sb.mbufs()
    assert len(ms) == 2 and ms[0] is lm and lm.m_len == 4096
    sbflush(sb)
    assert freed == [lm]
    pool.check_leaks()


def test_sbdrop_trims_in_place_and_frees_whole_mbufs() -> None:
    pool = MbufPool()
    sb = SockBuf(pool)
    sbreserve(sb, 65536)
    lm, freed = loaned_like(pool, 5000)
    sbappendstream(sb, lm)
    sbappendstream(sb, cluster(pool, 1000, 0x62))
    ext = lm.m_ext
    sbdrop(sb, 1500)
    # Partly acknowledged: same storage, data pointer advanced, loan kept.
    assert sb.sb_mb is lm and lm.m_ext is ext and lm.m_data == 1500 and lm.m_len == 3500
    assert freed == [] and sb.sb_cc == 4500
    sbdrop(sb, 3500)
    assert freed == [lm] and sb.sb_mb is not None and sb.sb_mb.m_len == 1000
    sb.check()
    with pytest.raises(KernelAssertion, match="sbdrop"):
        sbdrop(sb, 1001)


def test_records_and_droprecord() -> None:
    pool = MbufPool()
    sb = SockBuf(pool)
    sbreserve(sb, 9216)
    assert sbappendaddr(sb, b"\xc0\x00\x02\x01\x13\x88", small(pool, b"one"))
    assert sbappendaddr(sb, b"\xc0\x00\x02\x01\x13\x88", small(pool, b"two!"))
    assert sb.sb_cc == 6 + 3 + 6 + 4
    # A datagram that does not fit sbspace is refused (the caller drops it).
    big = cluster(pool, 2000)
    sbreserve(sb, 100)
    assert not sbappendaddr(sb, b"\x00" * 6, big)
    big_next = big
    from netstack.mbuf import m_freem

    m_freem(big_next)
    sbdroprecord(sb)
    assert sb.sb_cc == 10 and sb.sb_mb is not None and sb.sb_mb.m_nextpkt is None
    sb.check()
    sbflush(sb)
    pool.check_leaks()
