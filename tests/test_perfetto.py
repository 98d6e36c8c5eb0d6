"""uvmloan.perfetto and uvmloan.trace_summary: the trace-event JSON keeps the
Trace Event Format's schema, its tracks agree with the state the model
keeps (loan counts on the pages, the free list, the borrowers' KVA), and the
summary's counts equal the machine's own counters for the same run."""

from __future__ import annotations

import gzip
import json
import struct
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from uvmloan import Machine
from uvmloan.borrow import KernelLoan
from uvmloan.perfetto import (
    SegmentTap,
    chrome_trace,
    chrome_trace_from_file,
    chrome_trace_from_machine,
    read_segments,
    write_chrome_trace,
)
from uvmloan.process import Process
from uvmloan.trace import ShootdownRound, read_header, read_jsonl
from uvmloan.trace_summary import format_summary, summarize

PS = 4096
NPAGES = 5
PHASES = {"M", "X", "b", "e", "i", "C"}


def _run(m: Machine) -> tuple[Process, KernelLoan]:
    """Five pages lent while cached on both CPUs, then two of them rewritten
    (two loan breaks, each copying one page)."""
    p = m.spawn("sender", cpu=0)
    buf = p.mmap(NPAGES * PS)
    p.write(buf, bytes(i & 0xFF for i in range(NPAGES * PS)))
    p.read(buf, NPAGES * PS, cpu=1)
    kl = m.kernel_loan(p, buf, NPAGES * PS)
    p.write(buf + PS, b"x", cpu=1)
    p.write(buf + 3 * PS, b"y", cpu=0)
    return p, kl


def _outstanding_in_model(m: Machine) -> int:
    return sum(pg.loan_count for pg in m.uvm.pages.values())


def _kva_in_model(m: Machine) -> int:
    return sum(kl.npages for kl in m.kernel_loans) * m.page_size


def _last_counter(doc: dict[str, Any], name: str, key: str) -> Any:
    vals = [
        e["args"][key]
        for e in doc["traceEvents"]
        if e["ph"] == "C" and e["name"] == name and key in e["args"]
    ]
    return vals[-1] if vals else None


def check_schema(doc: dict[str, Any]) -> None:
    """The Trace Event Format as Perfetto's JSON importer reads it."""
    assert set(doc) >= {"traceEvents", "displayTimeUnit"}
    evs = doc["traceEvents"]
    assert isinstance(evs, list) and evs
    opened: dict[tuple[str, str], dict[str, Any]] = {}
    ends: dict[tuple[int, int], float] = defaultdict(float)
    for e in evs:
        assert e["ph"] in PHASES, e
        assert isinstance(e["name"], str) and e["name"]
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert isinstance(e["ts"], int | float) and e["ts"] >= 0
        assert isinstance(e.get("args", {}), dict)
        if e["ph"] == "X":
            assert e["dur"] >= 0 and isinstance(e["cat"], str)
        elif e["ph"] in "be":
            assert isinstance(e["cat"], str) and set(e["id2"]) == {"local"}
            key = (e["cat"], e["id2"]["local"])
            if e["ph"] == "b":
                assert key not in opened
                opened[key] = e
            else:
                b = opened.pop(key)
                assert b["name"] == e["name"] and b["pid"] == e["pid"] and e["ts"] >= b["ts"]
        elif e["ph"] == "i":
            assert e["s"] in ("t", "p", "g")
        elif e["ph"] == "C":
            assert e["args"] and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in e["args"].values()
            )
        elif e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name") and e["args"]["name"]
    assert not opened, f"async slices never ended: {sorted(opened)[:3]}"
    # complete slices of one thread never overlap (Perfetto needs them nested)
    xs = sorted((e for e in evs if e["ph"] == "X"), key=lambda e: (e["pid"], e["tid"], e["ts"]))
    for e in xs:
        track = (e["pid"], e["tid"])
        assert e["ts"] >= ends[track] - 1e-9, e
        ends[track] = e["ts"] + e["dur"]


