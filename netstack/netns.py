"""A private Linux network namespace for talking to the real kernel.

:class:`NetNS` creates a namespace with ``ip netns add`` under a name unique
to the run (``uvmloan-<pid>-<n>-<random>``), brings its loopback up and
turns IPv6 off inside it (a TUN device with IPv6 would send router and
multicast solicitations nobody asked for), and deletes it again on
``close()``: from ``__exit__`` (so also after a failure inside the ``with``)
and from an ``atexit`` hook (an interpreter that exits without unwinding the
``with``).  A process killed by a signal runs neither, so creating a
namespace first deletes those of the same prefix whose creator (the pid in
the name) is no longer alive (:func:`reap_stale`).  Nothing is configured
outside the namespace: the addresses and routes the TUN device gets exist
only in it, so nothing the model sends can leave it.

Entering the namespace: Python 3.11 has no ``os.setns``, so
:meth:`NetNS.entered` calls ``setns(2)`` through ``ctypes`` on the fd of
``/var/run/netns/NAME`` and back on the fd of the thread's own namespace
(``/proc/thread-self/ns/net``).  ``setns`` moves only the calling thread, and
a socket or TUN file opened meanwhile stays in the namespace it was opened
in for its whole life, so one process holds both sides (the model's TUN fd
and the kernel's test sockets) with no helper process to start, pass
descriptors back from (SCM_RIGHTS) and reap.  Only the capture program
(``dumpcap``, Wireshark's capture engine that ``tshark`` uses) runs as a
child, under ``ip netns exec``; :class:`KernelCapture` stops it by its pid.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_counter = 0
_lock = threading.Lock()
_live: dict[str, NetNS] = {}


def missing_requirements() -> list[str]:
    """What this machine lacks to run a namespace with a TUN device in it."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (euid 0)")
    if not os.path.exists("/dev/net/tun"):
        missing.append("/dev/net/tun")
    if shutil.which("ip") is None:
        missing.append("the ip command (iproute2)")
    return missing


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _run(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale(prefix: str = "uvmloan") -> list[str]:
    """Delete namespaces ``<prefix>-<pid>-...`` whose process is gone."""
    reaped = []
    names = os.listdir(NETNS_DIR) if NETNS_DIR.is_dir() else []
    for name in names:
        parts = name.split("-")
        if len(parts) != 4 or parts[0] != prefix or not parts[1].isdigit():
            continue
        if _alive(int(parts[1])):
            continue
        r = subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        if r.returncode == 0:
            reaped.append(name)
    return reaped


class NetNS:
    """A network namespace of this run; a context manager."""

    def __init__(self, prefix: str = "uvmloan") -> None:
        global _counter
        if "-" in prefix or not prefix:
            raise ValueError(f"the prefix must be a non-empty word without '-', not {prefix!r}")
        reap_stale(prefix)
        with _lock:
            _counter += 1
            n = _counter
        self.name = f"{prefix}-{os.getpid()}-{n}-{secrets.token_hex(3)}"
        self.closed = False
        self.children: list[subprocess.Popen[bytes]] = []
        _run("ip", "netns", "add", self.name)
        _live[self.name] = self
        try:
            self.ip("link", "set", "lo", "up")
            for key in ("all", "default"):
                self.exec("sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def exists(self) -> bool:
        return self.path.exists()

    def ip(self, *args: str) -> None:
        """``ip -n NAME ...``."""
        _run("ip", "-n", self.name, *args)

    def exec(self, *argv: str) -> None:
        """Run a command inside the namespace and wait for it."""
        _run("ip", "netns", "exec", self.name, *argv)

    @contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread is in the namespace for the ``with`` body."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM,
               proto: int = 0) -> socket.socket:
        """A kernel socket living in the namespace."""
        with self.entered():
            return socket.socket(family, kind, proto)

    def close(self) -> None:
        """Stop children, delete the namespace (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for p in self.children:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        _live.pop(self.name, None)
        if self.exists():
            _run("ip", "netns", "del", self.name)

    def __enter__(self) -> NetNS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NetNS {self.name}{' closed' if self.closed else ''}>"


@atexit.register
def _cleanup() -> None:
    for ns in list(_live.values()):
        # best effort at exit: one namespace failing must not keep the others
        with contextlib.suppress(Exception):
            ns.close()


class KernelCapture:
    """``dumpcap`` on a device inside a namespace, writing a pcap file."""

    def __init__(self, ns: NetNS, dev: str, path: str | Path) -> None:
        exe = shutil.which("dumpcap")
        if exe is None:
            raise RuntimeError("dumpcap (part of tshark) is not installed")
        self.path = Path(path)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, exe, "-q", "-P", "-B", "64", "-i", dev,
             "-w", str(self.path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        ns.children.append(self.proc)
        # dumpcap says "Capturing on 'dev'" on stderr once the device is open
        assert self.proc.stderr is not None
        seen = b""
        while b"Capturing on" not in seen:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError(f"dumpcap did not start: {seen.decode(errors='replace')}")
            seen += line
        # it says so just before its socket is bound to the device: a
        # packet in that moment would be missed
        time.sleep(0.5)
        self.stderr = seen

    def stop(self, settle_s: float = 1.0) -> str:
        """Stop the capture; returns what dumpcap said (packets dropped ...)."""
        p = self.proc
        if p.poll() is None:
            # libpcap hands dumpcap a ring block only when it is full or its
            # timeout (dumpcap's 250 ms read timeout) retires it; a SIGTERM
            # before that loses the last block's packets
            time.sleep(settle_s)
            p.send_signal(signal.SIGTERM)
        assert p.stderr is not None
        rest = p.stderr.read()
        p.wait(timeout=10)
        p.stderr.close()
        return (self.stderr + rest).decode(errors="replace")


def read_pcap(path: str | Path) -> list[tuple[int, bytes]]:
    """The (timestamp ns, packet) records of a pcap file (µs or ns variant)."""
    data = Path(path).read_bytes()
    magic, = struct.unpack_from("<I", data, 0)
    if magic == 0xA1B2C3D4:
        scale = 1000
    elif magic == 0xA1B23C4D:
        scale = 1
    else:
        raise ValueError(f"{path}: not a little-endian pcap file (magic {magic:#x})")
    out = []
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from("<IIII", data, pos)
        pos += 16
        out.append((sec * 1_000_000_000 + frac * scale, data[pos : pos + incl]))
        pos += incl
    return out


__all__ = ["KernelCapture", "NetNS", "missing_requirements", "read_pcap", "reap_stale"]
