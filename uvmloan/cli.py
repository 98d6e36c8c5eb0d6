"""The ``uvmloan`` command (also ``python -m uvmloan``).

Subcommands:

* ``demo``: NetBSD's 2002 zero-copy result rerun (reproduction 1, quick):
  copy against page loan, the table, a plot, a trace and a pcap.
* ``reproduce NAME|all``: the published results the model reproduces.
* ``compare``: the simulated cost of sending a buffer by copy and by page
  loan, over sizes and CPU counts, as a table, JSON and a plot.
* ``tour``: a process fills a buffer, the kernel borrows it by page loan,
  the process overwrites part of it, the borrower still reads the original
  bytes; prints what happened (loans, breaks, orphans, protections,
  shootdowns) and writes the JSON Lines trace.
* ``sweep``: a parameter grid of an experiment from a TOML file, run on a
  process pool, threads or Dask, resumable (``uvmloan.sweep``).
* ``trace summary`` / ``trace perfetto``: what a JSON Lines trace says in
  numbers, or the trace as Chrome/Perfetto trace-event JSON.
* ``check``: the shipped hypothesis state machines, with a pasteable
  program on failure.
* ``profiles``: the shipped profiles, or one profile (or TOML file) field by
  field with the source of every value.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from . import __version__
from .invariants import check_invariants
from .machine import Machine, parse_size
from .physmem import BACKEND
from .profile import get_profile
from .ptetable import BACKEND as PTE_BACKEND
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
    prot_name,
)
from .vmscalars import BACKEND as WORDS_BACKEND

MAX_CPUS = 256  # Machine's limit
MAX_MEMORY = 4 << 30
COMPARE_MAX_SIZE = 64 << 20

_SHOW = (Loan, LoanBreak, Orphan, PageProtect, ShootdownRound, IPISent, Unloan, KEnter, KRemove)


def _describe(ev: Event) -> str:
    # Each line starts with the event's name in the trace vocabulary
    # (specs/trace.md): the JSON Lines "ev" and the counter it increments.
    if isinstance(ev, Loan):
        prot = ", write-protected every user mapping" if ev.protected else ""
        return f"{ev.name} {ev.kind}: frame {ev.frame} (loan_count {ev.loan_count}){prot}"
    if isinstance(ev, LoanBreak):
        return (
            f"{ev.name} ({ev.kind}, {ev.where}): frame {ev.old_frame} stays with the borrower, "
            f"owner now writes frame {ev.new_frame}"
        )
    if isinstance(ev, Orphan):
        return (
            f"{ev.name}: frame {ev.frame} has no owner, {ev.loan_count} loan(s) keep it ({ev.why})"
        )
    if isinstance(ev, PageProtect):
        return (
            f"{ev.name}: frame {ev.frame} lowered to {prot_name(ev.prot)} "
            f"in {ev.mappings} mapping(s)"
        )
    if isinstance(ev, ShootdownRound):
        what = "full flush" if ev.allva else f"{ev.nva} VA(s)"
        targets = list(ev.targets)
        return f"{ev.name}: CPU {ev.cpu} -> CPUs {targets}, {what}, waited {ev.waited_ns} ns"
    if isinstance(ev, IPISent):
        dst = "broadcast (all other CPUs)" if ev.target == -1 else f"CPU {ev.target}"
        return f"{ev.name}: {ev.vector} to {dst}"
    if isinstance(ev, Unloan):
        freed = ", freed" if ev.freed else ""
        return f"{ev.name}: frame {ev.frame} (loan_count {ev.loan_count}){freed}"
    if isinstance(ev, KEnter):
        return f"{ev.name}: {ev.va:#x} -> frame {ev.frame}, {prot_name(ev.prot)}"
    if isinstance(ev, KRemove):
        return f"{ev.name}: {ev.va:#x} (frame {ev.frame})"
    return ev.name


# The demo prints at most this many events per step; the trace has them all.
SHOW_MAX = 12
# Largest buffer the demo lends: it runs about 0.5 s per MiB.
DEMO_MAX_SIZE = 64 << 20
PATCH = b"OVERWRITTEN BY THE SENDER"


def _mib_up(n: int) -> int:
    return n + (-n) % (1 << 20)


def demo_min_memory(size: int) -> int:
    """The least memory the demo runs in: the buffer, the page a break copies, room."""
    return _mib_up(2 * size + (1 << 20))


def demo_memory(size: int) -> int:
    """The demo machine's default memory: the minimum plus slack, at least 16M."""
    return max(16 << 20, _mib_up(2 * size + (8 << 20)))


