"""Typed trace events, evcnt-style counters derived from them, and sinks.

Every state change of the model emits one frozen event carrying the simulated
time, the CPU and the address space.  Counters are computed *from* the events
(``Event.counter_keys``), so a counter and the trace can never disagree.
Call sites guard construction with ``if tracer.on:``; a machine built with
``trace="off"`` therefore pays one attribute check per site and keeps no
counters.  Hot sites also test ``tracer.full`` and, when nobody records or
sinks events, only bump the counters the event would have
(``Tracer.count``): an event class whose keys depend on its fields computes
them in a static ``keys(...)`` helper that ``counter_keys`` also uses, so
the two paths cannot disagree (tests/test_trace_counting.py runs both).

Counter names follow NetBSD's ``vmstat -e`` spelling ("group name") where
NetBSD has the counter: ``TLB shootdown`` is x86_tlb.c's ``pmap_tlb_evcnt``,
``tlbshoot kernel KENTER`` its TLBSTATS counters.

One vocabulary (``specs/trace.md``): an event's name (``Event.name``, the
``ev`` of its JSON Lines record) is the first counter it increments, so
counting records by ``ev`` gives that counter, and the demo's text uses the
same words.  A JSON Lines file starts with a header (``trace_header``) and
``read_jsonl`` turns it back into typed events.
"""

from __future__ import annotations

import enum
import functools
import io
import json
from collections import Counter, _count_elements  # type: ignore[attr-defined]
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

import attrs

from ._version import __version__

# Version of the JSON Lines layout written by JSONLinesSink (the header's
# "schema"); read_jsonl refuses files of another version.
SCHEMA_VERSION = 1
HEADER_EV = "header"
UNITS = {
    "t": "ns (simulated, the CPU's clock)",
    "waited_ns": "ns (simulated)",
    "va": "byte address",
    "frame": "page frame number",
    "prot": "vm_prot_t bits (1 read, 2 write, 4 execute); prot_name spells them",
}


