"""Deliberate bugs, switched on per machine, that the test suite must catch.

An invariant that can never fail is worth nothing: each switch below breaks
one thing NetBSD gets right, and the suite has a test proving the shipped
state machines or invariant checks find it.

* ``skip-pmap-update``: ``pmap_update`` does nothing, so deferred TLB
  shootdowns never happen (stale TLB entries survive remove/protect).
* ``sync-pv-no-shootdown``: ``pmap_page_protect`` (``pmap_sync_pv``)
  changes PTEs but queues no TLB shootdown, so another CPU keeps writing a
  page that was just write-protected for a loan.
* ``skip-loan-protect``: the first loan of a page does not write-protect
  its user mappings, so the owner can change bytes the borrower holds.
* ``unloan-before-kremove``: a kernel borrower gives its pages back before
  removing its mappings and completing ``pmap_update`` (``sodoloanfree``'s
  order reversed), so an orphan is freed while the kernel still maps it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .machine import Machine

BUGS = (
    "skip-pmap-update",
    "sync-pv-no-shootdown",
    "skip-loan-protect",
    "unloan-before-kremove",
)


def inject(m: Machine, bug: str, on: bool = True) -> None:
    """Switch an injected bug on (or off) in machine ``m``."""
    if bug not in BUGS:
        raise ValueError(f"unknown injected bug {bug!r}; known: {', '.join(BUGS)}")
    if bug == "skip-pmap-update":
        m.pmap.inject_skip_update = on
    elif bug == "sync-pv-no-shootdown":
        m.pmap.inject_sync_pv_no_shootdown = on
    elif on:
        m.uvm.inject.add(bug)
    else:
        m.uvm.inject.discard(bug)
