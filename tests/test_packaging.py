"""Packaging metadata and the files a build needs, checked statically (the
build itself, sdist and wheel installed in fresh venvs, is .ci/package)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import uvmloan

ROOT = Path(__file__).resolve().parent.parent


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def test_licence_is_the_spdx_string_and_the_file_matches() -> None:
    p = _project()
    assert p["license"] == "BSD-2-Clause"
    assert p["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 2-Clause License")
    # Two conditions; the third clause of BSD-3 ("Neither the name ...") is absent.
    assert "1. Redistributions of source code" in text and "2. Redistributions in binary" in text
    assert "3." not in text and "Neither the name" not in text
    # PEP 639: a licence expression excludes licence classifiers.
    assert not [c for c in p["classifiers"] if c.startswith("License ::")]


def test_metadata_claims_only_what_is_true() -> None:
    p = _project()
    assert p["version"] == uvmloan.__version__
    assert "urls" not in p  # no project URLs until there are real ones
    lo = re.fullmatch(r">=3\.(\d+)", p["requires-python"])
    assert lo is not None
    pyver = re.compile(r"Programming Language :: Python :: 3\.\d+")
    versions = [c for c in p["classifiers"] if pyver.fullmatch(c)]
    assert versions and all(int(v.rsplit(".", 1)[1]) >= int(lo.group(1)) for v in versions)
    assert "Typing :: Typed" in p["classifiers"] and (ROOT / "uvmloan" / "py.typed").exists()


def test_ci_installs_the_extra_that_has_its_tools() -> None:
    dev = " ".join(_project()["optional-dependencies"]["dev"])
    for tool in ("ruff", "mypy", "pytest", "build", "matplotlib"):
        assert re.search(rf"\b{tool}\b", dev), tool
    # In-place builds (.ci/asan) use the environment's setuptools, so the
    # dev extra needs the one the build system needs for license = "SPDX".
    build_req = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert "setuptools>=77" in build_req and "setuptools>=77" in dev
    run = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e '.[dev]'" in run
    for step in ("ruff check .", "mypy --strict", "bash .ci/package"):
        assert step in run, step


def test_the_sdist_manifest_carries_what_setup_py_builds_from() -> None:
    manifest = (ROOT / "MANIFEST.in").read_text()
    setup = (ROOT / "setup.py").read_text()
    scripts = re.findall(r'cffi_modules=\["([^":]+):', setup)
    assert scripts == ["cext/build_physmem.py"]
    build = (ROOT / scripts[0]).read_text()
    needed = [scripts[0], "cext/physmem.c", "cext/physmem.h"]
    assert '"physmem.c"' in build and '"physmem.h"' in build
    for f in [*needed, "LICENSE"]:
        assert re.search(rf"^include .*\b{re.escape(f)}\b", manifest, flags=re.M), f
        assert (ROOT / f).exists()
    # Compiled artefacts of a local build never ship in the sdist.
    assert "global-exclude *.so" in manifest


def test_the_wheel_is_tagged_abi3_only_for_a_limited_api_build() -> None:
    setup = (ROOT / "setup.py").read_text()
    assert '"py_limited_api": "cp311"' in setup
    assert "if _limited_api() else {}" in setup
    # cffi defines Py_LIMITED_API for the module it generates (the same
    # condition: a release CPython), which is what makes the abi3 tag true.
    import cffi

    include = (Path(cffi.__file__).parent / "_cffi_include.h").read_text()
    assert re.search(r"^#\s*define Py_LIMITED_API\b", include, flags=re.M)


def test_every_package_of_the_tree_is_in_the_wheel() -> None:
    # setuptools' explicit list: a subpackage missing from it is missing
    # from the wheel (netstack.tcp was: `uvmloan transfer` could not load).
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("uvmloan", "netstack")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
