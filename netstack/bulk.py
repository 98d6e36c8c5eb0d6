"""A TCP bulk transfer as an experiment: one sender, one receiver, one link.

The workload of the published send-side results (Thorpe's 2002 ttcp-style
run, the MP loaning slowdown, the MSG_ZEROCOPY break-even): a process on
host ``a`` writes ``size`` bytes to a TCP socket in ``write_size`` calls
from a ring of buffers, and host ``b`` reads everything.  Everything the
result depends on is a parameter: the sender's profile (costs and kernel
semantics) with overrides, how it sends (``policy``), the link, checksum
offload, and on how many CPUs the sending process is active (its other
threads keep its pmap loaded there, so a write-protect on the first loan of
a page needs a shootdown IPI to each of them).

The buffer discipline is a well-behaved application's: the ring
(``ring_bytes``) is refilled slot by slot before each send, and a slot is
refilled only after the data sent from it has been acknowledged (sbspace
shows the send buffer has room for it again), so a loan has been released by
the time its pages are written, and what the user store costs is a write
fault re-enabling the page (the loan left it read-only), never a loan break.
``refill=False`` sends the same bytes again without touching them (ttcp).

Throughput is the application's: bytes from the first send to the last
byte read by the receiver, in simulated time, in KB/s of 1000 and of 1024
bytes (ttcp's "KB/sec" is 1024).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from uvmloan import Profile, check_invariants, get_profile

from .network import Network
from .pcap import capture
from .sockapi import SO_RCVBUF, SO_SNDBUF, SOL_SOCKET, UserSocket, get_layer, host_sleep
from .sockbuf import sbspace
from .sockcheck import check_quiescent
from .sockerr import SocketError

# The sosend policies this runner knows, and how each sets up the sender's
# kernel: "copy" is a kernel without options SOSEND_LOAN (sock_loan_thresh
# -1); "loan" is sosend_loan for every write of sock_loan_thresh bytes or
# more (4096, the value of every kernel that loans).
POLICIES = ("copy", "loan")


@attrs.frozen
class BulkResult:
    """What one bulk transfer measured."""

    policy: str
    nbytes: int
    write_size: int
    active_cpus: int
    sim_ns: int
    wall_s: float
    sender_cpu_ns: int  # CPU 0 of the sender: the process, sosend, TCP, the NIC's interrupts
    counters: Mapping[str, int]
    files: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def kb_per_s(self) -> float:
        """KB/s (1000 bytes), simulated time."""
        return self.nbytes / 1000 / (self.sim_ns / 1e9) if self.sim_ns else 0.0

    @property
    def kib_per_s(self) -> float:
        """KB/s as ttcp prints it (1024 bytes), simulated time."""
        return self.nbytes / 1024 / (self.sim_ns / 1e9) if self.sim_ns else 0.0

    @property
    def sender_busy(self) -> float:
        """The sender CPU's share of the transfer time it was busy."""
        return self.sender_cpu_ns / self.sim_ns if self.sim_ns else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d.update(kb_per_s=self.kb_per_s, kib_per_s=self.kib_per_s, sender_busy=self.sender_busy)
        return d

    def record(self, **extra: Any) -> dict[str, Any]:
        """One flat row (a CSV line, a sweep point): figures and the counters
        that explain them."""
        return {
            **extra,
            "policy": self.policy,
            "bytes": self.nbytes,
            "write_size": self.write_size,
            "active_cpus": self.active_cpus,
            "sim_ns": self.sim_ns,
            "kb_per_s_1024": round(self.kib_per_s, 1),
            "kb_per_s_1000": round(self.kb_per_s, 1),
            "sender_cpu_ns": self.sender_cpu_ns,
            "sender_busy": round(self.sender_busy, 4),
            "sender_ns_per_mib": round(self.sender_cpu_ns / (self.nbytes / (1 << 20))),
            **{k.replace(" ", "_").replace(".", "_"): self.counters.get(k, 0) for k in RECORD_KEYS},
            "wall_s": round(self.wall_s, 2),
        }


# The sender's counters a record carries (NetBSD's names).
RECORD_KEYS = (
    "loan",
    "loan.break",
    "fault",
    "TLB shootdown",
    "ipi sent",
    "sosend loan big",
    "sosend copy big",
    "sosend copy small",
)


