"""Loan helpers for tests and the scenario runner.

Two halves:

* plain helpers that tests, the loan state machine and scenarios share:
  :func:`page_at` (the page a user VA resolves to), :func:`page_role` (the
  identities of the digest's section 2.3), :func:`loan_snapshot` and
  :func:`machine_snapshot` ("state unchanged" comparisons),
  :func:`write_paths` (every managed PTE or TLB entry through which a frame
  could still be written), :func:`leaked_pages` and
  :func:`release_order_problems` (sodoloanfree's order read back from a
  trace);
* the loan operations and checks of the scenario runner
  (``specs/scenarios/loan/*.toml``), registered with the runner's
  ``register_op``/``register_check`` when this module is imported; a scenario
  asks for them with ``plugins = ["uvmloan.testing.loan_ops"]``.  They keep
  symbolic names (a loan result, a kernel loan, a remembered page) in
  ``ctx.objects`` so that later steps can refer to them.

Ops (``op = ...``, keys):

* ``loan`` (proc, at, length, flags = "topage" | "toanon", as): ``uvm_loan``;
* ``unloan`` (name, flags, only = [indices]): ``uvm_unloan``;
* ``loanuobjpages`` (name = vnode, offset, npages, as);
* ``kernel_loan`` (proc, at, n, as, cpu): sosend_loan's borrower;
* ``kernel_loan_file`` (name = vnode, offset, n, as, cpu): nfsrv_read's;
* ``release`` (loan, cpu): sodoloanfree, whose order is checked from the
  trace; ``borrower_read`` (loan, offset, n, expect | expect_fill, cpu);
  ``borrower_write`` (loan, offset, data: must fail, KernelAssertion);
* ``remember`` (page, as): name the page a reference resolves to now;
* ``reclaim`` (page, or pages = N for a scan, expect_taken);
* ``loanbreak`` (page, as, expect_none): ``uvm_loanbreak`` directly;
* ``inject`` (bug, on), ``check_invariants`` (with ``expect_error``).

Checks (``check = ...``): ``loan_page`` (page; role = FREE | ZERO | OBJ |
ANON | ORPHAN | ..., loan_count, wire_count, flags_contains/excludes, queue,
user_mappings, writable (any write path, TLBs included), kernel_mapped,
same_as/other_than, expect/expect_fill with offset and n: the frame's
bytes), ``anon`` (anon = "name[i]" or proc+at; an_ref, resident, swapped,
page), ``loan_list`` (name; length, distinct, kind = pages | anons),
``borrowed`` (loan; the bytes a NIC would gather), ``no_write_path`` (name;
I3), ``kernel_loan`` (loan; read-only unmanaged kernel mapping, released),
``leaks`` (only vnode cache pages and the zero page left).

A page reference is "name" (a remembered page or a loan's first page),
"name[i]", "zero" (the zero page), or the runner's "proc:addr" /
"vnode:name:offset".  Sources for every rule are in ``specs/loan.md``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..anon import Anon
from ..borrow import KernelLoan
from ..invariants import live_tlb_entries
from ..loan import ZeroLoanObject
from ..map import VMMap
from ..object import UVMObject, VnodeObject
from ..page import Page
from ..param import PG, UVM_LOAN_TOANON, UVM_LOAN_TOPAGE
from ..pmap.pte import PTE_D, PTE_P, PTE_PVLIST, PTE_W, pte_frame
from ..trace import Event, KRemove, PageFree, PmapUpdate, Unloan

if TYPE_CHECKING:
    from ..machine import Machine
    from ..process import Process
    from .scenario import ScenarioContext, Step

Op = Callable[..., Any]

__all__ = [
    "LOAN_CHECKS",
    "LOAN_OPS",
    "anon_at",
    "anons_of",
    "leaked_pages",
    "loan_snapshot",
    "machine_snapshot",
    "mappings_of",
    "page_at",
    "page_role",
    "register_loan_ops",
    "release_order_problems",
    "resolve_anon",
    "resolve_page",
    "write_paths",
]


# ------------------------------------------------------------- inspection


def page_at(proc: Process | VMMap, va: int) -> Page | None:
    """The resident page the map's layers give ``va`` (anon first), or None.

    This reads the VM structures, not the MMU: it takes no fault and
    changes nothing.
    """
    vmmap = proc if isinstance(proc, VMMap) else proc.map
    ps = vmmap.page_size
    va -= va % ps
    e = vmmap.uvm_map_lookup_entry(va)
    if e is None:
        return None
    pg = vmmap.page_at(e, va)
    return pg if isinstance(pg, Page) else None


def anon_at(proc: Process, va: int) -> Anon | None:
    """The anon at ``va`` of the process's amap, or None."""
    ps = proc.machine.page_size
    va -= va % ps
    e = proc.map.uvm_map_lookup_entry(va)
    if e is None or e.amap is None:
        return None
    return e.amap.lookup(e.slot(va))


