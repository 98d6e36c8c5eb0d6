"""The research subcommands of ``uvmloan``: ``sweep``, ``trace`` and ``check``.

Each is a :class:`uvmloan.cli.Command` (the protocol entry-point plugins
implement), built in: ``cli.main`` lists them before the plugins.  Every
user error (a missing or malformed file, an unknown machine, experiment or
parameter) is an argparse message naming the problem and the valid
choices, exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

_RAW = argparse.RawDescriptionHelpFormatter

# ------------------------------------------------------------------ sweep

SWEEP_EPILOG = """\
a sweep file (TOML):

  experiment = "send_cost"     # a named experiment, or "package.module:function"
  name = "copy-vs-loan"
  [grid]                       # every combination of these lists
  policy = ["copy", "loan"]
  size = ["4K", "64K", "1M"]
  ncpus = [1, 2, 4]
  [fixed]                      # the same for every point
  reuse = true

Each point is written to OUT/points/<key>.json as it finishes; run the same
command again to resume (finished points are reused, failed ones rerun).
The table of all points is OUT/results.csv (and .parquet with pyarrow).

examples:
  uvmloan sweep sweeps/copy-vs-loan.toml --out out/cvl
  uvmloan sweep grid.toml --executor thread --workers 4
  uvmloan sweep grid.toml --executor dask tcp://scheduler:8786
  uvmloan sweep grid.toml --executor dask local      # a LocalCluster here
"""

EXECUTORS = ("process", "thread", "dask")


class SweepCommand:
    name = "sweep"
    help = "run a parameter grid of an experiment, resumably, on any executor"

    def add_arguments(self, p: argparse.ArgumentParser, size: Callable[[str], int]) -> None:
        p.formatter_class = _RAW
        p.epilog = SWEEP_EPILOG
        p.usage = (
            "uvmloan sweep FILE [--executor process|thread|dask ADDRESS] [--workers N]"
            " [--out DIR] [--keep-failed] [--no-progress]"
        )
        p.add_argument("file", metavar="FILE", type=Path, help="the sweep file (TOML)")
        p.add_argument(
            "--executor",
            nargs="+",
            metavar="KIND",
            default=["process"],
            help="process (default: a local process pool), thread, or dask ADDRESS "
            "(a scheduler address, or 'local' for a LocalCluster on this machine)",
        )
        p.add_argument("--workers", type=int, default=None, help="pool size (default: CPUs)")
        p.add_argument(
            "--out", type=Path, default=None, help="output directory (default: out/NAME)"
        )
        p.add_argument(
            "--keep-failed", action="store_true", help="on resume, keep failed points as they are"
        )
        p.add_argument("--no-progress", action="store_true", help="print nothing per point")

    def check_arguments(self, p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        from .sweep import SweepError, load_grid

        kind, *rest = args.executor
        if kind not in EXECUTORS:
            p.error(f"--executor {kind!r}: choose from {', '.join(EXECUTORS)}")
        if kind == "dask":
            if len(rest) != 1:
                p.error("--executor dask needs one ADDRESS (tcp://host:port, or 'local')")
            try:
                import_module("distributed")
            except ImportError:
                p.error("--executor dask needs dask.distributed: pip install 'uvmloan[sweep]'")
        elif rest:
            p.error(f"--executor {kind} takes no address (got {' '.join(rest)!r})")
        if args.workers is not None and args.workers < 1:
            p.error(f"--workers must be at least 1, got {args.workers}")
        try:
            args.grid = load_grid(args.file)
        except SweepError as e:
            p.error(str(e))
        if args.out is None:
            args.out = Path("out") / args.grid.name
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            probe = args.out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            p.error(f"--out {str(args.out)!r}: cannot write there ({e.strerror or e})")

    def run(self, args: argparse.Namespace) -> int:
        from concurrent.futures import Executor, ThreadPoolExecutor

        from .sweep import SweepResult, dask_executor, run_sweep

        kind, *rest = args.executor
        progress = False if args.no_progress else None

        def go(ex: Executor | None) -> SweepResult:
            return run_sweep(
                args.grid,
                args.out,
                executor=ex,
                max_workers=args.workers,
                progress=progress,
                retry_failed=not args.keep_failed,
            )

        try:
            if kind == "thread":
                with ThreadPoolExecutor(max_workers=args.workers) as tex:
                    res = go(tex)
            elif kind == "dask":
                addr = None if rest[0] == "local" else rest[0]
                kw: dict[str, Any] = {}
                if addr is None:
                    kw = {"n_workers": args.workers or 1, "dashboard_address": None}
                with dask_executor(addr, **kw) as dex:
                    res = go(dex)
            else:
                res = go(None)
        except KeyboardInterrupt:
            print(
                f"uvmloan sweep: interrupted; finished points are in {args.out}/points:"
                " run the same command to resume",
                file=sys.stderr,
            )
            raise
        if res.failed:
            print(f"{res.failed} point(s) failed:")
            for r in res.rows:
                if r["status"] != "ok":
                    print(f"  point {r['point']} ({args.out}/points/{r['key']}.json): {r['error']}")
            return 1
        return 0


# ------------------------------------------------------------------ trace

TRACE_EPILOG = """\
FILE is a JSON Lines trace (specs/trace.md), e.g. what `uvmloan demo` writes
or Machine(trace_file="run.jsonl") records.

