"""The model against this machine's Linux kernel, over a TUN device in a
private network namespace (netstack.tun, netstack.peer; specs/interop.md).

Every test makes its own namespace and checks on the way out that it is
gone, that no device or child process is left, and that the model is
quiescent (no loan, loan KVA, mbuf or cluster; machine invariants).
Skipped, with what is missing named, without root or /dev/net/tun.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from netstack.netns import missing_requirements, read_pcap
from netstack.peer import PeerSession, pattern
from netstack.sockapi import UserSocket, get_layer
from netstack.sockerr import ECONNREFUSED, SocketError
from netstack.tcp import TCPConnection
from netstack.tcp_usrreq import TCPTable
from netstack.tun import KERNEL_ADDR, MODEL_ADDR, Hook, drop_matching, tcp_payload_len
from netstack.wire import TH_ACK, TH_FIN, TH_RST, TH_SYN

_missing = missing_requirements()
if _missing:
    pytest.skip("interop with the kernel needs " + ", ".join(_missing), allow_module_level=True)

MiB = 1 << 20
KADDR = socket.inet_aton(KERNEL_ADDR)
MADDR = socket.inet_aton(MODEL_ADDR)
UDP_SIZES = [1, 100, 1472, 1473, 4095, 8192, 30000, 65507]


def _netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def session(tmp_path: Path) -> Iterator[PeerSession]:
    yield from _session(tmp_path, False)


@pytest.fixture
def captured_session(tmp_path: Path) -> Iterator[PeerSession]:
    """A session whose TUN device the kernel's side also captures (dumpcap)."""
    yield from _session(tmp_path, True)


def _session(tmp_path: Path, kcap: bool) -> Iterator[PeerSession]:
    ps = PeerSession(tmp_path, kernel_capture=kcap)
    name, dev = ps.ns.name, ps.backend.dev
    try:
        yield ps
    finally:
        ps.close()
    ps.check_quiescent()
    assert ps.backend.fd is None and ps.backend.closed
    assert not ps.ns.exists() and name not in _netns_list()
    assert not Path("/sys/class/net", dev).exists()  # never in this namespace either
    assert all(p.poll() is not None for p in ps.ns.children)
    assert not ps.host.machine.kernel_loans and not get_layer(ps.host).loans
    ps.network.close()


# -------------------------------------------------------------- helpers


def _tcp(frame: bytes) -> tuple[int, int, int, int, int, bytes, int] | None:
    """(sport, dport, seq, ack, flags, options, payload length) of a TCP frame."""
    if len(frame) < 40 or frame[9] != 6:
        return None
    hl = (frame[0] & 15) << 2
    sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", frame, hl)
    doff = (off >> 4) << 2
    return sport, dport, seq, ack, flags, frame[hl + 20 : hl + doff], tcp_payload_len(frame)


def _frames(ps: PeerSession, src: bytes) -> list[bytes]:
    ps.backend.flush()
    return [p for _, p in read_pcap(ps.pcap) if p[12:16] == src]


def _segments(ps: PeerSession, src: bytes) -> list[tuple[int, int, int, int, int, bytes, int]]:
    return [t for f in _frames(ps, src) if (t := _tcp(f)) is not None]