def page_role(pg: Page) -> str:
    """The page's identity in the terms of the digest (section 2.3).

    FREE, ZERO (the zero-loan object's page), OBJ, OBJ+A (an O->A page,
    historical), ANON, ANON-UNADOPTED (historical), ORPHAN (no owner, still
    loaned), or UNOWNED (no owner, no loans: a fresh or pool page).
    """
    if pg.flags & PG.FREE or pg.allocator.pages.get(pg.frame) is not pg:
        return "FREE"
    if isinstance(pg.uobject, ZeroLoanObject):
        return "ZERO"
    if pg.uobject is not None:
        return "OBJ+A" if pg.uanon is not None else "OBJ"
    if pg.uanon is not None:
        return "ANON" if pg.flags & PG.ANON else "ANON-UNADOPTED"
    return "ORPHAN" if pg.loan_count > 0 else "UNOWNED"


def anons_of(m: Machine) -> dict[int, Anon]:
    """Every anon reachable from a live map's amaps, by id."""
    out: dict[int, Anon] = {}
    for vmmap in m._maps.values():
        for e in vmmap:
            if e.amap is not None:
                for anon in e.amap.slots.values():
                    out[id(anon)] = anon
    return out


def write_paths(m: Machine, frames: Iterable[int]) -> list[str]:
    """Every way a CPU could still write one of ``frames``.

    A managed PTE with W, an unmanaged (kernel) PTE with W, or a TLB entry
    cached with W and D (an entry with D clear must re-walk to write, x86).
    Empty means no write can reach those frames without a fault.
    """
    want = set(frames)
    out: list[str] = []
    for pm in m.pmap.pmaps:
        for va, pte in sorted(pm.ptes.items()):  # address order
            if pte & PTE_P and pte_frame(pte) in want and pte & PTE_W:
                kind = "managed" if pte & PTE_PVLIST else "unmanaged"
                out.append(f"{kind} PTE {pm.name} {va:#x} -> frame {pte_frame(pte)}")
    for cpu in m.cpus:
        for (_asid, vpn), (tpm, snap) in cpu.tlb:
            if pte_frame(snap) in want and snap & PTE_W and snap & PTE_D:
                name = getattr(tpm, "name", "?")
                out.append(
                    f"CPU {cpu.index} TLB {name} {vpn << m.pmap.page_shift:#x} "
                    f"-> frame {pte_frame(snap)} (W, D)"
                )
    return out


def mappings_of(m: Machine, frame: int) -> list[str]:
    """Every PTE that maps ``frame`` and every TLB entry that caches it.

    CPUs with shootdown IPIs not yet taken (MI policy) are skipped, and so
    are dead entries (``live_tlb_entries``: a STALE CPU's user entries, an
    ASID no pmap holds any more).  A frame about to be freed must have none
    (pmap(9): remove, then pmap_update, then free).
    """
    out: list[str] = []
    for pm in m.pmap.pmaps:
        for va, pte in sorted(pm.ptes.items()):  # address order
            if pte & PTE_P and pte_frame(pte) == frame:
                out.append(f"{pm.name} PTE {va:#x} maps it")
    for cpu in m.cpus:
        if cpu.pending_ipis:
            continue
        for tpm, va, snap in live_tlb_entries(m, cpu):
            if pte_frame(snap) == frame:
                out.append(f"CPU {cpu.index} TLB caches {tpm.name} {va:#x}")
    return out


def leaked_pages(m: Machine) -> list[Page]:
    """Allocated pages other than vnode cache pages and the zero page.

    After every process exited and every loan was released, a correct model
    has none (the file cache and ``uvm_loanzero_object`` keep theirs).
    """
    out = []
    for pg in m.uvm.pages.values():
        if isinstance(pg.uobject, VnodeObject | ZeroLoanObject):
            continue
        out.append(pg)
    return out