def _human(n: int) -> str:
    for unit, k in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k}{unit}"
    return f"{n} bytes"


def _show(events: list[Event], kinds: tuple[type[Event], ...] = _SHOW) -> None:
    shown = [ev for ev in events if isinstance(ev, kinds)]
    for ev in shown[:SHOW_MAX]:
        print(f"     t={ev.t:>9} ns cpu{ev.cpu}  {_describe(ev)}")
    if len(shown) > SHOW_MAX:
        print(f"     ... and {len(shown) - SHOW_MAX} more (all of them are in the trace)")


def demo(out: Path, ncpus: int, size: int, memory: int | None = None) -> int:
    """Run the demonstration; arguments are checked by ``main``."""
    trace_path = out / "demo-trace.jsonl"
    m = Machine(
        ncpus=ncpus,
        memory=demo_memory(size) if memory is None else memory,
        trace="record",
        trace_file=trace_path,
    )
    print(
        f"uvmloan {__version__} tour: {m!r} (physmem backend: {BACKEND}, "
        f"PTE tables: {PTE_BACKEND}, page words: {WORDS_BACKEND})"
    )
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
    _show(m.trace[mark:])
    mark = len(m.trace)
    # Overwrite inside the buffer whatever its size: past the first page
    # when there is one, else in the middle.
    off = 5000 if size > 5000 + len(PATCH) else size // 2
    patch = PATCH[: size - off]
    sender.write(buf + off, patch, cpu=other_cpu)
    print(f"3. the sender overwrote {len(patch)} byte(s) at offset {off} on CPU {other_cpu}")
    _show(m.trace[mark:])
    seen = loan.read(0, size)
    ok_borrower = seen == payload
    mine = sender.read(buf + off, len(patch))
    print(f"4. borrower reads the original bytes: {ok_borrower}")
    print(f"   sender reads its own write: {mine == patch}")
    check_invariants(m)
    mark = len(m.trace)
    sender.exit()
    print("5. the sender exited while the loan was outstanding")
    _show(m.trace[mark:], (Orphan,))
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
    n = len(m.trace)
    ok = ok_borrower and still and mine == patch
    m.close()
    print(f"\n{n} events written to {trace_path} (after a header line; specs/trace.md)")
    print("check_invariants: passed")
    return 0 if ok else 1


# --------------------------------------------------------------- arguments


def _size(text: str) -> int:
    try:
        n = parse_size(text, "size")
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return n