examples:
  uvmloan trace summary out/demo-trace.jsonl
  uvmloan trace summary out/demo-trace.jsonl --json
  uvmloan trace perfetto out/demo-trace.jsonl -o out/demo.perfetto.json
  # then open it at https://ui.perfetto.dev (Open trace file), or chrome://tracing
"""


class TraceCommand:
    name = "trace"
    help = "summarise a JSON Lines trace, or convert it for the Perfetto UI"

    def __init__(self) -> None:
        self._subs: dict[str, argparse.ArgumentParser] = {}

    def add_arguments(self, p: argparse.ArgumentParser, size: Callable[[str], int]) -> None:
        p.formatter_class = _RAW
        p.epilog = TRACE_EPILOG
        sub = p.add_subparsers(dest="trace_cmd", required=True, metavar="{summary,perfetto}")
        s = sub.add_parser(
            "summary",
            help="counts by event, loans over time, bytes lent vs copied, breaks by cause",
            description="Counts by event name (each equals the counter of that name), loans "
            "outstanding over time, bytes lent against bytes copied to break loans, loan "
            "breaks by cause and orphanings by reason.",
        )
        s.add_argument("file", metavar="FILE", type=Path, help="a JSON Lines trace")
        s.add_argument("--json", action="store_true", help="print the summary as JSON")
        f = sub.add_parser(
            "perfetto",
            help="write Chrome/Perfetto trace-event JSON (loans, breaks, counters, shootdowns)",
            description="Loans as async slices, breaks and orphanings as instants, loaned/"
            "free pages, loans outstanding and loan KVA as counter tracks, shootdown rounds "
            "as slices per CPU; TCP/UDP segments as link tracks with --segments.",
        )
        f.add_argument("file", metavar="FILE", type=Path, help="a JSON Lines trace")
        f.add_argument(
            "-o",
            "--out",
            type=Path,
            default=None,
            help="output (default: FILE with .perfetto.json; .gz compresses)",
        )
        f.add_argument(
            "--segments",
            type=Path,
            default=None,
            help="segment records (JSON Lines of uvmloan.perfetto.SegmentRecord)",
        )
        f.add_argument(
            "--no-detail",
            action="store_true",
            help="leave out the per-CPU instants of other events (smaller file)",
        )
        self._subs = {"summary": s, "perfetto": f}

    def check_arguments(self, p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        from .trace import read_header, read_jsonl

        p = self._subs.get(args.trace_cmd, p)  # errors show "uvmloan trace summary: ..."

        try:
            args.header = read_header(args.file)
            args.events = read_jsonl(args.file)
        except FileNotFoundError:
            p.error(f"{args.file}: no such trace file")
        except IsADirectoryError:
            p.error(f"{args.file}: is a directory, not a trace file")
        except UnicodeDecodeError:
            p.error(f"{args.file}: not a text file (a JSON Lines trace is UTF-8 text)")
        except OSError as e:
            p.error(f"{args.file}: cannot read it ({e.strerror or e})")
        except ValueError as e:
            p.error(f"{e} (a JSON Lines trace starts with a header record: specs/trace.md)")
        if args.trace_cmd == "perfetto":
            from .perfetto import read_segments

            args.segs = []
            if args.segments is not None:
                try:
                    args.segs = read_segments(args.segments)
                except FileNotFoundError:
                    p.error(f"--segments {args.segments}: no such file")
                except (OSError, ValueError) as e:
                    p.error(f"--segments: {e}")
            if args.out is None:
                name = args.file.name.removesuffix(".jsonl")
                args.out = args.file.with_name(name + ".perfetto.json")
            try:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a", encoding="utf-8"):
                    pass
            except OSError as e:
                p.error(f"-o {str(args.out)!r}: cannot write there ({e.strerror or e})")

    def run(self, args: argparse.Namespace) -> int:
        prof = args.header.get("profile") or {}
        ps = prof.get("page_size", 4096) if isinstance(prof, dict) else 4096
        if args.trace_cmd == "summary":
            from .trace_summary import format_summary, summarize

            s = summarize(args.events, page_size=ps)
            print(json.dumps(s.as_dict(), indent=1) if args.json else format_summary(s))
            return 0
        from .perfetto import chrome_trace, write_chrome_trace

        tr = chrome_trace(
            args.events, header=args.header, segments=args.segs, detail=not args.no_detail
        )
        out = write_chrome_trace(tr, args.out)
        print(f"{len(tr['traceEvents'])} trace events written to {out}")
        print("open it at https://ui.perfetto.dev (Open trace file) or in chrome://tracing")
        return 0


# ------------------------------------------------------------------ check

# name -> (machine class, settings function, bug list); imported only when
# run, so uvmloan never imports the network stack unless asked to.
MACHINES: dict[str, tuple[str, str, str]] = {
    "loan": (
        "uvmloan.testing.loan_machine:LoanStateMachine",
        "uvmloan.testing.loan_machine:loan_settings",
        "uvmloan.inject:BUGS",
    ),
    "vm": (
        "uvmloan.testing.vm_machine:VMStateMachine",
        "uvmloan.testing.vm_machine:vm_settings",
        "uvmloan.inject:BUGS",
    ),
    "pmap": (
        "uvmloan.testing.pmap_machine:PmapStateMachine",
        "uvmloan.testing.pmap_machine:hypothesis_settings",
        "uvmloan.inject:BUGS",
    ),
    "socket": (
        "netstack.testing.socket_machine:SocketStateMachine",
        "netstack.testing.socket_machine:socket_settings",
        "netstack.inject:BUGS",
    ),
}

CHECK_EPILOG = """\
The machines draw random programs of operations, check the model's
invariants after every step and compare it with a plain reference (what
the borrower sees equals what was there when it borrowed).  On a failure
hypothesis shrinks the program and prints it as Python you can paste into a
test (state = LoanStateMachine(); state.alloc(...); ...), followed by
@reproduce_failure(...), which replays it with this hypothesis version.

