"""Experiment functions for tests/test_sweep.py (importable by dotted path,
so process pools and Dask workers can run them)."""

from __future__ import annotations

import random
from typing import Any

# test_sweep sets these: the point x that raises, and whether it interrupts
FAIL_AT: set[int] = set()
INTERRUPT_AT: set[int] = set()
CALLS: list[tuple[int, int]] = []


def draw(x: int, seed: int, scale: int = 1) -> dict[str, Any]:
    """A seeded experiment: the same (x, seed) always gives the same draw."""
    CALLS.append((x, seed))
    if x in INTERRUPT_AT:
        raise KeyboardInterrupt
    if x in FAIL_AT:
        raise ValueError(f"x = {x} is the bad point")
    rng = random.Random(f"{x}/{seed}")
    return {"draw": rng.randrange(1 << 30) * scale, "x_squared": x * x}


def returns_object(x: int) -> object:
    return object()
