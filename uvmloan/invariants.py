"""check_invariants(machine): the model's DIAGNOSTIC.

Each check names the invariant it enforces.  The pmap/TLB checks are this
layer's own (``specs/pmap.md``); the loan invariants I1-I20 of the digest are
added by the loan layer.  Every check raises ``InvariantViolation`` with the
invariant's name and the page, mapping or CPU at fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from .errors import InvariantViolation
from .page import PQ
from .pagetab import PageQueue
from .param import PG
from .pmap.cpu import TLBState
from .pmap.pte import (
    PTE_D,
    PTE_FRAME_MASK,
    PTE_FRAME_SHIFT,
    PTE_P,
    PTE_PVLIST,
    PTE_U,
    PTE_W,
    PTE_WIRED,
    pte_frame,
    pte_str,
)

if TYPE_CHECKING:
    from .machine import Machine
    from .pmap.cpu import CPU
    from .pmap.pmap import Pmap, VMPageMD


def check_pages(m: Machine) -> None:
    """PA1-PA3: allocator bookkeeping."""
    uvm = m.uvm
    # The free list is frames [_bump, npages) (never allocated) plus the
    # stack of freed ones, which must lie below _bump: checked without
    # listing the never-allocated frames (a big machine has millions).
    recycled = uvm._recycled
    bump = uvm._bump
    freed = set(recycled)
    if len(freed) != len(recycled) or any(not 0 <= f < bump for f in freed):
        raise InvariantViolation("PA1", "a frame is on the free list twice")
    both = {f for f in uvm.pages if f in freed or f >= bump}
    if both:
        raise InvariantViolation("PA1", f"frames {sorted(both)[:5]} are both free and allocated")
    nfree = len(freed) + uvm.npages - bump
    if nfree + len(uvm.pages) != uvm.npages:
        raise InvariantViolation(
            "PA1",
            f"{nfree} free + {len(uvm.pages)} allocated != {uvm.npages} frames",
        )
    # The queues are intrusive lists: walk each once, checking its links,
    # and compare what is really on them with every page's pqueue field.
    # (The queue members are read once: an enum member's attribute lookup
    # and hash are Python calls, and this loop runs for every resident page
    # after every step of a state machine.)
    active, inactive = PQ.ACTIVE, PQ.INACTIVE
    on_active = _walk_queue(uvm.active)
    on_inactive = _walk_queue(uvm.inactive)
    pg_free = PG.FREE
    for frame, pg in uvm.pages.items():
        if pg.frame != frame or pg.flags & pg_free:
            raise InvariantViolation("PA2", f"{pg!r} is allocated but marked free or misfiled")
        key = id(pg)
        in_act = key in on_active
        in_inact = key in on_inactive
        pq = pg.pqueue
        if pq is active or pq is inactive:
            if in_act + in_inact != 1 or not (in_act if pq is active else in_inact):
                raise InvariantViolation("PA3", f"{pg!r} queue field disagrees with the queues")
            if pg.wire_count:
                raise InvariantViolation("PA3", f"wired {pg!r} is on a paging queue")
        elif in_act or in_inact:
            raise InvariantViolation("PA3", f"{pg!r} is on a paging queue but says {pg.pqueue}")
    for q in (uvm.active, uvm.inactive):
        for pg in q:
            if uvm.pages.get(pg.frame) is not pg:
                raise InvariantViolation("PA3", f"freed {pg!r} is still on a paging queue")


def _walk_queue(q: PageQueue) -> set[int]:
    """ids of the pages on a paging queue, after checking its TAILQ links."""
    seen: set[int] = set()
    prev = None
    pg = q.head
    while pg is not None:
        if id(pg) in seen:
            raise InvariantViolation("PA3", f"paging queue {q.which.value} loops at {pg!r}")
        if pg.pq_prev is not prev:
            raise InvariantViolation("PA3", f"{pg!r}: broken back link on {q.which.value}")
        seen.add(id(pg))
        prev, pg = pg, pg.pq_next
    if q.tail is not prev or q.n != len(seen):
        raise InvariantViolation(
            "PA3", f"paging queue {q.which.value}: tail or count ({q.n}/{len(seen)}) wrong"
        )
    return seen


def check_pmaps(m: Machine) -> None:
    """PM1-PM3: page tables, pv lists and statistics agree."""
    uvm = m.uvm
    seen: set[tuple[int, int, int]] = set()
    for pm in m.pmap.pmaps:
        wired = 0
        # In address order (a PTETable walks that way): the first violation
        # reported is the lowest address, as it always was.
        for va, pte in pm.ptes.items():
            if not pte & PTE_P:
                raise InvariantViolation("PM1", f"{pm.name} {va:#x}: non-present PTE stored")
            if pte & PTE_WIRED:
                wired += 1
            if pm.is_kernel == bool(pte & PTE_U):
                raise InvariantViolation("PM1", f"{pm.name} {va:#x}: U bit wrong {pte_str(pte)}")
            if pte & PTE_PVLIST:
                frame = (pte & PTE_FRAME_MASK) >> PTE_FRAME_SHIFT  # pte_frame, inlined
                pg = uvm.pages.get(frame)
                if pg is None:
                    raise InvariantViolation(
                        "PM2", f"{pm.name} {va:#x} is managed but frame {frame} is free"
                    )
                if not _on_pv(pg.mdpage, pm, va):
                    raise InvariantViolation(
                        "PM2", f"{pm.name} {va:#x} maps {pg!r} but is not on its pv list"
                    )
                seen.add((id(pm), va, frame))
        if pm.resident_count != len(pm.ptes) or pm.wired_count != wired:
            raise InvariantViolation(
                "PM3",
                f"{pm.name}: resident {pm.resident_count}/{len(pm.ptes)}, "
                f"wired {pm.wired_count}/{wired}",
            )
    for frame, pg in uvm.pages.items():
        md = pg.mdpage
        if md.pv_pmap is None:
            if md.pv_more is not None:
                raise InvariantViolation("PM2", f"{pg!r}: pv list packed wrongly")
            continue  # no mapping: nothing to match
        if md.pv_more is not None and not md.pv_more:
            raise InvariantViolation("PM2", f"{pg!r}: pv list packed wrongly")
        for pm, va in md.pv:
            if (id(pm), va, frame) not in seen:
                raise InvariantViolation(
                    "PM2", f"pv entry ({pm.name}, {va:#x}) of {pg!r} has no matching managed PTE"
                )


def _on_pv(md: VMPageMD, pm: Pmap, va: int) -> bool:
    """``(pm, va) in md.pv``, without building the list."""
    if md.pv_pmap is pm and md.pv_va == va:
        return True
    more = md.pv_more
    return more is not None and (pm, va) in more


def check_asids(m: Machine) -> None:
    """TLB2: the MI ASID bookkeeping (``pmap_tlb.c``) keeps address spaces apart.

    On every CPU: the pmaps holding an ASID are live and hold distinct ASIDs
    in ``1..asid_max``, each marked in the bitmap; and every ASID that tags
    a TLB entry is marked, so that ``pmap_tlb_asid_alloc`` can never hand a
    new pmap an ASID whose old translations are still cached.
    """
    if m.profile.tlb_policy != "mi-asid":
        return
    asid_max = m.profile.asid_max
    for cpu in m.cpus:
        held: dict[int, str] = {}
        for pm, asid in cpu.asids.items():
            if pm.destroyed:
                raise InvariantViolation(
                    "TLB2", f"CPU {cpu.index}: destroyed {pm.name} holds ASID {asid}"
                )
            if not 0 < asid <= asid_max:
                raise InvariantViolation("TLB2", f"CPU {cpu.index}: {pm.name} holds ASID {asid}")
            if asid in held:
                raise InvariantViolation(
                    "TLB2", f"CPU {cpu.index}: {pm.name} and {held[asid]} both hold ASID {asid}"
                )
            held[asid] = pm.name
            if asid not in cpu.asid_bitmap:
                raise InvariantViolation(
                    "TLB2", f"CPU {cpu.index}: {pm.name}'s ASID {asid} is not marked in use"
                )
        # Read from the entries themselves, not through the model's
        # tlb_record_asids (TLB.asids_present), which this check judges.
        unmarked = {k[0] for k, _e in cpu.tlb if k[0] != 0} - cpu.asid_bitmap
        if unmarked:
            raise InvariantViolation(
                "TLB2",
                f"CPU {cpu.index}: ASIDs {sorted(unmarked)} tag TLB entries but are free",
            )


def live_tlb_entries(m: Machine, cpu: CPU) -> Iterator[tuple[Pmap, int, int]]:
    """The entries of ``cpu``'s TLB that an access can still hit, as
    (pmap, va, cached PTE), the pmap being the one whose accesses hit it.

    Skipped as dead: a STALE (lazy, shot-out) CPU's entries of its user pmap
    (``pmap_reactivate`` flushes them before any use, pmap.c 1.381), and
    under the MI ASID policy an entry whose ASID no pmap holds on that CPU
    any more (``pmap_tlb_pai_reset`` orphans it; the ASID stays marked until
    the pool is reinitialised, TLB2).  An entry whose ASID now belongs to
    another pmap is that pmap's: reported against that pmap's page table.
    """
    stale_pm = cpu.curpmap if cpu.tlbstate is TLBState.STALE else None
    holder = {asid: pm for pm, asid in cpu.asids.items()}
    shift = m.pmap.page_shift
    for (asid, vpn), (owner, snap) in cpu.tlb:
        pm = cast("Pmap", owner)
        if asid != 0:
            hit = holder.get(asid)
            if hit is None:
                continue
            pm = hit
        if pm is stale_pm:
            continue
        yield pm, vpn << shift, snap


def check_tlbs(m: Machine) -> None:
    """TLB1: after the barrier no TLB grants what its PTE does not.

    Holds whenever no CPU has a shootdown pending: every live cached entry
    (:func:`live_tlb_entries`) maps the frame the PTE maps, and a cached
    writable entry with D set has W in its PTE (an entry with D clear cannot
    write without re-walking).  CPUs with IPIs not yet taken (MI policy,
    which does not wait) are skipped.
    """
    if any(not c.packet.empty for c in m.cpus):
        raise InvariantViolation("TLB1", "checked with a shootdown still queued")
    for cpu in m.cpus:
        if cpu.pending_ipis:
            continue
        for pm, va, snap in live_tlb_entries(m, cpu):
            pte = pm.ptes.get(va, 0)
            name = pm.name
            if not pte & PTE_P:
                raise InvariantViolation(
                    "TLB1", f"CPU {cpu.index} caches {name} {va:#x} -> {pte_str(snap)}, unmapped"
                )
            if pte_frame(pte) != pte_frame(snap):
                raise InvariantViolation(
                    "TLB1",
                    f"CPU {cpu.index} caches {name} {va:#x} -> frame {pte_frame(snap)}, "
                    f"PTE maps {pte_frame(pte)}",
                )
            if snap & PTE_W and snap & PTE_D and not pte & PTE_W:
                raise InvariantViolation(
                    "TLB1",
                    f"CPU {cpu.index} can write {name} {va:#x} through {pte_str(snap)}; "
                    f"PTE is {pte_str(pte)}",
                )


def check_invariants(m: Machine) -> None:
    """Run every invariant check of the layers present."""
    check_pages(m)
    check_pmaps(m)
    check_asids(m)
    check_tlbs(m)
    check_maps(m)
    check_loans(m)


def check_maps(m: Machine) -> None:
    """MAP1: every map's entries are ordered, aligned and back-referenced."""
    from .errors import KernelAssertion

    for vmmap in m._maps.values():
        try:
            vmmap.check()
        except KernelAssertion as e:
            raise InvariantViolation("MAP1", str(e)) from e