def _sizes(text: str) -> list[int]:
    out = [_size(t) for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError("expected sizes such as 4K,64K,1M")
    return out


def _ncpus(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a CPU count, got {text!r}") from None
    if not 1 <= n <= MAX_CPUS:
        raise argparse.ArgumentTypeError(f"a CPU count is from 1 to {MAX_CPUS}, got {n}")
    return n


def _ints(text: str) -> list[int]:
    out = [_ncpus(t.strip()) for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError("expected CPU counts such as 1,2,4")
    return out


def _cost(text: str) -> tuple[str, int]:
    name, eq, value = text.partition("=")
    try:
        if not eq:
            raise ValueError
        return name.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NAME=INT (e.g. copy_bw=100), got {text!r}"
        ) from None


def _writable_dir(ap: argparse.ArgumentParser, opt: str, path: Path, files: list[str]) -> None:
    """Create ``path`` and check each output file can be written, before any work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        for name in files:
            f = path / name
            existed = f.exists()
            with open(f, "a", encoding="utf-8"):
                pass
            if not existed:
                f.unlink()
    except OSError as e:
        ap.error(f"{opt} {str(path)!r}: cannot write there ({e.strerror or e})")


def compare(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the sweep; arguments (and the profile) were checked by ``main``."""
    import json

    from . import experiments

    overrides = args.overrides
    npts = len(args.cpus) * len(args.sizes) * 2
    print(
        f"copy vs loan: {npts} sends on profile {args.profile}"
        + (" with buffer reuse" if args.reuse else "")
    )
    pts = experiments.sweep(
        args.sizes,
        args.cpus,
        reuse=args.reuse,
        profile=args.profile,
        profile_overrides=overrides,
        progress=sys.stdout.isatty(),
    )
    print(experiments.table(pts))
    for n in args.cpus:
        c = experiments.crossover(pts, n)
        where = f"from {experiments._fmt_size(c)}" if c else "never, in this range"
        print(f"  {n} CPU(s): loaning is cheaper {where}")
    data = args.out / "compare.json"
    record = experiments.compare_record(
        pts,
        sizes=args.sizes,
        cpus=args.cpus,
        reuse=args.reuse,
        profile=args.profile,
        profile_overrides=overrides,
        command=["uvmloan", *argv],
    )
    data.write_text(json.dumps(record, indent=1))
    print(f"data: {data}")
    if not args.no_plot:
        try:
            png = experiments.plot(pts, args.out / "compare.png")
            print(f"plot: {png}")
        except RuntimeError as e:
            print(f"(no plot: {e})")
    return 0


class Command(Protocol):
    """A subcommand contributed by a package layered on uvmloan (the
    network stack's ``transfer``, say), found through the ``uvmloan.commands``
    entry-point group so that uvmloan never imports the layers above it."""

    name: str
    help: str

    def add_arguments(self, p: argparse.ArgumentParser, size: Callable[[str], int]) -> None: ...

    def check_arguments(self, p: argparse.ArgumentParser, args: argparse.Namespace) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _commands() -> dict[str, Command]:
    from .profile_cli import PROFILES_CMD
    from .reproduce_cli import DEMO, REPRODUCE
    from .research_cli import BUILTIN

    found: dict[str, Command] = {}
    for ep in sorted(entry_points(group="uvmloan.commands"), key=lambda e: e.name):
        try:
            cmd = ep.load()
        except Exception as e:  # a broken add-on must not take the command down
            print(f"uvmloan: cannot load the {ep.name!r} command ({e})", file=sys.stderr)
            continue
        found[cmd.name] = cmd
    # The built-in research commands share the plugins' protocol; a plugin
    # cannot replace one of them.
    for cmd in (DEMO, REPRODUCE, PROFILES_CMD, *BUILTIN):
        found[cmd.name] = cmd
    return found


MAIN_EPILOG = """\
a session:
  uvmloan demo                       NetBSD's 2002 result, copy vs loan; plot, trace, pcap in out/
  uvmloan reproduce all --quick      every published result the model reproduces
  uvmloan tour                       one loan, break and orphan; writes out/demo-trace.jsonl
  uvmloan trace perfetto out/demo-trace.jsonl     then open it at ui.perfetto.dev
  uvmloan compare --cpus 1,2,4       copy vs loan over sizes and CPU counts
  uvmloan sweep grid.toml            any grid of an experiment, resumable (docs/research.md)
  uvmloan check --machine all        the hypothesis state machines against the model
  uvmloan profiles show netbsd-1.6   a profile's every field, value and source

uvmloan COMMAND --help says more, with examples."""


def _parser(
    commands: dict[str, Command] | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    ap = argparse.ArgumentParser(
        prog="uvmloan",
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=MAIN_EPILOG,
    )
    ap.add_argument("--version", action="version", version=f"uvmloan {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("tour", help="borrow a buffer by page loan and watch what happens")
    d.add_argument(
        "--out", type=Path, default=Path("out"), help="directory for the trace (default: out)"
    )
    d.add_argument("--ncpus", type=_ncpus, default=2, help="CPUs of the machine (default: 2)")
    d.add_argument(
        "--size",
        type=_size,
        default=3 * 4096 + 100,
        help=f"bytes to lend, e.g. 12388, 64K, 1M (default: 12388; at most {DEMO_MAX_SIZE >> 20}M)",
    )
    d.add_argument(
        "--memory",
        type=_size,
        default=None,
        help="the machine's memory, e.g. 64M (default: enough for --size)",
    )
    c = sub.add_parser("compare", help="simulated cost of copying vs lending a send buffer")
    c.add_argument(
        "--sizes",
        type=_sizes,
        default=[4096, 16384, 65536, 262144],
        help=f"e.g. 4K,64K,1M (default: 4K,16K,64K,256K; each at most {COMPARE_MAX_SIZE >> 20}M)",
    )
    c.add_argument("--cpus", type=_ints, default=[1, 2, 4], help="CPU counts, e.g. 1,2,4")
    c.add_argument(
        "--reuse", action="store_true", help="the sender rewrites its buffer after each send"
    )
    c.add_argument("--profile", default="netbsd-10", help="profile name (default: netbsd-10)")
    c.add_argument(
        "--cost",
        action="append",
        type=_cost,
        metavar="NAME=INT",
        help="override a cost of the profile, e.g. copy_bw=100 (repeatable)",
    )
    c.add_argument("--out", type=Path, default=Path("out"), help="directory for compare.json/.png")
    c.add_argument("--no-plot", action="store_true", help="skip the PNG")
    subs = {"tour": d, "compare": c}
    for name, cmd in (commands or {}).items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p, _size)
        subs[name] = p
    return ap, subs


def _check_demo(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.size > DEMO_MAX_SIZE:
        ap.error(
            f"--size {_human(args.size)}: the tour lends at most {_human(DEMO_MAX_SIZE)} "
            "(uvmloan compare measures large sends)"
        )
    if args.memory is not None:
        ps = get_profile().page_size
        if args.memory % ps:
            ap.error(f"--memory {_human(args.memory)}: not a multiple of the page size {ps}")
        least = demo_min_memory(args.size)
        if args.memory < least:
            ap.error(
                f"--memory {_human(args.memory)}: too small for --size {_human(args.size)} "
                f"(needs at least {_human(least)})"
            )
        if args.memory > MAX_MEMORY:
            ap.error(f"--memory {_human(args.memory)}: at most {_human(MAX_MEMORY)}")
    _writable_dir(ap, "--out", args.out, ["demo-trace.jsonl"])


def _check_compare(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    big = [s for s in args.sizes if s > COMPARE_MAX_SIZE]
    if big:
        ap.error(f"--sizes: {_human(big[0])} is more than {_human(COMPARE_MAX_SIZE)}")
    costs = dict(args.cost or [])
    args.overrides = {"costs": costs} if costs else None
    try:
        get_profile(args.profile, **(args.overrides or {}))
    except (TypeError, ValueError) as e:
        opt = "--cost" if costs and "cost" in str(e) else "--profile"
        ap.error(f"{opt}: {e}")
    files = ["compare.json"] + ([] if args.no_plot else ["compare.png"])
    _writable_dir(ap, "--out", args.out, files)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: a user error is an argparse message and exit status 2."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    ap, subs = _parser(commands)
    args = ap.parse_args(args_list)
    try:
        if args.cmd in commands:
            cmd = commands[args.cmd]
            cmd.check_arguments(subs[args.cmd], args)
            return cmd.run(args)
        if args.cmd == "compare":
            _check_compare(subs["compare"], args)
            return compare(args, args_list)
        _check_demo(subs["tour"], args)
        return demo(args.out, args.ncpus, args.size, args.memory)
    except KeyboardInterrupt:
        print(f"uvmloan {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        # The disk filled or the directory went away after the checks.
        print(f"uvmloan {args.cmd}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
