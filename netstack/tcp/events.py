"""The vocabulary of the TCP core: flags, states, timers, events in, actions out.

Everything here is a frozen attrs value (h11 style): the socket glue builds
events, hands them to ``TCPConnection.handle`` and acts on the actions it
gets back.  Flag and state values are NetBSD's (``sys/netinet/tcp.h``,
``sys/netinet/tcp_fsm.h``), so a ``Transmit.flags`` byte goes into the wire
header unchanged.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

# sys/netinet/tcp.h: th_flags bits (RFC 9293 3.1).
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PUSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20
_ALL_FLAGS = 0xFF

TCP_MAXWIN = 65535  # largest value of the 16-bit window field (tcp.h)
TCP_MAX_WINSHIFT = 14  # RFC 7323 2.3: the shift is capped at 14 (tcp.h)


class TCPState(enum.IntEnum):
    """RFC 9293 3.3.2 states with the numbers of NetBSD's tcp_fsm.h."""

    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    CLOSE_WAIT = 5
    FIN_WAIT_1 = 6
    CLOSING = 7
    LAST_ACK = 8
    FIN_WAIT_2 = 9
    TIME_WAIT = 10


class TimerKind(enum.Enum):
    """The per-connection timers: NetBSD's four TCPT_* callouts plus the delayed ACK."""

    REXMT = "rexmt"  # TCPT_REXMT: retransmission (RFC 6298)
    PERSIST = "persist"  # TCPT_PERSIST: zero-window probes
    KEEP = "keep"  # TCPT_KEEP: here only the connection-establishment limit
    TWOMSL = "2msl"  # TCPT_2MSL: TIME_WAIT
    DELACK = "delack"  # t_delack_ch: the delayed-ACK callout

    # Members are singletons compared by identity, so identity hashing is
    # exact; Enum's own __hash__ (hash of the name, in Python) was a visible
    # share of every timer lookup on the per-segment path.
    __hash__ = object.__hash__


# ---------------------------------------------------------------- validation