def _pattern(n: int, seed: int) -> bytes:
    block = bytes(((i >> 8) * 31 + i * 7 + seed) & 0xFF for i in range(1 << 12))
    return (block * -(-n // len(block)))[:n]


def _stream(size: int, ring: int, refill: bool, seed: int) -> bytes:
    """What the receiver must get: with refill, each lap of the ring new bytes."""
    if not refill:
        return (_pattern(ring, seed) * -(-size // ring))[:size]
    laps = [_pattern(ring, seed + lap * 17) for lap in range(-(-size // ring))]
    return b"".join(laps)[:size]


def policy_overrides(policy: str, profile: Profile) -> dict[str, Any]:
    """The sender's profile fields that make ``policy`` the kernel's sosend."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    thresh = -1 if policy == "copy" else 4096
    field = "sock_loan_thresh_mp" if profile.multiprocessor else "sock_loan_thresh_up"
    return {field: thresh}


def bulk_transfer(
    policy: str,
    size: int = 16 << 20,
    *,
    write_size: int = 65536,
    profile: str | Profile = "netbsd-10",
    profile_overrides: Mapping[str, Any] | None = None,
    receiver_profile: str | Profile = "netbsd-10",
    ncpus: int = 1,
    active_cpus: int = 1,
    bandwidth_bps: int | None = None,
    delay_ns: int = 50_000,
    loss: float = 0.0,
    overhead_bytes: int = 38,
    csum_offload: bool | None = None,
    tx_ring: int | None = None,
    sndbuf: int = 3 * 65536,
    rcvbuf: int = 3 * 65536,
    ring_bytes: int = 1 << 20,
    refill: bool = True,
    seed: int = 0,
    out: Path | None = None,
    trace: bool = False,
    pcap: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BulkResult:
    """Send ``size`` bytes from host a to host b by ``policy`` (see the module doc).

    ``bandwidth_bps`` defaults to the sender profile's link speed
    (``Profile.nic.link_bps``), ``csum_offload`` and ``tx_ring`` to each
    host's profile NIC.  With ``out``, ``trace`` writes the sender's
    JSON Lines trace and ``pcap`` a pcapng of the link there.
    """
    base = get_profile(profile, **dict(profile_overrides or {}))
    over = policy_overrides(policy, base)
    for name, v, lo in (
        ("size", size, 1),
        ("write_size", write_size, 1),
        ("ncpus", ncpus, 1),
        ("active_cpus", active_cpus, 1),
        ("sndbuf", sndbuf, 1),
        ("rcvbuf", rcvbuf, 1),
        ("ring_bytes", ring_bytes, 1),
    ):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if active_cpus > ncpus:
        raise ValueError(f"active_cpus {active_cpus} is more than the {ncpus} CPUs of the sender")
    if (trace or pcap) and out is None:
        raise ValueError("trace and pcap need an out directory")
    link_bps = bandwidth_bps or base.nic.link_bps
    ps = base.page_size
    ring = max(ring_bytes - ring_bytes % write_size, write_size)
    ring_pages = -(-ring // ps)
    t0 = time.perf_counter()
    memory = f"{max(32, 4 * (ring_pages * ps + sndbuf) // (1 << 20) + 24)}M"
    files: dict[str, str] = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    tag = f"{policy}-{write_size}-{active_cpus}cpu"
    trace_arg: str | Path = "counters"
    if trace and out is not None:
        trace_arg = out / f"bulk-{tag}-trace.jsonl"
        files["trace"] = str(trace_arg)
    with Network(seed=seed) as net:
        a = net.host(
            "a", ncpus=ncpus, memory=memory, profile=attrs.evolve(base, **over), trace=trace_arg
        )
        b = net.host("b", memory="64M", profile=receiver_profile)
        link = net.link(
            a,
            b,
            bandwidth_bps=link_bps,
            delay_ns=delay_ns,
            loss=loss,
            overhead_bytes=overhead_bytes,
            csum_offload=csum_offload,
            tx_ring=tx_ring,
        )
        cap = None
        if pcap and out is not None:
            files["pcap"] = str(out / f"bulk-{tag}.pcapng")
            cap = capture(link, files["pcap"], fmt="pcapng")
        listener = b.socket("tcp")
        listener.setsockopt(SOL_SOCKET, SO_RCVBUF, rcvbuf)  # accept() inherits it
        listener.bind(("", 5001))  # ttcp's port
        listener.listen()
        client = a.socket("tcp")
        client.setsockopt(SOL_SOCKET, SO_SNDBUF, sndbuf)
        client.connect((b.addr, 5001))
        server, _peer = listener.accept()
        listener.close()
        got = 0
        digest_ok = [True]
        expect = _stream(size, ring, refill, seed)
        done_at: list[int] = []

        def reader(us: UserSocket) -> None:
            nonlocal got
            while True:
                try:
                    d = us.recv_bytes(65536)
                except SocketError:
                    return
                if not d:
                    return
                if d != expect[got : got + len(d)]:
                    digest_ok[0] = False
                got += len(d)
                if got >= size and not done_at:
                    done_at.append(net.now)

        server.setblocking(False)
        server.on_readable(reader)
        proc = a.machine.spawn("sender", cpu=0)
        va = proc.mmap(ring_pages * ps)
        proc.write(va, expect[: min(ring, size)])
        for c in range(1, active_cpus):  # its other threads run there
            proc.read(va, ring, cpu=c)
        proc.run_on(0)
        # The set-up's stores ran outside the network's time (each CPU's
        # clock ran ahead): let the network catch up, so the transfer's time
        # starts with every CPU idle.
        net.run(max(net.now, *(c.clock for c in a.machine.cpus)))
        so = client.so
        busy0 = a.busy_ns[0]
        start = net.now
        off = 0
        while off < size:
            take = min(write_size, size - off)
            slot = off % ring
            if not host_sleep(a, lambda t=take: sbspace(so.so_snd) >= t):  # type: ignore[misc]
                raise RuntimeError("the send buffer never drained (the connection stalled)")
            if refill and off >= ring:
                # the application fills the slot: a user activity on its CPU
                chunk = expect[off : off + take]
                a.kernel(lambda c=chunk, s=slot: proc.write(va + s, c), 0)  # type: ignore[misc]
            client.send(proc, va + slot, take)
            off += take
            if progress is not None and off % (4 << 20) == 0:
                progress(f"{policy}: {off >> 20} of {size >> 20} MiB sent")
        client.close()
        net.run_until_idle()
        server.close()
        net.run_until_idle()
        elapsed = (done_at[0] if done_at else net.now) - start
        sender_ns = a.busy_ns[0] - busy0
        if got != size or not digest_ok[0]:
            raise AssertionError(f"{policy}: the receiver got {got} bytes, or bytes that differ")
        for h in (a, b):
            check_quiescent(get_layer(h))
            check_invariants(h.machine)
        if cap is not None:
            cap.close()
        counters = {k: v for k, v in a.machine.counters.items() if v}
    return BulkResult(
        policy=policy,
        nbytes=size,
        write_size=write_size,
        active_cpus=active_cpus,
        sim_ns=elapsed,
        wall_s=time.perf_counter() - t0,
        sender_cpu_ns=min(sender_ns, elapsed),
        counters=counters,
        files=files,
    )


def bulk_point(
    policy: str,
    size: int | str = "4M",
    write_size: int | str = "64K",
    profile: str = "netbsd-10",
    ncpus: int = 1,
    active_cpus: int = 1,
    bandwidth_bps: int | None = None,
    loss: float = 0.0,
    csum_offload: bool = False,
    refill: bool = True,
    seed: int = 0,
    costs: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """``bulk_transfer`` as a sweep experiment (``experiment = "tcp_bulk"``):
    sizes may be "64K"-style strings, ``costs`` overrides profile costs, and
    the result is one flat record."""
    from uvmloan import parse_size

    n = parse_size(size, "size") if isinstance(size, str) else size
    w = parse_size(write_size, "write_size") if isinstance(write_size, str) else write_size
    r = bulk_transfer(
        policy,
        n,
        write_size=w,
        profile=profile,
        profile_overrides={"costs": dict(costs)} if costs else None,
        ncpus=ncpus,
        active_cpus=active_cpus,
        bandwidth_bps=bandwidth_bps,
        loss=loss,
        csum_offload=csum_offload,
        refill=refill,
        seed=seed,
    )
    return r.record(profile=profile, loss=loss, seed=seed)
