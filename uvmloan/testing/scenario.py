"""Executable scenarios: TOML files that set up a machine, run operations and check state.

A scenario is the specification of one behaviour, written so that it runs.
Each rests on a named piece of NetBSD source, so a reader can hold the file
beside the C code.  ``tests/test_scenarios.py`` runs every ``*.toml`` under
``specs/scenarios/`` (recursively) as its own test.

Format
======

.. code-block:: toml

    [scenario]
    name = "cow-parent-writes"                      # required, unique
    rests_on = "sys/uvm/uvm_fault.c 1.226 uvm_fault_upper_promote"   # required
    description = "free text"                       # optional
    plugins = ["mypkg.ops", "pkg.mod:register"]     # import (and call) to register ops
    invariants = "every-step"                       # or "end" or "off"
    xfail = "reason"                                # the test runner expects failure

    [machine]                                       # all optional
    ncpus = 2
    memory = "1M"                                   # or npages = 256
    page_size = 4096
    profile = "netbsd-10"
    trace = "counters"                              # "off", "counters", "record"
    [machine.profile_overrides]
    tp_maxva = 7

    [[step]]
    op = "spawn"
    proc = "p"
    cpu = 0

    [[step]]
    op = "mmap"
    proc = "p"
    as = "buf"              # the returned address becomes the symbol "buf"
    length = "2p"           # bytes, "8K", or "Np" (pages)

    [[step]]
    op = "write"
    proc = "p"
    at = "buf+0x10"         # symbol[+|-offset]; offsets are ints, hex or "Np"
    data = "hello"          # text, or "hex:68656c6c6f"; or fill = 0x41 with n = 4096

    [[step]]
    op = "read"
    proc = "p"
    at = "buf+0x10"
    n = 5
    expect = "hello"        # or "hex:..."; or expect_fill = 0

    [[step.check]]          # checks run right after this step
    check = "page"
    proc = "p"
    at = "buf"
    an_ref = 1
    flags_contains = ["DIRTY", "ANON"]

    [[expect]]              # checks run at the end
    check = "allocated"
    eq = "vnode-cache"

Every step may also carry:

* ``expect_error = "SegmentationFault"`` (any class in the exception's MRO:
  ``"UVMError"``, ``"ValueError"``, ``"KernelAssertion"`` ...), or
  ``"UVMError:EACCES"`` to also match the errno name, or
  ``"InvariantViolation:I3"`` to also match the invariant that fired.  The step must raise
  it; any other outcome fails the scenario.
* ``unchanged = true`` (or a list of aspects, see ``ASPECTS``): the model
  state after the step must equal the state before it.  Counters, TLB
  contents and the pmap each CPU has loaded are not compared unless listed
  (a failed system call still ran on its CPU).
* ``cpu``: where it applies, the CPU the operation runs on.

Operations (``op``)
-------------------
``spawn`` (proc, cpu), ``fork`` (proc, child, cpu), ``exit`` (proc),
``run_on`` (proc, cpu), ``mmap`` (proc, as, length, prot = "rw" | "r" | "none" |
"rwx" | int, flags = "private" | "shared" [+ "fixed"] (a list or "shared,fixed"),
vnode, offset, addr, maxprot), ``munmap``/``mprotect``/``mlock``/``munlock``
(proc, at, length [, prot]), ``write`` (proc, at, data | fill+n, cpu),
``read`` (proc, at, n, expect | expect_fill, cpu), ``vnode`` (name, data |
size+fill | size+pattern), ``vnode_write`` (name, offset, data),
``vnode_read`` (name, offset, n, expect), ``vnode_truncate`` (name, size),
``vnode_fsync`` (name), ``limit`` (extra = N: at most N more pages may be
allocated; or limit = N; or limit = "none"), ``reserve`` (pages),
``snapshot`` (name: remember counters and page counts for ``since``),
``symbol`` (as, value: define an address), ``check`` (a step made only of
``[[step.check]]`` tables).

Checks (``check``)
------------------
``page`` (proc + at, or vnode + offset): ``layer`` ("anon" | "object" |
"none"), ``resident``, ``an_ref``, ``loan_count``, ``wire_count``,
``flags_contains``/``flags_excludes`` (PG flag names), ``owner`` ("anon" |
"object" | "orphan" | "none"), ``queue`` ("active" | "inactive" | "none"),
``mapped``, ``writable``, ``wired_mapping`` (the PTE of proc+at),
``same_frame_as``/``other_frame_than`` ("proc:addr" or "vnode:name:offset").
``counter`` (name; eq | at_least | at_most; ``since`` = snapshot name makes
the bound apply to the increase since that snapshot).  ``allocated`` and
``free_frames`` (eq | at_least | at_most, ``since``; ``eq = "vnode-cache"``
means exactly the resident pages of the scenario's vnodes).  ``vnode``
(name; offset + n + expect: read(2); ``backing`` = expected disk bytes from
offset; ``size``).  ``entries`` (proc, count).  ``process`` (proc, alive).
``invariants`` (``check_invariants`` passes).  ``memory`` (proc, at, n,
expect: what the process reads, through the MMU, on ``cpu``).

Extending
---------
``register_op(name, fn, keys=...)`` and ``register_check(name, fn, keys=...)``
add operations and checks without touching this module; a scenario names the
module that registers them in ``[scenario] plugins``: ``"pkg.mod"`` is
imported (and registers at import), ``"pkg.mod:fn"`` is imported and
``fn()`` called.  An op is
``fn(ctx: ScenarioContext, step: Step) -> None``; it finds processes, vnodes
and symbols through ``ctx`` and may keep its own objects in ``ctx.objects``
(e.g. a kernel loan under a name).  ``keys`` lists the step keys the op
accepts beyond the common ones, so a misspelt key is an error rather than a
silently ignored line.
"""

from __future__ import annotations

import errno as _errno
import importlib
import re
import tomllib
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..invariants import check_invariants
from ..machine import Machine, parse_size
from ..object import VnodeObject
from ..param import MAP_FIXED, MAP_PRIVATE, MAP_SHARED, PG, VMProt
from ..pmap.pte import PTE_P, PTE_W, PTE_WIRED, pte_frame

