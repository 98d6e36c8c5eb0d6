"""Profiles as TOML files: loading, ``extends``, and where each value came from.

A profile file gives ``name``, ``description``, optionally ``extends = "other"``
(a shipped profile), the profile's switches at the top level and the cost and
NIC figures in ``[costs]`` and ``[nic]``.  A file without ``extends`` must set
every field; one with ``extends`` changes only what it names, checked by the
same code as ``get_profile``'s keyword overrides.  The comment on a key's
line, or the comment lines just above it, is that value's source; ``sources``
keeps it with the file, for ``uvmloan profiles show``.

The shipped profiles are ``uvmloan/profiles/*.toml``, read through
``importlib.resources`` so an installed wheel finds them.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import attrs

from .profile import PROFILES, CostModel, NicModel, Profile, apply_overrides

#: The tables a profile file may have, and the class each one fills.
TABLES: dict[str, type[Any]] = {"costs": CostModel, "nic": NicModel}
_HEADER = ("name", "description", "extends")


@attrs.frozen
class FieldSource:
    """One resolved field: its value, the comment that explains it, the file."""

    value: Any
    comment: str
    file: str


#: Where each field of each shipped profile comes from: profile name ->
#: {"tp_maxva" or "costs.copy_bw": FieldSource}.
SOURCES: dict[str, dict[str, FieldSource]] = {}


def _strip_comment(line: str) -> tuple[str, str]:
    """Split ``line`` at a ``#`` outside a string: (code, comment text)."""
    quote = ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#":
            return line[:i], line[i + 1 :].strip()
        i += 1
    return line, ""


_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")
_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")


def comments(text: str) -> dict[str, str]:
    """The comment of every key: ``{"tp_maxva": ..., "costs.copy_bw": ...}``.

    A key's comment is the run of comment lines right above it (no blank line
    between) followed by the comment at the end of its own line.
    """
    out: dict[str, str] = {}
    table = ""
    pending: list[str] = []
    for raw in text.splitlines():
        code, comment = _strip_comment(raw)
        if not code.strip():
            if comment:
                pending.append(comment)
            else:
                pending = []
            continue
        m = _TABLE.match(code)
        if m:
            table = m.group(1)
            pending = []
            continue
        k = _KEY.match(code)
        if k:
            key = f"{table}.{k.group(1)}" if table else k.group(1)
            out[key] = " ".join([*pending, comment]).strip()
        pending = []
    return out


