"""struct sockbuf: the send and receive buffers of a socket.

``sys/kern/uipc_socket2.c`` (1.122, 2015; the loan-relevant routines are
unchanged in later snapshots): ``sbreserve``, ``sbspace``, ``sballoc`` /
``sbfree``, ``sbappendstream``, ``sbappendaddr``, ``sbcompress``, ``sbdrop``,
``sbdroprecord``, ``sbflush``.  Records are linked by ``m_nextpkt``; the
mbufs of one record by ``m_next``.

The two rules loaning depends on:

* ``sbcompress`` copies a small mbuf into the trailing space of the last
  one only if ``M_TRAILINGSPACE`` allows it, which is 0 for read-only
  (loaned) storage, and only mbufs of at most ``MCLBYTES / 4`` bytes are
  ever copied, so a loaned mbuf (>= 4096 bytes) is never copied either;
* ``sbdrop`` trims a partly acknowledged mbuf in place (``m_data += n``,
  ``m_len -= n``: the loan is kept) and frees the whole ones.
"""

from __future__ import annotations

import attrs

from uvmloan.errors import KernelAssertion

from .mbuf import (
    M_EOR,
    M_EXT,
    M_EXT_PAGES,
    M_TRAILINGSPACE,
    MCLBYTES,
    MLEN,
    MSIZE,
    MT_SONAME,
    Mbuf,
    MbufPool,
    gather,
    m_free,
    m_pieces,
)

# uipc_socket2.c: SB_MAX (256 KiB) and the adjusted limit sbreserve checks,
# sb_max_adj = sb_max * MCLBYTES / (MSIZE + MCLBYTES).
SB_MAX = 256 * 1024
SB_MAX_ADJ = SB_MAX * MCLBYTES // (MSIZE + MCLBYTES)

SB_LOCK = 0x01
SB_NOTIFY = 0x04


@attrs.define(slots=True, eq=False, repr=False)
class SockBuf:
    """``struct sockbuf``.  ``inject`` is the host's set of injected socket bugs."""

    pool: MbufPool
    name: str = "sb"
    sb_mb: Mbuf | None = None
    sb_mbtail: Mbuf | None = None
    sb_lastrecord: Mbuf | None = None
    sb_cc: int = 0
    sb_hiwat: int = 0
    sb_lowat: int = 0
    sb_mbcnt: int = 0
    sb_mbmax: int = 0
    sb_flags: int = 0
    inject: frozenset[str] | set[str] = frozenset()

    def __repr__(self) -> str:
        return f"<sockbuf {self.name} cc {self.sb_cc}/{self.sb_hiwat} mbcnt {self.sb_mbcnt}>"

    def mbufs(self) -> list[Mbuf]:
        """Every mbuf held, record by record."""
        out = []
        rec = self.sb_mb
        while rec is not None:
            m: Mbuf | None = rec
            while m is not None:
                out.append(m)
                m = m.m_next
            rec = rec.m_nextpkt
        return out

    def check(self) -> None:
        """KASSERT-style consistency: sb_cc and sb_mbcnt match the chain."""
        cc = mb = 0
        last = None
        for m in self.mbufs():
            cc += m.m_len
            mb += _mbcnt(m)
            last = m
        if cc != self.sb_cc or mb != self.sb_mbcnt:
            raise KernelAssertion(
                f"{self!r}: chain holds {cc} bytes / mbcnt {mb}, counters say "
                f"{self.sb_cc} / {self.sb_mbcnt}"
            )
        if self.sb_mb is not None and self.sb_mb.m_nextpkt is None and self.sb_mbtail is not last:
            raise KernelAssertion(f"{self!r}: sb_mbtail is not the last mbuf")


def _mbcnt(m: Mbuf) -> int:
    if m.m_flags & M_EXT:
        ref = m.m_ext_ref  # m.m_ext, inlined (every append and free counts)
        assert ref is not None and ref.m_ext_storage is not None
        return MSIZE + ref.m_ext_storage.ext_size
    return MSIZE


def sbreserve(sb: SockBuf, cc: int) -> bool:
    """Set the high-water mark; refused for 0 or above ``sb_max_adj``."""
    if cc <= 0 or cc > SB_MAX_ADJ:
        return False
    sb.sb_hiwat = cc
    sb.sb_mbmax = min(cc * 2, SB_MAX)
    sb.sb_lowat = min(sb.sb_lowat, cc)
    return True


