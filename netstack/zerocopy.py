"""``linux-zerocopy``: Linux's MSG_ZEROCOPY as a send policy.

Read in torvalds/linux (stored snapshots; commit ids in specs/zerocopy.md):
``Documentation/networking/msg_zerocopy.rst``; ``net/core/skbuff.c``
``mm_account_pinned_pages``, ``msg_zerocopy_alloc``,
``msg_zerocopy_realloc``, ``skb_zerocopy_notify_extend``,
``__msg_zerocopy_callback``, ``msg_zerocopy_callback``,
``msg_zerocopy_put_abort``; ``net/ipv4/tcp.c`` ``tcp_sendmsg_locked``;
``net/ipv4/ip_output.c`` ``__ip_append_data``; ``net/core/sock.c``
``SO_ZEROCOPY``; ``include/uapi/linux/errqueue.h``.

The contract: a socket opts in with ``setsockopt(SOL_SOCKET, SO_ZEROCOPY,
1)`` and a send passes ``MSG_ZEROCOPY``; without both it copies.  Each
successful such call takes the next value of the socket's 32-bit counter
(``sk_zckey``); the pages behind its bytes are pinned (``uvm_vslock``: a
wire count, nothing write-protected, the user mapping stays writable, no
kernel VA: the mbuf's external storage names the frames and the NIC reads
them); when the last mbuf referencing them is freed (TCP: acknowledged;
UDP: transmit completion) they are unpinned and, when the last storage of
the call's ``ubuf_info`` goes, a notification ``[ee_info, ee_data]`` is
queued on the socket's error queue, merged into the tail notification when
it extends its range.  The sender reads it with
``UserSocket.recv_errqueue()`` (``recvmsg(MSG_ERRQUEUE)``).

A buffer overwritten while its send is in flight changes the bytes on the
wire: DMA reads whatever the frames hold at each transmission.  That is
modelled as it is, and counted by :mod:`netstack.zerocopy_hazard`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from uvmloan.errors import KernelAssertion, UVMError
from uvmloan.trace import Event
from uvmloan.vslock import uvm_vslock, uvm_vsunlock_pages

from .mbuf import M_EXT_PAGES, M_EXT_ROMAP, MEXTADD, Mbuf
from .policy import SendPolicy, register_policy
from .sockerr import EINVAL, ENOBUFS, EWOULDBLOCK, SocketError

if TYPE_CHECKING:
    from uvmloan.page import Page
    from uvmloan.profile import CostModel

    from .socket import Socket, SocketLayer, Uio

# include/uapi/linux/socket.h, asm-generic/socket.h, errqueue.h
MSG_ZEROCOPY = 0x4000000
MSG_ERRQUEUE = 0x2000
SO_ZEROCOPY = 60
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1
# skbuff.c msg_zerocopy_realloc: "limit to a few TSO", and the u16 len.
ZC_BYTE_LIMIT = 1 << 19
USHRT_MAX = 0xFFFF
U32 = 0xFFFFFFFF


# ----------------------------------------------------------------- costs


@attrs.frozen(slots=True)
class ZerocopyCosts:
    """What the zerocopy path charges, in nanoseconds."""

    pin_page_ns: int  # get_user_pages: a software page walk and a refcount
    unpin_page_ns: int  # put_page / unpin: the refcount drop
    notification_ns: int  # sock_omalloc of the notification skb
    errqueue_ns: int  # one recvmsg(MSG_ERRQUEUE) system call


def zerocopy_costs(costs: CostModel) -> ZerocopyCosts:
    """The one place the cost model's fields are mapped to zerocopy's costs.

    The cost model has no atomic or slab-allocation figure, so some are
    stand-ins: a pin is a page walk (``page_walk_ns``) plus an atomic
    refcount with its bookkeeping (``pte_update_ns``, an atomic swap and pv
    bookkeeping); an unpin is that atomic; the notification skb is a small
    allocation (``page_alloc_ns``).  The error-queue read is a system call
    (``syscall_ns``) that dequeues and frees that skb (``page_alloc_ns``
    again) and copies the ``sock_extended_err`` out.
    """
    return ZerocopyCosts(
        pin_page_ns=costs.page_walk_ns + costs.pte_update_ns,
        unpin_page_ns=costs.pte_update_ns,
        notification_ns=costs.page_alloc_ns,
        errqueue_ns=costs.syscall_ns + costs.page_alloc_ns,
    )


# ---------------------------------------------------------------- events


@attrs.frozen(slots=True)
class ZcPin(Event):
    """``__zerocopy_sg_from_iter``: the pages behind one mbuf's bytes pinned."""

    KIND: ClassVar[str] = "zerocopy pin"
    zckey: int  # the ubuf_info's first id
    va: int
    npages: int
    nbytes: int


