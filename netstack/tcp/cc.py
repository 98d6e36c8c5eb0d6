"""Congestion control: RFC 5681 slow start / congestion avoidance with RFC 3465
byte counting, and NewReno fast retransmit / fast recovery (RFC 6582).

These follow NetBSD's tcp_congctl.c "newreno" module (the default
congestion control) function by function: tcp_reno_congestion_exp,
tcp_reno_do_fast_retransmit, tcp_newreno_fast_retransmit,
tcp_newreno_fast_retransmit_newack, tcp_reno_newack and
tcp_reno_slow_retransmit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .events import TCP_MAXWIN, TimerKind
from .seq import SEQ_GT, SEQ_LT, seq_sub

if TYPE_CHECKING:
    from .conn import TCPConnection


def initial_window(iw: int, segsz: int) -> int:
    """TCP_INITIAL_WINDOW (tcp_var.h): min(iw*segsz, max(2*segsz, tcp_init_win_max[iw]))."""
    init_win_max = (1460, 1460, 2920, 2920, 4380, 7300, 8760, 10220, 11680, 13140, 14600)
    return min(iw * segsz, max(2 * segsz, init_win_max[iw]))


def congestion_exp(tp: TCPConnection) -> None:
    """tcp_reno_congestion_exp: halve the window (in segments, at least 2)."""
    win = min(tp.snd_wnd, tp.snd_cwnd) // 2 // tp.t_segsz
    win = max(win, 2)
    tp.snd_ssthresh = win * tp.t_segsz
    tp.snd_recover = tp.snd_max
    tp.snd_cwnd = tp.snd_ssthresh


def fast_retransmit(tp: TCPConnection, ack: int) -> bool:
    """tcp_newreno_fast_retransmit; True means "false fast retransmit" (RFC 6582 3.2 step 2)."""
    if SEQ_LT(ack, tp.snd_high):
        # The duplicate ACKs are for data sent before the last timeout:
        # do not enter fast recovery again (snd_high, RFC 6582 "recover").
        tp.t_dupacks = 0
        return True
    onxt = tp.snd_nxt
    congestion_exp(tp)
    tp.t_partialacks = 0
    tp.disarm(TimerKind.REXMT)
    tp.t_rtttime = None
    tp.stats.fastrexmt += 1
    tp.snd_nxt = ack
    tp.snd_cwnd = tp.t_segsz
    tp.output()
    tp.snd_cwnd = tp.snd_ssthresh + tp.t_segsz * tp.t_dupacks
    if SEQ_GT(onxt, tp.snd_nxt):
        tp.snd_nxt = onxt
    return False


def fast_retransmit_newack(tp: TCPConnection, ack: int) -> None:
    """tcp_newreno_fast_retransmit_newack: partial and full ACKs in recovery.

    Runs before snd_una moves (NetBSD relies on that for the deflation).
    """
    if tp.t_partialacks < 0:
        tp.t_dupacks = 0
        return
    if SEQ_LT(ack, tp.snd_recover):
        # Partial ACK (RFC 6582 3.2 step 5): retransmit the next hole at
        # once, deflate by what was acked, add one segment back.
        tp.stats.partialack += 1
        onxt = tp.snd_nxt
        ocwnd = tp.snd_cwnd
        acked = seq_sub(ack, tp.snd_una)
        tp.t_partialacks += 1
        if tp.t_partialacks == 1:
            tp.disarm(TimerKind.REXMT)  # RFC 6582 3.2 step 5: reset on the first
        tp.t_rtttime = None
        tp.snd_nxt = ack
        tp.snd_cwnd = tp.t_segsz + acked
        tp.output()
        tp.snd_cwnd = ocwnd
        if SEQ_GT(onxt, tp.snd_nxt):
            tp.snd_nxt = onxt
        # NetBSD's u_long arithmetic cannot go below one segment here in
        # practice; the model clamps to one segment explicitly.
        tp.snd_cwnd = max(tp.snd_cwnd - (acked - tp.t_segsz), tp.t_segsz)
    else:
        # Full ACK (step 6): deflate to ssthresh or to what is still in flight.
        inflight = seq_sub(tp.snd_max, ack)
        if inflight < tp.snd_ssthresh:
            tp.snd_cwnd = inflight + tp.t_segsz
        else:
            tp.snd_cwnd = tp.snd_ssthresh
        tp.t_partialacks = -1
        tp.t_dupacks = 0
        tp.t_bytes_acked = 0


def newack(tp: TCPConnection, ack: int) -> None:
    """tcp_newreno_newack -> tcp_reno_newack: open cwnd, not while in recovery."""
    if tp.t_partialacks >= 0:
        return
    cw = tp.snd_cwnd
    incr = tp.t_segsz
    acked = seq_sub(ack, tp.snd_una)
    if tp.cfg.abc:
        if cw >= tp.snd_ssthresh:
            # Congestion avoidance (RFC 5681 3.1, RFC 3465 2.1): one SMSS
            # per cwnd of bytes acknowledged.
            tp.t_bytes_acked += acked
            if tp.t_bytes_acked >= cw:
                tp.t_bytes_acked -= cw
            else:
                incr = 0
        else:
            # Slow start with L = 2*SMSS (RFC 3465 2.3), 1*SMSS while
            # retransmitting (snd_nxt behind snd_max).
            lim = incr * 2 if tp.cfg.abc_aggressive and tp.snd_nxt == tp.snd_max else incr
            incr = min(acked, lim)
    elif cw >= tp.snd_ssthresh:
        incr = incr * incr // cw
    tp.snd_cwnd = min(cw + incr, TCP_MAXWIN << tp.snd_scale)


def slow_retransmit(tp: TCPConnection) -> None:
    """tcp_reno_slow_retransmit: after an RTO, cwnd = 1 segment (RFC 5681 eq. 4 as NetBSD)."""
    win = min(tp.snd_wnd, tp.snd_cwnd) // 2 // tp.t_segsz
    win = max(win, 2)
    tp.snd_cwnd = tp.t_segsz
    tp.snd_ssthresh = win * tp.t_segsz
    tp.t_partialacks = -1
    tp.t_dupacks = 0
    tp.t_bytes_acked = 0