def loan_snapshot(m: Machine) -> dict[str, Any]:
    """The loan-relevant state: identity, counts, queue and bytes of every
    allocated page, every reachable anon, the ledger, the kernel loans."""
    pages = {
        frame: (
            int(pg.flags),
            pg.loan_count,
            pg.wire_count,
            getattr(pg.uobject, "name", None),
            pg.offset if pg.uobject is not None else None,
            getattr(pg.uanon, "name", None),
            pg.pqueue.value,
            zlib.crc32(m.physmem.frame_view(frame)),
        )
        for frame, pg in sorted(m.uvm.pages.items())
    }
    anons = {
        a.name: (a.an_ref, a.an_page.frame if a.an_page is not None else None, a.an_swslot)
        for a in anons_of(m).values()
    }
    return {
        "pages": pages,
        "anons": anons,
        "ledger": sorted((pg.frame, n) for pg, n in m.uvm.loan_ledger.items()),
        "free": sorted(m.uvm.free),
        "kernel_loans": sorted((kl.kva, kl.released) for kl in m.kernel_loans),
    }


def machine_snapshot(
    m: Machine, objects: Iterable[UVMObject] = (), *, allow: Iterable[str] = ()
) -> dict[str, Any]:
    """Everything a rejected call must leave alone: :func:`loan_snapshot`
    plus page tables, pv lists, every TLB, pending shootdowns, map entries
    (every field), amaps (slots and references), objects (pages, references
    and, for files, size and contents), swap, processes, each CPU's pmap and
    TLB state and the counters (clocks and trace excluded).  ``objects`` adds
    objects no map or page reaches (an unmapped file without resident
    pages); ``allow`` names the counters the call may change (a failure's
    own, e.g. ``"loan.fail"``), which are left out of the comparison."""
    snap = loan_snapshot(m)
    snap["ptes"] = {pm.name: dict(pm.ptes) for pm in m.pmap.pmaps}
    # pmaps in creation order (names may repeat): resident/wired counts, pm_cpus
    snap["pmaps"] = [
        (pm.name, pm.resident_count, pm.wired_count, sorted(pm.cpus), sorted(pm.kernel_cpus))
        for pm in m.pmap.pmaps
    ]
    snap["cpus"] = [
        (getattr(c.curpmap, "name", None), c.tlbstate.name, len(c.pending_ipis)) for c in m.cpus
    ]
    snap["pv"] = {
        frame: sorted((pm.name, va) for pm, va in pg.mdpage.pv) for frame, pg in m.uvm.pages.items()
    }
    snap["tlb"] = [sorted((k, snap_pte) for k, (_pm, snap_pte) in cpu.tlb) for cpu in m.cpus]
    snap["packets"] = [
        (list(c.packet.vas), c.packet.allva, sorted(c.packet.targets)) for c in m.cpus
    ]
    snap["maps"] = {
        vm.name: [
            (
                e.id,
                e.start,
                e.end,
                int(e.protection),
                int(e.max_protection),
                e.inheritance,
                e.copy_on_write,
                e.needs_copy,
                e.wired_count,
                e.vaonly,
                getattr(e.amap, "name", None),
                e.slotoff,
                getattr(e.object, "name", None),
                e.offset,
            )
            for e in vm
        ]
        for vm in m._maps.values()
    }
    amaps: dict[str, Any] = {}
    objs: dict[str, UVMObject] = {o.name: o for o in objects}
    for vm in m._maps.values():
        for e in vm:
            if e.amap is not None:
                amaps[e.amap.name] = (
                    sorted((slot, a.name) for slot, a in e.amap.slots.items()),
                    sorted(r.id for r in e.amap.refs),
                )
            if e.object is not None:
                objs[e.object.name] = e.object
    for pg in m.uvm.pages.values():
        if isinstance(pg.uobject, UVMObject):
            objs[pg.uobject.name] = pg.uobject
    snap["amaps"] = amaps
    snap["objects"] = {
        name: (
            o.uo_refs,
            sorted((off, pg.frame) for off, pg in o.uo_pages.items()),
            (o.size, zlib.crc32(o.backing)) if isinstance(o, VnodeObject) else None,
        )
        for name, o in sorted(objs.items())
    }
    snap["swap"] = sorted((slot, zlib.crc32(data)) for slot, data in m.uvm.swap.items())
    snap["procs"] = sorted((p.name, p.alive) for p in m.processes)
    skip = set(allow)
    snap["counters"] = {k: v for k, v in m.counters.items() if v and k not in skip}
    return snap