@attrs.frozen(slots=True)
class ZcUnpin(Event):
    """The last mbuf referencing the storage was freed: its pages unpinned."""

    KIND: ClassVar[str] = "zerocopy unpin"
    zckey: int
    npages: int
    nbytes: int


@attrs.frozen(slots=True)
class ZcCompletion(Event):
    """``__msg_zerocopy_callback``: a notification queued or merged into the tail."""

    KIND: ClassVar[str] = "zerocopy completion"
    lo: int
    hi: int
    copied: bool
    merged: bool

    def counter_keys(self) -> tuple[str, ...]:
        return (self.KIND, "zerocopy copied") if self.copied else (self.KIND,)


@attrs.frozen(slots=True)
class ZcNoBufs(Event):
    """A MSG_ZEROCOPY send refused with ENOBUFS (optmem or RLIMIT_MEMLOCK)."""

    KIND: ClassVar[str] = "zerocopy enobufs"
    reason: str


# ------------------------------------------------------------- structures


@attrs.frozen(slots=True)
class ZerocopyNotification:
    """One ``struct sock_extended_err`` read from the error queue."""

    ee_errno: int
    ee_origin: int
    ee_type: int
    ee_code: int
    ee_info: int  # first send of the range
    ee_data: int  # last send of the range (inclusive)

    @property
    def lo(self) -> int:
        return self.ee_info

    @property
    def hi(self) -> int:
        return self.ee_data

    @property
    def copied(self) -> bool:
        return bool(self.ee_code & SO_EE_CODE_ZEROCOPY_COPIED)

    @property
    def count(self) -> int:
        """Send calls covered (the 32-bit range may wrap)."""
        return ((self.ee_data - self.ee_info) & U32) + 1

    def covers(self, key: int) -> bool:
        return ((key - self.ee_info) & U32) <= ((self.ee_data - self.ee_info) & U32)


@attrs.define(slots=True, eq=False)
class _Queued:
    """A notification skb on ``sk_error_queue`` (its range may still grow)."""

    lo: int
    hi: int
    code: int


@attrs.define(slots=True, eq=False)
class UbufInfo:
    """``struct ubuf_info_msgzc``: one or more consecutive send calls' pages."""

    so: Socket = attrs.field(repr=False)
    id: int
    len: int
    bytelen: int
    user: Any
    num_pg: int
    zerocopy: bool = True
    refcnt: int = 1
    done: bool = False


@attrs.define(slots=True, eq=False)
class ZcSock:
    """Per socket: ``SOCK_ZEROCOPY``, ``sk_zckey``, ``sk_error_queue``, ``sk_omem_alloc``."""

    enabled: bool = False
    zckey: int = 0
    errq: list[_Queued] = attrs.field(factory=list)
    omem: int = 0
    truesize: int = 0


@attrs.define(slots=True, eq=False)
class ZcHost:
    """Per host: pinned-page accounting per user, live pinned storage, hazard counts."""

    locked_vm: dict[Any, int] = attrs.field(factory=dict)
    chunks: dict[ZcChunk, None] = attrs.field(factory=dict)
    tx_modified: int = 0  # segments that left with bytes differing from the send's
    tx_modified_bytes: int = 0


@attrs.define(slots=True, eq=False)
class ZcChunk:
    """The ``ext_arg`` of one mbuf's pinned storage.

    ``snap`` is instrumentation only (not charged, not a kernel structure):
    the bytes the frames held when the send took them, so each transmit
    read can be compared (netstack.zerocopy_hazard).
    """

    layer: SocketLayer = attrs.field(repr=False)
    uarg: UbufInfo = attrs.field(repr=False)
    pages: list[Page] = attrs.field(repr=False)
    va: int
    size: int
    snap: bytes = attrs.field(repr=False)
    copied: bool = False
    released: bool = False

    def deferred_copy(self) -> None:
        """The kernel copied these bytes into its own memory (sbcompress)."""
        self.copied = True


def zc_sock(so: Socket) -> ZcSock:
    st = so.so_zc
    if st is None:
        st = so.so_zc = ZcSock()
    assert isinstance(st, ZcSock)
    return st


def zc_host(layer: SocketLayer) -> ZcHost:
    st = layer.zerocopy
    if st is None:
        st = layer.zerocopy = ZcHost()
    assert isinstance(st, ZcHost)
    return st