def test_summary_counts_are_the_machines_counters() -> None:
    m = Machine(ncpus=2, memory="8M", trace="record")
    p, kl = _run(m)
    p.exit()
    kl.release()
    s = summarize(m.trace, page_size=m.page_size)
    kept = m.counters  # incremented by the tracer as the model ran
    assert s.counts, "nothing counted"
    for name, n in s.counts.items():
        assert kept[name] == n, name
    assert s.counters == dict(kept)
    # uvmexp-style counts the page allocator keeps itself, apart from the tracer
    assert s.counts["page alloc"] == m.uvm.npagealloc
    assert s.counts.get("page free", 0) == m.uvm.npagefree
    # and what the run did by construction
    assert s.loans == NPAGES and s.bytes_loaned == NPAGES * PS
    assert s.bytes_copied == 2 * PS and s.breaks_by_cause == {"anon fault": 2}
    assert s.loans_outstanding == _outstanding_in_model(m) == 0
    assert s.loans_outstanding_max == NPAGES
    assert s.shootdown_rounds == kept["TLB shootdown"] > 0
    text = format_summary(s)
    assert "bytes copied to break loans: 8,192" in text and "anon fault" in text
    m.close()


def test_tracks_agree_with_the_models_state_while_loans_are_out() -> None:
    m = Machine(ncpus=2, memory="8M", trace="record")
    _run(m)
    doc = chrome_trace_from_machine(m)
    check_schema(doc)
    assert _last_counter(doc, "loans", "outstanding") == _outstanding_in_model(m) == NPAGES
    loaned_frames = sum(1 for pg in m.uvm.pages.values() if pg.loan_count)
    assert _last_counter(doc, "pages", "loaned") == loaned_frames
    assert _last_counter(doc, "pages", "free") == len(m.uvm.free)
    assert _last_counter(doc, "loan kva", "bytes") == _kva_in_model(m) == NPAGES * PS
    # every loan still out ends at the end of the trace, marked so
    ends = [e for e in doc["traceEvents"] if e["ph"] == "e"]
    assert len(ends) == NPAGES and all(e["args"]["outstanding_at_end"] for e in ends)
    m.close()


def test_loans_breaks_and_shootdowns_on_their_tracks(tmp_path: Path) -> None:
    m = Machine(ncpus=2, memory="8M", trace="record")
    p, kl = _run(m)
    p.exit()
    kl.release()
    doc = chrome_trace_from_machine(m)
    check_schema(doc)
    evs = doc["traceEvents"]
    begins = [e for e in evs if e["ph"] == "b"]
    assert len(begins) == m.counters["loan"] == NPAGES
    assert all(e["cat"] == "loan" and e["name"] == "loan A->K" for e in begins)
    assert not any(e["args"].get("outstanding_at_end") for e in evs if e["ph"] == "e")
    inst = Counter(e["name"] for e in evs if e["ph"] == "i" and e["tid"] == begins[0]["tid"])
    assert inst["loan.break"] == m.counters["loan.break"] == 2
    assert inst["loan.orphan"] == m.counters["loan.orphan"]
    rounds = [e for e in evs if e["ph"] == "X" and e["name"] == "TLB shootdown"]
    assert len(rounds) == m.counters["TLB shootdown"]
    model = [ev for ev in m.trace if isinstance(ev, ShootdownRound) and ev.remote]
    assert [r["tid"] for r in rounds] == [100 + ev.cpu for ev in model]
    assert [r["ts"] + r["dur"] for r in rounds] == pytest.approx([ev.t / 1000 for ev in model])
    for r in rounds:
        assert r["dur"] == pytest.approx(r["args"]["waited_ns"] / 1000)
    handlers = [e for e in evs if e["ph"] == "X" and e["name"] == "TLB shootdown handler"]
    assert handlers and {e["tid"] for e in handlers} == {101}
    assert _last_counter(doc, "loans", "outstanding") == _outstanding_in_model(m) == 0
    assert _last_counter(doc, "loan kva", "bytes") == _kva_in_model(m) == 0
    assert _last_counter(doc, "pages", "free") == len(m.uvm.free)
    # ts are microseconds of the model's nanoseconds
    t_last = max(ev.t for ev in m.trace)
    assert max(e["ts"] for e in evs if e["ph"] != "M") == pytest.approx(t_last / 1000)
    names = {e["args"]["name"] for e in evs if e["ph"] == "M"}
    assert {"uvmloan machine", "loans", "cpu 0", "cpu 1"} <= names
    m.close()


