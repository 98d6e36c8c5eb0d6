"""``uvmloan transfer``: a TCP bulk transfer between two simulated hosts,
sent by copy and by page loan, side by side.

Host ``a`` sends ``--size`` bytes from a buffer in its sender process's
memory to host ``b`` over a 100 Mbit/s link, in 64 KiB ``send(2)`` calls, as
NetBSD's ``sosend`` does them: by copying into clusters on a MULTIPROCESSOR
kernel (``netbsd-10``'s default, where ``sock_loan_thresh`` is -1) and by
``sosend_loan`` on a uniprocessor kernel. With ``--overwrite`` the sender
rewrites its buffer right after each send returns (NetBSD's ``t_mmap``
pattern): each loaned page's loan breaks and the receiver still gets the
bytes from before. The command checks the bytes, checks that nothing leaked
(no loan, kernel VA, mbuf or frame) and writes a pcap of the link per mode.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from .bulk import bulk_transfer

CHUNK = 65536
PS = 4096
MODES = ("copy", "loan")
POLICIES = ("copy", "netbsd-loan", "linux-zerocopy")
# the old --mode names
MODE_POLICY = {"copy": "copy", "loan": "netbsd-loan"}
MAX_SIZE = 64 << 20


@attrs.frozen
class TransferResult:
    """What one transfer did, as the sender's machine counted it."""

    mode: str
    nbytes: int
    sim_ns: int
    wall_s: float
    counters: dict[str, int]
    pcap: str
    frames: int
    loaned_frames: int

    @property
    def kb_per_s(self) -> float:
        """Application throughput in KB/s (1000 bytes), simulated time."""
        return self.nbytes / 1000 / (self.sim_ns / 1e9) if self.sim_ns else 0.0


def run_transfer(
    mode: str,
    size: int,
    *,
    out: Path,
    overwrite: bool = False,
    loss: float = 0.0,
    ncpus: int = 1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TransferResult:
    """One transfer of ``size`` bytes by ``mode``: a send policy ("copy",
    "netbsd-loan", "linux-zerocopy") or the old names "copy" and "loan".

    copy runs on a MULTIPROCESSOR kernel (netbsd-10's default), netbsd-loan
    on a uniprocessor one (where ``sock_loan_thresh`` is 4096), and
    linux-zerocopy with the sender opting in (``SO_ZEROCOPY``), sending
    with ``MSG_ZEROCOPY`` and, before it reuses a region of its buffer,
    reading the error queue until that region's sends have completed (the
    pattern of Linux's ``tools/testing/selftests/net/msg_zerocopy.c``).
    The transfer itself is :func:`netstack.bulk.bulk_transfer`'s, over the
    whole buffer once (no ring), with a pcapng of the link.
    """
    policy = MODE_POLICY.get(mode, mode)
    if policy not in POLICIES:
        raise ValueError(f"mode must be one of {(*MODES, *POLICIES[2:])}, not {mode!r}")
    r = bulk_transfer(
        policy,
        size,
        write_size=CHUNK,
        profile_overrides={"multiprocessor": policy == "copy"},
        receiver_profile="netbsd-10",
        ncpus=ncpus,
        bandwidth_bps=100_000_000,
        delay_ns=100_000,
        loss=loss,
        overhead_bytes=0,
        rcvbuf=None,
        ring_bytes=size + (-size % CHUNK),
        refill=False,
        overwrite=overwrite,
        port=80,
        seed=seed,
        out=out,
        pcap=True,
        pcap_name=f"transfer-{mode}.pcapng",
        progress=progress,
    )
    return TransferResult(
        mode=policy if mode not in MODES else mode,
        nbytes=size,
        sim_ns=r.sim_ns,
        wall_s=r.wall_s,
        counters=dict(r.counters),
        pcap=r.files["pcap"],
        frames=r.frames,
        loaned_frames=r.loaned_frames,
    )


ROWS: tuple[tuple[str, str], ...] = (
    ("sosend loan big", "sends loaned (64 KiB chunks)"),
    ("sosend copy big", "mbuf clusters copied"),
    ("sosend copy small", "small mbufs copied"),
    ("sosend kva limit", "waits for loan KVA"),
    ("loan", "pages loaned"),
    ("loan.break", "loans broken by a user write"),
    ("orphan", "orphaned pages"),
    ("zerocopy pin", "zerocopy mbufs pinned"),
    ("zerocopy completion", "zerocopy completions"),
    ("zerocopy copied", "completions marked COPIED"),
    ("zerocopy.tx_modified", "segments sent modified in flight"),
    ("TLB shootdown", "TLB shootdown rounds"),
    ("ipi sent", "IPIs sent"),
)


def report(results: Sequence[TransferResult]) -> str:
    head = ("", *(r.mode for r in results))
    rows: list[tuple[str, ...]] = [
        ("throughput (KB/s, simulated)", *(f"{r.kb_per_s:,.0f}" for r in results)),
        ("simulated time (ms)", *(f"{r.sim_ns / 1e6:,.1f}" for r in results)),
        ("wall time (s)", *(f"{r.wall_s:.1f}" for r in results)),
    ]
    for key, label in ROWS:
        rows.append((f"{label} [{key}]", *(str(r.counters.get(key, 0)) for r in results)))
    rows.append(("frames captured", *(str(r.frames) for r in results)))
    rows.append(("frames with loaned payload", *(str(r.loaned_frames) for r in results)))
    widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (head, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser, size_type: Callable[[str], int]) -> None:
    p.add_argument(
        "--size",
        type=size_type,
        default=4 << 20,
        help=f"bytes to send, e.g. 1M (default: 4M; at most {MAX_SIZE >> 20}M)",
    )
    p.add_argument(
        "--mode",
        choices=(*MODES, "both"),
        default=None,
        help="copy, loan or both side by side (default: both)",
    )
    p.add_argument(
        "--policy",
        action="append",
        choices=POLICIES,
        default=None,
        help="send policy (repeat for a side-by-side table): copy, netbsd-loan, "
        "linux-zerocopy; overrides --mode",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="the sender rewrites its buffer right after each send",
    )
    p.add_argument(
        "--loss",
        type=float,
        default=0.0,
        help="probability that the link drops a frame (default: 0)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the link's impairments")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out"),
        help="directory for transfer.json and the pcaps (default: out)",
    )


