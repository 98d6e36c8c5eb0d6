"""An interface backend that exchanges IPv4 packets with a Linux TUN device.

:class:`TunBackend` gives a model host an interface whose far end is a TUN
device inside a private network namespace (:class:`netstack.netns.NetNS`):
what the model's interface puts on its wire is written to the device, so
the real kernel of this machine receives it as an IP packet on ``tunN``; what
the kernel routes to the device is read from it and arrives at the model's
interface (receive interrupt, ``ip_input``).  The kernel side has
``kernel_addr`` with ``model_addr`` as its point-to-point peer; the model
host has ``model_addr`` with a host route to ``kernel_addr``.  The default
addresses are in 198.18.0.0/15 (RFC 2544 benchmarking space), configured in
the namespace only.

TUN rather than TAP, with ``IFF_TUN | IFF_NO_PI``: the model is an IPv4
host with no link layer (its links carry IP packets, as a pcap's
``LINKTYPE_RAW`` does), so a TUN device's packets are exactly the model's
frames; TAP would need ARP and Ethernet framing the model does not have.
``IFF_NO_PI`` drops the 4-byte packet-information prefix, which carries only
the EtherType (always IPv4 here: IPv6 is off in the namespace, and any other
packet is counted and ignored).  Without ``IFF_VNET_HDR`` the kernel hands
the device whole packets with their checksums computed (no GSO, no partial
checksums) and checks the checksums of what the model writes, so the
model's wire format is checked by the real stack.

Every frame crossing the device is captured by the model (``pcap=``, with
:class:`netstack.pcap.Capture`): frames as read from the device, before the
receive hook, and frames as written to it, after the transmit hook; their
timestamps are the wall clock (``CLOCK_REALTIME``), so a capture of the
kernel's side of the device (``netns.KernelCapture``) lines up with it.

Impairments on the backend path, for the tests: ``tx_hook`` sees each frame
the model sends and ``rx_hook`` each frame the kernel sent; a hook returns
the bytes to pass on (the same, or rewritten: corrupted, an option added)
or None to drop the frame (the loss switch).  Helpers: :func:`drop_matching`.

The network must come from :func:`netstack.realtime.realtime_network`: the
backend attaches itself to the scheduler as a source, which puts it in real
time until :meth:`TunBackend.close`.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from .link import Channel, FrameMeta, Link, LinkParams
from .netif import Netif
from .netns import NetNS
from .network import Host, Network
from .pcap import Capture
from .realtime import RealtimeScheduler
from .wire import inet_aton

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MODEL_ADDR = "198.18.0.2"
KERNEL_ADDR = "198.18.0.1"

Hook = Callable[[bytes], bytes | None]


@attrs.define(eq=False)
class TunStats:
    """What crossed the device (frames read from it are ``rx``)."""

    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    rx_dropped: int = 0  # by rx_hook
    tx_dropped: int = 0  # by tx_hook
    rx_rewritten: int = 0
    tx_rewritten: int = 0
    rx_not_ipv4: int = 0
    tx_errors: int = 0  # write(2) to the device failed


class _DevicePort:
    """The far end of the model's link: the TUN device."""

    def __init__(self, backend: TunBackend) -> None:
        self.backend = backend

    def frame_arrived(self, frame: bytearray, meta: FrameMeta) -> None:
        self.backend._to_kernel(frame, meta)


