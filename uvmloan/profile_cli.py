"""``uvmloan profiles``: list the shipped profiles, or show one field by field.

``uvmloan profiles`` (or ``profiles list``) prints each shipped profile's
name and description; ``profiles show NAME`` or ``profiles show FILE.toml``
prints every field of the resolved profile (``extends`` followed) with its
value, the comment that gives its source and the file it came from.  A
:class:`uvmloan.cli.Command`, built in like the research commands.  An
unknown name or a bad file is an argparse message naming the problem and
the valid choices, exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  uvmloan profiles                     the shipped profiles, one line each
  uvmloan profiles show netbsd-1.6     every field, its value and its source
  uvmloan profiles show my.toml        a file of your own (extends = "netbsd-10")

A profile file is TOML: name, description, optionally extends = "NAME", the
switches at the top level, [costs] and [nic] tables; specs/eras.md."""


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, int) and value >= 1 << 32:
        return f"{value:#x}"
    return str(value)


class ProfilesCommand:
    name = "profiles"
    help = "list the shipped profiles, or show one (or a TOML file) field by field"

    def add_arguments(self, p: argparse.ArgumentParser, size: Callable[[str], int]) -> None:
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        p.epilog = EPILOG
        p.usage = "uvmloan profiles [list | show NAME | show FILE]"
        sub = p.add_subparsers(dest="profiles_cmd", metavar="{list,show}")
        sub.add_parser("list", prog="uvmloan profiles list", help="names and one-line descriptions")
        s = sub.add_parser(
            "show",
            prog="uvmloan profiles show",
            help="every field of a profile with its value and source",
            description="Every field of the resolved profile (extends followed): value, "
            "the comment giving its source, and the file it came from.",
        )
        s.add_argument("profile", metavar="NAME|FILE", help="a shipped profile or a TOML file")
        self._show = s

    def check_arguments(self, p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        from .profile import PROFILES
        from .profile_toml import profile_sources

        if args.profiles_cmd != "show":
            return
        what = args.profile
        known = ", ".join(sorted(PROFILES))
        looks_like_file = what.endswith(".toml") or "/" in what or Path(what).exists()
        if what not in PROFILES and not looks_like_file:
            self._show.error(f"unknown profile {what!r}; known profiles: {known} (or a .toml file)")
        try:
            args.resolved = profile_sources(what if what in PROFILES else Path(what))
        except (ValueError, TypeError) as e:
            self._show.error(str(e))

    def run(self, args: argparse.Namespace) -> int:
        from .profile import list_profiles

        if args.profiles_cmd != "show":
            rows = list_profiles()
            width = max(len(n) for n, _ in rows)
            for name, desc in rows:
                print(f"{name:<{width}}  {desc}")
            return 0
        prof, sources = args.resolved
        print(f"profile {prof.name}: {prof.description}")
        for key in _keys(prof):
            value = _value(prof, key)
            src = sources.get(key)
            where = src.file if src is not None else "(class default)"
            note = src.comment if src is not None and src.comment else "(no comment)"
            print(f"  {key} = {_fmt(value)}")
            print(f"      {note}  [{where}]")
        return 0


def _keys(prof: Any) -> list[str]:
    import attrs

    from .profile_toml import TABLES

    keys = []
    for f in attrs.fields(type(prof)):
        if f.name in ("name", "description"):
            continue
        if f.name in TABLES:
            keys += [f"{f.name}.{s.name}" for s in attrs.fields(TABLES[f.name])]
        else:
            keys.append(f.name)
    return keys


def _value(prof: Any, key: str) -> Any:
    obj = prof
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


PROFILES_CMD = ProfilesCommand()
