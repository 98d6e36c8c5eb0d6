"""Socket-layer invariants (``check_socket_invariants``) and the leak check.

S1  each socket buffer's ``sb_cc``/``sb_mbcnt`` match its chain.
S2  every mbuf a socket buffer holds is allocated; a loaned one's storage
    has a reference and its loan is held (KVA mapped, pages lent).
S3  ``socurkva`` is the KVA of the loans held (reserved only while
    ``sosend_loan`` runs).
    Pinned (MSG_ZEROCOPY) storage instead holds its pin: every page wired.
S4  every mbuf on a pendfree list has no reference left (storage queued
    for release is not in use) and its loan is still held.
"""

from __future__ import annotations

from uvmloan.errors import InvariantViolation, KernelAssertion

from .mbuf import M_EXT_PAGES, M_EXT_ROMAP, Mbuf, is_free
from .socket import SocketLayer
from .zerocopy import ZcChunk, ZcHost


def _check_pinned(m: Mbuf, sb: object) -> None:
    """S2 for pinned (MSG_ZEROCOPY) storage: its pin is held, every page wired."""
    ext = m.m_ext
    assert ext is not None
    chunk = ext.ext_arg
    if not isinstance(chunk, ZcChunk) or chunk.released:
        raise InvariantViolation("S2", f"{m!r} in {sb!r} refers to a pin already released")
    for pg in chunk.pages:
        if pg.wire_count < 1:
            raise InvariantViolation("S2", f"{m!r} in {sb!r}: pinned {pg!r} is not wired")


def _loan_of(layer: SocketLayer, m: Mbuf) -> object:
    ext = m.m_ext
    assert ext is not None
    ps = layer.machine.page_size
    return layer.loans.get(ext.ext_buf - ext.ext_buf % ps)


def check_socket_invariants(layer: SocketLayer) -> None:
    for so in layer.sockets:
        for sb in (so.so_snd, so.so_rcv):
            # S2 first: a freed mbuf also breaks the chain S1 would count.
            for m in sb.mbufs():
                if is_free(m):
                    raise InvariantViolation("S2", f"{sb!r} of {so!r} holds freed {m!r}")
                if m.m_flags & M_EXT_PAGES:
                    ext = m.m_ext
                    assert ext is not None
                    if ext.ext_refcnt < 1:
                        raise InvariantViolation("S2", f"{m!r} in {sb!r}: storage refcnt 0")
                    if not m.m_flags & M_EXT_ROMAP:
                        _check_pinned(m, sb)
                        continue
                    kl = _loan_of(layer, m)
                    if kl is None or getattr(kl, "released", True):
                        raise InvariantViolation(
                            "S2", f"{m!r} in {sb!r} refers to a loan already released"
                        )
            try:
                sb.check()
            except KernelAssertion as e:
                raise InvariantViolation("S1", str(e)) from e
    ps = layer.machine.page_size
    held = sum(kl.npages * ps for kl in layer.loans.values())
    if layer.socurkva != held:
        raise InvariantViolation("S3", f"socurkva {layer.socurkva} but loans hold {held}")
    pend = list(layer.so_pendfree)
    for so in layer.sockets:
        pend.extend(so.so_pendfree)
    for m in pend:
        ext = m.m_ext
        if ext is None or ext.ext_refcnt != 0:
            raise InvariantViolation("S4", f"pending {m!r} still referenced")
        if _loan_of(layer, m) is None:
            raise InvariantViolation("S4", f"pending {m!r} has no loan")


def check_quiescent(layer: SocketLayer) -> None:
    """At quiescence: no loan, no loan KVA, no mbuf or cluster left."""
    check_socket_invariants(layer)
    if layer.loans or layer.machine.kernel_loans or layer.socurkva:
        raise InvariantViolation(
            "leak", f"{len(layer.loans)} loans, {layer.socurkva} bytes of loan KVA held"
        )
    if layer.so_pendfree:
        raise InvariantViolation("leak", f"{len(layer.so_pendfree)} mbufs still pending free")
    zc = layer.zerocopy
    if isinstance(zc, ZcHost) and (zc.chunks or zc.locked_vm):
        raise InvariantViolation(
            "leak", f"{len(zc.chunks)} pinned storages, locked_vm {dict(zc.locked_vm)} left"
        )
    layer.pool.check_leaks()


__all__ = ["check_quiescent", "check_socket_invariants"]
