"""linux-zerocopy (MSG_ZEROCOPY): opt-in, pinning, notifications, limits, the hazard.

Every figure is worked out from the rules in specs/zerocopy.md: MSS 1460
on the 1500-byte links, so stream byte ``b`` travels in segment
``b // 1460`` while every segment but the last is full-sized.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest

from netstack.network import Host, Network
from netstack.policy import CopyPolicy, make_policy, policy_names
from netstack.sockapi import (
    SO_SNDBUF,
    SO_ZEROCOPY,
    SOL_SOCKET,
    UserSocket,
    configure_sockets,
    get_layer,
)
from netstack.sockcheck import check_quiescent
from netstack.sockerr import EFAULT, EINVAL, ENOBUFS, ENOPROTOOPT, EWOULDBLOCK, SocketError
from netstack.zerocopy import (
    MSG_ZEROCOPY,
    SO_EE_CODE_ZEROCOPY_COPIED,
    SO_EE_ORIGIN_ZEROCOPY,
    LinuxZerocopyPolicy,
    ZerocopyNotification,
    zc_host,
    zc_sock,
    zerocopy_costs,
)
from uvmloan import check_invariants
from uvmloan.process import Process
from uvmloan.profile import get_profile
from uvmloan.testing.loan_ops import page_at

PS = 4096
MSS = 1460


def pattern(n: int) -> bytes:
    # never 0, so a store of zeros changes every byte it covers
    return bytes(i % 255 + 1 for i in range(n))


@attrs.define
class Pair:
    net: Network
    a: Host
    b: Host
    c: UserSocket
    s: UserSocket
    p: Process
    va: int
    data: bytes

    def run(self) -> None:
        self.net.run_until_idle()

    def received(self) -> bytes:
        out = b""
        self.s.setblocking(False)
        while True:
            try:
                d = self.s.recv_bytes(1 << 20)
            except SocketError:
                return out
            if not d:
                return out
            out += d

    def notes(self) -> list[ZerocopyNotification]:
        out = []
        while True:
            try:
                out.append(self.c.recv_errqueue(self.p))
            except SocketError as e:
                assert e.bsd_errno == EWOULDBLOCK
                return out

    def close(self) -> None:
        # the receiver reads everything still coming, then both close
        got = bytearray()

        def drain(_us: UserSocket) -> None:
            got.extend(self.received())

        self.s.on_readable(drain)
        drain(self.s)
        self.c.close()
        self.run()
        self.s.close()
        self.run()
        for h in (self.a, self.b):
            check_quiescent(get_layer(h))
            check_invariants(h.machine)


def make_pair(
    net: Network,
    policy: object = "linux-zerocopy",
    *,
    npages: int = 16,
    optin: bool = True,
    csum_offload: bool = False,
) -> Pair:
    a = net.host("a", memory="16M")
    b = net.host("b", memory="16M")
    net.link(a, b, bandwidth_bps=100_000_000, delay_ns=100_000, csum_offload=csum_offload)
    configure_sockets(a, send_policy=policy)  # type: ignore[arg-type]
    ls = b.socket("tcp")
    ls.bind(("", 7))
    ls.listen()
    c = a.socket("tcp")
    c.setsockopt(SOL_SOCKET, SO_SNDBUF, 3 * 65536)
    c.connect((b.addr, 7))
    s, _ = ls.accept()
    ls.close()
    if optin:
        c.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)
    p = a.machine.spawn("sender")
    va = p.mmap(npages * PS)
    data = pattern(npages * PS)
    p.write(va, data)
    a.machine.tracer.record()
    return Pair(net, a, b, c, s, p, va, data)


@pytest.fixture
def net() -> Iterator[Network]:
    with Network(seed=3) as n:
        yield n


def counters(h: Host) -> dict[str, int]:
    return {k: v for k, v in h.machine.counters.items() if v}


# ------------------------------------------------------------ the registry


def test_registry_names_and_data() -> None:
    assert policy_names() == ("copy", "netbsd-loan", "linux-zerocopy")
    pol = make_policy("linux-zerocopy", memlock_limit=1 << 20)
    assert isinstance(pol, LinuxZerocopyPolicy) and pol.memlock_limit == 1 << 20
    with pytest.raises(ValueError, match="unknown send policy 'splice'"):
        make_policy("splice")
    with pytest.raises(TypeError):
        make_policy(3)  # type: ignore[arg-type]


def test_copy_policy_never_loans_on_a_uniprocessor(net: Network) -> None:
    a = net.host("a", memory="16M", profile_overrides={"multiprocessor": False})
    b = net.host("b", memory="16M")
    net.link(a, b)
    layer = configure_sockets(a, send_policy="copy")
    assert isinstance(layer.send_policy, CopyPolicy) and layer.sock_loan_thresh == 4096
    ls = b.socket("tcp")
    ls.bind(("", 7))
    ls.listen()
    c = a.socket("tcp")
    c.connect((b.addr, 7))
    p = a.machine.spawn("s")
    va = p.mmap(4 * PS)
    a.machine.tracer.record()
    assert c.send(p, va, 4 * PS) == 4 * PS
    cn = counters(a)
    # 16384 bytes: 8 clusters (the first in the pkthdr mbuf), no loan
    assert cn.get("sosend loan big", 0) == 0 and cn["sosend copy big"] == 8


# ---------------------------------------------------------------- opt-in


def test_without_both_opt_ins_the_send_copies(net: Network) -> None:
    pr = make_pair(net, optin=False)
    pr.c.send(pr.p, pr.va, 8192, MSG_ZEROCOPY)  # the flag alone: ignored
    pr.c.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)
    assert pr.c.getsockopt(SOL_SOCKET, SO_ZEROCOPY) == 1
    pr.c.send(pr.p, pr.va + 8192, 8192)  # the option alone: copies
    pr.run()
    cn = counters(pr.a)
    assert "zerocopy pin" not in cn and cn["sosend copy big"] == 8
    assert pr.notes() == []
    assert pr.received() == pr.data[:16384]
    pr.close()


def test_so_zerocopy_arguments(net: Network) -> None:
    pr = make_pair(net, optin=False)
    with pytest.raises(SocketError) as ei:
        pr.c.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 2)
    assert ei.value.bsd_errno == EINVAL
    # a NetBSD policy has no such option
    other = pr.b.socket("tcp")
    with pytest.raises(SocketError) as ei:
        other.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)
    assert ei.value.bsd_errno == ENOPROTOOPT
    other.close()
    pr.close()


# -------------------------------------------------------------- pinning


def test_pages_are_pinned_not_lent_and_stay_writable(net: Network) -> None:
    pr = make_pair(net)
    pgs = [page_at(pr.p, pr.va + i * PS) for i in range(2)]
    assert pr.c.send(pr.p, pr.va + 100, 5000, MSG_ZEROCOPY) == 5000
    # bytes 100..5099 span pages 0 and 1: each wired once, never lent
    assert [pg.wire_count for pg in pgs if pg] == [1, 1]
    assert [pg.loan_count for pg in pgs if pg] == [0, 0]
    assert get_layer(pr.a).loans == {} and pr.a.machine.kernel_loans == {}
    # the user mapping is still writable: the store takes no fault
    faults = pr.a.machine.counters["fault"]
    pr.p.write(pr.va + 8000, b"x")
    assert pr.a.machine.counters["fault"] == faults
    pr.run()
    assert [pg.wire_count for pg in pgs if pg] == [0, 0]
    cn = counters(pr.a)
    assert cn["zerocopy pin"] == 1 and cn["zerocopy unpin"] == 1
    pr.close()


# --------------------------------------------------------- notifications


def test_consecutive_sends_complete_as_one_range(net: Network) -> None:
    """Four 8 KiB sends before anything is transmitted: msg_zerocopy_realloc
    extends the unsent tail's ubuf_info, so one notification [0, 3]."""
    pr = make_pair(net)
    for i in range(4):
        assert pr.c.send(pr.p, pr.va + i * 8192, 8192, MSG_ZEROCOPY) == 8192
    assert zc_sock(pr.c.so).zckey == 4
    assert pr.notes() == []  # nothing acknowledged yet
    pr.run()
    assert pr.notes() == [ZerocopyNotification(0, SO_EE_ORIGIN_ZEROCOPY, 0, 0, 0, 3)]
    assert pr.received() == pr.data[:32768]
    assert zc_host(get_layer(pr.a)).tx_modified == 0
    pr.close()


