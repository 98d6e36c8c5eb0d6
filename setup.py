"""Build hook for the C extensions (everything else is in pyproject.toml).

cffi compiles ``uvmloan._physmem`` against the stable ABI: its
``_cffi_include.h`` defines ``Py_LIMITED_API`` and its setuptools hook sets
``py_limited_api=True`` on the Extension (hence ``_physmem.abi3.so``), except
on debug and free-threaded interpreters.  Only when that holds is the wheel
tagged abi3 (cp311-abi3: one wheel for CPython 3.11 and later).

``uvmloan._physmem_fast`` (``cext/physmem_fast.c``: ``copy_page`` and
``copy_pages`` without cffi's per-call argument conversion) is a plain
extension built with the same flags (``cext/build_physmem.py``) and, under
the same condition, against the same stable ABI.

``uvmloan._ptetable`` (``cext/ptetable.c``: a pmap's PTEs in 512-entry
page-table pages) is another plain extension, optional: without it
``uvmloan.ptetable`` uses its pure-Python twin.
"""

import importlib.util
import platform
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup


def _limited_api() -> bool:
    return (
        platform.python_implementation() == "CPython"
        and not hasattr(sys, "gettotalrefcount")  # debug build
        and not sysconfig.get_config_var("Py_GIL_DISABLED")  # free-threaded
    )


def _build_flags() -> dict[str, object]:
    spec = importlib.util.spec_from_file_location(
        "_uvmloan_build_physmem", Path(__file__).resolve().parent / "cext" / "build_physmem.py"
    )
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    flags: dict[str, object] = build.build_flags()
    return flags


def _extension(name: str, sources: list[str], **kw: object) -> Extension:
    """A plain (non-cffi) extension built with the cffi module's flags and,
    where the wheel is abi3, against the same stable ABI."""
    flags = _build_flags()
    limited = _limited_api()
    return Extension(
        name,
        sources=sources,
        extra_compile_args=flags["extra_compile_args"],
        extra_link_args=flags["extra_link_args"],
        define_macros=[("Py_LIMITED_API", "0x030B0000")] if limited else [],
        py_limited_api=limited,
        optional=flags.get("optional", False),
        **kw,
    )


def _fast_extension() -> Extension:
    return _extension(
        "uvmloan._physmem_fast",
        ["cext/physmem_fast.c", "cext/physmem.c"],
        include_dirs=["cext"],
        depends=["cext/physmem.h", "cext/pymodule.h"],
    )


def _ptetable_extension() -> Extension:
    return _extension("uvmloan._ptetable", ["cext/ptetable.c"], depends=["cext/pymodule.h"])


def _vmscalars_extension() -> Extension:
    return _extension("uvmloan._vmscalars", ["cext/vmscalars.c"], depends=["cext/pymodule.h"])


options = {"bdist_wheel": {"py_limited_api": "cp311"}} if _limited_api() else {}

setup(
    cffi_modules=["cext/build_physmem.py:ffibuilder"],
    ext_modules=[_fast_extension(), _ptetable_extension(), _vmscalars_extension()],
    options=options,
)
