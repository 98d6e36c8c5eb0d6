"""The trace's vocabulary and JSON Lines format (specs/trace.md): the
header, names equal to first counters, protections and broadcasts in words,
and read_jsonl's round trip to typed events."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest

from uvmloan import MAP_SHARED, UVM_LOAN_TOPAGE, Machine, uvm_loan, uvm_unloan
from uvmloan.profile import CostModel, Profile
from uvmloan.trace import (
    SCHEMA_VERSION,
    Event,
    IPISent,
    LoanBreak,
    ShootdownQueued,
    ShootdownRound,
    prot_name,
    read_header,
    read_jsonl,
    trace_header,
    write_jsonl,
)

SPEC = Path(__file__).resolve().parent.parent / "specs" / "trace.md"


def _workload(m: Machine) -> None:
    """Touch most event kinds: loans, breaks, orphans, remote and local
    shootdown rounds, unicast and broadcast IPIs, kenter/kremove, faults."""
    p = m.spawn("s", cpu=0)
    buf = p.mmap(4 * 4096)
    p.write(buf, b"a" * (4 * 4096))
    p.read(buf, 4 * 4096, cpu=1)
    kl = m.kernel_loan(p, buf, 3 * 4096)
    p.write(buf + 10, b"b", cpu=1)  # loan break
    pages = uvm_loan(p.map, buf + 3 * 4096, 4096, UVM_LOAN_TOPAGE)
    uvm_unloan(pages, UVM_LOAN_TOPAGE)
    vn = m.vnode(b"file" * 2048)
    fva = p.mmap(vn.size, flags=MAP_SHARED, obj=vn)
    p.read(fva, 16)
    p.munmap(fva, vn.size)
    p.exit()  # orphans
    for c in range(m.ncpus):
        kl.read(0, 16, cpu=c)  # every CPU caches the kernel mapping
    kl.release()  # kremove: a broadcast shootdown
    q = m.spawn("q", cpu=0)
    b = q.mmap(4096)
    q.write(b, b"z")
    q.munmap(b, 4096)  # cached on CPU 0 alone: a local-only round


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Machine, Path]:
    path = tmp_path / "t.jsonl"
    m = Machine(ncpus=3, memory="2M", trace="record", trace_file=path)
    _workload(m)
    m.close()
    return m, path


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_header_comes_first_with_schema_units_profile_and_version(
    recorded: tuple[Machine, Path],
) -> None:
    m, path = recorded
    head = _records(path)[0]
    assert head["ev"] == "header" and head["schema"] == SCHEMA_VERSION == 1
    assert head["model"] == "uvmloan" and head["model_version"] == "0.1.0"
    assert head["units"]["t"].startswith("ns")
    assert head["ncpus"] == 3 and head["npages"] == 512 and head["backend"] in ("c", "python")
    # The profile is complete: it rebuilds the machine's profile exactly.
    prof = dict(head["profile"])
    prof["costs"] = CostModel(**prof["costs"])
    assert Profile(**prof) == m.profile
    assert read_header(path) == head


def test_round_trip_gives_back_equal_typed_events(recorded: tuple[Machine, Path]) -> None:
    m, path = recorded
    back = read_jsonl(path)
    assert back == m.trace
    assert [type(e) for e in back] == [type(e) for e in m.trace]
    kinds = {type(e).__name__ for e in back}
    # The workload reaches the events whose JSON differs from the model's values.
    assert {"IPISent", "ShootdownRound", "ShootdownQueued", "LoanBreak", "KEnter"} <= kinds


def test_ev_is_the_first_counter_and_counting_records_gives_it(
    recorded: tuple[Machine, Path],
) -> None:
    m, path = recorded
    recs = _records(path)[1:]
    assert len(recs) == len(m.trace) > 0
    for rec, ev in zip(recs, m.trace, strict=True):
        assert rec["ev"] == ev.name == ev.counter_keys()[0]
    by_ev = Counter(r["ev"] for r in recs)
    for name, n in by_ev.items():
        assert m.counters[name] == n, name
    # Both kinds of shootdown round happened, under their two names.
    assert by_ev["TLB shootdown"] > 0 and by_ev["tlbshoot local-only round"] > 0


def test_protections_are_written_as_names_too(recorded: tuple[Machine, Path]) -> None:
    _, path = recorded
    with_prot = [r for r in _records(path)[1:] if "prot" in r]
    assert with_prot
    for r in with_prot:
        assert r["prot_name"] == prot_name(r["prot"])
    names = {r["prot_name"] for r in with_prot}
    assert {"r", "rw"} <= names
    assert [prot_name(p) for p in (0, 1, 2, 3, 4, 5, 7)] == [
        "none",
        "r",
        "w",
        "rw",
        "x",
        "rx",
        "rwx",
    ]


def test_broadcast_and_no_address_are_words_not_minus_one(
    recorded: tuple[Machine, Path],
) -> None:
    m, path = recorded
    recs = _records(path)[1:]
    ipis = [r for r in recs if r["ev"] == "ipi sent"]
    assert any(r["target"] == "broadcast" for r in ipis)
    assert all(r["target"] == "broadcast" or r["target"] >= 0 for r in ipis)
    assert any(isinstance(e, IPISent) and e.target == -1 for e in m.trace)
    for r in recs:
        assert -1 not in (r.get("va"), r.get("target")), r
    # The model's sentinel values come back from the words.
    q = ShootdownQueued(1, 0, "kernel", -1, "REMOVE_ALL", ("kernel",), True, True)
    b = LoanBreak(2, 1, "p", "object", 3, 4, 0, "write(2)", -1)
    assert q.to_dict()["va"] is None and b.to_dict()["va"] is None
    assert Event.from_dict(q.to_dict()) == q and Event.from_dict(b.to_dict()) == b


def test_every_event_class_round_trips_and_has_a_unique_name() -> None:
    from uvmloan import trace

    classes = {k for k in trace._BY_NAME.values()}
    for klass in classes:
        fields = attrs.fields(klass)
        # A made-up instance of the right shape: ints, strs, bools, tuples.
        vals: list[Any] = []
        for a in fields:
            t = str(a.type)
            if "tuple" in t:
                vals.append((0, 1) if "int" in t else ("kernel",))
            elif "bool" in t:
                vals.append(True)
            elif "str" in t:
                vals.append("x")
            else:
                vals.append(7)
        ev = klass(*vals)
        assert Event.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev
    assert len({k.KIND for k in classes}) == len(classes)


def test_the_spec_table_lists_every_event_name() -> None:
    from uvmloan import trace

    text = SPEC.read_text(encoding="utf-8")
    model = text.split("| `ev` (a layer's)")[0]
    listed = set(re.findall(r"^\| `([^`]+)` \| `\w+` \|", model, flags=re.M))
    # The model's own names, whatever layers a previous test registered.
    assert listed == set(trace.MODEL_EVENTS)


def test_the_spec_table_lists_every_layer_event_with_its_fields() -> None:
    import netstack.trace_events as layer

    text = SPEC.read_text(encoding="utf-8").split("| `ev` (a layer's)")[1]
    rows = re.findall(r"^\| `([^`]+)` \| `(\w+)` \| .* \| ([\w, ]+) \|$", text, flags=re.M)
    listed = {name: (klass, [f.strip() for f in fields.split(",")]) for name, klass, fields in rows}
    want = {
        c.KIND: (c.__name__, [a.name for a in attrs.fields(c)][3:]) for c in layer.EVENTS
    }
    assert listed == want


def _write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([], "empty trace"),
        ([{"ev": "pmap update", "t": 0, "cpu": 0, "space": "k"}], "not a trace header"),
        ([{**trace_header(), "schema": 99}], "trace schema 99"),
        ([trace_header(), {"ev": "tlbshoot round", "t": 0}], "2: unknown trace event"),
        ([trace_header(), {"ev": "pmap update", "t": 0, "cpu": 0}], "2: .*lacks field 'space'"),
    ],
)
def test_read_jsonl_refuses_bad_files(
    tmp_path: Path, lines: list[dict[str, Any]], match: str
) -> None:
    path = tmp_path / "bad.jsonl"
    _write(path, lines)
    with pytest.raises(ValueError, match=match):
        read_jsonl(path)


def test_read_jsonl_names_a_line_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(trace_header()) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        read_jsonl(path)


def test_a_local_only_round_record_does_not_read_back_as_remote() -> None:
    local = ShootdownRound(0, 1, "-", (1,), 1, False, False, False, 0)
    d = local.to_dict()
    assert d["ev"] == "tlbshoot local-only round"
    d["ev"] = "TLB shootdown"
    with pytest.raises(ValueError, match="does not match its fields"):
        Event.from_dict(d)


def test_write_jsonl_writes_the_header_it_is_given(tmp_path: Path) -> None:
    with Machine(ncpus=2, memory="1M", trace="record") as m:
        _workload(m)
        path = tmp_path / "w.jsonl"
        write_jsonl(m.trace, path, trace_header(m.profile, ncpus=2))
        assert read_header(path)["ncpus"] == 2
        assert read_jsonl(path) == m.trace
