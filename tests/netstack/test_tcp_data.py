"""TCP core unit tests: data transfer, ACK policy, timers and congestion control.

Every expected number is derived in the comment next to it from the RFC or
NetBSD constant it checks.
"""

from __future__ import annotations

from tcp_unit import ISS, MS, PISS, Drive, S, client, of, tx

from netstack.tcp import (
    ETIMEDOUT,
    TH_ACK,
    TH_FIN,
    TH_PUSH,
    TH_RST,
    CancelTimer,
    Closed,
    DataAcked,
    Deliver,
    ReceiveRead,
    SendQueued,
    SetTimer,
    TCPConfig,
    TimerExpired,
    TimerKind,
    Transmit,
    UserClose,
)
from netstack.tcp.reass import ReassQueue
from netstack.tcp.rtt import RTTEstimator

D = PISS + 1  # the peer's first data byte
U = ISS + 1  # our first data byte


# ------------------------------------------------------------- receiving


def test_delayed_ack_every_second_segment_and_delack_timer() -> None:
    d = client()
    out = d.seg(D, U, n=1460, at=1 * S)
    # TCP_SETUP_ACK: first in-order segment sets TF_DELACK (200 ms callout).
    assert tx(out) == [] and SetTimer(TimerKind.DELACK, 1 * S + 200 * MS) in out
    assert of(out, Deliver) == [Deliver(("seg", D, 1460), 0, 1460)]
    out = d.seg(D + 1460, U, n=1460, at=1 * S + 1 * MS)
    # Second segment: TF_DELACK already set -> ACK now, callout cancelled.
    assert tx(out) == [Transmit(U, D + 2920, TH_ACK, 32768 - 2920)]
    assert CancelTimer(TimerKind.DELACK) in out
    d.seg(D + 2920, U, n=100, at=2 * S)
    out = d.ev(TimerExpired(TimerKind.DELACK), at=2 * S + 200 * MS)
    assert tx(out) == [Transmit(U, D + 3020, TH_ACK, 32768 - 3020)]
    assert d.conn.stats.delack == 1


def test_out_of_order_is_queued_acked_at_once_and_delivered_in_order() -> None:
    d = client()
    out = d.seg(D + 1000, U, n=500)
    assert of(out, Deliver) == []
    assert tx(out) == [Transmit(U, D, TH_ACK, 32768)]  # immediate duplicate ACK
    assert d.conn.stats.rcvoopack == 1
    out = d.seg(D + 200, U, n=1000)  # runs 200 into the queued [1000,1500)
    assert of(out, Deliver) == []
    out = d.seg(D, U, n=300)
    # tcp_reass "overlap at start": a new segment loses its tail to the
    # fragment it runs into, so [200,1200) became [200,1000) and [0,300)
    # becomes [0,200).
    assert of(out, Deliver) == [
        Deliver(("seg", D, 300), 0, 200),
        Deliver(("seg", D + 200, 1000), 0, 800),
        Deliver(("seg", D + 1000, 500), 0, 500),
    ]
    assert tx(out)[-1].ack == D + 1500


def test_reassembly_queue_trimming() -> None:
    q = ReassQueue()
    assert q.insert(10, "a", 0, 10, False) == 10  # [10,20)
    assert q.insert(15, "b", 0, 15, False) == 10  # [15,30) -> [20,30), skip 5 ("at end")
    assert [(s, e.payload, e.skip, e.length) for s, e in q.entries()] == [
        (10, "a", 0, 10),
        (20, "b", 5, 10),
    ]
    assert q.insert(12, "c", 0, 5, False) == 0  # inside [10,20): duplicate
    assert q.insert(5, "d", 0, 35, True) == 35  # covers both: they go
    assert [(s, e.payload, e.length, e.fin) for s, e in q.entries()] == [(5, "d", 35, True)]
    q2 = ReassQueue()
    q2.insert(20, "x", 0, 10, True)
    assert q2.insert(10, "y", 0, 15, False) == 10  # "overlap at start": y loses its tail
    assert [(s, e.payload, e.skip, e.length, e.fin) for s, e in q2.entries()] == [
        (10, "y", 0, 10, False),
        (20, "x", 0, 10, True),
    ]