def sbspace(sb: SockBuf) -> int:
    """``lmin(sb_hiwat - sb_cc, sb_mbmax - sb_mbcnt)`` (may be negative)."""
    return min(sb.sb_hiwat - sb.sb_cc, sb.sb_mbmax - sb.sb_mbcnt)


def sballoc(sb: SockBuf, m: Mbuf) -> None:
    sb.sb_cc += m.m_len
    # _mbcnt(m), inlined: every mbuf appended to or freed from a buffer
    if m.m_flags & M_EXT:
        ref = m.m_ext_ref
        assert ref is not None and ref.m_ext_storage is not None
        sb.sb_mbcnt += MSIZE + ref.m_ext_storage.ext_size
    else:
        sb.sb_mbcnt += MSIZE


def sbfree(sb: SockBuf, m: Mbuf) -> None:
    sb.sb_cc -= m.m_len
    if m.m_flags & M_EXT:  # _mbcnt(m), inlined
        ref = m.m_ext_ref
        assert ref is not None and ref.m_ext_storage is not None
        sb.sb_mbcnt -= MSIZE + ref.m_ext_storage.ext_size
    else:
        sb.sb_mbcnt -= MSIZE


def sbcompress(sb: SockBuf, m: Mbuf | None, n: Mbuf | None) -> None:
    """Append chain ``m`` after ``n`` (the tail), coalescing small mbufs."""
    eor = 0
    while m is not None:
        eor |= m.m_flags & M_EOR
        o = m.m_next if m.m_next is not None else n
        if m.m_len == 0 and (eor == 0 or (o is not None and o.m_type == m.m_type)):
            if sb.sb_lastrecord is m:
                sb.sb_lastrecord = m.m_next
            m = m_free(m)
            continue
        if (
            n is not None
            and not n.m_flags & M_EOR
            and m.m_len <= MCLBYTES // 4
            and m.m_len <= _trailing(sb, n)
            and n.m_type == m.m_type
        ):
            _copy_into_tail(n, m)
            sb.sb_cc += m.m_len
            m = m_free(m)
            continue
        if n is not None:
            n.m_next = m
        else:
            sb.sb_mb = m
        sb.sb_mbtail = m
        sballoc(sb, m)
        n = m
        m.m_flags &= ~M_EOR
        m = m.m_next
        n.m_next = None
    if eor and n is not None:
        n.m_flags |= eor