def check_loans(m: Machine) -> None:
    """The loan invariants of the digest (section 6) that apply to the VM layer.

    I1  loan_count equals the outstanding kernel loans recorded for the page.
    I3  no managed mapping of a loaned page is writable, and (after the
        barrier) no TLB can write to it.
    I4  kernel mappings of loaned pages are read-only and never managed; no
        kernel mapping outlives its page (a freed frame is never kentered).
    I5  a loaned page is never free.
    I6  an orphan is dequeued and has no managed mapping.
    I7  PG_ANON => uanon set, no uobject, and the anon points back.
    I8  object pages and their objects agree (offset, PG_TABLED).
    I9  a loaned page's bytes are those it had when first lent.
    I13 the zero page is PG_RDONLY, owned by the zero-loan object, never free.
    """
    import zlib

    from .param import PG as _PG

    uvm = m.uvm
    pages = uvm.pages
    ledger = uvm.loan_ledger
    physmem = m.physmem
    for pg in ledger:
        if pages.get(pg.frame) is not pg:
            raise InvariantViolation("I5", f"loaned page of frame {pg.frame} is free")
    loaned_frames = set()
    pg_anon, pg_tabled = _PG.ANON, _PG.TABLED
    for frame, pg in pages.items():
        loans = pg.loan_count
        if loans < 0:
            raise InvariantViolation("I1", f"{pg!r} has a negative loan_count")
        flags = pg.flags
        anon = pg.uanon
        uobj = pg.uobject
        o2a = 1 if (anon is not None and not flags & pg_anon) else 0
        if loans != ledger.get(pg, 0) + o2a:
            raise InvariantViolation(
                "I1",
                f"{pg!r}: loan_count {loans} but {ledger.get(pg, 0)} loans outstanding",
            )
        if flags & pg_anon and (anon is None or uobj is not None or anon.an_page is not pg):
            raise InvariantViolation("I7", f"{pg!r} is PG_ANON but its anon does not own it")
        if uobj is not None and (uobj.uo_pages.get(pg.offset) is not pg or not flags & pg_tabled):
            raise InvariantViolation("I8", f"{pg!r} and its object disagree")
        if loans == 0:
            if pg.ever_loaned and uobj is None and anon is None:
                # I6: the uvm_unloanpage that drops an orphan's last loan
                # frees it; an ownerless, un-loaned page that was lent is
                # one that call forgot.
                raise InvariantViolation("I6", f"orphan {pg!r} outlived its last loan")
            continue
        loaned_frames.add(frame)
        for pm, va in pg.mdpage.pv:
            if pm.ptes[va] & PTE_W:
                raise InvariantViolation(
                    "I3", f"loaned {pg!r} is writable through {pm.name} {va:#x}"
                )
        if uobj is None and anon is None:
            if pg.pqueue is not PQ.NONE:
                raise InvariantViolation("I6", f"orphan {pg!r} is on a paging queue")
            if pg.mdpage.pv_pmap is not None:
                raise InvariantViolation("I6", f"orphan {pg!r} still has user mappings")
        crc = uvm.loan_crc.get(pg)
        if crc is not None and zlib.crc32(physmem.frame_view(frame)) != crc:
            raise InvariantViolation("I9", f"the bytes of loaned {pg!r} changed while it was lent")
    for obj in m.pmap.pmaps:
        if not obj.is_kernel:
            continue
        for va, pte in sorted(obj.ptes.items()):
            if pte & PTE_PVLIST:
                continue
            f = pte_frame(pte)
            if f not in pages:
                raise InvariantViolation("I4", f"kernel va {va:#x} maps free frame {f}")
            if f in loaned_frames and pte & PTE_W:
                raise InvariantViolation("I4", f"kernel va {va:#x} maps loaned frame {f} writable")
    # (with no page loaned there is nothing a TLB entry could break)
    if loaned_frames and not any(c.packet.empty is False for c in m.cpus):
        for cpu in m.cpus:
            if cpu.pending_ipis:
                continue
            # Dead entries (STALE CPU, orphaned ASID) cannot be used: see
            # live_tlb_entries.
            for _pm, _va, snap in live_tlb_entries(m, cpu):
                if pte_frame(snap) in loaned_frames and snap & PTE_W and snap & PTE_D:
                    raise InvariantViolation(
                        "I3", f"CPU {cpu.index} can still write loaned frame {pte_frame(snap)}"
                    )
    zobj = uvm.zero_object
    if zobj is not None:
        zpg = zobj.uvm_pagelookup(0)
        if zpg is not None and (not zpg.flags & _PG.RDONLY or pages.get(zpg.frame) is not zpg):
            raise InvariantViolation("I13", f"zero page {zpg!r} lost PG_RDONLY or was freed")
