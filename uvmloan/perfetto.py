"""Chrome/Perfetto trace-event JSON from the model's trace.

``chrome_trace(events)`` turns typed events (``m.trace``, or
``uvmloan.trace.read_jsonl(path)``) into the JSON object format of the Trace
Event Format, which ui.perfetto.dev, ``chrome://tracing`` and Perfetto's
trace processor open::

    {"traceEvents": [...], "displayTimeUnit": "ns", "otherData": {...}}

``ts`` and ``dur`` are microseconds (``t / 1000``: the model's nanoseconds
keep their digits as decimals), because Perfetto reads them so whatever
``displayTimeUnit`` says.  What goes where (specs/trace.md, "Perfetto"):

* process 1, ``uvmloan machine``:

  - thread ``loans``: one async slice per loan, ``b`` at the ``loan`` event
    and ``e`` at the ``unloan`` that gives it back (``cat`` "loan", ``id2``
    local to the process, so the slices group under it).  ``unloan`` does not
    say which loan of a page it returns; loans of one frame end first-in,
    first-out.  A loan still out when the trace ends ends there with
    ``args.outstanding_at_end``.  Breaks (``loan.break``), orphanings
    (``loan.orphan``), adoptions, failed loans and reclaims are instants
    (``ph`` "i", thread scope) on this thread.
  - counters (``ph`` "C"): ``pages loaned`` (frames with a loan),
    ``loans outstanding``, ``pages free`` (when the number of frames is
    known: the header's ``npages``; it assumes the trace starts with the
    machine) and ``loan kva bytes`` (kernel VA mapped by ``pmap_kenter_pa``
    and not yet ``pmap_kremove``d: the borrowers' loan mappings).
  - one thread per CPU (``cpu N``): each shootdown round is a complete
    slice (``X``) on the initiating CPU, from its start to the last
    acknowledgement (``waited_ns``); each target's handler is a slice on its
    own CPU from the IPI's delivery to its last invalidation.  With
    ``detail=True`` (the default) every other event is an instant on its
    CPU's thread, its fields in ``args``.

* process 2, ``links``: TCP/UDP segments on the wire, one thread per link
  direction, each a complete slice lasting its serialisation, when
  segment records are given (:class:`SegmentTap` records them from a link
  tap; uvmloan does not import the network stack).

Each CPU has its own clock in the model, so events are not globally
ordered by ``t``: a track never goes back in time (a counter sample or a
slice end earlier than the previous one on its track is moved to it).
"""

from __future__ import annotations

import gzip
import json
import struct
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .trace import (
    Adopt,
    Event,
    IPIDelivered,
    KEnter,
    KRemove,
    Loan,
    LoanBreak,
    LoanFail,
    Orphan,
    PageAlloc,
    PageFree,
    Reclaim,
    ShootdownRound,
    TLBFlush,
    TLBInvalidate,
    Unloan,
    read_header,
    read_jsonl,
)

__all__ = [
    "SegmentRecord",
    "SegmentTap",
    "chrome_trace",
    "chrome_trace_from_file",
    "chrome_trace_from_machine",
    "read_segments",
    "write_chrome_trace",
]

PID_MACHINE = 1
PID_LINKS = 2
TID_LOANS = 10  # not the pid: Perfetto would call it the main thread
TID_CPU0 = 100  # CPU n is thread TID_CPU0 + n
_LOAN_INSTANTS = (LoanBreak, Orphan, Adopt, LoanFail, Reclaim)


@attrs.frozen
class SegmentRecord:
    """One IP packet put on a link: what the trace's link track shows.

    ``t`` and ``dur`` are nanoseconds (serialisation start and length);
    ``flags`` are TCP's as letters ("S", "A", "PA", "FA"...), empty for UDP.
    """

    t: int
    link: str
    direction: str
    proto: str  # "tcp", "udp" or the IP protocol number as a string
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: str
    length: int  # payload bytes
    dur: int = 0
    loaned: bool = False

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SegmentRecord:
        names = [a.name for a in attrs.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"segment record: unknown field {unknown[0]!r}; fields: {names}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ValueError(f"segment record: {e}") from None


_TCP_FLAGS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "A"), (0x20, "U"))