def release_order_problems(
    events: Sequence[Event], kva: int, size: int, frames: Iterable[int]
) -> list[str]:
    """Check ``sodoloanfree``'s order in the events of one release.

    Every kernel mapping of [kva, kva+size) must be removed and a
    ``pmap_update`` must follow before the first ``Unloan`` of the loan's
    frames, and no frame may be freed before that (digest 4.3 rule 2, I4).
    Returns the problems found (empty when the order is right).
    """
    frames = set(frames)
    problems: list[str] = []
    removed: set[int] = set()
    barrier = False
    for ev in events:
        if isinstance(ev, KRemove) and kva <= ev.va < kva + size:
            removed.add(ev.va)
            barrier = False
        elif isinstance(ev, PmapUpdate) and ev.space == "kernel" and removed:
            barrier = True
        elif isinstance(ev, Unloan | PageFree) and ev.frame in frames:
            what = "unloan" if isinstance(ev, Unloan) else "free"
            if not barrier:
                problems.append(
                    f"{what} of frame {ev.frame} before the kernel mappings were removed "
                    "and pmap_update(pmap_kernel()) completed"
                )
    return problems


# --------------------------------------------------- scenario-runner ops
#
# Names a scenario gives to loan results live in ``ctx.objects``:
#   a uvm_loan / uvm_loanuobjpages result  -> list[Page] or list[Anon]
#   a kernel loan                          -> KernelLoan
#   a remembered page                      -> Page   (op "remember")
# A page reference (``page = "..."``) is one of
#   "name"        a remembered page, or the first page of a loan
#   "name[i]"     page i of a loan result or kernel loan
#   "zero"        the zero page of uvm_loanzero_object
#   "proc:addr" / "vnode:name:offset"   the scenario runner's own references.

_FLAGS = {"topage": UVM_LOAN_TOPAGE, "toanon": UVM_LOAN_TOANON}


def _sc() -> Any:
    from . import scenario

    return scenario


def _flags(ctx: ScenarioContext, step: Step, default: str = "topage") -> int:
    v = step.get("flags", default)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        out = 0
        for w in v.replace("|", ",").split(","):
            w = w.strip().lower().removeprefix("uvm_loan_")
            if w not in _FLAGS:
                raise _sc().ScenarioError(f"{ctx.where()}: unknown loan flag {w!r}")
            out |= _FLAGS[w]
        return out
    raise _sc().ScenarioError(f"{ctx.where()}: flags must be 'topage', 'toanon' or an int")


def _name(ctx: ScenarioContext, step: Step, key: str) -> str:
    v = step.get(key)
    if not isinstance(v, str) or not v:
        raise _sc().ScenarioError(
            f"{ctx.where()}: {step.get('op') or step.get('check')!r} needs {key!r}"
        )
    return v


def _obj(ctx: ScenarioContext, name: str) -> Any:
    if name not in ctx.objects:
        raise _sc().ScenarioError(
            f"{ctx.where()}: nothing named {name!r} (known: {sorted(ctx.objects)})"
        )
    return ctx.objects[name]


def _kloan(ctx: ScenarioContext, step: Step, key: str = "loan") -> KernelLoan:
    kl = _obj(ctx, _name(ctx, step, key))
    if not isinstance(kl, KernelLoan):
        raise _sc().ScenarioError(f"{ctx.where()}: {step[key]!r} is not a kernel loan")
    return kl


def _items(obj: Any) -> list[Any]:
    if isinstance(obj, KernelLoan):
        return list(obj.pages)
    if isinstance(obj, list):
        return obj
    return [obj]


