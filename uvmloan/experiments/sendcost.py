"""Experiments: when does lending pages beat copying them, and why.

``send_cost`` sends ``size`` bytes from a user buffer to the kernel once,
by one policy, on a fresh machine, and reports the simulated cost and what
caused it:

* ``copy``: ``uiomove`` - the kernel reads the user's bytes through the MMU
  (the sender's pmap, kernel mode) into its own buffer: one memcpy at the
  modelled bandwidth plus the translations.
* ``loan``: ``sosend_loan`` - ``uvm_loan`` (write-protecting every user
  mapping on the first loan of each page: a synchronous shootdown on a
  multiprocessor whose other CPUs cached the buffer), read-only
  ``pmap_kenter_pa`` and one ``pmap_update``; later the release
  (``pmap_kremove``, ``pmap_update``, ``uvm_unloan``).

``reuse`` adds what happens when the application writes the buffer again
right after the send, as a program reusing its buffer does: with a loan
still held, every page it touches takes a write fault and a loan break (a
page allocation and a page copy); with a copy it is a plain store.

``sweep`` runs the grid and ``plot`` draws it (matplotlib, optional).
Everything is simulated time from the profile's cost model, so the answer
changes with the machine you describe: ``profile_overrides={"costs":
{"copy_bw": 100}}`` is a board with 100 MB/s of copy bandwidth.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from ..machine import Machine, parse_size

Policy = Literal["copy", "loan"]
POLICIES: tuple[Policy, ...] = ("copy", "loan")


@attrs.frozen
class SendCost:
    """The simulated cost of one send (nanoseconds) and its causes."""

    policy: str
    ncpus: int
    size: int
    reuse: bool
    sender_ns: int  # on the sending CPU
    total_ns: int  # summed over every CPU (IPI handlers included)
    ipis: int
    shootdown_rounds: int
    faults: int
    loan_breaks: int
    pages_allocated: int

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def send_cost(
    policy: Policy,
    size: int | str,
    ncpus: int = 1,
    *,
    reuse: bool = False,
    touched_on_all_cpus: bool = True,
    profile: str = "netbsd-10",
    profile_overrides: dict[str, Any] | None = None,
) -> SendCost:
    """Cost of sending ``size`` bytes once by ``policy`` (see module doc).

    ``touched_on_all_cpus``: the sender's threads ran on every CPU and
    cached the buffer's mappings there (what makes the write-protect of a
    loan cost IPIs).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    if isinstance(size, str):
        size = parse_size(size, "size")  # "64K", "1M"
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"size must be a positive int or a size like '64K', got {size!r}")
    if not isinstance(ncpus, int) or ncpus < 1:
        raise ValueError(f"ncpus must be a positive int, got {ncpus!r}")
    ps_guess = 4096
    memory = max(16 << 20, 4 * (size + ps_guess) + (8 << 20))
    m = Machine(
        ncpus=ncpus,
        memory=memory - memory % (1 << 20),
        profile=profile,
        profile_overrides=profile_overrides,
        trace="counters",
    )
    try:
        p = m.spawn("sender", cpu=0)
        buf = p.mmap(size)
        payload = bytes(i & 0xFF for i in range(size))
        p.write(buf, payload)
        if touched_on_all_cpus:
            for c in range(1, ncpus):
                p.read(buf, size, cpu=c)
        p.run_on(0)
        before = dict(m.counters)
        clocks = [c.clock for c in m.cpus]
        allocated = m.uvm.npagealloc
        if policy == "copy":
            with m.on_cpu(0) as cpu:
                kbuf = m.mmu.load(cpu, buf, size, user=False)
            if reuse:
                p.write(buf, payload[::-1], cpu=0)
        else:
            kl = m.kernel_loan(p, buf, size, cpu=0)
            if reuse:
                p.write(buf, payload[::-1], cpu=0)
            # What the borrower holds is checked outside the measured span:
            # the NIC would DMA it by physical address, not through the MMU.
            kbuf = m.physmem.gather(kl.pieces())
            with m.on_cpu(0):
                kl.release()
        if kbuf != payload:
            raise AssertionError(f"{policy}: the kernel did not get the bytes sent")
        after = m.counters

        def delta(k: str) -> int:
            return after.get(k, 0) - before.get(k, 0)

        return SendCost(
            policy,
            ncpus,
            size,
            reuse,
            m.cpus[0].clock - clocks[0],
            sum(c.clock for c in m.cpus) - sum(clocks),
            delta("ipi sent"),
            delta("TLB shootdown"),
            delta("fault"),
            delta("loan.break"),
            m.uvm.npagealloc - allocated,
        )
    finally:
        m.close()


def sweep(
    sizes: Sequence[int | str],
    cpus: Sequence[int],
    *,
    reuse: bool = False,
    profile: str = "netbsd-10",
    profile_overrides: dict[str, Any] | None = None,
    progress: bool = False,
) -> list[SendCost]:
    """``send_cost`` for every (ncpus, size, policy) of the grid (sizes: ints or "64K")."""
    sizes = [parse_size(s, "size") for s in sizes]
    out: list[SendCost] = []
    grid = [(n, s, pol) for n in cpus for s in sizes for pol in POLICIES]
    for i, (n, s, pol) in enumerate(grid, 1):
        out.append(
            send_cost(pol, s, n, reuse=reuse, profile=profile, profile_overrides=profile_overrides)
        )
        if progress:
            print(f"\r  {i}/{len(grid)} points", end="", flush=True)
    if progress:
        print()
    return out


