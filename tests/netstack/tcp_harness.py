"""A two-connection harness for the TCP core: simulated time, a lossy queue, byte buffers.

Each ``Endpoint`` wraps one ``TCPConnection`` with a tiny byte-level model
of the socket around it: the send buffer is a ``bytearray`` whose front is
the first unacknowledged byte (so ``Transmit.data_offset`` indexes it and
``DataAcked`` deletes from it), the receive buffer collects ``Deliver``
slices, and the application writes and reads through ``SendQueued`` and
``ReceiveRead``.  ``Wire`` carries segments between the two with a seeded
delay, loss, duplication and reordering; ``Sim`` runs the earliest of
segment arrivals and timer deadlines, always in a deterministic order.
"""

from __future__ import annotations

import heapq
import random

import attrs

from netstack.tcp import (
    TH_FIN,
    TH_PUSH,
    TH_SYN,
    Action,
    ActiveOpen,
    CancelTimer,
    Closed,
    DataAcked,
    Deliver,
    Established,
    Event,
    PassiveOpen,
    PeerClosed,
    ReceiveRead,
    Segment,
    SegmentArrived,
    SendQueued,
    SetTimer,
    TCPConfig,
    TCPConnection,
    TCPState,
    TimerExpired,
    TimerKind,
    Transmit,
    UserClose,
    respond_to_closed,
)

MS = 1_000_000
S = 1_000_000_000


@attrs.define
class Endpoint:
    name: str
    conn: TCPConnection
    snd: bytearray = attrs.field(factory=bytearray)  # so_snd: unacked + unsent
    rcv: bytearray = attrs.field(factory=bytearray)  # so_rcv: delivered, unread
    received: bytearray = attrs.field(factory=bytearray)  # everything the app read
    to_send: bytes = b""  # what the application still has to write, from sent_off
    sent_off: int = 0
    close_after_send: bool = False
    close_on_eof: bool = False  # close only once the peer's FIN arrived
    closed_by_app: bool = False
    timers: dict[TimerKind, int] = attrs.field(factory=dict)
    established: bool = False
    peer_closed: bool = False
    closed: bool = False
    errno: int | None = None
    transmits: list[Transmit] = attrs.field(factory=list)
    read_auto: bool = True  # the application reads everything at once
    acked_total: int = 0


@attrs.define
class Wire:
    rng: random.Random
    delay_ns: int = 10 * MS
    jitter_ns: int = 0
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    split: float = 0.0

    def latencies(self) -> list[int]:
        """The arrival delays of one segment's copies (none when lost)."""
        if self.rng.random() < self.loss:
            return []
        n = 2 if self.rng.random() < self.dup else 1
        out = []
        for _ in range(n):
            d = self.delay_ns + (self.rng.randrange(self.jitter_ns + 1) if self.jitter_ns else 0)
            if self.rng.random() < self.reorder:
                d += self.rng.randrange(1, 4 * self.delay_ns + 2)
            out.append(d)
        return out