def resolve_page(ctx: ScenarioContext, ref: str) -> Page | None:
    """A page reference (see above) to the page, or None if not resident."""
    m = ctx.machine
    if ref == "zero":
        zobj = m.uvm.zero_object
        return zobj.uvm_pagelookup(0) if zobj is not None else None
    base, idx = ref, 0
    if ref.endswith("]") and "[" in ref:
        base, _, rest = ref.partition("[")
        idx = int(rest[:-1], 0)
    if base in ctx.objects:
        items = _items(ctx.objects[base])
        if not 0 <= idx < len(items):
            raise _sc().ScenarioError(f"{ctx.where()}: {ref!r}: index out of range")
        it = items[idx]
        if isinstance(it, Anon):
            return it.an_page
        if not isinstance(it, Page):
            raise _sc().ScenarioError(f"{ctx.where()}: {ref!r} is not a page")
        return it
    page: Page | None = ctx.page_ref(ref)
    return page


def resolve_anon(ctx: ScenarioContext, step: Step) -> Anon:
    if "anon" in step:
        ref = _name(ctx, step, "anon")
        base, idx = ref, 0
        if ref.endswith("]") and "[" in ref:
            base, _, rest = ref.partition("[")
            idx = int(rest[:-1], 0)
        it = _items(_obj(ctx, base))[idx]
        if not isinstance(it, Anon):
            raise _sc().ScenarioError(f"{ctx.where()}: {ref!r} is not an anon")
        return it
    p = ctx.proc(step)
    a = anon_at(p, ctx.addr(step.get("at")))
    if a is None:
        raise ctx.fail(f"{p.name} {step.get('at')}: no anon there")
    return a


def _need_page(ctx: ScenarioContext, ref: str) -> Page:
    pg = resolve_page(ctx, ref)
    if pg is None:
        raise ctx.fail(f"page {ref!r} is not resident")
    return pg


def _op_loan(ctx: ScenarioContext, step: Step) -> None:
    """uvm_loan(map, start, len, flags) of proc at [at, at+length)."""
    from ..loan import uvm_loan

    p = ctx.proc(step)
    va = ctx.addr(step.get("at"))
    length = ctx.size(step.get("length", "1p"))
    cpu = ctx.cpu(step)
    with ctx.machine.on_cpu(p.cpu if cpu is None else cpu):
        out = uvm_loan(p.map, va, length, _flags(ctx, step))
    if "as" in step:
        ctx.objects[_name(ctx, step, "as")] = out


def _op_unloan(ctx: ScenarioContext, step: Step) -> None:
    """uvm_unloan(items, flags); ``only`` picks items by index."""
    from ..loan import uvm_unloan

    items = _items(_obj(ctx, _name(ctx, step, "name")))
    only = step.get("only")
    if only is not None:
        items = [items[i] for i in only]
    if step.get("twice_in_one_call"):
        items = items + items
    with ctx.machine.on_cpu(ctx.cpu(step) or 0):
        uvm_unloan(items, _flags(ctx, step))


def _op_loanuobjpages(ctx: ScenarioContext, step: Step) -> None:
    from ..loan import uvm_loanuobjpages

    vn = ctx.vnode(step)
    out = uvm_loanuobjpages(vn, ctx.size(step.get("offset", 0)), int(step.get("npages", 1)))
    if "as" in step:
        ctx.objects[_name(ctx, step, "as")] = out


def _op_kernel_loan(ctx: ScenarioContext, step: Step) -> None:
    """Machine.kernel_loan: sosend_loan's uvm_loan + kenter_pa + pmap_update."""
    p = ctx.proc(step)
    kl = ctx.machine.kernel_loan(
        p, ctx.addr(step.get("at")), ctx.size(step.get("n", "1p")), cpu=ctx.cpu(step)
    )
    if "as" in step:
        ctx.objects[_name(ctx, step, "as")] = kl


def _op_kernel_loan_file(ctx: ScenarioContext, step: Step) -> None:
    """Machine.kernel_loan_file: nfsrv_read's uvm_loanuobjpages + kenter_pa."""
    vn = ctx.vnode(step)
    kl = ctx.machine.kernel_loan_file(
        vn, ctx.size(step.get("offset", 0)), ctx.size(step.get("n", "1p")), cpu=ctx.cpu(step) or 0
    )
    if "as" in step:
        ctx.objects[_name(ctx, step, "as")] = kl