def _u32(_i: object, a: attrs.Attribute[Any], v: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 32:
        raise ValueError(f"{a.name} must be an int in [0, 2**32), got {v!r}")


def _u16(_i: object, a: attrs.Attribute[Any], v: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFF:
        raise ValueError(f"{a.name} must be an int in [0, 65535], got {v!r}")


def _opt_u16(_i: object, a: attrs.Attribute[Any], v: int | None) -> None:
    if v is not None:
        _u16(_i, a, v)


def _opt_u8(_i: object, a: attrs.Attribute[Any], v: int | None) -> None:
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFF):
        raise ValueError(f"{a.name} must be None or an int in [0, 255], got {v!r}")


def _flags(_i: object, a: attrs.Attribute[Any], v: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _ALL_FLAGS:
        raise ValueError(f"{a.name} must be a flags byte in [0, 255], got {v!r}")


def _nonneg(_i: object, a: attrs.Attribute[Any], v: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{a.name} must be a non-negative int, got {v!r}")


def _positive(_i: object, a: attrs.Attribute[Any], v: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"{a.name} must be a positive int, got {v!r}")


# ------------------------------------------------------------------ segments


@attrs.frozen(slots=True)
class Segment:
    """A TCP segment as the core sees it: header fields, options, payload length.

    ``wnd`` is the 16-bit field as sent (unscaled).  ``payload`` is whatever
    the glue uses to carry the bytes (an mbuf chain); the core stores it and
    hands it back in ``Deliver`` but never looks into it.
    """

    seq: int = attrs.field(validator=_u32)
    ack: int = attrs.field(validator=_u32)
    flags: int = attrs.field(validator=_flags)
    wnd: int = attrs.field(validator=_u16)
    mss: int | None = attrs.field(default=None, validator=_opt_u16)
    wscale: int | None = attrs.field(default=None, validator=_opt_u8)
    payload_len: int = attrs.field(default=0, validator=_nonneg)
    payload: object = None

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload plus one for each of SYN and FIN (RFC 9293 3.4)."""
        f = self.flags
        return self.payload_len + (1 if f & TH_SYN else 0) + (1 if f & TH_FIN else 0)


_new = object.__new__


def wire_segment(
    seq: int, ack: int, flags: int, wnd: int, mss: int | None, wscale: int | None,
    payload_len: int, payload: object,
) -> Segment:
    """A ``Segment`` from fields a header parser already range-checked.

    The kernel's glue builds one per arriving segment from ``parse_tcp``'s
    result; running the field validators again would check what the parser
    guarantees, at twice the cost of building the value.
    """
    s = _new(Segment)
    _seg_seq(s, seq)
    _seg_ack(s, ack)
    _seg_flags(s, flags)
    _seg_wnd(s, wnd)
    _seg_mss(s, mss)
    _seg_wscale(s, wscale)
    _seg_payload_len(s, payload_len)
    _seg_payload(s, payload)
    return s


# The slot descriptors' setters of Segment's fields, for wire_segment: a
# frozen class refuses setattr, and calling the slot's own __set__ is
# cheaper than object.__setattr__ looking the slot up by name each time.
_seg_seq, _seg_ack, _seg_flags, _seg_wnd, _seg_mss, _seg_wscale, _seg_payload_len, _seg_payload = (
    getattr(Segment, a.name).__set__ for a in attrs.fields(Segment)
)


# -------------------------------------------------------------------- events


@attrs.frozen(slots=True)
class ActiveOpen:
    """connect(2): send a SYN (PRU_CONNECT)."""


@attrs.frozen(slots=True)
class PassiveOpen:
    """listen(2) for this connection block: wait in LISTEN for a SYN."""


@attrs.frozen(slots=True)
class SegmentArrived:
    """tcp_input: a segment for this connection came off the wire (checksum good)."""

    seg: Segment = attrs.field(validator=attrs.validators.instance_of(Segment))


@attrs.frozen(slots=True)
class SendQueued:
    """PRU_SEND: the socket appended ``nbytes`` to its send buffer."""

    nbytes: int = attrs.field(validator=_positive)


@attrs.frozen(slots=True)
class ReceiveRead:
    """PRU_RCVD: the user read ``nbytes`` out of the receive buffer."""

    nbytes: int = attrs.field(validator=_positive)


@attrs.frozen(slots=True)
class UserClose:
    """PRU_SHUTDOWN / close: no more data will be queued; send a FIN after it.

    ``cantrcvmore`` says the socket can no longer receive either (close(2)
    rather than shutdown(SHUT_WR): NetBSD's SS_CANTRCVMORE); then FIN_WAIT_2
    is bounded by tcp_maxidle instead of lasting until the peer's FIN.
    """

    cantrcvmore: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


@attrs.frozen(slots=True)
class UserAbort:
    """PRU_ABORT (or close with a zero linger): drop with RST."""


@attrs.frozen(slots=True)
class TimerExpired:
    """The glue's callout for ``kind`` fired (at the time given to ``handle``)."""

    kind: TimerKind = attrs.field(validator=attrs.validators.instance_of(TimerKind))


Event = (
    ActiveOpen
    | PassiveOpen
    | SegmentArrived
    | SendQueued
    | ReceiveRead
    | UserClose
    | UserAbort
    | TimerExpired
)

# ------------------------------------------------------------------- actions


@attrs.frozen(slots=True)
class Transmit:
    """Send one segment.

    ``data_offset`` counts bytes from the first unacknowledged byte of the
    send buffer (what ``DataAcked`` has not yet dropped); the glue builds the
    payload with ``m_copym(so_snd, data_offset, data_len)``.  ``retransmit``
    is true when any of the segment's sequence space was sent before.
    """

    seq: int
    ack: int
    flags: int
    wnd: int
    mss: int | None = None
    wscale: int | None = None
    data_offset: int = 0
    data_len: int = 0
    retransmit: bool = False


# Transmit's slot setters, for transmit() (as Segment's for wire_segment).
(_tx_seq, _tx_ack, _tx_flags, _tx_wnd, _tx_mss, _tx_wscale, _tx_data_offset, _tx_data_len,
 _tx_retransmit) = (getattr(Transmit, a.name).__set__ for a in attrs.fields(Transmit))


def transmit(
    seq: int, ack: int, flags: int, wnd: int, mss: int | None, wscale: int | None,
    data_offset: int, data_len: int, retransmit: bool,
) -> Transmit:
    """``Transmit(...)`` with every field given, for tcp_output's one per
    segment: the same frozen value, built through the slot setters rather
    than attrs' __init__ (a third cheaper for nine fields)."""
    t = _new(Transmit)
    _tx_seq(t, seq)
    _tx_ack(t, ack)
    _tx_flags(t, flags)
    _tx_wnd(t, wnd)
    _tx_mss(t, mss)
    _tx_wscale(t, wscale)
    _tx_data_offset(t, data_offset)
    _tx_data_len(t, data_len)
    _tx_retransmit(t, retransmit)
    return t


@attrs.frozen(slots=True)
class DataAcked:
    """``nbytes`` at the front of the send buffer are acknowledged: sbdrop them."""

    nbytes: int


@attrs.frozen(slots=True)
class Deliver:
    """In-order data: drop ``skip`` bytes from ``payload``, append ``length`` to so_rcv."""

    payload: object
    skip: int
    length: int


@attrs.frozen(slots=True)
class SetTimer:
    """(Re)arm the callout ``kind`` to fire at absolute time ``when`` (ns)."""

    kind: TimerKind
    when: int


@attrs.frozen(slots=True)
class CancelTimer:
    """Disarm the callout ``kind``."""

    kind: TimerKind


@attrs.frozen(slots=True)
class Established:
    """The connection reached ESTABLISHED (soisconnected)."""


@attrs.frozen(slots=True)
class PeerClosed:
    """The peer's FIN arrived in sequence: end of file (socantrcvmore)."""


@attrs.frozen(slots=True)
class Closed:
    """The connection block is gone (tcp_close); ``errno`` is so_error or None."""

    errno: int | None


Action = Transmit | DataAcked | Deliver | SetTimer | CancelTimer | Established | PeerClosed | Closed
