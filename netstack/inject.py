"""Deliberate socket-layer bugs the tests must catch (cf. ``uvmloan.inject``).

* ``free-loaned-early``: ``sbdrop`` frees a loaned mbuf as soon as its
  first byte is acknowledged, though the rest is still unacknowledged in
  the send buffer (its loan ends while the buffer still refers to it).
* ``skip-kremove-barrier``: ``sodoloanfree`` skips the ``pmap_update``
  between ``pmap_kremove`` and ``uvm_unloan``: an orphan is freed while a
  TLB may still translate the loan KVA to it.
* ``sbcompress-merge-loaned``: ``sbcompress`` ignores that loaned storage
  is read-only and copies a small mbuf into a loaned mbuf's pages.
* ``forget-retransmit-ref``: a retransmission's ``m_copym`` does not hold
  its reference to loaned storage, so the loan ends when that copy is
  freed at transmit completion, while the send buffer still holds it.

Each has a test proving which check catches it (tests/netstack/test_inject.py).
"""

from __future__ import annotations

from typing import Any

from .socket import SocketLayer

BUGS = (
    "free-loaned-early",
    "skip-kremove-barrier",
    "sbcompress-merge-loaned",
    "forget-retransmit-ref",
)


def inject(target: Any, bug: str, on: bool = True) -> None:
    """Switch ``bug`` on (or off) in a SocketLayer or a Host's socket layer."""
    if bug not in BUGS:
        raise ValueError(f"unknown injected bug {bug!r}; known: {', '.join(BUGS)}")
    if isinstance(target, SocketLayer):
        layer = target
    else:
        from .sockapi import get_layer

        layer = get_layer(target)
    if on:
        layer.inject.add(bug)
    else:
        layer.inject.discard(bug)


__all__ = ["BUGS", "inject"]
