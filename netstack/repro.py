"""Reproductions that need the whole send path: syscall, loan or copy, TCP,
checksum, NIC, wire, ACK, release.

Registered in the ``uvmloan.reproductions`` entry points (pyproject.toml),
so ``uvmloan reproduce`` and ``uvmloan.experiments`` find them without the
model importing the stack:

1. ``announcement-2002``: Thorpe's 2002 zero-copy TCP transmit on an
   embedded board over 100baseTX, copy against loan.
2. ``mp-loan``: why NetBSD turned sosend loaning off on MULTIPROCESSOR
   kernels, as the sender CPU's time against the number of CPUs where the
   sending process's pmap is active.
3. ``zerocopy-breakeven``: the write size above which Linux's MSG_ZEROCOPY
   beats copying.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from uvmloan import Profile, get_profile
from uvmloan.experiments.repro import (
    Comparison,
    Progress,
    ReproductionResult,
    Timer,
    check_args,
    conclude,
    new_figure,
    reproduction,
)

from .bulk import BulkResult, bulk_transfer

# ------------------------------------------------------- 1. announcement-2002

A1_NAME = "announcement-2002"
A1_SOURCE = (
    "Jason R. Thorpe, 'Experimental zero-copy for TCP and UDP transmit-side', "
    "current-users, 2 May 2002 (quoted in mail-index.netbsd.org/current-users/2002/05/08/0001.html)"
)
A1_CLAIM = (
    "on an embedded system with limited memory bandwidth, TCP transmit on 100baseTX-FDX "
    "went from ~6500 KB/s (copy) to ~11100 KB/s (page loaning)"
)
PUBLISHED_COPY = 6500.0
PUBLISHED_LOAN = 11100.0
BAND = 0.10  # "within 10% of both"


def _policy_label(policy: str) -> str:
    return {"copy": "copy", "loan": "loan"}.get(policy, policy)


@reproduction(A1_NAME, "NetBSD 2002: TCP transmit by copy ~6500 KB/s, by page loan ~11100 KB/s", 1)
def announcement_2002(
    out: str | Path | None = None,
    *,
    quick: bool = False,
    progress: Progress | None = None,
    profile: str | Profile = "embedded-2002-up",
) -> ReproductionResult:
    """Reproduction 1: a ttcp-style bulk transmit, 64 KiB writes, copy vs loan.

    The sender is the ``embedded-2002-up`` profile (its cost figures and
    their reasons are in its TOML file); the receiver a host fast enough not
    to be the limit; the link 100 Mbit/s full duplex with Ethernet's 38
    bytes of framing per packet.  ttcp writes the same buffer again and
    again (it never touches it), so the loaned pages stay read-only after
    their first loan.  KB is ttcp's (1024 bytes); the CSV has both units.
    """
    timer = Timer()
    outdir = check_args(out, quick)
    prof = get_profile(profile)
    size = (4 if quick else 16) << 20
    results: dict[str, BulkResult] = {}
    for policy in ("copy", "loan"):
        results[policy] = bulk_transfer(
            policy,
            size,
            write_size=65536,
            profile=prof,
            refill=False,
            out=outdir,
            trace=outdir is not None and policy == "loan",
            pcap=outdir is not None and policy == "loan",
            progress=progress,
        )
        if progress is not None:
            progress(f"{A1_NAME}: {policy} done, {results[policy].kib_per_s:,.0f} KB/s")
    c, lo = results["copy"], results["loan"]
    ratio = lo.kib_per_s / c.kib_per_s if c.kib_per_s else 0.0
    within = [
        abs(c.kib_per_s / PUBLISHED_COPY - 1) <= BAND,
        abs(lo.kib_per_s / PUBLISHED_LOAN - 1) <= BAND,
    ]
    holds = lo.kib_per_s > c.kib_per_s and all(within)
    verdict = (
        f"loaning is {ratio:.2f}x copying (published {PUBLISHED_LOAN / PUBLISHED_COPY:.2f}x); "
        f"copy {c.kib_per_s:,.0f} KB/s is {c.kib_per_s / PUBLISHED_COPY - 1:+.1%} and loan "
        f"{lo.kib_per_s:,.0f} KB/s {lo.kib_per_s / PUBLISHED_LOAN - 1:+.1%} from the published "
        f"figures (band +-{BAND:.0%}); the copying sender's CPU is busy {c.sender_busy:.0%} of "
        f"the time (CPU-bound), the loaning one {lo.sender_busy:.0%} (the wire is the limit)"
    )
    rows = (
        Comparison("TCP transmit, copy", c.kib_per_s, PUBLISHED_COPY, "KB/s", "~"),
        Comparison("TCP transmit, loan", lo.kib_per_s, PUBLISHED_LOAN, "KB/s", "~"),
        Comparison("loan / copy", ratio, PUBLISHED_LOAN / PUBLISHED_COPY, "x", "~"),
        Comparison("sender CPU busy, copy", 100 * c.sender_busy, None, "%"),
        Comparison("sender CPU busy, loan", 100 * lo.sender_busy, None, "%"),
        Comparison("pages loaned", lo.counters.get("loan", 0), None),
        Comparison("TLB shootdown rounds (one CPU)", lo.counters.get("TLB shootdown", 0), 0),
    )
    points = [r.record(profile=prof.name) for r in (c, lo)]

    def draw() -> Any:
        made = new_figure(1, 6.0, 4.0)
        if made is None:
            return None
        fig, (ax,) = made
        xs = [0, 1]
        ax.bar(
            xs, [c.kib_per_s, lo.kib_per_s], width=0.5, color=["#999999", "#3070b0"], label="model"
        )
        ax.scatter(
            xs,
            [PUBLISHED_COPY, PUBLISHED_LOAN],
            marker="D",
            color="black",
            zorder=3,
            label="published (Thorpe 2002)",
        )
        for x, pub in zip(xs, (PUBLISHED_COPY, PUBLISHED_LOAN), strict=True):
            ax.errorbar(x, pub, yerr=pub * BAND, color="black", capsize=6, linewidth=1)
        wire = 100e6 / 8 * 1460 / 1538 / 1024
        ax.axhline(wire, color="grey", linestyle=":", label="100baseTX payload limit")
        ax.set_xticks(xs, ["copy", "page loan"])
        ax.set_ylabel("TCP transmit, KB/s (1024 B)")
        ax.set_title(f"{prof.name}: 64 KiB writes over 100baseTX (uvmloan)")
        ax.legend(fontsize=8, loc="upper left")
        return fig

    return conclude(
        announcement_2002,
        claim=A1_CLAIM,
        source=A1_SOURCE,
        holds=holds,
        verdict=verdict,
        rows=rows,
        points=points,
        out=outdir,
        draw=draw,
        timer=timer,
        params={"profile": prof.name, "bytes": size, "write_size": 65536, "quick": quick},
        files={**lo.files},
    )


# ------------------------------------------------------------------ 2. mp-loan

MP_NAME = "mp-loan"
MP_SOURCE = (
    "NetBSD sys/kern/uipc_socket.c (sock_loan_thresh -1 under MULTIPROCESSOR, 1.215 of 2013 "
    "and later); jdolecek's 2018 commit disabling the pipe loan path ('significantly slower "
    "than the non-loan case on MP systems'); thorpej, tech-kern, 26 May 2018"
)
MP_CLAIM = (
    "on a multiprocessor, the write-protect of each first loan of a page is a synchronous "
    "shootdown, so loaning is slower than copying; on one CPU it is not"
)
SIGNIFICANT = 1.05  # "significantly slower": the loan costs the sender 5% more CPU or more


# The two buffer disciplines of reproduction 2: "fresh" sends every page once
# (each loan is the page's first, of a writable page: the write-protect is
# the claim's cost); "refilled" rewrites a 1 MiB ring before each write (the
# pipe's dd of the 2018 discussion: each refill also takes the write fault
# that re-enables the page the last loan left read-only).
WORKLOADS = ("fresh", "refilled")


@reproduction(MP_NAME, "Why NetBSD turned sosend loaning off on multiprocessors", 2)
def mp_loan(
    out: str | Path | None = None,
    *,
    quick: bool = False,
    progress: Progress | None = None,
    profile: str | Profile = "amd64-mp",
) -> ReproductionResult:
    """Reproduction 2: the sender's CPU, copy vs loan, against active CPUs.

    64 KiB TCP writes over the profile's NIC (``amd64-mp``'s: 10 Gbit/s with
    checksum offload, so the CPU touches the bytes only to copy them), the
    receiver the same machine class.  The sending process's other threads
    run on ``active_cpus - 1`` more CPUs, so its pmap is active there and
    the write-protect of a page's first loan is a synchronous shootdown
    round to them (x86 pmap_page_protect; ``active_cpus`` 1 is the
    uniprocessor case).  The claim is judged on the ``fresh`` workload; the
    ``refilled`` one is reported beside it (see WORKLOADS).
    """
    timer = Timer()
    outdir = check_args(out, quick)
    prof = get_profile(profile)
    ncpus = 4 if quick else 8
    counts = [1, 2, 4] if quick else [1, 2, 3, 4, 6, 8]
    size = (2 if quick else 8) << 20
    points: list[dict[str, Any]] = []
    by: dict[tuple[str, int, str], BulkResult] = {}
    for i, k in enumerate(counts, 1):
        for work in WORKLOADS:
            for policy in ("copy", "loan"):
                r = bulk_transfer(
                    policy,
                    size,
                    profile=prof,
                    receiver_profile=prof,
                    ncpus=ncpus,
                    active_cpus=k,
                    delay_ns=5_000,
                    ring_bytes=size if work == "fresh" else 1 << 20,
                    refill=work == "refilled",
                )
                by[(work, k, policy)] = r
                points.append(r.record(profile=prof.name, workload=work))
        if progress is not None:
            progress(f"{MP_NAME}: {i}/{len(counts)} CPU counts")
    ratio = {
        (w, k): by[(w, k, "loan")].sender_cpu_ns / by[(w, k, "copy")].sender_cpu_ns
        for w in WORKLOADS
        for k in counts
    }
    for p in points:
        p["loan_over_copy"] = round(ratio[(p["workload"], p["active_cpus"])], 4)
    fresh = {k: ratio[("fresh", k)] for k in counts}
    slower = [k for k in counts if fresh[k] >= SIGNIFICANT]
    crossover = min(slower) if slower else None
    mp = [k for k in counts if k > 1]
    up_ipis = by[("fresh", 1, "loan")].counters.get("ipi sent", 0)
    holds = (
        fresh[1] < SIGNIFICANT
        and all(fresh[k] >= SIGNIFICANT for k in mp)
        and up_ipis == 0
        and all(by[("fresh", k, "loan")].counters.get("ipi sent", 0) > 0 for k in mp)
    )
    refilled = {k: ratio[("refilled", k)] for k in counts}
    verdict = (
        f"sending each page once, the loan costs the sender {fresh[1]:.2f}x the copy's CPU on "
        "1 CPU (no IPI) and "
        + ", ".join(f"{fresh[k]:.2f}x on {k}" for k in mp)
        + f": significantly slower (>= {SIGNIFICANT:.2f}x) from "
        + (f"{crossover} CPUs" if crossover else "no CPU count in the range")
        + ", the difference being one shootdown round per page loaned "
        + f"({by[('fresh', mp[0], 'loan')].counters.get('TLB shootdown', 0)} rounds on "
        + f"{mp[0]} CPUs); with the buffer refilled before each write the loan costs "
        + ", ".join(f"{refilled[k]:.2f}x on {k}" for k in counts)
        + " (each refill's write fault also costs more than the copy of the page it saves)"
    )
    rows = [
        Comparison(f"loan / copy sender CPU, {k} CPU{'s' if k > 1 else ''}", fresh[k], None, "x")
        for k in counts
    ]
    rows.append(Comparison("smallest CPU count where loaning is slower", crossover or 0, 2, "CPUs"))
    rows += [
        Comparison(
            f"refilled buffer: loan / copy, {k} CPU{'s' if k > 1 else ''}", refilled[k], None, "x"
        )
        for k in (counts[0], counts[-1])
    ]

    def draw() -> Any:
        made = new_figure(2, 5.2, 3.8)
        if made is None:
            return None
        fig, (ax, bx) = made
        mib = size / (1 << 20)
        for work, dash in (("fresh", "-"), ("refilled", ":")):
            for policy, mark in (("copy", "s"), ("loan", "o")):
                ax.plot(
                    counts,
                    [by[(work, k, policy)].sender_cpu_ns / mib / 1000 for k in counts],
                    mark + dash,
                    label=f"{policy}, {work}",
                )
            bx.plot(
                counts,
                [ratio[(work, k)] for k in counts],
                "o" + dash,
                label=f"model: loan / copy, {work}",
            )
        ax.set_xlabel("CPUs where the sender's pmap is active")
        ax.set_ylabel("sender CPU, us per MiB sent")
        ax.legend(fontsize=7)
        ax.set_title("sender CPU")
        bx.axhline(1.0, color="grey", linestyle=":")
        bx.axvline(
            1.5,
            color="black",
            linestyle="--",
            linewidth=0.8,
            label="published: slower on MP, not on UP",
        )
        bx.set_xlabel("CPUs where the sender's pmap is active")
        bx.set_ylabel("loan / copy")
        bx.legend(fontsize=7)
        bx.set_title(f"{prof.name}, 64 KiB writes")
        fig.suptitle("sosend loaning on a multiprocessor (uvmloan)")
        return fig

    return conclude(
        mp_loan,
        claim=MP_CLAIM,
        source=MP_SOURCE,
        holds=holds,
        verdict=verdict,
        rows=rows,
        points=points,
        out=outdir,
        draw=draw,
        timer=timer,
        params={"profile": prof.name, "ncpus": ncpus, "bytes": size, "quick": quick},
    )


# ------------------------------------------------------- 3. zerocopy-breakeven

ZC_NAME = "zerocopy-breakeven"
ZC_SOURCE = (
    "Linux Documentation/networking/msg_zerocopy.rst ('MSG_ZEROCOPY is generally only "
    "effective at writes over around 10 KB'); Willem de Bruijn, netdev 2.1, 2017"
)
ZC_CLAIM = "MSG_ZEROCOPY beats copying only for writes over about 10 KB"
PUBLISHED_BREAKEVEN = 10_000  # bytes ("around 10 KB")
BAND_LO, BAND_HI = 4096, 16384  # the band: between 4 KiB and 16 KiB


@reproduction(ZC_NAME, "Linux MSG_ZEROCOPY pays only for writes over about 10 KB", 3)
def zerocopy_breakeven(
    out: str | Path | None = None,
    *,
    quick: bool = False,
    progress: Progress | None = None,
    profile: str | Profile = "amd64-mp",
) -> ReproductionResult:
    """Reproduction 3: sender CPU per MiB, copy vs ``linux-zerocopy``, by write size.

    A TCP sender on ``amd64-mp`` (10 Gbit/s, checksum offload) writes one
    buffer again and again, as Linux's msg_zerocopy.c selftest does, with
    ``SO_ZEROCOPY`` and ``MSG_ZEROCOPY``, reading its error queue whenever
    it holds a notification.  Zerocopy replaces the per-byte copy with
    per-page pinning and unpinning and, per send, a notification and its
    read; the break-even is the smallest write size from which zerocopy's
    sender CPU stays below the copy's.
    """
    timer = Timer()
    outdir = check_args(out, quick)
    prof = get_profile(profile)
    kib = 1024
    sizes = (
        [2 * kib, 4 * kib, 8 * kib, 12 * kib, 16 * kib, 64 * kib]
        if quick
        else [
            1 * kib,
            2 * kib,
            4 * kib,
            6 * kib,
            8 * kib,
            10 * kib,
            12 * kib,
            16 * kib,
            24 * kib,
            32 * kib,
            64 * kib,
        ]
    )
    total = (1 if quick else 4) << 20
    points: list[dict[str, Any]] = []
    by: dict[tuple[int, str], BulkResult] = {}
    for i, w in enumerate(sizes, 1):
        for policy in ("copy", "linux-zerocopy"):
            r = bulk_transfer(
                policy,
                total,
                write_size=w,
                profile=prof,
                receiver_profile=prof,
                ncpus=1,
                delay_ns=5_000,
                ring_bytes=256 * kib,
                refill=False,
                # msg_zerocopy.sh raises net.core.optmem_max to 1000000 so
                # that small writes' notifications are not refused (ENOBUFS)
                policy_data={"optmem_max": 1_000_000} if policy == "linux-zerocopy" else None,
            )
            by[(w, policy)] = r
            points.append(r.record(profile=prof.name))
        if progress is not None:
            progress(f"{ZC_NAME}: {i}/{len(sizes)} write sizes")
    ratio = {
        w: by[(w, "linux-zerocopy")].sender_cpu_ns / by[(w, "copy")].sender_cpu_ns for w in sizes
    }
    for p in points:
        p["zerocopy_over_copy"] = round(ratio[p["write_size"]], 4)
    breakeven: int | None = None
    for w in reversed(sizes):
        if ratio[w] < 1.0:
            breakeven = w
        else:
            break
    holds = breakeven is not None and BAND_LO <= breakeven <= BAND_HI and ratio[sizes[0]] > 1.0
    verdict = (
        "zerocopy's sender CPU against the copy's: "
        + ", ".join(f"{_kib(w)} {ratio[w]:.2f}x" for w in sizes)
        + "; it stays cheaper from "
        + (f"{_kib(breakeven)} writes" if breakeven else "no write size in the range")
        + f" (the band is {_kib(BAND_LO)} to {_kib(BAND_HI)}; published about 10 KB)"
    )
    rows = [
        Comparison(
            "break-even write size", (breakeven or 0) / 1000, PUBLISHED_BREAKEVEN / 1000, "KB", "~"
        ),
        *(
            Comparison(f"zerocopy / copy sender CPU, {_kib(w)} writes", ratio[w], None, "x")
            for w in sizes
        ),
    ]

    def draw() -> Any:
        made = new_figure(2, 5.2, 3.8)
        if made is None:
            return None
        fig, (ax, bx) = made
        mib = total / (1 << 20)
        xs = [w / kib for w in sizes]
        for policy, style in (("copy", "s--"), ("linux-zerocopy", "o-")):
            ax.plot(
                xs, [by[(w, policy)].sender_cpu_ns / mib / 1000 for w in sizes], style, label=policy
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("write size, KiB")
        ax.set_ylabel("sender CPU, us per MiB")
        ax.legend(fontsize=8)
        ax.set_title("sender CPU")
        bx.plot(xs, [ratio[w] for w in sizes], "o-", label="model: zerocopy / copy")
        bx.axhline(1.0, color="grey", linestyle=":")
        bx.axvline(
            PUBLISHED_BREAKEVEN / kib,
            color="black",
            linestyle="--",
            linewidth=0.8,
            label="published: ~10 KB",
        )
        bx.axvspan(BAND_LO / kib, BAND_HI / kib, color="grey", alpha=0.15, label="4-16 KiB")
        bx.set_xscale("log", base=2)
        bx.set_xlabel("write size, KiB")
        bx.set_ylabel("zerocopy / copy")
        bx.legend(fontsize=8)
        bx.set_title(f"{prof.name}, TCP")
        fig.suptitle("MSG_ZEROCOPY break-even (uvmloan)")
        return fig

    return conclude(
        zerocopy_breakeven,
        claim=ZC_CLAIM,
        source=ZC_SOURCE,
        holds=holds,
        verdict=verdict,
        rows=rows,
        points=points,
        out=outdir,
        draw=draw,
        timer=timer,
        params={"profile": prof.name, "bytes": total, "sizes": sizes, "quick": quick},
    )


def _kib(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} B"


ALL: dict[str, Callable[..., ReproductionResult]] = {
    A1_NAME: announcement_2002,
    MP_NAME: mp_loan,
    ZC_NAME: zerocopy_breakeven,
}