def is_zc_storage(m: Mbuf) -> bool:
    """Pinned user pages: ``M_EXT_PAGES`` without a read-only kernel mapping."""
    return (m.m_flags & (M_EXT_PAGES | M_EXT_ROMAP)) == M_EXT_PAGES and isinstance(
        m.m_ext.ext_arg if m.m_ext is not None else None, ZcChunk
    )


def _emit(layer: SocketLayer, make: Any) -> None:
    tr = layer.machine.tracer
    if tr.on:
        cpu = layer.machine.platform.curcpu()
        tr.emit(make(cpu.clock, cpu.index, "kernel"))


def _charge(layer: SocketLayer, ns: int) -> None:
    if ns:
        layer.machine.platform.charge(ns)


# -------------------------------------------------------------- the policy


@attrs.define(slots=True, eq=False)
class _Call:
    uarg: UbufInfo
    zc: bool


@register_policy
@attrs.frozen(slots=True)
class LinuxZerocopyPolicy(SendPolicy):
    """MSG_ZEROCOPY; its data are the Linux limits that make a send ENOBUFS."""

    name: ClassVar[str] = "linux-zerocopy"
    # net.core.optmem_max: sizeof(long) * (2 * UIO_MAXIOV + 512) = 20480 on
    # LP64 (sock.c sysctl_optmem_max before 6.9).
    optmem_max: int = 20480
    # truesize of the notification skb (alloc_skb(0)): a 256-byte sk_buff
    # plus a 512-byte kmalloc for the shared info [computed, not measured].
    notif_truesize: int = 768
    # RLIMIT_MEMLOCK: the 8 MiB default of current kernels; CAP_IPC_LOCK
    # skips the check (mm_account_pinned_pages).
    memlock_limit: int = 8 << 20
    cap_ipc_lock: bool = False
    # Bytes pinned into one mbuf: MAX_SKB_FRAGS (17) pages holds 64 KiB at
    # any alignment, as SOCK_LOAN_CHUNK does for loans.
    chunk: int = 65536

    def setsockopt_zerocopy(self, so: Socket, value: int) -> None:
        """sock.c: TCP and UDP only (both are), 0 or 1 else EINVAL."""
        if value not in (0, 1) or isinstance(value, bool):
            raise SocketError(EINVAL, f"SO_ZEROCOPY takes 0 or 1, not {value!r}")
        zc_sock(so).enabled = bool(value)

    # ---------------------------------------------------- one send call

    def begin(self, so: Socket, uio: Uio, addr: Any, flags: int) -> Any:
        if not flags & MSG_ZEROCOPY or uio.uio_resid == 0:
            return None
        st = zc_sock(so)
        if not st.enabled:
            return None  # the flag without SO_ZEROCOPY is ignored
        from .socket import PR_ATOMIC

        stream = not so.proto.pr_flags & PR_ATOMIC
        size = uio.uio_resid
        uarg = self._realloc(so, st, uio, size, stream)
        zc = uio.vmmap is not None and _route_can_zc(so, addr, size, stream)
        if not zc:
            uarg.zerocopy = False  # the data is copied; the notification says so
        return _Call(uarg, zc)

    def _account(self, so: Socket, uio: Uio, size: int) -> int | None:
        """``mm_account_pinned_pages``: (size >> PAGE_SHIFT) + 2 pages, or None."""
        if self.cap_ipc_lock or not size:
            return 0
        ps = so.machine.page_size
        num_pg = size // ps + 2
        host = zc_host(so.layer)
        user = uio.proc
        if host.locked_vm.get(user, 0) + num_pg > self.memlock_limit // ps:
            return None
        host.locked_vm[user] = host.locked_vm.get(user, 0) + num_pg
        return num_pg

    def _nobufs(self, so: Socket, why: str) -> SocketError:
        _emit(so.layer, lambda t, c, s: ZcNoBufs(t, c, s, why))
        return SocketError(ENOBUFS, f"MSG_ZEROCOPY: {why}")

    def _realloc(self, so: Socket, st: ZcSock, uio: Uio, size: int, stream: bool) -> UbufInfo:
        """``msg_zerocopy_realloc``: extend the unsent tail's ubuf_info (TCP) or allocate."""
        prev = _tail_uarg(so) if stream else None
        if prev is not None:
            bytelen = prev.bytelen + size
            if (
                prev.len < USHRT_MAX - 1
                and bytelen <= ZC_BYTE_LIMIT
                and (prev.id + prev.len) & U32 == st.zckey
            ):
                    n = self._account(so, uio, size)
                    if n is None:
                        raise self._nobufs(so, "RLIMIT_MEMLOCK exceeded")
                    prev.num_pg += n
                    prev.len += 1
                    prev.bytelen = bytelen
                    st.zckey = (st.zckey + 1) & U32
                    prev.refcnt += 1  # net_zcopy_get: the call's reference
                    return prev
        # msg_zerocopy_alloc: sock_omalloc(sk, 0) refuses at optmem_max
        if st.omem >= self.optmem_max:
            raise self._nobufs(so, f"optmem {st.omem} >= optmem_max {self.optmem_max}")
        n = self._account(so, uio, size)
        if n is None:
            raise self._nobufs(so, "RLIMIT_MEMLOCK exceeded")
        st.omem += self.notif_truesize
        st.truesize = self.notif_truesize
        layer = so.layer
        _charge(layer, zerocopy_costs(layer.machine.profile.costs).notification_ns)
        uarg = UbufInfo(so, st.zckey, 1, size, uio.proc, n)
        st.zckey = (st.zckey + 1) & U32
        return uarg

    def take(self, so: Socket, uio: Uio, m: Mbuf, space: int, call: Any) -> int:
        if call is None or not call.zc:
            return 0
        assert isinstance(call, _Call) and uio.vmmap is not None
        layer = so.layer
        mach = layer.machine
        ps = mach.page_size
        n = min(space, uio.iov_len, self.chunk)
        if n <= 0:
            return 0
        base = uio.iov_base
        try:
            pages = uvm_vslock(uio.vmmap, base, n)
        except UVMError:
            return 0  # the copy path reports the EFAULT
        costs = zerocopy_costs(mach.profile.costs)
        _charge(layer, len(pages) * costs.pin_page_ns)
        off = base % ps
        pieces = []
        left, pos = n, off
        for pg in pages:
            take = min(ps - pos, left)
            pieces.append((pg.frame, pos, take))
            left -= take
            pos = 0
        snap = mach.physmem.gather(pieces)  # instrumentation: not charged
        uarg = call.uarg
        chunk = ZcChunk(layer, uarg, pages, base, n, snap)
        ext = MEXTADD(m, off, n, zc_free, chunk)
        ext.ext_pgs = pages
        m.m_flags |= M_EXT_PAGES
        uarg.refcnt += 1  # skb_zcopy_set: the storage's reference
        zc_host(layer).chunks[chunk] = None
        uio.iov_base += n
        uio.iov_len -= n
        _emit(layer, lambda t, c, s: ZcPin(t, c, s, uarg.id, base, len(pages), n))
        return n

    def end(self, so: Socket, call: Any, sent: int) -> None:
        if call is None:
            return
        assert isinstance(call, _Call)
        if sent:
            net_zcopy_put(call.uarg, True)
        else:
            msg_zerocopy_put_abort(call.uarg)


