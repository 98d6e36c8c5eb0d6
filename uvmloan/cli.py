"""The ``uvmloan`` command (also ``python -m uvmloan``).

Subcommands:

* ``compare``: the simulated cost of sending a buffer by copy and by page
  loan, over sizes and CPU counts, as a table, JSON and a plot.
* ``demo``: a process fills a buffer, the kernel borrows it by page loan,
  the process overwrites part of it, the borrower still reads the original
  bytes; prints what happened (loans, breaks, orphans, protections,
  shootdowns) and writes the JSON Lines trace.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .invariants import check_invariants
from .machine import Machine
from .physmem import BACKEND
from .trace import (
    Event,
    IPISent,
    KEnter,
    KRemove,
    Loan,
    LoanBreak,
    Orphan,
    PageProtect,
    ShootdownRound,
    Unloan,
    write_jsonl,
)

_SHOW = (Loan, LoanBreak, Orphan, PageProtect, ShootdownRound, IPISent, Unloan, KEnter, KRemove)


def _describe(ev: Event) -> str:
    if isinstance(ev, Loan):
        prot = ", write-protected every user mapping" if ev.protected else ""
        return f"loan {ev.kind} frame {ev.frame} (loan_count {ev.loan_count}){prot}"
    if isinstance(ev, LoanBreak):
        return (
            f"loan break ({ev.kind}, {ev.where}): frame {ev.old_frame} stays with the borrower, "
            f"owner now writes frame {ev.new_frame}"
        )
    if isinstance(ev, Orphan):
        return f"orphan: frame {ev.frame} has no owner, {ev.loan_count} loan(s) keep it ({ev.why})"
    if isinstance(ev, PageProtect):
        return f"pmap_page_protect(frame {ev.frame}, prot {ev.prot}) over {ev.mappings} mapping(s)"
    if isinstance(ev, ShootdownRound):
        what = "full flush" if ev.allva else f"{ev.nva} VA(s)"
        targets = list(ev.targets)
        return f"shootdown round CPU {ev.cpu} -> CPUs {targets}: {what}, waited {ev.waited_ns} ns"
    if isinstance(ev, IPISent):
        dst = "all other CPUs" if ev.target == -1 else f"CPU {ev.target}"
        return f"IPI {ev.vector} to {dst}"
    if isinstance(ev, Unloan):
        return (
            f"unloan frame {ev.frame} (loan_count {ev.loan_count}){' -> freed' if ev.freed else ''}"
        )
    if isinstance(ev, KEnter):
        return f"pmap_kenter_pa {ev.va:#x} -> frame {ev.frame} read-only"
    if isinstance(ev, KRemove):
        return f"pmap_kremove {ev.va:#x} (frame {ev.frame})"
    return ev.KIND


def demo(out: Path, ncpus: int, size: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    m = Machine(ncpus=ncpus, memory="16M", trace="record")
    print(f"uvmloan {__version__} demo: {m!r} (physmem backend: {BACKEND})")
    sender = m.spawn("sender", cpu=0)
    other_cpu = 1 if ncpus > 1 else 0
    buf = sender.mmap(size)
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    sender.write(buf, payload)
    # The sender also runs on a second CPU, so that CPU caches its mappings
    # and the write-protect has someone to shoot down.
    sender.read(buf, size, cpu=other_cpu)
    mark = len(m.trace)
    print(f"\n1. sender filled {size} bytes at {buf:#x} and read them on CPU {other_cpu}")
    loan = m.kernel_loan(sender, buf, size)
    print(f"2. the kernel borrowed them by page loan: {loan!r}")
    for ev in m.trace[mark:]:
        if isinstance(ev, _SHOW):
            print(f"     t={ev.t:>9} ns cpu{ev.cpu}  {_describe(ev)}")
    mark = len(m.trace)
    patch = b"OVERWRITTEN BY THE SENDER"
    sender.write(buf + 5000, patch, cpu=other_cpu)
    print(f"3. the sender overwrote {len(patch)} bytes at offset 5000 on CPU {other_cpu}")
    for ev in m.trace[mark:]:
        if isinstance(ev, _SHOW):
            print(f"     t={ev.t:>9} ns cpu{ev.cpu}  {_describe(ev)}")
    seen = loan.read(0, size)
    ok_borrower = seen == payload
    mine = sender.read(buf + 5000, len(patch))
    print(f"4. borrower reads the original bytes: {ok_borrower}")
    print(f"   sender reads its own write: {mine == patch}")
    check_invariants(m)
    mark = len(m.trace)
    sender.exit()
    print("5. the sender exited while the loan was outstanding")
    for ev in m.trace[mark:]:
        if isinstance(ev, Orphan):
            print(f"     t={ev.t:>9} ns cpu{ev.cpu}  {_describe(ev)}")
    still = loan.read(0, size) == payload
    print(f"   the borrower still reads the original bytes: {still}")
    mark = len(m.trace)
    loan.release()
    freed = sum(1 for ev in m.trace[mark:] if isinstance(ev, Unloan) and ev.freed)
    print(f"6. release (kremove, pmap_update, uvm_unloan, free KVA): {freed} orphan page(s) freed")
    check_invariants(m)
    print("\ncounters:")
    keys = [
        "loan",
        "loan.A->K",
        "loan.zero->K",
        "loan.break",
        "loan.orphan",
        "unloan",
        "pmap page_protect",
        "TLB shootdown",
        "ipi sent",
        "tlb invlpg",
        "fault",
    ]
    for k in keys:
        print(f"  {k:<20} {m.counters.get(k, 0)}")
    trace_path = out / "demo-trace.jsonl"
    write_jsonl(m.trace, trace_path)
    print(f"\n{len(m.trace)} events written to {trace_path}")
    print("check_invariants: passed")
    ok = ok_borrower and still and mine == patch
    m.close()
    return 0 if ok else 1


def _sizes(text: str) -> list[int]:
    from .machine import parse_size

    try:
        out = [parse_size(t) for t in text.split(",") if t.strip()]
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"sizes: {e}") from None
    if not out or any(s <= 0 for s in out):
        raise argparse.ArgumentTypeError("sizes must be positive, e.g. 4K,64K,1M")
    return out


def _ints(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of ints, got {text!r}") from None
    if not out or any(n < 1 for n in out):
        raise argparse.ArgumentTypeError("CPU counts must be >= 1")
    return out


def compare(args: argparse.Namespace) -> int:
    import json

    from . import experiments

    overrides: dict[str, object] = {}
    costs: dict[str, int] = {}
    for item in args.cost or []:
        name, _, value = item.partition("=")
        try:
            costs[name] = int(value)
        except ValueError:
            print(f"uvmloan compare: --cost wants NAME=INT, got {item!r}", file=sys.stderr)
            return 2
    if costs:
        overrides["costs"] = costs
    npts = len(args.cpus) * len(args.sizes) * 2
    print(
        f"copy vs loan: {npts} sends on profile {args.profile}"
        + (" with buffer reuse" if args.reuse else "")
    )
    try:
        pts = experiments.sweep(
            args.sizes,
            args.cpus,
            reuse=args.reuse,
            profile=args.profile,
            profile_overrides=overrides or None,
            progress=sys.stdout.isatty(),
        )
    except ValueError as e:
        print(f"uvmloan compare: {e}", file=sys.stderr)
        return 2
    print(experiments.table(pts))
    for n in args.cpus:
        c = experiments.crossover(pts, n)
        where = f"from {experiments._fmt_size(c)}" if c else "never, in this range"
        print(f"  {n} CPU(s): loaning is cheaper {where}")
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "compare.json"
    data.write_text(json.dumps([p.as_dict() for p in pts], indent=1))
    print(f"data: {data}")
    if not args.no_plot:
        try:
            png = experiments.plot(pts, args.out / "compare.png")
            print(f"plot: {png}")
        except RuntimeError as e:
            print(f"(no plot: {e})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="uvmloan", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"uvmloan {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="borrow a buffer by page loan and watch what happens")
    d.add_argument(
        "--out", type=Path, default=Path("out"), help="directory for the trace (default: out)"
    )
    d.add_argument("--ncpus", type=int, default=2, help="CPUs of the machine (default: 2)")
    d.add_argument(
        "--size", type=int, default=3 * 4096 + 100, help="bytes to lend (default: 12388)"
    )
    c = sub.add_parser("compare", help="simulated cost of copying vs lending a send buffer")
    c.add_argument("--sizes", type=_sizes, default=_sizes("4K,16K,64K,256K"), help="e.g. 4K,64K,1M")
    c.add_argument("--cpus", type=_ints, default=[1, 2, 4], help="CPU counts, e.g. 1,2,4")
    c.add_argument(
        "--reuse", action="store_true", help="the sender rewrites its buffer after each send"
    )
    c.add_argument("--profile", default="netbsd-10")
    c.add_argument(
        "--cost", action="append", metavar="NAME=NS", help="override a cost, e.g. copy_bw=100"
    )
    c.add_argument("--out", type=Path, default=Path("out"), help="directory for compare.json/.png")
    c.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = ap.parse_args(argv)
    if args.cmd == "compare":
        return compare(args)
    if args.cmd == "demo":
        if args.ncpus < 1 or args.size < 1:
            ap.error("--ncpus and --size must be positive")
        return demo(args.out, args.ncpus, args.size)
    return 2


if __name__ == "__main__":
    sys.exit(main())
