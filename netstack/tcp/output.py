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
    transmit,
)
from .seq import SEQ_GT, seq_add

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
    win = tp.sb_hiwat_rcv - tp.so_rcv_cc  # sbspace(so_rcv)
    if win < 0:
        win = 0
    # Receiver SWS avoidance (RFC 9293 3.8.6.2.2): do not offer less than
    # a quarter of the buffer or one segment.
    if win < tp.sb_hiwat_rcv // 4 and win < tp.t_ourmss:
        win = 0
    top = TCP_MAXWIN << tp.rcv_scale
    if win > top:
        win = top
    # Never shrink the window already offered (RFC 9293 3.8.6.2.2).
    offered = (tp.rcv_adv - tp.rcv_nxt) & _MASK  # seq_sub(rcv_adv, rcv_nxt), inlined
    if offered >= _HALF:
        offered -= _MOD
    return win if win > offered else offered


# The per-segment path: tcp_output runs once or twice for every segment that
# arrives, so it reads the block's fields into locals and spells the
# sequence comparisons out (SEQ_LT(a, b) is ((a - b) mod 2**32) >= 2**31)
# rather than calling the seq helpers for each.
_MASK = 0xFFFFFFFF
_HALF = 1 << 31
_MOD = 1 << 32
_REXMT = TimerKind.REXMT
_PERSIST = TimerKind.PERSIST
_DELACK = TimerKind.DELACK