@attrs.frozen(slots=True)
class Event:
    """Base of every trace event: simulated time (ns), CPU and address space."""

    KIND: ClassVar[str] = "event"
    # Fields holding an int sentinel that JSON spells as a word (or null):
    # {field: (model value, JSON value)}.
    JSON_SENTINELS: ClassVar[dict[str, tuple[int, Any]]] = {}

    t: int
    cpu: int
    space: str

    @property
    def name(self) -> str:
        """The event's name in the vocabulary: its JSON ``ev``, its first counter."""
        return self.KIND

    def counter_keys(self) -> tuple[str, ...]:
        return (self.KIND,)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ev": self.name}
        sentinels = self.JSON_SENTINELS
        for a in attrs.fields(type(self)):
            v = getattr(self, a.name)
            if a.name in sentinels and v == sentinels[a.name][0]:
                d[a.name] = sentinels[a.name][1]
            else:
                d[a.name] = _jsonable(v)
            if a.name == "prot":
                d["prot_name"] = prot_name(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        """The event a ``to_dict`` record describes (the class named by ``ev``)."""
        ev = d.get("ev")
        klass = _BY_NAME.get(ev) if isinstance(ev, str) else None
        if klass is None and isinstance(ev, str) and _load_layer_events():
            klass = _BY_NAME.get(ev)  # an event of a layer above the model
        if klass is None or (cls is not Event and klass is not cls):
            raise ValueError(f"unknown trace event {ev!r}")
        kwargs: dict[str, Any] = {}
        sentinels = klass.JSON_SENTINELS
        for a in attrs.fields(klass):
            if a.name not in d:
                raise ValueError(f"trace event {ev!r} lacks field {a.name!r}")
            v = d[a.name]
            if a.name in sentinels and v == sentinels[a.name][1]:
                v = sentinels[a.name][0]
            elif isinstance(v, list):
                v = tuple(v)
            kwargs[a.name] = v
        out = klass(**kwargs)
        if out.name != ev:
            raise ValueError(f"trace event {ev!r} does not match its fields ({out.name!r})")
        return out


def prot_name(prot: int) -> str:
    """vm_prot_t as letters: 1 -> "r", 3 -> "rw", 7 -> "rwx", 0 -> "none"."""
    letters = "".join(c for bit, c in ((1, "r"), (2, "w"), (4, "x")) if prot & bit)
    return letters or "none"


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
        return Loan.keys(self.kind)

    @staticmethod
    def keys(kind: str) -> tuple[str, ...]:
        return _LOAN_KEYS.get(kind) or (Loan.KIND, f"loan.{kind}")


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
    va: int  # the faulting user address, or -1 (write(2), truncate): null in JSON

    JSON_SENTINELS: ClassVar[dict[str, tuple[int, Any]]] = {"va": (-1, None)}

    def counter_keys(self) -> tuple[str, ...]:
        return LoanBreak.keys(self.kind)

    @staticmethod
    def keys(kind: str) -> tuple[str, ...]:
        return _BREAK_KEYS.get(kind) or (LoanBreak.KIND, f"loan.break.{kind}")


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
        return Reclaim.keys(self.result)

    @staticmethod
    def keys(result: str) -> tuple[str, ...]:
        return (Reclaim.KIND, f"pdaemon.{result.split(':')[0]}")


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
    JSON_SENTINELS: ClassVar[dict[str, tuple[int, Any]]] = {"va": (-1, None)}
    va: int  # -1 asks for a full flush: null in JSON
    reason: str
    scopes: tuple[str, ...]
    global_pte: bool
    allva: bool  # the packet is (now) a full flush

    def counter_keys(self) -> tuple[str, ...]:
        return ShootdownQueued.keys(self.va, self.reason, self.scopes)

    @staticmethod
    def keys(va: int, reason: str, scopes: tuple[str, ...]) -> tuple[str, ...]:
        keys = [ShootdownQueued.KIND]
        if va != -1:
            keys.append("tlbshoot single page requests")
        keys.extend(f"tlbshoot {s} {reason}" for s in scopes)
        return tuple(keys)


@attrs.frozen(slots=True)
class ShootdownRound(Event):
    """pmap_tlb_shootnow(): one packet processed (a "shootdown round").

    A round with a remote target is named ``TLB shootdown`` and increments
    NetBSD's evcnt of that name exactly once, however many IPIs it sends; a
    round done on the initiating CPU alone is ``tlbshoot local-only round``
    (the model's counter: NetBSD counts nothing for it).
    """

    KIND: ClassVar[str] = "TLB shootdown"
    LOCAL: ClassVar[str] = "tlbshoot local-only round"
    targets: tuple[int, ...]
    nva: int  # individual VAs (0 when allva)
    allva: bool
    global_flush: bool
    broadcast: bool
    waited_ns: int

    @property
    def remote(self) -> bool:
        return any(c != self.cpu for c in self.targets)

    @property
    def name(self) -> str:
        return self.KIND if self.remote else self.LOCAL

    def counter_keys(self) -> tuple[str, ...]:
        return ShootdownRound.keys(self.remote, self.allva, self.nva)

    @staticmethod
    def keys(remote: bool, allva: bool, nva: int) -> tuple[str, ...]:
        """``remote``: some target is not the initiating CPU."""
        if not remote:
            return (ShootdownRound.LOCAL,)
        # x86_tlb.c 1.20 (TLBSTATS): "tlbshoot single page issues" grows by
        # the packet's VA count, on rounds that went remote only.
        if not allva and nva:
            return (ShootdownRound.KIND, *["tlbshoot single page issues"] * nva)
        return (ShootdownRound.KIND,)


@attrs.frozen(slots=True)
class IPISent(Event):
    KIND: ClassVar[str] = "ipi sent"
    JSON_SENTINELS: ClassVar[dict[str, tuple[int, Any]]] = {"target": (-1, "broadcast")}
    target: int  # -1: one broadcast to all-but-self (LAPIC_DEST_ALLEXCL); JSON "broadcast"
    vector: str

    def counter_keys(self) -> tuple[str, ...]:
        return IPISent.keys(self.target)

    @staticmethod
    def keys(target: int) -> tuple[str, ...]:
        return (IPISent.KIND, "ipi broadcast" if target == -1 else "ipi unicast")


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
        return TLBFlush.keys(self.global_flush)

    @staticmethod
    def keys(global_flush: bool) -> tuple[str, ...]:
        return (TLBFlush.KIND, "tlb flushg" if global_flush else "tlb flush nonglobal")


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
        return Fault.keys(self.result)

    @staticmethod
    def keys(result: str) -> tuple[str, ...]:
        return _FAULT_KEYS.get(result) or (Fault.KIND, f"fault {result}")


# The common key tuples, built once (the fast path asks for them per event);
# the helpers above fall back to the f-string for any other value.
_LOAN_KEYS = {k: (Loan.KIND, f"loan.{k}") for k in ("A->K", "O->K", "zero->K", "A->A")}
_FAULT_KEYS = {r: (Fault.KIND, f"fault {r}") for r in ("resolved", "EFAULT")}
_BREAK_KEYS = {k: (LoanBreak.KIND, f"loan.break.{k}") for k in ("anon", "object")}


# --- tracer and sinks ---------------------------------------------------------

Sink = Callable[[Event], None]


def _refresh_full(tr: Tracer, _a: attrs.Attribute[Any], value: Any) -> Any:
    # runs before the assignment lands: recompute ``full`` from the new value
    on = value if _a.name == "on" else tr.on
    events = value if _a.name == "events" else tr.events
    sinks = value if _a.name == "sinks" else tr.sinks
    tr.full = bool(on) and (events is not None or bool(sinks))
    return value


def _refresh_tally(tr: Tracer, _a: attrs.Attribute[Any], value: Any) -> Any:
    tr.tally = functools.partial(_count_elements, value)
    return value


@attrs.define(slots=True, eq=False)
class Tracer:
    """Receives events, derives counters, forwards to sinks.

    ``on`` is False only for machines built with ``trace="off"``: events are
    not even constructed then, and counters stay empty.
    """

    on: bool = attrs.field(default=True, on_setattr=_refresh_full)
    counters: Counter[str] = attrs.field(factory=Counter, on_setattr=_refresh_tally)
    events: list[Event] | None = attrs.field(default=None, on_setattr=_refresh_full)
    sinks: list[Sink] = attrs.field(factory=list, on_setattr=_refresh_full)
    #: True while something wants whole events (a recording list or a sink).
    #: Hot paths test it and, when it is False, bump ``counters`` with the
    #: event's ``counter_keys`` without building the event: constructing a
    #: frozen event costs more than the operation it describes.
    full: bool = attrs.field(init=False, default=False)
    #: ``tally(keys)``: ``count(*keys)`` for the hot paths, without a Python
    #: frame (collections' C helper bound to ``counters``, which it follows
    #: when the attribute is replaced).
    tally: Callable[[Iterable[str]], None] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._refresh()
        self.tally = functools.partial(_count_elements, self.counters)

    def _refresh(self) -> None:
        self.full = self.on and (self.events is not None or bool(self.sinks))

    def count(self, *keys: str) -> None:
        """Counting-only mode: what ``emit`` would add for an event with these
        counter keys, when nobody records or sinks events."""
        _count_elements(self.counters, keys)

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
            self._refresh()
        return self.events

    def stop_recording(self) -> None:
        """Drop the in-memory event list (counters and sinks carry on)."""
        self.events = None
        self._refresh()

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)
        self._refresh()

    def remove_sink(self, sink: Sink) -> None:
        self.sinks.remove(sink)
        self._refresh()

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


