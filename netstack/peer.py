"""``uvmloan peer``: the model's TCP and UDP against this machine's kernel.

:class:`PeerSession` puts a model host (a uniprocessor kernel, so
``sosend`` loans) on a TUN device in a private network namespace
(:mod:`netstack.tun`, :mod:`netstack.netns`), in real time
(:mod:`netstack.realtime`).  The exchanges:

* :meth:`PeerSession.model_to_kernel`: a kernel listener (a socket in the
  namespace, served by a thread) takes a connection from the model, which
  sends ``data`` from its process's memory in 64 KiB ``send(2)`` calls
  (``sosend_loan``), optionally overwriting each chunk right after the send
  returns; the model closes first, the kernel reads to end of file, hashes
  and closes.
* :meth:`PeerSession.kernel_to_model`: a model listener accepts the
  kernel's connection; the kernel sends ``data``, shuts down its side
  (FIN first), reads to the model's FIN and closes.
* :meth:`PeerSession.udp_model_to_kernel` / :meth:`udp_kernel_to_model`:
  datagrams of the given sizes.

:meth:`PeerSession.close` stops the kernel capture, detaches the device
(the scheduler goes back to simulated time), runs the model's remaining
timers (TIME_WAIT) to the end in simulated time, and deletes the
namespace; :meth:`PeerSession.check_quiescent` then checks that nothing is
left (loans, loan KVA, mbufs, frames: ``sockcheck.check_quiescent`` and the
machine's ``check_invariants``).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from uvmloan import check_invariants

from .netns import KernelCapture, NetNS
from .network import Host, Network
from .realtime import RealtimeScheduler, realtime_network, run_until
from .sockapi import SO_RCVBUF, SO_SNDBUF, SOL_SOCKET, get_layer, host_sleep
from .sockbuf import sbspace
from .sockcheck import check_quiescent
from .tun import KERNEL_ADDR, MODEL_ADDR, TunBackend

CHUNK = 65536
PS = 4096


class KThread(threading.Thread):
    """The kernel side's user program: a thread whose result or error is kept."""

    def __init__(self, fn: Callable[[], Any], name: str,
                 wake: Callable[[], None] | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.wake = wake
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # re-raised in the main thread by outcome()
            self.error = e
        finally:
            if self.wake is not None:
                self.wake()  # the model's runner may be waiting for this

    def outcome(self) -> Any:
        if self.is_alive():
            raise TimeoutError(f"{self.name} is still running")
        if self.error is not None:
            raise self.error
        return self.result


@attrs.frozen
class Transfer:
    """One TCP transfer: what each side saw."""

    nbytes: int
    sent_sha256: str
    got_sha256: str
    got_bytes: int
    wall_s: float
    sim_ns: int

    @property
    def exact(self) -> bool:
        return self.got_bytes == self.nbytes and self.got_sha256 == self.sent_sha256

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / 1e6 / self.wall_s if self.wall_s else 0.0


def pattern(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


class PeerSession:
    """A namespace, a model host on a TUN device in it, and the kernel beside."""

    def __init__(
        self,
        out: str | Path,
        *,
        memory: str = "160M",
        kernel_capture: bool = False,
        seed: int = 0,
    ) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ns = NetNS()
        self.net: Network | None = None
        self.tun: TunBackend | None = None
        self.kcap: KernelCapture | None = None
        self.kcap_report = ""
        # the model's TCP connections, in the order the exchanges made them
        # (their TCPConnection: sequence state and per-connection stats)
        self.conns: list[Any] = []
        try:
            self.net = realtime_network(seed)
            self.host: Host = self.net.host(
                "model", memory=memory, profile_overrides={"multiprocessor": False}
            )
            self.pcap = self.out / f"{self.ns.name}-model.pcap"
            self.tun = TunBackend(self.net, self.host, self.ns, pcap=self.pcap)
            self.kernel_pcap = self.out / f"{self.ns.name}-kernel.pcap"
            if kernel_capture:
                self.kcap = KernelCapture(self.ns, self.tun.dev, self.kernel_pcap)
        except BaseException:
            self.close()
            raise

    @property
    def network(self) -> Network:
        assert self.net is not None
        return self.net

    @property
    def backend(self) -> TunBackend:
        assert self.tun is not None
        return self.tun

    @property
    def sched(self) -> RealtimeScheduler:
        s = self.network.sched
        assert isinstance(s, RealtimeScheduler)
        return s

    def run_until(self, cond: Callable[[], bool], timeout_s: float = 60.0) -> bool:
        return run_until(self.network, cond, timeout_s)

    def kthread(self, fn: Callable[[], Any], name: str) -> KThread:
        """A kernel-side thread (not started) that wakes the runner when done."""
        return KThread(fn, name, wake=self.sched.wakeup)

    def wait(self, t: KThread, timeout_s: float = 120.0) -> Any:
        """Run the model until the kernel-side thread ``t`` is done."""
        self.run_until(lambda: not t.is_alive(), timeout_s)
        t.join(timeout=1.0)
        return t.outcome()

    def ksocket(self, kind: int = socket.SOCK_STREAM) -> socket.socket:
        return self.ns.socket(socket.AF_INET, kind)

    # ------------------------------------------------------------------ TCP

    def model_to_kernel(self, data: bytes, *, port: int = 5001, overwrite: bool = True,
                        sndbuf: int = 3 * CHUNK) -> Transfer:
        lsock = self.ksocket()
        lsock.bind((KERNEL_ADDR, port))
        lsock.listen(1)

        def serve() -> tuple[int, str]:
            c, _ = lsock.accept()
            lsock.close()
            h = hashlib.sha256()
            n = 0
            with c:
                while True:
                    d = c.recv(1 << 18)
                    if not d:
                        break
                    h.update(d)
                    n += len(d)
            return n, h.hexdigest()

        t = self.kthread(serve, "kernel-receiver")
        t.start()
        host = self.host
        w0, s0 = time.perf_counter(), self.network.now
        s = host.socket("tcp")
        s.setsockopt(SOL_SOCKET, SO_SNDBUF, sndbuf)
        s.connect((KERNEL_ADDR, port))
        self.conns.append(s.so.so_pcb.conn)
        proc = host.machine.spawn("sender")
        va = proc.mmap(len(data) + PS)
        proc.write(va, data)
        so = s.so
        off = 0
        while off < len(data):
            take = min(CHUNK, len(data) - off)
            # wait for room for the whole send, as a sender using poll(2) does
            if not host_sleep(host, lambda t=take: sbspace(so.so_snd) >= t):  # type: ignore[misc]
                raise RuntimeError("the model's send buffer never drained")
            s.send(proc, va + off, take)
            if overwrite:
                proc.write(va + off, bytes(take))  # the loans break; the old bytes go out
            off += take
        s.close()
        n, digest = self.wait(t)
        w1, s1 = time.perf_counter(), self.network.now
        proc.munmap(va, len(data) + PS)
        return Transfer(len(data), hashlib.sha256(data).hexdigest(), digest, n, w1 - w0,
                        s1 - s0)

    def kernel_to_model(self, data: bytes, *, port: int = 5002, rcvbuf: int = 192 * 1024
                        ) -> Transfer:
        host = self.host
        ls = host.socket("tcp")
        ls.setsockopt(SOL_SOCKET, SO_RCVBUF, rcvbuf)
        ls.bind(("", port))
        ls.listen()
        ksock = self.ksocket()

        def send() -> None:
            with ksock:
                ksock.connect((MODEL_ADDR, port))
                ksock.sendall(data)
                ksock.shutdown(socket.SHUT_WR)  # the kernel's FIN first
                while ksock.recv(4096):
                    pass  # to the model's FIN

        t = self.kthread(send, "kernel-sender")
        w0, s0 = time.perf_counter(), self.network.now
        t.start()
        conn, _peer = ls.accept()
        ls.close()
        self.conns.append(conn.so.so_pcb.conn)
        h = hashlib.sha256()
        n = 0
        while True:
            d = conn.recv_bytes(CHUNK)
            if not d:
                break
            h.update(d)
            n += len(d)
        conn.close()
        self.wait(t)
        w1, s1 = time.perf_counter(), self.network.now
        return Transfer(len(data), hashlib.sha256(data).hexdigest(), h.hexdigest(), n,
                        w1 - w0, s1 - s0)

    # ------------------------------------------------------------------ UDP

    def udp_model_to_kernel(self, sizes: list[int], *, port: int = 5003,
                            seed: int = 1) -> tuple[list[bytes], list[bytes]]:
        """The model sends one datagram per size; returns (sent, received)."""
        k = self.ksocket(socket.SOCK_DGRAM)
        k.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        k.bind((KERNEL_ADDR, port))
        k.settimeout(10.0)

        def recv() -> list[bytes]:
            with k:
                return [k.recv(65536) for _ in sizes]

        t = self.kthread(recv, "kernel-udp-receiver")
        t.start()
        host = self.host
        s = host.socket("udp")
        s.setsockopt(SOL_SOCKET, SO_SNDBUF, 128 * 1024)
        proc = host.machine.spawn("udp-sender")
        span = sum(-(-n // PS) * PS for n in sizes) + PS
        va = proc.mmap(span)
        sent = []
        off = 0
        for i, n in enumerate(sizes):
            d = pattern(n, seed + i)
            proc.write(va + off, d)
            s.sendto(proc, va + off, n, (KERNEL_ADDR, port))
            proc.write(va + off, bytes(n))  # a loaned page breaks; the datagram keeps the old
            sent.append(d)
            off += -(-n // PS) * PS
        got: list[bytes] = self.wait(t)
        s.close()
        return sent, got

    def udp_kernel_to_model(self, sizes: list[int], *, port: int = 5004,
                            seed: int = 2) -> tuple[list[bytes], list[bytes]]:
        host = self.host
        s = host.socket("udp")
        s.setsockopt(SOL_SOCKET, SO_RCVBUF, 192 * 1024)
        s.bind(("", port))
        sent = [pattern(n, seed + i) for i, n in enumerate(sizes)]
        k = self.ksocket(socket.SOCK_DGRAM)

        def send() -> None:
            with k:
                for d in sent:
                    k.sendto(d, (MODEL_ADDR, port))

        t = self.kthread(send, "kernel-udp-sender")
        t.start()
        got = [s.recvfrom_bytes(65536)[0] for _ in sizes]
        self.wait(t)
        s.close()
        return sent, got

    # ------------------------------------------------------------- teardown

    def close(self) -> None:
        """Stop the capture, detach the device, finish the model's timers in
        simulated time and delete the namespace (idempotent; after errors too)."""
        try:
            if self.kcap is not None:
                self.kcap_report = self.kcap.stop()
                self.kcap = None
            if self.tun is not None:
                self.tun.close()
            if self.net is not None:
                self.net.run_until_idle()
        finally:
            self.ns.close()

    def check_quiescent(self) -> None:
        check_quiescent(get_layer(self.host))
        check_invariants(self.host.machine)

    def __enter__(self) -> PeerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.net is not None:
            self.net.close()


# ------------------------------------------------------------------ command


def _mb(r: Transfer) -> str:
    return f"{r.nbytes:,} bytes in {r.wall_s:.2f} s wall = {r.mb_per_s:.2f} MB/s"


def run(args: argparse.Namespace) -> int:
    from .netns import missing_requirements

    missing = missing_requirements()
    if missing:
        print("uvmloan peer needs " + ", ".join(missing))
        return 2
    data: bytes
    if args.file is not None:
        data = Path(args.file).read_bytes()
    else:
        data = pattern(args.size, args.seed)
    memory = f"{max(64, 3 * len(data) // (1 << 20) + 40)}M"
    with PeerSession(args.out, memory=memory, seed=args.seed) as ps:
        print(f"namespace {ps.ns.name}: kernel {KERNEL_ADDR} on {ps.backend.dev}, "
              f"model {MODEL_ADDR}")
        c0 = dict(ps.host.machine.counters)
        up = ps.model_to_kernel(data, overwrite=args.overwrite)
        c1 = dict(ps.host.machine.counters)
        down = ps.kernel_to_model(data)
        ps.close()
        ps.check_quiescent()
        print(f"model -> kernel: {_mb(up)}  sha256 {'match' if up.exact else 'MISMATCH'}")
        print(f"kernel -> model: {_mb(down)}  sha256 {'match' if down.exact else 'MISMATCH'}")
        for key, label in (("sosend loan big", "loaned sends"), ("loan", "pages loaned"),
                           ("loan.break", "loans broken by the overwrite")):
            print(f"  {label} [{key}]: {c1.get(key, 0) - c0.get(key, 0)}")
        st = ps.backend.stats
        print(f"frames: {st.tx_frames} to the kernel, {st.rx_frames} from it")
        print(f"pcap: {ps.pcap}")
        print("no loan, loan KVA, mbuf or frame left; namespace deleted")
        return 0 if up.exact and down.exact else 1


@attrs.frozen
class _PeerCommand:
    """``uvmloan peer``, entered in the ``uvmloan.commands`` entry points."""

    name: str = "peer"
    help: str = ("TCP between the model and this machine's Linux kernel, over a TUN "
                 "device in a private network namespace (needs root)")

    def add_arguments(self, p: argparse.ArgumentParser, size: Callable[[str], int]) -> None:
        p.description = (
            "Create a private network namespace with a TUN device, put a simulated "
            "uniprocessor NetBSD host on it (sosend loans), send a file from a loaned "
            "buffer to a kernel listener, receive the same bytes back from a kernel "
            "sender, and print throughput, loans, breaks and the pcap path. "
            "The namespace is deleted on exit."
        )
        p.add_argument("--size", type=size, default=4 << 20,
                       help="bytes of generated data when no --file (default: 4M)")
        p.add_argument("--file", type=Path, default=None, help="send this file instead")
        p.add_argument("--overwrite", action="store_true",
                       help="the model rewrites its buffer right after each send")
        p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
        p.add_argument("--out", type=Path, default=Path("out"),
                       help="directory for the pcap (default: out)")

    def check_arguments(self, p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.file is None and not 0 < args.size <= 64 << 20:
            p.error(f"--size must be from 1 byte to 64M, got {args.size}")
        if args.file is not None and not args.file.is_file():
            p.error(f"--file {args.file} is not a readable file")

    def run(self, args: argparse.Namespace) -> int:
        return run(args)


PEER = _PeerCommand()

__all__ = ["PEER", "KThread", "PeerSession", "Transfer", "pattern"]
