"""The socket facade research code uses: ``host.socket("tcp" | "udp")``.

Each method is a system call: it runs as a kernel activity on the calling
process's CPU (``host.kernel``), through ``sosend``/``soreceive`` on the
process's memory (``send(proc, va, n)``, ``recv(proc, va, n)``), so an
unmapped buffer is EFAULT and a receive into a loaned page breaks the loan.
``sendall(data)``/``recv_bytes(n)`` are conveniences with a kernel-space uio
(``UIO_SYSSPACE``: never loaned, as ``sosend_loan`` refuses kernel uios).

Blocking calls sleep on the simulated clock: the network runs until the
condition holds (or, if nothing can make it hold, :class:`WouldSleepForever`).
Errors are :class:`~netstack.sockerr.SocketError` with NetBSD's errno.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uvmloan.process import Process

from .policy import SendPolicy, make_policy
from .sockbuf import sbreserve
from .sockerr import (
    EBADF,
    EINVAL,
    ENOBUFS,
    ENOPROTOOPT,
    ENOTCONN,
    EOPNOTSUPP,
    EWOULDBLOCK,
    SocketError,
)
from .socket import (
    MSG_DONTWAIT,
    SS_CANTRCVMORE,
    SS_CANTSENDMORE,
    SS_ISCONNECTED,
    SS_NBIO,
    PendfreeStyle,
    Socket,
    SocketLayer,
    Uio,
    soalloc,
    sodopendfree,
    sofree,
    soreceive,
    sosend,
)
from .tcp_usrreq import TCPProtocol, tcp_table
from .udp import UDPProtocol, parse_addr, udp_table, unpack_sockaddr
from .zerocopy import SO_ZEROCOPY, ZerocopyNotification, recv_errqueue, zc_sock

if TYPE_CHECKING:
    from .network import Host

SOL_SOCKET = 0xFFFF
SO_SNDBUF = 0x1001
SO_RCVBUF = 0x1002
IPPROTO_TCP = 6
TCP_NODELAY = 0x01
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2

# How long (simulated) a blocking call may sleep before it is called a hang.
SLEEP_LIMIT_NS = 600 * 1_000_000_000


def get_layer(host: Host) -> SocketLayer:
    """The host's socket layer (created on first use, wired to the network)."""
    layer = host.stack.pcbs.get("socket")
    if layer is None:
        layer = SocketLayer.for_machine(host.machine, host.stack.mbpool)
        _wire(host, layer)
        host.stack.pcbs["socket"] = layer
        _attach_protocols(host)
    assert isinstance(layer, SocketLayer)
    return layer


def _attach_protocols(host: Host) -> None:
    """Enter UDP and TCP in the host's protocol switch (inetsw), so segments
    to a port nobody listens on are answered (TCP RST) or counted."""
    udp_table(host.stack)
    tcp_table(host.stack)


def configure_sockets(
    host: Host,
    *,
    sock_loan_thresh: int | None = None,
    pendfree_style: PendfreeStyle | None = None,
    send_policy: str | SendPolicy | None = None,
) -> SocketLayer:
    """Per-host overrides for experiments (before the host's first socket).

    ``send_policy``: ``"copy"``, ``"netbsd-loan"`` (the default),
    ``"linux-zerocopy"`` or a :class:`~netstack.policy.SendPolicy` instance.
    """
    if "socket" in host.stack.pcbs:
        layer = host.stack.pcbs["socket"]
        assert isinstance(layer, SocketLayer)
        if layer.sockets:
            raise ValueError("configure_sockets: the host already has sockets")
    layer = SocketLayer.for_machine(
        host.machine,
        host.stack.mbpool,
        sock_loan_thresh=sock_loan_thresh,
        pendfree_style=pendfree_style,
        send_policy=send_policy,
    )
    _wire(host, layer)
    host.stack.pcbs["socket"] = layer
    _attach_protocols(host)
    return layer


def _wire(host: Host, layer: SocketLayer) -> None:
    def defer(fn: Callable[[], None]) -> None:
        host.emit(functools.partial(host.kernel, fn, 0))

    def sleep(cond: Callable[[], bool]) -> bool:
        return host_sleep(host, cond)

    layer.defer = defer
    layer.sleep = sleep


def _syscall(host: Host) -> None:
    """Kernel entry and exit of one socket system call (``syscall_ns``)."""
    stack = host.stack
    plat = stack.plat
    plat.cpus[plat.cur].clock += stack.syscall_ns  # the profile's syscall_ns, resolved once


def host_sleep(host: Host, cond: Callable[[], bool]) -> bool:
    """The running activity sleeps until ``cond()`` (see :meth:`Host.sleep`)."""
    return host.sleep(cond, SLEEP_LIMIT_NS)


