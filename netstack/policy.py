"""Send policies: how user bytes enter the send buffer, chosen by name.

``sosend`` (netstack.socket) builds each data mbuf of a send in one place:
there it asks the socket's :class:`SendPolicy` whether the next bytes of
the user's buffer can go in by reference (``take``: returns how many it
attached to the mbuf, 0 to let ``sosend`` copy them).  Around the whole
call it calls ``begin`` (before any mbuf is built; may refuse the call
with a :class:`~netstack.sockerr.SocketError`) and ``end`` (with the
bytes the call took, including on errors after a partial send).

Three policies ship; a new one is a subclass with its data as attrs
fields, entered with :func:`register_policy`:

* ``copy``: never by reference; every byte is copied (``uiomove``).
* ``netbsd-loan``: exactly NetBSD's ``sosend`` (``uipc_socket.c`` 1.246):
  ``sosend_loan`` when ``sock_loan_thresh >= 0`` and both the iovec and the
  buffer space are at least the threshold.  The threshold is the host's
  (the profile's ``sock_loan_thresh``, -1 on a MULTIPROCESSOR kernel, or
  ``configure_sockets(host, sock_loan_thresh=...)``), so on the
  ``netbsd-10`` profile this policy copies.
* ``linux-zerocopy``: Linux's ``MSG_ZEROCOPY`` (netstack.zerocopy).

Selection: per host with ``configure_sockets(host, send_policy=...)``
(default ``netbsd-loan``), per socket with
``UserSocket.set_send_policy(...)`` (before its first send).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from .soloan import sosend_loan

if TYPE_CHECKING:
    from .mbuf import Mbuf
    from .socket import Socket, Uio


class SendPolicy:
    """How ``sosend`` brings user bytes into an mbuf; subclasses are attrs classes."""

    name: ClassVar[str] = "?"

    def begin(self, so: Socket, uio: Uio, addr: Any, flags: int) -> Any:
        """Start of one send call; the result is handed to ``take`` and ``end``."""
        return None

    def take(self, so: Socket, uio: Uio, m: Mbuf, space: int, call: Any) -> int:
        """Attach the next user bytes to ``m`` by reference; 0 to copy them."""
        return 0

    def end(self, so: Socket, call: Any, sent: int) -> None:
        """End of the call: ``sent`` bytes were taken (0: the call failed)."""

    def setsockopt_zerocopy(self, so: Socket, value: int) -> None:
        """``SO_ZEROCOPY``: only a Linux policy knows the option."""
        from .sockerr import ENOPROTOOPT, SocketError

        raise SocketError(ENOPROTOOPT, f"SO_ZEROCOPY: the {self.name} policy has no such option")


@attrs.frozen(slots=True)
class CopyPolicy(SendPolicy):
    """Every byte copied (``uiomove`` into clusters and small mbufs)."""

    name: ClassVar[str] = "copy"


@attrs.frozen(slots=True)
class NetbsdLoanPolicy(SendPolicy):
    """NetBSD's ``sosend``: ``sosend_loan`` when ``sock_loan_thresh`` allows."""

    name: ClassVar[str] = "netbsd-loan"

    def take(self, so: Socket, uio: Uio, m: Mbuf, space: int, call: Any) -> int:
        layer = so.layer
        thresh = layer.sock_loan_thresh
        if thresh >= 0 and uio.iov_len >= thresh and space >= thresh:
            n = sosend_loan(so, uio, m, space)
            if n:
                layer.count("loan big", n)
            return n
        return 0


_REGISTRY: dict[str, type[SendPolicy]] = {}


def register_policy(cls: type[SendPolicy]) -> type[SendPolicy]:
    """Enter a policy class under its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, SendPolicy)):
        raise TypeError(f"register_policy: expected a SendPolicy subclass, not {cls!r}")
    name = cls.name
    if not isinstance(name, str) or not name or name == "?":
        raise ValueError(f"register_policy: {cls.__name__} has no name")
    old = _REGISTRY.get(name)
    if old is not None and old is not cls:
        raise ValueError(f"register_policy: {name!r} is already {old.__name__}")
    _REGISTRY[name] = cls
    return cls


def policy_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def make_policy(policy: str | SendPolicy, **data: Any) -> SendPolicy:
    """A policy instance from a name (with its data as keywords) or an instance."""
    if isinstance(policy, SendPolicy):
        if data:
            raise ValueError("make_policy: keywords only go with a policy name")
        return policy
    if not isinstance(policy, str):
        raise TypeError(f"send policy must be a name or a SendPolicy, not {type(policy).__name__}")
    cls = _REGISTRY.get(policy)
    if cls is None:
        raise ValueError(f"unknown send policy {policy!r}; known: {', '.join(_REGISTRY)}")
    return cls(**data)


register_policy(CopyPolicy)
register_policy(NetbsdLoanPolicy)

DEFAULT_POLICY = NetbsdLoanPolicy()

# linux-zerocopy enters itself (it needs the classes above).
from . import zerocopy as _zerocopy  # noqa: E402,F401

__all__ = [
    "DEFAULT_POLICY",
    "CopyPolicy",
    "NetbsdLoanPolicy",
    "SendPolicy",
    "make_policy",
    "policy_names",
    "register_policy",
]
