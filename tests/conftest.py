"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from uvmloan.physmem import available_backends


@pytest.fixture(params=available_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """Every physmem backend this build has ("c" and/or "python")."""
    name: str = request.param
    return name
