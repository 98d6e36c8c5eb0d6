"""Simulated time: integer nanoseconds, per-CPU clocks and one scheduler.

Each CPU keeps its own clock, advanced by what it executes (the profile's
cost model).  The scheduler holds timed callbacks (timers, link deliveries,
deferred work) ordered by time and then by insertion, so equal times always
run in the same order and every run is reproducible.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import attrs

# The smallest heap post() compacts (Scheduler._compact).
_COMPACT_MIN = 1024


class Timer:
    """A handle to a scheduled callback; ``cancel()`` makes it a no-op."""

    # A plain slotted class rather than an attrs one: one is built for every
    # callback the network schedules (several per TCP segment), and the
    # attrs-generated __init__ was a measurable part of scheduling.
    __slots__ = ("fn", "seq", "when")

    def __init__(self, when: int, seq: int, fn: Callable[[], None] | None) -> None:
        self.when = when
        self.seq = seq
        self.fn = fn

    def cancel(self) -> None:
        self.fn = None

    @property
    def cancelled(self) -> bool:
        return self.fn is None

    def __lt__(self, other: Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def __repr__(self) -> str:
        return f"Timer(when={self.when!r}, seq={self.seq!r}, fn={self.fn!r})"


_new_timer = object.__new__


@attrs.define(slots=True, eq=False)
class Scheduler:
    """A heap of timed callbacks with deterministic tie-breaking."""

    now: int = 0
    # (when, seq, timer): tuples compare in C, far faster than Timer.__lt__
    _heap: list[tuple[int, int, Timer]] = attrs.field(factory=list)
    _seq: int = 0
    # The heap size at which post() drops the cancelled entries (see _compact).
    _compact_at: int = _COMPACT_MIN

    def call_at(self, when: int, fn: Callable[[], None]) -> Timer:
        if not isinstance(when, int):
            raise TypeError(f"when must be integer nanoseconds, not {type(when).__name__}")
        if when < self.now:
            raise ValueError(f"cannot schedule at {when} ns, before now ({self.now} ns)")
        return self.post(when, fn)

    def post(self, when: int, fn: Callable[[], None]) -> Timer:
        """``call_at`` for the simulator's own callers, which schedule at an
        int time not before now by construction (a CPU clock, now plus a
        non-negative delay): the checks are a KASSERT here, not an error."""
        assert when >= self.now, (when, self.now)
        seq = self._seq = self._seq + 1
        # Timer(when, seq, fn) without its __init__ frame: the network posts
        # four or five callbacks per TCP segment
        timer = _new_timer(Timer)
        timer.when = when
        timer.seq = seq
        timer.fn = fn
        heap = self._heap
        heapq.heappush(heap, (when, seq, timer))
        if len(heap) >= self._compact_at:
            self._compact()
        return timer

    def _compact(self) -> None:
        """Drop the cancelled entries from the heap.

        A re-armed callout (TCP's retransmit and delayed-ACK timers, on
        nearly every segment) leaves its cancelled entry behind until its
        time comes, so the heap would hold thousands of dead entries and
        every push and pop would pay for them.  Entries are ordered by
        (when, seq), which is unique, so the order the live ones run in is
        the same with or without them.  Amortised: the next compaction waits
        until the heap has doubled again.
        """
        heap = self._heap
        heap[:] = [e for e in heap if e[2].fn is not None]
        heapq.heapify(heap)
        self._compact_at = max(_COMPACT_MIN, 2 * len(heap))

    def call_after(self, delay: int, fn: Callable[[], None]) -> Timer:
        if not isinstance(delay, int) or delay < 0:
            raise ValueError(f"delay must be a non-negative integer of ns, got {delay!r}")
        return self.call_at(self.now + delay, fn)

    def pending(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)

    def next_time(self) -> int | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def peek(self) -> Timer | None:
        """The earliest pending callback's handle, without running it."""
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][2] if self._heap else None

    def step(self) -> bool:
        """Run the earliest callback; False when nothing is pending."""
        heap = self._heap
        while heap:
            _, _, timer = heapq.heappop(heap)
            fn = timer.fn
            if fn is None:
                continue
            timer.fn = None
            if timer.when > self.now:
                self.now = timer.when
            fn()
            return True
        return False

    def step_by(self, deadline: int) -> bool:
        """Run the earliest callback if it is due at or before ``deadline``;
        False (nothing run) when none is.  ``next_time`` and ``step`` in one
        call, for loops that run the network until a condition holds."""
        heap = self._heap
        while heap:
            when, _, timer = heap[0]
            fn = timer.fn
            if fn is None:
                heapq.heappop(heap)
                continue
            if when > deadline:
                return False
            heapq.heappop(heap)
            timer.fn = None
            if when > self.now:
                self.now = when
            fn()
            return True
        return False

    def run_until(self, when: int) -> int:
        """Run every callback due at or before ``when``; returns how many ran."""
        ran = 0
        while True:
            nxt = self.next_time()
            if nxt is None or nxt > when:
                break
            self.step()
            ran += 1
        self.now = max(self.now, when)
        return ran

    def run(self, max_events: int | None = None) -> int:
        ran = 0
        while (max_events is None or ran < max_events) and self.step():
            ran += 1
        return ran