def parse_ipv4(
    t: int,
    frame: bytes | bytearray,
    link: str = "",
    direction: str = "",
    dur: int = 0,
    loaned: bool = False,
) -> SegmentRecord | None:
    """A record of the IPv4 packet ``frame`` (None for anything else)."""
    if len(frame) < 20 or frame[0] >> 4 != 4:
        return None
    ihl = (frame[0] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, 2)[0]
    proto = frame[9]
    src = ".".join(str(b) for b in frame[12:16])
    dst = ".".join(str(b) for b in frame[16:20])
    body = frame[ihl:total]
    if proto == 6 and len(body) >= 20:
        sport, dport, seq, ack, off_flags = struct.unpack_from("!HHIIH", body, 0)
        hl = (off_flags >> 12) * 4
        flags = "".join(c for bit, c in _TCP_FLAGS if off_flags & bit)
        return SegmentRecord(
            t,
            link,
            direction,
            "tcp",
            src,
            dst,
            sport,
            dport,
            seq,
            ack,
            flags,
            len(body) - hl,
            dur,
            loaned,
        )
    if proto == 17 and len(body) >= 8:
        sport, dport = struct.unpack_from("!HH", body, 0)
        return SegmentRecord(
            t, link, direction, "udp", src, dst, sport, dport, 0, 0, "", len(body) - 8, dur, loaned
        )
    return SegmentRecord(
        t, link, direction, str(proto), src, dst, 0, 0, 0, 0, "", len(body), dur, loaned
    )


class SegmentTap:
    """A link tap that keeps a :class:`SegmentRecord` per packet.

    It has the signature of the network stack's link taps, ``tap(now, frame,
    meta)``, and reads only ``meta.loaned`` and ``meta.direction``, so
    ``link.add_tap(SegmentTap(link.name,
    serialization_ns=link.params.serialization_ns))`` feeds it without
    uvmloan importing the stack.  ``serialization_ns`` (bytes -> ns), or else
    ``bandwidth_bps``, gives each segment its serialisation time as ``dur``.
    """

    def __init__(
        self,
        link: str = "link",
        bandwidth_bps: int | None = None,
        serialization_ns: Callable[[int], int] | None = None,
    ) -> None:
        self.link = link
        self.bandwidth_bps = bandwidth_bps
        # the link's own rule when given (it may add framing overhead)
        self.serialization_ns = serialization_ns
        self.records: list[SegmentRecord] = []

    def __call__(self, now: int, frame: bytes | bytearray, meta: Any = None) -> None:
        dur = 0
        if self.serialization_ns is not None:
            dur = self.serialization_ns(len(frame))
        elif self.bandwidth_bps:
            dur = len(frame) * 8 * 1_000_000_000 // self.bandwidth_bps
        rec = parse_ipv4(
            now,
            frame,
            self.link,
            str(getattr(meta, "direction", "") or ""),
            dur,
            bool(getattr(meta, "loaned", False)),
        )
        if rec is not None:
            self.records.append(rec)

    def write_jsonl(self, path: str | Path) -> None:
        """The records as JSON Lines (``read_segments`` reads them)."""
        with open(path, "w", encoding="utf-8") as fh:
            for r in self.records:
                fh.write(json.dumps(r.to_dict(), separators=(",", ":")) + "\n")


