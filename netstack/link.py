"""Links and a switch: serialisation, propagation, queues and impairments.

A :class:`Link` is full duplex: one :class:`Channel` per direction.  A
channel sends one frame at a time: it is busy for the serialisation time
``ceil((len + overhead_bytes) * 8 * 1e9 / bandwidth_bps)`` ns; the sender's
transmit completion is due when the last bit has left, and the frame
arrives ``delay_ns`` later.  Frames offered while it is busy wait in its
queue, at most ``queue_limit`` of them (drop-tail, counted as
``drops_queue``).  An interface never offers a second frame before its
transmit completion (its own queue is ``if_snd``), so on a host's side the
channel queue stays empty; a switch's output ports use it.

Impairments are drawn from the link's own ``random.Random``, seeded from the
network seed and the link's index, in a fixed order per frame (loss, then
duplication, then per copy reordering and corruption), so a seed gives the
same run every time.  Corruption flips one bit of the delivered copy (the
sender's bytes are never touched): a single-bit error always changes the
Internet checksum, so the receiver's IP or TCP/UDP check catches it.
"""

from __future__ import annotations

import functools
import random
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .wire import inet_ntoa

if TYPE_CHECKING:
    from .network import Network

# net/if.h IFQ_MAXLEN: the default ifq_maxlen of an interface's if_snd.
IFQ_MAXLEN = 256


def _prob(_inst: object, attr: attrs.Attribute[Any], v: float) -> None:
    if not isinstance(v, int | float) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{attr.name} must be a probability in [0, 1], got {v!r}")


