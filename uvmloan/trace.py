"""Typed trace events, evcnt-style counters derived from them, and sinks.

Every state change of the model emits one frozen event carrying the simulated
time, the CPU and the address space.  Counters are computed *from* the events
(``Event.counter_keys``), so a counter and the trace can never disagree.
Call sites guard construction with ``if tracer.on:``; a machine built with
``trace="off"`` therefore pays one attribute check per site and keeps no
counters.

Counter names follow NetBSD's ``vmstat -e`` spelling ("group name") where
NetBSD has the counter: ``TLB shootdown`` is x86_tlb.c's ``pmap_tlb_evcnt``,
``tlbshoot kernel KENTER`` its TLBSTATS counters.
"""

from __future__ import annotations

import enum
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

import attrs


@attrs.frozen(slots=True)
class Event:
    """Base of every trace event: simulated time (ns), CPU and address space."""

    KIND: ClassVar[str] = "event"

    t: int
    cpu: int
    space: str

    def counter_keys(self) -> tuple[str, ...]:
        return (self.KIND,)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ev": self.KIND}
        for a in attrs.fields(type(self)):
            d[a.name] = _jsonable(getattr(self, a.name))
        return d


def _jsonable(v: Any) -> Any:
    if isinstance(v, enum.Flag):
        return v.name if v.name is not None else v.value
    if isinstance(v, enum.Enum):
        return v.name
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


# --- physical pages -------------------------------------------------------


@attrs.frozen(slots=True)
class PageAlloc(Event):
    KIND: ClassVar[str] = "page alloc"
    frame: int
    owner: str


@attrs.frozen(slots=True)
class PageFree(Event):
    KIND: ClassVar[str] = "page free"
    frame: int


@attrs.frozen(slots=True)
class Orphan(Event):
    """uvm_pagefree's loan branch (T5) or a loan break left a page ownerless."""

    KIND: ClassVar[str] = "loan.orphan"
    frame: int
    loan_count: int
    why: str


# --- loans (uvm_loan.c) ------------------------------------------------------


@attrs.frozen(slots=True)
class Loan(Event):
    """One page (or anon) lent: kind is A->K, O->K, zero->K or A->A."""

    KIND: ClassVar[str] = "loan"
    kind: str
    frame: int
    va: int
    loan_count: int
    protected: bool  # this loan write-protected the page (0 -> 1 transition)

    def counter_keys(self) -> tuple[str, ...]:
        return (self.KIND, f"loan.{self.kind}")


@attrs.frozen(slots=True)
class Unloan(Event):
    KIND: ClassVar[str] = "unloan"
    frame: int
    loan_count: int
    freed: bool


@attrs.frozen(slots=True)
class LoanFail(Event):
    """uvm_loan failed and undid ``undone`` partial loans."""

    KIND: ClassVar[str] = "loan.fail"
    errno: int
    reason: str
    undone: int


@attrs.frozen(slots=True)
class LoanBreak(Event):
    """uvm_loanbreak (object page) or uvm_loanbreak_anon: a copy replaced a loaned page."""

    KIND: ClassVar[str] = "loan.break"
    kind: str  # "anon" or "object"
    old_frame: int
    new_frame: int
    loan_count: int  # of the old page, after the break
    where: str  # "fault", "write(2)", "mlock", ...
    va: int  # the faulting user address, or -1 (write(2), truncate)

    def counter_keys(self) -> tuple[str, ...]:
        return (self.KIND, f"loan.break.{self.kind}")


@attrs.frozen(slots=True)
class Adopt(Event):
    KIND: ClassVar[str] = "loan.adopt"
    frame: int


@attrs.frozen(slots=True)
class Reclaim(Event):
    """The pagedaemon took a page from its owner."""

    KIND: ClassVar[str] = "pdaemon.reclaim"
    frame: int
    loaned: bool
    result: str  # "freed", "orphaned", "paged out", "skipped: ..."

    def counter_keys(self) -> tuple[str, ...]:
        return (self.KIND, f"pdaemon.{self.result.split(':')[0]}")


# --- pmap operations ------------------------------------------------------


@attrs.frozen(slots=True)
class PmapEnter(Event):
    KIND: ClassVar[str] = "pmap enter"
    va: int
    frame: int
    prot: int
    managed: bool
    wired: bool


@attrs.frozen(slots=True)
class PmapRemove(Event):
    KIND: ClassVar[str] = "pmap remove"
    va: int
    frame: int


@attrs.frozen(slots=True)
class PmapProtect(Event):
    KIND: ClassVar[str] = "pmap protect"
    va: int
    prot: int


@attrs.frozen(slots=True)
class PageProtect(Event):
    """pmap_page_protect(pg, prot): lowers every managed mapping of a page."""

    KIND: ClassVar[str] = "pmap page_protect"
    frame: int
    prot: int
    mappings: int


@attrs.frozen(slots=True)
class KEnter(Event):
    KIND: ClassVar[str] = "pmap kenter_pa"
    va: int
    frame: int
    prot: int


@attrs.frozen(slots=True)
class KRemove(Event):
    KIND: ClassVar[str] = "pmap kremove"
    va: int
    frame: int


@attrs.frozen(slots=True)
class PmapUpdate(Event):
    KIND: ClassVar[str] = "pmap update"


# --- TLB shootdowns (x86_tlb.c) -----------------------------------------------


