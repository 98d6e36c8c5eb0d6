"""``uvmloan reproduce`` and ``uvmloan demo``: the published results, rerun.

``reproduce NAME|all`` runs reproductions from :mod:`uvmloan.experiments`
(the model's own and those the network stack registers), prints each one's
table of model figure against published figure, and writes its CSV and plot.
``demo`` is reproduction 1 in its quick form: the 2002 copy-versus-loan
table, its plot, the loaning run's trace and pcap, and what to open them
with.  Unknown names and unusable directories are one-line argparse errors
naming the valid choices (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from .experiments.repro import ReproductionResult, reproduce, reproductions

_RAW = argparse.RawDescriptionHelpFormatter


def _writable(p: argparse.ArgumentParser, out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".uvmloan-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        p.error(f"--out {out}: cannot write there ({e.strerror or e})")


def _print_progress(msg: str) -> None:
    print(f"  {msg}", flush=True)


def _run(names: list[str], out: Path, quick: bool, quiet: bool) -> list[ReproductionResult]:
    results = []
    for name in names:
        print(f"== {name}{' (quick)' if quick else ''}", flush=True)
        res = reproduce(name, out, quick=quick, progress=None if quiet else _print_progress)
        print(res.report())
        print()
        (out / f"{name}.json").write_text(json.dumps(res.as_dict(), indent=1, default=str))
        results.append(res)
    return results


REPRODUCE_EPILOG = """\
each reproduction prints a table (model figure, published figure, ratio),
says whether the published claim holds in the model and why, and writes
OUT/NAME.csv, OUT/NAME.png (with matplotlib) and OUT/NAME.json.

examples:
  uvmloan reproduce all --quick          every reproduction, small runs
  uvmloan reproduce announcement-2002    the 2002 copy vs loan result
  uvmloan reproduce mp-loan --out out/mp
"""


class ReproduceCommand:
    name = "reproduce"
    help = "rerun a published result (or all of them) and compare with the published figures"

    def add_arguments(self, p: argparse.ArgumentParser, size: Callable[[str], int]) -> None:
        p.formatter_class = _RAW
        p.epilog = REPRODUCE_EPILOG
        p.add_argument("name", metavar="NAME", help="a reproduction's name, or 'all'")
        p.add_argument(
            "--out", type=Path, default=Path("out"), help="directory for the files (default: out)"
        )
        p.add_argument("--quick", action="store_true", help="smaller runs (seconds, not minutes)")
        p.add_argument("--quiet", action="store_true", help="no progress lines")

    def check_arguments(self, p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        known = reproductions()
        if args.name != "all" and args.name not in known:
            p.error(f"unknown reproduction {args.name!r}; choose from: all, {', '.join(known)}")
        args.names = list(known) if args.name == "all" else [args.name]
        _writable(p, args.out)

    def run(self, args: argparse.Namespace) -> int:
        results = _run(args.names, args.out, args.quick, args.quiet)
        if len(results) > 1:
            print("summary:")
            for r in results:
                print(
                    f"  {r.name:<22} {'holds' if r.holds else 'DOES NOT HOLD':<14} "
                    f"{r.wall_s:6.1f} s"
                )
        return 0 if all(r.holds for r in results) else 1


DEMO_EPILOG = """\
The demo reruns NetBSD's 2002 zero-copy announcement (reproduction 1, quick):
a ttcp-style TCP transmit from an embedded board over 100baseTX, once by
copying into mbuf clusters and once by lending the user's pages to the
socket (sosend_loan).  It prints the copy vs loan table against the
published figures and writes, to OUT:
  announcement-2002.png    the plot
  announcement-2002.csv    the figures
  bulk-loan-*-trace.jsonl  the loaning run's trace (uvmloan trace summary|perfetto)
  bulk-loan-*.pcapng       its packets (Wireshark, tshark)

`uvmloan tour` is the smaller walk through one loan, break and orphan.
"""


class DemoCommand:
    name = "demo"
    help = "rerun NetBSD's 2002 zero-copy result (copy vs page loan) in under a minute"

    def add_arguments(self, p: argparse.ArgumentParser, size: Callable[[str], int]) -> None:
        p.formatter_class = _RAW
        p.epilog = DEMO_EPILOG
        p.add_argument(
            "--out", type=Path, default=Path("out"), help="directory for the files (default: out)"
        )

    def check_arguments(self, p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if "announcement-2002" not in reproductions():
            p.error("the demo needs the network stack (netstack), which is not installed")
        _writable(p, args.out)

    def run(self, args: argparse.Namespace) -> int:
        from ._version import __version__
        from .physmem import BACKEND

        print(
            f"uvmloan {__version__} demo: NetBSD's 2002 zero-copy result, rerun "
            f"(physmem backend: {BACKEND})"
        )
        (res,) = _run(["announcement-2002"], args.out, True, False)
        print("open them with:")
        for kind, path in res.files.items():
            how = {
                "plot": "an image viewer",
                "csv": "a spreadsheet or pandas",
                "trace": f"uvmloan trace summary {path}; uvmloan trace perfetto {path}",
                "pcap": f"wireshark {path}; tshark -r {path}",
            }.get(kind, "")
            print(f"  {kind:<6} {path}" + (f"\n         ({how})" if how else ""))
        print("\nnext: uvmloan reproduce all --quick; uvmloan tour; uvmloan --help")
        sys.stdout.flush()
        return 0 if res.holds else 1


REPRODUCE = ReproduceCommand()
DEMO = DemoCommand()
