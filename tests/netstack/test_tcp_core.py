"""TCP core unit tests: handshake, options, RST rules, closing, TIME_WAIT.

Numbers are worked out from the RFCs and NetBSD's constants, not from the
code under test (see specs/tcp.md).
"""

from __future__ import annotations

import pytest
from tcp_unit import ISS, MS, PISS, Drive, S, client, of, server, st, tx

from netstack.tcp import (
    ECONNABORTED,
    ECONNREFUSED,
    ECONNRESET,
    ETIMEDOUT,
    TH_ACK,
    TH_FIN,
    TH_RST,
    TH_SYN,
    ActiveOpen,
    CancelTimer,
    Closed,
    Deliver,
    Established,
    PassiveOpen,
    PeerClosed,
    ReceiveRead,
    Segment,
    SendQueued,
    SetTimer,
    TCPConfig,
    TCPState,
    TCPUsageError,
    TimerExpired,
    TimerKind,
    Transmit,
    UserAbort,
    UserClose,
    respond_to_closed,
)
from netstack.tcp.seq import SEQ_GT, SEQ_LT, seq_add, seq_sub


def test_seq_arithmetic_wraps() -> None:
    assert seq_add(0xFFFFFFFF, 2) == 1
    assert seq_sub(1, 0xFFFFFFFF) == 2
    assert SEQ_LT(0xFFFFFFF0, 5) and SEQ_GT(5, 0xFFFFFFF0)
    assert seq_sub(0, 1 << 31) == -(1 << 31)


def test_active_open_sends_syn_with_options_and_arms_rexmt_and_keepinit() -> None:
    d = Drive()
    out = d.ev(ActiveOpen(), at=7)
    # RFC 9293 3.10.1: <SEQ=ISS><CTL=SYN>; MSS 1460 for a 1500 MTU; a
    # 32 KiB buffer needs no shift, but window scaling is still offered.
    assert tx(out) == [Transmit(ISS, 0, TH_SYN, 32768, 1460, 0, 0, 0, False)]
    assert SetTimer(TimerKind.REXMT, 7 + 1 * S) in out  # TCPTV_SRTTDFLT 1 s
    assert SetTimer(TimerKind.KEEP, 7 + 75 * S) in out  # TCPTV_KEEP_INIT
    assert st(d) == TCPState.SYN_SENT


def test_wscale_request_covers_the_receive_buffer() -> None:
    # 65535 << 2 = 262140 < 262144, so a 256 KiB buffer needs shift 3.
    d = Drive(TCPConfig(iss=ISS, rcvbuf=256 * 1024))
    (syn,) = tx(d.ev(ActiveOpen()))
    assert syn.wscale == 3
    assert syn.wnd == 65535  # the window on a SYN is never scaled (RFC 7323 2.2)
    assert TCPConfig(rcvbuf=65535).request_r_scale == 0
    (syn,) = tx(Drive(TCPConfig(window_scaling=False)).ev(ActiveOpen()))
    assert syn.wscale is None


def test_synack_establishes_with_ack_initial_window_and_rtt() -> None:
    d = Drive()
    d.ev(ActiveOpen(), at=0)
    out = d.seg(PISS, ISS + 1, TH_SYN | TH_ACK, 20000, mss=1460, at=100 * MS)
    assert Established() in out
    assert tx(out) == [Transmit(ISS + 1, PISS + 1, TH_ACK, 32768)]
    assert CancelTimer(TimerKind.REXMT) in out and CancelTimer(TimerKind.KEEP) in out
    c = d.conn
    assert c.state == TCPState.ESTABLISHED
    # TCP_INITIAL_WINDOW(4, 1460) = min(5840, max(2920, 4380)) = 4380 (RFC 3390).
    assert c.snd_cwnd == 4380
    # RFC 6298 2.2: SRTT = R = 100 ms, RTTVAR = R/2.
    assert (c.rtt.srtt, c.rtt.rttvar) == (100 * MS, 50 * MS)
    assert c.snd_wnd == 20000 and c.t_segsz == 1460


def test_initial_window_with_small_mss_and_no_mss_option() -> None:
    d = client(peer_mss=536)
    assert d.conn.t_segsz == 536
    assert d.conn.snd_cwnd == 2144  # min(4*536, max(2*536, 4380))
    d = client(peer_mss=None)
    assert d.conn.t_segsz == 536  # tcp_mssdflt (RFC 9293 3.7.1)


