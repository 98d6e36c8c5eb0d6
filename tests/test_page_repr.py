"""The packed representations of pages, pv lists, page tables and amaps.

The allocator's free list, a page's pv list, a pmap's PTE table and an amap's
slots are stored compactly (see page.py, pmap/pmap.py, anon.py).  These tests
pin what the compact forms must still mean: the order frames are handed out,
the order of a page's mappings, address-ordered range walks, and that a
machine's untouched frames cost no Python objects.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from helpers import PS, RW, UVA

from uvmloan import Machine
from uvmloan.anon import Amap, AmapSlots, Anon
from uvmloan.errors import InvariantViolation
from uvmloan.invariants import check_invariants
from uvmloan.trace import PmapRemove


def test_fresh_machine_holds_no_per_frame_objects() -> None:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        m = Machine(memory="256M")  # 65536 frames
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    npages = m.uvm.npages
    assert npages == 65536
    assert m.uvm.free_count == npages and not m.uvm.pages
    # Well under one byte a frame: nothing is built per frame.
    assert grown < npages
    m.close()


def test_frames_are_handed_out_lowest_first_and_freed_ones_lifo() -> None:
    m = Machine(memory="64K")  # 16 frames
    uvm = m.uvm
    pages = [uvm.uvm_pagealloc(None, 0, None) for _ in range(4)]
    assert [p.frame for p in pages if p is not None] == [0, 1, 2, 3]
    p1, p2 = pages[1], pages[2]
    assert p1 is not None and p2 is not None
    uvm.uvm_pagefree(p1)
    uvm.uvm_pagefree(p2)
    # The free list reads as the old explicit stack: pop() is the next frame.
    assert uvm.free == [*range(15, 3, -1), 1, 2]
    assert uvm.free_count == 14
    again = [uvm.uvm_pagealloc(None, 0, None) for _ in range(3)]
    assert [p.frame for p in again if p is not None] == [2, 1, 4]
    check_invariants(m)


def test_allocation_stops_at_the_last_frame() -> None:
    m = Machine(memory="16K")  # 4 frames
    uvm = m.uvm
    got = [uvm.uvm_pagealloc(None, 0, None) for _ in range(5)]
    assert [p.frame if p is not None else None for p in got] == [0, 1, 2, 3, None]
    assert uvm.free == [] and uvm.free_count == 0


def test_pv_list_keeps_entry_order_inline_and_packed() -> None:
    m = Machine(memory="1M")
    pmod = m.pmap
    pg = m.uvm.uvm_pagealloc(None, 0, None)
    assert pg is not None
    assert pg.mdpage is pg and pg.pv == [] and pg.pv_more is None
    pms = [pmod.pmap_create(f"p{i}") for i in range(3)]
    for pm in pms:
        pmod.pmap_enter(pm, UVA, pg.pa, RW)
    assert pg.pv == [(pms[0], UVA), (pms[1], UVA), (pms[2], UVA)]
    assert pg.pv_pmap is pms[0] and pg.pv_more is not None and len(pg.pv_more) == 2
    # Removing the oldest promotes the next one: order is kept.
    pmod.pmap_remove(pms[0], UVA, UVA + PS)
    assert pg.pv == [(pms[1], UVA), (pms[2], UVA)]
    pmod.pmap_remove(pms[2], UVA, UVA + PS)
    assert pg.pv == [(pms[1], UVA)] and pg.pv_more is None
    pmod.pmap_enter(pms[0], UVA + PS, pg.pa, RW)
    assert pg.pv == [(pms[1], UVA), (pms[0], UVA + PS)]
    check_invariants(m)
    pmod.pmap_remove(pms[1], UVA, UVA + PS)
    pmod.pmap_remove(pms[0], UVA, UVA + 2 * PS)
    assert pg.pv == [] and pg.pv_pmap is None and pg.pv_more is None
    pmod.pmap_update()
    m.uvm.uvm_pagefree(pg)
    check_invariants(m)


def test_pmap_remove_walks_addresses_in_order_either_way() -> None:
    m = Machine(memory="1M", trace="record")
    pmod = m.pmap
    pm = pmod.pmap_create("p")
    pg = m.uvm.uvm_pagealloc(None, 0, None)
    assert pg is not None
    vas = [UVA + i * PS for i in (7, 2, 9, 0, 4)]
    for va in vas:  # entered out of address order
        pmod.pmap_enter(pm, va, pg.pa, RW)
    start = len(m.trace)
    # A short range is walked page by page, a long one by sorting the table.
    pmod.pmap_remove(pm, UVA, UVA + 5 * PS)
    pmod.pmap_remove(pm, UVA, pm.maxva)
    removed = [e.va for e in m.trace[start:] if isinstance(e, PmapRemove)]
    assert removed == [UVA + i * PS for i in (0, 2, 4, 7, 9)]
    assert not pm.ptes and not pg.mdpage.pv
    assert list(pm.mappings()) == []


def test_amap_slots_irange_is_ascending_like_sorteddict() -> None:
    slots = AmapSlots()
    for s in (9, 3, 12, 0, 5):
        slots[s] = Anon()
    assert list(slots.irange(0, 12, inclusive=(True, False))) == [0, 3, 5, 9]
    assert list(slots.irange(3, 9)) == [3, 5, 9]
    assert list(slots.irange(3, 9, inclusive=(False, False))) == [5]
    assert list(slots.irange(-(10**9), 10**9, inclusive=(True, False))) == [0, 3, 5, 9, 12]
    assert list(slots.irange(13, 20)) == []
    amap = Amap()
    assert isinstance(amap.slots, AmapSlots)


def test_anon_names_follow_creation_order() -> None:
    a, b = Anon(), Anon()
    na, nb = int(a.name[1:]), int(b.name[1:])
    assert a.name.startswith("a") and nb == na + 1
    assert a.name == a.name  # spelled the same each time


def _pmap_workload(m: Machine) -> None:
    """Faults, COW sharing across CPUs, write-protect, remove, exit: every
    pmap and page path that counts trace events, with shootdowns."""
    p = m.spawn("a", cpu=0)
    va = p.mmap(8 * PS)
    for i in range(8):
        p.write(va + i * PS, bytes([i]))
    c = p.fork("b", cpu=1)
    c.write(va + 2 * PS, b"c")  # COW break with the parent live on CPU 0
    p.run_on(2)
    p.write(va + 3 * PS, b"p")
    p.mprotect(va, 4 * PS, 1)
    p.read(va, 16)
    c.munmap(va, 4 * PS)
    m.reclaim(pages=2)
    c.exit()
    p.munmap(va, 8 * PS)
    p.exit()


def test_counting_only_tracing_counts_what_recording_counts() -> None:
    # The hot paths bump counters from keys computed once per event class
    # instead of building events; the totals must be the events' own.
    for policy in ("x86", "mi-asid"):
        got = []
        for trace in ("counters", "record"):
            with Machine(
                ncpus=3, memory="1M", trace=trace, profile_overrides={"tlb_policy": policy}
            ) as m:
                _pmap_workload(m)
                got.append(dict(m.counters))
        assert got[0] == got[1], policy
        assert got[0]["pmap enter"] > 0 and got[0]["tlbshoot request"] > 0


def test_amap_slots_behave_as_a_mapping_across_chunks() -> None:
    slots = AmapSlots()
    anons = {s: Anon() for s in (0, 63, 64, 200, 1000, 5)}
    for s, a in anons.items():
        slots[s] = a
    assert len(slots) == 6 and list(slots) == [0, 5, 63, 64, 200, 1000]
    assert [slots[s] for s in slots] == [anons[s] for s in sorted(anons)]
    assert 64 in slots and 65 not in slots and object() not in slots
    assert slots.get(65) is None and slots.get(65, 7) == 7
    assert list(slots.irange(5, 64, inclusive=(False, True))) == [63, 64]
    assert list(slots.irange(60, 70, inclusive=(True, False))) == [63, 64]
    assert slots.pop(200) is anons[200] and slots.pop(200, None) is None
    del slots[1000]
    assert list(slots.items()) == [(0, anons[0]), (5, anons[5]), (63, anons[63]), (64, anons[64])]
    replaced = Anon()
    slots[0] = replaced
    assert len(slots) == 4 and slots[0] is replaced
    for s in list(slots):
        del slots[s]
    assert len(slots) == 0 and not slots and list(slots.irange(0, 10**6)) == []


def test_paging_queues_are_fifo_and_requeue_moves_to_the_tail() -> None:
    m = Machine(memory="64K")
    uvm = m.uvm
    pages = [uvm.uvm_pagealloc(None, 0, None) for _ in range(4)]
    a, b, c, d = (p for p in pages if p is not None)
    for pg in (a, b, c, d):
        uvm.uvm_pageactivate(pg)
    assert list(uvm.active) == [a, b, c, d] and len(uvm.active) == 4
    uvm.uvm_pageactivate(b)  # re-activation moves it to the tail
    uvm.uvm_pagedeactivate(c)
    assert list(uvm.active) == [a, d, b] and list(uvm.inactive) == [c]
    assert b in uvm.active and b not in uvm.inactive and c in uvm.inactive
    uvm.uvm_pagewire(a)  # wiring takes it off its queue
    assert list(uvm.active) == [d, b] and a not in uvm.active
    check_invariants(m)
    uvm.uvm_pagefree(d)
    assert list(uvm.active) == [b] and d not in uvm.active
    uvm.uvm_pageunwire(a)
    assert list(uvm.active) == [b, a]
    check_invariants(m)


def test_a_broken_paging_queue_link_is_an_invariant_violation() -> None:
    m = Machine(memory="64K")
    uvm = m.uvm
    pages = [uvm.uvm_pagealloc(None, 0, None) for _ in range(3)]
    for pg in pages:
        assert pg is not None
        uvm.uvm_pageactivate(pg)
    mid = pages[1]
    assert mid is not None
    mid.pq_prev = None  # corrupt the back link
    with pytest.raises(InvariantViolation, match="PA3"):
        check_invariants(m)