def check_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 < args.size <= MAX_SIZE:
        p.error(f"--size must be from 1 byte to {MAX_SIZE >> 20}M, got {args.size}")
    if not 0.0 <= args.loss <= 0.5:
        p.error(f"--loss must be from 0 to 0.5, got {args.loss}")


def run(args: argparse.Namespace) -> int:
    """Run the transfers the arguments ask for and print the table."""
    if args.policy:
        modes: tuple[str, ...] = tuple(dict.fromkeys(args.policy))
    elif args.mode in (None, "both"):
        modes = MODES
    else:
        modes = (args.mode,)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for mode in modes:
        print(f"{mode}: sending {args.size:,} bytes from a→b over 100 Mbit/s ...", flush=True)
        results.append(
            run_transfer(
                mode,
                args.size,
                out=args.out,
                overwrite=args.overwrite,
                loss=args.loss,
                seed=args.seed,
                progress=lambda s: print("  " + s, flush=True),
            )
        )
    print()
    print(report(results))
    record: dict[str, Any] = {
        "args": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"
        },
        "results": [attrs.asdict(r) | {"kb_per_s": r.kb_per_s} for r in results],
    }
    data = args.out / "transfer.json"
    data.write_text(json.dumps(record, indent=1))
    print()
    print("The receiver got exactly the bytes each send took; no loan, kernel VA, mbuf or")
    print("frame was left over. Open a capture with Wireshark or tshark:")
    for r in results:
        print(f"  {r.pcap}  (tshark -r {r.pcap} -o tcp.check_checksum:TRUE)")
    print(f"data: {data}")
    return 0


@attrs.frozen
class _TransferCommand:
    """``uvmloan transfer``, entered in the ``uvmloan.commands`` entry points."""

    name: str = "transfer"
    help: str = (
        "a TCP bulk transfer between two simulated hosts, by copy, page loan or MSG_ZEROCOPY"
    )

    def add_arguments(self, p: argparse.ArgumentParser, size: Callable[[str], int]) -> None:
        add_arguments(p, size)

    def check_arguments(self, p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        check_arguments(p, args)

    def run(self, args: argparse.Namespace) -> int:
        return run(args)


TRANSFER = _TransferCommand()
