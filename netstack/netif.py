"""struct ifnet: transmit queue, gather "DMA", checksum offload, interrupts.

Transmit: ``if_output`` (IFQ_ENQUEUE onto ``if_snd``, drop-tail at
``ifq_maxlen``, ``ifq_drops``) and, when the running activity finishes,
``if_start``: the NIC takes the first packet, gathers the frame from the
storage the mbuf chain references (``dma_read``: runs of lent pages go to
the C gather as a flat ``array('q')`` of page triples, kernel memory is
copied) — summing the transport segment in the same pass when a sum is
owed (checksum offload, uncharged; or the CPU's deferred
``in_delayed_cksum``, charged in ``ip_output``) and writing the field — and
puts it on the wire.  When the last bit has left, the transmit completion interrupt (a
kernel activity on ``intr_cpu``, charged ``intr_ns``) frees the chain with
``m_freem``: that is what releases a UDP datagram's loaned pages.  The
transmit ring has ``tx_ring`` descriptors (default 1: one frame in the NIC at
a time, the next started from the completion).  With more, ``if_start``
posts frames until the ring is full and the NIC sends them back to back
without the CPU, so the wire stays busy while the CPU is (a long ``sosend``
copy, say) as far as the ring reaches; each completion interrupt reclaims
one descriptor and restarts the queue.  The NIC fetches a frame's bytes
when its descriptor is posted (``dma_read`` at ``if_start``).

Receive: the NIC DMAs the frame into cluster mbufs (``MCLBYTES`` each; not
charged: no CPU touches the bytes), raises the receive interrupt (a kernel
activity, ``intr_ns``) and hands the chain to ``ip_input``.  With checksum
offload the NIC also verifies the TCP/UDP checksum of an unfragmented
packet and reports it in ``csum_flags`` (``M_CSUM_TCP_UDP_BAD`` when bad).

Counters are ``struct if_data``'s (``net/if.h``): ``ifi_ipackets``,
``ifi_ierrors``, ``ifi_opackets``, ``ifi_oerrors``, ``ifi_collisions``,
``ifi_ibytes``, ``ifi_obytes``, ``ifi_iqdrops``, plus ``if_snd``'s
``ifq_drops``.  Links are full duplex, so ``ifi_collisions`` stays 0;
``ifi_ierrors`` counts frames the NIC refuses (longer
than the MTU, or empty); nothing in the model refuses a frame the NIC has
accepted for transmit, so ``ifi_oerrors`` stays 0 unless a driver error is
injected by a test.
"""

from __future__ import annotations

import functools
import struct
from array import array
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from uvmloan.errors import KernelAssertion

from .ip import ENOBUFS, M_CSUM_TCP_UDP_BAD, M_CSUM_TCPv4, M_CSUM_UDPv4
from .link import Channel, FrameMeta, Link
from .mbuf import M_EXT, M_EXT_PAGES, M_PKTHDR, MCLBYTES, Mbuf, m_freem, m_length
from .wire import (
    IP_MF,
    IP_OFFMASK,
    IPPROTO_TCP,
    IPPROTO_UDP,
    fold,
    pseudo_sum,
)
from .zerocopy_hazard import note_frame

if TYPE_CHECKING:
    from uvmloan.physmem import PhysMem

    from .network import Host


IfTap = Callable[[int, bytes | bytearray, FrameMeta], None]

_ADDRS = struct.Struct("!II")  # ip_src, ip_dst
_CSUM = struct.Struct("!H")

# FrameMeta is frozen: the two a transmitted frame can have, built once
_META_LOANED = FrameMeta(loaned=True)
_META_PLAIN = FrameMeta(loaned=False)