def _route_can_zc(so: Socket, addr: Any, size: int, stream: bool) -> bool:
    """TCP: ``sk_route_caps & NETIF_F_SG``; UDP also CHECKSUM_PARTIAL (offload,
    no fragmentation), else ``uarg->zerocopy = 0`` and the data is copied."""
    inp = so.so_pcb
    dst = addr[0] if addr is not None else getattr(inp, "faddr", 0)
    stack = getattr(so.proto, "table", None)
    ifp = stack.stack.route(dst) if stack is not None else None
    if ifp is None:
        return False
    if stream:
        return bool(ifp.sg)
    # __ip_append_data: length (UDP header included) + IP header <= mtu
    return bool(ifp.sg and ifp.csum_offload and size + 8 + 20 <= ifp.if_mtu)


def _tail_uarg(so: Socket) -> UbufInfo | None:
    """The ubuf_info of the send buffer's tail if it is still unsent (the
    write queue's tail skb of ``tcp_sendmsg_locked``)."""
    tail = so.so_snd.sb_mbtail
    if tail is None or not is_zc_storage(tail):
        return None
    unsent = getattr(so.proto, "unsent", None)
    if unsent is None or tail.m_len > unsent(so):
        return None
    ext = tail.m_ext
    assert ext is not None
    chunk = ext.ext_arg
    assert isinstance(chunk, ZcChunk)
    return None if chunk.uarg.done else chunk.uarg


