"""The network stack's trace events, registered with the model's trace
reader (``uvmloan.trace.register_event``) so that ``read_jsonl`` and
``uvmloan trace summary|perfetto`` read a netstack host's trace.  Listed in
the ``uvmloan.events`` entry points (pyproject.toml); importing it
registers them."""

from __future__ import annotations

from uvmloan.trace import Event, register_event

from .socket import SosendCounter
from .soloan import SoLoanFree
from .zerocopy import ZcCompletion, ZcNoBufs, ZcPin, ZcUnpin
from .zerocopy_hazard import ZcTxModified

EVENTS: tuple[type[Event], ...] = (
    SosendCounter,
    SoLoanFree,
    ZcPin,
    ZcUnpin,
    ZcCompletion,
    ZcNoBufs,
    ZcTxModified,
)

for _cls in EVENTS:
    register_event(_cls)
