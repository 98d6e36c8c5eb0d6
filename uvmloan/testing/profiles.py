"""Hypothesis settings profiles of the shipped state machines.

Each machine names its profiles by a short name ("ci", "deep") and registers
them under its own prefix ("pmap-ci", "loan-deep", ...) so that profiles of
the same short name cannot collide.  The environment variable
``UVMLOAN_HYPOTHESIS_PROFILE`` picks the short name for every machine::

    PMAP_SIZES = {"ci": (150, 30), "deep": (1500, 80)}
    settings = machine_settings("pmap", PMAP_SIZES)   # "pmap-ci" unless deep
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hypothesis import HealthCheck, settings
from hypothesis.errors import InvalidArgument

__all__ = ["PROFILE_ENV", "Sizes", "machine_settings", "register_profiles"]

PROFILE_ENV = "UVMLOAN_HYPOTHESIS_PROFILE"

Sizes = Mapping[str, tuple[int, int]]
"""Short profile name -> (``max_examples``, ``stateful_step_count``)."""


def register_profiles(prefix: str, sizes: Sizes) -> None:
    """Register "<prefix>-<short>" for every short name of ``sizes`` (those
    already registered are left alone): no deadline, the ``too_slow`` and
    ``filter_too_much`` health checks suppressed."""
    for short, (examples, steps) in sizes.items():
        name = f"{prefix}-{short}"
        try:
            settings.get_profile(name)
        except InvalidArgument:
            settings.register_profile(
                name,
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            )


def machine_settings(
    prefix: str, sizes: Sizes, name: str | None = None, *, default: str = "ci"
) -> settings:
    """The settings profile of one machine, registered first if need be.

    ``name`` (or else ``$UVMLOAN_HYPOTHESIS_PROFILE``, else ``default``) picks
    it, with or without the "<prefix>-"; a name ``sizes`` does not know
    means ``default``.
    """
    register_profiles(prefix, sizes)
    short = (name or os.environ.get(PROFILE_ENV) or default).removeprefix(f"{prefix}-")
    if short not in sizes:
        short = default
    return settings.get_profile(f"{prefix}-{short}")
