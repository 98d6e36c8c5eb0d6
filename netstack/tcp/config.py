"""Per-connection configuration (TCPConfig) and counters (TCPStats).

Defaults are NetBSD's; each field names the variable or constant it models
(see specs/tcp.md for the sources and revisions).
"""

from __future__ import annotations

from typing import Any

import attrs

from .events import TCP_MAX_WINSHIFT, TCP_MAXWIN

MS = 1_000_000
S = 1_000_000_000


def _int_in(lo: int, hi: int) -> Any:
    def check(_i: object, a: attrs.Attribute[Any], v: int) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"TCPConfig.{a.name} must be an int in [{lo}, {hi}], got {v!r}")

    return check


def _opt_wscale(_i: object, a: attrs.Attribute[Any], v: int | None) -> None:
    if v is not None:
        _int_in(0, TCP_MAX_WINSHIFT)(_i, a, v)


_NS = _int_in(0, 1 << 62)
_POS_NS = _int_in(1, 1 << 62)


@attrs.frozen(kw_only=True)
class TCPConfig:
    """What one connection is configured with (sysctls, socket options, route)."""

    # MSS we advertise and the largest segment we send: a 1500-byte MTU less
    # 20 bytes of IPv4 and 20 of TCP header (tcp_mss_to_advertise).
    mss: int = attrs.field(default=1460, validator=_int_in(216, 65495))
    # The peer's MSS when its SYN has no MSS option: tcp_mssdflt = TCP_MSS 536.
    mss_default: int = attrs.field(default=536, validator=_int_in(216, 65495))
    # tcp_do_win_scale: offer RFC 7323 window scaling on SYNs.
    window_scaling: bool = True
    # The shift we request; None picks the smallest that lets TCP_MAXWIN << shift
    # cover rcvbuf (the request_r_scale loop of tcp_usrreq.c / syn_cache_add).
    wscale: int | None = attrs.field(default=None, validator=_opt_wscale)
    # tcp_sendspace / tcp_recvspace (32 KiB each): so_snd / so_rcv sb_hiwat.
    sndbuf: int = attrs.field(default=32 * 1024, validator=_int_in(1, 1 << 30))
    rcvbuf: int = attrs.field(default=32 * 1024, validator=_int_in(1, 1 << 30))
    # tcp_delack_ticks = TCP_DELACK_TICKS = hz / PR_FASTHZ: 200 ms.
    delack_ns: int = attrs.field(default=200 * MS, validator=_POS_NS)
    # TCPTV_SRTTDFLT (initial RTO, RFC 6298 2.1), TCPTV_MIN, TCPTV_REXMTMAX.
    rto_initial_ns: int = attrs.field(default=1 * S, validator=_POS_NS)
    rto_min_ns: int = attrs.field(default=1 * S, validator=_POS_NS)
    rto_max_ns: int = attrs.field(default=64 * S, validator=_POS_NS)
    # RFC 6298's clock granularity G (the model's clock is exact nanoseconds).
    clock_granularity_ns: int = attrs.field(default=0, validator=_NS)
    # TCP_MAXRXTSHIFT: retransmissions before the connection is dropped.
    maxrxtshift: int = attrs.field(default=12, validator=_int_in(1, 64))
    # tcprexmtthresh: duplicate ACKs that trigger fast retransmit.
    rexmtthresh: int = attrs.field(default=3, validator=_int_in(1, 64))
    # tcp_init_win (TCP_INIT_WIN 4): initial window via TCP_INITIAL_WINDOW.
    init_win: int = attrs.field(default=4, validator=_int_in(0, 10))
    # tcp_do_abc / tcp_abc_aggressive: RFC 3465 byte counting, L = 2*SMSS.
    abc: bool = True
    abc_aggressive: bool = True
    # tcp_ack_on_push: ACK at once on PSH (off by default).
    ack_on_push: bool = False
    # TCP_NODELAY: no Nagle.
    nodelay: bool = False
    # TCPTV_MSL (30 s); TIME_WAIT lasts 2 * msl_ns.
    msl_ns: int = attrs.field(default=30 * S, validator=_POS_NS)
    # TCPTV_KEEP_INIT: connection-establishment limit.
    keepinit_ns: int = attrs.field(default=75 * S, validator=_POS_NS)
    # t_keepintvl (TCPTV_KEEPINTVL 75 s) and t_maxidle = TCPTV_KEEPCNT (8) *
    # t_keepintvl: how long FIN_WAIT_2 may stay idle after close(2).
    keepintvl_ns: int = attrs.field(default=75 * S, validator=_POS_NS)
    maxidle_ns: int = attrs.field(default=8 * 75 * S, validator=_POS_NS)
    # TCPTV_PERSMIN / TCPTV_PERSMAX: bounds of the persist interval.
    persmin_ns: int = attrs.field(default=5 * S, validator=_POS_NS)
    persmax_ns: int = attrs.field(default=60 * S, validator=_POS_NS)
    # Initial send sequence number (the glue picks it; the core has no entropy).
    iss: int = attrs.field(default=0, validator=_int_in(0, (1 << 32) - 1))

    def __attrs_post_init__(self) -> None:
        if self.rto_min_ns > self.rto_max_ns:
            raise ValueError(
                f"TCPConfig.rto_min_ns ({self.rto_min_ns}) exceeds rto_max_ns ({self.rto_max_ns})"
            )
        if self.persmin_ns > self.persmax_ns:
            raise ValueError(
                f"TCPConfig.persmin_ns ({self.persmin_ns}) exceeds persmax_ns ({self.persmax_ns})"
            )

    @property
    def request_r_scale(self) -> int:
        """The window shift this end asks for on its SYN."""
        if self.wscale is not None:
            return self.wscale
        shift = 0
        while shift < TCP_MAX_WINSHIFT and (TCP_MAXWIN << shift) < self.rcvbuf:
            shift += 1
        return shift


