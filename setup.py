"""Build hook for the C extension (everything else is in pyproject.toml).

cffi compiles ``uvmloan._physmem`` against the stable ABI: its
``_cffi_include.h`` defines ``Py_LIMITED_API`` and its setuptools hook sets
``py_limited_api=True`` on the Extension (hence ``_physmem.abi3.so``), except
on debug and free-threaded interpreters.  Only when that holds is the wheel
tagged abi3 (cp311-abi3: one wheel for CPython 3.11 and later).
"""

import platform
import sys
import sysconfig

from setuptools import setup


def _limited_api() -> bool:
    return (
        platform.python_implementation() == "CPython"
        and not hasattr(sys, "gettotalrefcount")  # debug build
        and not sysconfig.get_config_var("Py_GIL_DISABLED")  # free-threaded
    )


options = {"bdist_wheel": {"py_limited_api": "cp311"}} if _limited_api() else {}

setup(cffi_modules=["cext/build_physmem.py:ffibuilder"], options=options)
