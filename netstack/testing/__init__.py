"""Hypothesis state machines for users of netstack.

* ``socket_machine.SocketStateMachine``: two hosts, a lossy link, a TCP
  connection driven by random sends (any size and alignment), overwrites,
  receives and time; checked for exact bytes, the VM and socket invariants
  and, at quiescence, no leak.

Run with :func:`uvmloan.testing.run_machine`; subclass to change the link
or switch on a bug of :mod:`netstack.inject`.
"""

from __future__ import annotations

__all__: list[str] = []
