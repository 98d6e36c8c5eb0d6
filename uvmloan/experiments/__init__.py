"""Experiments: when does lending pages beat copying them, and why.

Two kinds live here:

* the one-send cost comparison (:mod:`.sendcost`: ``send_cost``, ``sweep``,
  ``crossover``, ``table``, ``plot``), behind ``uvmloan compare``;
* reproductions of published results (:mod:`.repro`: ``reproduce``,
  ``reproductions``), behind ``uvmloan reproduce``.  The model's own
  (``shootdown_batching``) are here; the network stack registers the ones
  that need a whole TCP path through the ``uvmloan.reproductions`` entry
  points, and they are reachable here by name as well
  (``uvmloan.experiments.announcement_2002``) without this package
  importing the stack.
"""

from __future__ import annotations

from typing import Any

from .batching import shootdown_batching
from .repro import (
    Comparison,
    Reproduction,
    ReproductionResult,
    get_reproduction,
    reproduce,
    reproduction,
    reproductions,
)
from .sendcost import (
    COMPARE_SCHEMA,
    POLICIES,
    Policy,
    SendCost,
    _fmt_size,
    compare_record,
    crossover,
    figure,
    plot,
    send_cost,
    sweep,
    table,
)

__all__ = [
    "COMPARE_SCHEMA",
    "POLICIES",
    "Comparison",
    "Policy",
    "Reproduction",
    "ReproductionResult",
    "SendCost",
    "_fmt_size",
    "compare_record",
    "crossover",
    "figure",
    "get_reproduction",
    "plot",
    "reproduce",
    "reproduction",
    "reproductions",
    "send_cost",
    "shootdown_batching",
    "sweep",
    "table",
]


def __getattr__(name: str) -> Any:
    # A reproduction a layer above registered: its function, by its Python
    # name (the entry point's target), loaded on first use.
    for rep in reproductions().values():
        if rep.target.rpartition(":")[2] == name:
            return rep.load()
    raise AttributeError(f"module 'uvmloan.experiments' has no attribute {name!r}")