def _options(opts: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i < len(opts):
        k = opts[i]
        if k == 0:
            break
        if k == 1:
            i += 1
            continue
        n = opts[i + 1]
        out[k] = opts[i + 2 : i + n]
        i += n
    return out


def _cksum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _segment(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
             options: bytes = b"", wnd: int = 1024, bad_sum: bool = False) -> bytes:
    """A whole IPv4 packet kernel -> model with a TCP segment, checksums right
    (or the TCP one wrong)."""
    assert len(options) % 4 == 0
    th = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                     (5 + len(options) // 4) << 4, flags, wnd, 0, 0) + options
    seg = th + payload
    c = _cksum(KADDR + MADDR + struct.pack("!BBH", 0, 6, len(seg)) + seg)
    if bad_sum:
        c ^= 0x5A5A
    seg = seg[:16] + struct.pack("!H", c) + seg[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 0x4242, 0x4000, 64, 6, 0,
                     KADDR, MADDR)
    ip = ip[:10] + struct.pack("!H", _cksum(ip)) + ip[12:]
    return ip + seg


def _raw_send(ps: PeerSession, *pkts: bytes) -> None:
    """Send crafted packets from inside the namespace (they leave by the TUN
    device) and run the model until it has taken them and answered."""
    st = ps.backend.stats
    want = st.rx_frames + len(pkts)
    r = ps.ns.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with r:
        for pkt in pkts:
            r.sendto(pkt, (MODEL_ADDR, 0))
    assert ps.run_until(lambda: st.rx_frames >= want, 30)
    # everything due by now, and the model's answers (stamped microseconds
    # after the arrival: its CPU's time), has run once this returns
    ps.sched.run_until(ps.sched.wall() + 20_000_000)


def _open_kernel_to_model(
    ps: PeerSession, port: int
) -> tuple[socket.socket, UserSocket, TCPConnection]:
    """A connection the kernel opened to a model listener: (kernel socket,
    model socket, the model's TCPConnection)."""
    ls = ps.host.socket("tcp")
    ls.bind(("", port))
    ls.listen()
    k = ps.ksocket()
    t = ps.kthread(lambda: k.connect((MODEL_ADDR, port)), "kernel-connect")
    t.start()
    conn, _ = ls.accept()
    ls.close()
    ps.wait(t)
    conn.setblocking(False)
    return k, conn, conn.so.so_pcb.conn


def _drain(ps: PeerSession, conn: UserSocket, want: int) -> bytes:
    got = bytearray()

    def more() -> bool:
        with contextlib.suppress(SocketError):  # EWOULDBLOCK: nothing yet
            got.extend(conn.recv_bytes(65536))
        return len(got) >= want

    ps.run_until(more, 30)
    return bytes(got)


def _close_kernel_to_model(ps: PeerSession, k: socket.socket, conn: UserSocket) -> None:
    k.shutdown(socket.SHUT_WR)
    assert ps.run_until(lambda: _eof(conn), 10)
    assert conn.recv_bytes(1) == b""
    conn.close()
    t = ps.kthread(lambda: k.recv(10), "kernel-eof")
    t.start()
    assert ps.wait(t) == b""
    k.close()


def _tcpstat(ps: PeerSession) -> Counter[str]:
    t = ps.host.stack.pcbs["tcp"]
    assert isinstance(t, TCPTable)
    return t.tcpstat


def _eof(conn: UserSocket) -> bool:
    from netstack.socket import SS_CANTRCVMORE

    return bool(conn.so.so_state & SS_CANTRCVMORE)


# ----------------------------------------------------------- TCP transfers


def test_tcp_32mib_model_to_kernel_loaned_and_overwritten(session: PeerSession) -> None:
    data = pattern(32 * MiB, 7)
    c0 = dict(session.host.machine.counters)
    r = session.model_to_kernel(data, overwrite=True)
    c = session.host.machine.counters
    assert r.got_bytes == len(data) and r.got_sha256 == r.sent_sha256
    sends = len(data) // 65536
    assert c["sosend loan big"] - c0.get("sosend loan big", 0) == sends
    loaned = c["loan"] - c0.get("loan", 0)
    assert loaned == len(data) // 4096
    # every page was rewritten while lent: every loan broke, the kernel got the old bytes
    assert c["loan.break"] - c0.get("loan.break", 0) == loaned


def test_tcp_32mib_kernel_to_model(session: PeerSession) -> None:
    data = pattern(32 * MiB, 8)
    r = session.kernel_to_model(data)
    assert r.got_bytes == len(data) and r.got_sha256 == r.sent_sha256
    assert session.backend.stats.rx_not_ipv4 == 0


def test_tcp_handshake_options_both_ways(session: PeerSession) -> None:
    """MSS and window scale honoured both ways; SACK-permitted and timestamps
    (which the model does not implement) skipped, so the kernel uses neither."""
    up = session.model_to_kernel(pattern(200_000, 1), port=5101)
    down = session.kernel_to_model(pattern(200_000, 2), port=5102)
    assert up.exact and down.exact
    kt = _segments(session, KADDR)
    mt = _segments(session, MADDR)
    ksyn = [t for t in kt if t[4] & TH_SYN]
    msyn = [t for t in mt if t[4] & TH_SYN]
    assert [t[4] & (TH_SYN | TH_ACK) for t in ksyn] == [TH_SYN | TH_ACK, TH_SYN]
    assert [t[4] & (TH_SYN | TH_ACK) for t in msyn] == [TH_SYN, TH_SYN | TH_ACK]
    synack, syn = (_options(t[5]) for t in ksyn)
    assert set(syn) == {2, 3, 4, 8}  # the kernel's SYN: MSS, WS, SACK-permitted, TS
    assert set(synack) == {2, 3}  # answering the model's SYN: only what it offered
    assert struct.unpack("!H", syn[2])[0] == 1460
    for t in msyn:
        assert set(_options(t[5])) == {2, 3}
    # no timestamps after the handshake: the kernel's data segments carry no options
    assert all(not t[5] for t in kt if t[6] > 0)
    c_up, c_down = session.conns
    for conn, kopts in ((c_up, synack), (c_down, syn)):
        assert conn.t_peermss == 1460 and conn.t_segsz == 1460
        assert conn.rcvd_scale and conn.snd_scale == kopts[3][0]
    # orderly close from either side: FIN each way, no RST anywhere
    assert not any(t[4] & TH_RST for t in kt + mt)
    assert sum(1 for t in kt if t[4] & TH_FIN) == 2
    assert sum(1 for t in mt if t[4] & TH_FIN) == 2


def test_kernel_options_seen_by_the_kernel(session: PeerSession) -> None:
    """The kernel's own view (TCP_INFO): window scaling on, no SACK, no timestamps."""
    k, conn, tp = _open_kernel_to_model(session, 5103)
    info = k.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    options, wscale = info[5], info[6]
    snd_mss, = struct.unpack_from("=I", info, 16)
    assert options & 4 and not options & 3  # TCPI_OPT_WSCALE only (not TIMESTAMPS, SACK)
    assert wscale & 15 == tp.rcv_scale  # the kernel shifts our window by our scale
    assert snd_mss == 1460
    _close_kernel_to_model(session, k, conn)


def test_rst_on_closed_ports_both_ways(session: PeerSession) -> None:
    s = session.host.socket("tcp")
    with pytest.raises(SocketError) as ei:
        s.connect((KERNEL_ADDR, 5999))  # nobody listens in the kernel
    assert ei.value.bsd_errno == ECONNREFUSED
    s.close()
    k = session.ksocket()

    def connect() -> None:
        with k:
            k.connect((MODEL_ADDR, 5998))  # nobody listens in the model

    t = session.kthread(connect, "kernel-connect")
    t.start()
    with pytest.raises(ConnectionRefusedError):
        session.wait(t)
    mf = _frames(session, MADDR)
    rst = [seg for f in mf if (seg := _tcp(f)) and seg[4] & TH_RST]
    assert len(rst) == 1 and rst[0][0] == 5998 and rst[0][4] & TH_ACK


# ------------------------------------------------------- loss and repair


def _is_data(frame: bytes) -> bool:
    return tcp_payload_len(frame) > 0


def _skip_then_drop(skip: int, count: int) -> Hook:
    seen = [0]

    def pred(frame: bytes) -> bool:
        if not _is_data(frame):
            return False
        seen[0] += 1
        return seen[0] > skip

    return drop_matching(pred, count)


def test_kernel_retransmits_what_the_model_dropped(session: PeerSession) -> None:
    session.backend.rx_hook = _skip_then_drop(20, 3)
    r = session.kernel_to_model(pattern(1 * MiB, 3))
    assert r.exact
    assert session.backend.stats.rx_dropped == 3
    seqs = [t[2] for f in _frames(session, KADDR) if (t := _tcp(f)) and t[6] > 0]
    assert len(seqs) - len(set(seqs)) >= 3  # the dropped ones came again


def test_model_retransmissions_accepted_by_the_kernel(session: PeerSession) -> None:
    session.backend.tx_hook = _skip_then_drop(20, 3)
    r = session.model_to_kernel(pattern(1 * MiB, 4))
    assert r.exact
    assert session.backend.stats.tx_dropped == 3
    assert session.conns[0].stats.sndrexmitpack >= 3


def test_corruption_on_the_path_is_caught_and_repaired(session: PeerSession) -> None:
    """A flipped payload bit (checksum left as it was): the model drops the
    segment (tcps_rcvbadsum), the kernel retransmits it."""
    seen = [0]

    def corrupt(frame: bytes) -> bytes:
        if _is_data(frame):
            seen[0] += 1
            if seen[0] in (10, 30):
                b = bytearray(frame)
                b[-5] ^= 0x10
                return bytes(b)
        return frame

    session.backend.rx_hook = corrupt
    r = session.kernel_to_model(pattern(1 * MiB, 5))
    assert r.exact
    assert session.backend.stats.rx_rewritten == 2
    assert _tcpstat(session)["tcps_rcvbadsum"] == 2


# ------------------------------------------------ bad input from the kernel


def test_crafted_segments_get_rfc_behaviour(session: PeerSession) -> None:
    """Raw packets sent from inside the namespace to a live connection:
    out of window (ACKed, dropped: RFC 9293 3.10.7.4), a bad checksum
    (dropped silently), an out-of-window RST (ignored: RFC 5961 3.2), a bad
    option length (dropped); the connection carries on byte-exact."""
    k, conn, tp = _open_kernel_to_model(session, 5201)
    first = pattern(50_000, 9)
    k.sendall(first)
    assert _drain(session, conn, len(first)) == first
    kport = k.getsockname()[1]
    st = _tcpstat(session)

    nxt, una = tp.rcv_nxt, tp.snd_nxt
    n_model = len(_frames(session, MADDR))
    _raw_send(session, _segment(kport, 5201, nxt + (1 << 24), una, TH_ACK, b"X" * 100))
    assert tp.rcv_nxt == nxt and tp.stats.rcvpackafterwin == 1
    acks = [_tcp(f) for f in _frames(session, MADDR)[n_model:]]
    assert any(t and t[3] == nxt and t[4] == TH_ACK for t in acks)  # "send an ACK, drop"

    _raw_send(session, _segment(kport, 5201, nxt, una, TH_ACK, b"Y" * 100, bad_sum=True))
    assert tp.rcv_nxt == nxt and st["tcps_rcvbadsum"] == 1

    _raw_send(session, _segment(kport, 5201, nxt + (1 << 24), 0, TH_RST),
              _segment(kport, 5201, nxt, una, TH_ACK, b"Z" * 10,
                       options=b"\x1e\x09\x00\x00"))  # length 9 overruns
    assert tp.state.name == "ESTABLISHED" and tp.rcv_nxt == nxt
    assert st["tcps_rcvbadopt"] == 1

    second = pattern(300_000, 10)
    t = session.kthread(lambda: k.sendall(second), "kernel-sender")  # more than its buffer
    t.start()
    assert _drain(session, conn, len(second)) == second
    session.wait(t)
    # last: an in-window segment with an unknown option (RFC 9293 3.2: ignore
    # it) is taken; it is not the kernel's data, so the two ends disagree after it
    nxt = tp.rcv_nxt
    _raw_send(session, _segment(kport, 5201, nxt, tp.snd_nxt, TH_ACK | 0x08, b"U" * 10,
                                options=b"\xfd\x06\xab\xcd\x01\x01\x01\x00"))
    assert _drain(session, conn, 10) == b"U" * 10
    assert tp.rcv_nxt == nxt + 10
    # the kernel now refuses the model's acknowledgment of bytes it never
    # sent (RFC 5961 5.2), so nothing closes in order: the model's FIN is
    # retransmitted until it gives up, in simulated time after the teardown
    conn.close()
    k.close()


def test_unknown_option_on_the_kernels_syn(session: PeerSession) -> None:
    """The kernel's SYN rewritten on the path with an experimental option
    (kind 253, RFC 6994) in front: skipped, MSS and window scale still taken."""

    def add_option(frame: bytes) -> bytes:
        t = _tcp(frame)
        if t is None or not t[4] & TH_SYN:
            return frame
        opts = b"\xfd\x06\x12\x34\x56\x78\x01\x01" + t[5]
        return _segment(t[0], t[1], t[2], t[3], t[4], b"", opts, wnd=64240)

    session.backend.rx_hook = add_option
    r = session.kernel_to_model(pattern(100_000, 11), port=5301)
    assert r.exact and session.backend.stats.rx_rewritten == 1
    tp = session.conns[0]
    syn = [t for f in _frames(session, KADDR) if (t := _tcp(f)) and t[4] & TH_SYN]
    assert len(syn) == 1  # as the kernel sent it: the capture is before the rewrite
    assert tp.t_peermss == 1460 and tp.rcvd_scale and tp.snd_scale == _options(syn[0][5])[3][0]


# ------------------------------------------------------------------- UDP


def test_udp_both_ways_loans_released_on_transmit(session: PeerSession) -> None:
    layer = get_layer(session.host)
    c0 = dict(session.host.machine.counters)
    sent, got = session.udp_model_to_kernel(UDP_SIZES)
    assert got == sent
    c = session.host.machine.counters
    assert c["sosend loan big"] - c0.get("sosend loan big", 0) >= 3  # the large ones loaned
    # released by the transmit completions (m_freem -> soloanfree), socket still open
    assert session.run_until(lambda: not layer.loans and not session.host.machine.kernel_loans,
                             10)
    sent, got = session.udp_kernel_to_model(UDP_SIZES)
    assert got == sent
    assert session.host.stack.ipstat["ips_reassembled"] >= 3


# ------------------------------------------------- the kernel's capture


def test_kernel_capture_agrees_frame_for_frame(captured_session: PeerSession) -> None:
    session = captured_session
    session.backend.tx_hook = _skip_then_drop(10, 1)
    session.backend.rx_hook = _skip_then_drop(10, 1)
    assert session.model_to_kernel(pattern(300_000, 12), port=5401).exact
    assert session.kernel_to_model(pattern(300_000, 13), port=5402).exact
    sent, got = session.udp_model_to_kernel([1, 3000, 20000])
    assert got == sent
    sent, got = session.udp_kernel_to_model([1, 3000, 20000])
    assert got == sent
    session.close()
    assert "dropped on interface 'uvt0': " in session.kcap_report
    model = [p for _, p in read_pcap(session.pcap)]
    kernel = [p for _, p in read_pcap(session.kernel_pcap)]
    assert len(model) == len(kernel) == (session.backend.stats.rx_frames
                                         + session.backend.stats.tx_frames)
    for src in (KADDR, MADDR):
        assert [p for p in model if p[12:16] == src] == [p for p in kernel if p[12:16] == src]


def test_namespace_removed_after_a_failure(tmp_path: Path) -> None:
    names = []
    with pytest.raises(RuntimeError, match="on purpose"), PeerSession(tmp_path) as ps:
        names.append(ps.ns.name)
        raise RuntimeError("on purpose")
    assert names[0] not in _netns_list()


def test_threads_left_behind() -> None:
    assert not [t for t in threading.enumerate() if t.name.startswith("kernel-")]


def test_namespaces_of_dead_processes_are_reaped(tmp_path: Path) -> None:
    """A run killed by a signal leaves its namespace; the next one deletes it."""
    p = subprocess.Popen(["true"])
    p.wait()
    stale = f"uvmloan-{p.pid}-1-abcdef"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    with PeerSession(tmp_path) as ps:
        assert stale not in _netns_list()
        assert ps.ns.name in _netns_list()  # its own, alive, stays
    assert ps.ns.name not in _netns_list()
