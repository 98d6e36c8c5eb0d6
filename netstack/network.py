"""Network and Host: one event queue for every machine and link.

``Network`` owns the single :class:`uvmloan.sim.Scheduler` whose ``now`` is
global simulated time in integer nanoseconds; every host's machine uses it
as its platform scheduler.  ``Host`` is a :class:`uvmloan.Machine` with a
stack attached (``host.stack``, an :class:`netstack.ip.IPStack`).

Kernel activities (section "Time" of specs/netstack.md): ``host.kernel(fn,
cpu)`` runs ``fn`` now, on CPU ``cpu``, starting at ``max(net.now, cpu
clock)``; what ``fn`` charges advances that CPU's clock, and whatever it
emits with ``host.emit`` is scheduled at the CPU's clock when ``fn``
returns.  The activity runs synchronously (its result is returned), so it
sees the state of the world at ``net.now``; only its effects are
time-stamped by the CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from uvmloan.machine import Machine
from uvmloan.profile import Profile
from uvmloan.sim import Scheduler, Timer
from uvmloan.trace import Tracer

from .ip import IPStack
from .link import Link, Switch
from .wire import inet_aton, inet_ntoa

if TYPE_CHECKING:
    from .netif import Netif

T = TypeVar("T")

# TEST-NET-1 (RFC 5737): documentation addresses, never routed anywhere real.
NET_BASE = inet_aton("192.0.2.0")


class _Activity:
    __slots__ = ("cpu", "emits", "start")

    def __init__(self, cpu: int, start: int) -> None:
        self.cpu = cpu
        self.emits: list[Callable[[], None]] = []
        self.start = start  # its CPU's clock when it began (or resumed)


class Host:
    """A machine with a network stack, on a :class:`Network`."""

    def __init__(self, net: Network, name: str, machine: Machine) -> None:
        self.net = net
        self.name = name
        self.machine = machine
        # Every machine on the network shares the network's clock.
        machine.platform.sched = net.sched
        # the machine's platform and CPU count, read by every kernel activity
        self._plat = machine.platform
        self._ncpus = len(machine.platform.cpus)
        self._act: _Activity | None = None
        # Per CPU, the simulated ns spent running activities: the CPU time a
        # workload cost, apart from the idle gaps between activities (a
        # sleeping activity is not running).
        self.busy_ns: list[int] = [0] * len(machine.cpus)
        self.stack = IPStack(self)

    # ---------------------------------------------------------------- time

    def kernel(self, fn: Callable[[], T], cpu: int | None = None) -> T:
        """Run ``fn`` as a kernel activity on ``cpu`` (default CPU 0, where
        the NIC's interrupts are routed) and return its result."""
        plat = self._plat
        if cpu is None:
            idx = 0
        elif type(cpu) is int and 0 <= cpu < self._ncpus:
            idx = cpu  # the common case, checked without a call
        else:
            idx = plat.cpu(cpu).index  # raises the error that names the problem
        outer = self._act
        saved = plat.cur
        if outer is not None and outer.cpu == idx:
            # nested on the same CPU: part of the running activity
            plat.cur = idx
            try:
                return fn()
            finally:
                plat.cur = saved
        c = plat.cpus[idx]
        now = self.net.sched.now
        if c.clock < now:
            c.clock = now
        act = _Activity(idx, c.clock)
        self._act = act
        plat.cur = idx  # curcpu() for the activity (Platform.on_cpu, inlined)
        try:
            result = fn()
        finally:
            plat.cur = saved
            self._act = outer
            self.busy_ns[idx] += c.clock - act.start
            if act.emits:
                end = c.clock  # >= now: the clock started at now at least
                post = self.net.sched.post
                for e in act.emits:
                    post(end, e)
        return result

    def sleep(self, cond: Callable[[], bool], limit_ns: int) -> bool:
        """The running activity sleeps (tsleep) until ``cond()``.

        What the activity emitted so far goes out at its CPU's clock, the
        network runs, and the activity resumes with its CPU's clock at least
        the network's time.  Returns ``cond()``: False when nothing was left
        to run, or ``limit_ns`` of simulated time passed, with it still false.
        """
        net = self.net
        sched = net.sched
        act = self._act
        if act is not None:
            clk = self.machine.cpus[act.cpu].clock
            self.busy_ns[act.cpu] += clk - act.start
            end = max(clk, sched.now)
            for e in act.emits:
                sched.post(end, e)
            act.emits.clear()
            self._act = None
        deadline = sched.now + limit_ns
        step_by = sched.step_by
        try:
            while not cond():
                if not step_by(deadline):
                    return False
        finally:
            self._act = act
            if act is not None:
                c = self.machine.cpus[act.cpu]
                c.clock = max(c.clock, sched.now)
                act.start = c.clock
        return True

    def emit(self, fn: Callable[[], None]) -> None:
        """Schedule ``fn`` when the running activity finishes (at its CPU's
        clock then); outside an activity, at the network's now."""
        act = self._act
        if act is None:
            sched = self.net.sched
            sched.post(sched.now, fn)
        else:
            act.emits.append(fn)

    def clock(self) -> int:
        """Simulated time as the running activity sees it (its CPU's clock)."""
        act = self._act
        if act is None:
            return self.net.sched.now
        return self._plat.cpus[act.cpu].clock

    @property
    def in_activity(self) -> bool:
        return self._act is not None

    def schedule(self, when: int, fn: Callable[[], None], cpu: int | None = None) -> Timer:
        """Run ``fn`` as a kernel activity at ``when`` (not before now)."""
        sched = self.net.sched
        return sched.post(max(when, sched.now), functools.partial(self.kernel, fn, cpu))

    def timeout(self, delay_ns: int, fn: Callable[[], None], cpu: int | None = None) -> Timer:
        """callout_schedule: run ``fn`` as a kernel activity ``delay_ns`` from now."""
        if not isinstance(delay_ns, int) or delay_ns < 0:
            raise ValueError(f"delay must be a non-negative int of ns, got {delay_ns!r}")
        return self.schedule(self.clock() + delay_ns, fn, cpu)

    # ------------------------------------------------------------- helpers

    @property
    def interfaces(self) -> list[Netif]:
        return self.stack.ifnet

    @property
    def addr(self) -> str:
        """The address of the host's first interface, dotted."""
        if not self.stack.ifnet:
            raise ValueError(f"host {self.name} has no interface yet")
        return inet_ntoa(self.stack.ifnet[0].addr)

    def socket(self, kind: str) -> Any:
        """A socket of ``kind`` "tcp" or "udp" (netstack.socket.socreate)."""
        from . import socket as _socket  # the socket layer sits above this one

        return _socket.socreate(self, kind)

    def __repr__(self) -> str:
        addrs = ", ".join(inet_ntoa(i.addr) for i in self.stack.ifnet)
        return f"<Host {self.name} [{addrs}] {self.machine!r}>"


class Network:
    """Hosts, links and switches driven by one scheduler; deterministic for a seed."""

    def __init__(self, seed: int = 0) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, not {type(seed).__name__}")
        self.seed = seed
        self.sched = Scheduler()
        self.hosts: dict[str, Host] = {}
        self.links: list[Link] = []
        self.switches: dict[str, Switch] = {}
        self._next_host_addr = 1
        # Pending TCP persist callouts (run_until_idle stops when only these
        # are left); fired and cancelled ones are pruned lazily.
        self.background: dict[Timer, None] = {}

    @property
    def now(self) -> int:
        return self.sched.now

    def host(
        self,
        name: str,
        *,
        ncpus: int = 1,
        memory: int | str | None = None,
        profile: str | Profile = "netbsd-10",
        profile_overrides: dict[str, Any] | None = None,
        trace: str | Path | Tracer = "counters",
    ) -> Host:
        if not isinstance(name, str) or not name:
            raise ValueError(f"host name must be a non-empty string, got {name!r}")
        if name in self.hosts or name in self.switches:
            raise ValueError(f"the network already has a node named {name!r}")
        machine = Machine(
            ncpus=ncpus, memory=memory, profile=profile,
            profile_overrides=profile_overrides, trace=trace,
        )
        h = Host(self, name, machine)
        self.hosts[name] = h
        return h

    def switch(self, name: str) -> Switch:
        """A switch: forwards each frame to the port whose host owns its IP
        destination (no learning, no flooding), queueing per output port."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"switch name must be a non-empty string, got {name!r}")
        if name in self.hosts or name in self.switches:
            raise ValueError(f"the network already has a node named {name!r}")
        sw = Switch(self, name)
        self.switches[name] = sw
        return sw

    def _alloc_addr(self) -> int:
        n = self._next_host_addr
        if n > 254:
            raise ValueError("192.0.2.0/24 is exhausted: at most 254 interfaces per network")
        self._next_host_addr += 1
        return NET_BASE + n

    def link(self, a: Host | Switch, b: Host | Switch, **params: Any) -> Link:
        """A full-duplex link between two hosts, or a host and a switch.

        Parameters are :class:`netstack.link.LinkParams` fields
        (``bandwidth_bps``, ``delay_ns``, ``mtu``, ``queue_limit``, ``loss``,
        ``duplicate``, ``reorder``, ``reorder_delay_ns``, ``corrupt``,
        ``overhead_bytes``) plus, for the interfaces, ``csum_offload`` and
        ``tx_ring`` (transmit descriptors); these two default to each host's
        profile NIC (``Profile.nic``: no offload and one descriptor for
        ``netbsd-10``).
        """
        for end in (a, b):
            if isinstance(end, Host):
                if self.hosts.get(end.name) is not end:
                    raise ValueError(f"host {end.name} is not on this network")
            elif isinstance(end, Switch):
                if self.switches.get(end.name) is not end:
                    raise ValueError(f"switch {end.name} is not on this network")
            else:
                raise TypeError(f"a link joins hosts or switches, not {type(end).__name__}")
        if a is b:
            raise ValueError("a link needs two different ends")
        if isinstance(a, Switch) and isinstance(b, Switch):
            raise ValueError("switch-to-switch links are not modelled")
        from .link import make_link

        lk = make_link(self, len(self.links), a, b, params)
        self.links.append(lk)
        return lk

    # ----------------------------------------------------------------- run

    def run(self, until: int) -> int:
        """Run every event due at or before ``until`` ns; returns how many ran."""
        if not isinstance(until, int) or isinstance(until, bool):
            raise TypeError(f"until must be integer nanoseconds, not {type(until).__name__}")
        if until < self.sched.now:
            raise ValueError(f"until {until} ns is before now ({self.sched.now} ns)")
        return self.sched.run_until(until)

    def run_for(self, ns: int) -> int:
        return self.run(self.sched.now + ns)

    def run_until_idle(self, max_events: int | None = None) -> int:
        """Run until the network is idle (or ``max_events`` ran); returns how many ran.

        Idle: nothing is pending but TCP persist timers.  A connection whose
        peer advertises a zero window (its receiver is not reading) probes
        that window for as long as the window stays shut, as NetBSD's
        tcp_timer_persist does while the probes are answered; nothing else
        can happen until an application reads, so the network is idle from
        the applications' point of view and the run stops before the next
        probe.  ``run(until=...)`` still runs the probes.
        """
        sched = self.sched
        ran = 0
        while max_events is None or ran < max_events:
            head = sched.peek()
            if head is None:
                break
            if head in self.background and self._only_background_pending():
                break
            sched.step()
            ran += 1
        return ran

    def note_background(self, timer: Timer) -> None:
        """``timer`` only keeps a stalled connection probing (see run_until_idle)."""
        bg = self.background
        if len(bg) > 64:
            for t in [t for t in bg if t.cancelled]:
                del bg[t]
        bg[timer] = None

    def _only_background_pending(self) -> bool:
        bg = self.background
        for t in [t for t in bg if t.cancelled]:
            del bg[t]
        return self.sched.pending() == len(bg)

    def close(self) -> None:
        for h in self.hosts.values():
            h.machine.close()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