def _op_release(ctx: ScenarioContext, step: Step) -> None:
    """KernelLoan.release (sodoloanfree); the order is checked from the trace."""
    kl = _kloan(ctx, step)
    m = ctx.machine
    events: list[Event] = []
    m.tracer.add_sink(events.append)
    try:
        frames = [pg.frame for pg in kl.pages]
        with m.on_cpu(ctx.cpu(step) or 0):
            kl.release()
    finally:
        m.tracer.remove_sink(events.append)
    if m.tracer.on:
        problems = release_order_problems(events, kl.kva, kl.npages * m.page_size, frames)
        if problems:
            raise ctx.fail(f"release: {problems[0]}")


def _op_borrower_read(ctx: ScenarioContext, step: Step) -> None:
    """The kernel reads the borrowed bytes through its mapping, on ``cpu``."""
    kl = _kloan(ctx, step)
    off = ctx.size(step.get("offset", 0))
    n = ctx.size(step["n"]) if "n" in step else kl.length - off
    got = kl.read(off, n, cpu=ctx.cpu(step))
    _sc().expect_bytes(got, step, ctx, f"borrower read of {step['loan']} at {off}")


def _op_borrower_write(ctx: ScenarioContext, step: Step) -> None:
    """A kernel store through the loan mapping (fatal: KernelAssertion)."""
    kl = _kloan(ctx, step)
    kl.write(ctx.size(step.get("offset", 0)), _sc().step_data(step, ctx), cpu=ctx.cpu(step))


def _op_remember(ctx: ScenarioContext, step: Step) -> None:
    """Name the page that ``page`` (a reference) resolves to now."""
    ctx.objects[_name(ctx, step, "as")] = _need_page(ctx, _name(ctx, step, "page"))


def _op_reclaim(ctx: ScenarioContext, step: Step) -> None:
    """The pagedaemon: one page (``page``) or a scan of up to ``pages``."""
    m = ctx.machine
    cpu = ctx.cpu(step) or 0
    if "page" in step:
        taken = m.reclaim(page=_need_page(ctx, _name(ctx, step, "page")), cpu=cpu)
    else:
        taken = m.reclaim(pages=step.get("pages"), cpu=cpu)
    if "expect_taken" in step and taken != step["expect_taken"]:
        raise ctx.fail(f"reclaim took {taken} page(s), expected {step['expect_taken']}")


def _op_loanbreak(ctx: ScenarioContext, step: Step) -> None:
    """uvm_loanbreak(page) called directly; ``as`` names the new page;
    ``expect_none = true`` for a shortage (NULL)."""
    from ..loan import uvm_loanbreak

    new = uvm_loanbreak(_need_page(ctx, _name(ctx, step, "page")), where="scenario")
    if step.get("expect_none", False) != (new is None):
        raise ctx.fail(f"uvm_loanbreak returned {new!r}")
    if new is not None and "as" in step:
        ctx.objects[_name(ctx, step, "as")] = new


def _op_inject(ctx: ScenarioContext, step: Step) -> None:
    from ..inject import inject

    inject(ctx.machine, _name(ctx, step, "bug"), bool(step.get("on", True)))


def _op_check_invariants(ctx: ScenarioContext, step: Step) -> None:
    """check_invariants as an op, so ``expect_error`` can name a violation."""
    from ..invariants import check_invariants

    check_invariants(ctx.machine)
    del step


# ------------------------------------------------------------------ checks


