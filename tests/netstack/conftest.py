"""netstack test options: ``slow`` tests (the 16 MiB transfers) run only on request.

They run with ``UVMLOAN_SLOW=1`` or the deep hypothesis profile
(``UVMLOAN_HYPOTHESIS_PROFILE=deep``), or when selected with ``-m slow``.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    want = os.environ.get("UVMLOAN_SLOW") == "1" or (
        os.environ.get("UVMLOAN_HYPOTHESIS_PROFILE") == "deep"
    )
    if want or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: set UVMLOAN_SLOW=1 or run -m slow")
    for item in items:
        if "slow" in item.keywords and item.path.is_relative_to(os.path.dirname(__file__)):
            item.add_marker(skip)