if TYPE_CHECKING:
    from ..map import MapEntry
    from ..page import Page
    from ..process import Process

Step = Mapping[str, Any]
OpFn = Callable[["ScenarioContext", Step], None]
CheckFn = Callable[["ScenarioContext", Step], None]

COMMON_STEP_KEYS = frozenset({"op", "expect_error", "unchanged", "check", "note", "cpu"})
COMMON_CHECK_KEYS = frozenset({"check", "note"})


class ScenarioError(Exception):
    """The scenario file is malformed (unknown op or key, bad value)."""


class ScenarioFailure(AssertionError):
    """The model did not behave as the scenario says."""


@attrs.define(frozen=True)
class _Registered:
    fn: Callable[[ScenarioContext, Step], None]
    keys: frozenset[str] | None


_OPS: dict[str, _Registered] = {}
_CHECKS: dict[str, _Registered] = {}


def register_op(name: str, fn: OpFn, keys: Iterable[str] | None = None) -> None:
    """Add (or replace) the operation ``name``.

    ``keys``: the step keys the op accepts besides ``COMMON_STEP_KEYS``;
    None accepts any key.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_op: name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"register_op: fn for {name!r} is not callable")
    _OPS[name] = _Registered(fn, None if keys is None else frozenset(keys))


def register_check(name: str, fn: CheckFn, keys: Iterable[str] | None = None) -> None:
    """Add (or replace) the check ``name`` (``keys`` as for ``register_op``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_check: name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"register_check: fn for {name!r} is not callable")
    _CHECKS[name] = _Registered(fn, None if keys is None else frozenset(keys))


def registered_ops() -> list[str]:
    return sorted(_OPS)


def registered_checks() -> list[str]:
    return sorted(_CHECKS)


# --------------------------------------------------------------------- context


@attrs.define(eq=False)
class ScenarioContext:
    """What ops and checks see: the machine and everything named so far."""

    machine: Machine
    name: str = ""
    procs: dict[str, Process] = attrs.field(factory=dict)
    vnodes: dict[str, VnodeObject] = attrs.field(factory=dict)
    symbols: dict[str, int] = attrs.field(factory=dict)
    snapshots: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    # Free for plugins: kernel loans, page lists, anything named by a step.
    objects: dict[str, Any] = attrs.field(factory=dict)
    step_index: int = -1

    @property
    def page_size(self) -> int:
        return self.machine.page_size

    def where(self) -> str:
        return f"scenario {self.name!r} step {self.step_index}"

    def fail(self, msg: str) -> ScenarioFailure:
        return ScenarioFailure(f"{self.where()}: {msg}")

    # -------------------------------------------------------------- lookups

    def proc(self, step: Step, key: str = "proc") -> Process:
        name = _req(step, key, str, self)
        p = self.procs.get(name)
        if p is None:
            raise ScenarioError(f"{self.where()}: no process named {name!r}")
        return p

    def vnode(self, step: Step, key: str = "name") -> VnodeObject:
        name = _req(step, key, str, self)
        vn = self.vnodes.get(name)
        if vn is None:
            raise ScenarioError(f"{self.where()}: no vnode named {name!r}")
        return vn

    def addr(self, expr: object) -> int:
        """Evaluate an address: an int, or terms joined by + and -, each a
        symbol or a size (``"buf+1p+0x10"``, ``"buf-8"``, ``"0x20000000"``)."""
        if isinstance(expr, int) and not isinstance(expr, bool):
            return expr
        if not isinstance(expr, str) or not expr.strip():
            raise ScenarioError(f"{self.where()}: address must be an int or a string, not {expr!r}")
        s = expr.replace(" ", "")
        terms = re.findall(r"[+-]?[^+-]+", s)
        if "".join(terms) != s:
            raise ScenarioError(f"{self.where()}: cannot read address {expr!r}")
        total = 0
        for t in terms:
            sign = -1 if t.startswith("-") else 1
            t = t.lstrip("+-")
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", t) and not re.fullmatch(r"\d+p", t):
                if t not in self.symbols:
                    raise ScenarioError(f"{self.where()}: unknown address symbol {t!r}")
                total += sign * self.symbols[t]
            else:
                total += sign * self.size(t)
        return total

    def size(self, v: object) -> int:
        """A byte count: an int, "0x1000", "8K", "2M", "3p" (pages), or a sum ("1p+10")."""
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if not isinstance(v, str):
            raise ScenarioError(f"{self.where()}: size must be an int or a string, not {v!r}")
        s = v.strip()
        if "+" in s[1:]:
            return sum(self.size(t) for t in s.split("+"))
        try:
            if s.endswith("p"):
                return int(s[:-1], 0) * self.page_size
            if s.lower().startswith(("0x", "0o", "0b")) or s.isdigit():
                return int(s, 0)
            return parse_size(s)
        except ValueError:
            raise ScenarioError(f"{self.where()}: cannot read size {v!r}") from None

    def cpu(self, step: Step) -> int | None:
        c = step.get("cpu")
        if c is None:
            return None
        if not isinstance(c, int) or isinstance(c, bool):
            raise ScenarioError(f"{self.where()}: cpu must be an int, got {c!r}")
        return c

    def page_ref(self, ref: str) -> Page | None:
        """``"proc:addr"`` or ``"vnode:name:offset"``: the page there, if resident."""
        parts = ref.split(":")
        if parts[0] == "vnode" and len(parts) == 3:
            vn = self.vnodes.get(parts[1])
            if vn is None:
                raise ScenarioError(f"{self.where()}: no vnode named {parts[1]!r}")
            return vn.uvm_pagelookup(self.size(parts[2]))
        if len(parts) == 2:
            p = self.procs.get(parts[0])
            if p is None:
                raise ScenarioError(f"{self.where()}: no process named {parts[0]!r}")
            return layer_page(p, self.addr(parts[1]))[1]
        raise ScenarioError(
            f"{self.where()}: page reference {ref!r} is not proc:addr or vnode:name:off"
        )