def _check_loan_page(ctx: ScenarioContext, spec: Step) -> None:
    ref = _name(ctx, spec, "page")
    pg = resolve_page(ctx, ref)
    if "role" in spec and spec["role"] == "FREE":
        if pg is not None and page_role(pg) != "FREE":
            raise ctx.fail(f"{ref}: {page_role(pg)}, expected FREE ({pg!r})")
        return
    if pg is None:
        raise ctx.fail(f"page {ref!r} is not resident")
    m = ctx.machine
    if "role" in spec and page_role(pg) != spec["role"]:
        raise ctx.fail(f"{ref}: role {page_role(pg)}, expected {spec['role']} ({pg!r})")
    for fld in ("loan_count", "wire_count"):
        if fld in spec and getattr(pg, fld) != spec[fld]:
            raise ctx.fail(f"{ref}: {fld} {getattr(pg, fld)}, expected {spec[fld]} ({pg!r})")
    for key, want in (("flags_contains", True), ("flags_excludes", False)):
        for fname in spec.get(key, []):
            if bool(pg.flags & PG.bit(fname.removeprefix("PG_"))) != want:
                raise ctx.fail(f"{ref}: {pg!r} {'lacks' if want else 'has'} {fname}")
    if "queue" in spec and pg.pqueue.value != spec["queue"]:
        raise ctx.fail(f"{ref}: queue {pg.pqueue.value}, expected {spec['queue']}")
    if "user_mappings" in spec and len(pg.mdpage.pv) != spec["user_mappings"]:
        raise ctx.fail(
            f"{ref}: {len(pg.mdpage.pv)} managed mappings, expected {spec['user_mappings']}"
        )
    if "writable" in spec:
        paths = write_paths(m, [pg.frame])
        if bool(paths) != bool(spec["writable"]):
            raise ctx.fail(
                f"{ref}: writable is {bool(paths)} {paths[:2]}, expected {spec['writable']}"
            )
    if "kernel_mapped" in spec:
        kmaps = [
            va
            for va, pte in m.pmap.kernel.ptes.items()
            if pte & PTE_P and pte_frame(pte) == pg.frame and not pte & PTE_PVLIST
        ]
        if bool(kmaps) != bool(spec["kernel_mapped"]):
            raise ctx.fail(
                f"{ref}: kernel_mapped is {bool(kmaps)}, expected {spec['kernel_mapped']}"
            )
    for key, same in (("same_as", True), ("other_than", False)):
        if key in spec:
            other = resolve_page(ctx, _name(ctx, spec, key))
            if (other is pg) != same:
                raise ctx.fail(f"{ref}: {'not ' if same else ''}the same page as {spec[key]!r}")
    if "expect" in spec or "expect_fill" in spec:
        n = ctx.size(spec.get("n", "1p"))
        off = ctx.size(spec.get("offset", 0))
        got = m.physmem.copyout([pg.frame], off, n)
        _sc().expect_bytes(got, spec, ctx, f"bytes of {ref}")


def _check_anon(ctx: ScenarioContext, spec: Step) -> None:
    a = resolve_anon(ctx, spec)
    if "an_ref" in spec and a.an_ref != spec["an_ref"]:
        raise ctx.fail(f"{a!r}: an_ref {a.an_ref}, expected {spec['an_ref']}")
    if "resident" in spec and (a.an_page is not None) != bool(spec["resident"]):
        raise ctx.fail(f"{a!r}: resident is {a.an_page is not None}")
    if "swapped" in spec and bool(a.an_swslot) != bool(spec["swapped"]):
        raise ctx.fail(f"{a!r}: swap slot {a.an_swslot}, expected swapped={spec['swapped']}")
    if "page" in spec:
        pg = resolve_page(ctx, _name(ctx, spec, "page"))
        if a.an_page is not pg:
            raise ctx.fail(f"{a!r}: its page is not {spec['page']!r}")


def _check_loan_list(ctx: ScenarioContext, spec: Step) -> None:
    items = _items(_obj(ctx, _name(ctx, spec, "name")))
    if "length" in spec and len(items) != spec["length"]:
        raise ctx.fail(f"{spec['name']}: {len(items)} items, expected {spec['length']}")
    if "distinct" in spec:
        n = len({id(x) for x in items})
        if n != spec["distinct"]:
            raise ctx.fail(f"{spec['name']}: {n} distinct items, expected {spec['distinct']}")
    if "kind" in spec:
        want = {"pages": Page, "anons": Anon}[spec["kind"]]
        if not all(isinstance(x, want) for x in items):
            raise ctx.fail(f"{spec['name']}: not all {spec['kind']}")


def _check_borrowed(ctx: ScenarioContext, spec: Step) -> None:
    """The bytes a NIC would DMA from the loan's frames (no MMU involved)."""
    kl = _kloan(ctx, spec)
    got = ctx.machine.physmem.gather(kl.pieces())
    off = ctx.size(spec.get("offset", 0))
    n = ctx.size(spec["n"]) if "n" in spec else len(got) - off
    _sc().expect_bytes(got[off : off + n], spec, ctx, f"bytes lent to {spec['loan']}")


