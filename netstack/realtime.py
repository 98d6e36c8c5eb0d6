"""Real time: the network's simulated clock follows the wall clock.

While a real peer (a TUN device: :mod:`netstack.tun`) is attached, the
model's timers and the kernel's must agree: a retransmission timer of 1 s
in the model has to fire about 1 s of real time after its segment left, or
the kernel would see the model retransmit long before (or after) it could.
:class:`RealtimeScheduler` is a :class:`uvmloan.sim.Scheduler` (the same
heap, the same deterministic order of equal times) whose ``step()`` first
looks at the wall clock:

* simulated time is ``sim0 + (monotonic_ns() - wall0)``, pinned when the
  first source attaches;
* an event that is due (its time is at or before the wall clock's) runs at
  once; the model usually lags the wall clock while it works (Python is
  slower than the cost model's NetBSD), so a busy model never sleeps; every
  ``pump_interval_ns`` of wall time it still polls the sources without
  waiting, so the kernel's frames do not pile up in the device while the
  model catches up;
* when the next event lies in the future (or nothing is pending), it waits
  in ``select(2)`` on the sources' descriptors until that time or until a
  frame arrives, whichever is first: it sleeps only when the model has
  nothing due and the device has nothing to read;
* a frame read from a source is scheduled at ``max(now, wall clock)``: it
  arrives when it really arrived, after everything already due;
* a wait ends early, and ``step()`` returns without running anything, when
  another thread calls :meth:`RealtimeScheduler.wakeup` (the kernel side's
  user threads do when they finish: the caller's condition may hold now),
  and in any case after ``max_wait_ns``, so a caller waiting for a condition
  another thread sets re-checks it at least that often, however far away
  the next event (TIME_WAIT's 60 s) is.

The cost model still accounts CPU time inside the model: an activity's
effects are stamped at its CPU's clock as always; the wall clock only
decides when an event may run, never what an activity costs.

Why a subclass rather than a loop around ``net.sched``: the socket layer's
blocking calls (``connect``, ``accept``, a ``send`` waiting for buffer
space, ``host.sleep``) drive the scheduler themselves, through
``next_time()`` and ``step()``; an outside loop would not see them, and a
blocked ``connect`` would find nothing pending and give up before the
kernel's SYN-ACK came.  So the pacing lives in ``step()`` and
``next_time()`` (which, while sources are attached, never says "nothing
pending": the kernel may always send something; it answers a poll
``idle_poll_ns`` ahead).  ``uvmloan`` is untouched: the subclass is made by
:func:`realtime_network` before any host exists, so every host and link
uses it.  Without sources it is the plain discrete-event scheduler again,
so after the real peer is detached ``run_until_idle()`` runs the model's
remaining timers (TIME_WAIT's 2 MSL) in simulated time, without waiting.
``run_until(cond, timeout_s)`` is the runner for code that waits for a
condition with a real peer attached (``run_until_idle`` stops as soon as
the model has nothing pending, which with a real peer is not idle).
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable
from typing import Protocol

import attrs

from uvmloan.sim import Scheduler

from .network import Network


class Source(Protocol):
    """Something with a descriptor that brings frames in (a TUN device)."""

    def fileno(self) -> int: ...

    def pump(self) -> int:
        """Read what is ready without blocking; returns how many frames."""
        ...


@attrs.define(slots=True, eq=False)
class RealtimeScheduler(Scheduler):
    idle_poll_ns: int = 20_000_000
    pump_interval_ns: int = 200_000
    max_wait_ns: int = 50_000_000
    _sources: dict[int, Source] = attrs.field(factory=dict)
    _wall0: int = 0
    _sim0: int = 0
    _last_pump: int = 0
    _wake: tuple[int, int] | None = None  # self-pipe: (read end, write end)
    # what the pacing did: waits, wall ns spent waiting, polls
    waits: int = 0
    waited_ns: int = 0
    polls: int = 0

    # ---------------------------------------------------------- sources

    @property
    def realtime(self) -> bool:
        return bool(self._sources)

    def attach(self, src: Source) -> None:
        if not self._sources:
            self._wall0 = time.monotonic_ns()
            self._sim0 = self.now
        if self._wake is None:
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            self._wake = (r, w)
        self._sources[src.fileno()] = src

    def detach(self, src: Source) -> None:
        for fd, s in list(self._sources.items()):
            if s is src:
                del self._sources[fd]
        if not self._sources and self._wake is not None:
            r, w = self._wake
            self._wake = None
            os.close(r)
            os.close(w)

    def wakeup(self) -> None:
        """End the current wait (thread-safe: for the kernel side's threads)."""
        wk = self._wake
        if wk is not None:
            with contextlib.suppress(OSError):  # full (a wake is pending) or closed
                os.write(wk[1], b"w")

    def wall(self) -> int:
        """The wall clock in simulated ns (meaningful while realtime)."""
        return self._sim0 + time.monotonic_ns() - self._wall0

    def arrival_time(self) -> int:
        """When a frame read now arrives: not before anything already run."""
        w = self.wall()
        return w if w > self.now else self.now

    def _poll(self, timeout_ns: int) -> tuple[int, bool]:
        """Frames read, and whether a wakeup came."""
        self.polls += 1
        fds = list(self._sources)
        wk = self._wake
        if wk is not None:
            fds.append(wk[0])
        if timeout_ns > 0:
            t0 = time.monotonic_ns()
            ready, _, _ = select.select(fds, [], [], timeout_ns / 1e9)
            self.waits += 1
            self.waited_ns += time.monotonic_ns() - t0
        else:
            ready, _, _ = select.select(fds, [], [], 0)
        got = 0
        woken = False
        for fd in ready:
            if wk is not None and fd == wk[0]:
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 4096)
                woken = True
                continue
            src = self._sources.get(fd)
            if src is not None:
                got += src.pump()
        return got, woken

    # ------------------------------------------------------------ stepping

    def next_time(self) -> int | None:
        t = Scheduler.next_time(self)
        if t is None and self._sources:
            # a real peer may send at any time: never "nothing pending"
            return self.arrival_time() + self.idle_poll_ns
        return t

    def step(self) -> bool:
        if not self._sources:
            return Scheduler.step(self)
        return self._step(None)

    def step_by(self, deadline: int) -> bool:
        # Scheduler.step_by reads the heap itself; here the head's time and
        # the step are the real-time ones above (as Host.sleep's loop used
        # them before step_by existed)
        nxt = self.next_time()
        if nxt is None or nxt > deadline:
            return False
        self.step()
        return True

    def _step(self, until: int | None) -> bool:
        """One event, or one wait (ended by a frame, a wakeup, ``max_wait_ns``,
        the head's time or the wall clock reaching ``until``)."""
        while True:
            head = Scheduler.next_time(self)
            wall = self.wall()
            if head is not None and head <= wall:
                if wall - self._last_pump >= self.pump_interval_ns:
                    self._last_pump = wall
                    # frames read now are stamped at the wall clock, after head
                    self._poll(0)
                return Scheduler.step(self)
            limit = self.idle_poll_ns if head is None else head - wall
            if limit > self.max_wait_ns:
                limit = self.max_wait_ns
            if until is not None and until - wall < limit:
                limit = max(until - wall, 0)
            self._last_pump = wall
            got, _woken = self._poll(limit)
            if got:
                continue  # they are due now: run them
            # a wakeup, or the wait ran out: time passed (not beyond the
            # head, which runs on the next call); the caller looks again
            w = self.wall()
            if head is not None and w > head:
                w = head
            if w > self.now:
                self.now = w
            return True

    def run_until(self, when: int) -> int:
        """Every event due at or before ``when``; in real time also until the
        wall clock reaches ``when`` (simulated time never runs ahead of it)."""
        ran = 0
        while self._sources:
            head = Scheduler.next_time(self)
            if (head is None or head > when) and self.wall() >= when:
                break
            self._step(when)
            ran += 1
        if not self._sources:
            ran += Scheduler.run_until(self, when)
        self.now = max(self.now, when)
        return ran

    def run_until_cond(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        """Step until ``cond()``, at most ``timeout_s`` of wall time; returns cond()."""
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                return cond()
            if not self.step():
                return cond()
        return True


def realtime_network(seed: int = 0) -> Network:
    """A :class:`Network` whose scheduler is a :class:`RealtimeScheduler`
    (real time only while a source is attached)."""
    net = Network(seed=seed)
    net.sched = RealtimeScheduler()
    return net


def run_until(net: Network, cond: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    """Drive ``net`` until ``cond()`` holds (or ``timeout_s`` of wall time)."""
    sched = net.sched
    if not isinstance(sched, RealtimeScheduler):
        raise TypeError("run_until needs a network made by realtime_network()")
    return sched.run_until_cond(cond, timeout_s)


__all__ = ["RealtimeScheduler", "Source", "realtime_network", "run_until"]
