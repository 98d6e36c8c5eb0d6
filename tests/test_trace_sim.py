"""Simulated time (uvmloan.sim) and tracing (uvmloan.trace): scheduler
ordering, tie-breaking and cancellation; counters derived from events; the
JSON Lines sink; the cost of tracing off."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import attrs
import pytest
from helpers import PS, RW, UVA, user_pmap, zeroed_page

from uvmloan import VM_PROT_READ, Machine, SegmentationFault
from uvmloan.sim import Scheduler
from uvmloan.trace import (
    Event,
    IPISent,
    JSONLinesSink,
    PmapEnter,
    ShootdownQueued,
    ShootdownRound,
    TLBFlush,
    Tracer,
    counters_from,
    write_jsonl,
)

# ----------------------------------------------------------------------------
# Scheduler


def test_scheduler_runs_in_time_order() -> None:
    s = Scheduler()
    ran: list[str] = []
    s.call_at(30, lambda: ran.append("c"))
    s.call_at(10, lambda: ran.append("a"))
    s.call_after(20, lambda: ran.append("b"))
    assert s.pending() == 3 and s.next_time() == 10
    assert s.run() == 3
    assert ran == ["a", "b", "c"] and s.now == 30 and s.pending() == 0


def test_scheduler_breaks_ties_by_insertion_order() -> None:
    def run_once() -> list[int]:
        s = Scheduler()
        ran: list[int] = []
        for i in range(20):
            s.call_at(5 if i % 2 else 7, functools.partial(ran.append, i))
        s.run()
        return ran

    first = run_once()
    assert first == [i for i in range(20) if i % 2] + [i for i in range(20) if not i % 2]
    assert run_once() == first


def test_scheduler_cancel() -> None:
    s = Scheduler()
    ran: list[str] = []
    t1 = s.call_at(1, lambda: ran.append("x"))
    s.call_at(2, lambda: ran.append("y"))
    t1.cancel()
    assert t1.cancelled and s.pending() == 1 and s.next_time() == 2
    s.run()
    assert ran == ["y"]
    t1.cancel()  # cancelling twice is harmless


def test_scheduler_callbacks_may_schedule_more() -> None:
    s = Scheduler()
    ran: list[int] = []

    def tick() -> None:
        ran.append(s.now)
        if s.now < 50:
            s.call_after(10, tick)

    s.call_at(0, tick)
    s.run()
    assert ran == [0, 10, 20, 30, 40, 50]


def test_scheduler_run_until_and_max_events() -> None:
    s = Scheduler()
    ran: list[int] = []
    for t in (5, 10, 15, 20):
        s.call_at(t, functools.partial(ran.append, t))
    assert s.run_until(12) == 2 and s.now == 12 and ran == [5, 10]
    assert s.run(max_events=1) == 1 and ran == [5, 10, 15]
    assert s.step() and not s.step()
    assert s.next_time() is None


def test_scheduler_step_by_runs_only_what_is_due_by_the_deadline() -> None:
    s = Scheduler()
    ran: list[int] = []
    t1 = s.post(5, functools.partial(ran.append, 5))
    s.call_at(10, functools.partial(ran.append, 10))
    s.post(20, functools.partial(ran.append, 20))
    t1.cancel()
    # the cancelled head is skipped; 10 is due by 12, 20 is not
    assert s.step_by(12) and ran == [10] and s.now == 10
    assert not s.step_by(12) and ran == [10] and s.now == 10
    assert s.step_by(20) and ran == [10, 20] and s.now == 20
    assert not s.step_by(1_000)
    assert repr(t1).startswith("Timer(when=5, seq=1, fn=None")


def test_scheduler_compaction_keeps_the_order_of_what_is_live() -> None:
    # re-armed far timers leave cancelled entries; post() drops them once the
    # heap is large, and what runs (and in what order) is unchanged
    s = Scheduler()
    ran: list[int] = []
    far = None
    for i in range(3000):
        if far is not None:
            far.cancel()
        far = s.post(10_000_000 + i, functools.partial(ran.append, -i))
        s.post(i // 7, functools.partial(ran.append, i))  # equal times: insertion order
    assert s.pending() == 3001 and len(s._heap) < 2 * 3001
    s.run()
    assert ran == [*range(3000), -2999]


def test_scheduler_argument_errors() -> None:
    s = Scheduler()
    s.run_until(100)
    with pytest.raises(ValueError, match="before now"):
        s.call_at(50, lambda: None)
    with pytest.raises(ValueError, match="delay"):
        s.call_after(-1, lambda: None)
    with pytest.raises(TypeError, match="when"):
        s.call_at(150.0, lambda: None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------
# Tracer and counters


def _workload(m: Machine) -> None:
    """Some pmap work with shootdowns, IPIs, flushes and a fault."""
    pm = user_pmap(m, range(m.ncpus), "w")
    pages = []
    for i in range(18):
        pg = zeroed_page(m)
        pages.append(pg)
        with m.on_cpu(0):
            m.pmap.pmap_enter(pm, UVA + i * PS, pg.pa, RW, 0)
    with m.on_cpu(0):
        m.pmap.pmap_update(pm)
    for i in range(18):
        m.mmu.store(m.cpu(1), UVA + i * PS, b"x")
    with m.on_cpu(0):
        m.pmap.pmap_page_protect(pages[0], VM_PROT_READ)
        m.pmap.pmap_remove(pm, UVA, UVA + 18 * PS)
        m.pmap.pmap_update(pm)
    m.platform.fault_handler = None
    with pytest.raises(SegmentationFault, match="fault"):
        m.mmu.load(m.cpu(1), UVA, 1)


def test_workload_counters_follow_the_netbsd_rules() -> None:
    """Every counter of _workload, worked out by hand (3 CPUs, pmap on all 3)."""
    with Machine(ncpus=3, memory="1M", trace="record") as m:
        _workload(m)
        assert +m.counters == {
            # pmap.c pmap_load1 (A1): activating the new pmap on each of the 3
            # CPUs reloads CR3, a non-global flush
            "context switch": 3,
            "page alloc": 18,
            # fresh VAs: pmap_enter queues no shootdown (old PTE not present)
            "pmap enter": 18,
            # both pmap_update calls count; the first has nothing queued (S5)
            "pmap update": 2,
            # pmap_page_protect(READ) -> pmap_pp_clear_attrs (PP1): the written
            # PTE has A and D, so pmap_sync_pv queues SYNC_PV and clears A/D
            # (PP2); pm_cpus holds the initiator and others: local and remote
            "pmap page_protect": 1,
            "tlbshoot local SYNC_PV": 1,
            "tlbshoot remote SYNC_PV": 1,
            # pmap_remove_pte (R1): a shootdown per PTE with A: 17, the first
            # PTE lost A in pmap_sync_pv; every removed PTE counts
            "pmap remove": 18,
            "tlbshoot local REMOVE_PTE": 17,
            "tlbshoot remote REMOVE_PTE": 17,
            "tlbshoot request": 1 + 17,
            "tlbshoot single page requests": 1 + 17,
            # two rounds (pp_clear_attrs' shootnow, PP3, and the second
            # pmap_update), both remote: pmap_tlb_evcnt +1 each (S7), targets
            # = every attached CPU -> one broadcast IPI each, 2 deliveries each
            "TLB shootdown": 2,
            "ipi sent": 2,
            "ipi broadcast": 2,
            "ipi delivered": 4,
            # round 1: one VA, invlpg on 3 CPUs, "issues" += 1 (S11); round 2:
            # the 17th request made it ALLVA (S3), tlbflush on 3 CPUs (S9),
            # no "issues"; plus the 3 CR3 reloads above
            "tlbshoot single page issues": 1,
            "tlb invlpg": 3,
            "tlb flush": 3 + 3,
            "tlb flush nonglobal": 3 + 3,
            # the load after the removal walks an invalid PTE: one fault, and
            # with the VM handler removed it is EFAULT
            "fault": 1,
            "fault EFAULT": 1,
        }
        # the page counter against the allocator's own count (uvmexp style)
        assert m.counters["page alloc"] == m.uvm.npagealloc


def test_tracer_counters_are_derived_from_the_emitted_events() -> None:
    """The one test of the derivation itself: Tracer.emit counts each event's
    counter_keys(), and counters_from recomputes the same from a list."""
    evs: list[Event] = [
        PmapEnter(1, 0, "p", UVA, 3, 3, True, False),
        TLBFlush(2, 1, "-", True, "shootdown"),
        TLBFlush(3, 2, "-", False, "shootdown"),
        IPISent(4, 0, "-", -1, "v"),
        IPISent(5, 0, "-", 2, "v"),
    ]
    want = {
        "pmap enter": 1,
        "tlb flush": 2,
        "tlb flushg": 1,
        "tlb flush nonglobal": 1,
        "ipi sent": 2,
        "ipi broadcast": 1,
        "ipi unicast": 1,
    }
    t = Tracer()
    for e in evs:
        t.emit(e)
    assert t.counters == want
    assert counters_from(evs) == want
    assert counters_from([]) == {}


def test_tracer_emit_sinks_and_select() -> None:
    t = Tracer()
    got: list[Event] = []
    t.add_sink(got.append)
    e1 = PmapEnter(1, 0, "p", UVA, 3, 3, True, False)
    e2 = TLBFlush(2, 1, "-", True, "shootdown")
    t.emit(e1)
    assert t.events is None  # not recording by default
    events = t.record()
    assert t.record() is events  # idempotent
    t.emit(e2)
    assert got == [e1, e2] and events == [e2]
    assert t.counters == {"pmap enter": 1, "tlb flush": 1, "tlb flushg": 1}
    assert list(t.select(TLBFlush)) == [e2] and list(t.select()) == [e2]
    t.remove_sink(got.append)
    t.emit(e1)
    assert len(got) == 2


def test_counter_keys_of_the_shootdown_events() -> None:
    q = ShootdownQueued(0, 0, "p", UVA, "REMOVE_PTE", ("local", "remote"), False, False)
    assert q.counter_keys() == (
        "tlbshoot request",
        "tlbshoot single page requests",
        "tlbshoot local REMOVE_PTE",
        "tlbshoot remote REMOVE_PTE",
    )
    full = ShootdownQueued(0, 0, "kernel", -1, "REMOVE_ALL", ("kernel",), True, True)
    assert "tlbshoot single page requests" not in full.counter_keys()
    remote = ShootdownRound(0, 0, "-", (0, 1), 3, False, False, False, 100)
    assert remote.counter_keys().count("TLB shootdown") == 1
    assert remote.counter_keys().count("tlbshoot single page issues") == 3
    local = ShootdownRound(0, 0, "-", (0,), 3, False, False, False, 0)
    assert local.counter_keys() == ("tlbshoot local-only round",)
    assert IPISent(0, 0, "-", -1, "v").counter_keys() == ("ipi sent", "ipi broadcast")
    assert IPISent(0, 0, "-", 2, "v").counter_keys() == ("ipi sent", "ipi unicast")


def test_events_are_frozen() -> None:
    e = PmapEnter(1, 0, "p", UVA, 3, 3, True, False)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        e.va = 0  # type: ignore[misc]


def test_jsonlines_sink_writes_parseable_lines(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    m = Machine(ncpus=2, memory="1M", trace=path)
    _workload(m)
    counters = dict(m.counters)
    m.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    header, *records = [json.loads(line) for line in lines]
    assert header["ev"] == "header" and header["ncpus"] == 2
    assert len(records) == len(lines) - 1 > 0
    assert all({"ev", "t", "cpu", "space"} <= r.keys() for r in records)
    kinds: dict[str, int] = {}
    for r in records:
        kinds[r["ev"]] = kinds.get(r["ev"], 0) + 1
    assert kinds["pmap enter"] == counters["pmap enter"]
    rnd = next(r for r in records if r["ev"] == "TLB shootdown")
    assert isinstance(rnd["targets"], list)
    times = [r["t"] for r in records if r["cpu"] == 0]
    assert times == sorted(times)  # one CPU's clock never goes back


def test_jsonlines_sink_on_a_file_object_and_write_jsonl() -> None:
    buf = io.StringIO()
    events: list[Event] = [
        PmapEnter(1, 0, "p", UVA, 3, 3, True, False),
        ShootdownRound(5, 0, "-", (0, 1), 0, True, True, True, 10),
    ]
    write_jsonl(events, buf)
    assert not buf.closed  # not ours to close
    header, *recs = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert header["ev"] == "header"
    assert recs[0] == {
        "ev": "pmap enter",
        "t": 1,
        "cpu": 0,
        "space": "p",
        "va": UVA,
        "frame": 3,
        "prot": 3,
        "prot_name": "rw",
        "managed": True,
        "wired": False,
    }
    assert recs[1]["targets"] == [0, 1] and recs[1]["global_flush"] is True
    with pytest.raises(TypeError, match="path or a text file"):
        JSONLinesSink(42)  # type: ignore[arg-type]


def test_trace_off_keeps_no_counters_and_no_events() -> None:
    with Machine(ncpus=3, memory="1M", trace="off") as m:
        _workload(m)
        assert not m.tracer.on
        assert len(m.counters) == 0
        with pytest.raises(RuntimeError, match="trace='record'"):
            m.trace  # noqa: B018


def test_trace_counters_keeps_counters_but_no_events() -> None:
    with Machine(ncpus=3, memory="1M", trace="counters") as m:
        _workload(m)
        assert m.counters["TLB shootdown"] >= 2
        with pytest.raises(RuntimeError, match="trace='record'"):
            m.trace  # noqa: B018


def test_tracing_does_not_change_the_simulation() -> None:
    clocks = []
    for trace in ("off", "counters", "record"):
        with Machine(ncpus=3, memory="1M", trace=trace) as m:
            _workload(m)
            clocks.append([c.clock for c in m.cpus])
    assert clocks[0] == clocks[1] == clocks[2]


def test_a_user_tracer_can_be_passed_in() -> None:
    t = Tracer()
    t.record()
    with Machine(ncpus=2, memory="1M", trace=t) as m:
        _workload(m)
        assert m.tracer is t and m.trace is t.events and len(m.trace) > 0


def test_tracer_full_follows_recording_and_sinks() -> None:
    # ``full`` is what hot paths test before building an event; it must
    # follow every way a tracer starts or stops wanting whole events.
    from uvmloan.trace import Tracer

    t = Tracer()
    assert not t.full
    t.record()
    assert t.full
    t.stop_recording()
    assert not t.full
    t.add_sink(lambda ev: None)
    assert t.full
    t.remove_sink(t.sinks[0])
    assert not t.full
    t.events = []
    assert t.full
    t.on = False
    assert not t.full
    assert not Tracer(on=False, events=[]).full
    t2 = Tracer()
    t2.count("a", "b", "a")
    assert t2.counters == {"a": 2, "b": 1}
