"""Reproduction 4: x86 shootdown batching.

NetBSD's x86 pmap queues each invalidation in a per-CPU shootdown packet
(``pmap_tlb_shootdown``, x86_tlb.c 1.20); the packet has room for
``TP_MAXVA`` = 16 virtual addresses, and the 17th turns it into ``TP_ALLVA``:
``pmap_update`` then has every target flush its whole TLB instead of
invalidating page by page.  The workload is the one sosend's release does: a
kernel that lent ``n`` user pages, mapped them read-only (``pmap_kenter_pa``),
read them through that mapping on the sending CPU (a software checksum), and
now unmaps them (``pmap_kremove`` of ``n`` pages, one ``pmap_update``).  For
``n`` from 8 to 32 the reproduction counts the invalidations per CPU and the
full flushes, and times the round on the initiator (from the unmap to the
last acknowledgement) and on the targets (from the unmap, which the targets
wait for, to the end of their handler), then the
TLB refills the flush causes when the sending process reads its 16-page
working set (data it never lent) again on its CPU.

The published figure is the rule itself (16 VAs one by one, a full flush
from the 17th): the model must follow it exactly, and the times must show
the trade-off (a flush is cheaper than 16 invlpgs for the round, dearer
afterwards in refills).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..invariants import check_invariants
from ..machine import Machine
from ..profile import Profile, get_profile
from .repro import (
    Comparison,
    Progress,
    ReproductionResult,
    Timer,
    check_args,
    conclude,
    new_figure,
    reproduction,
)

NAME = "shootdown-batching"
SOURCE = "NetBSD sys/arch/x86/x86/x86_tlb.c 1.20 (TP_MAXVA 16), pmap_tlb_shootdown"
CLAIM = (
    "up to 16 pages are invalidated one by one in a shootdown round; "
    "from the 17th the round is one full TLB flush per CPU"
)
WORKING_SET = 16  # pages the sending process reads again after the unmap


def unmap_round(n: int, ncpus: int, profile: str | Profile = "amd64-mp") -> dict[str, Any]:
    """One point: the kernel unmaps a loan of ``n`` pages on ``ncpus`` CPUs."""
    prof = get_profile(profile)
    ps = prof.page_size
    m = Machine(ncpus=ncpus, memory="32M", profile=prof, trace="counters")
    try:
        p = m.spawn("sender", cpu=0)
        va = p.mmap(n * ps)  # the buffer it sends
        p.write(va, bytes(range(256)) * (n * ps // 256))
        ws = p.mmap(WORKING_SET * ps)  # the rest of its data, never lent
        p.write(ws, bytes(WORKING_SET * ps))
        for c in range(ncpus):  # the sender's threads ran everywhere
            p.read(va, n * ps, cpu=c)
        p.run_on(0)
        p.read(ws, WORKING_SET * ps)
        kl = m.kernel_loan(p, va, n * ps, cpu=0)
        with m.on_cpu(0) as cpu:  # the checksum reads the loan through its KVA
            m.mmu.load(cpu, kl.kva, n * ps, user=False)
        t0 = m.cpus[0].clock
        p.read(ws, WORKING_SET * ps, cpu=0)  # warm: what the read costs with no refill
        warm = m.cpus[0].clock - t0
        # The other CPUs are idle until now: bring their clocks to the
        # initiator's, so their deltas below are the round's work alone.
        now = max(cpu.clock for cpu in m.cpus)
        for cpu in m.cpus:
            cpu.clock = now
        before = dict(m.counters)
        with m.on_cpu(0):
            kl.release()
        mid = [c.clock - now for c in m.cpus]
        after = dict(m.counters)
        # The sender goes on reading its working set on CPU 0, where it runs:
        # its TLB entries there survive per-VA invalidation, not a full flush.
        t0 = m.cpus[0].clock
        p.read(ws, WORKING_SET * ps, cpu=0)
        refill = m.cpus[0].clock - t0 - warm

        def delta(k: str) -> int:
            return after.get(k, 0) - before.get(k, 0)

        check_invariants(m)
        return {
            "pages": n,
            "ncpus": ncpus,
            "tp_maxva": prof.tp_maxva,
            "rounds": delta("TLB shootdown"),
            "invlpg_per_cpu": delta("tlb invlpg") / ncpus,
            "full_flushes_per_cpu": delta("tlb flush") / ncpus,
            "ipis_delivered": delta("ipi delivered"),
            "initiator_ns": mid[0],
            "target_ns": max(mid[1:], default=0),
            "refill_ns": refill,
        }
    finally:
        m.close()


@reproduction(NAME, "x86 shootdown batching: 16 VAs one by one, a full flush from the 17th", 4)
def shootdown_batching(
    out: str | Path | None = None,
    *,
    quick: bool = False,
    progress: Progress | None = None,
    ncpus: int = 4,
    profile: str | Profile = "amd64-mp",
) -> ReproductionResult:
    """Reproduction 4 (see the module doc); writes shootdown-batching.csv/.png."""
    timer = Timer()
    outdir = check_args(out, quick)
    if not isinstance(ncpus, int) or isinstance(ncpus, bool) or ncpus < 2:
        raise ValueError(f"ncpus must be an int >= 2 (a shootdown needs a target), got {ncpus!r}")
    prof = get_profile(profile)  # an unknown profile fails here, before any run
    sizes = [8, 12, 15, 16, 17, 18, 24, 32] if quick else list(range(8, 33))
    points = []
    for i, n in enumerate(sizes, 1):
        points.append(unmap_round(n, ncpus, prof))
        if progress is not None:
            progress(f"{NAME}: {i}/{len(sizes)} unmap sizes")
    by = {p["pages"]: p for p in points}
    maxva = prof.tp_maxva
    # What the rule predicts, point by point (x86_tlb.c 1.20).
    mismatches = [
        p["pages"]
        for p in points
        if (p["invlpg_per_cpu"], p["full_flushes_per_cpu"])
        != ((p["pages"], 0) if p["pages"] <= maxva else (0, 1))
        or p["rounds"] != 1
    ]
    paged = [p["pages"] for p in points if p["full_flushes_per_cpu"] == 0]
    last_paged = max(paged, default=0)
    p16, p17 = by.get(16), by.get(17)
    rows = [Comparison("largest unmap invalidated page by page", last_paged, 16, "pages")]
    if p16 is not None and p17 is not None:
        rows += [
            Comparison("invlpg per CPU, 16-page unmap", p16["invlpg_per_cpu"], 16),
            Comparison("full flushes per CPU, 16-page unmap", p16["full_flushes_per_cpu"], 0),
            Comparison("invlpg per CPU, 17-page unmap", p17["invlpg_per_cpu"], 0),
            Comparison("full flushes per CPU, 17-page unmap", p17["full_flushes_per_cpu"], 1),
            Comparison("target CPU time, 16 pages", p16["target_ns"] / 1000, None, "us"),
            Comparison("target CPU time, 17 pages", p17["target_ns"] / 1000, None, "us"),
            Comparison("refills after, 16 pages", p16["refill_ns"] / 1000, None, "us"),
            Comparison("refills after, 17 pages", p17["refill_ns"] / 1000, None, "us"),
        ]
    holds = not mismatches and last_paged == 16
    if holds and p16 is not None and p17 is not None:
        cheaper = p17["target_ns"] < p16["target_ns"]
        dearer = p17["refill_ns"] > p16["refill_ns"]
        verdict = (
            f"every size from {sizes[0]} to {sizes[-1]} follows the rule "
            f"(one round; n invlpg per CPU up to 16, one full flush from 17); the 17-page "
            f"round costs a target {p17['target_ns']:,} ns against {p16['target_ns']:,} "
            f"({'cheaper' if cheaper else 'not cheaper'}), and the refills after it "
            f"{p17['refill_ns']:,} ns against {p16['refill_ns']:,} "
            f"({'dearer' if dearer else 'not dearer'})"
        )
        holds = cheaper and dearer
    else:
        verdict = (
            f"the model's profile has TP_MAXVA {maxva}; sizes that break the rule: {mismatches}"
        )

    def draw() -> Any:
        made = new_figure(2, 5.2, 3.8)
        if made is None:
            return None
        fig, (ax, bx) = made
        xs = [p["pages"] for p in points]
        ax.plot(xs, [p["invlpg_per_cpu"] for p in points], "o-", label="invlpg per CPU")
        ax.plot(
            xs, [16 * p["full_flushes_per_cpu"] for p in points], "s--", label="full flushes x16"
        )
        ax.axvline(16.5, color="grey", linestyle=":", label="published: TP_MAXVA 16")
        ax.set_xlabel("pages unmapped in one pmap_update")
        ax.set_ylabel("per target CPU")
        ax.legend(fontsize=8)
        ax.set_title("invalidations")
        bx.plot(xs, [p["target_ns"] / 1000 for p in points], "o-", label="round, per target")
        bx.plot(xs, [p["initiator_ns"] / 1000 for p in points], "^-", label="round, initiator")
        bx.plot(xs, [p["refill_ns"] / 1000 for p in points], "s--", label="refills after")
        bx.axvline(16.5, color="grey", linestyle=":")
        bx.set_xlabel("pages unmapped in one pmap_update")
        bx.set_ylabel("simulated us")
        bx.legend(fontsize=8)
        bx.set_title(f"time ({ncpus} CPUs, {prof.name})")
        fig.suptitle("x86 shootdown batching (uvmloan)")
        return fig

    return conclude(
        shootdown_batching,
        claim=CLAIM,
        source=SOURCE,
        holds=holds,
        verdict=verdict,
        rows=rows,
        points=points,
        out=outdir,
        draw=draw,
        timer=timer,
        params={"ncpus": ncpus, "profile": prof.name, "quick": quick},
    )