def test_window_scale_only_when_both_sides_send_it() -> None:
    cfg = TCPConfig(iss=ISS, rcvbuf=256 * 1024)
    d = client(cfg, peer_wscale=None)
    assert (d.conn.snd_scale, d.conn.rcv_scale) == (0, 0)
    d = client(cfg, peer_wscale=20, wnd=1000)
    # RFC 7323 2.3: a shift above 14 is taken as 14.
    assert (d.conn.snd_scale, d.conn.rcv_scale) == (14, 3)
    assert d.conn.snd_wnd == 1000  # the SYN's window is not scaled
    out = d.seg(PISS + 1, ISS + 1, TH_ACK, 2)
    del out
    assert d.conn.snd_wnd == 2 << 14
    # Our window field is shifted by rcv_scale: 262144 >> 3.
    (ack,) = tx(d.ev(TimerExpired(TimerKind.DELACK))) or tx(
        d.seg(PISS + 1, ISS + 1, TH_ACK | TH_FIN, 2)
    )
    assert ack.wnd == 262144 >> 3


def test_syn_retransmission_backs_off_and_loss_window_is_one_segment() -> None:
    d = Drive()
    d.ev(ActiveOpen(), at=0)
    out = d.ev(TimerExpired(TimerKind.REXMT), at=1 * S)
    (syn,) = tx(out)
    assert syn.flags == TH_SYN and syn.seq == ISS and syn.retransmit
    assert SetTimer(TimerKind.REXMT, 3 * S) in out  # backed off to 2 s
    d.seg(PISS, ISS + 1, TH_SYN | TH_ACK, 65535, mss=1460, at=3 * S + 10 * MS)
    assert d.conn.snd_cwnd == 1460  # RFC 5681 3.1: SYN lost -> IW = 1 segment
    assert d.conn.stats.rttupdated == 0  # Karn: the SYN was retransmitted


def test_connection_establishment_times_out_after_keepinit() -> None:
    d = Drive()
    d.ev(ActiveOpen(), at=0)
    syns = 0
    closed = None
    while closed is None:
        when = min(d.conn.timers.values())
        kind = min(d.conn.timers, key=lambda k: d.conn.timers[k])
        out = d.ev(TimerExpired(kind), at=when)
        syns += sum(1 for t in tx(out) if t.flags & TH_SYN)
        closed = next(iter(of(out, Closed)), None)
    # SYNs again at 1, 3, 7, 15, 31, 63 s; TCPTV_KEEP_INIT ends it at 75 s.
    assert syns == 6 and d.now == 75 * S
    assert closed == Closed(ETIMEDOUT)
    assert not d.conn.timers


def test_rst_in_syn_sent() -> None:
    d = Drive()
    d.ev(ActiveOpen())
    assert d.seg(0, 0, TH_RST) == []  # RST without ACK: dropped
    # An unacceptable ACK draws <SEQ=SEG.ACK><CTL=RST> (RFC 9293 3.10.7.3).
    out = d.seg(5, ISS + 7, TH_ACK)
    assert tx(out) == [Transmit(ISS + 7, 0, TH_RST, 0)]
    assert st(d) == TCPState.SYN_SENT
    out = d.seg(0, ISS + 1, TH_RST | TH_ACK)
    assert Closed(ECONNREFUSED) in out and CancelTimer(TimerKind.REXMT) in out
    assert st(d) == TCPState.CLOSED


def test_passive_open_handshake_and_ack_of_syn() -> None:
    d = Drive()
    d.ev(PassiveOpen())
    assert d.seg(5, 0, TH_RST) == []  # LISTEN ignores RST
    assert tx(d.seg(5, 77, TH_ACK)) == [Transmit(77, 0, TH_RST, 0)]
    out = d.seg(PISS, 0, TH_SYN, 8192, mss=1000, wscale=2)
    (synack,) = tx(out)
    assert synack == Transmit(ISS, PISS + 1, TH_SYN | TH_ACK, 32768, 1460, 0, 0, 0, False)
    assert st(d) == TCPState.SYN_RECEIVED
    # A retransmitted SYN gets the SYN|ACK again (syn_cache_add).
    (again,) = tx(d.seg(PISS, 0, TH_SYN, 8192, mss=1000, wscale=2))
    assert again.flags == TH_SYN | TH_ACK and again.retransmit
    # An ACK that does not cover our SYN is answered with RST.
    assert tx(d.seg(PISS + 1, ISS, TH_ACK)) == [Transmit(ISS, 0, TH_RST, 0)]
    out = d.seg(PISS + 1, ISS + 1, TH_ACK, 100)
    assert Established() in out
    assert d.conn.snd_wnd == 100 << 2 and d.conn.t_segsz == 1000