class TunBackend:
    """A model interface on ``host`` whose peer is a TUN device in ``ns``."""

    def __init__(
        self,
        net: Network,
        host: Host,
        ns: NetNS,
        *,
        model_addr: str = MODEL_ADDR,
        kernel_addr: str = KERNEL_ADDR,
        mtu: int = 1500,
        bandwidth_bps: int = 1_000_000_000,
        pcap: str | Path | None = None,
    ) -> None:
        if not isinstance(net.sched, RealtimeScheduler):
            raise TypeError("a TUN backend needs a network from realtime_network()")
        if net.hosts.get(host.name) is not host:
            raise ValueError(f"host {host.name} is not on this network")
        self.net = net
        self.host = host
        self.ns = ns
        self.sched: RealtimeScheduler = net.sched
        self.model_addr = model_addr
        self.kernel_addr = kernel_addr
        self.stats = TunStats()
        self.tx_hook: Hook | None = None
        self.rx_hook: Hook | None = None
        self.capture: Capture | None = None
        self.closed = False
        self.dev = f"uvt{len(net.links)}"
        with ns.entered():
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.fd: int | None = fd
        try:
            ifr = struct.pack("16sH22x", self.dev.encode(), IFF_TUN | IFF_NO_PI)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
            ns.ip("link", "set", "dev", self.dev, "mtu", str(mtu), "txqueuelen", "10000", "up")
            ns.ip("addr", "add", kernel_addr, "peer", f"{model_addr}/32", "dev", self.dev)
            if pcap is not None:
                self.capture = Capture(pcap, "pcap", "raw", name=self.dev)
            self.netif = self._attach_model(mtu, bandwidth_bps)
        except BaseException:
            self.close()
            raise
        self.sched.attach(self)

    def _attach_model(self, mtu: int, bandwidth_bps: int) -> Netif:
        net, host = self.net, self.host
        lk = Link(net, len(net.links), LinkParams(bandwidth_bps=bandwidth_bps, mtu=mtu),
                  f"{host.name}-{self.dev}")
        ifp = Netif(host, f"tun{len(host.stack.ifnet)}", lk, inet_aton(self.model_addr), mtu,
                    ifq_maxlen=LinkParams().queue_limit)
        port = _DevicePort(self)
        ch = Channel(lk, f"{host.name}>{self.dev}", port)
        lk.channels = [ch]
        lk.ends = [ifp, port]
        ifp.channel = ch
        net.links.append(lk)
        host.stack.if_attach(ifp)
        host.stack.rt_add(inet_aton(self.kernel_addr), ifp)
        self.link = lk
        return ifp

    # ----------------------------------------------------------- the device

    def fileno(self) -> int:
        assert self.fd is not None
        return self.fd

    def _tap(self, frame: bytes | bytearray, direction: str) -> None:
        cap = self.capture
        if cap is not None:
            cap.tap(time.time_ns(), frame, FrameMeta(direction=direction))

    def _to_kernel(self, frame: bytearray, meta: FrameMeta) -> None:
        """The model's frame left its wire: into the device (unless hooked away)."""
        st = self.stats
        fd = self.fd
        data = bytes(frame)
        hook = self.tx_hook
        if hook is not None:
            new = hook(data)
            if new is None:
                st.tx_dropped += 1
                return
            if new != data:
                st.tx_rewritten += 1
            data = new
        if fd is None:
            st.tx_dropped += 1  # detached: the wire ends nowhere
            return
        try:
            os.write(fd, data)
        except OSError:
            st.tx_errors += 1
            return
        st.tx_frames += 1
        st.tx_bytes += len(data)
        self._tap(data, "model>kernel")

    def pump(self) -> int:
        """Read every frame the kernel has queued; schedule their arrival."""
        fd = self.fd
        if fd is None:
            return 0
        st = self.stats
        sched = self.sched
        ifp = self.netif
        got = 0
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            got += 1
            st.rx_frames += 1
            st.rx_bytes += len(data)
            self._tap(data, "kernel>model")
            if not data or data[0] >> 4 != 4:
                st.rx_not_ipv4 += 1
                continue
            hook = self.rx_hook
            if hook is not None:
                new = hook(data)
                if new is None:
                    st.rx_dropped += 1
                    continue
                if new != data:
                    st.rx_rewritten += 1
                data = new
            frame = bytearray(data)
            sched.call_at(sched.arrival_time(), _arrive(ifp, frame))
        return got

    def flush(self) -> None:
        """Write the capture's buffered records out (to read it while running)."""
        cap = self.capture
        if cap is not None and cap._f is not None:
            cap._f.flush()

    def close(self) -> None:
        """Detach from the scheduler (back to simulated time), close the device."""
        if self.closed:
            return
        self.closed = True
        self.sched.detach(self)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.capture is not None:
            self.capture.close()

    def __enter__(self) -> TunBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TunBackend {self.host.name} {self.model_addr} <-> {self.dev} {self.kernel_addr}>"


def _arrive(ifp: Netif, frame: bytearray) -> Callable[[], None]:
    meta = FrameMeta(direction="kernel>model")

    def run() -> None:
        ifp.frame_arrived(frame, meta)

    return run


def drop_matching(pred: Callable[[bytes], bool], count: int = 1) -> Hook:
    """A hook dropping the first ``count`` frames for which ``pred`` holds."""
    left = [count]

    def hook(frame: bytes) -> bytes | None:
        if left[0] > 0 and pred(frame):
            left[0] -= 1
            return None
        return frame

    return hook


def tcp_payload_len(frame: bytes) -> int:
    """Bytes of TCP payload in an IPv4 frame (0 if it is not TCP)."""
    if len(frame) < 40 or frame[9] != 6:
        return 0
    hl = (frame[0] & 15) << 2
    tot: int = struct.unpack_from("!H", frame, 2)[0]
    return tot - hl - ((frame[hl + 12] >> 4) << 2)


__all__ = ["KERNEL_ADDR", "MODEL_ADDR", "TunBackend", "TunStats", "drop_matching",
           "tcp_payload_len"]
