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
(``ring_bytes``) is refilled slot by slot before each send.  NetBSD tells a
sender nothing when a loan ends (Thorpe, 2002: "the only thing that is
missing is a callback to userspace"), so a slot's data has surely been
acknowledged, and its loan released, only when the ring is larger than the
send buffer plus one write (the default: 1 MiB against 192 KiB): then what
a refill costs is a write fault re-enabling each page the last loan left
read-only, never a loan break.  A smaller ring refills slots whose data may
still be in the send buffer, and those stores break the loans (copy on
write keeps the bytes sent right).  A zerocopy sender waits for the slot's
notification instead.
``refill=False`` sends the same bytes again without touching them (ttcp).

``policy`` is a send policy of :mod:`netstack.policy` (``copy``,
``netbsd-loan``: as the sender's profile decides, ``linux-zerocopy``: the
sender opts in with ``SO_ZEROCOPY``, sends with ``MSG_ZEROCOPY`` and reads
its error queue after each send, as Linux's msg_zerocopy.c selftest does,
and rewrites a ring slot only once the notification covering its last send
has been read), or ``loan``: netbsd-loan on a kernel built to loan
(``sock_loan_thresh`` 4096 whatever its options).  ``overwrite`` rewrites
each region with zeros as soon as the sender may (NetBSD's t_mmap pattern:
right after send returns, breaking a loan still held; under zerocopy, once
its notification is read); the receiver must still get the bytes sent.

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
from .policy import make_policy
from .sockapi import (
    SO_RCVBUF,
    SO_SNDBUF,
    SO_ZEROCOPY,
    SOL_SOCKET,
    UserSocket,
    configure_sockets,
    get_layer,
    host_sleep,
)
from .sockbuf import sbspace
from .sockcheck import check_quiescent
from .sockerr import SocketError
from .zerocopy import MSG_ZEROCOPY

# How the sender sends: a netstack send policy (netstack.policy) by name,
# or "loan": netbsd-loan on a kernel built to loan (sock_loan_thresh 4096
# whatever its options), the loaning side of a copy-vs-loan comparison.
POLICIES = ("copy", "loan", "netbsd-loan", "linux-zerocopy")


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
    frames: int = 0  # captured on the link (with pcap)
    loaned_frames: int = 0  # of them, frames whose payload came from lent pages

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


def pattern(n: int, seed: int) -> bytes:
    """``n`` bytes to send: no two 4 KiB pages alike (each starts with its
    number and the seed), so a page delivered in the wrong place shows."""
    block = bytes(((i >> 8) * 31 + i * 7 + seed) & 0xFF for i in range(1 << 16))
    out = bytearray((block * -(-n // len(block)))[:n])
    for page, off in enumerate(range(0, n - 7, 4096)):
        out[off : off + 8] = ((page << 16) | (seed & 0xFFFF)).to_bytes(8, "little")
    return bytes(out)


def _stream(size: int, ring: int, refill: bool, seed: int) -> bytes:
    """What the receiver must get: with refill, each lap of the ring new bytes."""
    if not refill:
        return (pattern(ring, seed) * -(-size // ring))[:size]
    laps = [pattern(ring, seed + lap * 17) for lap in range(-(-size // ring))]
    return b"".join(laps)[:size]


def _sender_overrides(policy: str, profile: Profile) -> dict[str, Any]:
    if policy != "loan":
        return {}
    field = "sock_loan_thresh_mp" if profile.multiprocessor else "sock_loan_thresh_up"
    return {field: 4096}


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
    rcvbuf: int | None = 3 * 65536,
    ring_bytes: int = 1 << 20,
    refill: bool = True,
    overwrite: bool = False,
    port: int = 5001,
    pcap_name: str | None = None,
    policy_data: Mapping[str, Any] | None = None,
    seed: int = 0,
    out: Path | None = None,
    trace: bool = False,
    pcap: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BulkResult:
    """Send ``size`` bytes from host a to host b by ``policy`` (see the module doc).

    ``bandwidth_bps`` defaults to the sender profile's link speed
    (``Profile.nic.link_bps``), ``csum_offload`` and ``tx_ring`` to each
    host's profile NIC.  ``policy_data`` are the policy's fields
    (``make_policy(name, **policy_data)``, e.g. linux-zerocopy's
    ``optmem_max``).  With ``out``, ``trace`` writes the sender's
    JSON Lines trace and ``pcap`` a pcapng of the link there.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    base = get_profile(profile, **dict(profile_overrides or {}))
    over = _sender_overrides(policy, base)
    for name, v, lo in (
        ("size", size, 1),
        ("write_size", write_size, 1),
        ("ncpus", ncpus, 1),
        ("active_cpus", active_cpus, 1),
        ("sndbuf", sndbuf, 1),
        ("rcvbuf", 1 if rcvbuf is None else rcvbuf, 1),
        ("port", port, 1),
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
            files["pcap"] = str(out / (f"bulk-{tag}.pcapng" if pcap_name is None else pcap_name))
            cap = capture(link, files["pcap"], fmt="pcapng")
        zc = policy == "linux-zerocopy"
        configure_sockets(
            a,
            send_policy=make_policy(
                "netbsd-loan" if policy == "loan" else policy, **dict(policy_data or {})
            ),
        )
        listener = b.socket("tcp")
        if rcvbuf is not None:
            listener.setsockopt(SOL_SOCKET, SO_RCVBUF, rcvbuf)  # accept() inherits it
        listener.bind(("", port))
        listener.listen()
        client = a.socket("tcp")
        client.setsockopt(SOL_SOCKET, SO_SNDBUF, sndbuf)
        if zc:
            client.setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)
        client.connect((b.addr, port))
        server, _peer = listener.accept()
        listener.close()
        got = 0
        digest_ok = [True]
        expect = _stream(size, ring, refill, seed)
        done_at: list[tuple[int, int]] = []  # (time, the sender CPU's busy ns then)

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
                    done_at.append((net.now, a.busy_ns[0]))

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
        # linux-zerocopy: send id -> (ring offset, length) until its
        # completion notification has been read
        inflight: dict[int, tuple[int, int]] = {}
        key = 0

        def user_write(at: int, data: bytes) -> None:
            # the application's store: a user activity on its CPU
            a.kernel(lambda: proc.write(va + at, data), 0)

        def reap() -> list[tuple[int, int]]:
            # msg_zerocopy.c: read the error queue dry (poll says POLLERR)
            done: list[tuple[int, int]] = []
            while client.errqueue_len():
                note = client.recv_errqueue(proc)
                done.extend(inflight.pop(k) for k in [k for k in inflight if note.covers(k)])
            return done

        def slot_free(lo: int, hi: int) -> bool:
            reap()
            return not any(o < hi and lo < o + n for o, n in inflight.values())

        off = 0
        while off < size:
            take = min(write_size, size - off)
            slot = off % ring
            if not host_sleep(a, lambda t=take: sbspace(so.so_snd) >= t):  # type: ignore[misc]
                raise RuntimeError("the send buffer never drained (the connection stalled)")
            if refill and off >= ring:
                # MSG_ZEROCOPY's contract: a region is rewritten only once the
                # notification covering its last send has been read
                if zc and not host_sleep(a, lambda s=slot, t=take: slot_free(s, s + t)):  # type: ignore[misc]
                    raise RuntimeError("a zerocopy send never completed")
                user_write(slot, expect[off : off + take])
            client.send(proc, va + slot, take, MSG_ZEROCOPY if zc else 0)
            if zc:
                inflight[key] = (slot, take)
                key += 1
                for o, n in reap():
                    if overwrite:
                        user_write(o, bytes(n))
            elif overwrite:
                # NetBSD's t_mmap pattern: rewrite the buffer as soon as send
                # returns (a loan still held breaks; the receiver gets the
                # bytes from before)
                user_write(slot, bytes(take))
            off += take
            if progress is not None and off % (4 << 20) == 0:
                progress(f"{policy}: {off >> 20} of {size >> 20} MiB sent")
        if zc:
            # shutdown(SHUT_WR) first (the FIN pushes the last small segment
            # out past Nagle, as close does), then poll(POLLERR) until every
            # send completed, then close
            client.shutdown(1)

            def all_done() -> bool:
                for o, n in reap():
                    if overwrite:
                        user_write(o, bytes(n))
                return not inflight

            if not host_sleep(a, all_done):
                raise RuntimeError(f"{len(inflight)} zerocopy sends never completed")
        client.close()
        net.run_until_idle()
        server.close()
        net.run_until_idle()
        # from the first send to the last byte read (TIME_WAIT's 2*MSL after
        # the close is not part of the transfer)
        end, busy_end = done_at[0] if done_at else (net.now, a.busy_ns[0])
        elapsed = end - start
        sender_ns = busy_end - busy0
        if got != size or not digest_ok[0]:
            raise AssertionError(f"{policy}: the receiver got {got} bytes, or bytes that differ")
        for h in (a, b):
            check_quiescent(get_layer(h))
            check_invariants(h.machine)
        frames = loaned_frames = 0
        if cap is not None:
            cap.close()
            frames, loaned_frames = cap.frames, cap.loaned_frames
        counters = {k: v for k, v in a.machine.counters.items() if v}
    return BulkResult(
        policy=policy,
        nbytes=size,
        write_size=write_size,
        active_cpus=active_cpus,
        sim_ns=elapsed,
        wall_s=time.perf_counter() - t0,
        sender_cpu_ns=sender_ns,
        counters=counters,
        files=files,
        frames=frames,
        loaned_frames=loaned_frames,
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
