"""check_pages (PA1-PA3) and check_pmaps (PM1-PM3): each corruption of the
allocator's tables, the paging queues, the page tables or the pv lists is
reported by the invariant meant for it, with its message."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from uvmloan import InvariantViolation, Machine, check_invariants
from uvmloan.invariants import check_pages, check_pmaps
from uvmloan.page import PQ, Page
from uvmloan.param import PG
from uvmloan.pmap.pte import PTE_P, PTE_PVLIST, PTE_U, PTE_WIRED

PS = 4096


@pytest.fixture
def m() -> Iterator[Machine]:
    """Two processes sharing copy-on-write pages (pv lists of two), one
    wired page, pages on both queues."""
    with Machine(ncpus=2, memory="4M") as mach:
        p = mach.spawn("p")
        va = p.mmap(16 * PS)
        for i in range(16):
            p.write(va + i * PS, b"x")
        q = p.fork("q")
        for i in range(16):
            q.read(va + i * PS, 1)  # the child maps them too: pv lists of two
        p.mlock(va, PS)
        uvm = mach.uvm
        # a few pages to the inactive queue, as the pagedaemon moves them
        for pg in list(uvm.active)[-3:]:
            uvm.uvm_pagedeactivate(pg)
        check_invariants(mach)
        mach.test_va = va  # type: ignore[attr-defined]
        yield mach


def anon_pages(m: Machine) -> list[Page]:
    return [pg for _f, pg in m.uvm.pages.items() if pg.uanon is not None]


def shared(m: Machine) -> Page:
    return next(pg for pg in anon_pages(m) if pg.pv_count == 2 and not pg.wire_count)


def user_pmap(m: Machine) -> Any:
    return next(pm for pm in m.pmap.pmaps if not pm.is_kernel)


def expect(m: Machine, check: Callable[[Machine], None], inv: str, msg: str) -> None:
    with pytest.raises(InvariantViolation) as ei:
        check(m)
    assert ei.value.invariant == inv, str(ei.value)
    assert msg in str(ei.value), str(ei.value)


def test_the_fixture_is_consistent(m: Machine) -> None:
    uvm = m.uvm
    assert len(uvm.active) and len(uvm.inactive)
    assert any(pg.wire_count for pg in anon_pages(m))
    check_pages(m)
    check_pmaps(m)


# ---------------------------------------------------------------- PA1


def test_pa1_a_frame_twice_on_the_free_list(m: Machine) -> None:
    uvm = m.uvm
    uvm._recycled.extend([0, 0])
    expect(m, check_pages, "PA1", "a frame is on the free list twice")


def test_pa1_a_free_frame_past_the_bump(m: Machine) -> None:
    m.uvm._recycled.append(m.uvm._bump)
    expect(m, check_pages, "PA1", "a frame is on the free list twice")


def test_pa1_free_and_allocated(m: Machine) -> None:
    pg = anon_pages(m)[0]
    m.uvm._recycled.append(pg.frame)
    expect(m, check_pages, "PA1", f"frames [{pg.frame}] are both free and allocated")


def test_pa1_frames_lost(m: Machine) -> None:
    m.uvm._bump += 1  # a frame neither free nor allocated
    expect(m, check_pages, "PA1", "free + ")


# ---------------------------------------------------------------- PA2


def test_pa2_marked_free(m: Machine) -> None:
    pg = anon_pages(m)[0]
    pg.flags |= PG.FREE
    expect(m, check_pages, "PA2", "is allocated but marked free or misfiled")


def test_pa2_misfiled(m: Machine) -> None:
    pg = anon_pages(m)[0]
    pg.frame += 1000
    expect(m, check_pages, "PA2", "is allocated but marked free or misfiled")


# ---------------------------------------------------------------- PA3


def test_pa3_field_says_active_but_page_is_on_no_queue(m: Machine) -> None:
    pg = next(iter(m.uvm.inactive))
    m.uvm.uvm_pagedequeue(pg)
    pg.pqueue = PQ.ACTIVE
    expect(m, check_pages, "PA3", "queue field disagrees with the queues")


def test_pa3_field_says_inactive_but_page_is_active(m: Machine) -> None:
    pg = next(iter(m.uvm.active))
    pg.pqueue = PQ.INACTIVE
    expect(m, check_pages, "PA3", "queue field disagrees with the queues")


def test_pa3_on_a_queue_but_says_none(m: Machine) -> None:
    pg = next(iter(m.uvm.inactive))
    pg.pqueue = PQ.NONE
    expect(m, check_pages, "PA3", "is on a paging queue but says")


def test_pa3_wired_on_a_queue(m: Machine) -> None:
    pg = next(iter(m.uvm.active))
    pg.wire_count = 1
    expect(m, check_pages, "PA3", "wired ")


def test_pa3_freed_page_still_queued(m: Machine) -> None:
    pg = next(iter(m.uvm.active))
    # the frame table loses it, the queue keeps it
    del m.uvm.pages[pg.frame]
    m.uvm._recycled.append(pg.frame)
    expect(m, check_pages, "PA3", "is still on a paging queue")


def test_pa3_broken_back_link(m: Machine) -> None:
    q = m.uvm.active
    assert q.head is not None and q.head.pq_next is not None
    q.head.pq_next.pq_prev = None
    expect(m, check_pages, "PA3", "broken back link on active")


def test_pa3_queue_count(m: Machine) -> None:
    m.uvm.inactive.n += 1
    expect(m, check_pages, "PA3", "tail or count")


def test_pa3_queue_loop(m: Machine) -> None:
    """The walk ends at a page it has seen rather than going round."""
    q = m.uvm.active
    assert q.head is not None and q.tail is not None
    q.tail.pq_next = q.head
    expect(m, check_pages, "PA3", f"paging queue active loops at {q.head!r}")


# ---------------------------------------------------------------- PM1-PM3


def test_pm1_non_present_pte(m: Machine) -> None:
    pm = user_pmap(m)
    va = m.test_va  # type: ignore[attr-defined]
    pm.ptes[va] = pm.ptes[va] & ~PTE_P
    expect(m, check_pmaps, "PM1", f"{pm.name} {va:#x}: non-present PTE stored")


def test_pm1_u_bit(m: Machine) -> None:
    pm = user_pmap(m)
    va = m.test_va  # type: ignore[attr-defined]
    pm.ptes[va] = pm.ptes[va] & ~PTE_U
    expect(m, check_pmaps, "PM1", f"{pm.name} {va:#x}: U bit wrong")


def test_pm2_managed_pte_of_a_free_frame(m: Machine) -> None:
    pm = user_pmap(m)
    va = m.test_va  # type: ignore[attr-defined]
    free = m.uvm._bump
    pm.ptes[va] = (pm.ptes[va] & 0xFFF) | (free << 12)
    expect(m, check_pmaps, "PM2", f"is managed but frame {free} is free")


def test_pm2_pte_not_on_the_pv_list(m: Machine) -> None:
    pg = shared(m)
    pm, va = pg.pv[1]
    assert pg.pv_more is not None
    del pg.pv_more[(pm, va)]
    if not pg.pv_more:
        pg.pv_more = None
    expect(m, check_pmaps, "PM2", f"{pm.name} {va:#x} maps")


def test_pm2_pv_packed_wrongly(m: Machine) -> None:
    pg = next(pg for pg in anon_pages(m) if pg.pv_count == 1)
    pg.pv_more = {}
    expect(m, check_pmaps, "PM2", "pv list packed wrongly")


def test_pm2_pv_more_without_an_inline_entry(m: Machine) -> None:
    pg = shared(m)
    pm, va = pg.pv[0]
    pg.pv_pmap = None
    pg.pv_va = 0
    # the inline entry's PTE is now on no pv list (and the list is packed
    # wrongly too: the PTE walk finds it first)
    expect(m, check_pmaps, "PM2", f"{pm.name} {va:#x} maps {pg!r} but is not on its pv list")


def test_pm2_pv_entry_without_a_pte(m: Machine) -> None:
    pg = shared(m)
    pm = user_pmap(m)
    pg.pv_more = {**(pg.pv_more or {}), (pm, 0x7000_0000): None}
    expect(m, check_pmaps, "PM2", f"pv entry ({pm.name}, 0x70000000) of")


def test_pm2_pv_entry_for_an_unmanaged_pte(m: Machine) -> None:
    pg = shared(m)
    pm, va = pg.pv[0]
    pm.ptes[va] = pm.ptes[va] & ~PTE_PVLIST
    expect(m, check_pmaps, "PM2", "has no matching managed PTE")


def test_pm3_resident_count(m: Machine) -> None:
    pm = user_pmap(m)
    pm.resident_count += 1
    expect(m, check_pmaps, "PM3", f"{pm.name}: resident")


def test_pm3_wired_count(m: Machine) -> None:
    pm = user_pmap(m)
    va = m.test_va  # type: ignore[attr-defined]
    pm.ptes[va + PS] = pm.ptes[va + PS] | PTE_WIRED
    expect(m, check_pmaps, "PM3", "wired")
