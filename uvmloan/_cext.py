"""The optional C extensions' import, in one place.

Each small C type the model uses (the PTE table, the page and anon words)
has a pure-Python twin; the twin is used with ``UVMLOAN_PUREPYTHON=1`` (the
C module is then not imported at all) or where an optional build
(``UVMLOAN_OPTIONAL_EXT=1``) left the extension out.  ``uvmloan.physmem``
chooses its backend itself, as it also keeps the import error for its
message.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["optional_c_module"]


def optional_c_module(name: str) -> ModuleType | None:
    """The extension ``uvmloan.<name>``, or None when the twin is to be used."""
    if os.environ.get("UVMLOAN_PUREPYTHON", "") == "1":
        return None
    try:
        return importlib.import_module(f"uvmloan.{name}")
    except ImportError:  # an optional build without it
        return None