def test_duplicate_segment_is_acked_and_not_delivered() -> None:
    d = client()
    d.seg(D, U, n=100)
    out = d.seg(D, U, n=100)
    assert of(out, Deliver) == [] and tx(out)[0].ack == D + 100
    assert d.conn.stats.rcvduppack == 1
    out = d.seg(D + 50, U, n=100)  # half old, half new
    assert of(out, Deliver) == [Deliver(("seg", D + 50, 100), 50, 50)]


def test_data_beyond_the_window_is_trimmed() -> None:
    d = client(TCPConfig(iss=ISS, rcvbuf=4000))
    out = d.seg(D, U, n=5000)
    assert of(out, Deliver) == [Deliver(("seg", D, 5000), 0, 4000)]
    assert d.conn.stats.rcvpackafterwin == 1


def test_zero_window_probe_is_acked_without_taking_data() -> None:
    d = client(TCPConfig(iss=ISS, rcvbuf=2000))
    d.seg(D, U, n=2000)
    out = d.seg(D + 2000, U, n=1)
    assert of(out, Deliver) == []
    assert tx(out) == [Transmit(U, D + 2000, TH_ACK, 0)]
    assert d.conn.stats.rcvwinprobe == 1


def test_receiver_sws_avoidance_and_window_update() -> None:
    d = client(TCPConfig(iss=ISS, rcvbuf=8192))
    d.seg(D, U, n=1460)
    d.seg(D + 1460, U, n=1460)
    d.seg(D + 2920, U, n=1460)
    out = d.seg(D + 4380, U, n=1460)
    d.seg(D + 5840, U, n=1460)
    out = d.seg(D + 7300, U, n=892)  # the buffer (8192) is full
    assert tx(out)[-1].wnd == 0
    # 1000 bytes of room: less than a quarter buffer (2048) and than an MSS
    # -> still 0, and no update is worth sending (RFC 9293 3.8.6.2.2).
    assert tx(d.ev(ReceiveRead(1000))) == []
    # 3000 bytes of room >= 2048: advertise it; 3000 >= 2 * 1460 -> update.
    out = d.ev(ReceiveRead(2000))
    assert tx(out) == [Transmit(U, D + 8192, TH_ACK, 3000)]
    assert d.conn.stats.sndwinup == 1


def test_fin_out_of_order_waits_for_the_data() -> None:
    d = client()
    out = d.seg(D + 100, U, TH_ACK | TH_FIN, n=50)
    assert of(out, Deliver) == [] and d.conn.rcv_nxt == D
    out = d.seg(D, U, n=100)
    assert [a.length for a in of(out, Deliver)] == [100, 50]
    assert d.conn.rcv_nxt == D + 151 and tx(out)[-1].ack == D + 151


# --------------------------------------------------------------- sending


def test_sends_are_segmented_at_mss_within_cwnd_with_push_on_the_last() -> None:
    d = client()
    out = d.ev(SendQueued(5000), at=1 * S)
    # cwnd 4380 = three full segments; the rest waits.
    assert [(t.seq, t.data_offset, t.data_len, t.flags) for t in tx(out)] == [
        (U, 0, 1460, TH_ACK),
        (U + 1460, 1460, 1460, TH_ACK),
        (U + 2920, 2920, 1460, TH_ACK),
    ]
    assert SetTimer(TimerKind.REXMT, 2 * S) in out  # RTO clamped to TCPTV_MIN
    out = d.seg(D, U + 2920, at=1 * S + 100 * MS)
    assert of(out, DataAcked) == [DataAcked(2920)]
    # Slow start with ABC L=2*SMSS: cwnd 4380 + min(2920, 2920) = 7300.
    assert d.conn.snd_cwnd == 7300
    # 620 bytes are unsent, less than an MSS, with 1460 still in flight:
    # Nagle holds them (tcp_output: not idle, not the whole buffer at once).
    assert tx(out) == []
    out = d.seg(D, U + 4380, at=1 * S + 200 * MS)
    assert [(t.seq, t.data_offset, t.data_len, t.flags) for t in tx(out)] == [
        (U + 4380, 0, 620, TH_ACK | TH_PUSH),
    ]


def test_nagle_holds_a_small_segment_while_data_is_unacknowledged() -> None:
    d = client()
    (first,) = tx(d.ev(SendQueued(100)))
    assert first.data_len == 100  # idle: the small segment goes
    assert tx(d.ev(SendQueued(100))) == []  # RFC 896: wait for the ACK
    out = d.seg(D, U + 100)
    assert [(t.data_offset, t.data_len) for t in tx(out)] == [(0, 100)]
    d2 = client(TCPConfig(iss=ISS, nodelay=True))
    d2.ev(SendQueued(100))
    assert [t.data_len for t in tx(d2.ev(SendQueued(100)))] == [100]


