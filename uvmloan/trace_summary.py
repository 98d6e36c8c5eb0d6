"""What a trace says in numbers: ``uvmloan trace summary``.

``summarize(events)`` counts the events by name (each count is the counter
of that name, specs/trace.md), follows the loans outstanding over time,
weighs the bytes lent against the bytes the loans cost in copies (every
loan break copies one page), and sorts the breaks by cause and the
orphanings by reason.  ``format_summary`` prints it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs

from .trace import Event, IPISent, Loan, LoanBreak, Orphan, ShootdownRound, Unloan, counters_from

__all__ = ["TraceSummary", "format_summary", "summarize"]

# At most this many (t, outstanding) samples are kept in the timeline: a
# long trace is thinned to evenly spaced samples (the maximum is kept apart).
TIMELINE_MAX = 64


@attrs.frozen
class TraceSummary:
    """Counts and totals of one trace (all times simulated ns)."""

    events: int
    counts: dict[str, int]  # by event name (= the counter of that name)
    counters: dict[str, int]  # every counter the events increment
    page_size: int
    loans: int
    unloans: int
    loans_outstanding: int  # at the end of the trace
    loans_outstanding_max: int
    loans_outstanding_max_t: int
    timeline: list[tuple[int, int]]  # (t, loans outstanding) after each change, thinned
    bytes_loaned: int  # pages lent x page size
    bytes_copied: int  # pages copied to break loans x page size
    breaks_by_cause: dict[str, int]  # "<kind> <where>" -> breaks
    orphans_by_why: dict[str, int]
    shootdown_rounds: int
    ipis: int
    t_first: int | None
    t_last: int | None

    def as_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["timeline"] = [list(p) for p in self.timeline]
        return d


def _thin(points: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    if len(points) <= n:
        return points
    step = (len(points) - 1) / (n - 1)
    return [points[round(i * step)] for i in range(n)]


def summarize(events: Iterable[Event], page_size: int = 4096) -> TraceSummary:
    """The summary of ``events`` (a recording machine's ``m.trace`` or
    ``read_jsonl(path)``); ``page_size`` from the profile."""
    evs = list(events)
    counts: Counter[str] = Counter(ev.name for ev in evs)
    loans = unloans = out = peak = 0
    peak_t = 0
    timeline: list[tuple[int, int]] = []
    breaks: Counter[str] = Counter()
    orphans: Counter[str] = Counter()
    clock = 0
    for ev in evs:
        # CPUs keep their own clocks: the timeline runs on the latest of them
        clock = max(clock, ev.t)
        if isinstance(ev, Loan):
            loans += 1
            out += 1
        elif isinstance(ev, Unloan):
            unloans += 1
            out -= 1
        elif isinstance(ev, LoanBreak):
            breaks[f"{ev.kind} {ev.where}"] += 1
            continue
        elif isinstance(ev, Orphan):
            orphans[ev.why] += 1
            continue
        else:
            continue
        timeline.append((clock, out))
        if out > peak:
            peak, peak_t = out, clock
    nbreaks = sum(breaks.values())
    return TraceSummary(
        events=len(evs),
        counts=dict(sorted(counts.items())),
        counters=dict(sorted(counters_from(evs).items())),
        page_size=page_size,
        loans=loans,
        unloans=unloans,
        loans_outstanding=out,
        loans_outstanding_max=peak,
        loans_outstanding_max_t=peak_t,
        timeline=_thin(timeline, TIMELINE_MAX),
        bytes_loaned=loans * page_size,
        bytes_copied=nbreaks * page_size,
        breaks_by_cause=dict(breaks.most_common()),
        orphans_by_why=dict(orphans.most_common()),
        shootdown_rounds=counts.get(ShootdownRound.KIND, 0),
        ipis=sum(1 for ev in evs if isinstance(ev, IPISent)),
        t_first=min((ev.t for ev in evs), default=None),
        t_last=max((ev.t for ev in evs), default=None),
    )


def format_summary(s: TraceSummary) -> str:
    """The summary as the text ``uvmloan trace summary`` prints."""
    lines = [f"{s.events} events", ""]
    if s.t_first is not None:
        lines[0] += f", t = {s.t_first:,} .. {s.t_last:,} ns (simulated)"
    lines.append("events by name (each is the counter of that name):")
    width = max((len(k) for k in s.counts), default=0)
    lines += [f"  {k:<{width}}  {v:>8,}" for k, v in s.counts.items()]
    lines += [
        "",
        f"loans: {s.loans:,} lent, {s.unloans:,} given back, {s.loans_outstanding:,} outstanding"
        f" at the end (at most {s.loans_outstanding_max:,}, at t = {s.loans_outstanding_max_t:,}"
        " ns)",
        f"bytes lent: {s.bytes_loaned:,}; bytes copied to break loans: {s.bytes_copied:,}"
        f" (pages of {s.page_size} B)",
        f"shootdown rounds with a remote target: {s.shootdown_rounds:,}; IPIs sent: {s.ipis:,}",
    ]
    if s.breaks_by_cause:
        lines.append("loan breaks by cause (kind, where):")
        lines += [f"  {k:<24} {v:>6,}" for k, v in s.breaks_by_cause.items()]
    if s.orphans_by_why:
        lines.append("orphanings by reason:")
        lines += [f"  {k:<24} {v:>6,}" for k, v in s.orphans_by_why.items()]
    if s.timeline:
        lines.append("loans outstanding over time (t ns: loans):")
        lines.append("  " + ", ".join(f"{t:,}: {n}" for t, n in s.timeline))
    return "\n".join(lines)