def test_separate_completions_coalesce_on_the_error_queue(net: Network) -> None:
    """Each send completes before the next (the network runs between them):
    three ubuf_infos, merged on the queue while unread: one record [0, 2]."""
    pr = make_pair(net)
    for i in range(3):
        pr.c.send(pr.p, pr.va + i * 8192, 8192, MSG_ZEROCOPY)
        pr.run()
    assert counters(pr.a)["zerocopy completion"] == 3
    (n,) = pr.notes()
    assert (n.lo, n.hi, n.count, n.copied) == (0, 2, 3, False)
    pr.close()


def test_counter_counts_successful_calls_and_wraps(net: Network) -> None:
    pr = make_pair(net)
    st = zc_sock(pr.c.so)
    st.zckey = 0xFFFFFFFE
    assert pr.c.send(pr.p, pr.va, 0, MSG_ZEROCOPY) == 0  # length 0: no id
    with pytest.raises(SocketError) as ei:
        pr.c.send(pr.p, 0x1000, 4096, MSG_ZEROCOPY)  # unmapped: EFAULT, no id
    assert ei.value.bsd_errno == EFAULT
    assert st.zckey == 0xFFFFFFFE
    for i in range(3):
        pr.c.send(pr.p, pr.va + i * 4096, 4096, MSG_ZEROCOPY)
        pr.run()
    assert st.zckey == 1
    (n,) = pr.notes()
    # ids 0xfffffffe, 0xffffffff, 0: one inclusive range across the wrap
    assert (n.ee_info, n.ee_data, n.count) == (0xFFFFFFFE, 0, 3)
    assert n.covers(0xFFFFFFFF) and n.covers(0) and not n.covers(1)
    pr.close()