def test_sender_sws_sends_at_half_the_largest_window() -> None:
    d = client(wnd=1000)
    out = d.ev(SendQueued(3000))
    assert [t.data_len for t in tx(out)] == [1000]
    out = d.seg(D, U + 1000, wnd=400)
    # 400 < MSS, data still unsent beyond it, not idle after... it is idle,
    # but 400 + 1000 < 3000; 400 < max_sndwnd/2 = 500 -> hold.
    assert tx(out) == []
    out = d.seg(D, U + 1000, wnd=600)  # 600 >= 500: send
    assert [t.data_len for t in tx(out)] == [600]


# ------------------------------------------------------- RTT, RTO, Karn


def test_rfc6298_estimator_numbers() -> None:
    r = RTTEstimator(1 * S, 100 * MS, 64 * S)
    assert r.rto(0) == 1 * S  # no sample: the initial RTO
    r.sample(100 * MS)  # SRTT 100, RTTVAR 50, RTO 100 + 200
    assert r.rexmtval() == 300 * MS
    r.sample(200 * MS)
    # RTTVAR = 3/4*50 + 1/4*|100-200| = 62.5; SRTT = 7/8*100 + 1/8*200 = 112.5
    assert (r.srtt, r.rttvar) == (112_500_000, 62_500_000)
    assert r.rexmtval() == 362_500_000
    assert r.rto(3) == 8 * 362_500_000  # backoff doubles
    # tcp_backoff[] stops doubling at 64: 64 * 362.5 ms, below REXMTMAX.
    assert r.rto(10) == r.rto(6) == 64 * 362_500_000
    assert RTTEstimator(1 * S, 1 * S, 64 * S).rto(7) == 64 * S
    r.clobber()  # after > TCP_MAXRXTSHIFT/4 backoffs
    assert not r.has_sample and r.rexmtval() == 362_500_000  # same RTO until a sample


def test_rtt_is_measured_from_data_and_karn_skips_retransmissions() -> None:
    d = client(TCPConfig(iss=ISS, rto_min_ns=10 * MS), rtt=100 * MS)
    d.ev(SendQueued(100), at=1 * S)
    d.seg(D, U + 100, at=1 * S + 200 * MS)
    assert (d.conn.rtt.srtt, d.conn.rtt.rttvar) == (112_500_000, 62_500_000)
    assert d.conn.stats.rttupdated == 2
    d.ev(SendQueued(100), at=2 * S)
    rto = d.conn.timers[TimerKind.REXMT]
    assert rto == 2 * S + 362_500_000
    out = d.ev(TimerExpired(TimerKind.REXMT), at=rto)
    assert [(t.seq, t.data_len, t.retransmit) for t in tx(out)] == [(U + 100, 100, True)]
    d.seg(D, U + 200, at=rto + 50 * MS)
    assert d.conn.stats.rttupdated == 2  # Karn: no sample from the retransmission


