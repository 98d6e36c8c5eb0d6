"""cffi build script for ``uvmloan._physmem`` (API mode, out-of-line).

Used by ``setup.py`` (``cffi_modules=["cext/build_physmem.py:ffibuilder"]``)
and compatible with ``cffi-gen-src exec-python``.  The cdef is the section of
``physmem.h`` between the ``BEGIN CDEF`` / ``END CDEF`` markers, so the header
is the single source of the C API.

Environment switches (all read at build time):

``UVMLOAN_OPTIONAL_EXT=1``
    a failed compile does not fail the install (the pure-Python backend is
    used instead).  Default: strict, a compile error fails ``pip install``.
``UVMLOAN_SANITIZE=address``
    AddressSanitizer build (``-fsanitize=address -fno-omit-frame-pointer -O1
    -g -UNDEBUG``, also on the link line); run it with libasan preloaded
    (see ``.ci/asan``).
``UVMLOAN_NATIVE=1``
    add ``-march=native`` (local builds only: the binary may not run on
    another CPU).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = HERE / "physmem.h"
SOURCE = HERE / "physmem.c"

BEGIN = "/* BEGIN CDEF */"
END = "/* END CDEF */"


def read_cdef(header: Path = HEADER) -> str:
    """The cdef section of ``physmem.h``."""
    text = header.read_text(encoding="utf-8")
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END)]


def _rel(path: Path) -> str:
    # setuptools wants sources relative to the project (the build's cwd).
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows); absolute is all we have
        return str(path)


def build_flags(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Keyword arguments for ``set_source`` (passed on to the Extension)."""
    compile_args = ["-O3", "-std=c11", "-Wall", "-Wextra"]
    link_args: list[str] = []
    if env.get("UVMLOAN_NATIVE") == "1":
        compile_args.append("-march=native")
    sanitize = env.get("UVMLOAN_SANITIZE", "")
    if sanitize:
        if sanitize != "address":
            raise SystemExit(f"UVMLOAN_SANITIZE={sanitize!r}: only 'address' is supported")
        asan = ["-fsanitize=address", "-fno-omit-frame-pointer"]
        compile_args += [*asan, "-O1", "-g", "-UNDEBUG"]
        link_args += asan
    kwargs: dict[str, Any] = {
        "sources": [_rel(SOURCE)],
        "include_dirs": [_rel(HERE)],
        "depends": [_rel(HEADER)],
        "extra_compile_args": compile_args,
        "extra_link_args": link_args,
    }
    if env.get("UVMLOAN_OPTIONAL_EXT") == "1":
        kwargs["optional"] = True
    return kwargs


# The entry points are short (a page copy is ~100 ns) and the model is single
# threaded, so the wrappers keep the GIL instead of releasing and re-taking it
# around every call (cffi's default): that saves ~70 ns per call, a third of
# the call overhead, and it means no other Python thread can close an arena
# while a call into it runs.  The preamble comes after Python.h and before
# the generated wrappers, which are the only users of these two macros there.
PREAMBLE = """
#include "physmem.h"
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
"""

ffibuilder = FFI()
ffibuilder.cdef(read_cdef())
ffibuilder.set_source("uvmloan._physmem", PREAMBLE, **build_flags())

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