def test_rst_acceptance_in_established_rfc5961() -> None:
    d = client()
    # Out of window: silently dropped.
    assert d.seg(PISS + 1 + 10 * 65536, 0, TH_RST) == []
    # In the window but not exactly rcv_nxt: a challenge ACK.
    (ack,) = tx(d.seg(PISS + 100, 0, TH_RST))
    assert ack == Transmit(ISS + 1, PISS + 1, TH_ACK, 32768)
    assert d.conn.stats.challengeack == 1 and st(d) == TCPState.ESTABLISHED
    out = d.seg(PISS + 1, 0, TH_RST)
    assert of(out, Closed) == [Closed(ECONNRESET)]
    assert st(d) == TCPState.CLOSED and not d.conn.timers


def test_syn_in_established_gets_challenge_ack() -> None:
    d = client()
    (ack,) = tx(d.seg(PISS + 1, 0, TH_SYN, mss=1460))
    assert ack.flags == TH_ACK and ack.ack == PISS + 1
    assert st(d) == TCPState.ESTABLISHED


def test_ack_of_unsent_data_is_answered_and_dropped() -> None:
    d = client()
    (ack,) = tx(d.seg(PISS + 1, ISS + 500, TH_ACK))
    assert ack.seq == ISS + 1 and d.conn.snd_una == ISS + 1
    assert d.conn.stats.rcvacktoomuch == 1


def test_active_close_fin_wait_time_wait_and_2msl() -> None:
    d = client()
    (fin,) = tx(d.ev(UserClose(), at=1 * S))
    assert fin == Transmit(ISS + 1, PISS + 1, TH_FIN | TH_ACK, 32768)
    assert st(d) == TCPState.FIN_WAIT_1
    d.seg(PISS + 1, ISS + 2, TH_ACK, at=1 * S + 50 * MS)
    assert st(d) == TCPState.FIN_WAIT_2
    out = d.seg(PISS + 1, ISS + 2, TH_FIN | TH_ACK, at=2 * S)
    assert PeerClosed() in out
    assert tx(out) == [Transmit(ISS + 2, PISS + 2, TH_ACK, 32768)]
    assert st(d) == TCPState.TIME_WAIT
    assert SetTimer(TimerKind.TWOMSL, 2 * S + 60 * S) in out  # 2 * TCPTV_MSL
    # The peer's FIN again (our ACK was lost): ACK it, restart 2MSL.
    out = d.seg(PISS + 1, ISS + 2, TH_FIN | TH_ACK, at=10 * S)
    assert tx(out) == [Transmit(ISS + 2, PISS + 2, TH_ACK, 32768)]
    assert SetTimer(TimerKind.TWOMSL, 70 * S) in out
    out = d.ev(TimerExpired(TimerKind.TWOMSL), at=70 * S)
    assert out == [Closed(None)]
    assert not d.conn.timers


def test_stale_timer_expiry_is_ignored() -> None:
    d = client()
    d.ev(UserClose(), at=1 * S)
    d.seg(PISS + 1, ISS + 2, TH_ACK, at=1 * S)
    d.seg(PISS + 1, ISS + 2, TH_FIN | TH_ACK, at=2 * S)
    d.seg(PISS + 1, ISS + 2, TH_FIN | TH_ACK, at=10 * S)
    assert d.ev(TimerExpired(TimerKind.TWOMSL), at=62 * S) == []  # re-armed to 70 s
    assert st(d) == TCPState.TIME_WAIT
    assert d.ev(TimerExpired(TimerKind.PERSIST), at=63 * S) == []  # never armed


def test_passive_close_close_wait_last_ack() -> None:
    d = client()
    out = d.seg(PISS + 1, ISS + 1, TH_FIN | TH_ACK)
    assert PeerClosed() in out and st(d) == TCPState.CLOSE_WAIT
    (fin,) = tx(d.ev(UserClose()))
    assert fin.flags == TH_FIN | TH_ACK and fin.seq == ISS + 1 and fin.ack == PISS + 2
    assert st(d) == TCPState.LAST_ACK
    out = d.seg(PISS + 2, ISS + 2, TH_ACK)
    assert out == [Closed(None), CancelTimer(TimerKind.REXMT)]


def test_fin_is_retransmitted_with_the_same_sequence_number() -> None:
    d = client()
    d.ev(UserClose(), at=1 * S)
    (fin,) = tx(d.ev(TimerExpired(TimerKind.REXMT), at=2 * S))
    assert fin.flags == TH_FIN | TH_ACK and fin.seq == ISS + 1 and fin.retransmit