def test_rexmt_backoff_then_etimedout_after_tcp_maxrxtshift() -> None:
    d = client()
    d.ev(SendQueued(100), at=1 * S)
    rexmits = 0
    gaps = []
    last = d.now
    while True:
        when = d.conn.timers[TimerKind.REXMT]
        gaps.append((when - last) // S)
        last = when
        out = d.ev(TimerExpired(TimerKind.REXMT), at=when)
        if of(out, Closed):
            break
        rexmits += sum(1 for t in tx(out) if t.data_len)
    # TCP_MAXRXTSHIFT 12 retransmissions at 1, 2, 4, ..., 64 (TCPTV_REXMTMAX) s,
    # then the 13th expiry drops: 1+2+4+8+16+32+64*7 = 511 s.
    assert rexmits == 12
    assert gaps == [1, 2, 4, 8, 16, 32, 64, 64, 64, 64, 64, 64, 64]
    assert d.now == 1 * S + 511 * S
    assert of(out, Closed) == [Closed(ETIMEDOUT)]
    assert tx(out)[0].flags == TH_RST | TH_ACK  # tcp_drop RSTs the peer
    assert d.conn.stats.timeoutdrop == 1 and not d.conn.timers


def test_rto_collapses_cwnd_and_halves_ssthresh() -> None:
    d = client(TCPConfig(iss=ISS, init_win=10))
    d.ev(SendQueued(14600), at=1 * S)  # IW 10 segments = 14600
    d.ev(TimerExpired(TimerKind.REXMT), at=2 * S)
    c = d.conn
    # tcp_reno_slow_retransmit: ssthresh = max(min(wnd, cwnd)/2/MSS, 2) MSS
    # = (14600 // 2 // 1460) * 1460 = 7300; cwnd = 1 MSS.
    assert (c.snd_cwnd, c.snd_ssthresh) == (1460, 7300)
    assert c.snd_nxt == U + 1460 and c.snd_high == U + 14600


# ------------------------------------------------ fast retransmit, NewReno


def _ten_in_flight() -> tuple[Drive, list[Transmit]]:
    d = client(TCPConfig(iss=ISS, init_win=10))
    # TCP_INITIAL_WINDOW(10, 1460) = min(14600, max(2920, 14600)) = 14600.
    assert d.conn.snd_cwnd == 14600
    out = d.ev(SendQueued(14600), at=1 * S)
    return d, tx(out)


def test_three_duplicate_acks_fast_retransmit_and_newreno_recovery() -> None:
    d, sent = _ten_in_flight()
    assert len(sent) == 10
    c = d.conn
    d.seg(D, U + 1460, at=1 * S + 100 * MS)  # segment 1 acked
    # Slow start: 14600 + min(1460, 2920) = 16060.
    assert c.snd_cwnd == 16060
    for i in range(2):
        assert tx(d.seg(D, U + 1460)) == []  # duplicate ACKs 1 and 2
        assert c.t_dupacks == i + 1
    out = d.seg(D, U + 1460)
    # The third: retransmit segment 2 (offset 0 from snd_una).
    assert tx(out) == [Transmit(U + 1460, D, TH_ACK, 32768, None, None, 0, 1460, True)]
    # ssthresh = (min(65535-? , 16060) / 2 / 1460) * 1460; snd_wnd after the
    # ACK of 1460 is 65535, so min = 16060 -> 8030 // 1460 = 5 -> 7300;
    # cwnd = ssthresh + 3 * MSS = 11680; recover = snd_max.
    assert (c.snd_ssthresh, c.snd_cwnd, c.snd_recover) == (7300, 11680, U + 14600)
    assert c.stats.fastrexmt == 1 and c.t_partialacks == 0
    # A partial ACK (up to segment 5): retransmit segment 6 at once, from
    # offset 5840 of the *old* snd_una, before the sbdrop of 5840 bytes.
    out = d.seg(D, U + 7300)
    assert [type(a).__name__ for a in out[:2]] == ["Transmit", "DataAcked"]
    assert tx(out)[0] == Transmit(U + 7300, D, TH_ACK, 32768, None, None, 5840, 1460, True)
    assert of(out, DataAcked) == [DataAcked(5840)]
    # Deflate by the amount acked, add back one MSS: 11680 - (5840 - 1460).
    assert c.snd_cwnd == 7300 and c.stats.partialack == 1
    # The full ACK ends recovery: nothing is left in flight (0 < ssthresh),
    # so cwnd = 0 + MSS = 1460; then tcp_reno_newack's slow start adds
    # min(acked 7300, 2 * MSS) = 2920 -> 4380.
    out = d.seg(D, U + 14600)
    assert c.t_partialacks == -1 and c.t_dupacks == 0
    assert c.snd_cwnd == 4380
    assert of(out, DataAcked) == [DataAcked(7300)]


def test_duplicate_acks_below_snd_high_do_not_fast_retransmit() -> None:
    d, _ = _ten_in_flight()
    c = d.conn
    d.ev(TimerExpired(TimerKind.REXMT), at=2 * S)  # snd_high = snd_max
    for _ in range(3):
        d.seg(D, U)
    assert c.t_dupacks == 0 and c.stats.rcvdupack == 3
    assert c.stats.fastrexmt == 0  # RFC 6582 4.1: not for data before the RTO


def test_duplicate_ack_needs_the_rexmt_timer_and_same_window() -> None:
    d = client()
    for _ in range(5):
        d.seg(D, U)
    # Counted as duplicates (tcps_rcvdupack) but no REXMT timer is running,
    # so t_dupacks stays 0.
    assert d.conn.t_dupacks == 0 and d.conn.stats.rcvdupack == 5
    d.ev(SendQueued(100))
    d.seg(D, U)
    assert d.conn.t_dupacks == 1
    d.seg(D, U, wnd=1000)  # a window change is not a duplicate
    assert d.conn.stats.rcvdupack == 6


# --------------------------------------------------------------- persist


def test_zero_window_persist_probes_back_off_within_persmin_persmax() -> None:
    d = client(wnd=0)
    out = d.ev(SendQueued(5000), at=1 * S)
    assert tx(out) == []
    # tcp_setpersist: RTO (1 s) << 0 clamped to TCPTV_PERSMIN 5 s.
    assert SetTimer(TimerKind.PERSIST, 6 * S) in out
    gaps = []
    t = 1 * S
    for _ in range(7):
        when = d.conn.timers[TimerKind.PERSIST]
        gaps.append((when - t) // S)
        t = when
        out = d.ev(TimerExpired(TimerKind.PERSIST), at=when)
        (probe,) = tx(out)
        # One byte beyond the closed window, always the first unacked one.
        assert (probe.seq, probe.data_offset, probe.data_len) == (U, 0, 1)
        d.seg(D, U, wnd=0, at=when + 10 * MS)  # the peer still has no room
    # 1 s << shift for shift 0..6, clamped to [5, 60] s.
    assert gaps == [5, 5, 5, 8, 16, 32, 60]
    assert d.conn.stats.sndprobe == 7 and d.conn.stats.persisttimeo == 7
    out = d.seg(D, U, wnd=65535, at=t + 1 * S)  # the window opens
    assert [x.data_len for x in tx(out)][:1] == [1460]
    assert TimerKind.PERSIST not in d.conn.timers and TimerKind.REXMT in d.conn.timers


def test_no_rst_storm_on_rst() -> None:
    d = client()
    d.seg(D, 0, TH_RST)
    assert d.seg(D, U, TH_RST) == []  # closed: an RST is never answered


def test_data_in_fin_wait_is_acked_at_once() -> None:
    # tcp_input delays ACKs only in ESTABLISHED; after our FIN, in-order
    # data goes through tcp_reass with TF_ACKNOW.
    d = client()
    d.ev(UserClose())
    out = d.seg(D, U, n=100)
    assert of(out, Deliver) == [Deliver(("seg", D, 100), 0, 100)]
    assert [t.ack for t in tx(out)] == [D + 100]


def test_pure_ack_behind_a_closed_window_arms_persist() -> None:
    # 1000 bytes fill the peer's window; its ACK of all of them closes the
    # window and carries a FIN, which we must ACK at once.  2000 bytes wait:
    # without PERSIST a lost window update would deadlock both ends.
    d = client(wnd=1000)
    (first,) = tx(d.ev(SendQueued(3000), at=1 * S))
    assert first.data_len == 1000
    out = d.seg(D, U + 1000, TH_ACK | TH_FIN, wnd=0, at=1 * S + 100 * MS)
    assert [(t.data_len, t.ack) for t in tx(out)] == [(0, D + 1)]
    assert TimerKind.REXMT not in d.conn.timers
    # tcp_setpersist: RTO 1 s << 0, clamped up to TCPTV_PERSMIN 5 s.
    assert SetTimer(TimerKind.PERSIST, 6 * S + 100 * MS) in out


# ------------------------------------------------------- header prediction


def test_predicted_ack_takes_the_fast_path_without_opening_cwnd() -> None:
    # tcp_input.c 1.438.2.1 header prediction: a pure ACK for outstanding
    # data, in ESTABLISHED, same window, snd_nxt == snd_max, cwnd >= snd_wnd
    # and no recovery.  A peer window of 2920 with cwnd 4380 (the IW) meets
    # cwnd >= snd_wnd at once.
    d = client(wnd=2920)
    out = d.ev(SendQueued(2920), at=1 * S)
    assert len(tx(out)) == 2
    d.conn.t_dupacks = 1  # a duplicate ACK was counted before
    out = d.seg(D, U + 1460, wnd=2920, at=1 * S + 100 * MS)
    c = d.conn
    assert c.stats.predack == 1 and c.stats.rcvackpack == 1 and c.stats.rcvackbyte == 1460
    assert of(out, DataAcked) == [DataAcked(1460)]
    # the predicted ACK does not run tcp_newreno_newack: cwnd stays at the IW
    # (the general path would have opened it by min(1460, 2 * 1460))
    assert c.snd_cwnd == 4380
    # nor does it clear t_dupacks (only the general path's
    # fast_retransmit_newack does), and it drags snd_wl2 (PR kern/55567)
    assert c.t_dupacks == 1
    assert c.snd_wl2 == U + 1460 and c.snd_una == U + 1460
    # data still outstanding: REXMT re-armed at the current RTO
    assert SetTimer(TimerKind.REXMT, 1 * S + 100 * MS + c.t_rxtcur) in out


def test_ack_with_cwnd_below_the_window_takes_the_general_path() -> None:
    # cwnd 4380 < snd_wnd 65535: not predicted; slow start opens cwnd.
    d = client()
    d.ev(SendQueued(2920), at=1 * S)
    d.conn.t_dupacks = 1
    d.seg(D, U + 1460, at=1 * S + 100 * MS)
    c = d.conn
    assert c.stats.predack == 0 and c.stats.rcvackpack == 1
    assert c.snd_cwnd == 4380 + 1460  # RFC 3465 with L = 2 SMSS: min(1460, 2920)
    assert c.t_dupacks == 0


def test_predicted_data_is_delivered_with_the_delayed_ack_rules() -> None:
    d = client()
    out = d.seg(D, U, n=1460, at=1 * S)
    c = d.conn
    assert c.stats.preddat == 1 and c.stats.rcvpack == 1 and c.stats.rcvbyte == 1460
    assert c.snd_wl1 == D  # pulled up to th_seq
    assert of(out, Deliver) == [Deliver(("seg", D, 1460), 0, 1460)]
    assert SetTimer(TimerKind.DELACK, 1 * S + 200 * MS) in out and tx(out) == []
    out = d.seg(D + 1460, U, n=1460, at=1 * S + 1 * MS)
    assert c.stats.preddat == 2
    assert tx(out) == [Transmit(U, D + 2920, TH_ACK, 32768 - 2920)]


def test_segments_that_are_not_predicted() -> None:
    d = client()
    # a window change, a PUSH-less FIN, out-of-order data: the general path
    d.seg(D, U, n=100, wnd=60000, at=1 * S)
    d.seg(D + 1000, U, n=100, at=1 * S + 1 * MS)
    d.seg(D + 100, U, flags=TH_ACK | TH_FIN, at=1 * S + 2 * MS)
    assert d.conn.stats.preddat == 0 and d.conn.stats.predack == 0


# ------------------------------------------- the glue's entry points


def test_glue_entry_points_act_as_handle_does() -> None:
    # handle_send_queued / handle_receive_read are handle(SendQueued) /
    # handle(ReceiveRead) without the event: same actions, same state, and
    # what handle refuses they refuse with handle's own error
    import pytest

    from netstack.tcp import TCPUsageError

    a, b = client(), client()
    for d in (a, b):
        d.seg(D, U, n=1460, at=1 * S)
    steps: list[tuple[str, int, int]] = [
        ("send", 3000, 2 * S), ("read", 1000, 2 * S), ("send", 100, 3 * S), ("read", 460, 3 * S),
    ]
    for what, n, at in steps:
        if what == "send":
            want = a.ev(SendQueued(n), at=at)
            got = b.conn.handle_send_queued(n, at)
        else:
            want = a.ev(ReceiveRead(n), at=at)
            got = b.conn.handle_receive_read(n, at)
        b.conn.check_invariants()
        assert got == want
        assert (b.conn.snd_nxt, b.conn.sb_cc, b.conn.so_rcv_cc, b.conn.timers) == (
            a.conn.snd_nxt, a.conn.sb_cc, a.conn.so_rcv_cc, a.conn.timers)
    with pytest.raises(TCPUsageError, match="ReceiveRead"):
        b.conn.handle_receive_read(1, 4 * S)  # nothing left to read
    with pytest.raises(ValueError, match="before the previous"):
        b.conn.handle_send_queued(1, 1 * S)  # the clock ran backwards
    b.ev(UserClose(), at=5 * S)
    with pytest.raises(TCPUsageError, match="after UserClose"):
        b.conn.handle_send_queued(1, 6 * S)