def dma_read(pm: PhysMem, ps: int, m: Mbuf) -> tuple[bytearray, bool]:
    """Read the chain into a frame; fill the transport checksum if owed.

    One walk of the chain lists its data as the NIC reads it: a view of
    each kernel-memory mbuf's bytes, and runs of loaned page pieces as flat
    ``array('q')``s of (frame, offset, length) triples (no Python object
    per piece); ``PhysMem.gather_frame`` then builds the frame from them in
    one C call, summing the transport segment as each part is written when
    a checksum is owed (offload, or the CPU's deferred sum).  Returns the
    frame and whether any of it came from loaned pages.
    """
    n = m.m_pkthdr_len if m.m_flags & M_PKTHDR else m_length(m)
    fl = m.csum_flags
    summing = bool(fl & (M_CSUM_TCPv4 | M_CSUM_UDPv4))
    # the transport segment starts after the IP header (in the first mbuf,
    # internal data or a cluster: its storage is read once, here)
    kb: bytearray | None = None
    hl = 0
    if summing:
        kb = m.m_dat if not m.m_flags & M_EXT else m._kmem()
        assert kb is not None
        hl = (kb[m.m_data] & 15) << 2
    parts: list[memoryview | array[int]] = []
    loaned = False
    run: array[int] | None = None  # the run of page pieces being built (in parts)
    cur: Mbuf | None = m
    while cur is not None:
        ln = cur.m_len
        if ln:
            if cur.m_flags & M_EXT_PAGES:
                ext = cur.m_ext
                assert ext is not None
                # the storage's per-page triples, sliced to this mbuf's
                # bytes: the first piece starts at its offset, the last
                # ends at the data's end (C-level slicing, no loop per page)
                va = ext.ext_buf % ps + cur.m_data
                i0, o0 = divmod(va, ps)
                i1 = (va + ln - 1) // ps
                piece = ext.page_triples(ps)[3 * i0 : 3 * i1 + 3]
                if len(piece) != 3 * (i1 - i0 + 1):
                    raise KernelAssertion(f"DMA read of {cur!r}: data past its {ext!r}")
                piece[1] = o0
                if i0 == i1:
                    piece[2] = ln
                else:
                    piece[2] = ps - o0
                    piece[-1] = va + ln - i1 * ps
                if run is None:
                    run = piece
                    parts.append(piece)
                else:
                    run += piece  # in place: the array already in parts grows
                loaned = True
            else:
                run = None
                d = cur.m_data
                buf = cur.m_dat if not cur.m_flags & M_EXT else cur._kmem()
                assert buf is not None
                parts.append(memoryview(buf)[d : d + ln])
        cur = cur.m_next
    if not summing:
        return pm.gather_frame(parts, n, -1)[0], loaned
    # in_delayed_cksum's (or the NIC's) sum over the pseudo-header and the
    # segment, whose checksum field is still zero: the pseudo-header's
    # words (from the IP header, in the first mbuf) go to gather_frame as
    # its initial value, so the one C call returns the whole sum
    if m.m_len >= hl:
        assert kb is not None
        d = m.m_data
        p = kb[d + 9]
        src, dst = _ADDRS.unpack_from(kb, d + 12)
        pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + p + n - hl
        frame, s = pm.gather_frame(parts, n, hl, pseudo)
    else:
        # (an IP header split across mbufs, which ip_output never builds:
        # read it from the frame)
        frame, s = pm.gather_frame(parts, n, hl)
        p = frame[9]
        src, dst = _ADDRS.unpack_from(frame, 12)
        s = fold(s + pseudo_sum(src, dst, p, n - hl))
    c = ~s & 0xFFFF
    if c == 0 and p == IPPROTO_UDP:
        c = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    _CSUM.pack_into(frame, hl + m.csum_data, c)
    return frame, loaned


@attrs.define(eq=False)
class IfData:
    """struct if_data counters (the ``ifi_`` prefix dropped)."""

    ipackets: int = 0
    ierrors: int = 0
    opackets: int = 0
    oerrors: int = 0
    collisions: int = 0
    ibytes: int = 0
    obytes: int = 0
    iqdrops: int = 0