def tcp_output(tp: TCPConnection) -> None:
    st = tp.state
    if st == TCPState.CLOSED or st == TCPState.LISTEN:
        return
    synchronized = st >= TCPState.ESTABLISHED  # TCPS_HAVEESTABLISHED
    timers = tp.timers
    idle = tp.snd_max == tp.snd_una
    if synchronized and idle and tp.now - tp.t_rcvtime >= tp.t_rxtcur:
        # Restart after idle (RFC 5681 4.1): cwnd no larger than the IW.
        cfg = tp.cfg
        tp.snd_cwnd = min(tp.snd_cwnd, cc.initial_window(cfg.init_win or 1, tp.t_segsz))
    outflags = TCP_OUTFLAGS[st]
    while True:
        sendalot = False
        off = (tp.snd_nxt - tp.snd_una) & _MASK  # seq_sub(snd_nxt, snd_una)
        if off >= _HALF:
            off -= _MOD
        snd_wnd = tp.snd_wnd
        cwnd = tp.snd_cwnd
        win = snd_wnd if snd_wnd < cwnd else cwnd
        flags = outflags
        sb_cc = tp.sb_cc
        if tp.t_force:
            if win == 0:
                # A zero-window probe: one byte beyond the window, and no
                # FIN unless it is the last byte.
                if off < sb_cc:
                    flags &= ~TH_FIN
                win = 1
            else:
                tp.disarm(_PERSIST)
                tp.t_rxtshift = 0
        if flags & TH_SYN and 0 < (tp.snd_nxt - tp.snd_una) & _MASK < _HALF:
            # The SYN is already out; only a retransmission (snd_nxt pulled
            # back to snd_una) resends it.
            flags &= ~TH_SYN
        if synchronized:
            length = (sb_cc if sb_cc < win else win) - off
        else:
            length = 0
        if length < 0:
            # Either our FIN is out (off = sb_cc + 1) or the window shrank
            # below what we had sent.  If it closed, pull snd_nxt back and
            # persist.
            length = 0
            if win == 0:
                tp.disarm(_REXMT)
                tp.t_rxtshift = 0
                tp.snd_nxt = tp.snd_una
                off = 0
                if _PERSIST not in timers:
                    setpersist(tp)
        segsz = tp.t_segsz
        if length > segsz:
            length = segsz
            sendalot = True
        if off + length < sb_cc:
            flags &= ~TH_FIN
        # Sender SWS avoidance and Nagle (RFC 9293 3.8.6.2.1, RFC 896).
        send = bool(length) and bool(
            length >= segsz
            or ((idle or tp.nodelay) and length + off >= sb_cc)
            or tp.t_force
            or (tp.max_sndwnd and length >= tp.max_sndwnd // 2)
            or (tp.snd_nxt - tp.snd_max) & _MASK >= _HALF  # SEQ_LT(snd_nxt, snd_max)
        )
        if not send and synchronized:
            rwin = tp.sb_hiwat_rcv - tp.so_rcv_cc  # sbspace(so_rcv)
            if rwin > 0:
                top = TCP_MAXWIN << tp.rcv_scale
                recwin = rwin if rwin < top else top
                offered = (tp.rcv_adv - tp.rcv_nxt) & _MASK  # seq_sub(rcv_adv, rcv_nxt)
                if offered >= _HALF:
                    offered -= _MOD
                adv = recwin - offered
                if adv >= 2 * tp.t_ourmss or 2 * adv >= tp.sb_hiwat_rcv:
                    send = True
        if not send and (
            tp.acknow
            or flags & (TH_SYN | TH_RST)
            or (flags & TH_FIN and (not tp.sentfin or tp.snd_nxt == tp.snd_una))
        ):
            send = True
        if not send:
            if sb_cc and _REXMT not in timers and _PERSIST not in timers:
                tp.t_rxtshift = 0
                setpersist(tp)
            return
        _send(tp, flags, off, length)
        if not sendalot:
            return


def _send(tp: TCPConnection, flags: int, off: int, length: int) -> None:
    timers = tp.timers
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
    persisting = _PERSIST in timers
    snd_nxt = tp.snd_nxt
    seq = snd_nxt if length or flags & (TH_SYN | TH_FIN) or persisting else tp.snd_max
    if tp.state == TCPState.SYN_SENT:
        win = min(tp.sbspace, TCP_MAXWIN)
        wnd = win
    else:
        win = rcv_window(tp)
        # The window on a SYN is never scaled (RFC 7323 2.2).
        if flags & TH_SYN:
            wnd = win if win < TCP_MAXWIN else TCP_MAXWIN
        else:
            wnd = win >> tp.rcv_scale
            if wnd > TCP_MAXWIN:
                wnd = TCP_MAXWIN
    ack = tp.rcv_nxt if flags & TH_ACK else 0
    seglen = length + (1 if flags & TH_SYN else 0) + (1 if flags & TH_FIN else 0)
    snd_max = tp.snd_max
    rexmt = seglen > 0 and (seq - snd_max) & _MASK >= _HALF  # SEQ_LT(seq, snd_max)
    st = tp.stats
    st.sndtotal += 1
    if length:
        if tp.t_force and length == 1 and persisting:
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
    tp._actions.append(
        transmit(seq, ack, flags, wnd, mss, wscale, off if length else 0, length, rexmt)
    )
    if not tp.t_force or not persisting:
        startseq = snd_nxt
        if flags & TH_SYN:
            snd_nxt = (snd_nxt + 1) & _MASK
        if flags & TH_FIN:
            snd_nxt = (snd_nxt + 1) & _MASK
            tp.sentfin = True
        snd_nxt = (snd_nxt + length) & _MASK
        tp.snd_nxt = snd_nxt
        if 0 < (snd_nxt - snd_max) & _MASK < _HALF:  # SEQ_GT(snd_nxt, snd_max)
            tp.snd_max = snd_nxt
            if tp.t_rtttime is None:
                # Time this segment (one at a time, RFC 6298 3).
                tp.t_rtttime = tp.now
                tp.t_rtseq = startseq
        if _REXMT not in timers and snd_nxt != tp.snd_una:
            if _PERSIST in timers:
                tp.disarm(_PERSIST)
                tp.t_rxtshift = 0
            tp.arm(_REXMT, tp.t_rxtcur)
    elif SEQ_GT(seq_add(tp.snd_nxt, length), tp.snd_max):
        tp.snd_max = seq_add(tp.snd_nxt, length)
    if length == 0 and tp.sb_cc and _REXMT not in timers and _PERSIST not in timers:
        # A pure ACK went out while data waits behind a closed window: arm
        # PERSIST, or a lost window update would deadlock the connection
        # (FreeBSD's and OpenBSD's tcp_output: "Avoid a situation where we
        # do not set persist timer after a zero window condition").
        tp.t_rxtshift = 0
        setpersist(tp)
    if win > 0 and tp.state != TCPState.SYN_SENT:
        adv = (tp.rcv_nxt + win) & _MASK
        if 0 < (adv - tp.rcv_adv) & _MASK < _HALF:  # SEQ_GT(rcv_nxt + win, rcv_adv)
            tp.rcv_adv = adv
    tp.acknow = False
    tp.delack = False
    if _DELACK in timers:
        tp.disarm(_DELACK)
