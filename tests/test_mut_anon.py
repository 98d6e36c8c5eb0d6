"""vm_anon and vm_amap (``uvmloan/anon.py``): the rules the mutation run of
the module found unchecked (TESTING.md, "Python: the kernel modules").
Rules and NetBSD sources: specs/map.md sections 2 and 4, uvm_anon.c 1.78.
"""

from __future__ import annotations

import pytest
from helpers import PS, machine_fixture

from uvmloan import KernelAssertion, Machine
from uvmloan.anon import Amap, AmapSlots, Anon, amap_unref_slots, anon_unref, uvm_anfree
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


# ------------------------------------------------------------ AmapSlots


def _slots(*pairs: tuple[int, Anon]) -> AmapSlots:
    t = AmapSlots()
    for s, a in pairs:
        t[s] = a
    return t


def test_amap_slots_is_a_mapping_in_slot_order() -> None:
    """am_anon[] indexed by slot: lookups, membership, length, and iteration
    in ascending slot order whatever the insertion order; slots 63/64 and
    127/128 sit either side of a 64-slot chunk boundary."""
    a, b, c, d = Anon(), Anon(), Anon(), Anon()
    t = _slots((128, c), (0, a), (1000, d), (63, b))
    assert len(t) == 4 and list(t) == [0, 63, 128, 1000]
    assert t[0] is a and t[63] is b and t[128] is c and t[1000] is d
    assert t.get(63) is b and t.get(64) is None and t.get(64, "x") == "x"
    assert t.get(5000, "y") == "y"  # a slot in a chunk never allocated
    for missing in (1, 64, 127, 5000):
        assert missing not in t
        with pytest.raises(KeyError) as ei:
            t[missing]
        assert ei.value.args == (missing,)  # the KeyError names the slot
    keys: list[object] = ["0", 0.0]  # not slot numbers
    assert 0 in t and 1000 in t and all(k not in t for k in keys)
    t[63] = d  # replacing a slot's anon does not count it twice
    assert len(t) == 4 and t[63] is d


def test_amap_slots_delete_and_pop() -> None:
    a, b, c = Anon(), Anon(), Anon()
    t = _slots((0, a), (1, b), (64, c))
    del t[1]
    assert list(t) == [0, 64] and len(t) == 2
    with pytest.raises(KeyError) as ei:
        del t[1]  # an empty slot of an allocated chunk
    assert ei.value.args == (1,)
    with pytest.raises(KeyError) as ei:
        del t[640]  # a chunk never allocated
    assert ei.value.args == (640,)
    assert t.pop(64) is c and list(t) == [0] and len(t) == 1
    assert t.pop(64, None) is None and t.pop(64, "d") == "d"
    with pytest.raises(KeyError) as ei:
        t.pop(64)
    assert ei.value.args == (64,)
    assert t.pop(0) is a and len(t) == 0 and list(t) == []
    # An emptied chunk is dropped (amaps shrink); a new slot in it works again.
    assert t._chunks == {}
    t[2] = b
    assert list(t) == [2] and t[2] is b


def test_amap_slots_keep_a_chunk_while_it_holds_an_anon() -> None:
    a, b = Anon(), Anon()
    t = _slots((0, a), (63, b))
    del t[0]
    assert t[63] is b and list(t) == [63] and len(t._chunks) == 1
    del t[63]
    assert len(t._chunks) == 0


@pytest.mark.parametrize(
    ("lo", "hi", "inclusive", "want"),
    [
        (63, 128, (True, True), [63, 64, 128]),
        (62, 129, (True, True), [63, 64, 128, 129]),
        (63, 128, (False, True), [64, 128]),
        (63, 128, (True, False), [63, 64]),
        (63, 128, (False, False), [64]),
        (64, 64, (True, True), [64]),
        (64, 64, (True, False), []),
        (64, 64, (False, True), []),
        (65, 127, (True, True), []),
        (0, 10**9, (True, True), [0, 63, 64, 128, 129, 4096]),
        (130, 10**9, (True, False), [4096]),
        (-10, 0, (True, True), [0]),
    ],
)
def test_amap_slots_irange(lo: int, hi: int, inclusive: tuple[bool, bool], want: list[int]) -> None:
    """SortedDict.irange's contract (the table it replaced): the slots in
    [lo, hi], each end excluded when asked, ascending; a range of many
    chunks over few allocated ones is walked through the allocated ones."""
    t = _slots(*((s, Anon()) for s in (4096, 129, 128, 64, 63, 0)))
    assert list(t.irange(lo, hi, inclusive=inclusive)) == want
    if inclusive == (True, True):
        assert list(t.irange(lo, hi)) == want  # both ends included by default


def test_amap_slots_irange_lists_before_yielding() -> None:
    """Callers (amap_unref_slots) change the table while they iterate."""
    t = _slots(*((s, Anon()) for s in (1, 2, 3, 70)))
    it = t.irange(0, 100)
    del t[2]
    del t[70]
    assert list(it) == [1, 2, 3, 70]


def test_amap_slots_irange_over_a_gap_in_the_chunks() -> None:
    """A range no wider than the allocated chunks is walked chunk by chunk,
    past a chunk never allocated (slots 64-127 here)."""
    t = _slots(*((s, Anon()) for s in (5, 130, 200, 700)))
    assert len(t._chunks) == 4
    assert list(t.irange(0, 255)) == [5, 130, 200]


def test_amap_add_counts_each_new_slot_once() -> None:
    am = Amap(name="am")
    a, b = Anon(), Anon()
    am.add(7, a)
    am.add(70, b)
    assert len(am.slots) == 2 and repr(am) == "<Amap am 2 anons, 0 refs>"
    am.add(7, b, replace=True)
    assert len(am.slots) == 2
