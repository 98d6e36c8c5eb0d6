"""Run the C mutation catalogue: does the suite kill every mutant of the C code?

mutmut mutates Python only, so the C paths have a catalogue of their own
(``mutation/c_catalogue.toml``).  For each mutant this script writes the
mutated source (``cext/physmem.c`` unless the entry names another, such as
``cext/ptetable.c``) into a scratch copy of the tree, rebuilds the
extensions there, and runs the physical-memory, checksum and PTE-table tests
against that build.  A mutant is *killed* when the tests fail (a crash or a time-out counts
too: the suite noticed), *survived* when they pass, and *stillborn* when it
does not compile (a catalogue error: every entry must build).

    python mutation/c_mutants.py              # the whole catalogue, 2 jobs
    python mutation/c_mutants.py --only fold16-while-to-if --jobs 1

The unmutated tree is built and tested first in each scratch copy; if that
fails, nothing is measured.  Results go to ``mutation/results/c.json``; the
exit status is 1 when any mutant survived or was stillborn.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "mutation" / "c_catalogue.toml"
SOURCE = Path("cext") / "physmem.c"  # a mutant's default source
RESULTS = ROOT / "mutation" / "results" / "c.json"
TESTS = (
    "tests/test_physmem.py",
    "tests/test_physmem_diff.py",
    "tests/test_cksum.py",
    "tests/test_physmem_fast.py",
    "tests/test_ptetable.py",
    "tests/test_vmscalars.py",
)
# what a scratch copy needs to build the extension and run those tests
COPY = ("cext", "uvmloan", "tests", "specs", "pyproject.toml", "setup.py")


@attrs.frozen
class Mutant:
    id: str
    find: str
    replace: str
    why: str
    occurrence: int = 1
    source: str = str(SOURCE)  # the file mutated, relative to the tree

    def apply(self, source: str) -> str:
        """The source with the ``occurrence``-th match of ``find`` replaced."""
        start = -1
        for _ in range(self.occurrence):
            start = source.find(self.find, start + 1)
            if start < 0:
                raise CatalogueError(
                    f"mutant {self.id!r}: occurrence {self.occurrence} of its `find` text "
                    f"is not in {self.source} (the source changed: update the catalogue)"
                )
        return source[:start] + self.replace + source[start + len(self.find) :]


class CatalogueError(Exception):
    """The catalogue does not fit the source."""


def load(path: Path = CATALOGUE) -> list[Mutant]:
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    mutants = [Mutant(**entry) for entry in raw.get("mutant", [])]
    ids = [m.id for m in mutants]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise CatalogueError(f"duplicate mutant ids: {sorted(dup)}")
    return mutants


def _ignore(_dir: str, names: list[str]) -> set[str]:
    skip = {"__pycache__", "build", ".hypothesis", ".pytest_cache"}
    return {n for n in names if n in skip or n.endswith((".so", ".o", ".pyc"))}


def make_scratch(parent: Path, name: str) -> Path:
    work = parent / name
    work.mkdir()
    for item in COPY:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=_ignore)
        else:
            shutil.copy2(src, work / item)
    (work / "_c_mutants_plugin.py").write_text(PLUGIN, encoding="utf-8")
    return work


# Loaded into every test run (-p): a failing property is reported at once,
# not shrunk (shrinking a killed mutant's counterexample can take minutes and
# tells the measurement nothing), and no example database carries over.
PLUGIN = """
from hypothesis import Phase, settings

settings.register_profile(
    "c-mutants", phases=[Phase.explicit, Phase.generate], database=None, print_blob=False
)
settings.load_profile("c-mutants")
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("UVMLOAN_PUREPYTHON", None)  # the C backend is what is measured
    env["PYTHONPATH"] = "."  # the scratch copy's uvmloan, not an installed one
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


EXTENSIONS = ("_physmem*.so", "_ptetable*.so")  # every one must build