def test_closing_state_on_simultaneous_close() -> None:
    d = client()
    d.ev(UserClose())
    d.seg(PISS + 1, ISS + 1, TH_FIN | TH_ACK)  # their FIN crosses ours
    assert st(d) == TCPState.CLOSING
    out = d.seg(PISS + 2, ISS + 2, TH_ACK)
    assert st(d) == TCPState.TIME_WAIT
    assert SetTimer(TimerKind.TWOMSL, d.now + 60 * S) in out


def test_rst_in_last_ack_closes_without_error() -> None:
    d = client()
    d.seg(PISS + 1, ISS + 1, TH_FIN | TH_ACK)
    d.ev(UserClose())
    assert of(d.seg(PISS + 2, 0, TH_RST), Closed) == [Closed(None)]


def test_user_abort_sends_rst_and_reports_econnaborted() -> None:
    d = client()
    d.conn.handle(SendQueued(10), d.now)
    out = d.ev(UserAbort())
    assert tx(out) == [Transmit(ISS + 11, PISS + 1, TH_RST | TH_ACK, 0)]
    assert Closed(ECONNABORTED) in out and not d.conn.timers


def test_close_in_syn_sent_and_listen_just_closes() -> None:
    d = Drive()
    d.ev(ActiveOpen())
    out = d.ev(UserClose())
    assert tx(out) == [] and Closed(None) in out
    d = Drive()
    d.ev(PassiveOpen())
    assert d.ev(UserClose()) == [Closed(None)]


def test_close_in_syn_received_sends_fin_once_established() -> None:
    d = Drive()
    d.ev(PassiveOpen())
    d.seg(PISS, 0, TH_SYN, mss=1460)
    assert tx(d.ev(UserClose())) == []
    out = d.seg(PISS + 1, ISS + 1, TH_ACK)
    assert Established() in out
    assert [t.flags for t in tx(out)] == [TH_FIN | TH_ACK]
    assert st(d) == TCPState.FIN_WAIT_1


def test_respond_to_closed_rfc9293() -> None:
    assert respond_to_closed(Segment(5, 9, TH_ACK, 0)) == Transmit(9, 0, TH_RST, 0)
    # No ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; SYN and FIN count.
    syn = Segment(5, 0, TH_SYN | TH_FIN, 0, payload_len=10)
    assert respond_to_closed(syn) == Transmit(0, 17, TH_RST | TH_ACK, 0)
    assert respond_to_closed(Segment(5, 0, TH_RST, 0)) is None


# ------------------------------------------------------------ bad input


def test_bad_events_are_rejected_and_leave_the_connection_unchanged() -> None:
    d = client()
    before = repr(d.conn), dict(d.conn.timers), d.conn.stats.as_dict()
    with pytest.raises(ValueError, match="before the previous"):
        d.conn.handle(SendQueued(5), d.now - 1)
    with pytest.raises(ValueError, match="now must be"):
        d.conn.handle(SendQueued(5), -3)
    with pytest.raises(TCPUsageError, match="only 0 bytes"):
        d.conn.handle(ReceiveRead(5), d.now)
    with pytest.raises(TCPUsageError, match="already opened"):
        d.conn.handle(ActiveOpen(), d.now)
    with pytest.raises(TypeError, match="not a TCP event"):
        d.conn.handle("SYN", d.now)  # type: ignore[arg-type]
    assert (repr(d.conn), dict(d.conn.timers), d.conn.stats.as_dict()) == before
    d.conn.check_invariants()
    d.ev(UserClose())
    with pytest.raises(TCPUsageError, match="after UserClose"):
        d.conn.handle(SendQueued(1), d.now)


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"seq": 1 << 32}, "seq"),
        ({"ack": -1}, "ack"),
        ({"flags": 256}, "flags"),
        ({"wnd": 65536}, "wnd"),
        ({"mss": 70000}, "mss"),
        ({"wscale": 300}, "wscale"),
        ({"payload_len": -1}, "payload_len"),
    ],
)
def test_segment_fields_are_validated(kwargs: dict[str, int], msg: str) -> None:
    base = {"seq": 0, "ack": 0, "flags": 0, "wnd": 0}
    base.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        Segment(**base)


def test_config_and_event_validation() -> None:
    with pytest.raises(ValueError, match="mss"):
        TCPConfig(mss=100)
    with pytest.raises(ValueError, match="rto_min_ns"):
        TCPConfig(rto_min_ns=2 * S, rto_max_ns=S)
    with pytest.raises(ValueError, match="nbytes"):
        SendQueued(0)
    with pytest.raises(ValueError, match="wscale"):
        TCPConfig(wscale=15)
    with pytest.raises(TypeError, match="TCPConfig"):
        from netstack.tcp import TCPConnection

        TCPConnection(object())  # type: ignore[arg-type]