@attrs.frozen(slots=True)
class ShootdownQueued(Event):
    """pmap_tlb_shootdown(): one request added to this CPU's packet.

    ``scope`` is TLBSTATS' classification: "kernel" for the kernel pmap,
    else "local" and/or "remote" relative to the requesting CPU.
    """

    KIND: ClassVar[str] = "tlbshoot request"
    va: int  # -1 asks for a full flush
    reason: str
    scopes: tuple[str, ...]
    global_pte: bool
    allva: bool  # the packet is (now) a full flush

    def counter_keys(self) -> tuple[str, ...]:
        keys = [self.KIND]
        if self.va != -1:
            keys.append("tlbshoot single page requests")
        keys.extend(f"tlbshoot {s} {self.reason}" for s in self.scopes)
        return tuple(keys)


@attrs.frozen(slots=True)
class ShootdownRound(Event):
    """pmap_tlb_shootnow(): one packet processed.

    ``remote`` rounds increment NetBSD's ``TLB shootdown`` evcnt exactly once,
    however many IPIs they send; local-only rounds count nothing there.
    """

    KIND: ClassVar[str] = "tlbshoot round"
    targets: tuple[int, ...]
    nva: int  # individual VAs (0 when allva)
    allva: bool
    global_flush: bool
    broadcast: bool
    waited_ns: int

    def counter_keys(self) -> tuple[str, ...]:
        remote = any(c != self.cpu for c in self.targets)
        keys = ["TLB shootdown" if remote else "tlbshoot local-only round"]
        # x86_tlb.c 1.20 (TLBSTATS): "tlbshoot single page issues" grows by
        # the packet's VA count, on rounds that went remote only.
        if remote and not self.allva and self.nva:
            keys.extend(["tlbshoot single page issues"] * self.nva)
        return tuple(keys)


@attrs.frozen(slots=True)
class IPISent(Event):
    KIND: ClassVar[str] = "ipi sent"
    target: int  # -1: one broadcast to all-but-self (LAPIC_DEST_ALLEXCL)
    vector: str

    def counter_keys(self) -> tuple[str, ...]:
        return (self.KIND, "ipi broadcast" if self.target == -1 else "ipi unicast")


@attrs.frozen(slots=True)
class IPIDelivered(Event):
    """A target CPU ran the shootdown handler (``cpu`` is the target)."""

    KIND: ClassVar[str] = "ipi delivered"
    source: int
    vector: str


@attrs.frozen(slots=True)
class TLBInvalidate(Event):
    """One INVLPG on ``cpu``."""

    KIND: ClassVar[str] = "tlb invlpg"
    va: int


@attrs.frozen(slots=True)
class TLBFlush(Event):
    """A full flush: tlbflush() (non-global) or tlbflushg() (global too)."""

    KIND: ClassVar[str] = "tlb flush"
    global_flush: bool
    why: str

    def counter_keys(self) -> tuple[str, ...]:
        return (self.KIND, "tlb flushg" if self.global_flush else "tlb flush nonglobal")


@attrs.frozen(slots=True)
class ASIDReset(Event):
    """MI pmap_tlb.c: a pmap's ASID is retired on a CPU where it is not on-processor."""

    KIND: ClassVar[str] = "asid reset"
    target: int


@attrs.frozen(slots=True)
class ContextSwitch(Event):
    KIND: ClassVar[str] = "context switch"
    old: str
    new: str


@attrs.frozen(slots=True)
class Fault(Event):
    """A page fault taken by the MMU and what the handler made of it."""

    KIND: ClassVar[str] = "fault"
    va: int
    access: str
    why: str  # "miss" (not present) or "protection"
    result: str

    def counter_keys(self) -> tuple[str, ...]:
        return (self.KIND, f"fault {self.result}")


# --- tracer and sinks ---------------------------------------------------------

Sink = Callable[[Event], None]


@attrs.define(slots=True, eq=False)
class Tracer:
    """Receives events, derives counters, forwards to sinks.

    ``on`` is False only for machines built with ``trace="off"``: events are
    not even constructed then, and counters stay empty.
    """

    on: bool = True
    counters: Counter[str] = attrs.field(factory=Counter)
    events: list[Event] | None = None
    sinks: list[Sink] = attrs.field(factory=list)

    def emit(self, ev: Event) -> None:
        c = self.counters
        for k in ev.counter_keys():
            c[k] += 1
        if self.events is not None:
            self.events.append(ev)
        for s in self.sinks:
            s(ev)

    def record(self) -> list[Event]:
        """Start keeping events in memory (idempotent); returns the list."""
        if self.events is None:
            self.events = []
        return self.events

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        self.sinks.remove(sink)

    def select(self, *kinds: type[Event]) -> Iterator[Event]:
        """Recorded events of the given classes (all if none given)."""
        for ev in self.events or ():
            if not kinds or isinstance(ev, kinds):
                yield ev


def counters_from(events: Iterable[Event]) -> Counter[str]:
    """Recompute counters from a trace (what ``Tracer.counters`` must equal)."""
    c: Counter[str] = Counter()
    for ev in events:
        for k in ev.counter_keys():
            c[k] += 1
    return c


class JSONLinesSink:
    """Writes one JSON object per event; close() (or a with-block) flushes."""

    def __init__(self, target: str | Path | IO[str]) -> None:
        if isinstance(target, str | Path):
            self._fh: IO[str] = open(target, "w", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        elif isinstance(target, io.TextIOBase) or hasattr(target, "write"):
            self._fh = target
            self._owned = False
        else:
            raise TypeError("JSONLinesSink needs a path or a text file object")

    def __call__(self, ev: Event) -> None:
        self._fh.write(json.dumps(ev.to_dict(), separators=(",", ":")))
        self._fh.write("\n")

    def close(self) -> None:
        if self._owned:
            self._fh.close()
        else:
            self._fh.flush()

    def __enter__(self) -> JSONLinesSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(events: Iterable[Event], target: str | Path | IO[str]) -> None:
    with JSONLinesSink(target) as sink:
        for ev in events:
            sink(ev)