def test_from_a_json_lines_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    m = Machine(ncpus=2, memory="8M", trace="record", trace_file=path)
    _run(m)
    free, kept = len(m.uvm.free), dict(m.counters)
    m.close()
    doc = chrome_trace_from_file(path)
    check_schema(doc)
    assert _last_counter(doc, "pages", "free") == free
    assert doc["otherData"]["ncpus"] == 2 and doc["otherData"]["profile"] == "netbsd-10"
    s = summarize(read_jsonl(path), page_size=read_header(path)["profile"]["page_size"])
    assert {k: kept[k] for k in s.counts} == s.counts
    out = write_chrome_trace(doc, tmp_path / "run.json.gz")
    assert json.loads(gzip.decompress(out.read_bytes())) == doc
    small = chrome_trace_from_file(path, detail=False)
    assert len(small["traceEvents"]) < len(doc["traceEvents"])


def _tcp_frame(seq: int, flags: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIHHHH", 1234, 80, seq, 7, (5 << 12) | flags, 65535, 0, 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(tcp),
        1,
        0,
        64,
        6,
        0,
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )
    return ip + tcp


def test_segment_tap_feeds_a_link_track(tmp_path: Path) -> None:
    tap = SegmentTap("a-b", bandwidth_bps=100_000_000)
    tap(1000, _tcp_frame(1, 0x02, b""), SimpleNamespace(direction="a->b", loaned=False))
    tap(200_000, _tcp_frame(2, 0x18, b"z" * 1000), SimpleNamespace(direction="a->b", loaned=True))
    tap(300_000, b"\x60" + bytes(40), None)  # not IPv4: ignored
    assert [(r.flags, r.length, r.loaned) for r in tap.records] == [
        ("S", 0, False),
        ("PA", 1000, True),
    ]
    assert tap.records[1].dur == 1040 * 8 * 1000 // 100  # 1040 bytes at 100 Mbit/s
    seg = tmp_path / "segs.jsonl"
    tap.write_jsonl(seg)
    assert read_segments(seg) == tap.records
    doc = chrome_trace([], segments=tap.records)
    check_schema(doc)
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert [e["name"] for e in xs] == ["tcp S seq=1 len=0", "tcp PA seq=2 len=1000"]
    assert xs[1]["cat"] == "segment,loaned" and xs[1]["pid"] == 2
    assert {"links", "a-b a->b"} <= {
        e["args"]["name"] for e in doc["traceEvents"] if e["ph"] == "M"
    }
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1, "nope": 2}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: .*unknown field 'nope'"):
        read_segments(bad)


def test_segment_tap_on_a_real_link() -> None:
    from netstack.network import Network

    with Network(seed=0) as net:
        a = net.host("a", memory="16M")
        b = net.host("b", memory="16M")
        link = net.link(a, b, bandwidth_bps=100_000_000, delay_ns=100_000)
        tap = SegmentTap(link.name, serialization_ns=link.params.serialization_ns)
        link.add_tap(tap)
        ls = b.socket("tcp")
        ls.bind(("", 80))
        ls.listen()
        c = a.socket("tcp")
        c.connect((b.addr, 80))
        s, _ = ls.accept()
        p = a.machine.spawn("sender")
        va = p.mmap(PS)
        p.write(va, b"q" * 3000)
        c.send(p, va, 3000)
        net.run_until_idle()
        got = s.recv_bytes(4096)
        c.close()
        s.close()
        ls.close()
        net.run_until_idle()
    assert got == b"q" * 3000
    # each segment lasts the link's serialisation of its packet, headers included
    for r in tap.records:
        assert r.dur > link.params.serialization_ns(r.length) or not r.length
    tcp = [r for r in tap.records if r.proto == "tcp"]
    assert tcp[0].flags == "S" and sum(r.length for r in tcp if r.sport == tcp[0].sport) == 3000
    check_schema(chrome_trace([], segments=tap.records))