def read_segments(path: str | Path) -> list[SegmentRecord]:
    """Segment records from JSON Lines (one ``SegmentRecord.to_dict`` per line)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("a record must be a JSON object")
                out.append(SegmentRecord.from_dict(rec))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
    return out


def _us(t: int) -> float:
    return t / 1000


def _args(ev: Event) -> dict[str, Any]:
    d = ev.to_dict()
    for k in ("ev", "t", "cpu"):
        d.pop(k, None)
    return d


class _Builder:
    def __init__(self, npages: int | None, page_size: int, detail: bool) -> None:
        self.out: list[dict[str, Any]] = []
        self.npages = npages
        self.page_size = page_size
        self.detail = detail
        self.open_loans: dict[int, deque[tuple[int, str, float]]] = {}
        self.loan_seq = 0
        self.frame_loans: dict[int, int] = {}
        self.outstanding = 0
        self.allocated = 0
        self.kva: set[int] = set()
        self.last_ts: dict[tuple[int, int | str], float] = {}
        self.last_end: dict[tuple[int, int], int] = {}
        self.handlers: dict[int, list[int]] = {}  # cpu -> [start, end, source]
        self.cpus: set[int] = set()
        self.end = 0.0

    def _mono(self, track: tuple[int, int | str], ts: float) -> float:
        ts = max(ts, self.last_ts.get(track, ts))
        self.last_ts[track] = ts
        return ts

    def counter(self, name: str, key: str, value: int, ts: float) -> None:
        ts = self._mono((PID_MACHINE, f"C:{name}"), ts)
        self.out.append(
            {
                "name": name,
                "ph": "C",
                "ts": ts,
                "pid": PID_MACHINE,
                "tid": TID_LOANS,
                "args": {key: value},
            }
        )

    def slice(
        self, tid: int, name: str, start: int, end: int, args: dict[str, Any], cat: str = "pmap"
    ) -> None:
        track = (PID_MACHINE, tid)
        start = max(start, self.last_end.get(track, start))  # X slices on a tid must nest
        end = max(start, end)
        self.last_end[track] = end
        self.out.append(
            {
                "name": name,
                "cat": cat,
                "ph": "X",
                "ts": _us(start),
                "dur": _us(end - start),
                "pid": PID_MACHINE,
                "tid": tid,
                "args": args,
            }
        )

    def instant(self, tid: int, ev: Event, cat: str) -> None:
        self.out.append(
            {
                "name": ev.name,
                "cat": cat,
                "ph": "i",
                "s": "t",
                "ts": _us(ev.t),
                "pid": PID_MACHINE,
                "tid": tid,
                "args": _args(ev),
            }
        )

    def close_handler(self, cpu: int) -> None:
        h = self.handlers.pop(cpu, None)
        if h is not None:
            start, end, source = h
            self.slice(TID_CPU0 + cpu, "TLB shootdown handler", start, end, {"source": source})

    def add(self, ev: Event) -> None:
        ts = _us(ev.t)
        self.end = max(self.end, ts)
        self.cpus.add(ev.cpu)
        if isinstance(ev, Loan):
            self.loan_seq += 1
            sid = f"loan-{self.loan_seq}"
            name = f"loan {ev.kind}"
            self.open_loans.setdefault(ev.frame, deque()).append((self.loan_seq, name, ts))
            self.out.append(
                {
                    "name": name,
                    "cat": "loan",
                    "ph": "b",
                    "ts": ts,
                    "pid": PID_MACHINE,
                    "tid": TID_LOANS,
                    "id2": {"local": sid},
                    "args": _args(ev),
                }
            )
            self._loans(ev.frame, ev.loan_count, ts)
        elif isinstance(ev, Unloan):
            q = self.open_loans.get(ev.frame)
            if q:
                seq, name, t0 = q.popleft()
                self.out.append(
                    {
                        "name": name,
                        "cat": "loan",
                        "ph": "e",
                        "ts": max(ts, t0),
                        "pid": PID_MACHINE,
                        "tid": TID_LOANS,
                        "id2": {"local": f"loan-{seq}"},
                        "args": _args(ev),
                    }
                )
            else:  # the loan predates the trace
                self.instant(TID_LOANS, ev, "loan")
            self._loans(ev.frame, ev.loan_count, ts)
        elif isinstance(ev, _LOAN_INSTANTS):
            self.instant(TID_LOANS, ev, "loan")
        elif isinstance(ev, ShootdownRound):
            for c in list(self.handlers):
                self.close_handler(c)
            args = _args(ev)
            args["targets"] = list(ev.targets)
            self.slice(TID_CPU0 + ev.cpu, ev.name, ev.t - ev.waited_ns, ev.t, args)
        elif isinstance(ev, IPIDelivered):
            self.close_handler(ev.cpu)
            self.handlers[ev.cpu] = [ev.t, ev.t, ev.source]
        elif isinstance(ev, TLBInvalidate | TLBFlush) and ev.cpu in self.handlers:
            self.handlers[ev.cpu][1] = ev.t
        elif self.detail:
            self.instant(TID_CPU0 + ev.cpu, ev, "event")
        # counter tracks (after the event's own record)
        if isinstance(ev, PageAlloc):
            self.allocated += 1
            self._free(ts)
        elif isinstance(ev, PageFree):
            self.allocated -= 1
            self._free(ts)
        elif isinstance(ev, KEnter):
            self.kva.add(ev.va)
            self.counter("loan kva", "bytes", len(self.kva) * self.page_size, ts)
        elif isinstance(ev, KRemove):
            self.kva.discard(ev.va)
            self.counter("loan kva", "bytes", len(self.kva) * self.page_size, ts)

    def _free(self, ts: float) -> None:
        if self.npages is not None:
            self.counter("pages", "free", self.npages - self.allocated, ts)

    def _loans(self, frame: int, loan_count: int, ts: float) -> None:
        before = self.frame_loans.get(frame, 0)
        if loan_count:
            self.frame_loans[frame] = loan_count
        else:
            self.frame_loans.pop(frame, None)
        self.outstanding += loan_count - before
        self.counter("pages", "loaned", len(self.frame_loans), ts)
        self.counter("loans", "outstanding", self.outstanding, ts)

    def finish(self) -> None:
        for c in list(self.handlers):
            self.close_handler(c)
        for q in self.open_loans.values():
            for seq, name, t0 in q:
                self.out.append(
                    {
                        "name": name,
                        "cat": "loan",
                        "ph": "e",
                        "ts": max(self.end, t0),
                        "pid": PID_MACHINE,
                        "tid": TID_LOANS,
                        "id2": {"local": f"loan-{seq}"},
                        "args": {"outstanding_at_end": True},
                    }
                )
            q.clear()


def _meta(pid: int, tid: int | None, name: str) -> dict[str, Any]:
    if tid is None:
        return {
            "name": "process_name",
            "ph": "M",
            "ts": 0,
            "pid": pid,
            "tid": 0,
            "args": {"name": name},
        }
    return {
        "name": "thread_name",
        "ph": "M",
        "ts": 0,
        "pid": pid,
        "tid": tid,
        "args": {"name": name},
    }


def chrome_trace(
    events: Iterable[Event],
    *,
    header: Mapping[str, Any] | None = None,
    segments: Iterable[SegmentRecord] = (),
    npages: int | None = None,
    page_size: int | None = None,
    detail: bool = True,
) -> dict[str, Any]:
    """The trace-event JSON object of ``events`` (see the module doc).

    ``header``: the JSON Lines header (``read_header``), whose ``npages`` and
    profile page size are used unless ``npages``/``page_size`` are given.
    """
    head = dict(header or {})
    prof = head.get("profile") or {}
    if npages is None and isinstance(head.get("npages"), int):
        npages = head["npages"]
    if page_size is None:
        page_size = prof.get("page_size", 4096) if isinstance(prof, Mapping) else 4096
    b = _Builder(npages, int(page_size or 4096), detail)
    for ev in events:
        b.add(ev)
    b.finish()
    meta = [_meta(PID_MACHINE, None, "uvmloan machine"), _meta(PID_MACHINE, TID_LOANS, "loans")]
    meta += [_meta(PID_MACHINE, TID_CPU0 + c, f"cpu {c}") for c in sorted(b.cpus)]
    segs = sorted(segments, key=lambda s: s.t)
    seg_events: list[dict[str, Any]] = []
    if segs:
        meta.append(_meta(PID_LINKS, None, "links"))
        tids: dict[tuple[str, str], int] = {}
        last: dict[int, float] = {}
        for s in segs:
            tid = tids.setdefault((s.link, s.direction), len(tids) + 1)
            ts = max(_us(s.t), last.get(tid, 0.0))
            dur = _us(s.dur)
            last[tid] = ts + dur
            name = (
                f"{s.proto} {s.flags} seq={s.seq} len={s.length}"
                if s.proto == "tcp"
                else f"{s.proto} len={s.length}"
            )
            seg_events.append(
                {
                    "name": name,
                    "cat": "segment,loaned" if s.loaned else "segment",
                    "ph": "X",
                    "ts": ts,
                    "dur": dur,
                    "pid": PID_LINKS,
                    "tid": tid,
                    "args": s.to_dict(),
                }
            )
        for (link, direction), tid in tids.items():
            meta.append(_meta(PID_LINKS, tid, f"{link} {direction}".strip()))
    other: dict[str, Any] = {
        k: head[k] for k in ("model", "model_version", "ncpus", "npages", "backend") if k in head
    }
    if isinstance(prof, Mapping) and "name" in prof:
        other["profile"] = prof["name"]
    other["units"] = "ts and dur in microseconds of simulated time"
    return {"traceEvents": meta + b.out + seg_events, "displayTimeUnit": "ns", "otherData": other}


def chrome_trace_from_file(
    path: str | Path, segments: str | Path | None = None, *, detail: bool = True
) -> dict[str, Any]:
    """``chrome_trace`` of a JSON Lines trace file (and of a segments file)."""
    header = read_header(path)
    events = read_jsonl(path)
    segs = read_segments(segments) if segments is not None else []
    return chrome_trace(events, header=header, segments=segs, detail=detail)


def chrome_trace_from_machine(
    m: Any, segments: Iterable[SegmentRecord] = (), *, detail: bool = True
) -> dict[str, Any]:
    """``chrome_trace`` of a recording machine's events (``trace="record"``)."""
    from .trace import trace_header

    header = trace_header(m.profile, ncpus=m.ncpus, npages=m.uvm.npages)
    return chrome_trace(m.trace, header=header, segments=segments, detail=detail)


def write_chrome_trace(trace: Mapping[str, Any], path: str | Path) -> Path:
    """Write a trace object as JSON (gzip'd when ``path`` ends in ``.gz``)."""
    p = Path(path)
    data = json.dumps(trace, separators=(",", ":")).encode()
    if p.suffix == ".gz":
        with gzip.open(p, "wb") as fh:
            fh.write(data)
    else:
        p.write_bytes(data)
    return p
