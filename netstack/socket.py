"""struct socket, sosend (copy and loan paths), soreceive; the loan half is in soloan.py.

``sys/kern/uipc_socket.c`` 1.246 (2015-08-24; the loan code is the same in
1.215 of 2013 and the ~2018/19 snapshot the reference digest read) and the
2002 original (1.66.4.1) behind ``SocketLayer.pendfree_style``.  The
behaviours and their sources are listed in ``specs/sosend.md``.

One :class:`SocketLayer` per host holds what NetBSD keeps in globals:
``sock_loan_thresh``, ``somaxkva``/``socurkva``, the ``so_pendfree`` list and
the "sopendfree" thread, and the four ``SOSEND_COUNTERS`` evcnts, which are
trace events here (counter keys ``sosend loan big``, ``sosend copy big``,
``sosend copy small``, ``sosend kva limit``).

Sleeping: a blocking call that must wait (``sbwait``, ``cv_wait_sig`` on
``socurkva_cv``) asks the layer's ``sleep`` hook to run the simulation until
its condition holds.  With no network attached nothing can change while a
call sleeps, so a wait that is not already satisfied raises
:class:`WouldSleepForever` for ``sbwait``, and makes ``sokvareserve`` return
0 as a signal would (the send falls back to copying).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from uvmloan.borrow import KernelLoan
from uvmloan.errors import KernelAssertion, SegmentationFault
from uvmloan.trace import Event

from .mbuf import (
    M_EXT_PAGES,
    MCLBYTES,
    MH_ALIGN,
    MHLEN,
    MINCLSIZE,
    MLEN,
    MT_SONAME,
    Mbuf,
    MbufPool,
    gather,
    m_free,
    m_freem,
    m_pieces,
)
from .sockbuf import SockBuf, sbdroprecord, sbflush, sbfree, sbreserve, sbspace
from .sockerr import (
    EDESTADDRREQ,
    EFAULT,
    EINVAL,
    EMSGSIZE,
    ENOTCONN,
    EPIPE,
    EWOULDBLOCK,
    SocketError,
    WouldSleepForever,
)
from .soloan import (
    SoLoanFree,
    sodoloanfree,
    sodopendfree,
    sokvaalloc,
    sokvafree,
    soloanfree,
    sopendfree_thread,
    sosend_loan,
)

if TYPE_CHECKING:
    from .policy import SendPolicy

if TYPE_CHECKING:
    from uvmloan.machine import Machine
    from uvmloan.map import VMMap
    from uvmloan.process import Process

# socketvar.h so_state bits
SS_NOFDREF = 0x001
SS_ISCONNECTED = 0x002
SS_ISCONNECTING = 0x004
SS_ISDISCONNECTING = 0x008
SS_CANTSENDMORE = 0x010
SS_CANTRCVMORE = 0x020
SS_NBIO = 0x080
SS_ISDISCONNECTED = 0x800

# protosw.h pr_flags
PR_ATOMIC = 0x01
PR_ADDR = 0x02
PR_CONNREQUIRED = 0x04
PR_WANTRCVD = 0x08

# socket.h msg flags
MSG_OOB = 0x1
MSG_PEEK = 0x2
MSG_EOR = 0x8
MSG_TRUNC = 0x10
MSG_WAITALL = 0x40
MSG_DONTWAIT = 0x80
MSG_NBIO = 0x1000

# max_linkhdr (16) + max_protohdr (IPv4 + TCP, 40): what sosend leaves in
# front of the first cluster of a datagram (m_data += max_hdr).
MAX_HDR = 56

PendfreeStyle = Literal["thread", "per-socket"]


@attrs.frozen(slots=True)
class SosendCounter(Event):
    """One ``SOSEND_COUNTER_INCR``: counter is "loan big", "copy big",
    "copy small" or "kva limit" (its field is not ``name``, which is the
    event's own name in the trace vocabulary: "sosend")."""

    KIND: ClassVar[str] = "sosend"
    counter: str
    nbytes: int

    def counter_keys(self) -> tuple[str, ...]:
        return (f"sosend {self.counter}",)


@attrs.define(slots=True, eq=False)
class Uio:
    """A one-iovec ``struct uio``: user memory of ``vmmap`` (or kernel bytes)."""

    vmmap: VMMap | None
    iov_base: int
    iov_len: int
    proc: Process | None = None
    kdata: bytearray | None = None  # kernel-space uio (UIO_SYSSPACE)
    uio_rw_write: bool = True  # True: data flows from the uio into the kernel

    @property
    def uio_resid(self) -> int:
        return self.iov_len


@attrs.define(slots=True, eq=False)
class SocketLayer:
    """The socket layer's globals on one host."""

    machine: Machine
    pool: MbufPool
    sock_loan_thresh: int
    sock_loan_chunk: int
    somaxkva: int
    pendfree_style: PendfreeStyle = "thread"
    socurkva: int = 0
    so_pendfree: list[Mbuf] = attrs.field(factory=list)
    pendfree_scheduled: bool = False
    # kva -> the loan mapped there (NetBSD recomputes it from ext_buf/size).
    loans: dict[int, KernelLoan] = attrs.field(factory=dict)
    sockets: dict[Socket, None] = attrs.field(factory=dict)
    inject: set[str] = attrs.field(factory=set)
    # How user bytes enter send buffers (netstack.policy); sockets may override.
    send_policy: SendPolicy | None = None
    # linux-zerocopy's per-host state (netstack.zerocopy.ZcHost), made on use.
    zerocopy: Any = None
    # Hooks the network installs: run a kernel activity later; sleep until.
    defer: Callable[[Callable[[], None]], None] | None = None
    sleep: Callable[[Callable[[], bool]], bool] | None = None
    _deferred: list[Callable[[], None]] = attrs.field(factory=list)

    @classmethod
    def for_machine(
        cls,
        machine: Machine,
        pool: MbufPool | None = None,
        *,
        sock_loan_thresh: int | None = None,
        pendfree_style: PendfreeStyle | None = None,
        send_policy: str | SendPolicy | None = None,
    ) -> SocketLayer:
        """The layer with the profile's constants (``sock_loan_thresh``,
        ``sock_loan_chunk``, ``somaxkva``, ``sosend_pendfree``); the keywords
        override them for one host.  ``send_policy``: a name of
        :mod:`netstack.policy` or an instance (default ``netbsd-loan``)."""
        from .policy import DEFAULT_POLICY, make_policy

        policy = DEFAULT_POLICY if send_policy is None else make_policy(send_policy)
        prof = machine.profile
        if pendfree_style is None:
            pendfree_style = prof.sosend_pendfree
        thresh = prof.sock_loan_thresh if sock_loan_thresh is None else sock_loan_thresh
        if not isinstance(thresh, int) or isinstance(thresh, bool) or thresh < -1:
            raise ValueError(f"sock_loan_thresh must be -1 or a byte count, got {thresh!r}")
        if pendfree_style not in ("thread", "per-socket"):
            raise ValueError(
                f"pendfree_style must be 'thread' or 'per-socket', not {pendfree_style!r}"
            )
        layer = cls(
            machine,
            pool if pool is not None else MbufPool(machine),
            thresh,
            prof.sock_loan_chunk,
            prof.somaxkva,
            pendfree_style,
        )
        layer.send_policy = policy
        return layer

    # ------------------------------------------------------------- plumbing

    def count(self, name: str, nbytes: int) -> None:
        tr = self.machine.tracer
        if tr.on:
            cpu = self.machine.platform.curcpu()
            tr.emit(SosendCounter(cpu.clock, cpu.index, "kernel", name, nbytes))

    def kick(self, fn: Callable[[], None]) -> None:
        if self.defer is not None:
            self.defer(fn)
        else:
            self._deferred.append(fn)

    def run_deferred(self) -> int:
        """Run kernel activities queued with no network attached."""
        n = 0
        while self._deferred:
            fn = self._deferred.pop(0)
            fn()
            n += 1
        return n

    def wait(self, cond: Callable[[], bool]) -> bool:
        """Sleep until ``cond()``; False if nothing could make it true."""
        if cond():
            return True
        if self.sleep is not None:
            return self.sleep(cond)
        self.run_deferred()
        return cond()

    @property
    def loaned_kva(self) -> int:
        return sum(kl.npages * self.machine.page_size for kl in self.loans.values())


# ------------------------------------------------------------------ sockets


class Protocol:
    """``struct protosw`` with its ``pr_usrreqs``: what a protocol gives sockets."""

    name: ClassVar[str] = "proto"
    pr_flags: ClassVar[int] = 0

    def attach(self, so: Socket) -> None:
        raise NotImplementedError

    def send(self, so: Socket, top: Mbuf, addr: Any) -> None:
        """``pr_send``: takes ownership of ``top`` (frees it on error)."""
        raise NotImplementedError

    def rcvd(self, so: Socket) -> None:
        """``pr_rcvd``: the user read from the receive buffer."""

    def disconnect(self, so: Socket) -> None:
        """``pr_disconnect``."""

    def detach(self, so: Socket) -> None:
        """``pr_detach``: the socket is going away."""


@attrs.define(slots=True, eq=False, repr=False)
class Socket:
    """``struct socket``."""

    layer: SocketLayer
    proto: Protocol
    so_snd: SockBuf
    so_rcv: SockBuf
    so_state: int = 0
    so_error: int = 0
    so_options: int = 0
    so_pcb: Any = None
    # 2002 (uipc_socket.c 1.66.4.1): loaned mbufs waiting for this socket.
    so_pendfree: list[Mbuf] = attrs.field(factory=list)
    freed: bool = False
    # Called (as a later kernel activity) on sorwakeup/sowwakeup: how the
    # facade lets event-driven readers run.
    so_upcall: Callable[[Socket], None] | None = None
    so_head: Socket | None = None
    so_q: list[Socket] = attrs.field(factory=list)
    so_qlimit: int = 0
    # A per-socket send policy (experiments); None: the layer's.
    so_policy: SendPolicy | None = None
    # linux-zerocopy's per-socket state (netstack.zerocopy.ZcSock), made on use.
    so_zc: Any = None

    def __repr__(self) -> str:
        return (
            f"<socket {self.proto.name} state {self.so_state:#x} {self.so_snd!r} {self.so_rcv!r}>"
        )

    @property
    def machine(self) -> Machine:
        return self.layer.machine


def socreate(host: Any, kind: str) -> Any:
    """``host.socket(kind)``: the user-level socket facade (netstack.sockapi)."""
    from .sockapi import socreate as _socreate

    return _socreate(host, kind)


def soalloc(layer: SocketLayer, proto: Protocol) -> Socket:
    """socreate's kernel half: a socket attached to ``proto``."""
    pool = layer.pool
    so = Socket(layer, proto, SockBuf(pool, "snd", inject=layer.inject), SockBuf(pool, "rcv"))
    proto.attach(so)
    layer.sockets[so] = None
    return so


def sorwakeup(so: Socket) -> None:
    """Data or an event arrived: let an upcall reader run."""
    up = so.so_upcall
    if up is not None:
        so.layer.kick(functools.partial(up, so))


def soreserve(so: Socket, sndcc: int, rcvcc: int) -> bool:
    """Reserve both buffers; ``sb_lowat`` defaults as in ``soreserve``."""
    if not sbreserve(so.so_snd, sndcc) or not sbreserve(so.so_rcv, rcvcc):
        return False
    if so.so_rcv.sb_lowat == 0:
        so.so_rcv.sb_lowat = 1
    if so.so_snd.sb_lowat == 0:
        so.so_snd.sb_lowat = MCLBYTES
    so.so_snd.sb_lowat = min(so.so_snd.sb_lowat, so.so_snd.sb_hiwat)
    return True


def sofree(so: Socket) -> None:
    """Free the buffers and forget the socket (after ``pr_detach``)."""
    if so.freed:
        return
    sbflush(so.so_snd)
    sbflush(so.so_rcv)
    if so.layer.pendfree_style == "per-socket":
        sodopendfree(so)
    if so.so_zc is not None:
        from .zerocopy import zc_sofree

        zc_sofree(so)
    so.freed = True
    so.layer.sockets.pop(so, None)


# ---------------------------------------------------------------- sosend


def uiomove_in(so: Socket, uio: Uio, m: Mbuf, length: int) -> None:
    """copyin ``length`` bytes from the uio into mbuf ``m``'s data (through the MMU)."""
    buf = m._kmem()
    start = m.m_data
    if uio.kdata is not None:
        off = uio.iov_base
        buf[start : start + length] = uio.kdata[off : off + length]
        so.layer.pool.charge_copy(length)
    else:
        buf[start : start + length] = copyin(so.layer.machine, uio, length)
    uio.iov_base += length
    uio.iov_len -= length


def _user_range_ok(vmmap: VMMap, va: int, n: int) -> bool:
    return vmmap.minva <= va and va + n <= vmmap.maxva


def copyin(mach: Machine, uio: Uio, n: int) -> bytes:
    """Read user memory as the kernel's copyin does; EFAULT where it cannot."""
    proc = uio.proc
    assert proc is not None and uio.vmmap is not None
    if not _user_range_ok(uio.vmmap, uio.iov_base, n):
        raise SocketError(EFAULT, f"copyin from {uio.iov_base:#x}: outside user space")
    # kernel code: the range and the process were checked above, the CPU is
    # the running activity's (the MMU's checked entry points skip revalidation)
    if mach._closed:
        mach._check_open("copyin")
    cpu = mach._switch_fast(proc, mach.platform.cur)
    try:
        return mach.mmu.load_checked(cpu, uio.iov_base, n, True)
    except SegmentationFault as e:
        raise SocketError(EFAULT, f"copyin: {e}") from None


def copyout(mach: Machine, uio: Uio, data: bytes | memoryview) -> None:
    """Write user memory as copyout does: a store to a loaned page breaks the loan."""
    proc = uio.proc
    assert proc is not None and uio.vmmap is not None
    if not _user_range_ok(uio.vmmap, uio.iov_base, len(data)):
        raise SocketError(EFAULT, f"copyout to {uio.iov_base:#x}: outside user space")
    if mach._closed:
        mach._check_open("copyout")
    cpu = mach._switch_fast(proc, mach.platform.cur)
    try:
        mach.mmu.store_checked(cpu, uio.iov_base, data, True)
    except SegmentationFault as e:
        raise SocketError(EFAULT, f"copyout: {e}") from None


def _nbio(so: Socket, flags: int) -> bool:
    return bool(so.so_state & SS_NBIO or flags & (MSG_NBIO | MSG_DONTWAIT))


def sosend(so: Socket, uio: Uio, addr: Any = None, flags: int = 0) -> None:
    """Send the uio's bytes: build mbufs (by reference or copied), hand them to pr_send.

    The socket's send policy (netstack.policy) decides, mbuf by mbuf, whether
    user bytes go in by reference; it sees the start and end of the call.
    Raises SocketError; bytes already handed to the protocol stay sent and
    ``uio.uio_resid`` says how many were not taken.
    """
    policy = so.so_policy or so.layer.send_policy
    assert policy is not None
    if uio.uio_resid < 0:
        raise SocketError(EINVAL, "negative length")
    resid0 = uio.uio_resid
    call = policy.begin(so, uio, addr, flags)
    try:
        _sosend(so, uio, addr, flags, policy, call)
    finally:
        if call is not None:
            policy.end(so, call, resid0 - uio.uio_resid)


def _sosend(so: Socket, uio: Uio, addr: Any, flags: int, policy: SendPolicy, call: Any) -> None:
    layer = so.layer
    if layer.pendfree_style == "per-socket":
        sodopendfree(so)
    atomic = bool(so.proto.pr_flags & PR_ATOMIC)
    resid = uio.uio_resid
    if resid < 0:
        raise SocketError(EINVAL, "negative length")
    snd = so.so_snd
    while True:  # restart
        if so.so_state & SS_CANTSENDMORE:
            raise SocketError(EPIPE, "socket cannot send more")
        if so.so_error:
            errno, so.so_error = so.so_error, 0
            raise SocketError(errno, "pending socket error")
        if not so.so_state & SS_ISCONNECTED:
            if so.proto.pr_flags & PR_CONNREQUIRED:
                raise SocketError(ENOTCONN, "socket is not connected")
            if addr is None:
                raise SocketError(EDESTADDRREQ, "no destination address")
        space = sbspace(snd)
        if atomic and resid > snd.sb_hiwat:
            raise SocketError(EMSGSIZE, f"{resid}-byte datagram > send buffer {snd.sb_hiwat}")
        if space < resid and (atomic or space < snd.sb_lowat):
            if _nbio(so, flags):
                raise SocketError(EWOULDBLOCK, "send buffer full")
            want_space = resid if atomic else snd.sb_lowat

            def can_go(want: int = want_space) -> bool:
                # sbspace(snd) >= want, spelled out: the sleeping sender
                # tests this after every event the network runs
                return (
                    (snd.sb_hiwat - snd.sb_cc >= want and snd.sb_mbmax - snd.sb_mbcnt >= want)
                    or bool(so.so_state & SS_CANTSENDMORE)
                    or bool(so.so_error)
                )

            if not layer.wait(can_go):
                raise WouldSleepForever(f"sosend: {snd!r} stays full")
            continue
        top: Mbuf | None = None
        while True:
            tail: Mbuf | None = None
            while True:
                pool = layer.pool
                if top is None:
                    m = pool.m_gethdr()
                    mlen = MHLEN
                else:
                    m = pool.m_get()
                    mlen = MLEN
                # The one place user bytes enter the send buffer: by
                # reference if the policy takes them (netbsd-loan:
                # sosend_loan, linux-zerocopy: pinned pages), else copied.
                n = policy.take(so, uio, m, space, call)
                err: SocketError | None = None
                if n:
                    space -= n
                elif resid >= MINCLSIZE and space >= MCLBYTES:
                    pool.m_clget(m)
                    if atomic and top is None:
                        n = min(MCLBYTES - MAX_HDR, resid)
                        m.m_data += MAX_HDR
                    else:
                        n = min(MCLBYTES, resid)
                    layer.count("copy big", n)
                    space -= n
                    err = _uiomove_or_error(so, uio, m, n)
                else:
                    n = min(mlen, resid, space)
                    layer.count("copy small", n)
                    space -= n
                    if atomic and top is None and n < mlen:
                        MH_ALIGN(m, n)
                    err = _uiomove_or_error(so, uio, m, n)
                resid = uio.iov_len  # uio_resid
                m.m_len = n
                if top is None:
                    top = m
                else:
                    assert tail is not None
                    tail.m_next = m
                tail = m
                top.m_pkthdr_len += n
                if err is not None:
                    m_freem(top)
                    raise err
                if resid <= 0 or not (space > 0 and atomic):
                    break
            if so.so_state & SS_CANTSENDMORE:
                m_freem(top)
                raise SocketError(EPIPE, "socket cannot send more")
            so.proto.send(so, top, addr)
            top = None
            if not (resid and space > 0):
                break
        if not resid:
            return


def _uiomove_or_error(so: Socket, uio: Uio, m: Mbuf, n: int) -> SocketError | None:
    try:
        uiomove_in(so, uio, m, n)
    except SocketError as e:
        return e
    return None


# -------------------------------------------------------------- soreceive


def soreceive(so: Socket, uio: Uio, flags: int = 0) -> tuple[int, bytes | None, int]:
    """Copy received data out to the uio: returns (bytes, source address, flags)."""
    layer = so.layer
    if layer.pendfree_style == "per-socket":
        sodopendfree(so)
    rcv = so.so_rcv
    pr = so.proto
    atomic = bool(pr.pr_flags & PR_ATOMIC)
    orig = uio.uio_resid
    m = rcv.sb_mb
    while True:
        m = rcv.sb_mb
        if m is None or (
            not flags & MSG_DONTWAIT
            and rcv.sb_cc < uio.uio_resid
            and (
                rcv.sb_cc < rcv.sb_lowat or (flags & MSG_WAITALL and uio.uio_resid <= rcv.sb_hiwat)
            )
            and m.m_nextpkt is None
            and not atomic
        ):
            if so.so_error:
                if m is not None:
                    break
                errno, so.so_error = so.so_error, 0
                raise SocketError(errno, "pending socket error")
            if so.so_state & SS_CANTRCVMORE:
                if m is not None:
                    break
                return 0, None, 0
            if (
                not so.so_state & (SS_ISCONNECTED | SS_ISCONNECTING)
                and pr.pr_flags & PR_CONNREQUIRED
            ):
                raise SocketError(ENOTCONN, "socket is not connected")
            if uio.uio_resid == 0:
                return 0, None, 0
            if _nbio(so, flags):
                raise SocketError(EWOULDBLOCK, "nothing to receive")
            cc0 = rcv.sb_cc
            head0 = rcv.sb_mb

            def changed(cc0: int = cc0, head0: Mbuf | None = head0) -> bool:
                return (
                    rcv.sb_cc != cc0
                    or rcv.sb_mb is not head0
                    or bool(so.so_error)
                    or bool(so.so_state & SS_CANTRCVMORE)
                )

            if not layer.wait(changed):
                raise WouldSleepForever(f"soreceive: nothing arrives on {rcv!r}")
            continue
        break
    assert m is not None
    addr: bytes | None = None
    outflags = 0
    nextrecord = m.m_nextpkt
    if pr.pr_flags & PR_ADDR:
        if m.m_type != MT_SONAME:
            raise KernelAssertion("receive 1a")
        assert m.m_dat is not None
        addr = bytes(m.m_dat[m.m_data : m.m_data + m.m_len])
        if flags & MSG_PEEK:
            m = m.m_next
        else:
            sbfree(rcv, m)
            nm = m_free(m)
            if nm is not None:
                nm.m_nextpkt = nextrecord
                rcv.sb_mb = nm
            else:
                rcv.sb_mb = nextrecord
            m = nm
    moff = 0
    cur = m
    while cur is not None and uio.iov_len > 0:  # uio_resid
        n = min(uio.iov_len, cur.m_len - moff)
        if cur.m_flags & M_EXT_PAGES:
            data: bytes | memoryview = gather(cur, m_pieces(cur, moff, n))
        else:
            # kernel memory: uiomove copies straight out of the mbuf's data
            d = cur.m_data + moff
            data = memoryview(cur._kmem())[d : d + n]
        try:
            if uio.kdata is not None:
                uio.kdata[uio.iov_base : uio.iov_base + n] = data
                layer.pool.charge_copy(n)
            else:
                copyout(layer.machine, uio, data)
        except SocketError:
            if atomic and addr is not None and not flags & MSG_PEEK:
                sbdroprecord(rcv)
            raise
        uio.iov_base += n
        uio.iov_len -= n
        if n == cur.m_len - moff:
            if flags & MSG_PEEK:
                cur = cur.m_next
                moff = 0
            else:
                nextrecord = cur.m_nextpkt
                sbfree(rcv, cur)
                cur = m_free(cur)
                rcv.sb_mb = cur
                if cur is not None:
                    cur.m_nextpkt = nextrecord
                else:
                    rcv.sb_mb = nextrecord
                if atomic and cur is None:
                    break
        elif flags & MSG_PEEK:
            moff += n
        else:
            cur.m_data += n
            cur.m_len -= n
            rcv.sb_cc -= n
    if atomic and not flags & MSG_PEEK and cur is not None:
        outflags |= MSG_TRUNC
        sbdroprecord(rcv)
    _fix_tail(rcv)
    if not flags & MSG_PEEK and pr.pr_flags & PR_WANTRCVD and so.so_pcb is not None:
        pr.rcvd(so)
    return orig - uio.uio_resid, addr, outflags


def _fix_tail(sb: SockBuf) -> None:
    m = sb.sb_mb
    if m is None:
        sb.sb_mbtail = None
        sb.sb_lastrecord = None
        return
    last_rec = m
    while last_rec.m_nextpkt is not None:
        last_rec = last_rec.m_nextpkt
    sb.sb_lastrecord = last_rec
    t = last_rec
    while t.m_next is not None:
        t = t.m_next
    sb.sb_mbtail = t


__all__ = [
    "MAX_HDR",
    "MSG_DONTWAIT",
    "MSG_PEEK",
    "MSG_TRUNC",
    "MSG_WAITALL",
    "PR_ADDR",
    "PR_ATOMIC",
    "PR_CONNREQUIRED",
    "PR_WANTRCVD",
    "SS_CANTRCVMORE",
    "SS_CANTSENDMORE",
    "SS_ISCONNECTED",
    "SS_ISCONNECTING",
    "SS_NBIO",
    "Protocol",
    "SoLoanFree",
    "Socket",
    "SocketLayer",
    "SosendCounter",
    "Uio",
    "copyin",
    "copyout",
    "soalloc",
    "socreate",
    "sodoloanfree",
    "sodopendfree",
    "sofree",
    "sokvaalloc",
    "sokvafree",
    "soloanfree",
    "sopendfree_thread",
    "soreceive",
    "soreserve",
    "sorwakeup",
    "sosend",
    "sosend_loan",
]
