"""vm_anon and vm_amap (``uvmloan/anon.py``): the rules the mutation run of
the module found unchecked (TESTING.md, "Python: the kernel modules").
Rules and NetBSD sources: specs/map.md sections 2 and 4, uvm_anon.c 1.78.
"""

from __future__ import annotations

import pytest
from helpers import PS, machine_fixture

from uvmloan import KernelAssertion, Machine
from uvmloan.anon import Amap, Anon, amap_unref_slots, anon_unref, uvm_anfree
from uvmloan.param import PG, UVM_PGA_ZERO

m = machine_fixture(ncpus=2, memory="1M", check=True)


def test_anon_repr_shows_references_page_and_swap_slot(m: Machine) -> None:
    a = Anon()
    assert repr(a) == f"<Anon {a.name} ref=1 page=None swslot=0>"
    pg = m.uvm.uvm_pagealloc(None, 0, a, UVM_PGA_ZERO)
    assert pg is not None
    a.an_swslot = 7
    assert repr(a) == f"<Anon {a.name} ref=1 page={pg.frame} swslot=7>"
    a.an_swslot = 0
    pg.flags &= ~PG.BUSY
    a.an_ref = 0
    uvm_anfree(m.uvm, a)


def test_amap_add_refuses_a_held_slot_unless_replacing(m: Machine) -> None:
    """amap_add: a slot that holds an anon is replaced only when asked."""
    am = Amap(name="am")
    first, second = Anon(), Anon()
    am.add(3, first)
    with pytest.raises(KernelAssertion, match=r"^amap_add: am slot 3 already holds an anon$"):
        am.add(3, second)
    assert am.lookup(3) is first
    am.add(3, second, replace=True)
    assert am.lookup(3) is second


def test_anfree_and_unref_assertions_name_the_anon(m: Machine) -> None:
    a = Anon()
    n = a.name
    still = rf"^uvm_anfree: <Anon {n} ref=1 .* still referenced$"
    with pytest.raises(KernelAssertion, match=still):
        uvm_anfree(m.uvm, a)
    anon_unref(m.uvm, a)
    none = rf"^anon_unref: <Anon {n} ref=0 .* has no references$"
    with pytest.raises(KernelAssertion, match=none):
        anon_unref(m.uvm, a)


def test_anfree_of_a_busy_page_marks_it_released(m: Machine) -> None:
    """uvm_anfree: a page someone is working on (PG_BUSY) is not freed
    under them: it is marked PG_RELEASED for its owner to free."""
    a = Anon()
    pg = m.uvm.uvm_pagealloc(None, 0, a, UVM_PGA_ZERO)
    assert pg is not None and pg.flags & PG.BUSY
    a.an_ref = 0
    uvm_anfree(m.uvm, a)
    assert pg.flags & PG.RELEASED and a.an_page is None
    assert pg.flags & PG.BUSY  # still its owner's, who frees it on unbusy
    assert m.uvm.phys_to_page(pg.frame) is pg  # still allocated
    # The busy page's owner frees it when it lets go (uvm_page_unbusy).
    m.uvm.uvm_pagefree(pg)
    assert m.uvm.allocated == 0


def test_anfree_of_an_idle_page_frees_it(m: Machine) -> None:
    a = Anon()
    pg = m.uvm.uvm_pagealloc(None, 0, a, UVM_PGA_ZERO)
    assert pg is not None
    pg.flags &= ~PG.BUSY
    a.an_ref = 0
    uvm_anfree(m.uvm, a)
    assert not pg.flags & PG.RELEASED and m.uvm.allocated == 0


def test_anfree_frees_the_swap_slot(m: Machine) -> None:
    """uvm_anon_dropswap: the slot of a paged-out anon goes with it."""
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.write(va, b"a" * 2 * PS)
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    anons = [e.amap.slots[0], e.amap.slots[1]]
    for a in anons:
        m.reclaim(page=a.an_page)
    slots = [a.an_swslot for a in anons]
    assert all(slots) and all(s in m.uvm.swap for s in slots)
    p.munmap(va, PS)
    assert anons[0].an_swslot == 0 and slots[0] not in m.uvm.swap
    assert slots[1] in m.uvm.swap and anons[1].an_swslot == slots[1]
    assert p.read(va + PS, 1) == b"a"


def test_amap_unref_slots_drops_exactly_the_range(m: Machine) -> None:
    """The range is [start, stop): the anons at both ends outside it stay,
    the one at ``start`` goes (no entry covers any of them here)."""
    am = Amap()
    anons = {s: Anon() for s in (1, 2, 3, 4)}
    for s, a in anons.items():
        am.add(s, a)
    amap_unref_slots(m.uvm, am, range(2, 4))
    assert list(am.slots.keys()) == [1, 4]
    assert [anons[s].an_ref for s in (1, 2, 3, 4)] == [1, 0, 0, 1]
    amap_unref_slots(m.uvm, am, range(1, 2))
    assert list(am.slots.keys()) == [4]


def test_amap_unref_slots_keeps_covered_slots(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(3 * PS)
    p.write(va, b"x" * 3 * PS)
    e = p.map.uvm_map_lookup_entry(va)
    assert e is not None and e.amap is not None
    amap = e.amap
    amap_unref_slots(m.uvm, amap, range(0, 3))
    assert list(amap.slots.keys()) == [0, 1, 2]
    p.munmap(va + PS, PS)
    assert list(amap.slots.keys()) == [0, 2]
