"""``uvmloan peer`` (netstack.peer) and the real-time scheduler (netstack.realtime).

The real-time tests use a pipe as the frame source, so they need neither
root nor a TUN device; the command's run needs both and is skipped, naming
what is missing, without them.
"""

from __future__ import annotations

import os
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from netstack.netns import missing_requirements
from netstack.peer import PEER
from netstack.realtime import RealtimeScheduler, realtime_network, run_until
from uvmloan import cli

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_enters_the_peer_command() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["uvmloan.commands"]["peer"] == "netstack.peer:PEER"


@pytest.fixture
def with_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command as the entry point would load it (the installed metadata
    may predate it)."""
    found = cli._commands()
    found["peer"] = PEER  # type: ignore[assignment]
    monkeypatch.setattr(cli, "_commands", lambda: found)


def test_peer_help(with_peer: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        cli.main(["peer", "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    for word in ("namespace", "--file", "--size", "--overwrite", "--out"):
        assert word in out


@pytest.mark.skipif(bool(missing_requirements()),
                    reason="uvmloan peer needs " + ", ".join(missing_requirements()))
def test_peer_runs_against_the_kernel(with_peer: None, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tshark import assert_checksums_good

    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(512 * 1024 + 123))
    rc = cli.main(["peer", "--file", str(src), "--overwrite", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("sha256 match") == 2
    assert "loaned sends [sosend loan big]: 8" in out  # 8 whole 64 KiB sends loaned
    assert "loans broken by the overwrite [loan.break]: 128" in out
    pcap = Path(out.split("pcap: ")[1].split()[0])
    assert pcap.exists() and assert_checksums_good(pcap) > 0  # Wireshark agrees


# ------------------------------------------------------------ real time


class PipeSource:
    """A frame source on a pipe: each byte read is one frame."""

    def __init__(self, sched: RealtimeScheduler) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.sched = sched
        self.arrived: list[int] = []

    def fileno(self) -> int:
        return self.r

    def pump(self) -> int:
        try:
            data = os.read(self.r, 4096)
        except BlockingIOError:
            return 0
        for _ in data:
            self.sched.call_at(self.sched.arrival_time(),
                               lambda: self.arrived.append(self.sched.now))
        return len(data)

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def rt() -> Iterator[tuple[RealtimeScheduler, PipeSource]]:
    net = realtime_network()
    sched = net.sched
    assert isinstance(sched, RealtimeScheduler)
    src = PipeSource(sched)
    yield sched, src
    sched.detach(src)
    src.close()


def test_a_future_event_waits_for_the_wall_clock(rt: tuple[RealtimeScheduler, PipeSource]
                                                 ) -> None:
    sched, src = rt
    sched.attach(src)
    t0 = time.monotonic_ns()
    ran: list[int] = []
    sched.call_at(sched.now + 30_000_000, lambda: ran.append(time.monotonic_ns()))
    assert sched.run_until_cond(lambda: bool(ran), timeout_s=60)
    assert ran[0] - t0 >= 30_000_000  # never early: 30 ms of wall clock passed
    assert sched.waits >= 1


def test_a_wakeup_ends_a_long_wait(rt: tuple[RealtimeScheduler, PipeSource]) -> None:
    """Another thread's wakeup (a kernel-side thread finishing) returns the
    runner to its caller with the far event still pending."""
    sched, src = rt
    sched.attach(src)
    sched.max_wait_ns = 3_600 * 10**9  # only the wakeup can end this wait early
    far: list[int] = []
    sched.call_at(sched.now + 3_600 * 10**9, lambda: far.append(1))
    done = threading.Event()

    def finish() -> None:
        done.set()
        sched.wakeup()

    threading.Timer(0.02, finish).start()
    assert sched.run_until_cond(done.is_set, timeout_s=60)
    assert not far


def test_a_frame_interrupts_the_wait(rt: tuple[RealtimeScheduler, PipeSource]) -> None:
    sched, src = rt
    sched.attach(src)
    far: list[int] = []
    sched.call_at(sched.now + 3_600 * 10**9, lambda: far.append(1))  # an hour away
    threading.Timer(0.02, lambda: os.write(src.w, b"x")).start()
    assert sched.run_until_cond(lambda: bool(src.arrived), timeout_s=60)
    assert not far  # the frame came first; the hour-away event still waits
    # it arrived when it was read: at the wall clock, not at the far event's time
    assert src.arrived[0] < sched.now + 3_600 * 10**9


def test_due_events_run_without_waiting(rt: tuple[RealtimeScheduler, PipeSource]) -> None:
    sched, src = rt
    sched.attach(src)
    ran: list[int] = []
    for i in range(100):
        sched.call_at(sched.now, lambda i=i: ran.append(i))  # type: ignore[misc]
    for _ in range(100):
        sched.step()
    assert ran == list(range(100)) and sched.waits == 0


def test_nothing_pending_is_not_idle_while_attached(rt: tuple[RealtimeScheduler, PipeSource]
                                                    ) -> None:
    sched, src = rt
    assert sched.next_time() is None
    sched.attach(src)
    nxt = sched.next_time()
    assert nxt is not None and nxt >= sched.now  # a real peer may still send
    os.write(src.w, b"ab")
    assert sched.run_until_cond(lambda: len(src.arrived) == 2, timeout_s=60)


def test_detached_it_is_the_discrete_event_scheduler() -> None:
    net = realtime_network()
    ran: list[int] = []
    net.sched.call_at(10**12, lambda: ran.append(1))  # 1000 s of simulated time
    net.run_until_idle()
    assert ran and net.now == 10**12
    sched = net.sched
    assert isinstance(sched, RealtimeScheduler)
    assert sched.waits == 0 and sched.polls == 0  # not paced: no source attached
    with pytest.raises(TypeError):
        from netstack.network import Network

        run_until(Network(), lambda: True)


def test_run_until_never_runs_ahead_of_the_wall_clock(
    rt: tuple[RealtimeScheduler, PipeSource],
) -> None:
    sched, src = rt
    sched.attach(src)
    ran: list[int] = []
    when = sched.wall() + 30_000_000
    sched.call_at(when, lambda: ran.append(sched.now))
    sched.call_at(when + 1, lambda: ran.append(-1))  # due just after: not run
    sched.run_until(when)
    assert ran == [when]
    assert sched.now == when <= sched.wall()
