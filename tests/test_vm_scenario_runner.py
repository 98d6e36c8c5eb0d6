"""The scenario runner itself: format errors, failing expectations, extension points."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from uvmloan.testing import scenario as sc
from uvmloan.testing.scenario import (
    ScenarioContext,
    ScenarioError,
    ScenarioFailure,
    Step,
    load_scenario,
    register_check,
    register_op,
    run_scenario,
)

HEAD = """
[scenario]
name = "t"
rests_on = "sys/uvm/uvm_fault.c 1.226 uvm_fault"

[machine]
ncpus = 2
memory = "256K"
"""

BASE = (
    HEAD
    + """
[[step]]
op = "spawn"
proc = "p"

[[step]]
op = "mmap"
proc = "p"
as = "buf"
length = "2p"

[[step]]
op = "write"
proc = "p"
at = "buf+1p+2"
data = "hello"
"""
)


def run(text: str) -> ScenarioContext:
    ctx = run_scenario(textwrap.dedent(text))
    ctx.machine.close()
    return ctx


def test_a_minimal_scenario_runs() -> None:
    ctx = run(BASE + '[[expect]]\ncheck = "page"\nproc = "p"\nat = "buf+1p"\nan_ref = 1\n')
    assert set(ctx.procs) == {"p"}
    assert ctx.symbols["buf"] % 4096 == 0


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ('check = "page"\nproc = "p"\nat = "buf+1p"\nan_ref = 2', "an_ref 1, expected 2"),
        ('check = "page"\nproc = "p"\nat = "buf"\nresident = true', "resident is False"),
        ('check = "page"\nproc = "p"\nat = "buf+1p"\nwritable = false', "writable is True"),
        ('check = "page"\nproc = "p"\nat = "buf+1p"\nwire_count = 1', "wire_count 0"),
        ('check = "page"\nproc = "p"\nat = "buf+1p"\nflags_excludes = ["DIRTY"]', "has PG_DIRTY"),
        ('check = "page"\nproc = "p"\nat = "buf+1p"\nflags_contains = ["FILE"]', "lacks PG_FILE"),
        ('check = "page"\nproc = "p"\nat = "buf+1p"\nowner = "object"', "owner anon"),
        ('check = "allocated"\neq = 2', "allocated is 1"),
        ('check = "free_frames"\nat_least = 64', "free_frames is 63"),
        ('check = "counter"\nname = "fault"\neq = 0', "fault is 1"),
        ('check = "entries"\nproc = "p"\ncount = 3', "1 map entries"),
        (
            'check = "memory"\nproc = "p"\nat = "buf+1p+2"\nn = 5\nexpect = "HELLO"',
            "expected b'HELLO'",
        ),
    ],
)
def test_every_check_can_fail(check: str, message: str) -> None:
    """A check that can never fail is worth nothing."""
    with pytest.raises(ScenarioFailure, match=message):
        run(BASE + "[[expect]]\n" + check + "\n")


def test_a_wrong_read_fails_with_the_bytes() -> None:
    text = (
        BASE
        + '[[step]]\nop = "read"\nproc = "p"\nat = "buf+1p+2"\nn = 5\nexpect = "hex:68656c6c00"\n'
    )
    with pytest.raises(ScenarioFailure, match=r"read b'hello', expected b'hell\\x00'"):
        run(text)


def test_expect_error_must_happen_and_match() -> None:
    segv = '[[step]]\nop = "read"\nproc = "p"\nat = "buf+2p"\nn = 1\n'
    run(BASE + segv + 'expect_error = "SegmentationFault"\n')
    run(BASE + segv + 'expect_error = "UVMLoanError"\n')  # a base class matches
    with pytest.raises(ScenarioFailure, match="expected UVMError:EACCES"):
        run(BASE + segv + 'expect_error = "UVMError:EACCES"\n')
    with pytest.raises(ScenarioFailure, match="succeeded; expected SegmentationFault"):
        run(
            BASE + '[[step]]\nop = "read"\nproc = "p"\nat = "buf"\nn = 1\n'
            'expect_error = "SegmentationFault"\n'
        )
    with pytest.raises(ScenarioFailure, match="raised SegmentationFault"):
        run(BASE + segv)


def test_unchanged_detects_a_change() -> None:
    text = BASE + '[[step]]\nop = "write"\nproc = "p"\nat = "buf"\ndata = "x"\nunchanged = true\n'
    with pytest.raises(ScenarioFailure, match="changed the model"):
        run(text)
    text = (
        BASE
        + '[[step]]\nop = "write"\nproc = "p"\nat = "buf+1p"\ndata = "x"\nunchanged = ["memory"]\n'
    )
    with pytest.raises(ScenarioFailure, match="memory"):
        run(text)


def test_snapshot_and_since() -> None:
    text = (
        BASE
        + '[[step]]\nop = "snapshot"\nname = "s"\n'
        + '[[step]]\nop = "write"\nproc = "p"\nat = "buf"\ndata = "x"\n'
        + '[[expect]]\ncheck = "allocated"\nsince = "s"\neq = 1\n'
        + '[[expect]]\ncheck = "counter"\nname = "fault"\nsince = "s"\neq = 1\n'
        + '[[expect]]\ncheck = "free_frames"\nsince = "s"\neq = -1\n'
    )
    run(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[scenario]\nname = "x"\n', "rests_on"),
        ('[scenario]\nrests_on = "y"\n', "name"),
        (HEAD + "[other]\n", "unknown top-level"),
        (HEAD.replace("[machine]", "[machine]\ncpus = 2"), "unknown [machine] key"),
        (HEAD + '[[step]]\nop = "teleport"\n', "unknown op 'teleport'"),
        (HEAD + '[[step]]\nop = "spawn"\nproc = "p"\nsize = 3\n', "does not take ['size']"),
        (HEAD + '[[step]]\nop = "spawn"\n', "needs 'proc'"),
        (BASE + '[[step]]\nop = "read"\nproc = "q"\nat = "buf"\nn = 1\n', "no process named 'q'"),
        (
            BASE + '[[step]]\nop = "read"\nproc = "p"\nat = "nosuch+4"\nn = 1\n',
            "unknown address symbol",
        ),
        (BASE + '[[step]]\nop = "mmap"\nproc = "p"\nprot = "rwz"\n', "bad protection letter"),
        (BASE + '[[step]]\nop = "mmap"\nproc = "p"\nflags = "sharde"\n', "unknown mmap flag"),
        (BASE + '[[expect]]\ncheck = "nope"\n', "unknown check 'nope'"),
        (BASE + '[[expect]]\ncheck = "allocated"\n', "give eq, at_least or at_most"),
        (BASE + '[[expect]]\ncheck = "allocated"\nsince = "zz"\neq = 1\n', "no snapshot named"),
        (HEAD.replace('name = "t"', 'name = "t"\ninvariants = "sometimes"'), "invariants must be"),
    ],
)
def test_malformed_scenarios_are_errors(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run(text)


def test_address_and_size_expressions() -> None:
    ctx = run_scenario(textwrap.dedent(BASE))
    try:
        buf = ctx.symbols["buf"]
        assert ctx.addr("buf") == buf
        assert ctx.addr("buf+1p+0x10-8") == buf + 4096 + 8
        assert ctx.addr(12345) == 12345
        assert ctx.addr("0x1000") == 0x1000
        assert ctx.size("3p") == 3 * 4096
        assert ctx.size("8K") == 8192
        assert ctx.size("1p+10") == 4106
        assert ctx.size("0x20") == 32
    finally:
        ctx.machine.close()


def test_register_op_and_check_extend_the_format() -> None:
    seen: list[str] = []

    def op_touch_all(ctx: ScenarioContext, step: Step) -> None:
        p = ctx.proc(step)
        for e in p.map.entries.values():
            for va in range(e.start, e.end, ctx.page_size):
                p.write(va, b"t")
        ctx.objects["touched"] = True
        seen.append("op")

    def check_touched(ctx: ScenarioContext, spec: Step) -> None:
        if ctx.objects.get("touched") is not spec.get("value", True):
            raise ctx.fail("not touched")
        seen.append("check")

    register_op("test_touch_all", op_touch_all, {"proc"})
    register_check("test_touched", check_touched, {"value"})
    try:
        assert "test_touch_all" in sc.registered_ops()
        run(
            BASE + '[[step]]\nop = "test_touch_all"\nproc = "p"\n'
            '[[step.check]]\ncheck = "test_touched"\n'
            '[[expect]]\ncheck = "allocated"\neq = 2\n'
        )
        assert seen == ["op", "check"]
        with pytest.raises(ScenarioError, match="does not take"):
            run(BASE + '[[step]]\nop = "test_touch_all"\nproc = "p"\nfoo = 1\n')
    finally:
        sc._OPS.pop("test_touch_all", None)
        sc._CHECKS.pop("test_touched", None)


def test_plugins_are_imported_and_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_scenario_plugin.py").write_text(
        textwrap.dedent("""
        from uvmloan.testing.scenario import register_op
        CALLS = []
        def op_mark(ctx, step):
            ctx.objects["marked"] = step["value"]
        def setup():
            CALLS.append(1)
            register_op("test_mark", op_mark, {"value"})
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = (
        BASE.replace('name = "t"', 'name = "t"\nplugins = ["my_scenario_plugin:setup"]')
        + '[[step]]\nop = "test_mark"\nvalue = 7\n'
    )
    try:
        ctx = run(text)
        assert ctx.objects["marked"] == 7
    finally:
        sc._OPS.pop("test_mark", None)
    bad = BASE.replace('name = "t"', 'name = "t"\nplugins = ["my_scenario_plugin:nothing"]')
    with pytest.raises(ScenarioError, match="no callable 'nothing'"):
        run(bad)


def test_load_scenario_from_a_file_keeps_the_path(tmp_path: Path) -> None:
    f = tmp_path / "one.toml"
    f.write_text(BASE)
    s = load_scenario(f)
    assert s.path == f and s.name == "t" and len(s.steps) == 3
    assert load_scenario(str(f)).path == f
    ctx = run_scenario(s)
    ctx.machine.close()


def test_invariants_run_after_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = getattr(sc, "check_invariants")  # noqa: B009 - not re-exported

    def counting(m: object) -> None:
        calls.append(1)
        real(m)

    monkeypatch.setattr(sc, "check_invariants", counting)
    run(BASE)
    assert len(calls) == 3 + 1  # every step, then once at the end
    calls.clear()
    run(BASE.replace('name = "t"', 'name = "t"\ninvariants = "end"'))
    assert len(calls) == 1
