"""TCPConnection: one connection block (struct tcpcb), sans-I/O.

``handle(event, now)`` is the only entry point.  It validates the event,
runs the NetBSD routine that event stands for (tcp_usrreq's PRU_* cases,
tcp_input, the tcp_timer_* callouts), and returns the actions in the order
the glue must apply them (a Transmit's ``data_offset`` is relative to the
send buffer as it is before any later DataAcked in the same list).  Timer
changes come last, one SetTimer/CancelTimer per timer whose deadline
changed during the call.
"""

from __future__ import annotations

import attrs

from . import cc, output
from .config import TCPConfig, TCPStats
from .events import (
    TCP_MAXWIN,
    TH_ACK,
    TH_RST,
    Action,
    ActiveOpen,
    CancelTimer,
    Closed,
    DataAcked,
    Deliver,
    Established,
    Event,
    PassiveOpen,
    PeerClosed,
    ReceiveRead,
    Segment,
    SegmentArrived,
    SendQueued,
    SetTimer,
    TCPState,
    TimerExpired,
    TimerKind,
    Transmit,
    UserAbort,
    UserClose,
)
from .input import HAVERCVDFIN_STATES, tcp_input
from .reass import ReassQueue
from .rtt import RTTEstimator
from .seq import SEQ_GT, SEQ_LEQ, SEQ_LT, seq_add, seq_sub

# sys/errno.h (NetBSD numbers; netstack.sockerr has the full table).
ECONNABORTED = 53
ECONNRESET = 54
ETIMEDOUT = 60
ECONNREFUSED = 61

_SYNCHRONIZED = frozenset(
    {
        TCPState.ESTABLISHED,
        TCPState.CLOSE_WAIT,
        TCPState.FIN_WAIT_1,
        TCPState.CLOSING,
        TCPState.LAST_ACK,
        TCPState.FIN_WAIT_2,
        TCPState.TIME_WAIT,
    }
)
# TCPS_HAVERCVDFIN (tcp_fsm.h), defined with the input path that tests it inline.
_HAVERCVDFIN = HAVERCVDFIN_STATES


_TIMER_ORDER = tuple(TimerKind)
# The states _check_event lets a SendQueued in.
_SENDQUEUED_STATES = frozenset(
    {TCPState.SYN_SENT, TCPState.SYN_RECEIVED, TCPState.ESTABLISHED, TCPState.CLOSE_WAIT}
)


class TCPInvariantError(AssertionError):
    """check_invariants found the block in a state NetBSD would KASSERT on."""


class TCPUsageError(ValueError):
    """An event the connection cannot take in its state (the glue's bug)."""