def crossover(points: Iterable[SendCost], ncpus: int) -> int | None:
    """The smallest size from which the loan stays cheaper (sender's CPU), or None."""
    by: dict[int, dict[str, int]] = {}
    for pt in points:
        if pt.ncpus == ncpus:
            by.setdefault(pt.size, {})[pt.policy] = pt.sender_ns
    sizes = sorted(s for s, v in by.items() if len(v) == 2)
    best: int | None = None
    for s in reversed(sizes):
        if by[s]["loan"] < by[s]["copy"]:
            best = s
        else:
            break
    return best


def table(points: Sequence[SendCost]) -> str:
    """A plain-text table of a sweep, one row per (ncpus, size)."""
    rows = ["cpus  size      copy ns     loan ns  loan/copy  IPIs  breaks"]
    by: dict[tuple[int, int], dict[str, SendCost]] = {}
    for pt in points:
        by.setdefault((pt.ncpus, pt.size), {})[pt.policy] = pt
    for (n, s), v in sorted(by.items()):
        c, lo = v.get("copy"), v.get("loan")
        if c is None or lo is None:
            continue
        rows.append(
            f"{n:>4}  {_fmt_size(s):>6}  {c.sender_ns:>10,}  {lo.sender_ns:>10,}"
            f"  {lo.sender_ns / c.sender_ns:>9.2f}  {lo.ipis:>4}  {lo.loan_breaks:>6}"
        )
    return "\n".join(rows)


def _fmt_size(n: int) -> str:
    for unit, k in (("M", 1 << 20), ("K", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k}{unit}"
    return str(n)


COMPARE_SCHEMA = 1


def compare_record(
    points: Sequence[SendCost],
    *,
    sizes: Sequence[int],
    cpus: Sequence[int],
    reuse: bool = False,
    profile: str = "netbsd-10",
    profile_overrides: dict[str, Any] | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """What ``compare.json`` holds: the points and everything that made them.

    ``sweep`` is the exact keyword arguments of :func:`sweep` (so
    ``sweep(**rec["sweep"])`` recomputes ``rec["points"]``), ``profile`` the
    resolved profile with every cost, and the model version and physmem
    backend that ran it.
    """
    from .._version import __version__
    from ..physmem import BACKEND
    from ..profile import get_profile

    resolved = get_profile(profile, **dict(profile_overrides or {}))
    return {
        "schema": COMPARE_SCHEMA,
        "model": "uvmloan",
        "model_version": __version__,
        "backend": BACKEND,
        "command": list(command) if command is not None else None,
        "sweep": {
            "sizes": list(sizes),
            "cpus": list(cpus),
            "reuse": reuse,
            "profile": profile,
            "profile_overrides": profile_overrides,
        },
        "touched_on_all_cpus": True,
        "units": {"sender_ns": "ns on the sending CPU", "total_ns": "ns summed over all CPUs"},
        "profile": attrs.asdict(resolved),
        "points": [p.as_dict() for p in points],
    }


# Policy styles: copy is a large hollow square under a small filled loan dot,
# so equal costs still show both marks.
_STYLE = {
    "copy": {"marker": "s", "markersize": 9, "markerfacecolor": "none", "linestyle": "--"},
    "loan": {"marker": "o", "markersize": 4, "linestyle": "-"},
}


def plot(points: Sequence[SendCost], path: str | Path, title: str = "") -> Path:
    """Cost per send against size, copy vs loan: one column per CPU count.

    The top row is the sending CPU's cost, the bottom row the total over all
    CPUs (IPI handlers on the others included), in simulated ns per send on
    log-log axes.  Needs matplotlib (``pip install 'uvmloan[plot]'``); builds
    a Figure directly (no pyplot state) and saves it to ``path``.
    """
    fig = figure(points, title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


def figure(points: Sequence[SendCost], title: str = "") -> Any:
    """The matplotlib Figure ``plot`` saves (2 rows x one column per CPU count)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("plotting needs matplotlib: pip install 'uvmloan[plot]'") from e
    cpus = sorted({pt.ncpus for pt in points})
    sizes = sorted({pt.size for pt in points})
    if not cpus:
        raise ValueError("plot: no points")
    ncol = len(cpus)
    fig = Figure(figsize=(3.6 * ncol + 1.5, 6.5))
    axes = fig.subplots(2, ncol, squeeze=False, sharex=True, sharey="row")
    rows = (("sender_ns", "ns per send, sending CPU"), ("total_ns", "ns per send, all CPUs"))
    for col, n in enumerate(cpus):
        for row, (field, ylabel) in enumerate(rows):
            ax = axes[row][col]
            for pol in POLICIES:
                xs = sorted(
                    (pt.size, getattr(pt, field))
                    for pt in points
                    if pt.ncpus == n and pt.policy == pol
                )
                if xs:
                    ax.plot([x for x, _ in xs], [y for _, y in xs], label=pol, **_STYLE[pol])
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            if row == 0:
                ax.set_title(f"{n} CPU{'s' if n > 1 else ''}")
            else:
                ax.set_xticks(sizes, [_fmt_size(s) for s in sizes])
                ax.set_xlabel("bytes sent")
            if col == 0:
                ax.set_ylabel(ylabel)
    axes[0][0].legend(loc="upper left")
    reused = " (buffer rewritten after each send)" if any(pt.reuse for pt in points) else ""
    fig.suptitle(title or f"copy vs page loan, simulated cost per send{reused} (uvmloan)")
    return fig
