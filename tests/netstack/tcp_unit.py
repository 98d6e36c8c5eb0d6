"""Helpers for driving one TCPConnection by hand in the unit tests."""

from __future__ import annotations

from typing import TypeVar

from netstack.tcp import (
    TH_ACK,
    TH_SYN,
    Action,
    ActiveOpen,
    Event,
    PassiveOpen,
    Segment,
    SegmentArrived,
    TCPConfig,
    TCPConnection,
    TCPState,
    Transmit,
)

A = TypeVar("A")

MS = 1_000_000
S = 1_000_000_000
ISS = 1000  # ours
PISS = 900_000  # the peer's


class Drive:
    """One connection plus the clock; ``ev``/``seg`` return its actions."""

    def __init__(self, cfg: TCPConfig | None = None) -> None:
        self.conn = TCPConnection(cfg or TCPConfig(iss=ISS))
        self.now = 0

    def ev(self, event: Event, at: int | None = None) -> list[Action]:
        if at is not None:
            self.now = at
        out = self.conn.handle(event, self.now)
        self.conn.check_invariants()
        return out

    def seg(
        self,
        seq: int,
        ack: int,
        flags: int = TH_ACK,
        wnd: int = 65535,
        n: int = 0,
        at: int | None = None,
        **kw: int | None,
    ) -> list[Action]:
        payload = ("seg", seq, n)
        s = Segment(seq, ack, flags, wnd, payload_len=n, payload=payload, **kw)
        return self.ev(SegmentArrived(s), at)


def tx(actions: list[Action]) -> list[Transmit]:
    return [a for a in actions if isinstance(a, Transmit)]


def of(actions: list[Action], cls: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, cls)]


def client(
    cfg: TCPConfig | None = None,
    *,
    peer_mss: int | None = 1460,
    peer_wscale: int | None = None,
    rtt: int = 100 * MS,
    wnd: int = 65535,
) -> Drive:
    """An ESTABLISHED active opener; the handshake took ``rtt``."""
    d = Drive(cfg)
    d.ev(ActiveOpen(), at=0)
    d.seg(PISS, ISS + 1, TH_SYN | TH_ACK, wnd, mss=peer_mss, wscale=peer_wscale, at=rtt)
    return d


def server(cfg: TCPConfig | None = None) -> Drive:
    """An ESTABLISHED passive opener (our ISS, the peer's PISS)."""
    d = Drive(cfg)
    d.ev(PassiveOpen(), at=0)
    d.seg(PISS, 0, TH_SYN, 65535, mss=1460, at=0)
    d.seg(PISS + 1, ISS + 1, TH_ACK, 65535, at=50 * MS)
    return d


def st(d: Drive) -> TCPState:
    """The connection's state (a call, so mypy does not narrow it across events)."""
    return d.conn.state