def _check_no_write_path(ctx: ScenarioContext, spec: Step) -> None:
    """I3: no managed PTE with W and no TLB entry with W|D for the pages."""
    frames = [
        pg.frame for pg in _items(_obj(ctx, _name(ctx, spec, "name"))) if isinstance(pg, Page)
    ]
    paths = write_paths(ctx.machine, frames)
    if paths:
        raise ctx.fail(f"{spec['name']}: still writable: {paths[:3]}")


def _check_leaks(ctx: ScenarioContext, spec: Step) -> None:
    """Only vnode cache pages and the zero page are allocated; no loans."""
    m = ctx.machine
    leaks = leaked_pages(m)
    if leaks:
        raise ctx.fail(f"pages leaked: {leaks[:4]}")
    if spec.get("no_loans", True) and m.uvm.loan_ledger:
        raise ctx.fail(f"loans outstanding: {list(m.uvm.loan_ledger.items())[:4]}")


def _check_kernel_loan(ctx: ScenarioContext, spec: Step) -> None:
    """I4: the loan's kernel mappings are read-only and unmanaged (or gone)."""
    kl = _kloan(ctx, spec)
    m = ctx.machine
    for i, pg in enumerate(kl.pages):
        pte = m.pmap.kernel.pte(kl.kva + i * m.page_size)
        if kl.released:
            if pte & PTE_P:
                raise ctx.fail(f"{spec['loan']}: released but kva page {i} still mapped")
            continue
        if not pte & PTE_P or pte_frame(pte) != pg.frame:
            raise ctx.fail(f"{spec['loan']}: page {i} is not kentered")
        if pte & PTE_W or pte & PTE_PVLIST:
            raise ctx.fail(f"{spec['loan']}: page {i} mapped writable or managed")
    if "released" in spec and kl.released != bool(spec["released"]):
        raise ctx.fail(f"{spec['loan']}: released is {kl.released}")


LOAN_OPS: dict[str, tuple[Op, set[str]]] = {
    "loan": (_op_loan, {"proc", "at", "length", "flags", "as"}),
    "unloan": (_op_unloan, {"name", "flags", "only", "twice_in_one_call"}),
    "loanuobjpages": (_op_loanuobjpages, {"name", "offset", "npages", "as"}),
    "kernel_loan": (_op_kernel_loan, {"proc", "at", "n", "as"}),
    "kernel_loan_file": (_op_kernel_loan_file, {"name", "offset", "n", "as"}),
    "release": (_op_release, {"loan"}),
    "borrower_read": (_op_borrower_read, {"loan", "offset", "n", "expect", "expect_fill"}),
    "borrower_write": (_op_borrower_write, {"loan", "offset", "data", "fill", "n"}),
    "remember": (_op_remember, {"as", "page"}),
    "reclaim": (_op_reclaim, {"page", "pages", "expect_taken"}),
    "loanbreak": (_op_loanbreak, {"page", "as", "expect_none"}),
    "inject": (_op_inject, {"bug", "on"}),
    "check_invariants": (_op_check_invariants, set()),
}

LOAN_CHECKS: dict[str, tuple[Op, set[str]]] = {
    "loan_page": (
        _check_loan_page,
        {
            "page",
            "role",
            "loan_count",
            "wire_count",
            "flags_contains",
            "flags_excludes",
            "queue",
            "user_mappings",
            "writable",
            "kernel_mapped",
            "same_as",
            "other_than",
            "expect",
            "expect_fill",
            "n",
            "offset",
        },
    ),
    "anon": (_check_anon, {"anon", "proc", "at", "an_ref", "resident", "swapped", "page"}),
    "loan_list": (_check_loan_list, {"name", "length", "distinct", "kind"}),
    "borrowed": (_check_borrowed, {"loan", "offset", "n", "expect", "expect_fill"}),
    "no_write_path": (_check_no_write_path, {"name"}),
    "kernel_loan": (_check_kernel_loan, {"loan", "released"}),
    "leaks": (_check_leaks, {"no_loans"}),
}


def register_loan_ops() -> None:
    """Register the loan ops and checks with the scenario runner (done at
    import: a scenario lists ``plugins = ["uvmloan.testing.loan_ops"]``)."""
    sc = _sc()
    for name, (fn, keys) in LOAN_OPS.items():
        sc.register_op(name, fn, keys)
    for name, (fn, keys) in LOAN_CHECKS.items():
        sc.register_check(name, fn, keys)


register_loan_ops()