def socreate(host: Host, kind: str) -> UserSocket:
    """``socket(2)``: "udp" (SOCK_DGRAM) or "tcp" (SOCK_STREAM)."""
    if kind == "udp":
        layer = get_layer(host)
        proto: Any = UDPProtocol(udp_table(host.stack))
    elif kind == "tcp":
        layer = get_layer(host)
        proto = TCPProtocol(tcp_table(host.stack))
    else:
        raise ValueError(f"socket kind must be 'tcp' or 'udp', not {kind!r}")
    so = host.kernel(lambda: soalloc(layer, proto))
    return UserSocket(host, kind, so)


class UserSocket:
    """A socket descriptor of one host."""

    def __init__(self, host: Host, kind: str, so: Socket) -> None:
        self.host = host
        self.kind = kind
        self.so = so
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.so!r}"
        return f"<UserSocket {self.kind} on {self.host.name}: {state}>"

    # ------------------------------------------------------------- helpers

    @property
    def layer(self) -> SocketLayer:
        return self.so.layer

    def _open(self, what: str) -> None:
        if self.closed:
            raise SocketError(EBADF, f"{what} on a closed socket")
        mach = self.host.machine
        if mach._closed:
            mach._check_open(f"socket {what}")  # MachineClosed, naming the call

    def _user_io(self, proc: object, va: object, n: object, what: str) -> tuple[Process, int, int]:
        """``_open``, ``_proc``, ``_len`` and ``_va`` of a send or receive
        through user memory: one call when everything is in order (a send
        or receive per segment makes these the socket API's commonest
        checks); anything else goes through the checks one by one, in that
        order, so the error is the one each names."""
        mach = self.host.machine
        if (
            type(proc) is Process
            and type(n) is int
            and type(va) is int
            and n >= 0
            and not self.closed
            and not mach._closed
            and proc.machine is mach
            and proc.alive
        ):
            return proc, va, n
        self._open(what)
        p = self._proc(proc, what)
        n = self._len(n, what)
        return p, self._va(va, what), n

    def _proc(self, proc: object, what: str) -> Process:
        if not isinstance(proc, Process) or proc.machine is not self.host.machine:
            raise ValueError(f"{what}: proc must be a process of host {self.host.name}")
        if not proc.alive:
            raise ValueError(f"{what}: process {proc.name} has exited")
        return proc

    @staticmethod
    def _len(n: object, what: str) -> int:
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"{what}: length must be an int, not {type(n).__name__}")
        if n < 0:
            raise SocketError(EINVAL, f"{what}: negative length {n}")
        return n

    @staticmethod
    def _va(va: object, what: str) -> int:
        if not isinstance(va, int) or isinstance(va, bool):
            raise TypeError(f"{what}: address must be an int, not {type(va).__name__}")
        return va

    def _flags(self, flags: int) -> int:
        return flags | (MSG_DONTWAIT if self.so.so_state & SS_NBIO else 0)

    # ------------------------------------------------------------ addresses

    def bind(self, addr: tuple[str, int]) -> None:
        self._open("bind")
        a, port = parse_addr(addr)
        self.host.kernel(lambda: self.so.proto.bind(self.so, a, port))  # type: ignore[attr-defined]

    def connect(self, addr: tuple[str, int]) -> None:
        self._open("connect")
        a, port = parse_addr(addr)
        self.host.kernel(lambda: self.so.proto.connect(self.so, a, port))  # type: ignore[attr-defined]

    def listen(self, backlog: int = 5) -> None:
        self._open("listen")
        fn = getattr(self.so.proto, "listen", None)
        if fn is None:
            raise SocketError(EOPNOTSUPP, f"listen on a {self.kind} socket")
        self.host.kernel(lambda: fn(self.so, backlog))

    def accept(self) -> tuple[UserSocket, tuple[str, int]]:
        self._open("accept")
        fn = getattr(self.so.proto, "accept", None)
        if fn is None:
            raise SocketError(EOPNOTSUPP, f"accept on a {self.kind} socket")
        nso, peer = self.host.kernel(lambda: fn(self.so, self._flags(0)))
        return UserSocket(self.host, self.kind, nso), peer

    def getsockname(self) -> tuple[str, int]:
        from .wire import inet_ntoa

        inp = self.so.so_pcb
        return inet_ntoa(getattr(inp, "laddr", 0)), getattr(inp, "lport", 0)

    # ------------------------------------------------------------ send/recv

    def _send(self, uio: Uio, n: int, addr: Any, flags: int, cpu: int) -> int:
        so = self.so

        def call() -> None:
            _syscall(self.host)
            sosend(so, uio, addr, self._flags(flags))

        try:
            self.host.kernel(call, cpu)
        except SocketError as e:
            done = n - uio.iov_len
            # dofilewrite/sendit: a partial transfer interrupted by
            # EWOULDBLOCK/EINTR returns the count, anything else the error.
            if done and e.errno == EWOULDBLOCK:
                return done
            raise
        return n - uio.iov_len

    def send(self, proc: Process, va: int, n: int, flags: int = 0) -> int:
        """send(2) of ``n`` bytes at ``va`` of ``proc``; returns the bytes taken."""
        p, va, n = self._user_io(proc, va, n, "send")
        uio = Uio(p.map, va, n, proc=p)
        return self._send(uio, n, None, flags, p.cpu)

    def sendto(self, proc: Process, va: int, n: int, addr: tuple[str, int], flags: int = 0) -> int:
        self._open("sendto")
        p = self._proc(proc, "sendto")
        n = self._len(n, "sendto")
        dst = parse_addr(addr)
        uio = Uio(p.map, self._va(va, "sendto"), n, proc=p)
        return self._send(uio, n, dst, flags, p.cpu)

    def sendall(
        self, data: bytes | bytearray | memoryview, addr: tuple[str, int] | None = None
    ) -> None:
        """Send every byte of ``data`` from kernel memory (blocking until taken)."""
        self._open("sendall")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"sendall: data must be bytes-like, not {type(data).__name__}")
        buf = bytearray(data)
        dst = parse_addr(addr) if addr is not None else None
        uio = Uio(None, 0, len(buf), kdata=buf)
        self._send(uio, len(buf), dst, 0, 0)

    def _recv(self, uio: Uio, flags: int, cpu: int) -> tuple[int, tuple[str, int] | None]:
        so = self.so

        def call() -> tuple[int, Any, int]:
            _syscall(self.host)
            return soreceive(so, uio, self._flags(flags))

        n, addr, _fl = self.host.kernel(call, cpu)
        return n, (unpack_sockaddr(addr) if addr is not None else None)

    def recv(self, proc: Process, va: int, n: int, flags: int = 0) -> int:
        """recv(2) into ``n`` bytes at ``va`` of ``proc``; 0 at end of file."""
        p, va, n = self._user_io(proc, va, n, "recv")
        uio = Uio(p.map, va, n, proc=p, uio_rw_write=False)
        return self._recv(uio, flags, p.cpu)[0]

    def recvfrom(
        self, proc: Process, va: int, n: int, flags: int = 0
    ) -> tuple[int, tuple[str, int] | None]:
        p, va, n = self._user_io(proc, va, n, "recvfrom")
        uio = Uio(p.map, va, n, proc=p, uio_rw_write=False)
        return self._recv(uio, flags, p.cpu)

    def recv_bytes(self, n: int, flags: int = 0) -> bytes:
        """Receive up to ``n`` bytes into kernel memory and return them."""
        self._open("recv_bytes")
        n = self._len(n, "recv_bytes")
        buf = bytearray(n)
        uio = Uio(None, 0, n, kdata=buf, uio_rw_write=False)
        got = self._recv(uio, flags, 0)[0]
        return bytes(buf[:got])

    def recvfrom_bytes(self, n: int, flags: int = 0) -> tuple[bytes, tuple[str, int] | None]:
        self._open("recvfrom_bytes")
        n = self._len(n, "recvfrom_bytes")
        buf = bytearray(n)
        uio = Uio(None, 0, n, kdata=buf, uio_rw_write=False)
        got, addr = self._recv(uio, flags, 0)
        return bytes(buf[:got]), addr

    def recv_errqueue(self, proc: Process | None = None) -> ZerocopyNotification:
        """``recvmsg(fd, &msg, MSG_ERRQUEUE)``: one zerocopy completion record.

        Always non-blocking (msg_zerocopy.rst): EWOULDBLOCK (EAGAIN) when the
        queue is empty.  A system call on ``proc``'s CPU (default CPU 0).
        """
        self._open("recv_errqueue")
        cpu = self._proc(proc, "recv_errqueue").cpu if proc is not None else 0
        so = self.so
        return self.host.kernel(lambda: recv_errqueue(so), cpu)

    def errqueue_len(self) -> int:
        """Notifications waiting on the error queue (what poll's POLLERR says)."""
        st = self.so.so_zc
        return 0 if st is None else len(st.errq)

    def set_send_policy(self, policy: str | SendPolicy, **data: object) -> None:
        """This socket's send policy (an experiment's override of the host's)."""
        self._open("set_send_policy")
        pol = make_policy(policy, **data)
        so = self.so
        if so.so_snd.sb_cc or (so.so_zc is not None and so.so_zc.zckey):
            raise ValueError("set_send_policy: the socket has already sent")
        so.so_policy = pol

    @property
    def send_policy(self) -> SendPolicy:
        pol = self.so.so_policy or self.layer.send_policy
        assert pol is not None
        return pol

    def on_readable(self, fn: Callable[[UserSocket], None] | None) -> None:
        """Call ``fn(self)`` (as a kernel activity) whenever data or EOF arrives."""
        if fn is None:
            self.so.so_upcall = None
        else:
            self.so.so_upcall = lambda _so: fn(self)

    # -------------------------------------------------------------- options

    def setblocking(self, flag: bool) -> None:
        self._open("setblocking")
        if flag:
            self.so.so_state &= ~SS_NBIO
        else:
            self.so.so_state |= SS_NBIO

    def setsockopt(self, level: int, optname: int, value: int) -> None:
        """SO_SNDBUF, SO_RCVBUF (sbreserve: ENOBUFS above sb_max_adj), TCP_NODELAY."""
        self._open("setsockopt")
        so = self.so
        if level == SOL_SOCKET and optname in (SO_SNDBUF, SO_RCVBUF):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError("setsockopt: the value must be an int")
            if value < 1:
                raise SocketError(EINVAL, f"buffer size {value} < 1")
            sb = so.so_snd if optname == SO_SNDBUF else so.so_rcv
            if not sbreserve(sb, value):
                raise SocketError(ENOBUFS, f"buffer size {value} exceeds sb_max")
            if optname == SO_SNDBUF:
                sb.sb_lowat = min(max(sb.sb_lowat, 1), sb.sb_hiwat)
            hook = getattr(so.proto, "sockbuf_changed", None)
            if hook is not None:
                self.host.kernel(lambda: hook(so))
            return
        if level == SOL_SOCKET and optname == SO_ZEROCOPY:
            if not isinstance(value, int):
                raise TypeError("setsockopt: the value must be an int")
            self.send_policy.setsockopt_zerocopy(so, value)
            return
        if level == IPPROTO_TCP and optname == TCP_NODELAY and self.kind == "tcp":
            self.host.kernel(lambda: so.proto.set_nodelay(so, bool(value)))  # type: ignore[attr-defined]
            return
        raise SocketError(ENOPROTOOPT, f"option {level:#x}/{optname:#x} is not supported")

    def getsockopt(self, level: int, optname: int) -> int:
        self._open("getsockopt")
        if level == SOL_SOCKET and optname == SO_SNDBUF:
            return self.so.so_snd.sb_hiwat
        if level == SOL_SOCKET and optname == SO_RCVBUF:
            return self.so.so_rcv.sb_hiwat
        if (
            level == SOL_SOCKET
            and optname == SO_ZEROCOPY
            and self.send_policy.name == ("linux-zerocopy")
        ):
            return int(zc_sock(self.so).enabled)
        raise SocketError(ENOPROTOOPT, f"option {level:#x}/{optname:#x} is not supported")

    # -------------------------------------------------------------- teardown

    def shutdown(self, how: int = SHUT_RDWR) -> None:
        self._open("shutdown")
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise SocketError(EINVAL, f"shutdown: how {how!r}")
        so = self.so
        if not so.so_state & SS_ISCONNECTED and self.kind == "tcp":
            raise SocketError(ENOTCONN, "shutdown of an unconnected socket")

        def call() -> None:
            if how in (SHUT_RD, SHUT_RDWR):
                so.so_state |= SS_CANTRCVMORE
            if how in (SHUT_WR, SHUT_RDWR):
                so.so_state |= SS_CANTSENDMORE
                fn = getattr(so.proto, "shutdown", None)
                if fn is not None:
                    fn(so)

        self.host.kernel(call)

    def close(self) -> None:
        """close(2): disconnect (TCP: a FIN after the queued data), free the socket."""
        if self.closed:
            return
        self.closed = True
        so = self.so

        def call() -> None:
            if so.layer.pendfree_style == "per-socket":
                sodopendfree(so)
            so.so_upcall = None
            so.proto.disconnect(so)
            so.proto.detach(so)
            if so.so_pcb is None:
                sofree(so)

        self.host.kernel(call)


__all__ = [
    "IPPROTO_TCP",
    "SHUT_RD",
    "SHUT_RDWR",
    "SHUT_WR",
    "SOL_SOCKET",
    "SO_RCVBUF",
    "SO_SNDBUF",
    "SO_ZEROCOPY",
    "TCP_NODELAY",
    "UserSocket",
    "configure_sockets",
    "get_layer",
    "host_sleep",
    "socreate",
]