def test_errqueue_read_is_a_nonblocking_charged_syscall(net: Network) -> None:
    pr = make_pair(net)
    cpu = pr.a.machine.platform.cpus[pr.p.cpu]
    before = max(cpu.clock, pr.net.now)  # where the system call starts
    with pytest.raises(SocketError) as ei:
        pr.c.recv_errqueue(pr.p)
    assert ei.value.bsd_errno == EWOULDBLOCK
    # netbsd-10 costs: syscall_ns 150 for the recvmsg, page_alloc_ns 80 for
    # the skb it would dequeue and free
    assert cpu.clock - before == 150 + 80
    pr.close()


def test_no_scatter_gather_copies_and_says_so(net: Network) -> None:
    pr = make_pair(net)
    pr.a.interfaces[0].sg = False
    pr.c.send(pr.p, pr.va, 8192, MSG_ZEROCOPY)
    # copied in the call; the call's reference was the only one: the
    # notification is queued before send returns
    (n,) = pr.notes()
    assert (n.lo, n.hi, n.ee_code) == (0, 0, SO_EE_CODE_ZEROCOPY_COPIED) and n.copied
    cn = counters(pr.a)
    assert "zerocopy pin" not in cn and cn["zerocopy copied"] == 1
    pr.run()
    assert pr.received() == pr.data[:8192]
    pr.close()


def test_small_send_merged_by_sbcompress_is_reported_copied(net: Network) -> None:
    """A 100-byte zerocopy mbuf fits the previous cluster's trailing space:
    sbcompress copies it (a deferred copy) and the notification says COPIED."""
    pr = make_pair(net)
    pr.c.send(pr.p, pr.va, 1000)  # copied: one cluster, 1048 bytes free
    # 1040 bytes leave in 83 us at 100 Mbit/s: by 150 us the transmit copy is
    # freed (the cluster is no longer shared), the ACK (200 us RTT) not back
    pr.net.run(pr.net.now + 150_000)
    pr.c.send(pr.p, pr.va + 1000, 100, MSG_ZEROCOPY)
    (n,) = pr.notes()
    assert (n.lo, n.hi, n.copied) == (0, 0, True)
    pr.run()
    assert pr.received() == pr.data[:1100]
    pr.close()


# ---------------------------------------------------------------- limits


def test_memlock_limit_gives_enobufs(net: Network) -> None:
    # 16 pages allowed; a 64 KiB send needs (65536 >> 12) + 2 = 18
    pr = make_pair(net, LinuxZerocopyPolicy(memlock_limit=16 * PS))
    with pytest.raises(SocketError) as ei:
        pr.c.send(pr.p, pr.va, 65536, MSG_ZEROCOPY)
    assert ei.value.bsd_errno == ENOBUFS
    assert zc_sock(pr.c.so).zckey == 0 and pr.c.so.so_snd.sb_cc == 0
    # 14 pages of data + 2 = 16: allowed
    assert pr.c.send(pr.p, pr.va, 14 * PS, MSG_ZEROCOPY) == 14 * PS
    assert counters(pr.a)["zerocopy enobufs"] == 1
    pr.run()
    pr.close()


def test_optmem_limit_gives_enobufs(net: Network) -> None:
    """Two notifications' truesize fit optmem_max = 1536; the third send's
    sock_omalloc fails while both are outstanding (unacked, then unread)."""
    pr = make_pair(net, LinuxZerocopyPolicy(optmem_max=2 * 768))
    pr.c.send(pr.p, pr.va, 4096, MSG_ZEROCOPY)
    pr.run()  # completed: its notification waits on the queue
    pr.c.send(pr.p, pr.va + 4096, 4096, MSG_ZEROCOPY)
    with pytest.raises(SocketError) as ei:
        pr.c.send(pr.p, pr.va + 8192, 4096, MSG_ZEROCOPY)
    assert ei.value.bsd_errno == ENOBUFS
    pr.run()
    assert [(n.lo, n.hi) for n in pr.notes()] == [(0, 1)]
    assert zc_sock(pr.c.so).omem == 0
    pr.c.send(pr.p, pr.va + 8192, 4096, MSG_ZEROCOPY)  # room again
    pr.run()
    assert [(n.lo, n.hi) for n in pr.notes()] == [(2, 2)]
    pr.close()


