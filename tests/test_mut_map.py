"""vm_map, clipping, mprotect, mlock's passes and fork (``uvmloan/map.py``):
the rules the mutation run of the module found unchecked (TESTING.md,
"Python: the kernel modules").  Rules and NetBSD sources: specs/map.md.
"""

from __future__ import annotations

import pytest
from helpers import PS, RW, R, events, machine_fixture

from uvmloan import (
    MAP_PRIVATE,
    MAP_SHARED,
    VM_PROT_ALL,
    VM_PROT_EXECUTE,
    KernelAssertion,
    Machine,
    UVMError,
    check_invariants,
)
from uvmloan.anon import Anon, anon_unref
from uvmloan.map import MAP_INHERIT_NONE, MAP_INHERIT_SHARE, MapEntry, VMMap, amap_cow_now
from uvmloan.param import EACCES, ENOMEM, PG
from uvmloan.process import Process
from uvmloan.trace import PmapUpdate

m = machine_fixture(ncpus=2, memory="1M", check=True)

RWX = RW | VM_PROT_EXECUTE


def _avail(m: Machine, n: int) -> None:
    """Exactly ``n`` more pages can be allocated."""
    m.uvm.limit = m.uvm.allocated + n


def _entries(p: Process) -> list[MapEntry]:
    return list(p.map.entries.values())


# ------------------------------------------------------------------ repr


def test_map_entry_repr_shows_range_protection_flags_and_layers(m: Machine) -> None:
    vn = m.vnode(b"." * 2 * PS, name="f")
    p = m.spawn("p")
    va = p.mmap(2 * PS, RW, flags=MAP_PRIVATE, obj=vn, offset=0)
    (e,) = _entries(p)
    assert repr(e) == f"<MapEntry [{va:#x},{va + 2 * PS:#x}) prot=3 CN obj=f+0x0>"
    p.write(va, b"x")
    p.mlock(va, 2 * PS)
    (e,) = _entries(p)
    assert e.amap is not None
    assert repr(e) == (
        f"<MapEntry [{va:#x},{va + 2 * PS:#x}) prot=3 CW obj=f+0x0 amap={e.amap.name}@0>"
    )
    p.munlock(va, 2 * PS)


# ------------------------------------------------------ argument checks


@pytest.mark.parametrize(
    ("start", "size", "exc", "msg"),
    [
        (True, PS, TypeError, r"^uvm_unmap: address must be an int, not bool$"),
        (float(0x20000000), PS, TypeError, r"^uvm_unmap: address must be an int, not float$"),
        (0x20000000, 0.5, TypeError, r"^uvm_unmap: length must be an int, not float$"),
        (0x20000001, PS, ValueError, r"^uvm_unmap: address 0x20000001 is not page aligned$"),
        (0x20000000, 0, ValueError, r"^uvm_unmap: length must be positive, got 0$"),
        (0, PS, ValueError, r"^uvm_unmap: range \[0x0, 0x1000\) is outside \[0x1000, "),
        (
            0x7F7FFFFFF000,
            PS,
            ValueError,
            r"^uvm_unmap: range \[0x7f7ffffff000, 0x7f8000000000\) is outside ",
        ),
    ],
)
def test_uvm_unmap_checks_its_range(
    m: Machine, start: object, size: object, exc: type[Exception], msg: str
) -> None:
    p = m.spawn("p")
    with pytest.raises(exc, match=msg):
        p.map.uvm_unmap(start, start + size)  # type: ignore[operator,arg-type]


def test_the_ends_of_the_user_range_can_be_mapped_and_unmapped(m: Machine) -> None:
    p = m.spawn("p")
    lo, hi = p.map.minva, p.map.maxva
    assert p.map.uvm_map(PS, None, 0, RW, addr=lo, fixed=True) == lo
    assert p.map.uvm_map(PS, None, 0, RW, addr=hi - PS, fixed=True) == hi - PS
    p.write(hi - PS, b"top")
    p.map.uvm_unmap(hi - PS, hi)
    p.map.uvm_unmap(lo, lo + PS)
    assert not p.map.entries and m.uvm.allocated == 0