def build(work: Path) -> bool:
    shutil.rmtree(work / "build", ignore_errors=True)
    for pattern in EXTENSIONS:
        for so in (work / "uvmloan").glob(pattern):
            so.unlink()
    r = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=work,
        env=_env(),
        capture_output=True,
        text=True,
    )
    return r.returncode == 0 and all(any((work / "uvmloan").glob(p)) for p in EXTENSIONS)


def run_tests(work: Path, tests: Sequence[str], timeout: float) -> tuple[str, float]:
    """("passed" | "failed" | "timeout", seconds)."""
    t0 = time.monotonic()
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "_c_mutants_plugin",
        "--hypothesis-seed=0",
        *tests,
    ]
    try:
        r = subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0
    return ("passed" if r.returncode == 0 else "failed"), time.monotonic() - t0


def measure(
    mutants: Sequence[Mutant], jobs: int, tests: Sequence[str], timeout: float
) -> dict[str, Any]:
    originals = {m.source: (ROOT / m.source).read_text(encoding="utf-8") for m in mutants}
    texts = {m.id: m.apply(originals[m.source]) for m in mutants}  # all must fit first
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="uvmloan-cmut-") as tmp:
        workers = [make_scratch(Path(tmp), f"w{i}") for i in range(jobs)]
        for w in workers:
            if not build(w):
                raise SystemExit("the unmutated extension does not build in a scratch copy")
            status, secs = run_tests(w, tests, timeout)
            if status != "passed":
                raise SystemExit(f"the tests fail on the unmutated tree ({status}): fix that first")
        print(f"baseline: tests pass on the unmutated build ({secs:.1f} s)", flush=True)

        queue = list(mutants)
        done = 0

        def work_on(w: Path) -> None:
            nonlocal done
            while queue:
                m = queue.pop(0)
                (w / m.source).write_text(texts[m.id], encoding="utf-8")
                if not build(w):
                    outcome, secs = "stillborn", 0.0
                else:
                    status, secs = run_tests(w, tests, timeout)
                    outcome = {"failed": "killed", "timeout": "killed (timeout)"}.get(
                        status, "survived"
                    )
                results[m.id] = {"outcome": outcome, "seconds": round(secs, 1), "why": m.why}
                done += 1
                print(f"[{done}/{len(mutants)}] {m.id}: {outcome}", flush=True)
                (w / m.source).write_text(originals[m.source], encoding="utf-8")

        with ThreadPoolExecutor(jobs) as pool:
            for f in [pool.submit(work_on, w) for w in workers]:
                f.result()
    ordered = {m.id: results[m.id] for m in mutants}
    killed = sum(r["outcome"].startswith("killed") for r in ordered.values())
    return {
        "tests": list(tests),
        "mutants": len(ordered),
        "killed": killed,
        "survived": [k for k, r in ordered.items() if r["outcome"] == "survived"],
        "stillborn": [k for k, r in ordered.items() if r["outcome"] == "stillborn"],
        "results": ordered,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2, help="scratch copies run in parallel")
    ap.add_argument("--only", action="append", default=[], metavar="ID", help="run these ids")
    ap.add_argument("--tests", nargs="+", default=list(TESTS), help="test files to run")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds per test run")
    ap.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS.name}")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    try:
        mutants = load()
        if args.only:
            unknown = set(args.only) - {m.id for m in mutants}
            if unknown:
                ap.error(f"unknown mutant ids: {sorted(unknown)}")
            mutants = [m for m in mutants if m.id in args.only]
        t0 = time.monotonic()
        summary = measure(mutants, args.jobs, args.tests, args.timeout)
    except CatalogueError as e:
        print(f"catalogue error: {e}", file=sys.stderr)
        return 2
    summary["wall_seconds"] = round(time.monotonic() - t0, 1)
    print(
        f"C mutants: {summary['killed']} of {summary['mutants']} killed"
        f" in {summary['wall_seconds']:.0f} s; survived: {summary['survived'] or 'none'}"
        f"; stillborn: {summary['stillborn'] or 'none'}"
    )
    if not args.no_save and not args.only:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 1 if summary["survived"] or summary["stillborn"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