class TCPConnection:
    """struct tcpcb with NetBSD's field names; see specs/tcp.md."""

    def __init__(self, config: TCPConfig | None = None) -> None:
        if config is None:
            config = TCPConfig()
        if not isinstance(config, TCPConfig):
            raise TypeError(f"config must be a TCPConfig, not {type(config).__name__}")
        self.cfg = config
        self.stats = TCPStats()
        self.state = TCPState.CLOSED
        self.opened = False  # ActiveOpen/PassiveOpen seen
        self.closed = False  # Closed emitted: the block is dead
        self.nodelay = config.nodelay
        self.sb_hiwat_snd = config.sndbuf
        self.sb_hiwat_rcv = config.rcvbuf
        # Send sequence space (RFC 9293 3.3.1).
        self.iss = config.iss
        self.snd_una = self.snd_nxt = self.snd_max = config.iss
        self.snd_wnd = 0
        self.snd_wl1 = self.snd_wl2 = 0
        self.max_sndwnd = 0
        self.snd_recover = self.snd_high = config.iss
        # Receive sequence space.
        self.irs = 0
        self.rcv_nxt = self.rcv_adv = 0
        self.rcv_wnd = 0
        self.rcv_off = 0  # stream offset (bytes) of rcv_nxt: the reassembly key space
        # Options.
        self.t_ourmss = config.mss
        self.t_peermss = config.mss_default
        self.t_segsz = min(config.mss, config.mss_default)
        self.req_scale = config.window_scaling  # TF_REQ_SCALE
        self.rcvd_scale = False  # TF_RCVD_SCALE
        self.request_r_scale = config.request_r_scale if config.window_scaling else 0
        self.requested_s_scale = 0
        self.snd_scale = self.rcv_scale = 0
        # Congestion control.
        self.snd_cwnd = initial = cc.initial_window(config.init_win or 1, self.t_segsz)
        self.snd_cwnd = initial
        self.snd_ssthresh = TCP_MAXWIN << 14  # tcp_newtcpcb
        self.t_dupacks = 0
        self.t_partialacks = -1
        self.t_bytes_acked = 0
        # Timing.
        self.rtt = RTTEstimator(
            config.rto_initial_ns,
            config.rto_min_ns,
            config.rto_max_ns,
            config.clock_granularity_ns,
        )
        self.t_rxtshift = 0
        self.t_rxtcur = self.rtt.rto(0)
        self.t_rtttime: int | None = None
        self.t_rtseq = 0
        self.t_rcvtime = 0
        self.t_force = False
        # Flags (t_flags).
        self.acknow = False  # TF_ACKNOW
        self.delack = False  # TF_DELACK
        self.sentfin = False  # TF_SENTFIN
        self.syn_rexmt = False  # TF_SYN_REXMT
        self.close_pending = False  # UserClose seen in SYN_RECEIVED
        self.user_closed = False
        self.cantrcvmore = False  # SS_CANTRCVMORE: close(2), not just SHUT_WR
        self.passive = False
        # Buffers (the socket layer's counts, as the core needs them).
        self.sb_cc = 0  # so_snd.sb_cc: queued and not yet acknowledged
        self.so_rcv_cc = 0  # so_rcv.sb_cc: delivered and not yet read
        self.segq = ReassQueue()
        # Output of the current handle() call.
        self.now = 0
        self.timers: dict[TimerKind, int] = {}
        self._actions: list[Action] = []
        # deadline of each timer armed or disarmed in this call, before it
        self._touched: dict[TimerKind, int | None] = {}

    # ------------------------------------------------------------ public API

    def handle(self, event: Event, now: int) -> list[Action]:
        """Process one event at simulated time ``now`` (ns); return the actions."""
        if type(now) is not int or now < 0:
            raise ValueError(f"now must be a non-negative int of nanoseconds, got {now!r}")
        if now < self.now:
            raise ValueError(f"now ({now}) is before the previous event's time ({self.now})")
        self._check_event(event)
        self.now = now
        self._actions = []
        self._touched = {}
        if isinstance(event, SegmentArrived):
            tcp_input(self, event.seg)
        elif isinstance(event, SendQueued):
            self.sb_cc += event.nbytes
            self.output()
        elif isinstance(event, ReceiveRead):
            # The user may read what was delivered after the connection is
            # gone; only a live connection has a window to update.
            self.so_rcv_cc -= event.nbytes
            if not self.closed and self.state in _SYNCHRONIZED and self.state != TCPState.TIME_WAIT:
                self.output()
        elif isinstance(event, TimerExpired):
            when = self.timers.get(event.kind)
            if when is not None and when <= now:
                # a callout that fired is no longer armed: a re-arm in this
                # call is a SetTimer even at the same deadline
                self._touched[event.kind] = None
            self._timer(event.kind)
        elif isinstance(event, ActiveOpen):
            self._connect()
        elif isinstance(event, PassiveOpen):
            self.opened = True
            self.passive = True
            self.state = TCPState.LISTEN
        elif isinstance(event, UserClose):
            if event.cantrcvmore:
                self.cantrcvmore = True
            self._usrclosed()
        elif isinstance(event, UserAbort):
            self.drop(ECONNABORTED)
        return self._finish()

    def handle_segment(self, seg: Segment, now: int) -> list[Action]:
        """``handle(SegmentArrived(seg), now)`` for the kernel's own glue.

        The socket layer builds ``seg`` from a header ``parse_tcp`` accepted
        (every field in range by construction) and passes the host clock,
        which never runs backwards: validation happened at that boundary, so
        this path skips it (the per-segment cost of checking an attrs event
        twice was a fifth of the core's time).
        """
        self.now = now
        self._actions = []
        self._touched = {}
        tcp_input(self, seg)
        return self._finish()

    def handle_send_queued(self, nbytes: int, now: int) -> list[Action]:
        """``handle(SendQueued(nbytes), now)`` for the kernel's own glue.

        As ``handle_segment``: the glue passes a positive count and the host
        clock.  Anything ``handle`` would refuse (a clock behind the last
        event's, a send the state does not allow) goes through ``handle``,
        which raises what it raises; the common case builds no event.
        """
        if (
            now < self.now
            or self.closed
            or self.user_closed
            or self.close_pending
            or self.state not in _SENDQUEUED_STATES
        ):
            return self.handle(SendQueued(nbytes), now)
        self.now = now
        self._actions = []
        self._touched = {}
        self.sb_cc += nbytes
        output.tcp_output(self)
        return self._finish()

    def handle_receive_read(self, nbytes: int, now: int) -> list[Action]:
        """``handle(ReceiveRead(nbytes), now)`` for the kernel's own glue
        (see ``handle_send_queued``)."""
        if now < self.now or nbytes > self.so_rcv_cc:
            return self.handle(ReceiveRead(nbytes), now)
        self.now = now
        self._actions = []
        self._touched = {}
        self.so_rcv_cc -= nbytes
        st = self.state
        if not self.closed and st in _SYNCHRONIZED and st != TCPState.TIME_WAIT:
            output.tcp_output(self)
        return self._finish()

    def _finish(self) -> list[Action]:
        """The call's actions, then one SetTimer/CancelTimer per timer whose
        deadline changed (in ``_TIMER_ORDER``)."""
        actions = self._actions
        self._actions = []
        touched = self._touched
        if touched:
            timers = self.timers
            # one timer touched (the usual case: DELACK on the receiver,
            # REXMT on the sender) needs no ordering
            kinds = touched if len(touched) == 1 else [k for k in _TIMER_ORDER if k in touched]
            for kind in kinds:
                new = timers.get(kind)
                if touched[kind] != new:
                    actions.append(SetTimer(kind, new) if new is not None else CancelTimer(kind))
        return actions

    def set_nodelay(self, on: bool) -> None:
        """TCP_NODELAY changed (takes effect at the next output decision)."""
        self.nodelay = bool(on)

    def set_buffers(self, sndbuf: int, rcvbuf: int) -> None:
        """SO_SNDBUF / SO_RCVBUF changed (sb_hiwat of so_snd / so_rcv)."""
        for name, v in (("sndbuf", sndbuf), ("rcvbuf", rcvbuf)):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 1 << 30:
                raise ValueError(f"{name} must be an int in [1, 2**30], got {v!r}")
        self.sb_hiwat_snd = sndbuf
        self.sb_hiwat_rcv = rcvbuf
        if not self.opened and self.req_scale and self.cfg.wscale is None:
            self.request_r_scale = attrs.evolve(self.cfg, rcvbuf=rcvbuf).request_r_scale

    @property
    def sbspace(self) -> int:
        """sbspace(&so->so_rcv): what the window may offer."""
        return max(self.sb_hiwat_rcv - self.so_rcv_cc, 0)

    def check_invariants(self) -> None:
        """KASSERT-style consistency of the block (tests call it after each event)."""

        def need(cond: bool, what: str) -> None:
            if not cond:
                raise TCPInvariantError(f"tcpcb {self.state.name}: {what}")

        need(SEQ_LEQ(self.snd_una, self.snd_nxt), "snd_una <= snd_nxt")
        need(SEQ_LEQ(self.snd_nxt, self.snd_max), "snd_nxt <= snd_max")
        need(self.sb_cc >= 0 and self.so_rcv_cc >= 0, "buffer counts non-negative")
        if self.state in _SYNCHRONIZED:
            outstanding = seq_sub(self.snd_max, self.snd_una)
            need(
                outstanding <= self.sb_cc + (1 if self.sentfin else 0),
                "outstanding sequence space within the send buffer (+FIN)",
            )
        need(self.snd_cwnd >= 1 and self.t_segsz >= 1, "cwnd and segment size positive")
        if self.closed:
            need(not self.timers, "no timer armed on a closed connection")
        last = None
        for start, e in self.segq.entries():
            need(start > self.rcv_off, "reassembly entries beyond rcv_nxt")
            need(last is None or start >= last, "reassembly entries do not overlap")
            last = start + e.length

    # ------------------------------------------------------------ internals

    def _check_event(self, event: Event) -> None:
        if type(event) is SegmentArrived:
            return  # valid in every state (its Segment was checked when built)
        if self.closed and not isinstance(event, (SegmentArrived, TimerExpired, ReceiveRead)):
            raise TCPUsageError(f"{type(event).__name__} on a closed connection")
        if isinstance(event, (ActiveOpen, PassiveOpen)):
            if self.opened:
                raise TCPUsageError(f"{type(event).__name__}: connection already opened")
        elif isinstance(event, SendQueued):
            if self.user_closed or self.close_pending:
                raise TCPUsageError("SendQueued after UserClose (EPIPE at the socket layer)")
            if self.state not in (
                TCPState.SYN_SENT,
                TCPState.SYN_RECEIVED,
                TCPState.ESTABLISHED,
                TCPState.CLOSE_WAIT,
            ):
                raise TCPUsageError(f"SendQueued in state {self.state.name}")
        elif isinstance(event, ReceiveRead):
            if event.nbytes > self.so_rcv_cc:
                raise TCPUsageError(
                    f"ReceiveRead({event.nbytes}) but only {self.so_rcv_cc} bytes were delivered"
                )
        elif isinstance(event, (UserClose, UserAbort)):
            if not self.opened:
                raise TCPUsageError(f"{type(event).__name__} before any open")
        elif not isinstance(event, (SegmentArrived, TimerExpired)):
            raise TypeError(f"not a TCP event: {event!r}")

    def emit(self, action: Action) -> None:
        self._actions.append(action)

    def arm(self, kind: TimerKind, delay: int) -> None:
        timers = self.timers
        touched = self._touched
        if kind not in touched:
            touched[kind] = timers.get(kind)  # the deadline before this call
        timers[kind] = self.now + delay

    def disarm(self, kind: TimerKind) -> None:
        timers = self.timers
        if kind in timers:
            touched = self._touched
            if kind not in touched:
                touched[kind] = timers[kind]
            del timers[kind]

    def _clear_timers(self) -> None:
        """tcp_canceltimers."""
        touched = self._touched
        for kind, when in self.timers.items():
            if kind not in touched:
                touched[kind] = when
        self.timers.clear()

    def armed(self, kind: TimerKind) -> bool:
        return kind in self.timers

    def output(self) -> None:
        output.tcp_output(self)

    def respond(self, seq: int, ack: int, flags: int) -> None:
        """tcp_respond: a bare control segment (RST or ACK) outside tcp_output."""
        if flags & TH_RST:
            self.stats.sndrst += 1
        self.stats.sndtotal += 1
        self.emit(Transmit(seq, ack, flags, 0))

    def reset_for(self, seg: Segment) -> None:
        """dropwithreset: the RFC 9293 3.10.7.1 reply to an unacceptable segment."""
        if seg.flags & TH_RST:
            return
        if seg.flags & TH_ACK:
            self.respond(seg.ack, 0, TH_RST)
        else:
            self.respond(0, seq_add(seg.seq, seg.seg_len), TH_RST | TH_ACK)

    def established(self) -> None:
        """tcp_established + soisconnected."""
        self.state = TCPState.ESTABLISHED
        self.disarm(TimerKind.KEEP)
        self.emit(Established())
        if self.rcvd_scale and self.req_scale:
            self.snd_scale = self.requested_s_scale
            self.rcv_scale = self.request_r_scale

    def close(self, errno: int | None = None) -> None:
        """tcp_close: the block is gone."""
        self.state = TCPState.CLOSED
        self._clear_timers()
        self.segq.clear()
        if not self.closed:
            self.closed = True
            self.emit(Closed(errno))

    def drop(self, errno: int) -> None:
        """tcp_drop: RST the peer if it has seen our SYN, then close with ``errno``."""
        if self.state not in (TCPState.CLOSED, TCPState.LISTEN, TCPState.SYN_SENT):
            # tcp_drop sets TCPS_CLOSED and calls tcp_output, whose
            # tcp_outflags[CLOSED] is RST|ACK, sent at snd_max.
            self.respond(self.snd_max, self.rcv_nxt, TH_RST | TH_ACK)
        self.close(errno)

    def mss_from_peer(self, offer: int | None) -> None:
        """tcp_mss_from_peer: the send MSS is min(peer's offer or 536, ours)."""
        mss = offer if offer else self.cfg.mss_default
        self.t_peermss = max(mss, 216)  # tcp_minmss
        self.t_segsz = min(self.t_peermss, self.t_ourmss)

    def deliver(self, payload: object, skip: int, length: int) -> None:
        """sbappendstream into so_rcv (the glue does it on Deliver)."""
        if length > 0:
            self.emit(Deliver(payload, skip, length))
            self.so_rcv_cc += length
        self.rcv_nxt = seq_add(self.rcv_nxt, length)
        self.rcv_off += length

    def peer_fin(self) -> None:
        """socantrcvmore: the peer's FIN is in sequence."""
        self.rcv_nxt = seq_add(self.rcv_nxt, 1)
        self.emit(PeerClosed())

    def data_acked(self, nbytes: int) -> None:
        if nbytes > 0:
            self.sb_cc -= nbytes
            self.emit(DataAcked(nbytes))

    def _connect(self) -> None:
        """PRU_CONNECT: tcp_connect -> SYN_SENT, KEEP armed, tcp_output sends the SYN."""
        self.opened = True
        self.state = TCPState.SYN_SENT
        self.arm(TimerKind.KEEP, self.cfg.keepinit_ns)
        self.output()

    def _usrclosed(self) -> None:
        """tcp_usrclosed (RFC 9293 3.10.4 CLOSE)."""
        st = self.state
        if st in (TCPState.CLOSED, TCPState.LISTEN, TCPState.SYN_SENT):
            self.close(None)
            return
        if self.user_closed or self.close_pending:
            if self.state == TCPState.FIN_WAIT_2 and self.cantrcvmore:
                # close(2) after shutdown: bound FIN_WAIT_2 (tcp_usrclosed).
                self.arm(TimerKind.TWOMSL, self.cfg.maxidle_ns)
            return
        if st == TCPState.SYN_RECEIVED:
            self.close_pending = True  # FIN once ESTABLISHED (RFC 9293 3.10.4)
            return
        self.user_closed = True
        if st == TCPState.ESTABLISHED:
            self.state = TCPState.FIN_WAIT_1
        elif st == TCPState.CLOSE_WAIT:
            self.state = TCPState.LAST_ACK
        self.output()

    def apply_pending_close(self) -> None:
        if self.close_pending:
            self.close_pending = False
            self._usrclosed()

    def fin_wait_2(self) -> None:
        """FIN_WAIT_1 + our FIN acked; bounded by maxidle if the user closed (tcp_input)."""
        self.state = TCPState.FIN_WAIT_2
        if self.cantrcvmore:
            self.arm(TimerKind.TWOMSL, self.cfg.maxidle_ns)

    def enter_time_wait(self) -> None:
        """TIME_WAIT: tcp_canceltimers, TCPT_2MSL = 2 * MSL."""
        self.state = TCPState.TIME_WAIT
        self._clear_timers()
        self.arm(TimerKind.TWOMSL, 2 * self.cfg.msl_ns)

    def _timer(self, kind: TimerKind) -> None:
        when = self.timers.get(kind)
        if self.closed or when is None or when > self.now:
            return  # a stale callout: the glue raced a re-arm or cancel
        del self.timers[kind]
        if kind is TimerKind.DELACK:
            # tcp_delack: TF_ACKNOW and output.
            self.acknow = True
            self.stats.delack += 1
            self.output()
        elif kind is TimerKind.REXMT:
            self._timer_rexmt()
        elif kind is TimerKind.PERSIST:
            self.stats.persisttimeo += 1
            output.setpersist(self)
            self.t_force = True
            self.output()
            self.t_force = False
        elif kind is TimerKind.KEEP:
            if self.state in (TCPState.SYN_SENT, TCPState.SYN_RECEIVED):
                self.stats.keeptimeo += 1
                self.drop(ETIMEDOUT)
        elif kind is TimerKind.TWOMSL:
            # tcp_timer_2msl: in FIN_WAIT_2 after close(2), look again every
            # keepintvl until the connection has been idle for maxidle.
            if (
                self.state != TCPState.TIME_WAIT
                and self.now - self.t_rcvtime <= self.cfg.maxidle_ns
            ):
                self.arm(TimerKind.TWOMSL, self.cfg.keepintvl_ns)
            else:
                self.close(None)

    def _timer_rexmt(self) -> None:
        """tcp_timer_rexmt (RFC 6298 5.4-5.7)."""
        self.t_rxtshift += 1
        if self.t_rxtshift > self.cfg.maxrxtshift:
            self.t_rxtshift = self.cfg.maxrxtshift
            self.stats.timeoutdrop += 1
            self.drop(ETIMEDOUT)
            return
        self.stats.rexmttimeo += 1
        self.t_rxtcur = self.rtt.rto(self.t_rxtshift)
        self.arm(TimerKind.REXMT, self.t_rxtcur)
        if self.t_rxtshift > self.cfg.maxrxtshift // 4:
            self.rtt.clobber()
        self.snd_nxt = self.snd_una
        self.snd_high = self.snd_max
        self.t_rtttime = None  # Karn: never time a retransmission
        if self.state == TCPState.SYN_SENT:
            self.syn_rexmt = True
        if self.state == TCPState.SYN_RECEIVED:
            self.syn_rexmt = True
        cc.slow_retransmit(self)
        self.output()

    def rtt_sample(self, ack: int) -> None:
        """tcp_xmit_timer when the timed sequence number is acknowledged."""
        if self.t_rtttime is not None and SEQ_GT(ack, self.t_rtseq):
            self.rtt.sample(self.now - self.t_rtttime)
            self.stats.rttupdated += 1
            self.t_rtttime = None
            self.t_rxtshift = 0
            self.t_rxtcur = self.rtt.rto(0)

    def synchronized(self) -> bool:
        return self.state in _SYNCHRONIZED

    def have_rcvd_fin(self) -> bool:
        return self.state in _HAVERCVDFIN

    def seq_in_snd(self, ack: int) -> bool:
        """snd_una < ack <= snd_max."""
        return SEQ_LT(self.snd_una, ack) and SEQ_LEQ(ack, self.snd_max)

    def __repr__(self) -> str:
        return (
            f"<TCPConnection {self.state.name} una={self.snd_una} nxt={self.snd_nxt} "
            f"max={self.snd_max} rcv_nxt={self.rcv_nxt} sb_cc={self.sb_cc}>"
        )
