"""The send decision (NetBSD sys/netinet/tcp_output.c: tcp_output, tcp_setpersist).

``tcp_output(tp)`` decides, as NetBSD's tcp_output does, whether anything is
worth sending now and appends one ``Transmit`` per segment: new data within
min(snd_wnd, cwnd) and the send MSS, retransmissions from snd_nxt (pulled
back by a timeout or a fast retransmit), SYN/FIN, window updates and ACKs.
Sender silly-window avoidance and Nagle are its "goto send" tests; the
receiver's are in the window it advertises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import cc
from .events import (
    TCP_MAXWIN,
    TH_ACK,
    TH_FIN,
    TH_PUSH,
    TH_RST,
    TH_SYN,
    TCPState,
    TimerKind,
    Transmit,
)
from .seq import SEQ_GT, SEQ_LT, seq_add, seq_sub

if TYPE_CHECKING:
    from .conn import TCPConnection

# tcp_fsm.h: tcp_outflags[], the flags each state sends.
TCP_OUTFLAGS = {
    TCPState.CLOSED: TH_RST | TH_ACK,
    TCPState.LISTEN: 0,
    TCPState.SYN_SENT: TH_SYN,
    TCPState.SYN_RECEIVED: TH_SYN | TH_ACK,
    TCPState.ESTABLISHED: TH_ACK,
    TCPState.CLOSE_WAIT: TH_ACK,
    TCPState.FIN_WAIT_1: TH_FIN | TH_ACK,
    TCPState.CLOSING: TH_FIN | TH_ACK,
    TCPState.LAST_ACK: TH_FIN | TH_ACK,
    TCPState.FIN_WAIT_2: TH_ACK,
    TCPState.TIME_WAIT: TH_ACK,
}


def setpersist(tp: TCPConnection) -> None:
    """tcp_setpersist: arm PERSIST at the backed-off RTO within [PERSMIN, PERSMAX]."""
    t = tp.rtt.rexmtval() << min(tp.t_rxtshift, 6)
    t = min(max(t, tp.cfg.persmin_ns), tp.cfg.persmax_ns)
    tp.arm(TimerKind.PERSIST, t)
    if tp.t_rxtshift < tp.cfg.maxrxtshift:
        tp.t_rxtshift += 1


def rcv_window(tp: TCPConnection) -> int:
    """The window to advertise, in bytes (receiver SWS avoidance, never shrinking)."""
    win = tp.sbspace
    # Receiver SWS avoidance (RFC 9293 3.8.6.2.2): do not offer less than
    # a quarter of the buffer or one segment.
    if win < tp.sb_hiwat_rcv // 4 and win < tp.t_ourmss:
        win = 0
    win = min(win, TCP_MAXWIN << tp.rcv_scale)
    # Never shrink the window already offered (RFC 9293 3.8.6.2.2).
    offered = seq_sub(tp.rcv_adv, tp.rcv_nxt)
    return max(win, offered)


def tcp_output(tp: TCPConnection) -> None:
    st = tp.state
    if st in (TCPState.CLOSED, TCPState.LISTEN):
        return
    cfg = tp.cfg
    synchronized = tp.synchronized()
    idle = tp.snd_max == tp.snd_una
    if synchronized and idle and tp.now - tp.t_rcvtime >= tp.t_rxtcur:
        # Restart after idle (RFC 5681 4.1): cwnd no larger than the IW.
        tp.snd_cwnd = min(tp.snd_cwnd, cc.initial_window(cfg.init_win or 1, tp.t_segsz))
    while True:
        sendalot = False
        off = seq_sub(tp.snd_nxt, tp.snd_una)
        win = min(tp.snd_wnd, tp.snd_cwnd)
        flags = TCP_OUTFLAGS[st]
        if tp.t_force:
            if win == 0:
                # A zero-window probe: one byte beyond the window, and no
                # FIN unless it is the last byte.
                if off < tp.sb_cc:
                    flags &= ~TH_FIN
                win = 1
            else:
                tp.disarm(TimerKind.PERSIST)
                tp.t_rxtshift = 0
        if flags & TH_SYN and SEQ_GT(tp.snd_nxt, tp.snd_una):
            # The SYN is already out; only a retransmission (snd_nxt pulled
            # back to snd_una) resends it.
            flags &= ~TH_SYN
        length = min(tp.sb_cc, win) - off if synchronized else 0
        if length < 0:
            # Either our FIN is out (off = sb_cc + 1) or the window shrank
            # below what we had sent.  If it closed, pull snd_nxt back and
            # persist.
            length = 0
            if win == 0:
                tp.disarm(TimerKind.REXMT)
                tp.t_rxtshift = 0
                tp.snd_nxt = tp.snd_una
                off = 0
                if not tp.armed(TimerKind.PERSIST):
                    setpersist(tp)
        if length > tp.t_segsz:
            length = tp.t_segsz
            sendalot = True
        if off + length < tp.sb_cc:
            flags &= ~TH_FIN
        # Sender SWS avoidance and Nagle (RFC 9293 3.8.6.2.1, RFC 896).
        send = bool(length) and bool(
            length >= tp.t_segsz
            or ((idle or tp.nodelay) and length + off >= tp.sb_cc)
            or tp.t_force
            or (tp.max_sndwnd and length >= tp.max_sndwnd // 2)
            or SEQ_LT(tp.snd_nxt, tp.snd_max)
        )
        if not send and synchronized:
            rwin = tp.sbspace
            if rwin > 0:
                recwin = min(rwin, TCP_MAXWIN << tp.rcv_scale)
                adv = recwin - seq_sub(tp.rcv_adv, tp.rcv_nxt)
                if adv >= 2 * tp.t_ourmss or 2 * adv >= tp.sb_hiwat_rcv:
                    send = True
        if not send and (
            tp.acknow
            or flags & (TH_SYN | TH_RST)
            or (flags & TH_FIN and (not tp.sentfin or tp.snd_nxt == tp.snd_una))
        ):
            send = True
        if not send:
            if tp.sb_cc and not tp.armed(TimerKind.REXMT) and not tp.armed(TimerKind.PERSIST):
                tp.t_rxtshift = 0
                setpersist(tp)
            return
        _send(tp, flags, off, length)
        if not sendalot:
            return


def _send(tp: TCPConnection, flags: int, off: int, length: int) -> None:
    cfg = tp.cfg
    if flags & TH_FIN and tp.sentfin and tp.snd_nxt == tp.snd_max:
        # Resending a FIN: do not use a new sequence number.
        tp.snd_nxt = seq_add(tp.snd_nxt, -1)
    if length and off + length == tp.sb_cc:
        flags |= TH_PUSH  # the last of the buffer goes out with PSH
    mss = wscale = None
    if flags & TH_SYN:
        mss = tp.t_ourmss
        if tp.req_scale and (tp.state == TCPState.SYN_SENT or tp.rcvd_scale):
            wscale = tp.request_r_scale
    if length or flags & (TH_SYN | TH_FIN) or tp.armed(TimerKind.PERSIST):
        seq = tp.snd_nxt
    else:
        seq = tp.snd_max
    if tp.state == TCPState.SYN_SENT:
        win = min(tp.sbspace, TCP_MAXWIN)
        wnd = win
    else:
        win = rcv_window(tp)
        # The window on a SYN is never scaled (RFC 7323 2.2).
        wnd = min(win, TCP_MAXWIN) if flags & TH_SYN else min(win >> tp.rcv_scale, TCP_MAXWIN)
    ack = tp.rcv_nxt if flags & TH_ACK else 0
    seglen = length + (1 if flags & TH_SYN else 0) + (1 if flags & TH_FIN else 0)
    rexmt = seglen > 0 and SEQ_LT(seq, tp.snd_max)
    st = tp.stats
    st.sndtotal += 1
    if length:
        if tp.t_force and length == 1 and tp.armed(TimerKind.PERSIST):
            st.sndprobe += 1
        elif rexmt:
            st.sndrexmitpack += 1
            st.sndrexmitbyte += length
        else:
            st.sndpack += 1
            st.sndbyte += length
    elif tp.acknow:
        st.sndacks += 1
    elif flags & (TH_SYN | TH_FIN | TH_RST):
        st.sndctrl += 1
    else:
        st.sndwinup += 1
    tp.emit(Transmit(seq, ack, flags, wnd, mss, wscale, off if length else 0, length, rexmt))
    if not tp.t_force or not tp.armed(TimerKind.PERSIST):
        startseq = tp.snd_nxt
        if flags & TH_SYN:
            tp.snd_nxt = seq_add(tp.snd_nxt, 1)
        if flags & TH_FIN:
            tp.snd_nxt = seq_add(tp.snd_nxt, 1)
            tp.sentfin = True
        tp.snd_nxt = seq_add(tp.snd_nxt, length)
        if SEQ_GT(tp.snd_nxt, tp.snd_max):
            tp.snd_max = tp.snd_nxt
            if tp.t_rtttime is None:
                # Time this segment (one at a time, RFC 6298 3).
                tp.t_rtttime = tp.now
                tp.t_rtseq = startseq
        if not tp.armed(TimerKind.REXMT) and tp.snd_nxt != tp.snd_una:
            if tp.armed(TimerKind.PERSIST):
                tp.disarm(TimerKind.PERSIST)
                tp.t_rxtshift = 0
            tp.arm(TimerKind.REXMT, tp.t_rxtcur)
    elif SEQ_GT(seq_add(tp.snd_nxt, length), tp.snd_max):
        tp.snd_max = seq_add(tp.snd_nxt, length)
    if (
        length == 0
        and tp.sb_cc
        and not tp.armed(TimerKind.REXMT)
        and not tp.armed(TimerKind.PERSIST)
    ):
        # A pure ACK went out while data waits behind a closed window: arm
        # PERSIST, or a lost window update would deadlock the connection
        # (FreeBSD's and OpenBSD's tcp_output: "Avoid a situation where we
        # do not set persist timer after a zero window condition").
        tp.t_rxtshift = 0
        setpersist(tp)
    if win > 0 and tp.state != TCPState.SYN_SENT and SEQ_GT(seq_add(tp.rcv_nxt, win), tp.rcv_adv):
        tp.rcv_adv = seq_add(tp.rcv_nxt, win)
    tp.acknow = False
    tp.delack = False
    tp.disarm(TimerKind.DELACK)
    del cfg
