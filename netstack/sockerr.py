"""NetBSD errno values (``sys/sys/errno.h``) and the socket layer's exception.

The socket layer reports what NetBSD's system calls return, with NetBSD's
numbers (the host's ``errno`` module has Linux's on Linux: EMSGSIZE is 40
on NetBSD and 90 on Linux).
"""

from __future__ import annotations

from uvmloan.errors import UVMLoanError

EPERM = 1
ENOENT = 2
EINTR = 4
EBADF = 9
ENOMEM = 12
EACCES = 13
EFAULT = 14
EINVAL = 22
EPIPE = 32
EAGAIN = 35
EWOULDBLOCK = EAGAIN
EINPROGRESS = 36
EALREADY = 37
ENOTSOCK = 38
EDESTADDRREQ = 39
EMSGSIZE = 40
EPROTOTYPE = 41
ENOPROTOOPT = 42
EPROTONOSUPPORT = 43
EOPNOTSUPP = 45
EAFNOSUPPORT = 47
EADDRINUSE = 48
EADDRNOTAVAIL = 49
ENETDOWN = 50
ENETUNREACH = 51
ECONNABORTED = 53
ECONNRESET = 54
ENOBUFS = 55
EISCONN = 56
ENOTCONN = 57
ESHUTDOWN = 58
ETIMEDOUT = 60
ECONNREFUSED = 61
EHOSTUNREACH = 65

ERRNO_NAMES = {v: k for k, v in globals().items() if k.startswith("E") and isinstance(v, int)}
ERRNO_NAMES[EAGAIN] = "EAGAIN"


class SocketError(UVMLoanError, OSError):
    """A socket call failed with the NetBSD errno ``errno``."""

    def __init__(self, errno: int, message: str) -> None:
        self.bsd_errno = errno
        name = ERRNO_NAMES.get(errno, str(errno))
        OSError.__init__(self, errno, f"[{name}] {message}")
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        name = ERRNO_NAMES.get(self.bsd_errno, str(self.bsd_errno))
        return f"[{name}] {self.message}"


class WouldSleepForever(SocketError):
    """A blocking call would sleep, but nothing is left that could wake it.

    NetBSD would sleep until a signal; the simulation has no more events,
    so it reports the hang instead (errno EWOULDBLOCK).
    """

    def __init__(self, message: str) -> None:
        super().__init__(EWOULDBLOCK, message)


__all__ = ["ERRNO_NAMES", "SocketError", "WouldSleepForever"]