@attrs.define(slots=True)
class TCPStats:
    """Per-connection counters, named after NetBSD's tcps_* (TCP_STAT_*)."""

    sndtotal: int = 0  # segments sent
    sndpack: int = 0  # data segments sent
    sndbyte: int = 0  # data bytes sent (first transmissions)
    sndrexmitpack: int = 0  # data segments retransmitted
    sndrexmitbyte: int = 0  # data bytes retransmitted
    sndacks: int = 0  # pure ACKs sent
    sndprobe: int = 0  # window probes sent
    sndwinup: int = 0  # pure window updates sent
    sndctrl: int = 0  # SYN/FIN/RST segments sent
    delack: int = 0  # ACKs sent by the delayed-ACK timer
    rcvtotal: int = 0  # segments received
    rcvpack: int = 0  # in-sequence data segments
    rcvbyte: int = 0  # in-sequence data bytes
    rcvoopack: int = 0  # out-of-order data segments queued
    rcvoobyte: int = 0  # out-of-order bytes queued
    rcvduppack: int = 0  # completely duplicate segments
    rcvpartduppack: int = 0  # partly duplicate segments
    rcvpackafterwin: int = 0  # segments with data beyond the window
    rcvwinprobe: int = 0  # zero-window probes received
    rcvdupack: int = 0  # duplicate ACKs
    rcvacktoomuch: int = 0  # ACKs for unsent data
    rcvackpack: int = 0  # ACKs that acknowledged new data
    rcvackbyte: int = 0  # bytes so acknowledged
    rcvwinupd: int = 0  # pure window updates received
    predack: int = 0  # ACKs taken by header prediction
    preddat: int = 0  # data segments taken by header prediction
    fastrexmt: int = 0  # fast retransmits (3 duplicate ACKs)
    partialack: int = 0  # NewReno partial ACKs
    rexmttimeo: int = 0  # retransmission timer expiries
    persisttimeo: int = 0  # persist timer expiries
    timeoutdrop: int = 0  # connections dropped after TCP_MAXRXTSHIFT
    keeptimeo: int = 0  # connection-establishment timeouts
    rttupdated: int = 0  # RTT samples taken
    challengeack: int = 0  # RFC 5961 challenge ACKs
    sndrst: int = 0  # RSTs generated
    rcvrst: int = 0  # acceptable RSTs that closed the connection
    drops: int = 0  # segments dropped without effect

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)