def _req(step: Step, key: str, typ: type | tuple[type, ...], ctx: ScenarioContext) -> Any:
    if key not in step:
        raise ScenarioError(f"{ctx.where()}: {step.get('op') or step.get('check')!r} needs {key!r}")
    v = step[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise ScenarioError(f"{ctx.where()}: {key!r} has the wrong type: {v!r}")
    return v


def layer_page(p: Process, va: int) -> tuple[str, Page | None, Any]:
    """Which layer provides ``va`` in ``p``'s map, the page, and the anon if any."""
    ps = p.machine.page_size
    va -= va % ps
    e: MapEntry | None = p.map.uvm_map_lookup_entry(va)
    if e is None:
        return "none", None, None
    if e.amap is not None:
        anon = e.amap.lookup(e.slot(va))
        if anon is not None:
            return "anon", anon.an_page, anon
    if e.object is not None:
        return "object", e.object.uvm_pagelookup(e.objoff(va)), None
    return "none", None, None


# --------------------------------------------------------------- bytes & prot

_PROT_LETTERS = {"r": VMProt.READ, "w": VMProt.WRITE, "x": VMProt.EXECUTE}


def parse_prot(v: object, ctx: ScenarioContext) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if not isinstance(v, str):
        raise ScenarioError(f"{ctx.where()}: prot must be a string like 'rw' or an int, not {v!r}")
    if v.lower() in ("none", "-", ""):
        return 0
    out = 0
    for ch in v.lower():
        if ch not in _PROT_LETTERS:
            raise ScenarioError(f"{ctx.where()}: bad protection letter {ch!r} in {v!r}")
        out |= int(_PROT_LETTERS[ch])
    return out


def parse_flags(v: object, ctx: ScenarioContext) -> int:
    words: list[str]
    if isinstance(v, str):
        words = [w.strip() for w in v.replace("|", ",").split(",") if w.strip()]
    elif isinstance(v, list) and all(isinstance(w, str) for w in v):
        words = list(v)
    else:
        raise ScenarioError(
            f"{ctx.where()}: flags must be a string or a list of strings, not {v!r}"
        )
    table = {"private": MAP_PRIVATE, "shared": MAP_SHARED, "fixed": MAP_FIXED}
    out = 0
    for w in words:
        if w.lower() not in table:
            raise ScenarioError(f"{ctx.where()}: unknown mmap flag {w!r}")
        out |= table[w.lower()]
    return out


def parse_bytes(v: object, ctx: ScenarioContext) -> bytes:
    """Text, or ``"hex:0011ff"``."""
    if not isinstance(v, str):
        raise ScenarioError(f"{ctx.where()}: bytes must be a string, not {v!r}")
    if v.startswith("hex:"):
        try:
            return bytes.fromhex(v[4:])
        except ValueError:
            raise ScenarioError(f"{ctx.where()}: bad hex in {v!r}") from None
    return v.encode()


def step_data(step: Step, ctx: ScenarioContext, key: str = "data") -> bytes:
    if key in step:
        return parse_bytes(step[key], ctx)
    if "fill" in step:
        fill = _req(step, "fill", int, ctx)
        n = ctx.size(step.get("n", step.get("size")))
        return bytes([fill]) * n
    if "pattern" in step:
        pat = parse_bytes(step["pattern"], ctx)
        n = ctx.size(step.get("n", step.get("size")))
        return (pat * (n // max(1, len(pat)) + 1))[:n]
    raise ScenarioError(f"{ctx.where()}: give {key!r}, or fill/pattern with n")


def _show(b: bytes) -> str:
    if len(b) > 48:
        return f"{b[:48]!r}... ({len(b)} bytes)"
    return repr(b)


def expect_bytes(got: bytes, step: Step, ctx: ScenarioContext, what: str) -> None:
    if "expect" in step:
        want = parse_bytes(step["expect"], ctx)
        if got != want:
            raise ctx.fail(f"{what}: read {_show(got)}, expected {_show(want)}")
    elif "expect_fill" in step:
        fill = _req(step, "expect_fill", int, ctx)
        if got != bytes([fill]) * len(got):
            raise ctx.fail(f"{what}: read {_show(got)}, expected every byte {fill:#x}")


# --------------------------------------------------------------- state snapshot

ASPECTS = (
    "maps",
    "amaps",
    "anons",
    "pages",
    "free",
    "ptes",
    "tlbs",
    "cpus",
    "processes",
    "objects",
    "memory",
    "loans",
    "counters",
)
# A failed system call still ran on its CPU (a context switch may load the
# process's pmap and flush TLBs), so ``unchanged = true`` leaves those out.
DEFAULT_UNCHANGED = tuple(a for a in ASPECTS if a not in ("counters", "tlbs", "cpus"))


def state_snapshot(m: Machine, aspects: Iterable[str] = ASPECTS) -> dict[str, Any]:
    """A comparable picture of the model state (``diff_snapshots`` compares two).

    Aspects: ``maps`` (entries' ranges, protections, inheritance, objects,
    wiring), ``amaps`` (amap identity, slot offset, needs-copy: these change
    when a fault resolves needs-copy before failing, as NetBSD's do),
    ``anons`` (anon and an_ref behind every mapped page), ``pages`` (every
    allocated vm_page's fields), ``free`` (the free list), ``ptes`` (every
    pmap), ``tlbs`` (every CPU's cached entries and pending shootdowns),
    ``cpus`` (the pmap each CPU has loaded),
    ``processes``, ``objects`` (objects reachable from maps and pages),
    ``memory`` (a CRC of every allocated frame), ``loans`` and ``counters``.
    """
    want = set(aspects)
    bad = want - set(ASPECTS)
    if bad:
        raise ValueError(f"unknown snapshot aspect(s) {sorted(bad)}; known: {', '.join(ASPECTS)}")
    out: dict[str, Any] = {}
    maps = sorted(m._maps.values(), key=lambda vm: vm.name)
    objs: dict[int, Any] = {}
    if "maps" in want or "amaps" in want or "anons" in want:
        ents: list[Any] = []
        amaps: list[Any] = []
        anons: list[Any] = []
        for vm in maps:
            for e in vm.entries.values():
                ents.append(
                    (
                        vm.name,
                        e.start,
                        e.end,
                        int(e.protection),
                        int(e.max_protection),
                        e.inheritance,
                        e.copy_on_write,
                        e.wired_count,
                        e.vaonly,
                        e.object.name if e.object is not None else None,
                        e.offset,
                    )
                )
                if e.object is not None:
                    objs[id(e.object)] = e.object
                amaps.append(
                    (
                        vm.name,
                        e.start,
                        e.amap.name if e.amap is not None else None,
                        e.slotoff,
                        e.needs_copy,
                    )
                )
                if e.amap is not None:
                    for slot in e.amap.slots.irange(
                        e.slotoff, e.slotoff + e.npages, inclusive=(True, False)
                    ):
                        a = e.amap.slots[slot]
                        va = e.start + (slot - e.slotoff) * vm.page_size
                        anons.append(
                            (
                                vm.name,
                                va,
                                a.name,
                                a.an_ref,
                                a.an_page.frame if a.an_page is not None else None,
                                a.an_swslot,
                            )
                        )
        if "maps" in want:
            out["maps"] = ents
        if "amaps" in want:
            out["amaps"] = amaps
        if "anons" in want:
            out["anons"] = anons
    uvm = m.uvm
    if "pages" in want or "objects" in want:
        pages = []
        for frame in sorted(uvm.pages):
            pg = uvm.pages[frame]
            if pg.uobject is not None:
                objs[id(pg.uobject)] = pg.uobject
            pages.append(
                (
                    frame,
                    int(pg.flags),
                    pg.loan_count,
                    pg.wire_count,
                    getattr(pg.uobject, "name", None),
                    getattr(pg.uanon, "name", None),
                    pg.offset,
                    pg.pqueue.value,
                    sorted((pm.name, va) for pm, va in pg.mdpage.pv),
                    pg.mdpage.attrs,
                )
            )
        if "pages" in want:
            out["pages"] = pages
            out["queues"] = ([p.frame for p in uvm.active], [p.frame for p in uvm.inactive])
    if "free" in want:
        out["free"] = list(uvm.free)
        out["limit"] = (uvm.limit, uvm.reserve)
    if "ptes" in want:
        out["ptes"] = sorted(
            (pm.name, pm.is_kernel, sorted(pm.ptes.items()), pm.resident_count, pm.wired_count)
            for pm in m.pmap.pmaps
        )
    if "tlbs" in want:
        out["tlbs"] = [(c.index, sorted((k, pte) for k, (_pm, pte) in c.tlb)) for c in m.cpus]
        out["shootdowns"] = [
            (list(c.packet.vas), c.packet.allva, sorted(c.packet.targets), len(c.pending_ipis))
            for c in m.cpus
        ]
    if "cpus" in want:
        out["cpus"] = [(c.index, getattr(c.curpmap, "name", None), c.tlbstate) for c in m.cpus]
    if "processes" in want:
        out["processes"] = ([(p.pid, p.name, p.alive, p.cpu) for p in m.processes], m._pid)
    if "objects" in want:
        out["objects"] = sorted(
            (
                o.name,
                o.uo_refs,
                list(o.uo_pages.keys()),
                zlib.crc32(bytes(o.backing)) if isinstance(o, VnodeObject) else None,
            )
            for o in objs.values()
        )
    if "memory" in want:
        out["memory"] = [(f, zlib.crc32(m.physmem.frame_view(f))) for f in sorted(uvm.pages)]
    if "loans" in want:
        out["loans"] = (
            sorted((pg.frame, n) for pg, n in uvm.loan_ledger.items()),
            len(m.kernel_loans),
        )
    if "counters" in want:
        out["counters"] = dict(m.counters)
    return out


def diff_snapshots(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two snapshots (empty if equal)."""
    out: list[str] = []
    for k in before:
        a, b = before[k], after.get(k)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            sa, sb = [repr(x) for x in a], [repr(x) for x in b]
            gone = [x for x in sa if x not in sb][:3]
            new = [x for x in sb if x not in sa][:3]
            out.append(
                f"{k}: before-only {gone}, after-only {new}"
                if gone or new
                else f"{k}: order changed"
            )
        elif isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(set(a) | set(b))
            d = [f"{x}: {a.get(x)} -> {b.get(x)}" for x in keys if a.get(x) != b.get(x)][:5]
            out.append(f"{k}: {d}")
        else:
            out.append(f"{k}: {a!r} -> {b!r}"[:300])
    return out


# ------------------------------------------------------------------- running


@attrs.define
class Scenario:
    """A parsed scenario file."""

    name: str
    rests_on: str
    machine: dict[str, Any]
    steps: list[dict[str, Any]]
    expects: list[dict[str, Any]]
    description: str = ""
    plugins: list[str] = attrs.field(factory=list)
    invariants: str = "every-step"
    xfail: str | None = None
    path: Path | None = None


_SCENARIO_KEYS = {"name", "rests_on", "description", "plugins", "invariants", "xfail"}
_MACHINE_KEYS = {"ncpus", "memory", "npages", "page_size", "profile", "profile_overrides", "trace"}


def load_scenario(source: str | Path | Mapping[str, Any]) -> Scenario:
    """Parse a scenario from a path, TOML text, or an already-parsed mapping."""
    path: Path | None = None
    if isinstance(source, Path) or (
        isinstance(source, str) and source.endswith(".toml") and "\n" not in source
    ):
        path = Path(source)
        with path.open("rb") as f:
            doc: Mapping[str, Any] = tomllib.load(f)
    elif isinstance(source, str):
        doc = tomllib.loads(source)
    elif isinstance(source, Mapping):
        doc = source
    else:
        raise TypeError(f"load_scenario: expected a path, TOML text or a mapping, not {source!r}")
    where = str(path) if path else "scenario"
    unknown = set(doc) - {"scenario", "machine", "step", "expect"}
    if unknown:
        raise ScenarioError(f"{where}: unknown top-level table(s) {sorted(unknown)}")
    head = doc.get("scenario")
    if not isinstance(head, Mapping):
        raise ScenarioError(f"{where}: a [scenario] table with name and rests_on is required")
    bad = set(head) - _SCENARIO_KEYS
    if bad:
        raise ScenarioError(f"{where}: unknown [scenario] key(s) {sorted(bad)}")
    for k in ("name", "rests_on"):
        if not isinstance(head.get(k), str) or not head[k].strip():
            raise ScenarioError(f"{where}: [scenario] {k} must be a non-empty string")
    machine = dict(doc.get("machine", {}))
    bad = set(machine) - _MACHINE_KEYS
    if bad:
        raise ScenarioError(f"{where}: unknown [machine] key(s) {sorted(bad)}")
    steps = doc.get("step", [])
    expects = doc.get("expect", [])
    if not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps):
        raise ScenarioError(f"{where}: [[step]] must be an array of tables")
    if not isinstance(expects, list) or not all(isinstance(s, Mapping) for s in expects):
        raise ScenarioError(f"{where}: [[expect]] must be an array of tables")
    inv = head.get("invariants", "every-step")
    if inv not in ("every-step", "end", "off"):
        raise ScenarioError(f"{where}: invariants must be 'every-step', 'end' or 'off'")
    plugins = head.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ScenarioError(f"{where}: plugins must be a list of module names")
    xfail = head.get("xfail")
    if xfail is not None and not isinstance(xfail, str):
        raise ScenarioError(f"{where}: xfail must be a string (the reason)")
    return Scenario(
        name=head["name"],
        rests_on=head["rests_on"],
        machine=machine,
        steps=[dict(s) for s in steps],
        expects=[dict(e) for e in expects],
        description=head.get("description", ""),
        plugins=list(plugins),
        invariants=inv,
        xfail=xfail,
        path=path,
    )


def _build_machine(sc: Scenario) -> Machine:
    mc = dict(sc.machine)
    kwargs: dict[str, Any] = {
        "ncpus": mc.pop("ncpus", 1),
        "trace": mc.pop("trace", "counters"),
        "profile": mc.pop("profile", "netbsd-10"),
    }
    if "npages" in mc:
        kwargs["npages"] = mc.pop("npages")
    else:
        kwargs["memory"] = mc.pop("memory", "4M")
    for k in ("page_size", "profile_overrides"):
        if k in mc:
            kwargs[k] = mc.pop(k)
    return Machine(**kwargs)


def _match_error(exc: BaseException, spec: str) -> bool:
    name, _, detail = spec.partition(":")
    if not any(c.__name__ == name for c in type(exc).__mro__):
        return False
    if not detail:
        return True
    # "InvariantViolation:I3" names the invariant that must fire.
    invariant = getattr(exc, "invariant", None)
    if invariant is not None:
        return bool(invariant == detail)
    code = getattr(exc, "errno", None)
    return code is not None and _errno.errorcode.get(code) == detail


def _validate_keys(
    step: Step, reg: _Registered, common: frozenset[str], what: str, ctx: ScenarioContext
) -> None:
    if reg.keys is None:
        return
    bad = set(step) - common - reg.keys
    if bad:
        raise ScenarioError(
            f"{ctx.where()}: {what} does not take {sorted(bad)}; it takes {sorted(reg.keys)}"
        )


def run_check(ctx: ScenarioContext, spec: Step) -> None:
    kind = spec.get("check")
    if not isinstance(kind, str) or kind not in _CHECKS:
        raise ScenarioError(f"{ctx.where()}: unknown check {kind!r}; known: {registered_checks()}")
    reg = _CHECKS[kind]
    _validate_keys(spec, reg, COMMON_CHECK_KEYS, f"check {kind!r}", ctx)
    reg.fn(ctx, spec)


def run_step(ctx: ScenarioContext, step: Step) -> None:
    """Run one step: the op, its expected error and ``unchanged`` rule, its checks."""
    op = step.get("op")
    if not isinstance(op, str) or op not in _OPS:
        raise ScenarioError(f"{ctx.where()}: unknown op {op!r}; known: {registered_ops()}")
    reg = _OPS[op]
    _validate_keys(step, reg, COMMON_STEP_KEYS, f"op {op!r}", ctx)
    unchanged = step.get("unchanged", False)
    aspects: tuple[str, ...] | None = None
    if unchanged is True:
        aspects = DEFAULT_UNCHANGED
    elif isinstance(unchanged, list) and all(isinstance(a, str) for a in unchanged):
        aspects = tuple(unchanged)
    elif unchanged is not False:
        raise ScenarioError(f"{ctx.where()}: unchanged must be true or a list of aspects")
    before = state_snapshot(ctx.machine, aspects) if aspects else None
    want_err = step.get("expect_error")
    if want_err is not None and not isinstance(want_err, str):
        raise ScenarioError(f"{ctx.where()}: expect_error must be a string")
    try:
        reg.fn(ctx, step)
    except (ScenarioError, ScenarioFailure):
        raise
    except Exception as exc:
        if want_err is None or not _match_error(exc, want_err):
            raise ctx.fail(
                f"op {op!r} raised {type(exc).__name__}: {exc}"
                + (f" (expected {want_err})" if want_err else "")
            ) from exc
    else:
        if want_err is not None:
            raise ctx.fail(f"op {op!r} succeeded; expected {want_err}")
    if before is not None and aspects is not None:
        diffs = diff_snapshots(before, state_snapshot(ctx.machine, aspects))
        if diffs:
            raise ctx.fail(f"op {op!r} changed the model: " + "; ".join(diffs))
    checks = step.get("check", [])
    if not isinstance(checks, list):
        raise ScenarioError(f"{ctx.where()}: a step's checks must be [[step.check]] tables")
    for c in checks:
        run_check(ctx, c)


def load_plugin(spec: str) -> None:
    """Import ``"package.module"`` (which registers at import), or import
    ``"package.module:function"`` and call ``function()`` to register."""
    modname, _, fname = spec.partition(":")
    mod = importlib.import_module(modname)
    if fname:
        fn = getattr(mod, fname, None)
        if not callable(fn):
            raise ScenarioError(f"plugin {spec!r}: {modname} has no callable {fname!r}")
        fn()


def run_scenario(source: str | Path | Mapping[str, Any] | Scenario) -> ScenarioContext:
    """Load (if needed) and run a scenario; raises ScenarioFailure on a mismatch.

    Returns the context (machine, names) so a caller can look further.
    """
    sc = source if isinstance(source, Scenario) else load_scenario(source)
    for plugin in sc.plugins:
        load_plugin(plugin)
    m = _build_machine(sc)
    ctx = ScenarioContext(machine=m, name=sc.name)
    try:
        for i, step in enumerate(sc.steps):
            ctx.step_index = i
            run_step(ctx, step)
            if sc.invariants == "every-step":
                _invariants(ctx)
        ctx.step_index = len(sc.steps)
        for c in sc.expects:
            run_check(ctx, c)
        if sc.invariants != "off":
            _invariants(ctx)
    except BaseException:
        m.close()
        raise
    return ctx


def _invariants(ctx: ScenarioContext) -> None:
    try:
        check_invariants(ctx.machine)
    except AssertionError as e:
        raise ctx.fail(f"check_invariants: {e}") from e


# ----------------------------------------------------------------------- ops


def _op_spawn(ctx: ScenarioContext, step: Step) -> None:
    name = _req(step, "proc", str, ctx)
    if name in ctx.procs:
        raise ScenarioError(f"{ctx.where()}: process {name!r} already exists")
    ctx.procs[name] = ctx.machine.spawn(name, cpu=step.get("cpu", 0))


def _op_fork(ctx: ScenarioContext, step: Step) -> None:
    p = ctx.proc(step)
    child = _req(step, "child", str, ctx)
    if child in ctx.procs:
        raise ScenarioError(f"{ctx.where()}: process {child!r} already exists")
    ctx.procs[child] = p.fork(child, cpu=ctx.cpu(step))


def _op_exit(ctx: ScenarioContext, step: Step) -> None:
    ctx.proc(step).exit()


def _op_run_on(ctx: ScenarioContext, step: Step) -> None:
    c = ctx.cpu(step)
    if c is None:
        raise ScenarioError(f"{ctx.where()}: run_on needs cpu")
    ctx.proc(step).run_on(c)


def _op_mmap(ctx: ScenarioContext, step: Step) -> None:
    p = ctx.proc(step)
    length = ctx.size(step.get("length", "1p"))
    prot = parse_prot(step.get("prot", "rw"), ctx)
    flags = parse_flags(step.get("flags", "private"), ctx)
    vn = ctx.vnode(step, "vnode") if "vnode" in step else None
    offset = ctx.size(step.get("offset", 0))
    addr = ctx.addr(step["addr"]) if "addr" in step else None
    if "maxprot" in step:
        # The kernel path of sys_mmap for a file opened without write
        # permission: fo_mmap lowers maxprot and uvm_mmap maps with it.
        if vn is None:
            raise ScenarioError(f"{ctx.where()}: maxprot needs a vnode mapping")
        maxprot = parse_prot(step["maxprot"], ctx)
        ps = ctx.page_size
        size = length + (-length) % ps
        shared = bool(flags & MAP_SHARED)
        from ..map import MAP_INHERIT_COPY, MAP_INHERIT_SHARE

        result: list[int] = []

        def kmap() -> None:
            result.append(
                p.map.uvm_map(
                    size,
                    vn,
                    offset,
                    int(prot),
                    int(maxprot),
                    MAP_INHERIT_SHARE if shared else MAP_INHERIT_COPY,
                    copy_on_write=not shared,
                    addr=addr,
                    fixed=bool(flags & MAP_FIXED),
                )
            )

        p._run_kernel(kmap)
        va = result[0]
    else:
        va = p.mmap(length, prot=prot, flags=flags, obj=vn, offset=offset, addr=addr)
    if "as" in step:
        ctx.symbols[_req(step, "as", str, ctx)] = va


def _range_op(method: str) -> OpFn:
    def op(ctx: ScenarioContext, step: Step) -> None:
        p = ctx.proc(step)
        va = ctx.addr(_req(step, "at", (str, int), ctx))
        length = ctx.size(step.get("length", "1p"))
        if method == "mprotect":
            p.mprotect(va, length, parse_prot(_req(step, "prot", (str, int), ctx), ctx))
        else:
            getattr(p, method)(va, length)

    return op


def _op_write(ctx: ScenarioContext, step: Step) -> None:
    p = ctx.proc(step)
    va = ctx.addr(_req(step, "at", (str, int), ctx))
    p.write(va, step_data(step, ctx), cpu=ctx.cpu(step))


def _op_read(ctx: ScenarioContext, step: Step) -> None:
    p = ctx.proc(step)
    va = ctx.addr(_req(step, "at", (str, int), ctx))
    n = ctx.size(_req(step, "n", (str, int), ctx))
    got = p.read(va, n, cpu=ctx.cpu(step))
    expect_bytes(got, step, ctx, f"{p.name} read at {va:#x}")


def _op_vnode(ctx: ScenarioContext, step: Step) -> None:
    name = _req(step, "name", str, ctx)
    if name in ctx.vnodes:
        raise ScenarioError(f"{ctx.where()}: vnode {name!r} already exists")
    data = step_data(step, ctx) if any(k in step for k in ("data", "fill", "pattern")) else b""
    ctx.vnodes[name] = ctx.machine.vnode(data, name=name)


def _op_vnode_write(ctx: ScenarioContext, step: Step) -> None:
    vn = ctx.vnode(step)
    with ctx.machine.on_cpu(ctx.cpu(step) or 0):
        vn.write(ctx.size(step.get("offset", 0)), step_data(step, ctx))


def _op_vnode_read(ctx: ScenarioContext, step: Step) -> None:
    vn = ctx.vnode(step)
    off = ctx.size(step.get("offset", 0))
    got = vn.read(off, ctx.size(_req(step, "n", (str, int), ctx)))
    expect_bytes(got, step, ctx, f"read(2) of {vn.name} at {off:#x}")


def _op_vnode_truncate(ctx: ScenarioContext, step: Step) -> None:
    vn = ctx.vnode(step)
    with ctx.machine.on_cpu(ctx.cpu(step) or 0):
        vn.truncate(ctx.size(_req(step, "size", (str, int), ctx)))


def _op_vnode_fsync(ctx: ScenarioContext, step: Step) -> None:
    vn = ctx.vnode(step)
    with ctx.machine.on_cpu(ctx.cpu(step) or 0):
        vn.fsync()


def _op_limit(ctx: ScenarioContext, step: Step) -> None:
    uvm = ctx.machine.uvm
    if "extra" in step:
        uvm.limit = uvm.allocated + _req(step, "extra", int, ctx)
    elif step.get("limit") == "none":
        uvm.limit = None
    else:
        uvm.limit = _req(step, "limit", int, ctx)


def _op_reserve(ctx: ScenarioContext, step: Step) -> None:
    ctx.machine.uvm.reserve = _req(step, "pages", int, ctx)


def _op_snapshot(ctx: ScenarioContext, step: Step) -> None:
    m = ctx.machine
    ctx.snapshots[_req(step, "name", str, ctx)] = {
        "counters": dict(m.counters),
        "allocated": m.uvm.allocated,
        "free_frames": m.uvm.free_count,
    }


def _op_symbol(ctx: ScenarioContext, step: Step) -> None:
    ctx.symbols[_req(step, "as", str, ctx)] = ctx.addr(_req(step, "value", (str, int), ctx))


def _op_check(ctx: ScenarioContext, step: Step) -> None:
    del ctx, step  # the step's [[step.check]] tables do the work


register_op("spawn", _op_spawn, {"proc"})
register_op("fork", _op_fork, {"proc", "child"})
register_op("exit", _op_exit, {"proc"})
register_op("run_on", _op_run_on, {"proc"})
register_op(
    "mmap",
    _op_mmap,
    {"proc", "as", "length", "prot", "flags", "vnode", "offset", "addr", "maxprot"},
)
for _m in ("munmap", "mlock", "munlock"):
    register_op(_m, _range_op(_m), {"proc", "at", "length"})
register_op("mprotect", _range_op("mprotect"), {"proc", "at", "length", "prot"})
register_op("write", _op_write, {"proc", "at", "data", "fill", "pattern", "n"})
register_op("read", _op_read, {"proc", "at", "n", "expect", "expect_fill"})
register_op("vnode", _op_vnode, {"name", "data", "fill", "pattern", "size", "n"})
register_op("vnode_write", _op_vnode_write, {"name", "offset", "data", "fill", "pattern", "n"})
register_op("vnode_read", _op_vnode_read, {"name", "offset", "n", "expect", "expect_fill"})
register_op("vnode_truncate", _op_vnode_truncate, {"name", "size"})
register_op("vnode_fsync", _op_vnode_fsync, {"name"})
register_op("limit", _op_limit, {"extra", "limit"})
register_op("reserve", _op_reserve, {"pages"})
register_op("snapshot", _op_snapshot, {"name"})
register_op("symbol", _op_symbol, {"as", "value"})
register_op("check", _op_check, set())


# --------------------------------------------------------------------- checks


def _bound(ctx: ScenarioContext, spec: Step, value: int, what: str, key: str) -> None:
    """eq / at_least / at_most, optionally relative to a snapshot (``since``)."""
    if "since" in spec:
        snap = ctx.snapshots.get(_req(spec, "since", str, ctx))
        if snap is None:
            raise ScenarioError(f"{ctx.where()}: no snapshot named {spec['since']!r}")
        base = snap[key] if key != "counters" else snap["counters"].get(what, 0)
        value -= base
        what = f"{what} since {spec['since']!r}"
    found = False
    for k, test in (("eq", int.__eq__), ("at_least", int.__ge__), ("at_most", int.__le__)):
        if k in spec:
            found = True
            want = spec[k]
            if not isinstance(want, int) or isinstance(want, bool):
                raise ScenarioError(f"{ctx.where()}: {k} must be an int")
            if not test(value, want):
                raise ctx.fail(f"{what} is {value}; expected {k.replace('_', ' ')} {want}")
    if not found:
        raise ScenarioError(f"{ctx.where()}: give eq, at_least or at_most")


def _check_counter(ctx: ScenarioContext, spec: Step) -> None:
    name = _req(spec, "name", str, ctx)
    _bound(ctx, spec, ctx.machine.counters.get(name, 0), name, "counters")


def _vnode_cache(ctx: ScenarioContext) -> int:
    return sum(len(vn.uo_pages) for vn in ctx.vnodes.values())


def _count_check(key: str) -> CheckFn:
    def check(ctx: ScenarioContext, spec: Step) -> None:
        uvm = ctx.machine.uvm
        value = uvm.allocated if key == "allocated" else uvm.free_count
        if spec.get("eq") == "vnode-cache":
            cache = _vnode_cache(ctx)
            want = cache if key == "allocated" else uvm.npages - cache
            if value != want:
                extra = [
                    pg for pg in uvm.pages.values() if not isinstance(pg.uobject, VnodeObject)
                ][:5]
                raise ctx.fail(
                    f"{key} is {value}; expected {want} (the vnode cache); non-vnode pages: {extra}"
                )
            return
        _bound(ctx, spec, value, key, key)

    return check


def _pte_of(p: Process, va: int) -> int:
    ps = p.machine.page_size
    pte: int = p.map.pmap.ptes.get(va - va % ps, 0)
    return pte


def _check_page(ctx: ScenarioContext, spec: Step) -> None:
    proc: Process | None = None
    va = 0
    if "proc" in spec:
        proc = ctx.proc(spec)
        va = ctx.addr(_req(spec, "at", (str, int), ctx))
        layer, pg, anon = layer_page(proc, va)
        label = f"{proc.name} {va:#x}"
    else:
        vn = ctx.vnode(spec, "vnode")
        off = ctx.size(spec.get("offset", 0))
        pg, anon = vn.uvm_pagelookup(off - off % ctx.page_size), None
        layer = "object"
        label = f"{vn.name}@{off:#x}"

    def need_page() -> Page:
        if pg is None:
            raise ctx.fail(f"{label}: no resident page")
        return pg

    if "layer" in spec and spec["layer"] != layer:
        raise ctx.fail(f"{label}: provided by the {layer} layer, expected {spec['layer']}")
    if "resident" in spec and bool(spec["resident"]) != (pg is not None):
        raise ctx.fail(f"{label}: resident is {pg is not None}, expected {spec['resident']}")
    if "an_ref" in spec:
        if anon is None:
            raise ctx.fail(f"{label}: no anon (layer {layer})")
        if anon.an_ref != spec["an_ref"]:
            raise ctx.fail(f"{label}: an_ref {anon.an_ref}, expected {spec['an_ref']}")
    for fld in ("loan_count", "wire_count"):
        if fld in spec and getattr(need_page(), fld) != spec[fld]:
            raise ctx.fail(
                f"{label}: {fld} {getattr(need_page(), fld)}, expected {spec[fld]} "
                f"({need_page()!r})"
            )
    for key, want_set in (("flags_contains", True), ("flags_excludes", False)):
        for fname in spec.get(key, []):
            flag = PG.bit(fname.removeprefix("PG_"))
            if bool(need_page().flags & flag) != want_set:
                raise ctx.fail(
                    f"{label}: {need_page()!r} {'lacks' if want_set else 'has'} "
                    f"PG_{fname.removeprefix('PG_')}"
                )
    if "owner" in spec:
        p = need_page()
        owner = (
            "anon"
            if p.uanon is not None and p.flags & PG.ANON
            else "object"
            if p.uobject is not None
            else "orphan"
            if p.loan_count
            else "none"
        )
        if owner != spec["owner"]:
            raise ctx.fail(f"{label}: owner {owner}, expected {spec['owner']} ({p!r})")
    if "queue" in spec and need_page().pqueue.value != spec["queue"]:
        raise ctx.fail(f"{label}: queue {need_page().pqueue.value}, expected {spec['queue']}")
    for key, bit in (("mapped", PTE_P), ("writable", PTE_W), ("wired_mapping", PTE_WIRED)):
        if key in spec:
            if proc is None:
                raise ScenarioError(f"{ctx.where()}: {key} needs proc and at")
            pte = _pte_of(proc, va)
            has = bool(pte & PTE_P) and bool(pte & bit)
            if has != bool(spec[key]):
                raise ctx.fail(f"{label}: {key} is {has}, expected {spec[key]} (pte {pte:#x})")
            if key == "mapped" and has and pg is not None and pte_frame(pte) != pg.frame:
                raise ctx.fail(
                    f"{label}: the PTE maps frame {pte_frame(pte)}, the layers "
                    f"provide frame {pg.frame}"
                )
    for key, same in (("same_frame_as", True), ("other_frame_than", False)):
        if key in spec:
            other = ctx.page_ref(_req(spec, key, str, ctx))
            a = need_page().frame
            b = other.frame if other is not None else None
            if (a == b) != same:
                raise ctx.fail(
                    f"{label}: frame {a}, {spec[key]} has frame {b}; expected "
                    f"{'the same' if same else 'a different'} frame"
                )


def _check_vnode(ctx: ScenarioContext, spec: Step) -> None:
    vn = ctx.vnode(spec)
    if "size" in spec and vn.size != ctx.size(spec["size"]):
        raise ctx.fail(f"{vn.name}: size {vn.size}, expected {spec['size']}")
    off = ctx.size(spec.get("offset", 0))
    if "expect" in spec or "expect_fill" in spec:
        n = ctx.size(_req(spec, "n", (str, int), ctx))
        expect_bytes(vn.read(off, n), spec, ctx, f"read(2) of {vn.name} at {off:#x}")
    if "backing" in spec:
        want = parse_bytes(spec["backing"], ctx)
        got = bytes(vn.backing[off : off + len(want)])
        if got != want:
            raise ctx.fail(
                f"{vn.name} backing store at {off:#x}: {_show(got)}, expected {_show(want)}"
            )


def _check_entries(ctx: ScenarioContext, spec: Step) -> None:
    p = ctx.proc(spec)
    n = len(p.map.entries)
    if n != _req(spec, "count", int, ctx):
        raise ctx.fail(
            f"{p.name} has {n} map entries, expected {spec['count']}: "
            f"{list(p.map.entries.values())}"
        )


def _check_process(ctx: ScenarioContext, spec: Step) -> None:
    p = ctx.proc(spec)
    if "alive" in spec and p.alive != bool(spec["alive"]):
        raise ctx.fail(f"{p.name}: alive is {p.alive}, expected {spec['alive']}")


def _check_invariants(ctx: ScenarioContext, spec: Step) -> None:
    del spec
    _invariants(ctx)


def _check_memory(ctx: ScenarioContext, spec: Step) -> None:
    p = ctx.proc(spec)
    va = ctx.addr(_req(spec, "at", (str, int), ctx))
    got = p.read(va, ctx.size(_req(spec, "n", (str, int), ctx)), cpu=ctx.cpu(spec))
    expect_bytes(got, spec, ctx, f"{p.name} memory at {va:#x}")


register_check("counter", _check_counter, {"name", "eq", "at_least", "at_most", "since"})
register_check("allocated", _count_check("allocated"), {"eq", "at_least", "at_most", "since"})
register_check("free_frames", _count_check("free_frames"), {"eq", "at_least", "at_most", "since"})
register_check(
    "page",
    _check_page,
    {
        "proc",
        "at",
        "vnode",
        "offset",
        "layer",
        "resident",
        "an_ref",
        "loan_count",
        "wire_count",
        "flags_contains",
        "flags_excludes",
        "owner",
        "queue",
        "mapped",
        "writable",
        "wired_mapping",
        "same_frame_as",
        "other_frame_than",
    },
)
register_check(
    "vnode", _check_vnode, {"name", "offset", "n", "expect", "expect_fill", "backing", "size"}
)
register_check("entries", _check_entries, {"proc", "count"})
register_check("process", _check_process, {"proc", "alive"})
register_check("invariants", _check_invariants, set())
register_check("memory", _check_memory, {"proc", "at", "n", "expect", "expect_fill", "cpu"})


def scenario_files(root: str | Path) -> list[Path]:
    """Every ``*.toml`` under ``root``, recursively, in a stable order."""
    return sorted(Path(root).rglob("*.toml"))


__all__ = [
    "ASPECTS",
    "DEFAULT_UNCHANGED",
    "Scenario",
    "ScenarioContext",
    "ScenarioError",
    "ScenarioFailure",
    "diff_snapshots",
    "layer_page",
    "load_plugin",
    "load_scenario",
    "register_check",
    "register_op",
    "registered_checks",
    "registered_ops",
    "run_check",
    "run_scenario",
    "run_step",
    "scenario_files",
    "state_snapshot",
]
