"""The reply to a segment for which no connection exists (RFC 9293 3.10.7.1).

NetBSD's tcp_input reaches ``dropwithreset`` when no pcb matches; the glue
calls this to build that RST without a connection block.
"""

from __future__ import annotations

from .events import TH_ACK, TH_RST, Segment, Transmit
from .seq import seq_add


def respond_to_closed(seg: Segment) -> Transmit | None:
    """RST for ``seg`` arriving at CLOSED, or None when no reply is due (an RST)."""
    if not isinstance(seg, Segment):
        raise TypeError(f"seg must be a Segment, not {type(seg).__name__}")
    if seg.flags & TH_RST:
        return None
    if seg.flags & TH_ACK:
        return Transmit(seg.ack, 0, TH_RST, 0)
    return Transmit(0, seq_add(seg.seq, seg.seg_len), TH_RST | TH_ACK, 0)