class Netif:
    """One interface of a host, attached to one end of a link."""

    def __init__(
        self,
        host: Host,
        name: str,
        link: Link,
        addr: int,
        mtu: int,
        *,
        ifq_maxlen: int,
        csum_offload: bool = False,
        intr_cpu: int = 0,
        tx_ring: int = 1,
    ) -> None:
        self.host = host
        self.if_xname = name
        self.link = link
        self.addr = addr
        self.if_mtu = mtu
        self.csum_offload = csum_offload
        # Scatter/gather DMA (Linux NETIF_F_SG; the host profile's
        # nic.sg): the model's driver gathers mbuf chains either way; False
        # makes MSG_ZEROCOPY copy instead, as Linux does without NETIF_F_SG.
        self.sg = host.machine.profile.nic.sg
        self.intr_cpu = intr_cpu
        self.if_data = IfData()
        self.if_snd: deque[Mbuf] = deque()
        self.ifq_maxlen = ifq_maxlen
        self.ifq_drops = 0
        self.channel: Channel | None = None
        self.taps: list[IfTap] = []
        self.tx_ring = tx_ring
        self._tx_posted = 0  # descriptors holding a frame the NIC has not sent yet
        self._start_pending = False

    # ----------------------------------------------------------- transmit

    def if_output(self, m: Mbuf) -> int:
        """IFQ_ENQUEUE ``m`` (a whole IP packet); 0 or ENOBUFS (``m`` freed)."""
        if len(self.if_snd) >= self.ifq_maxlen:
            self.ifq_drops += 1
            m_freem(m)
            return ENOBUFS
        self.if_snd.append(m)
        if self._tx_posted < self.tx_ring and not self._start_pending:
            self._start_pending = True
            self.host.emit(self.if_start)
        return 0

    def if_start(self) -> None:
        """The driver's start routine: post frames while the ring has room."""
        self._start_pending = False
        ch = self.channel
        assert ch is not None
        snd = self.if_snd
        d = self.if_data
        mach = self.host.machine
        pm = mach.physmem
        ps = mach.profile.page_size
        while snd and self._tx_posted < self.tx_ring:
            m = snd.popleft()
            self._tx_posted += 1
            frame, loaned = dma_read(pm, ps, m)
            if loaned:
                # pinned (MSG_ZEROCOPY) storage: compare what left with what
                # the send took (instrumentation, zerocopy_hazard)
                note_frame(m, frame)
            d.opackets += 1
            d.obytes += len(frame)
            meta = _META_LOANED if loaned else _META_PLAIN
            if self.taps:
                now = self.host.net.sched.now
                for tap in self.taps:
                    tap(now, frame, meta)
            # the completion interrupt as the link will call it: _tx_done's
            # kernel activity, without _tx_done's own frame
            done = functools.partial(
                self.host.kernel, functools.partial(self._txintr, m), self.intr_cpu
            )
            if not ch.send(frame, meta, done):
                # the link's queue was full and dropped it: the descriptor
                # completes all the same
                self._tx_done(m)

    def _tx_done(self, m: Mbuf) -> None:
        self.host.kernel(functools.partial(self._txintr, m), self.intr_cpu)

    def _txintr(self, m: Mbuf) -> None:
        """Transmit completion interrupt: the frame has left, free the chain."""
        stack = self.host.stack
        plat = stack.plat
        plat.cpus[plat.cur].clock += stack.intr_ns
        m_freem(m)
        self._tx_posted -= 1
        if self.if_snd and not self._start_pending:
            self._start_pending = True
            self.host.emit(self.if_start)

    # ------------------------------------------------------------ receive

    def frame_arrived(self, frame: bytearray, meta: FrameMeta) -> None:
        """The last bit of a frame arrived: receive interrupt."""
        self.host.kernel(functools.partial(self._rxintr, frame, meta), self.intr_cpu)

    def _rxintr(self, frame: bytearray, meta: FrameMeta) -> None:
        host = self.host
        stack = host.stack
        plat = stack.plat
        plat.cpus[plat.cur].clock += stack.intr_ns
        d = self.if_data
        n = len(frame)
        if n > self.if_mtu or n == 0:
            d.ierrors += 1
            return
        d.ipackets += 1
        d.ibytes += n
        if self.taps:
            now = host.net.sched.now
            for tap in self.taps:
                tap(now, frame, meta)
        m = self._rx_dma(frame)
        if self.csum_offload:
            self._rx_csum(m, frame)
        stack.ip_input(m, self)

    def _rx_dma(self, frame: bytearray) -> Mbuf:
        """The NIC wrote the frame into receive-ring clusters."""
        pool = self.host.stack.mbpool
        top = pool.m_getcl(pkthdr=True)
        top.m_pkthdr_rcvif = self
        n = len(frame)
        top.m_pkthdr_len = n
        cur = top
        pos = 0
        view = memoryview(frame)  # slices of it copy once, into the cluster
        while True:
            ext = cur.m_ext_storage  # a fresh cluster: its own storage
            assert ext is not None and ext.ext_cl is not None
            take = n - pos if n - pos < MCLBYTES else MCLBYTES
            ext.ext_cl[:take] = view[pos : pos + take]
            cur.m_len = take
            pos += take
            if pos >= n:
                return top
            nxt = pool.m_getcl(pkthdr=False)
            cur.m_next = nxt
            cur = nxt

    def _rx_csum(self, m: Mbuf, frame: bytearray) -> None:
        """Receive checksum offload on an unfragmented TCP or UDP packet."""
        hl = (frame[0] & 15) << 2
        if frame[0] >> 4 != 4 or hl < 20 or len(frame) < hl:
            return
        p = frame[9]
        ipoff, = struct.unpack_from("!H", frame, 6)
        if p not in (IPPROTO_TCP, IPPROTO_UDP) or ipoff & (IP_MF | IP_OFFMASK):
            return
        iplen, = struct.unpack_from("!H", frame, 2)
        if iplen > len(frame) or iplen < hl:
            return
        seg = memoryview(frame)[hl:iplen]
        if p == IPPROTO_UDP and len(seg) >= 8 and seg[6] == 0 and seg[7] == 0:
            return  # no UDP checksum to verify
        src, dst = struct.unpack_from("!II", frame, 12)
        pm = self.host.machine.physmem
        s = pm.cksum_bytes(seg, pseudo_sum(src, dst, p, len(seg)))
        m.csum_flags = (M_CSUM_TCPv4 if p == IPPROTO_TCP else M_CSUM_UDPv4) | (
            0 if s == 0xFFFF else M_CSUM_TCP_UDP_BAD
        )

    def add_tap(self, tap: IfTap) -> None:
        self.taps.append(tap)

    def remove_tap(self, tap: IfTap) -> None:
        self.taps.remove(tap)

    def __repr__(self) -> str:
        from .wire import inet_ntoa

        return f"<Netif {self.host.name}:{self.if_xname} {inet_ntoa(self.addr)} mtu {self.if_mtu}>"
