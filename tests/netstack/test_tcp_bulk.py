"""TCP bulk transfers between two hosts: loaned and copied, lossy links, overwrites.

The sending application waits until the send buffer has room for a whole
64 KiB send (as one using SO_SNDLOWAT or poll would), so each send(2) is
one sosend pass and NetBSD's rules give the counts exactly: a page-aligned
64 KiB send is one "loan big" of 16 pages, an unaligned one of 17; on a
MULTIPROCESSOR kernel it is 32 "copy big" clusters.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from netstack.inject import inject
from netstack.network import Host, Network
from netstack.sockapi import SO_SNDBUF, SOL_SOCKET, UserSocket, get_layer, host_sleep
from netstack.sockbuf import sbspace
from netstack.sockcheck import check_quiescent, check_socket_invariants
from netstack.sockerr import SocketError
from netstack.tcp_usrreq import tcp_table
from uvmloan import check_invariants
from uvmloan.errors import InvariantViolation, KernelAssertion
from uvmloan.process import Process

PS = 4096
CHUNK = 65536
MIB = 1 << 20


def pattern(n: int, seed: int) -> bytes:
    return bytes(((i >> 8) * 31 + i * 7 + seed) & 0xFF for i in range(n))


@pytest.fixture
def net() -> Iterator[Network]:
    with Network(seed=11) as n:
        yield n


class Pair:
    def __init__(self, net: Network, *, loan: bool, **link: object) -> None:
        self.net = net
        self.a = net.host("a", memory="48M", profile_overrides={"multiprocessor": not loan})
        self.b = net.host("b", memory="48M")
        net.link(self.a, self.b, bandwidth_bps=100_000_000, delay_ns=100_000, **link)
        self.base_a = self.a.machine.uvm.allocated
        ls = self.b.socket("tcp")
        ls.bind(("", 80))
        ls.listen()
        self.c = self.a.socket("tcp")
        self.c.setsockopt(SOL_SOCKET, SO_SNDBUF, 3 * CHUNK)
        self.c.connect((self.b.addr, 80))
        self.s, _peer = ls.accept()
        ls.close()
        self.got = bytearray()
        self.eof = False
        self.s.on_readable(self._reader)
        self.p: Process = self.a.machine.spawn("sender")

    def _reader(self, us: UserSocket) -> None:
        us.setblocking(False)
        while True:
            try:
                d = us.recv_bytes(CHUNK)
            except SocketError:
                return
            if not d:
                self.eof = True
                return
            self.got += d

    def wait_room(self, n: int) -> None:
        so = self.c.so
        assert host_sleep(self.a, lambda: sbspace(so.so_snd) >= n)

    def send_all(self, va: int, n: int, *, overwrite: bytes | None = None) -> None:
        off = 0
        while off < n:
            take = min(CHUNK, n - off)
            self.wait_room(take)
            assert self.c.send(self.p, va + off, take) == take
            if overwrite is not None:
                self.p.write(va + off, overwrite[:take])
            off += take

    def finish(self) -> None:
        self.c.close()
        self.net.run_until_idle()
        self.s.close()
        self.net.run_until_idle()

    def quiescent(self) -> None:
        for h in (self.a, self.b):
            check_quiescent(get_layer(h))
            check_invariants(h.machine)


def sosend_counts(h: Host) -> dict[str, int]:
    c = h.machine.counters
    return {k[len("sosend ") :]: v for k, v in c.items() if k.startswith("sosend ")}


@pytest.mark.parametrize(("loan", "off"), [(True, 0), (True, 100), (False, 0)])
def test_bulk_transfer_loan_and_copy(net: Network, loan: bool, off: int) -> None:
    n = MIB // 2
    pr = Pair(net, loan=loan)
    va = pr.p.mmap(n + PS)
    data = pattern(n + PS, 1)
    pr.p.write(va, data)
    pr.send_all(va + off, n)
    pr.finish()
    assert pr.eof and bytes(pr.got) == data[off : off + n]
    sends = n // CHUNK
    if loan:
        assert sosend_counts(pr.a) == {"loan big": sends}
        assert pr.a.machine.counters["loan"] == sends * (16 if off == 0 else 17)
        assert pr.a.machine.counters["sodoloanfree"] == sends
        assert tcp_table(pr.a.stack).tcpstat["tcps_sndloaned"] > 0
    else:
        assert sosend_counts(pr.a) == {"copy big": sends * CHUNK // 2048}
        assert pr.a.machine.counters["loan"] == 0
    pr.quiescent()
    pr.p.exit()
    assert pr.a.machine.uvm.allocated == pr.base_a


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("UVMLOAN_SLOW") != "1"
    and os.environ.get("UVMLOAN_HYPOTHESIS_PROFILE") != "deep",
    reason="a minute each: set UVMLOAN_SLOW=1 (or the deep profile)",
)
@pytest.mark.parametrize("loan", [True, False])
def test_bulk_16mib(net: Network, loan: bool) -> None:
    n = 16 * MIB
    pr = Pair(net, loan=loan)
    va = pr.p.mmap(n)
    data = pattern(n, 2)
    pr.p.write(va, data)
    pr.send_all(va, n)
    pr.finish()
    assert bytes(pr.got) == data
    if loan:
        assert sosend_counts(pr.a) == {"loan big": 256}
        assert pr.a.machine.counters["loan"] == 256 * 16
    else:
        assert sosend_counts(pr.a) == {"copy big": 8192}
    pr.quiescent()
    pr.p.exit()
    assert pr.a.machine.uvm.allocated == pr.base_a


def test_overwrite_after_each_send(net: Network) -> None:
    # NetBSD's t_mmap mmap_loan pattern: the buffer is reused at once.
    n = MIB // 2
    pr = Pair(net, loan=True)
    va = pr.p.mmap(n)
    data = pattern(n, 3)
    pr.p.write(va, data)
    pr.send_all(va, n, overwrite=b"\xa5" * CHUNK)
    # Every page was still lent when it was overwritten.
    assert pr.a.machine.counters["loan.break"] == n // PS
    pr.finish()
    assert bytes(pr.got) == data
    assert pr.a.machine.counters["sodoloanfree"] == n // CHUNK
    pr.quiescent()
    assert pr.p.read(va, 4) == b"\xa5" * 4


def test_lossy_link_exact_stream_retransmits_loaned_pages(net: Network) -> None:
    n = MIB // 2
    pr = Pair(net, loan=True, loss=0.1, duplicate=0.05, reorder=0.05)
    va = pr.p.mmap(n)
    data = pattern(n, 4)
    pr.p.write(va, data)
    pr.send_all(va, n)
    pr.finish()
    assert bytes(pr.got) == data
    st = tcp_table(pr.a.stack).tcpstat
    assert st["tcps_sndrexmitpack"] > 0 and st["tcps_sndrexmitloaned"] > 0
    pr.quiescent()


@pytest.mark.parametrize("on", [False, True])
def test_forget_retransmit_ref_is_caught(net: Network, on: bool) -> None:
    pr = Pair(net, loan=True, loss=0.2)
    if on:
        inject(pr.a, "forget-retransmit-ref")
    n = MIB // 2
    va = pr.p.mmap(n)
    pr.p.write(va, pattern(n, 5))
    layer = get_layer(pr.a)

    def run() -> None:
        off = 0
        while off < n:
            pr.wait_room(CHUNK)
            pr.c.send(pr.p, va + off, CHUNK)
            off += CHUNK
            check_socket_invariants(layer)
        pr.finish()
        check_quiescent(layer)

    if not on:
        run()
        assert bytes(pr.got) == pattern(n, 5)
        return
    # The retransmitted copy's missing reference ends the loan while the
    # send buffer still holds it: S2 sees it, or the mbuf layer's KASSERTs
    # (a refcount gone to 0, an mbuf freed twice) fire when the send buffer
    # frees what the sopendfree thread already freed.
    with pytest.raises((InvariantViolation, KernelAssertion)) as ei:
        run()
    if isinstance(ei.value, InvariantViolation):
        assert ei.value.invariant == "S2"
    else:
        assert "refcnt" in str(ei.value) or "already freed" in str(ei.value)


def test_kva_limit_waits_for_acks_then_loans(net: Network) -> None:
    # somaxkva of two chunks: a third 64 KiB loan must wait ("kva limit")
    # until an acknowledgement frees a loan (sopendfree), then it loans;
    # nothing falls back to copying, and socurkva never passes somaxkva.
    pr = Pair(net, loan=True)
    layer = get_layer(pr.a)
    layer.somaxkva = 2 * CHUNK
    n = MIB // 2
    va = pr.p.mmap(n)
    data = pattern(n, 6)
    pr.p.write(va, data)
    peak = 0

    def watch() -> None:
        nonlocal peak
        peak = max(peak, layer.socurkva)

    pr.a.machine.tracer.add_sink(lambda _ev: watch())
    pr.send_all(va, n)
    pr.finish()
    assert bytes(pr.got) == data
    counts = sosend_counts(pr.a)
    assert counts["loan big"] == n // CHUNK and "copy big" not in counts
    assert counts["kva limit"] >= 1
    assert 0 < peak <= 2 * CHUNK
    pr.quiescent()