def test_uvm_map_protect_and_hole_messages_name_the_call(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    with pytest.raises(ValueError, match=r"^uvm_map_protect: address "):
        p.map.uvm_map_protect(va + 1, va + PS + 1, R)
    with pytest.raises(UVMError, match=rf"^.*uvm_map_protect: \[{va + PS:#x}, ") as e:
        p.map.uvm_map_protect(va, va + 2 * PS, R)
    assert e.value.errno == ENOMEM
    with pytest.raises(UVMError, match=rf"^.*uvm_map_protect: \[{va - PS:#x}, {va:#x}\)") as e:
        p.map.uvm_map_protect(va - PS, va + PS, R)
    assert e.value.errno == ENOMEM


def test_mprotect_beyond_max_names_the_entry(m: Machine) -> None:
    p = m.spawn("p")
    va = p.map.uvm_map(PS, None, 0, R, maxprot=R)
    with pytest.raises(UVMError, match=r"mprotect: 3 exceeds the maximum protection of <MapEntry"):
        p.map.uvm_map_protect(va, va + PS, RW)


# ---------------------------------------------------------------- clipping


def test_clip_at_an_entry_end_is_a_kernel_assertion(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    (e,) = _entries(p)
    for at in (va, va + 2 * PS):
        with pytest.raises(KernelAssertion, match=rf"^clip of <MapEntry .* at {at:#x}$"):
            p.map._clip(e, at)
    assert e.start == va and e.end == va + 2 * PS


def test_clipped_entries_have_their_own_ids(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(3 * PS)
    p.mprotect(va + PS, PS, R)
    ids = [e.id for e in _entries(p)]
    assert len(ids) == 3 and len(set(ids)) == 3
    c = p.fork("c")
    assert not {e.id for e in _entries(c)} & set(ids)


def test_unclip_checks_the_halves(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(3 * PS)
    p.mprotect(va + PS, PS, R)
    a, b, c = _entries(p)
    for lower, upper in ((a, c), (b, a)):
        with pytest.raises(KernelAssertion, match=r"^unclip of <MapEntry"):
            p.map._unclip(lower, upper)
    assert _entries(p) == [a, b, c]


# ------------------------------------------------------ pmap_update names


def test_every_pmap_update_names_the_map_pmap() -> None:
    """uvm_unmap_remove, uvm_map_protect and uvmspace_fork end their pmap
    batches with pmap_update(map->pmap) (recorded in the trace)."""
    with Machine(memory="1M", trace="record") as mach:
        p = mach.spawn("p")
        va = p.mmap(2 * PS)
        p.write(va, b"x")
        for op in (
            lambda: p.mprotect(va, PS, R),
            lambda: p.fork("c"),
            lambda: p.munmap(va, 2 * PS),
        ):
            n = len(events(mach, PmapUpdate))
            op()
            ups = events(mach, PmapUpdate)[n:]
            assert ups and {u.space for u in ups} <= {p.map.pmap.name}, ups


# --------------------------------------------------------------- mprotect


def test_mprotect_checks_max_protection_only_inside_the_range(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.map.uvm_map(PS, None, 0, R, maxprot=R, addr=va + PS, fixed=True)
    p.mprotect(va, PS, RW)
    assert [e.protection for e in _entries(p)] == [RW, R]


def test_raising_protection_does_not_touch_the_pmap(m: Machine) -> None:
    """uvm_map_protect calls pmap_protect only to take rights away; raised
    rights are faulted in by the next access."""
    p = m.spawn("p")
    va = p.mmap(PS, R)
    p.read(va, 1)
    before = m.counters["pmap protect"]
    p.mprotect(va, PS, RW)
    assert m.counters["pmap protect"] == before
    p.write(va, b"w")
    assert p.read(va, 1) == b"w"


def test_lowering_a_needs_copy_entry_keeps_its_read_mappings(m: Machine) -> None:
    """pmap_protect(prot & MASK(entry)): write removed, read kept; the next
    read does not fault."""
    vn = m.vnode(b"f" * PS)
    p = m.spawn("p")
    va = p.mmap(PS, RW, flags=MAP_PRIVATE, obj=vn)
    assert p.read(va, 1) == b"f"
    (e,) = _entries(p)
    assert e.needs_copy
    p.mprotect(va, PS, R)
    faults = m.counters["fault"]
    assert p.read(va, 1) == b"f"
    assert m.counters["fault"] == faults


def test_lowering_a_shared_entry_keeps_write(m: Machine) -> None:
    """A shared entry is not copy-on-write (MASK is VM_PROT_ALL): taking
    away execute leaves the page writable without a fault."""
    vn = m.vnode(b"." * PS)
    p = m.spawn("p")
    va = p.mmap(PS, RWX, flags=MAP_SHARED, obj=vn)
    p.write(va, b"a")
    p.mprotect(va, PS, RW)
    faults = m.counters["fault"]
    p.write(va, b"b")
    assert m.counters["fault"] == faults and vn.read(0, 1) == b"b"


# --------------------------------------------------------------- amap_copy


def test_amap_copy_takes_only_the_entrys_own_slots(m: Machine) -> None:
    """amap_copy copies the entry's range of the old amap: a clipped entry
    does not take its neighbours' anons."""
    p = m.spawn("p")
    va = p.mmap(3 * PS)
    p.write(va, b"a" * 3 * PS)
    p.mprotect(va + PS, PS, R)
    c = p.fork("c")
    c.write(va, b"b")  # the child's first entry gets a private amap
    ce = _entries(c)[0]
    assert ce.amap is not None and list(ce.amap.slots.keys()) == [0]
    parent_amap = _entries(p)[0].amap
    assert parent_amap is not None
    # The child's write promoted slot 0; slots 1 and 2 were never copied.
    assert [parent_amap.slots[s].an_ref for s in (0, 1, 2)] == [1, 1, 1]
    assert p.read(va, 1) == b"a" and c.read(va, 1) == b"b"


# --------------------------------------------------------- mlock's pass 1


def test_mlock_of_a_read_only_object_entry_makes_no_amap(m: Machine) -> None:
    """uvm_map_pageable pass 1 copies the amap of a needs-copy entry only if
    it may become writable or has no object."""
    vn = m.vnode(b"r" * PS)
    p = m.spawn("p")
    va = p.map.uvm_map(PS, vn, 0, R, maxprot=R)
    p.mlock(va, PS)
    (e,) = _entries(p)
    assert e.amap is None and e.needs_copy and e.wired_count == 1
    assert p.read(va, 1) == b"r"
    p.munlock(va, PS)


def test_failed_mlock_of_part_of_a_file_mapping_keeps_the_object_refs(m: Machine) -> None:
    vn = m.vnode(b"." * 3 * PS)
    p = m.spawn("p")
    va = p.mmap(3 * PS, RW, flags=MAP_PRIVATE, obj=vn)
    refs = vn.uo_refs
    _avail(m, 0)
    with pytest.raises(UVMError):
        p.mlock(va + PS, PS)
    assert vn.uo_refs == refs and len(p.map.entries) == 1
    m.uvm.limit = None
    p.munmap(va, 3 * PS)
    assert vn.uo_refs == refs - 1


def test_failed_mlock_after_fork_restores_the_shared_anons(m: Machine) -> None:
    """The undo of pass 1's amap_copy: anons still in the old amap lose the
    copy's reference (an_ref back to the two sharers)."""
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.write(va, b"a" * 2 * PS)
    c = p.fork("c")
    amap = _entries(p)[0].amap
    assert amap is not None
    _avail(m, 0)
    with pytest.raises(UVMError):
        p.mlock(va, PS)
    m.uvm.limit = None
    assert [e.amap for e in _entries(p)] == [amap]
    assert [amap.slots[s].an_ref for s in (0, 1)] == [1, 1]
    assert amap.am_ref == 2
    check_invariants(m)
    c.write(va, b"c")
    assert p.read(va, 1) == b"a"


def test_failed_mlock_gives_back_only_the_copys_reference(m: Machine) -> None:
    """An anon shared by two amaps (a child copied its amap) and still in
    the old one: the undo drops the one reference the copy took."""
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.write(va, b"a" * 2 * PS)
    c1 = p.fork("c1")
    c2 = p.fork("c2")
    c2.write(va + PS, b"2")  # c2's own amap: anon 0 now in two amaps
    amap = _entries(p)[0].amap
    assert amap is not None
    anon0 = amap.slots[0]
    assert anon0.an_ref == 2 and amap.am_ref == 2
    _avail(m, 0)
    with pytest.raises(UVMError, match=r"mlock: needs 2 free pages, 0 available"):
        p.mlock(va, 2 * PS)
    m.uvm.limit = None
    assert _entries(p)[0].amap is amap and anon0.an_ref == 2
    check_invariants(m)
    c1.exit()
    c2.exit()
    p.munmap(va, 2 * PS)
    assert m.uvm.allocated == 0


def test_failed_mlock_puts_back_the_anons_the_copy_moved(m: Machine) -> None:
    """An entry that alone covers its slots of a shared amap: amap_copy
    moves its anons into the new amap; the undo moves them back."""
    p = m.spawn("p")
    va = p.mmap(3 * PS)
    p.write(va, b"a" * PS + b"b" * PS)  # the third page is not resident
    c = p.fork("c")
    c.exit()
    amap = _entries(p)[0].amap
    assert amap is not None and _entries(p)[0].needs_copy
    p.mprotect(va, PS, R)  # two entries, both needs-copy, one amap
    anon = amap.slots[1]
    _avail(m, 0)
    with pytest.raises(UVMError, match=r"mlock: needs 1 free pages, 0 available"):
        p.mlock(va + PS, 2 * PS)
    m.uvm.limit = None
    assert [e.amap for e in _entries(p)] == [amap, amap]
    assert [e.slotoff for e in _entries(p)] == [0, 1]
    assert amap.slots[1] is anon and anon.an_ref == 1
    check_invariants(m)
    assert p.read(va + PS, 1) == b"b"
    p.munmap(va, 3 * PS)
    assert m.uvm.allocated == 0


# ------------------------------------------------- mlock's reservation


def test_mlock_reserves_one_page_per_zero_fill_and_none_for_resident(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(3 * PS)
    p.write(va + PS, b"r")  # resident, private: wiring takes no page
    _avail(m, 1)
    with pytest.raises(UVMError, match=r"mlock: needs 2 free pages, 1 available"):
        p.mlock(va, 3 * PS)
    _avail(m, 2)
    p.mlock(va, 3 * PS)
    assert p.read(va + PS, 1) == b"r"
    p.munlock(va, 3 * PS)


def test_mlock_over_a_wired_entry_still_counts_the_next(m: Machine) -> None:
    """An entry already wired needs nothing (pass 2 only counts it); the
    entries after it still do."""
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.mlock(va, PS)
    _avail(m, 0)
    with pytest.raises(UVMError, match=r"mlock: needs 1 free pages, 0 available"):
        p.mlock(va, 2 * PS)
    assert _entries(p)[0].wired_count == 1 and _entries(p)[1].wired_count == 0
    m.uvm.limit = None
    p.munlock(va, 2 * PS)


def test_mlock_of_a_paged_out_anon_needs_one_page(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"s")
    (e,) = _entries(p)
    assert e.amap is not None
    anon = e.amap.slots[0]
    m.reclaim(page=anon.an_page)
    assert anon.an_page is None
    _avail(m, 1)
    p.mlock(va, PS)
    assert p.read(va, 1) == b"s"
    p.munlock(va, PS)


def test_mlock_of_a_loaned_anon_page_reserves_its_loan_break(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"l")
    kl = m.kernel_loan(p, va, PS)
    _avail(m, 0)
    with pytest.raises(UVMError, match=r"mlock: needs 1 free pages, 0 available"):
        p.mlock(va, PS)
    _avail(m, 1)
    p.mlock(va, PS)
    m.uvm.limit = None
    kl.release()
    p.munlock(va, PS)


def test_mlock_of_a_read_only_entry_takes_no_page_for_a_shared_anon(m: Machine) -> None:
    """cow_now is the entry's maximum protection: without write, wiring a
    shared anon's page copies nothing."""
    p = m.spawn("p")
    va = p.map.uvm_map(PS, None, 0, R, maxprot=R)
    p.read(va, 1)
    c = p.fork("c")
    _avail(m, 0)
    p.mlock(va, PS)
    m.uvm.limit = None
    p.munlock(va, PS)
    c.exit()


# ------------------------------------------------------------ map check


def _bad(m: Machine, *ents: tuple[int, int, int]) -> VMMap:
    mp = VMMap("bad", m.pmap.kernel, m.uvm, 0x1000, 0x100000)
    for key, start, end in ents:
        mp.entries[key] = MapEntry(start, end, 12)
    return mp


@pytest.mark.parametrize(
    ("ents", "msg"),
    [
        (((0x2000, 0x3000, 0x4000),), "bad entry order"),  # key is not the start
        (((0x2000, 0x2000, 0x2000),), "bad entry order"),  # empty
        (((0x2000, 0x2000, 0x4000), (0x3000, 0x3000, 0x5000)), "bad entry order"),  # overlap
        (((0x2000, 0x2000, 0x2800),), "unaligned"),
        (((0x2800, 0x2800, 0x3000),), "unaligned"),
    ],
)
def test_map_check_finds_bad_entries(
    m: Machine, ents: tuple[tuple[int, int, int], ...], msg: str
) -> None:
    with pytest.raises(KernelAssertion, match=rf"^bad: {msg}"):
        _bad(m, *ents).check()


def test_map_check_finds_a_missing_amap_reference(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    (e,) = _entries(p)
    assert e.amap is not None
    del e.amap.refs[e]
    with pytest.raises(KernelAssertion, match=r"^p: <MapEntry .* not among its amap's references"):
        p.map.check()
    e.amap.refs[e] = None


# ------------------------------------------------------------------ fork


def test_fork_reserves_one_page_per_shared_anon_of_a_wired_entry(m: Machine) -> None:
    """amap_cow_now copies the resident anons of the wired entry's own
    range; its neighbours sharing the amap, wired or not, take nothing."""
    p = m.spawn("p")
    va = p.mmap(4 * PS)
    p.write(va, b"w" * 4 * PS)
    p.mlock(va + PS, 2 * PS)
    _avail(m, 1)
    with pytest.raises(UVMError, match=r"fork of p: needs 2 free pages, 1 available"):
        p.fork("c")
    _avail(m, 2)
    c = p.fork("c")
    m.uvm.limit = None
    assert c.read(va, 4 * PS) == b"w" * 4 * PS
    p.munlock(va + PS, 2 * PS)


def test_fork_counts_wired_entries_after_an_unwired_one(m: Machine) -> None:
    p = m.spawn("p")
    a = p.mmap(PS)
    b = p.mmap(PS)
    p.write(a, b"a")
    p.write(b, b"b")
    p.mlock(b, PS)
    _avail(m, 0)
    with pytest.raises(UVMError, match=r"fork of p: needs 1 free pages, 0 available"):
        p.fork("c")
    m.uvm.limit = None
    p.munlock(b, PS)


def test_fork_goes_on_after_an_entry_not_inherited(m: Machine) -> None:
    p = m.spawn("p")
    a = p.mmap(PS)
    b = p.mmap(PS)
    p.write(b, b"b")
    _entries(p)[0].inheritance = MAP_INHERIT_NONE
    c = p.fork("c")
    assert [e.start for e in _entries(c)] == [b]
    assert c.read(b, 1) == b"b" and a < b


def test_fork_share_of_a_clipped_amap_shares_the_anons(m: Machine) -> None:
    """MAP_INHERIT_SHARE of an entry that has its amap (not needs-copy):
    the child refers to the same amap, so each side sees the other's
    stores, even when the amap is also referenced by a neighbour."""
    p = m.spawn("p")
    va = p.mmap(2 * PS)
    p.write(va, b"a" * 2 * PS)
    p.mprotect(va + PS, PS, R)
    e = _entries(p)[0]
    e.inheritance = MAP_INHERIT_SHARE
    c = p.fork("c")
    ce = _entries(c)[0]
    assert ce.amap is e.amap and not ce.needs_copy
    p.write(va, b"P")
    assert c.read(va, 1) == b"P"
    c.write(va, b"C")
    assert p.read(va, 1) == b"C"


def test_amap_cow_now_asserts_a_private_amap(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    (e,) = _entries(p)
    with pytest.raises(KernelAssertion, match=r"^amap_cow_now: <MapEntry .* has no private amap"):
        amap_cow_now(p.map, e)
    p.write(va, b"x")
    p.fork("c")
    assert e.needs_copy
    with pytest.raises(KernelAssertion, match=r"has no private amap"):
        amap_cow_now(p.map, e)


def test_amap_cow_now_does_not_dip_into_the_reserve(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    c = p.fork("c")
    ce = _entries(c)[0]
    c.map.amap_copy(ce)
    m.uvm.reserve = m.uvm.free_count
    with pytest.raises(UVMError, match=r"^.*c: no page to copy wired <MapEntry") as e:
        amap_cow_now(c.map, ce)
    assert e.value.errno == ENOMEM
    m.uvm.reserve = 0


def test_uvm_map_maxprot_all_is_the_default(m: Machine) -> None:
    p = m.spawn("p")
    va = p.map.uvm_map(PS, None, 0, RWX)
    assert _entries(p)[0].max_protection == VM_PROT_ALL and va
    with pytest.raises(UVMError) as e:
        p.map.uvm_map(PS, None, 0, RW, maxprot=R)
    assert e.value.errno == EACCES


# --------------------------------------------------------------- uvm_map


@pytest.mark.parametrize(
    ("size", "kw", "exc", "msg"),
    [
        (0, {}, ValueError, r"^uvm_map: size 0 must be a positive multiple of 4096$"),
        (PS + 1, {}, ValueError, r"^uvm_map: size 4097 must be a positive multiple of 4096$"),
        (PS, {"fixed": True}, ValueError, r"^uvm_map: MAP_FIXED needs an address$"),
        (PS, {"fixed": True, "addr": 0x20000001}, ValueError, r"^uvm_map: address 0x20000001 "),
        (PS, {"addr": 0x20000001}, ValueError, r"^uvm_map: address 0x20000001 "),
        (PS, {"maxprot": R}, UVMError, r"uvm_map: protection 3 exceeds maximum 1$"),
    ],
)
def test_uvm_map_checks_its_arguments(
    m: Machine, size: int, kw: dict[str, object], exc: type[Exception], msg: str
) -> None:
    p = m.spawn("p")
    with pytest.raises(exc, match=msg):
        p.map.uvm_map(size, None, 0, RW, **kw)  # type: ignore[arg-type]
    assert not p.map.entries


def test_uvm_map_fixed_replaces_an_entry_starting_inside_the_range(m: Machine) -> None:
    p = m.spawn("p")
    va = p.map.base
    p.map.uvm_map(PS, None, 0, RW, addr=va + PS, fixed=True)
    p.write(va + PS, b"old")
    assert p.map.uvm_map(2 * PS, None, 0, RW, addr=va, fixed=True) == va
    assert [(e.start, e.end) for e in _entries(p)] == [(va, va + 2 * PS)]
    assert m.uvm.allocated == 0  # the old page went with the old entry
    assert p.read(va + PS, 3) == bytes(3)


def test_uvm_map_takes_the_hint_when_it_is_free(m: Machine) -> None:
    """uvm_map_findspace starts at the hint (and keeps it if it is free)."""
    p = m.spawn("p")
    hint = p.map.base + 16 * PS
    assert p.map.uvm_map(PS, None, 0, RW, addr=hint) == hint


def test_uvm_map_skips_every_entry_in_the_way_of_the_hint(m: Machine) -> None:
    p = m.spawn("p")
    base = p.map.base
    p.map.uvm_map(PS, None, 0, RW, addr=base, fixed=True)
    p.map.uvm_map(PS, None, 0, RW, addr=base + 2 * PS, fixed=True)
    assert p.map.uvm_map(2 * PS, None, 0, RW, addr=base + PS) == base + 3 * PS
    p.map.check()


def test_uvm_map_may_end_at_the_top_and_no_further(m: Machine) -> None:
    p = m.spawn("p")
    top = p.map.maxva
    assert p.map.uvm_map(PS, None, 0, RW, addr=top - PS) == top - PS
    with pytest.raises(UVMError, match=r"p: no 0x1000-byte hole in the address space") as e:
        p.map.uvm_map(PS, None, 0, RW, addr=top - PS)
    assert e.value.errno == ENOMEM


def test_uvm_map_is_copy_on_write_by_default(m: Machine) -> None:
    """uvm_map's default is a private mapping (UVM_ET_COPYONWRITE): stores
    go to anons, the file keeps its bytes."""
    vn = m.vnode(b"f" * PS)
    p = m.spawn("p")
    va = p.map.uvm_map(PS, vn, 0, RW)
    (e,) = _entries(p)
    assert e.copy_on_write and e.needs_copy
    p.write(va, b"p")
    assert vn.read(0, 1) == b"f" and p.read(va, 1) == b"p"


def test_fork_of_a_wired_read_only_entry_copies_its_shared_anons(m: Machine) -> None:
    """A wired entry whose maximum protection has no write keeps anons
    shared with an earlier child (mlock made it an amap but no copy).
    fork's amap_cow_now gives the new child copies; each old anon loses
    only the new child's reference (an_ref 3 -> 2: the parent's amap and
    the first child's)."""
    p = m.spawn("p")
    va = p.map.uvm_map(2 * PS, None, 0, R, maxprot=R)
    p.read(va, 1)
    p.read(va + PS, 1)
    c1 = p.fork("c1")
    p.mlock(va, 2 * PS)
    amap = _entries(p)[0].amap
    assert amap is not None
    anons = [amap.slots[0], amap.slots[1]]
    assert [a.an_ref for a in anons] == [2, 2]
    c2 = p.fork("c2")
    assert [a.an_ref for a in anons] == [2, 2]
    camap = _entries(c2)[0].amap
    assert camap is not None
    assert all(camap.slots[s] is not anons[s] for s in (0, 1))
    assert [camap.slots[s].an_ref for s in (0, 1)] == [1, 1]
    c2.exit()
    c1.exit()
    p.munlock(va, 2 * PS)


def test_fork_skips_a_loaned_anon_of_a_wired_entry(m: Machine) -> None:
    """amap_cow_now leaves a loaned page shared (it is mapped read-only
    anyway) and copies the next; fork reserves nothing for the loaned one."""
    p = m.spawn("p")
    va = p.map.uvm_map(2 * PS, None, 0, R, maxprot=R)
    p.read(va, 1)
    p.read(va + PS, 1)
    c1 = p.fork("c1")
    kl = m.kernel_loan(p, va, PS)  # a wired page cannot be lent: lend first
    p.mlock(va, 2 * PS)
    amap = _entries(p)[0].amap
    assert amap is not None
    anons = [amap.slots[0], amap.slots[1]]
    _avail(m, 0)
    with pytest.raises(UVMError, match=r"fork of p: needs 1 free pages, 0 available"):
        p.fork("c2")
    m.uvm.limit = None
    c2 = p.fork("c2")
    camap = _entries(c2)[0].amap
    assert camap is not None
    assert camap.slots[0] is anons[0] and camap.slots[1] is not anons[1]
    kl.release()
    c2.exit()
    c1.exit()
    p.munlock(va, 2 * PS)


def test_mlock_of_an_unadopted_o_to_a_page_takes_no_page(m: Machine) -> None:
    """An anon holding a disowned O->A page (built by hand, as in
    tests/test_loan_adoption.py: NetBSD 10 compiles O->A loans out): the
    page's loan count includes the anon's own loan, so the wiring fault
    only adopts it (uvm_anon_lockloanpg) and needs no page; a further
    kernel loan would need one, for the break."""
    vn = m.vnode(b"o" * PS)
    vn.write(0, b"d" * PS)  # dirty (a clean one trips uvm_fault_upper_enter's KASSERT)
    pg = vn.pgo_get(0)
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"x")
    (e,) = _entries(p)
    assert e.amap is not None
    old = e.amap.slots[0]
    anon = Anon()
    anon.an_page = pg
    pg.uanon = anon
    pg.loan_count += 1
    e.amap.add(0, anon, replace=True)
    anon_unref(m.uvm, old)
    vn.truncate(0)  # the object lets go: the page is the anon's, unadopted
    assert pg.uobject is None and not pg.flags & PG.ANON and pg.loan_count == 1
    _avail(m, 0)
    p.mlock(va, PS)
    m.uvm.limit = None
    assert p.read(va, 1) == b"d" and anon.an_page is pg and pg.flags & PG.ANON
    p.munlock(va, PS)