examples:
  uvmloan check                                   # the loan machine, its CI size
  uvmloan check --machine all --examples 20
  uvmloan check --machine pmap --examples 500 --seed 7
  uvmloan check --machine loan --inject skip-loan-protect   # watch it catch a bug
"""


def _load(target: str) -> Any:
    mod, _, attr = target.partition(":")
    return getattr(import_module(mod), attr)


def machines() -> dict[str, tuple[str, str, str]]:
    """The built-in machines and those of the ``uvmloan.machines`` entry-point
    group (value: "module:Class"; default settings, no injectable bugs)."""
    out = dict(MACHINES)
    for ep in entry_points(group="uvmloan.machines"):
        out.setdefault(ep.name, (ep.value, "", ""))
    return out


class CheckCommand:
    name = "check"
    help = "run the shipped hypothesis state machines against the model"

    def add_arguments(self, p: argparse.ArgumentParser, size: Callable[[str], int]) -> None:
        p.formatter_class = _RAW
        p.epilog = CHECK_EPILOG
        names = [*machines(), "all"]
        p.add_argument(
            "--machine",
            action="append",
            metavar="NAME",
            default=None,
            help=f"{', '.join(names)} (repeatable; default: loan)",
        )
        p.add_argument(
            "--examples",
            type=int,
            default=None,
            help="programs to try (default: the machine's CI profile)",
        )
        p.add_argument("--steps", type=int, default=None, help="most steps per program")
        p.add_argument(
            "--seed",
            type=int,
            default=None,
            help="seed the search (the same seed tries the same programs)",
        )
        p.add_argument(
            "--inject",
            action="append",
            metavar="BUG",
            default=[],
            help="switch a deliberate bug on (uvmloan.inject; repeatable)",
        )
        p.add_argument(
            "--no-shrink",
            action="store_true",
            help="report the first failing program without shrinking it",
        )

    def check_arguments(self, p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        known = machines()
        chosen = args.machine or ["loan"]
        if "all" in chosen:
            chosen = list(known)
        for name in chosen:
            if name not in known:
                p.error(f"--machine {name!r}: choose from {', '.join([*known, 'all'])}")
        for opt in ("examples", "steps"):
            v = getattr(args, opt)
            if v is not None and v < 1:
                p.error(f"--{opt} must be at least 1, got {v}")
        if args.seed is not None and args.seed < 0:
            p.error(f"--seed must be a non-negative int, got {args.seed}")
        args.machines = []
        for name in chosen:
            cls_t, set_t, bugs_t = known[name]
            try:
                cls = _load(cls_t)
                bugs: tuple[str, ...] = tuple(_load(bugs_t)) if bugs_t else ()
            except (ImportError, AttributeError) as e:
                p.error(f"--machine {name}: cannot import {cls_t} ({e})")
            for bug in args.inject:
                if bug not in bugs:
                    p.error(
                        f"--inject {bug!r}: the {name} machine knows "
                        + (", ".join(bugs) if bugs else "no injectable bugs")
                    )
            args.machines.append((name, cls, set_t))

    def run(self, args: argparse.Namespace) -> int:
        from hypothesis import Phase, seed, settings

        from .testing import run_machine

        failed = 0
        for name, cls, set_t in args.machines:
            base = _machine_settings(set_t)
            over: dict[str, Any] = {"print_blob": True, "database": None, "deadline": None}
            if args.examples is not None:
                over["max_examples"] = args.examples
            if args.steps is not None:
                over["stateful_step_count"] = args.steps
            if args.seed is not None:
                over["derandomize"] = False
            if args.no_shrink:
                over["phases"] = [Phase.explicit, Phase.generate]
            st = settings(base, **over)
            machine = cls
            if args.inject:
                machine = type(
                    cls.__name__,
                    (cls,),
                    {"INJECT": tuple(args.inject), "__module__": cls.__module__},
                )
            count = [0]
            tty = sys.stdout.isatty()

            def factory(
                machine: Any = machine, count: list[int] = count, name: str = name, tty: bool = tty
            ) -> Any:
                count[0] += 1
                n = count[0]
                if tty:
                    print(f"\r{name}: run {n}", end="", flush=True)
                elif n % 100 == 0:
                    print(f"{name}: {n} runs (examples, then shrinking)", flush=True)
                return machine()

            if args.seed is not None:
                factory = seed(args.seed)(factory)
            inj = f" with {', '.join(args.inject)} injected" if args.inject else ""
            print(
                f"{name}: {cls.__name__}{inj}, up to {st.max_examples} examples of up to "
                f"{st.stateful_step_count} steps"
                + (f", seed {args.seed}" if args.seed is not None else ""),
                flush=True,
            )
            try:
                run_machine(factory, settings=st)
            except Exception as e:
                if tty:
                    print()
                failed += 1
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                # hypothesis attaches the falsifying program (and the
                # @reproduce_failure blob) to the exception as notes
                notes = [str(n) for n in getattr(e, "__notes__", ())]
                print(f"{name}: FAILED after {count[0]} runs: {type(e).__name__}: {msg}")
                if notes:
                    print(
                        f"{name}: the minimal failing program, as Python to paste into a "
                        "test (@reproduce_failure replays it with this hypothesis):"
                    )
                    print("\n".join(notes), flush=True)
                continue
            if tty:
                print()
            print(f"{name}: passed ({count[0]} runs)", flush=True)
        return 1 if failed else 0


def _machine_settings(target: str) -> Any:
    from hypothesis import HealthCheck, settings

    if target:
        try:
            return _load(target)()
        except ValueError:
            pass  # e.g. an unknown $UVMLOAN_HYPOTHESIS_PROFILE: the defaults below
    return settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


SWEEP = SweepCommand()
TRACE = TraceCommand()
CHECK = CheckCommand()
BUILTIN = (SWEEP, TRACE, CHECK)