def test_set_buffers_changes_the_window_and_the_requested_shift() -> None:
    d = Drive()
    d.conn.set_buffers(8192, 200_000)
    (syn,) = tx(d.ev(ActiveOpen()))
    assert syn.wscale == 2 and syn.wnd == 65535
    with pytest.raises(ValueError, match="rcvbuf"):
        d.conn.set_buffers(1, 0)


def test_server_helper_is_established() -> None:
    d = server()
    assert st(d) == TCPState.ESTABLISHED and d.conn.rcv_nxt == PISS + 1


def test_time_wait_does_not_answer_a_bare_ack() -> None:
    # Two ends both in TIME_WAIT after a simultaneous close must not ACK
    # each other's ACKs forever (tcp_input: an old ACK goes to step6).
    d = client()
    d.ev(UserClose())
    d.seg(PISS + 1, ISS + 1, TH_FIN | TH_ACK)
    d.seg(PISS + 2, ISS + 2, TH_ACK)
    assert st(d) == TCPState.TIME_WAIT
    assert tx(d.seg(PISS + 2, ISS + 2, TH_ACK)) == []


def test_simultaneous_open_unit() -> None:
    d = Drive()
    d.ev(ActiveOpen(), at=0)
    # Their SYN crosses ours (RFC 9293 figure 8).
    out = d.seg(PISS, 0, TH_SYN, 8000, mss=1460, wscale=0, at=10 * MS)
    assert st(d) == TCPState.SYN_RECEIVED
    # NetBSD's tcp_output drops SYN from tcp_outflags[SYN_RECEIVED] while our
    # SYN is outstanding: a bare ACK of their SYN.
    assert tx(out) == [Transmit(ISS + 1, PISS + 1, TH_ACK, 32768)]
    # Their ACK of our SYN (their own bare ACK or SYN|ACK) establishes.
    out = d.seg(PISS + 1, ISS + 1, TH_ACK, 8000, at=20 * MS)
    assert Established() in out and st(d) == TCPState.ESTABLISHED
    assert d.conn.snd_wnd == 8000 and CancelTimer(TimerKind.REXMT) in out


def test_data_on_the_synack_is_delivered() -> None:
    d = Drive()
    d.ev(ActiveOpen())
    out = d.seg(PISS, ISS + 1, TH_SYN | TH_ACK | TH_FIN, mss=1460, n=10)
    assert of(out, Deliver) == [Deliver(("seg", PISS, 10), 0, 10)]
    assert PeerClosed() in out and st(d) == TCPState.CLOSE_WAIT
    assert tx(out)[-1].ack == PISS + 12  # SYN + 10 bytes + FIN


def test_reading_after_close_is_accepted_and_sends_nothing() -> None:
    d = client()
    d.seg(PISS + 1, ISS + 1, TH_ACK, n=100)
    d.seg(PISS + 101, 0, TH_RST)
    assert d.conn.closed
    assert d.ev(ReceiveRead(100)) == []
    with pytest.raises(TCPUsageError, match="only 0 bytes"):
        d.conn.handle(ReceiveRead(1), d.now)


def test_fin_wait_2_after_close_is_bounded_by_maxidle() -> None:
    # tcp_input arms TCPT_2MSL with t_maxidle (8 * 75 s) when our FIN is
    # acked and the socket cannot receive; tcp_timer_2msl re-arms every 75 s
    # while idle <= maxidle, then closes.
    d = client()
    d.ev(UserClose(cantrcvmore=True), at=1 * S)
    out = d.seg(PISS + 1, ISS + 2, TH_ACK, at=2 * S)
    assert st(d) == TCPState.FIN_WAIT_2
    assert SetTimer(TimerKind.TWOMSL, 602 * S) in out
    out = d.ev(TimerExpired(TimerKind.TWOMSL), at=602 * S)  # idle 600 s: not yet
    assert out == [SetTimer(TimerKind.TWOMSL, 677 * S)]
    assert d.ev(TimerExpired(TimerKind.TWOMSL), at=677 * S) == [Closed(None)]


def test_fin_wait_2_after_shutdown_waits_for_the_peer() -> None:
    d = client()
    d.ev(UserClose(), at=1 * S)  # shutdown(SHUT_WR): the user may still read
    d.seg(PISS + 1, ISS + 2, TH_ACK, at=2 * S)
    assert st(d) == TCPState.FIN_WAIT_2 and not d.conn.timers
    out = d.ev(UserClose(cantrcvmore=True), at=3 * S)  # then close(2)
    assert out == [SetTimer(TimerKind.TWOMSL, 603 * S)]
