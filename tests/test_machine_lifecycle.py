"""Machine(trace=...) takes only its modes, a Path or trace_file=; m.trace
says how to record; a closed machine refuses all work and changes nothing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import uvmloan
from uvmloan import (
    UVM_LOAN_TOPAGE,
    VM_PROT_READ,
    Machine,
    MachineClosed,
    pmap_enter,
    pmap_page_protect,
    pmap_protect,
    pmap_remove,
    pmap_update,
    uvm_fault,
    uvm_loan,
    uvm_pagealloc,
    uvm_pagefree,
    uvm_unloan,
)
from uvmloan.trace import read_jsonl


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


@pytest.mark.parametrize("mode", ["recrod", "Record", "counter", "out.jsonl", "", "t.jsonl"])
def test_a_string_that_is_not_a_mode_is_refused_and_creates_no_file(
    in_tmp: Path, mode: str
) -> None:
    with pytest.raises(ValueError, match="'off', 'counters', 'record'") as exc:
        Machine(ncpus=1, memory="1M", trace=mode)
    assert "trace_file" in str(exc.value)
    assert list(in_tmp.iterdir()) == []


@pytest.mark.parametrize("bad", [None, 3, True, b"record"])
def test_trace_of_another_type_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="trace must be"):
        Machine(ncpus=1, memory="1M", trace=bad)


def test_a_path_or_trace_file_writes_json_lines(tmp_path: Path) -> None:
    cases: list[tuple[Path, dict[str, Any]]] = [
        (tmp_path / "a.jsonl", {"trace": tmp_path / "a.jsonl"}),
        (tmp_path / "b.jsonl", {"trace_file": str(tmp_path / "b.jsonl")}),
        (tmp_path / "c.jsonl", {"trace": "record", "trace_file": tmp_path / "c.jsonl"}),
    ]
    for path, kwargs in cases:
        with Machine(ncpus=2, memory="1M", **kwargs) as m:
            p = m.spawn("p")
            p.write(p.mmap(4096), b"x")
            n = m.counters["pmap enter"]
        evs = read_jsonl(path)
        assert sum(1 for e in evs if e.name == "pmap enter") == n > 0
    with Machine(ncpus=1, memory="1M", trace="record", trace_file=tmp_path / "d.jsonl") as m:
        m.spawn("p").mmap(4096)
        assert isinstance(m.trace, list)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trace": Path("x.jsonl"), "trace_file": "y.jsonl"}, "not both"),
        ({"trace": "off", "trace_file": "y.jsonl"}, "needs tracing on"),
        ({"trace_file": 5}, "trace_file must be a path"),
        ({"trace_file": " "}, "trace_file must be a path"),
    ],
)
def test_bad_trace_file_combinations(in_tmp: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        Machine(ncpus=1, memory="1M", **kwargs)
    assert list(in_tmp.iterdir()) == []


@pytest.mark.parametrize(("mode", "what"), [("counters", "counts only"), ("off", "tracing off")])
def test_m_trace_without_recording_says_how_to_record(mode: str, what: str) -> None:
    with Machine(ncpus=1, memory="1M", trace=mode) as m:
        with pytest.raises(RuntimeError, match=f"{what}.*trace='record'.*record\\(\\)"):
            m.trace  # noqa: B018
        if mode == "counters":
            m.tracer.record()
            m.spawn("p").mmap(4096)
            assert m.trace == []  # mmap alone emits nothing; recording is on now


# ---------------------------------------------------------------- close()


def _closed_machine() -> tuple[Machine, dict[str, Any]]:
    m = Machine(ncpus=2, memory="1M", trace="record")
    p = m.spawn("p", cpu=0)
    va = p.mmap(3 * 4096)
    p.write(va, b"y" * 3 * 4096)
    kl = m.kernel_loan(p, va, 4096)
    pages = uvm_loan(p.map, va + 4096, 4096, UVM_LOAN_TOPAGE)
    pg = pages[0]
    vn = m.vnode(b"v" * 5000)
    m.close()
    return m, {"p": p, "va": va, "kl": kl, "pages": pages, "pg": pg, "vn": vn}


def _ops(m: Machine, o: dict[str, Any]) -> dict[str, Callable[[], object]]:
    p, va, kl, pages, pg, vn = o["p"], o["va"], o["kl"], o["pages"], o["pg"], o["vn"]
    return {
        "vn.write": lambda: vn.write(0, b"w"),
        "vn.read": lambda: vn.read(0, 4),
        "vn.truncate": lambda: vn.truncate(10),
        "vn.fsync": lambda: vn.fsync(),
        "spawn": lambda: m.spawn("q"),
        "vnode": lambda: m.vnode(b"abc"),
        "aobj": lambda: m.aobj(),
        "kernel_loan": lambda: m.kernel_loan(p, va, 10),
        "reclaim": lambda: m.reclaim(),
        "on_cpu": lambda: m.on_cpu(0).__enter__(),
        "mmap": lambda: p.mmap(4096),
        "munmap": lambda: p.munmap(va, 4096),
        "mprotect": lambda: p.mprotect(va, 4096, VM_PROT_READ),
        "mlock": lambda: p.mlock(va, 4096),
        "read": lambda: p.read(va, 4),
        "write": lambda: p.write(va + 8192, b"z"),
        "run_on": lambda: p.run_on(1),
        "fork": lambda: p.fork(),
        "exit": lambda: p.exit(),
        "kl.read": lambda: kl.read(0, 4),
        "kl.release": lambda: kl.release(),
        "uvm_loan": lambda: uvm_loan(p.map, va, 4096, UVM_LOAN_TOPAGE),
        "uvm_unloan": lambda: uvm_unloan(pages, UVM_LOAN_TOPAGE),
        "uvm_fault": lambda: uvm_fault(p.map, va + 8192, VM_PROT_READ),
        "pmap_enter": lambda: pmap_enter(p.pmap, va, pg.pa, VM_PROT_READ),
        "pmap_remove": lambda: pmap_remove(p.pmap, va, va + 4096),
        "pmap_protect": lambda: pmap_protect(p.pmap, va, va + 4096, VM_PROT_READ),
        "pmap_update": lambda: pmap_update(p.pmap),
        "pmap_page_protect": lambda: pmap_page_protect(pg, VM_PROT_READ),
        "uvm_pagealloc": lambda: uvm_pagealloc(None, 0, None, uvm=m.uvm),
        "uvm_pagefree": lambda: uvm_pagefree(pg),
    }


OPS = list(_ops(*_closed_machine()))


@pytest.mark.parametrize("op", OPS)
def test_a_closed_machine_refuses_work_and_changes_nothing(op: str) -> None:
    m, o = _closed_machine()
    clocks = [c.clock for c in m.cpus]
    counters = dict(m.counters)
    nevents = len(m.trace)
    nprocs = len(m.processes)
    allocated = m.uvm.allocated
    size = o["vn"].size
    with pytest.raises(MachineClosed, match="closed"):
        _ops(m, o)[op]()
    assert [c.clock for c in m.cpus] == clocks
    assert dict(m.counters) == counters and len(m.trace) == nevents
    assert len(m.processes) == nprocs and o["p"].alive and not o["kl"].released
    assert m.uvm.allocated == allocated and o["vn"].size == size
    assert m.closed and isinstance(MachineClosed("x"), RuntimeError)


def test_close_is_idempotent_and_results_stay_readable() -> None:
    m, _ = _closed_machine()
    m.close()
    assert m.counters["loan"] == 2 and len(m.trace) > 0
    assert "Machine" in repr(m)
    assert uvmloan.MachineClosed is MachineClosed


def test_the_pmap_snapshot_helper_works_on_a_machine_that_only_counts() -> None:
    from uvmloan.testing.pmap_machine import pmap_state_snapshot

    with Machine(ncpus=1, memory="1M") as m:
        assert pmap_state_snapshot(m)["nevents"] == 0
    with Machine(ncpus=1, memory="1M", trace="record") as m:
        p = m.spawn("p")
        p.write(p.mmap(4096), b"x")
        assert pmap_state_snapshot(m)["nevents"] == len(m.trace) > 0