class Sim:
    def __init__(
        self,
        a_cfg: TCPConfig | None = None,
        b_cfg: TCPConfig | None = None,
        *,
        wire: Wire | None = None,
        seed: int = 0,
        check: bool = True,
    ) -> None:
        self.now = 0
        self.rng = random.Random(seed)
        self.wire = wire if wire is not None else Wire(self.rng)
        self.a = Endpoint("a", TCPConnection(a_cfg or TCPConfig(iss=1000)))
        self.b = Endpoint("b", TCPConnection(b_cfg or TCPConfig(iss=5_000_000)))
        self.queue: list[tuple[int, int, str, Segment]] = []
        self.nseq = 0
        self.check = check
        self.log: list[tuple[int, str, object]] = []
        self.keep_log = False
        self.rsts = 0

    def peer(self, ep: Endpoint) -> Endpoint:
        return self.b if ep is self.a else self.a

    # ---------------------------------------------------------------- events

    def event(self, ep: Endpoint, ev: Event) -> list[Action]:
        actions = ep.conn.handle(ev, self.now)
        if self.keep_log:
            self.log.append((self.now, ep.name, ev))
        for act in actions:
            self.apply(ep, act)
        if self.check:
            ep.conn.check_invariants()
            assert ep.conn.sb_cc == len(ep.snd), (ep.conn.sb_cc, len(ep.snd))
            assert ep.conn.so_rcv_cc == len(ep.rcv)
        if not ep.closed:
            self.app(ep)
        return actions

    def apply(self, ep: Endpoint, act: Action) -> None:
        if self.keep_log:
            self.log.append((self.now, ep.name, act))
        if isinstance(act, Transmit):
            assert not ep.closed
            ep.transmits.append(act)
            payload = bytes(ep.snd[act.data_offset : act.data_offset + act.data_len])
            assert len(payload) == act.data_len, "Transmit beyond the send buffer"
            seg = Segment(
                act.seq, act.ack, act.flags, act.wnd, act.mss, act.wscale, act.data_len, payload
            )
            self.send(ep, seg)
        elif isinstance(act, DataAcked):
            assert 0 < act.nbytes <= len(ep.snd)
            del ep.snd[: act.nbytes]
            ep.acked_total += act.nbytes
        elif isinstance(act, Deliver):
            assert isinstance(act.payload, bytes)
            assert act.skip >= 0 and act.skip + act.length <= len(act.payload)
            ep.rcv += act.payload[act.skip : act.skip + act.length]
        elif isinstance(act, SetTimer):
            assert act.when >= self.now
            ep.timers[act.kind] = act.when
        elif isinstance(act, CancelTimer):
            assert act.kind in ep.timers, f"cancel of an unarmed {act.kind}"
            del ep.timers[act.kind]
        elif isinstance(act, Established):
            assert not ep.established
            ep.established = True
        elif isinstance(act, PeerClosed):
            assert not ep.peer_closed
            ep.peer_closed = True
        elif isinstance(act, Closed):
            assert not ep.closed
            ep.closed = True
            ep.errno = act.errno

    def send(self, ep: Endpoint, seg: Segment) -> None:
        w = self.wire
        if w.split and seg.payload_len > 1 and w.rng.random() < w.split:
            # A resegmenting middlebox: two segments with the same bytes, so
            # later retransmissions overlap what was queued only in part.
            assert isinstance(seg.payload, bytes)
            cut = w.rng.randrange(1, seg.payload_len)
            first_flags = seg.flags & ~(TH_FIN | TH_PUSH)
            head = Segment(
                seg.seq, seg.ack, first_flags, seg.wnd, seg.mss, seg.wscale, cut, seg.payload[:cut]
            )
            tail = Segment(
                (seg.seq + cut) % (1 << 32),
                seg.ack,
                seg.flags & ~TH_SYN,
                seg.wnd,
                None,
                None,
                seg.payload_len - cut,
                seg.payload[cut:],
            )
            self._wire(ep, head)
            self._wire(ep, tail)
            return
        self._wire(ep, seg)

    def _wire(self, ep: Endpoint, seg: Segment) -> None:
        dst = self.peer(ep).name
        for d in self.wire.latencies():
            self.nseq += 1
            heapq.heappush(self.queue, (self.now + d, self.nseq, dst, seg))

    def app(self, ep: Endpoint) -> None:
        """The application: write what fits, read everything, close when done."""
        conn = ep.conn
        st = conn.state
        if ep.to_send and st in (TCPState.ESTABLISHED, TCPState.CLOSE_WAIT):
            room = conn.sb_hiwat_snd - len(ep.snd)
            if room > 0:
                chunk = ep.to_send[ep.sent_off : ep.sent_off + room]
                ep.sent_off += len(chunk)
                if ep.sent_off == len(ep.to_send):
                    ep.to_send, ep.sent_off = b"", 0
                ep.snd += chunk
                self.event(ep, SendQueued(len(chunk)))
                return
        if ep.read_auto and ep.rcv:
            n = len(ep.rcv)
            ep.received += ep.rcv
            ep.rcv.clear()
            self.event(ep, ReceiveRead(n))
            return
        if (
            ep.close_after_send
            and (ep.peer_closed or not ep.close_on_eof)
            and not ep.to_send
            and not ep.closed_by_app
            and st in (TCPState.ESTABLISHED, TCPState.CLOSE_WAIT, TCPState.SYN_RECEIVED)
        ):
            ep.closed_by_app = True
            # close(2): FIN_WAIT_2 is bounded by tcp_maxidle if the peer vanishes.
            self.event(ep, UserClose(cantrcvmore=True))

    def read(self, ep: Endpoint, n: int | None = None) -> None:
        n = len(ep.rcv) if n is None else n
        if n:
            ep.received += ep.rcv[:n]
            del ep.rcv[:n]
            self.event(ep, ReceiveRead(n))

    # ------------------------------------------------------------------ run

    def open(self, *, simultaneous: bool = False) -> None:
        if simultaneous:
            self.event(self.a, ActiveOpen())
            self.event(self.b, ActiveOpen())
        else:
            self.event(self.b, PassiveOpen())
            self.event(self.a, ActiveOpen())

    def next_time(self) -> int | None:
        times = [t for ep in (self.a, self.b) for t in ep.timers.values()]
        if self.queue:
            times.append(self.queue[0][0])
        return min(times) if times else None

    def step(self) -> bool:
        t = self.next_time()
        if t is None:
            return False
        self.now = t
        if self.queue and self.queue[0][0] == t:
            _, _, dst, seg = heapq.heappop(self.queue)
            ep = self.a if dst == "a" else self.b
            if ep.closed:
                # No TCB any more: the glue answers as RFC 9293 3.10.7.1 says.
                rst = respond_to_closed(seg)
                if rst is not None:
                    self.rsts += 1
                    self.send(ep, Segment(rst.seq, rst.ack, rst.flags, rst.wnd))
                return True
            self.event(ep, SegmentArrived(seg))
            return True
        for ep in (self.a, self.b):
            for kind, when in sorted(ep.timers.items(), key=lambda kv: kv[1]):
                if when == t:
                    del ep.timers[kind]
                    self.event(ep, TimerExpired(kind))
                    return True
        raise AssertionError("no event at the next time")

    def run(self, until: int | None = None, max_steps: int = 1_000_000) -> None:
        for _ in range(max_steps):
            t = self.next_time()
            if t is None or (until is not None and t > until):
                if until is not None:
                    self.now = max(self.now, until)
                return
            self.step()
        raise AssertionError("simulation did not settle")
