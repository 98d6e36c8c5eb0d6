"""Segment arrival (NetBSD sys/netinet/tcp_input.c: tcp_input, tcp_reass).

The order of the checks is RFC 9293 3.10.7 as NetBSD's tcp_input codes it:
LISTEN and SYN_SENT first, then for every other state the acceptability
trim (head, then tail against rcv_wnd), RST (RFC 5961 3.2 exact-match
rule), SYN (RFC 5961 4.2 challenge ACK), ACK processing (duplicate ACKs and
fast retransmit, new ACKs, RTT, congestion window, sbdrop, the FIN_WAIT_1 /
CLOSING / LAST_ACK / TIME_WAIT transitions), the window update, data and
reassembly, and FIN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import cc
from .events import (
    TH_ACK,
    TH_FIN,
    TH_PUSH,
    TH_RST,
    TH_SYN,
    TH_URG,
    Segment,
    TCPState,
    TimerKind,
)
from .output import tcp_output
from .seq import SEQ_GEQ, SEQ_GT, SEQ_LEQ, SEQ_LT, seq_add, seq_sub

if TYPE_CHECKING:
    from .conn import TCPConnection

ECONNREFUSED = 61
ECONNRESET = 54

# The per-ACK path (every ACK of a bulk transfer takes _synchronized): the
# sequence comparisons it makes for each are spelled out, as tcp_output's
# are (SEQ_LT(a, b) is ((a - b) mod 2**32) >= 2**31; seq_sub(a, b) is that
# difference made signed).
_MASK = 0xFFFFFFFF
_HALF = 1 << 31
_MOD = 1 << 32

# TCPS_HAVERCVDFIN (tcp_fsm.h): TCPConnection.have_rcvd_fin's states, tested
# here without the call (conn.py takes the set from here).
HAVERCVDFIN_STATES = frozenset(
    {TCPState.CLOSE_WAIT, TCPState.CLOSING, TCPState.LAST_ACK, TCPState.TIME_WAIT}
)


def tcp_input(tp: TCPConnection, seg: Segment) -> None:
    tp.stats.rcvtotal += 1
    st = tp.state
    if st == TCPState.CLOSED:
        # No connection: RFC 9293 3.10.7.1 (the glue normally answers these).
        tp.reset_for(seg)
        return
    tp.t_rcvtime = tp.now
    if st == TCPState.ESTABLISHED and _predict(tp, seg):
        return
    if st == TCPState.LISTEN:
        _listen(tp, seg)
        return
    if st == TCPState.SYN_SENT:
        _syn_sent(tp, seg)
        return
    _synchronized(tp, seg)


# TH_SYN|TH_FIN|TH_RST|TH_URG|TH_ECE|TH_CWR|TH_ACK: the flags that must be
# exactly TH_ACK for header prediction.
_PREDICT_MASK = TH_SYN | TH_FIN | TH_RST | TH_URG | 0x40 | 0x80 | TH_ACK


def _predict(tp: TCPConnection, seg: Segment) -> bool:
    """Header prediction (tcp_input.c 1.438.2.1, the netbsd-10 branch).

    The two common cases of a one-way transfer, taken before the general
    checks: a pure ACK for outstanding data on the sender, and in-order
    data with nothing queued on the receiver.  What they do differs from
    the general path in NetBSD's ways, kept here: a predicted ACK does not
    open cwnd (it is taken only when cwnd >= snd_wnd already) and does not
    clear t_dupacks; it drags snd_wl2 to snd_una (PR kern/55567); a
    predicted data segment pulls snd_wl1 up to its sequence number.
    True when the segment was taken.
    """
    if seg.flags & _PREDICT_MASK != TH_ACK or seg.seq != tp.rcv_nxt:
        return False
    if tp.snd_nxt != tp.snd_max:
        return False
    tiwin = seg.wnd << tp.snd_scale
    if not tiwin or tiwin != tp.snd_wnd:
        return False
    ack = seg.ack
    tlen = seg.payload_len
    stats = tp.stats
    if tlen == 0:
        una = tp.snd_una
        if not (
            SEQ_GT(ack, una)
            and SEQ_LEQ(ack, tp.snd_max)
            and tp.snd_cwnd >= tp.snd_wnd
            and tp.t_partialacks < 0
        ):
            return False
        tp.rtt_sample(ack)
        acked = seq_sub(ack, una)
        stats.predack += 1
        stats.rcvackpack += 1
        stats.rcvackbyte += acked
        tp.data_acked(acked)
        tp.snd_una = ack
        if SEQ_LT(tp.snd_high, ack):
            tp.snd_high = ack
        tp.snd_wl2 = ack
        if ack == tp.snd_max:
            tp.disarm(TimerKind.REXMT)
        elif TimerKind.PERSIST not in tp.timers:  # not tp.armed(PERSIST)
            tp.arm(TimerKind.REXMT, tp.t_rxtcur)
        if tp.sb_cc:
            tcp_output(tp)  # tp.output(), without the method's frame
        return True
    if ack != tp.snd_una or tp.segq or tlen > tp.sbspace:
        return False
    tp.snd_wl1 = seg.seq
    stats.preddat += 1
    stats.rcvpack += 1
    stats.rcvbyte += tlen
    tp.deliver(seg.payload, 0, tlen)
    # tcp_setup_ack
    if tp.delack or (tp.cfg.ack_on_push and seg.flags & TH_PUSH):
        tp.acknow = True
    else:
        tp.delack = True
        tp.arm(TimerKind.DELACK, tp.cfg.delack_ns)
    if tp.acknow:
        tcp_output(tp)  # tp.output(), without the method's frame
    return True


def _take_options(tp: TCPConnection, seg: Segment) -> None:
    """tcp_dooptions on a SYN: MSS and window scale (RFC 7323 2.2, 2.3)."""
    tp.mss_from_peer(seg.mss)
    if seg.wscale is not None and tp.req_scale:
        tp.rcvd_scale = True
        tp.requested_s_scale = min(seg.wscale, 14)


def _rcvseqinit(tp: TCPConnection, seq: int) -> None:
    tp.irs = seq
    tp.rcv_nxt = tp.rcv_adv = seq_add(seq, 1)
    tp.rcv_off = 0


def _init_cwnd(tp: TCPConnection) -> None:
    """The initial window, or one segment if our SYN had to be retransmitted (RFC 5681 3.1)."""
    if tp.syn_rexmt:
        tp.snd_cwnd = tp.t_segsz
    else:
        tp.snd_cwnd = cc.initial_window(tp.cfg.init_win or 1, tp.t_segsz)


def _listen(tp: TCPConnection, seg: Segment) -> None:
    """LISTEN (RFC 9293 3.10.7.2; NetBSD's syn_cache_add for the SYN)."""
    f = seg.flags
    if f & TH_RST:
        return
    if f & TH_ACK:
        tp.reset_for(seg)
        return
    if not f & TH_SYN:
        tp.stats.drops += 1
        return
    # A SYN: any data or FIN on it is discarded, as the syn cache does; the
    # peer sends it again once the connection is synchronized.
    _take_options(tp, seg)
    _rcvseqinit(tp, seg.seq)
    tp.rcv_wnd = tp.sbspace
    tp.snd_wnd = seg.wnd  # never scaled on a SYN
    tp.max_sndwnd = tp.snd_wnd
    tp.snd_wl1 = seg.seq
    tp.snd_wl2 = tp.iss
    tp.state = TCPState.SYN_RECEIVED
    tp.arm(TimerKind.KEEP, tp.cfg.keepinit_ns)
    tp.output()  # SYN|ACK


def _syn_sent(tp: TCPConnection, seg: Segment) -> None:
    """SYN_SENT (RFC 9293 3.10.7.3; tcp_input's TCPS_SYN_SENT case)."""
    f = seg.flags
    if f & TH_ACK and (SEQ_LEQ(seg.ack, tp.iss) or SEQ_GT(seg.ack, tp.snd_max)):
        tp.reset_for(seg)
        return
    if f & TH_RST:
        if f & TH_ACK:
            tp.stats.rcvrst += 1
            tp.close(ECONNREFUSED)
        return
    if not f & TH_SYN:
        tp.stats.drops += 1
        return
    _take_options(tp, seg)
    _rcvseqinit(tp, seg.seq)
    tp.acknow = True
    _init_cwnd(tp)
    if f & TH_ACK:
        tp.snd_una = seg.ack
        if SEQ_LT(tp.snd_nxt, tp.snd_una):
            tp.snd_nxt = tp.snd_una
        if SEQ_LT(tp.snd_high, tp.snd_una):
            tp.snd_high = tp.snd_una
        tp.disarm(TimerKind.REXMT)
        tp.t_rxtshift = 0
        tp.rtt_sample(seg.ack)
        tp.established()
    else:
        # Simultaneous open (RFC 9293 3.5 figure 8).  NetBSD's tcp_output
        # sees the SYN already outstanding and sends a bare ACK; our SYN is
        # retransmitted (now with ACK) only if the REXMT timer fires.
        tp.state = TCPState.SYN_RECEIVED
    # Data on the SYN: advance past the SYN, trim to the window.
    tp.rcv_wnd = tp.sbspace
    tlen = seg.payload_len
    fin = bool(f & TH_FIN)
    if tlen > tp.rcv_wnd:
        tlen = tp.rcv_wnd
        fin = False
        tp.stats.rcvpackafterwin += 1
    tp.snd_wl1 = seg.seq  # = th_seq - 1 after the SYN is consumed
    _step6(tp, seg, seq_add(seg.seq, 1), 0, tlen, fin, seg.wnd)


def _synchronized(tp: TCPConnection, seg: Segment) -> None:
    f = seg.flags
    st = tp.state
    tiwin = seg.wnd if f & TH_SYN else seg.wnd << tp.snd_scale
    seq = seg.seq
    tlen = seg.payload_len
    skip = 0
    syn = bool(f & TH_SYN)
    fin = bool(f & TH_FIN)
    rst = bool(f & TH_RST)
    push = bool(f & TH_PUSH)

    if st == TCPState.SYN_RECEIVED and syn and not f & TH_ACK and seq == tp.irs:
        # The peer retransmitted its SYN: our SYN|ACK was lost; send it again
        # (syn_cache_add finds the entry and calls syn_cache_respond).
        tp.snd_nxt = tp.snd_una
        tp.output()
        return

    # rcv_wnd = max(sbspace, seq_sub(rcv_adv, rcv_nxt))
    offered = (tp.rcv_adv - tp.rcv_nxt) & _MASK
    if offered >= _HALF:
        offered -= _MOD
    space = tp.sb_hiwat_rcv - tp.so_rcv_cc  # tp.sbspace
    if space < 0:
        space = 0
    tp.rcv_wnd = space if space >= offered else offered

    # Trim the head: what precedes rcv_nxt is a duplicate (RFC 9293 3.10.7.4 first).
    dupseg = False
    todrop = (tp.rcv_nxt - seq) & _MASK  # seq_sub(rcv_nxt, seq)
    if todrop >= _HALF:
        todrop -= _MOD
    if todrop > 0:
        if syn:
            syn = False
            seq = seq_add(seq, 1)
            todrop -= 1
        if todrop > tlen or (todrop == tlen and not fin):
            # Any valid FIN or RST must be at or beyond rcv_nxt: a duplicate.
            if rst:
                tp.stats.drops += 1
                return
            if fin and st == TCPState.TIME_WAIT:
                # The peer's FIN again: our last ACK was lost.  RFC 9293
                # 3.10.7.4 (eighth) restarts the 2 MSL wait.
                tp.arm(TimerKind.TWOMSL, 2 * tp.cfg.msl_ns)
            fin = False
            tp.acknow = True
            todrop = tlen
            dupseg = True
            tp.stats.rcvduppack += 1
        elif rst and seq != tp.rcv_nxt:
            _challenge_ack(tp)
            return
        else:
            tp.stats.rcvpartduppack += 1
        skip += todrop
        seq = seq_add(seq, todrop)
        tlen -= todrop

    # Trim the tail beyond the window.
    # seq_sub(seq_add(seq, tlen), seq_add(rcv_nxt, rcv_wnd))
    todrop = (seq + tlen - tp.rcv_nxt - tp.rcv_wnd) & _MASK
    if todrop >= _HALF:
        todrop -= _MOD
    if todrop > 0:
        tp.stats.rcvpackafterwin += 1
        if todrop >= tlen:
            if tp.rcv_wnd == 0 and seq == tp.rcv_nxt:
                # A zero-window probe: take nothing, but ACK it.
                tp.acknow = True
                tp.stats.rcvwinprobe += 1
            else:
                if rst:
                    tp.stats.drops += 1
                    return
                _dropafterack(tp)
                return
        tlen -= todrop
        fin = False
        push = False

    if rst:
        # RFC 5961 3.2: only an RST at exactly rcv_nxt resets; one elsewhere
        # in the window draws a challenge ACK.
        if seq != tp.rcv_nxt:
            _challenge_ack(tp)
            return
        tp.stats.rcvrst += 1
        if st == TCPState.SYN_RECEIVED:
            tp.close(ECONNREFUSED)
        elif st in (
            TCPState.ESTABLISHED,
            TCPState.FIN_WAIT_1,
            TCPState.FIN_WAIT_2,
            TCPState.CLOSE_WAIT,
        ):
            tp.close(ECONNRESET)
        else:
            tp.close(None)
        return

    if syn:
        # RFC 5961 4.2: a SYN in a synchronized state gets a challenge ACK.
        _challenge_ack(tp)
        return

    if not f & TH_ACK:
        if tp.acknow:
            tp.output()
        else:
            tp.stats.drops += 1
        return

    ack = seg.ack
    if st == TCPState.SYN_RECEIVED:
        if SEQ_LEQ(ack, tp.snd_una) or SEQ_GT(ack, tp.snd_max):
            # Not SND.UNA < SEG.ACK =< SND.NXT: reset (RFC 9293 3.10.7.4).
            tp.reset_for(seg)
            return
        # Our SYN is acknowledged: consume it and become ESTABLISHED.
        tp.snd_una = seq_add(tp.iss, 1)
        if SEQ_LT(tp.snd_nxt, tp.snd_una):
            tp.snd_nxt = tp.snd_una
        if SEQ_LT(tp.snd_high, tp.snd_una):
            tp.snd_high = tp.snd_una
        tp.rtt_sample(ack)
        tp.t_rxtshift = 0
        if tp.snd_una == tp.snd_max:
            tp.disarm(TimerKind.REXMT)
        _init_cwnd(tp)
        tp.established()
        tiwin = seg.wnd << tp.snd_scale  # the scale is in force from now on
        if drain_reass(tp):
            # A FIN queued during a simultaneous open is now in sequence.
            tp.peer_fin()
            tp.state = TCPState.CLOSE_WAIT
        tp.snd_wl1 = seq_add(seq, -1)
        tp.snd_wnd = 0  # set from this segment by the window update below
        st = tp.state
        if ack == tp.snd_una:
            _step6(tp, seg, seq, skip, tlen, fin, tiwin, push=push, needoutput=True)
            tp.apply_pending_close()
            return

    needoutput = False
    d = (ack - tp.snd_una) & _MASK
    if d == 0 or d >= _HALF:  # SEQ_LEQ(ack, snd_una)
        if tlen == 0 and not dupseg and tiwin == tp.snd_wnd:
            tp.stats.rcvdupack += 1
            if not tp.armed(TimerKind.REXMT) or ack != tp.snd_una:
                tp.t_dupacks = 0
            elif tp.t_partialacks < 0 and _inc_dupacks(tp) == tp.cfg.rexmtthresh:
                if not cc.fast_retransmit(tp, ack):
                    return
            elif tp.t_dupacks > tp.cfg.rexmtthresh:
                # Window inflation (RFC 5681 3.2 step 4).  As NetBSD codes
                # it, t_dupacks stops counting once recovery has begun
                # (t_partialacks >= 0), so this is reached only by Reno-style
                # counting; kept for fidelity.
                tp.snd_cwnd += tp.t_segsz
                tp.output()
                return
        elif tlen and seq != tp.rcv_nxt and SEQ_LT(ack, seq_add(tp.snd_una, -tp.max_sndwnd)):
            _dropafterack(tp)
            return
    else:
        if 0 < (ack - tp.snd_max) & _MASK < _HALF:  # SEQ_GT(ack, snd_max)
            tp.stats.rcvacktoomuch += 1
            _dropafterack(tp)
            return
        cc.fast_retransmit_newack(tp, ack)
        acked = (ack - tp.snd_una) & _MASK  # seq_sub(ack, snd_una)
        if acked >= _HALF:
            acked -= _MOD
        tp.stats.rcvackpack += 1
        tp.stats.rcvackbyte += acked
        tp.rtt_sample(ack)
        if ack == tp.snd_max:
            tp.disarm(TimerKind.REXMT)
            needoutput = True
        elif TimerKind.PERSIST not in tp.timers:  # not tp.armed(PERSIST)
            tp.arm(TimerKind.REXMT, tp.t_rxtcur)
        cc.newack(tp, ack)
        if acked > tp.sb_cc:
            tp.snd_wnd = max(tp.snd_wnd - tp.sb_cc, 0)
            tp.data_acked(tp.sb_cc)
            ourfinisacked = True
        else:
            tp.data_acked(acked)
            tp.snd_wnd = max(tp.snd_wnd - acked, 0)
            ourfinisacked = False
        tp.snd_una = ack
        if (tp.snd_nxt - ack) & _MASK >= _HALF:  # SEQ_LT(snd_nxt, snd_una)
            tp.snd_nxt = ack
        if (tp.snd_high - ack) & _MASK >= _HALF:  # SEQ_LT(snd_high, snd_una)
            tp.snd_high = ack
        if st == TCPState.FIN_WAIT_1:
            if ourfinisacked:
                tp.fin_wait_2()
        elif st == TCPState.CLOSING:
            if ourfinisacked:
                tp.enter_time_wait()
                return
        elif st == TCPState.LAST_ACK:
            if ourfinisacked:
                tp.close(None)
                return
        elif st == TCPState.TIME_WAIT:
            tp.arm(TimerKind.TWOMSL, 2 * tp.cfg.msl_ns)
            _dropafterack(tp)
            return

    _step6(tp, seg, seq, skip, tlen, fin, tiwin, push=push, needoutput=needoutput)
    if tp.close_pending:  # tp.apply_pending_close(), which does nothing otherwise
        tp.apply_pending_close()


def _step6(
    tp: TCPConnection,
    seg: Segment,
    seq: int,
    skip: int,
    tlen: int,
    fin: bool,
    tiwin: int,
    *,
    push: bool = False,
    needoutput: bool = False,
) -> None:
    """Window update, data, FIN, output (tcp_input from step6 on)."""
    ack = seg.ack
    if seg.flags & TH_ACK and (
        (tp.snd_wl1 - seq) & _MASK >= _HALF  # SEQ_LT(snd_wl1, seq)
        or (
            tp.snd_wl1 == seq
            and (
                (tp.snd_wl2 - ack) & _MASK >= _HALF  # SEQ_LT(snd_wl2, ack)
                or (tp.snd_wl2 == ack and tiwin > tp.snd_wnd)
            )
        )
    ):
        if tlen == 0 and tp.snd_wl2 == ack and tiwin > tp.snd_wnd:
            tp.stats.rcvwinupd += 1
        tp.snd_wnd = tiwin
        tp.snd_wl1 = seq
        tp.snd_wl2 = ack
        tp.max_sndwnd = max(tp.max_sndwnd, tiwin)
        needoutput = True

    if (tlen or fin) and tp.state not in HAVERCVDFIN_STATES:  # not tp.have_rcvd_fin()
        if seq == tp.rcv_nxt and not tp.segq and tp.state == TCPState.ESTABLISHED:
            # In order with nothing queued in ESTABLISHED: deliver and delay
            # the ACK (tcp_setup_ack).  Anything else goes through
            # tcp_reass and is ACKed at once, as NetBSD does.
            if tp.delack or (tp.cfg.ack_on_push and push) or fin:
                tp.acknow = True
            elif tlen:
                tp.delack = True
                tp.arm(TimerKind.DELACK, tp.cfg.delack_ns)
            if tlen:
                tp.stats.rcvpack += 1
                tp.stats.rcvbyte += tlen
            tp.deliver(seg.payload, skip, tlen)
        else:
            fin = _reass(tp, seg, seq, skip, tlen, fin)
            tp.acknow = True
    else:
        fin = False

    if fin and tp.synchronized() and not tp.have_rcvd_fin():
        tp.acknow = True
        tp.peer_fin()
        st = tp.state
        if st == TCPState.ESTABLISHED:
            tp.state = TCPState.CLOSE_WAIT
        elif st == TCPState.FIN_WAIT_1:
            tp.state = TCPState.CLOSING
        elif st == TCPState.FIN_WAIT_2:
            tp.enter_time_wait()
    elif fin and tp.state == TCPState.TIME_WAIT:
        tp.arm(TimerKind.TWOMSL, 2 * tp.cfg.msl_ns)

    if needoutput or tp.acknow:
        tcp_output(tp)  # tp.output(), without the method's frame


def _reass(tp: TCPConnection, seg: Segment, seq: int, skip: int, tlen: int, fin: bool) -> bool:
    """tcp_reass: queue by stream offset; deliver what is now in order; True if FIN."""
    start = tp.rcv_off + seq_sub(seq, tp.rcv_nxt)
    if seq != tp.rcv_nxt:
        tp.stats.rcvoopack += 1
        tp.stats.rcvoobyte += tlen
    added = tp.segq.insert(start, seg.payload, skip, tlen, fin)
    del added
    if not tp.synchronized():
        return False  # SYN_RECEIVED: held until ESTABLISHED (tcp_reass(tp, NULL))
    return drain_reass(tp)


def drain_reass(tp: TCPConnection) -> bool:
    """Present in-order data from the queue; True if the FIN was reached."""
    fin = False
    while True:
        e = tp.segq.pop_in_order(tp.rcv_off)
        if e is None:
            return fin
        if e.length:
            tp.stats.rcvpack += 1
            tp.stats.rcvbyte += e.length
        tp.deliver(e.payload, e.skip, e.length)
        if e.fin:
            fin = True
            tp.segq.clear()  # nothing can follow the FIN
            return fin


def _inc_dupacks(tp: TCPConnection) -> int:
    tp.t_dupacks += 1
    return tp.t_dupacks


def _dropafterack(tp: TCPConnection) -> None:
    """dropafterack: ACK (unless the segment was an RST) and drop."""
    tp.acknow = True
    tp.output()


def _challenge_ack(tp: TCPConnection) -> None:
    """RFC 5961 3.2 / 4.2 challenge ACK (NetBSD's dropafterack_ratelim, unlimited here)."""
    tp.stats.challengeack += 1
    tp.acknow = True
    tp.output()


__all__ = ["SEQ_GEQ", "drain_reass", "tcp_input"]