def _posint(_inst: object, attr: attrs.Attribute[Any], v: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{attr.name} must be a positive int, got {v!r}")


def _nonnegint(_inst: object, attr: attrs.Attribute[Any], v: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{attr.name} must be a non-negative int, got {v!r}")


def _mtu(_inst: object, attr: attrs.Attribute[Any], v: int) -> None:
    # RFC 791: every host must accept 576-byte datagrams; 68 is the minimum
    # MTU a link may have.  The IP total length caps it at 65535.
    if not isinstance(v, int) or isinstance(v, bool) or not 68 <= v <= 65535:
        raise ValueError(f"mtu must be an int from 68 to 65535, got {v!r}")


@attrs.frozen(kw_only=True)
class LinkParams:
    bandwidth_bps: int = attrs.field(default=100_000_000, validator=_posint)
    delay_ns: int = attrs.field(default=0, validator=_nonnegint)
    mtu: int = attrs.field(default=1500, validator=_mtu)
    queue_limit: int = attrs.field(default=IFQ_MAXLEN, validator=_posint)
    loss: float = attrs.field(default=0.0, validator=_prob)
    duplicate: float = attrs.field(default=0.0, validator=_prob)
    reorder: float = attrs.field(default=0.0, validator=_prob)
    # How much later a reordered frame arrives (default: 4 MTU-sized frames'
    # serialisation times, so the next few frames overtake it).
    reorder_delay_ns: int | None = attrs.field(default=None)
    corrupt: float = attrs.field(default=0.0, validator=_prob)
    # Per-frame bytes on the wire besides the IP packet (Ethernet: 14 header
    # + 4 FCS + 8 preamble + 12 inter-frame gap = 38); 0 by default.
    overhead_bytes: int = attrs.field(default=0, validator=_nonnegint)

    def __attrs_post_init__(self) -> None:
        r = self.reorder_delay_ns
        if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 0):
            raise ValueError(f"reorder_delay_ns must be a non-negative int, got {r!r}")

    def serialization_ns(self, nbytes: int) -> int:
        bits = (nbytes + self.overhead_bytes) * 8
        return -(-bits * 1_000_000_000 // self.bandwidth_bps)


class Receiver(Protocol):
    def frame_arrived(self, frame: bytearray, meta: FrameMeta) -> None: ...


@attrs.frozen
class FrameMeta:
    """What a capture may know about a frame besides its bytes."""

    loaned: bool = False
    direction: str = ""


Tap = Callable[[int, bytes | bytearray, FrameMeta], None]


@attrs.define(eq=False)
class LinkStats:
    frames: int = 0
    bytes: int = 0
    delivered: int = 0
    drops_queue: int = 0
    drops_loss: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0


class Channel:
    """One direction of a link."""

    def __init__(self, link: Link, name: str, dst: Receiver) -> None:
        self.link = link
        self.name = name
        self.dst = dst
        self.busy_until = 0
        self.queue: deque[tuple[bytearray, FrameMeta, Callable[[], None] | None]] = deque()

    @property
    def busy(self) -> bool:
        return self.busy_until > self.link.net.sched.now or bool(self.queue)

    def send(
        self, frame: bytearray, meta: FrameMeta, on_done: Callable[[], None] | None = None
    ) -> bool:
        """Offer a frame now; False if the queue was full (dropped, counted)."""
        lk = self.link
        sched = lk.net.sched
        if len(frame) > lk.params.mtu:
            from uvmloan.errors import KernelAssertion

            raise KernelAssertion(
                f"{self.name}: {len(frame)}-byte frame exceeds the link MTU {lk.params.mtu}"
            )
        if self.busy_until > sched.now or self.queue:
            if len(self.queue) >= lk.params.queue_limit:
                lk.stats.drops_queue += 1
                return False
            self.queue.append((frame, meta, on_done))
            return True
        self._start(frame, meta, on_done)
        return True

    def _start(
        self, frame: bytearray, meta: FrameMeta, on_done: Callable[[], None] | None
    ) -> None:
        lk = self.link
        sched = lk.net.sched
        now = sched.now
        if lk.taps:
            for tap in lk.taps:
                tap(now, frame, attrs.evolve(meta, direction=self.name))
        n = len(frame)
        stats = lk.stats
        stats.frames += 1
        stats.bytes += n
        p = lk.params
        # p.serialization_ns(n), inlined (a call per frame otherwise)
        done = now - (-(n + p.overhead_bytes) * 8_000_000_000 // p.bandwidth_bps)
        self.busy_until = done
        # partials, not lambdas: a frame schedules both, and calling a
        # partial costs no Python frame of its own
        sched.post(done, functools.partial(self._finished, on_done))
        arrive = done + p.delay_ns
        if p.loss or p.duplicate or p.reorder or p.corrupt:
            lk.impair(self, frame, meta, arrive)
        else:
            # a clean link: impair would draw nothing and deliver one copy
            sched.post(arrive, functools.partial(_deliver_now, self, frame, meta))

    def _finished(self, on_done: Callable[[], None] | None) -> None:
        if on_done is not None:
            on_done()
        if self.queue and self.busy_until <= self.link.net.sched.now:
            frame, meta, cb = self.queue.popleft()
            self._start(frame, meta, cb)


class Link:
    """A full-duplex link between two ends (interfaces or switch ports)."""

    def __init__(self, net: Network, index: int, params: LinkParams, name: str) -> None:
        self.net = net
        self.index = index
        self.params = params
        self.name = name
        self.rng = random.Random(f"netstack-link:{net.seed}:{index}")
        self.stats = LinkStats()
        self.taps: list[Tap] = []
        self.channels: list[Channel] = []
        self.ends: list[Any] = []  # the Netif or SwitchPort at each end

    def serialization_ns(self, nbytes: int) -> int:
        return self.params.serialization_ns(nbytes)

    def impair(self, ch: Channel, frame: bytearray, meta: FrameMeta, arrive: int) -> None:
        p = self.params
        rng = self.rng
        st = self.stats
        if p.loss and rng.random() < p.loss:
            st.drops_loss += 1
            return
        copies = 1
        if p.duplicate and rng.random() < p.duplicate:
            st.duplicated += 1
            copies = 2
        sched = self.net.sched
        for i in range(copies):
            when = arrive
            if p.reorder and rng.random() < p.reorder:
                st.reordered += 1
                extra = p.reorder_delay_ns
                if extra is None:
                    extra = 4 * p.serialization_ns(p.mtu)
                when += extra
            data = frame if i == 0 else bytearray(frame)
            if p.corrupt and rng.random() < p.corrupt:
                st.corrupted += 1
                data = bytearray(frame)
                bit = rng.randrange(len(data) * 8)
                data[bit >> 3] ^= 0x80 >> (bit & 7)
            sched.post(when, _deliver(ch, data, meta))

    def add_tap(self, tap: Tap) -> None:
        self.taps.append(tap)

    def remove_tap(self, tap: Tap) -> None:
        self.taps.remove(tap)

    def __repr__(self) -> str:
        p = self.params
        return f"<Link {self.name} {p.bandwidth_bps} bit/s {p.delay_ns} ns mtu {p.mtu}>"


def _deliver(ch: Channel, data: bytearray, meta: FrameMeta) -> Callable[[], None]:
    return functools.partial(_deliver_now, ch, data, meta)


def _deliver_now(ch: Channel, data: bytearray, meta: FrameMeta) -> None:
    ch.link.stats.delivered += 1
    ch.dst.frame_arrived(data, meta)


class SwitchPort:
    """A switch's end of a link: forwards what it receives through the switch."""

    def __init__(self, switch: Switch, link: Link) -> None:
        self.switch = switch
        self.link = link
        self.out: Channel | None = None  # towards the host

    def frame_arrived(self, frame: bytearray, meta: FrameMeta) -> None:
        self.switch.forward(self, frame, meta)


class Switch:
    """Forwards by IPv4 destination to the port of the host owning it (store
    and forward, no processing delay); unknown destinations are dropped."""

    def __init__(self, net: Network, name: str) -> None:
        self.net = net
        self.name = name
        self.ports: list[SwitchPort] = []
        self.fib: dict[int, SwitchPort] = {}
        self.drops_noroute = 0
        self.drops_queue = 0
        self.drops_mtu = 0

    def forward(self, inport: SwitchPort, frame: bytearray, meta: FrameMeta) -> None:
        if len(frame) < 20:
            self.drops_noroute += 1
            return
        dst = int.from_bytes(frame[16:20], "big")
        port = self.fib.get(dst)
        if port is None or port is inport or port.out is None:
            self.drops_noroute += 1
            return
        if len(frame) > port.link.params.mtu:
            # a switch does not fragment: a frame too big for the port is lost
            self.drops_mtu += 1
            return
        if not port.out.send(frame, meta):
            self.drops_queue += 1

    def __repr__(self) -> str:
        addrs = ", ".join(inet_ntoa(a) for a in sorted(self.fib))
        return f"<Switch {self.name} [{addrs}]>"


def make_link(net: Network, index: int, a: Any, b: Any, params: dict[str, Any]) -> Link:
    from .netif import Netif
    from .network import Host

    params = dict(params)
    # The interfaces' checksum offload and transmit ring: given, or each
    # host's profile NIC (Profile.nic) when not.
    csum_offload = params.pop("csum_offload", None)
    if csum_offload is not None and not isinstance(csum_offload, bool):
        raise TypeError("csum_offload must be a bool")
    tx_ring = params.pop("tx_ring", None)
    if tx_ring is not None and (
        not isinstance(tx_ring, int) or isinstance(tx_ring, bool) or not 1 <= tx_ring <= 4096
    ):
        raise ValueError(f"tx_ring must be an int from 1 to 4096 descriptors, got {tx_ring!r}")
    try:
        lp = LinkParams(**params)
    except TypeError as e:
        known = ", ".join(f.name for f in attrs.fields(LinkParams))
        raise TypeError(f"link: {e}; the parameters are {known}, csum_offload, tx_ring") from None
    name = f"{a.name}-{b.name}"
    lk = Link(net, index, lp, name)
    ends: list[Any] = []
    for end in (a, b):
        if isinstance(end, Host):
            nic = end.machine.profile.nic
            ifp = Netif(end, f"if{len(end.stack.ifnet)}", lk, net._alloc_addr(), lp.mtu,
                        ifq_maxlen=lp.queue_limit,
                        csum_offload=nic.cksum_offload if csum_offload is None else csum_offload,
                        tx_ring=nic.tx_ring if tx_ring is None else tx_ring)
            ends.append(ifp)
        else:
            ends.append(SwitchPort(end, lk))
    lk.ends = ends
    ea, eb = ends
    ca = Channel(lk, f"{a.name}>{b.name}", eb)
    cb = Channel(lk, f"{b.name}>{a.name}", ea)
    lk.channels = [ca, cb]
    for end, out in ((ea, ca), (eb, cb)):
        if isinstance(end, Netif):
            end.channel = out
        else:
            end.out = out
    for end, other in ((ea, eb), (eb, ea)):
        if not isinstance(end, Netif):
            continue
        end.host.stack.if_attach(end)
        if isinstance(other, Netif):
            end.host.stack.rt_add(other.addr, end)
        else:
            sw: Switch = other.switch
            # every host already on the switch and the new one reach each other
            for addr, port in sw.fib.items():
                peer = port.link.ends[0] if port.link.ends[1] is port else port.link.ends[1]
                end.host.stack.rt_add(addr, end)
                peer.host.stack.rt_add(end.addr, peer)
            sw.fib[end.addr] = other
            sw.ports.append(other)
    return lk