def _read(where: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{where}: not valid TOML ({e})") from None


def _flat(data: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for k, v in data.items():
        if k in TABLES and isinstance(v, Mapping):
            for sk, sv in v.items():
                yield f"{k}.{sk}", sv
        elif k not in _HEADER:
            yield k, v


def _all_fields() -> list[str]:
    keys = []
    for f in attrs.fields(Profile):
        if f.name in TABLES:
            keys += [f"{f.name}.{s.name}" for s in attrs.fields(TABLES[f.name])]
        elif f.name != "name":
            keys.append(f.name)
    return keys


def resolve(
    where: str,
    text: str,
    known: Mapping[str, Profile],
    known_sources: Mapping[str, Mapping[str, FieldSource]],
) -> tuple[Profile, dict[str, FieldSource]]:
    """Build the profile one file describes, with the source of every field.

    ``known`` are the profiles ``extends`` may name.  Raises ValueError or
    TypeError naming ``where``, the field and the valid choices.
    """
    data = _read(where, text)
    for key in ("name", "description"):
        if key not in data:
            raise ValueError(
                f"{where}: missing {key} (every profile file has name and description)"
            )
        if not isinstance(data[key], str):
            raise TypeError(f"{where}: {key} must be a string, not {type(data[key]).__name__}")
    tables = [k for k, v in data.items() if isinstance(v, Mapping)]
    bad = [t for t in tables if t not in TABLES]
    if bad:
        raise ValueError(
            f"{where}: unknown table [{bad[0]}]; a profile file has the tables "
            + ", ".join(f"[{t}]" for t in TABLES)
        )
    notes = comments(text)
    parent = data.get("extends")
    if parent is None:
        missing = [k for k in _all_fields() if k not in dict(_flat(data)) and k != "description"]
        if missing:
            raise ValueError(
                f"{where}: a profile without extends must set every field; missing: "
                + ", ".join(missing)
            )
        base = Profile(name=data["name"])
        sources: dict[str, FieldSource] = {}
    else:
        if not isinstance(parent, str):
            raise TypeError(f"{where}: extends must be a profile name, not {type(parent).__name__}")
        if parent not in known:
            names = ", ".join(sorted(known)) or "(none)"
            raise ValueError(
                f"{where}: extends {parent!r}: unknown profile; known profiles: {names}"
            )
        base = known[parent]
        sources = dict(known_sources.get(parent, {}))
    overrides = {k: v for k, v in data.items() if k != "extends"}
    prof = apply_overrides(base, overrides, where)
    for key, value in _flat(data):
        sources[key] = FieldSource(value, notes.get(key, ""), where)
    sources["description"] = FieldSource(data["description"], notes.get("description", ""), where)
    return prof, sources


def _shipped() -> Traversable:
    return files("uvmloan") / "profiles"


def shipped_files() -> dict[str, Traversable]:
    """The shipped profile files by stem (``netbsd-10`` -> its file)."""
    return {
        t.name.removesuffix(".toml"): t
        for t in _shipped().iterdir()
        if t.name.endswith(".toml") and t.is_file()
    }


def load_shipped() -> dict[str, Profile]:
    """Every shipped profile, ``extends`` resolved in dependency order."""
    texts = {stem: t.read_text(encoding="utf-8") for stem, t in shipped_files().items()}
    out: dict[str, Profile] = {}
    pending = dict(texts)
    while pending:
        progress = False
        for stem, text in list(pending.items()):
            where = f"uvmloan/profiles/{stem}.toml"
            parent = _read(where, text).get("extends")
            if parent is not None and parent not in out:
                if parent not in texts:
                    names = ", ".join(sorted(texts))
                    raise ValueError(
                        f"{where}: extends {parent!r}: unknown profile; known profiles: {names}"
                    )
                continue
            prof, src = resolve(where, text, out, SOURCES)
            if prof.name != stem:
                raise ValueError(f"{where}: name {prof.name!r} must be the file's name {stem!r}")
            out[stem] = prof
            SOURCES[stem] = src
            del pending[stem]
            progress = True
        if not progress:
            raise ValueError(f"profiles {', '.join(sorted(pending))}: extends forms a cycle")
    return out


def load_profile_sources(path: str | Path) -> tuple[Profile, dict[str, FieldSource]]:
    """A user's profile file, and where each of its fields comes from."""
    p = Path(path)
    where = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{where}: no such profile file") from None
    except IsADirectoryError:
        raise ValueError(f"{where}: is a directory, not a profile file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not a text file (a profile is TOML)") from None
    except OSError as e:
        raise ValueError(f"{where}: cannot read it ({e.strerror or e})") from None
    return resolve(where, text, PROFILES, SOURCES)


def load_profile(path: str | Path) -> Profile:
    """The profile a TOML file describes (``extends`` names a shipped profile)."""
    return load_profile_sources(path)[0]


def profile_sources(profile: str | Path) -> tuple[Profile, dict[str, FieldSource]]:
    """A shipped profile (by name) or a file, with the source of every field."""
    if isinstance(profile, str) and profile in PROFILES:
        return PROFILES[profile], dict(SOURCES[profile])
    if isinstance(profile, str) and not profile.endswith(".toml"):
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown profile {profile!r}; known profiles: {known}")
    return load_profile_sources(profile)


__all__ = [
    "SOURCES",
    "TABLES",
    "FieldSource",
    "comments",
    "load_profile",
    "load_profile_sources",
    "load_shipped",
    "profile_sources",
    "resolve",
    "shipped_files",
]