def zc_free(m: Mbuf, buf: int, size: int, arg: Any) -> None:
    """``ext_free`` of pinned storage: unpin, return the mbuf, drop the uarg's ref."""
    chunk: ZcChunk = arg
    if chunk.released:
        raise KernelAssertion(f"zc_free: {m!r} storage already released")
    layer = chunk.layer
    uvm_vsunlock_pages(chunk.pages)
    _charge(layer, len(chunk.pages) * zerocopy_costs(layer.machine.profile.costs).unpin_page_ns)
    chunk.released = True
    zc_host(layer).chunks.pop(chunk, None)
    m.pool.pool_cache_put(m)
    uarg = chunk.uarg
    _emit(layer, lambda t, c, s: ZcUnpin(t, c, s, uarg.id, len(chunk.pages), chunk.size))
    net_zcopy_put(uarg, not chunk.copied)


def net_zcopy_put(uarg: UbufInfo, success: bool) -> None:
    """``msg_zerocopy_callback``: zerocopy &= success; the last ref completes."""
    uarg.zerocopy = uarg.zerocopy and success
    if uarg.refcnt <= 0:
        raise KernelAssertion(f"ubuf_info {uarg.id}: refcount underflow")
    uarg.refcnt -= 1
    if uarg.refcnt == 0:
        _msg_zerocopy_callback(uarg)


def msg_zerocopy_put_abort(uarg: UbufInfo) -> None:
    """``msg_zerocopy_put_abort(uarg, true)``: the call sent nothing."""
    st = zc_sock(uarg.so)
    st.zckey = (st.zckey - 1) & U32
    uarg.len -= 1
    net_zcopy_put(uarg, True)


def _msg_zerocopy_callback(uarg: UbufInfo) -> None:
    so = uarg.so
    layer = so.layer
    st = zc_sock(so)
    uarg.done = True
    host = zc_host(layer)
    if uarg.num_pg:
        left = host.locked_vm.get(uarg.user, 0) - uarg.num_pg
        if left < 0:
            raise KernelAssertion(f"locked_vm of {uarg.user!r} went negative")
        if left:
            host.locked_vm[uarg.user] = left
        else:
            host.locked_vm.pop(uarg.user, None)
    if not uarg.len or so.freed:
        st.omem -= st.truesize  # consume_skb
        return
    lo = uarg.id
    hi = (uarg.id + uarg.len - 1) & U32
    code = 0 if uarg.zerocopy else SO_EE_CODE_ZEROCOPY_COPIED
    tail = st.errq[-1] if st.errq else None
    merged = tail is not None and _notify_extend(tail, lo, uarg.len)
    if merged:
        st.omem -= st.truesize  # the new skb is consumed
    else:
        st.errq.append(_Queued(lo, hi, code))
    _emit(layer, lambda t, c, s: ZcCompletion(t, c, s, lo, hi, bool(code), merged))


def _notify_extend(tail: _Queued, lo: int, length: int) -> bool:
    """``skb_zerocopy_notify_extend``: append [lo, lo+len) to the tail's range."""
    sum_len = ((tail.hi - tail.lo) & U32) + 1 + length
    if sum_len >= 1 << 32:
        return False
    if lo != (tail.hi + 1) & U32:
        return False
    tail.hi = (tail.hi + length) & U32
    return True


def recv_errqueue(so: Socket) -> ZerocopyNotification:
    """``sock_recv_errqueue``: dequeue one notification; EAGAIN when empty."""
    layer = so.layer
    _charge(layer, zerocopy_costs(layer.machine.profile.costs).errqueue_ns)
    st = zc_sock(so)
    if not st.errq:
        raise SocketError(EWOULDBLOCK, "the error queue is empty")
    q = st.errq.pop(0)
    st.omem -= st.truesize
    return ZerocopyNotification(0, SO_EE_ORIGIN_ZEROCOPY, 0, q.code, q.lo, q.hi)


def zc_sofree(so: Socket) -> None:
    """The socket is freed: the error queue is purged (``sk_destruct``)."""
    st = so.so_zc
    if isinstance(st, ZcSock):
        st.omem -= st.truesize * len(st.errq)
        st.errq.clear()


__all__ = [
    "MSG_ERRQUEUE",
    "MSG_ZEROCOPY",
    "SO_EE_CODE_ZEROCOPY_COPIED",
    "SO_EE_ORIGIN_ZEROCOPY",
    "SO_ZEROCOPY",
    "LinuxZerocopyPolicy",
    "UbufInfo",
    "ZcChunk",
    "ZcCompletion",
    "ZcHost",
    "ZcNoBufs",
    "ZcPin",
    "ZcSock",
    "ZcUnpin",
    "ZerocopyCosts",
    "ZerocopyNotification",
    "is_zc_storage",
    "recv_errqueue",
    "zc_host",
    "zc_sock",
    "zerocopy_costs",
]
