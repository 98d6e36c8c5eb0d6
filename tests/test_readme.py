"""README.md as a user reads it: every Python example runs as written (in a
fresh interpreter namespace after a plain ``import uvmloan``), every
``uvmloan`` command line in a shell block parses, the install extras it
names exist, and its relative links point at files."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from uvmloan.cli import _parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(lang: str) -> list[str]:
    return [body for tag, body in BLOCK.findall(README) if tag == lang]


PYTHON = _blocks("python")
SHELL = _blocks("sh")


def test_the_readme_has_examples() -> None:
    assert len(PYTHON) >= 3 and len(SHELL) >= 3


@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_example_runs_as_written(tmp_path: Path, code: str) -> None:
    # A fresh interpreter: in this one the suite has imported every
    # submodule already, which would hide a missing import in uvmloan/__init__.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, f"README example failed:\n{code}\n{r.stderr}"


def _commands() -> list[list[str]]:
    out = []
    for body in SHELL:
        for line in body.splitlines():
            for part in line.split("&&"):
                # "[--reuse]" marks an optional argument: keep it.
                words = shlex.split(part.replace("[", "").replace("]", ""))
                if words:
                    out.append(words)
    return out


def test_every_uvmloan_command_line_parses() -> None:
    from uvmloan.cli import _commands as plugin_commands

    plugins = plugin_commands()
    ap, _ = _parser(plugins)
    seen = set()
    for words in _commands():
        if words[:3] == ["python", "-m", "uvmloan"]:
            args = ap.parse_args(words[3:])  # SystemExit(2) on a bad example
            assert args.cmd in ("tour", "compare", *plugins)
            seen.add(args.cmd)
    assert seen >= {"demo", "compare", "transfer"}


def test_install_extras_and_test_command_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for words in _commands():
        for w in words:
            m = re.fullmatch(r"\.\[(\w+)\]", w)
            if m:
                assert m.group(1) in extras, w
    assert ["python", "-m", "pytest"] in _commands()


def test_relative_links_point_at_files() -> None:
    links = re.findall(r"\]\(([^)#:]+)\)", README)
    assert links
    for link in links:
        assert (ROOT / link).exists(), link