def _trailing(sb: SockBuf, n: Mbuf) -> int:
    if "sbcompress-merge-loaned" in sb.inject and n.m_flags & M_EXT_PAGES:
        # The injected bug: ignore that loaned storage is read-only and take
        # the rest of its last page for free space.
        ext = n.m_ext
        mach = n.pool.machine
        assert ext is not None and mach is not None
        ps = mach.page_size
        pgoff = ext.ext_buf % ps
        end = -(-(pgoff + ext.ext_size) // ps) * ps
        return end - (pgoff + n.m_data + n.m_len)
    return M_TRAILINGSPACE(n)


def _copy_into_tail(n: Mbuf, m: Mbuf) -> None:
    data = gather(m, m_pieces(m, 0, m.m_len))
    if m.m_flags & M_EXT_PAGES:
        # pinned storage copied into the kernel's cluster: Linux's deferred
        # copy (skb_zcopy_clear(skb, false)); its notification says COPIED
        mark = getattr(m.m_ext.ext_arg if m.m_ext is not None else None, "deferred_copy", None)
        if mark is not None:
            mark()
    if n.m_flags & M_EXT_PAGES:
        # Only reachable through the injected bug: the kernel writes into
        # the lent frames (what a real kernel would do through a writable
        # alias), changing bytes the loan promised to keep.
        mach = n.pool.machine
        assert mach is not None
        n.m_len += m.m_len
        pieces = m_pieces(n, n.m_len - m.m_len, m.m_len)
        frames = [p for p in pieces if isinstance(p, tuple)]
        mach.physmem.scatter(frames, data)
        return
    buf = n._kmem()
    start = n.m_data + n.m_len
    buf[start : start + m.m_len] = data
    n.m_len += m.m_len
    n.pool.charge_copy(m.m_len)


def sbappendstream(sb: SockBuf, m: Mbuf) -> None:
    """Append data to a stream socket's single record (TCP)."""
    if m.m_nextpkt is not None:
        raise KernelAssertion("sbappendstream: m_nextpkt set")
    if sb.sb_mb is not None and sb.sb_mb.m_nextpkt is not None:
        raise KernelAssertion("sbappendstream: buffer holds more than one record")
    sbcompress(sb, m, sb.sb_mbtail)
    sb.sb_lastrecord = sb.sb_mb


sbappend = sbappendstream
"""For the stream sockets modelled, ``sbappend`` appends to the last record too."""


def sbappendaddr(sb: SockBuf, addr: bytes, m0: Mbuf) -> bool:
    """A datagram record: an ``MT_SONAME`` mbuf with the sender's address, then the data.

    Refused (False, the caller drops the datagram) when it does not fit
    ``sbspace``, exactly as NetBSD counts: the data bytes plus the address.
    """
    if len(addr) > MLEN:
        raise KernelAssertion("sbappendaddr: address too long")
    space = len(addr)
    m: Mbuf | None = m0
    while m is not None:
        space += m.m_len
        m = m.m_next
    if space > sbspace(sb):
        return False
    a = sb.pool.m_get(MT_SONAME)
    assert a.m_dat is not None
    a.m_dat[0 : len(addr)] = addr
    a.m_len = len(addr)
    a.m_next = m0
    m = a
    while m is not None:
        sballoc(sb, m)
        m = m.m_next
    # SBLINKRECORD
    if sb.sb_lastrecord is not None:
        sb.sb_lastrecord.m_nextpkt = a
    else:
        sb.sb_mb = a
    sb.sb_lastrecord = a
    tail = a
    while tail.m_next is not None:
        tail = tail.m_next
    sb.sb_mbtail = tail
    return True


def sbdrop(sb: SockBuf, length: int) -> None:
    """Drop ``length`` bytes from the front: trim in place, free whole mbufs."""
    m = sb.sb_mb
    nxt = m.m_nextpkt if m is not None else None
    while length > 0:
        if m is None:
            if nxt is None:
                raise KernelAssertion(f"sbdrop({sb!r}, {length}): cc={sb.sb_cc}")
            m = nxt
            nxt = m.m_nextpkt
            continue
        if m.m_len > length:
            if "free-loaned-early" in sb.inject and m.m_flags & M_EXT_PAGES and m.m_data == 0:
                _drop_ref_early(m)
            m.m_len -= length
            m.m_data += length
            sb.sb_cc -= length
            break
        length -= m.m_len
        sbfree(sb, m)
        m = m_free(m)
    while m is not None and m.m_len == 0:
        sbfree(sb, m)
        m = m_free(m)
    if m is not None:
        sb.sb_mb = m
        m.m_nextpkt = nxt
    else:
        sb.sb_mb = nxt
    m = sb.sb_mb
    if m is None:
        sb.sb_mbtail = None
        sb.sb_lastrecord = None
    elif m.m_nextpkt is None:
        sb.sb_lastrecord = m


def _drop_ref_early(m: Mbuf) -> None:
    """The injected bug: the loan's reference goes with the first acknowledged byte."""
    ext = m.m_ext
    assert ext is not None
    ext.ext_refcnt -= 1
    if ext.ext_refcnt == 0 and ext.ext_free is not None:
        ext.ext_free(m, ext.ext_buf, ext.ext_size, ext.ext_arg)


def sbdroprecord(sb: SockBuf) -> None:
    """Drop the first record."""
    m = sb.sb_mb
    if m is not None:
        sb.sb_mb = m.m_nextpkt
        cur: Mbuf | None = m
        while cur is not None:
            sbfree(sb, cur)
            cur = m_free(cur)
    if sb.sb_mb is None:
        sb.sb_mbtail = None
        sb.sb_lastrecord = None


def sbflush(sb: SockBuf) -> None:
    """Free everything (connection teardown)."""
    while sb.sb_mbcnt:
        if sb.sb_cc:
            sbdrop(sb, sb.sb_cc)
        else:
            sbdroprecord(sb)
    if sb.sb_cc or sb.sb_mb is not None:
        raise KernelAssertion(f"sbflush: {sb!r} not empty")


__all__ = [
    "SB_MAX",
    "SB_MAX_ADJ",
    "SockBuf",
    "sballoc",
    "sbappend",
    "sbappendaddr",
    "sbappendstream",
    "sbcompress",
    "sbdrop",
    "sbdroprecord",
    "sbflush",
    "sbfree",
    "sbreserve",
    "sbspace",
]