# ------------------------------------------------------------------- UDP


def udp_pair(net: Network, csum_offload: bool) -> tuple[Host, UserSocket, UserSocket, Process, int]:
    a = net.host("a", memory="16M")
    b = net.host("b", memory="16M")
    net.link(a, b, csum_offload=csum_offload)
    configure_sockets(a, send_policy="linux-zerocopy")
    ua = a.socket("udp")
    ub = b.socket("udp")
    ub.bind(("", 9))
    ua.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)
    p = a.machine.spawn("s")
    va = p.mmap(4 * PS)
    p.write(va, pattern(4 * PS))
    a.machine.tracer.record()
    return a, ua, ub, p, va


def test_udp_zerocopy_completes_at_transmit_completion(net: Network) -> None:
    a, ua, ub, p, va = udp_pair(net, csum_offload=True)
    ua.sendto(p, va, 1000, (net.hosts["b"].addr, 9), MSG_ZEROCOPY)
    assert counters(a)["zerocopy pin"] == 1
    with pytest.raises(SocketError):
        ua.recv_errqueue(p)  # still on the wire
    net.run_until_idle()
    n = ua.recv_errqueue(p)
    assert (n.lo, n.hi, n.copied) == (0, 0, False)
    d, _ = ub.recvfrom_bytes(9216)
    assert d == pattern(1000)
    ua.close()
    ub.close()
    check_quiescent(get_layer(a))


def test_udp_without_checksum_offload_copies(net: Network) -> None:
    """__ip_append_data zerocopies only with NETIF_F_SG and CHECKSUM_PARTIAL."""
    a, ua, ub, p, va = udp_pair(net, csum_offload=False)
    ua.sendto(p, va, 1000, (net.hosts["b"].addr, 9), MSG_ZEROCOPY)
    assert "zerocopy pin" not in counters(a)
    n = ua.recv_errqueue(p)
    assert (n.lo, n.hi, n.copied) == (0, 0, True)
    net.run_until_idle()
    ua.close()
    ub.close()
    check_quiescent(get_layer(a))


# ------------------------------------------------------------ the hazard


def test_overwrite_in_flight_changes_exactly_those_segments(net: Network) -> None:
    """Sends 0 and 1 (8 KiB each), then the sender zeroes send 1's buffer
    before anything is transmitted, then sends 2 and 3.  Send 1 is stream
    bytes 8192..16383: segments 8192 // 1460 = 5 through 16383 // 1460 = 11,
    seven segments, carrying all 8192 zeroed bytes; nothing else differs."""
    pr = make_pair(net)
    pr.c.send(pr.p, pr.va, 8192, MSG_ZEROCOPY)
    pr.c.send(pr.p, pr.va + 8192, 8192, MSG_ZEROCOPY)
    pr.p.write(pr.va + 8192, bytes(8192))
    pr.c.send(pr.p, pr.va + 16384, 8192, MSG_ZEROCOPY)
    pr.c.send(pr.p, pr.va + 24576, 8192, MSG_ZEROCOPY)
    pr.run()
    host = zc_host(get_layer(pr.a))
    assert (host.tx_modified, host.tx_modified_bytes) == (7, 8192)
    assert counters(pr.a)["zerocopy.tx_modified"] == 7
    want = pr.data[:8192] + bytes(8192) + pr.data[16384:32768]
    assert pr.received() == want
    pr.close()


def test_waiting_for_the_notification_sends_exactly_the_bytes(net: Network) -> None:
    """The msg_zerocopy.c pattern: reuse a buffer region only after its
    notification arrived.  Nothing on the wire differs."""
    pr = make_pair(net)
    sent = b""
    for i in range(4):
        pr.c.send(pr.p, pr.va, 8192, MSG_ZEROCOPY)
        sent += pr.data[:8192]
        pr.run()
        (n,) = pr.notes()
        assert (n.lo, n.hi) == (i, i)
        pr.p.write(pr.va, bytes([i]) * 8192)  # safe now: the pages are unpinned
        pr.data = bytes([i]) * 8192 + pr.data[8192:]
    assert zc_host(get_layer(pr.a)).tx_modified == 0
    assert pr.received() == sent
    pr.close()


# ----------------------------------------------------------------- costs


def test_cost_stand_ins_on_netbsd_10() -> None:
    c = zerocopy_costs(get_profile("netbsd-10").costs)
    # page_walk 30 + pte_update 60; pte_update; page_alloc; syscall 150 +
    # page_alloc 80
    assert (c.pin_page_ns, c.unpin_page_ns, c.notification_ns, c.errqueue_ns) == (90, 60, 80, 230)