def _event_classes() -> dict[str, type[Event]]:
    # From the module's names, not Event.__subclasses__(): attrs' slotted
    # classes replace the class statement's class, which may linger there.
    out: dict[str, type[Event]] = {}
    for v in list(globals().values()):
        if isinstance(v, type) and issubclass(v, Event) and v is not Event:
            if v.KIND in out:
                raise AssertionError(f"two event classes named {v.KIND!r}")
            out[v.KIND] = v
    out[ShootdownRound.LOCAL] = ShootdownRound
    return out


def _fast_init(cls: type[Event]) -> None:
    """Give an event class an ``__init__`` that stores through the slot
    descriptors directly.

    attrs' ``__init__`` for a frozen class stores every field through
    ``object.__setattr__`` (its own ``__setattr__`` refuses); calling the
    slots' ``__set__`` instead builds the same instance about 40% faster,
    and the model builds one event per state change.  Same parameters in
    the same order, so ``cls(...)``, keywords and ``attrs.evolve`` behave as
    before; a class with defaults, validators or converters keeps attrs'.
    """
    fields = attrs.fields(cls)
    if any(
        a.default is not attrs.NOTHING or a.validator or a.converter or not a.init for a in fields
    ):
        return
    setters: dict[str, Any] = {}
    for a in fields:
        owner = next(k for k in cls.__mro__ if a.name in vars(k))
        setters[f"_set_{a.name}"] = vars(owner)[a.name].__set__
    names = [a.name for a in fields]
    src = f"def __init__(self, {', '.join(names)}):\n" + "".join(
        f"    _set_{n}(self, {n})\n" for n in names
    )
    exec(src, setters)  # generated from the class's own field names only
    init = setters["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]


_BY_NAME: dict[str, type[Event]] = _event_classes()
for _cls in set(_BY_NAME.values()):
    _fast_init(_cls)
# The model's own event names; ``_BY_NAME`` grows as layers register theirs.
MODEL_EVENTS: frozenset[str] = frozenset(_BY_NAME)


def register_event(cls: type[Event]) -> type[Event]:
    """Make a layer's own event class readable from a trace (``read_jsonl``,
    ``uvmloan trace``): the network stack's sosend and zerocopy events.  A
    layer lists the module that registers them in the ``uvmloan.events``
    entry-point group, loaded the first time a trace names an event the
    model does not know, so the model never imports the layer."""
    if not (isinstance(cls, type) and issubclass(cls, Event)) or cls is Event:
        raise TypeError(f"register_event: expected an Event subclass, not {cls!r}")
    old = _BY_NAME.get(cls.KIND)
    if old is not None and old is not cls and old.__qualname__ != cls.__qualname__:
        raise ValueError(f"register_event: {cls.KIND!r} is already {old.__qualname__}")
    _BY_NAME[cls.KIND] = cls
    return cls


_LAYERS_LOADED: list[bool] = []


def _load_layer_events() -> bool:
    """Import the ``uvmloan.events`` entry points once; True the first time."""
    if _LAYERS_LOADED:
        return False
    _LAYERS_LOADED.append(True)
    from importlib.metadata import entry_points

    for ep in entry_points(group="uvmloan.events"):
        try:
            ep.load()
        except ImportError:  # a broken layer install: its events stay unknown
            continue
    return True


def trace_header(profile: Any = None, **extra: Any) -> dict[str, Any]:
    """The first record of a JSON Lines trace: schema, units, model and profile.

    ``profile`` is a ``Profile`` (written in full, costs included, so the run
    can be rebuilt with ``get_profile(**header["profile"])``); ``extra``
    adds fields (the machine adds ncpus, npages and the physmem backend).
    """
    prof: dict[str, Any] | None = None
    if profile is not None:
        prof = attrs.asdict(profile)
    return {
        "ev": HEADER_EV,
        "schema": SCHEMA_VERSION,
        "model": "uvmloan",
        "model_version": __version__,
        "units": dict(UNITS),
        "profile": prof,
        **extra,
    }


class JSONLinesSink:
    """Writes a header line, then one JSON object per event; close() flushes.

    ``header`` is the first record (default: ``trace_header()`` without a
    profile; a machine passes its own).
    """

    def __init__(self, target: str | Path | IO[str], header: dict[str, Any] | None = None) -> None:
        if isinstance(target, str | Path):
            self._fh: IO[str] = open(target, "w", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        elif isinstance(target, io.TextIOBase) or hasattr(target, "write"):
            self._fh = target
            self._owned = False
        else:
            raise TypeError("JSONLinesSink needs a path or a text file object")
        head = trace_header() if header is None else header
        if head.get("ev") != HEADER_EV or head.get("schema") != SCHEMA_VERSION:
            raise ValueError("JSONLinesSink: header must come from trace_header()")
        self._write(head)

    def _write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")))
        self._fh.write("\n")

    def __call__(self, ev: Event) -> None:
        self._write(ev.to_dict())

    def close(self) -> None:
        if self._owned:
            self._fh.close()
        else:
            self._fh.flush()

    def __enter__(self) -> JSONLinesSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(
    events: Iterable[Event], target: str | Path | IO[str], header: dict[str, Any] | None = None
) -> None:
    """Write ``events`` as JSON Lines after a header (``trace_header``)."""
    with JSONLinesSink(target, header) as sink:
        for ev in events:
            sink(ev)


def _records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON: {e.msg}") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: a record must be a JSON object")
            yield lineno, rec


def read_header(path: str | Path) -> dict[str, Any]:
    """The header record of a JSON Lines trace (checks the schema version)."""
    for lineno, rec in _records(path):
        if rec.get("ev") != HEADER_EV:
            raise ValueError(f"{path}:{lineno}: the first record is not a trace header")
        if rec.get("schema") != SCHEMA_VERSION:
            raise ValueError(
                f"{path}: trace schema {rec.get('schema')!r}, this uvmloan reads {SCHEMA_VERSION}"
            )
        return rec
    raise ValueError(f"{path}: empty trace file")


def read_jsonl(path: str | Path) -> list[Event]:
    """The typed events of a JSON Lines trace written by ``JSONLinesSink``."""
    read_header(path)
    out: list[Event] = []
    records = _records(path)
    next(records)  # the header
    for lineno, rec in records:
        try:
            out.append(Event.from_dict(rec))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
    return out
