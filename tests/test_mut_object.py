"""uvm_object, the vnode pager and UBC (``uvmloan/object.py``): the rules the
mutation run of the module found unchecked (TESTING.md, "Python: the kernel
modules").  The rules and their NetBSD sources are in specs/map.md section 7.
"""

from __future__ import annotations

import pytest
from helpers import PS, RW, machine_fixture

from uvmloan import MAP_SHARED, KernelAssertion, Machine, MachineClosed, UVMError
from uvmloan.object import (
    PGO_ALLPAGES,
    PGO_CLEANIT,
    PGO_DEACTIVATE,
    PGO_FREE,
)
from uvmloan.page import PQ, UVM_PAGE_STATUS_CLEAN, UVM_PAGE_STATUS_UNKNOWN
from uvmloan.param import ENOMEM

m = machine_fixture(ncpus=2, memory="1M", check=True)


def _starve(m: Machine) -> None:
    """No page can be allocated any more (the tests' memory shortage)."""
    m.uvm.limit = m.uvm.allocated


# ----------------------------------------------------------- names, repr


def test_default_names_are_the_lowercase_kind_and_distinct(m: Machine) -> None:
    a, b = m.vnode(), m.vnode()
    ao = m.aobj()
    assert a.name.startswith("vnodeobject") and b.name.startswith("vnodeobject")
    assert ao.name.startswith("anonobject")
    assert len({a.name, b.name, ao.name}) == 3
    assert m.vnode(name="etc/passwd").name == "etc/passwd"


def test_repr_names_the_kind_the_pages_and_the_references(m: Machine) -> None:
    vn = m.vnode(b"x" * PS, name="f")
    vn.pgo_get(0)
    assert repr(vn) == "<VnodeObject f 1 resident refs=1>"
    assert repr(m.aobj(name="a")) == "<AnonObject a 0 resident refs=1>"


# ---------------------------------------------------- page insert/remove


def test_page_insert_and_remove_assertions_name_the_object(m: Machine) -> None:
    vn = m.vnode(b"x" * PS, name="f")
    pg = vn.pgo_get(0)
    with pytest.raises(KernelAssertion, match=r"uvm_pageinsert: f already has a page at 0x0"):
        vn._page_insert(pg)
    other = m.vnode(name="g")
    with pytest.raises(KernelAssertion, match=r"uvm_pageremove: .* is not g's page"):
        other._page_remove(pg)
    assert vn.uvm_pagelookup(0) is pg


def test_detach_without_references_asserts(m: Machine) -> None:
    ao = m.aobj(name="a")
    ao.detach()
    with pytest.raises(KernelAssertion, match=r"^a: detach with no references"):
        ao.detach()


# ---------------------------------------------------------------- pgo_get


@pytest.mark.parametrize("off", [1, PS + 8, -PS])
def test_pgo_get_refuses_unaligned_and_negative_offsets(m: Machine, off: int) -> None:
    vn = m.vnode(b"x" * 2 * PS)
    with pytest.raises(ValueError, match=r"^pgo_get: offset .* is not a page-aligned offset"):
        vn.pgo_get(off)
    assert not vn.uo_pages and m.uvm.allocated == 0


def test_pgo_get_does_not_dip_into_the_reserve(m: Machine) -> None:
    """uvm_pagealloc without UVM_PGA_USERESERVE (genfs_getpages, uao_get):
    the reserve is the pagedaemon's and the kernel's, not a pager's."""
    vn = m.vnode(b"x" * PS, name="f")
    m.uvm.reserve = m.uvm.free_count
    with pytest.raises(UVMError, match=r"^.*f: no free page for offset 0x0") as e:
        vn.pgo_get(0)
    assert e.value.errno == ENOMEM and not vn.uo_pages


# ---------------------------------------------------------------- pgo_put


def test_pgo_put_frees_only_the_range_end_exclusive(m: Machine) -> None:
    vn = m.vnode(b"x" * 3 * PS)
    pages = [vn.pgo_get(off) for off in (0, PS, 2 * PS)]
    assert vn.pgo_put(PS, 2 * PS, PGO_FREE) == 1
    assert vn.uvm_pagelookup(0) is pages[0] and vn.uvm_pagelookup(2 * PS) is pages[2]
    assert vn.uvm_pagelookup(PS) is None


def test_pgo_put_free_takes_clean_pages_too(m: Machine) -> None:
    """Only cleaning without FREE/DEACTIVATE is limited to possibly-dirty
    pages (genfs_do_putpages' dirtyonly); freeing visits every page."""
    vn = m.vnode(b"x" * 2 * PS)
    for off in (0, PS):
        vn.pgo_get(off)  # read from the backing store: CLEAN
    assert vn.pgo_put(0, 0, PGO_ALLPAGES | PGO_FREE) == 2
    assert not vn.uo_pages and m.uvm.allocated == 0


def test_fsync_skips_clean_pages_and_cleans_the_later_dirty_ones(m: Machine) -> None:
    """genfs_do_putpages with PGO_CLEANIT only looks at the pages tagged
    dirty: a clean wired page at a lower offset is not met, so it neither
    stops the walk nor stops the write-protection (cleanall) of the dirty
    page after it, which comes out CLEAN and written back."""
    vn = m.vnode(b"." * 2 * PS)
    clean = vn.pgo_get(0)
    m.uvm.uvm_pagewire(clean)
    vn.write(PS, b"new")
    dirty = vn.uvm_pagelookup(PS)
    assert dirty is not None
    vn.fsync()
    assert bytes(vn.backing[PS : PS + 3]) == b"new"
    assert m.uvm.uvm_pagegetdirty(dirty) == UVM_PAGE_STATUS_CLEAN
    assert m.uvm.uvm_pagegetdirty(clean) == UVM_PAGE_STATUS_CLEAN
    m.uvm.uvm_pageunwire(clean)


def test_fsync_after_a_wired_page_write_protects_no_more(m: Machine) -> None:
    """A wired page cannot be write-protected (it must not fault): it is
    cleaned to UNKNOWN, and once one was met (cleanall false) the later
    dirty pages are not write-protected either; every one is written back
    (genfs_io.c 1.100; specs/map.md 7)."""
    vn = m.vnode(b"." * 3 * PS)
    p = m.spawn("p")
    va = p.mmap(3 * PS, RW, flags=MAP_SHARED, obj=vn)
    p.write(va, b"AA")
    p.mlock(va, PS)
    p.write(va + PS, b"BB")
    p.write(va + 2 * PS, b"CC")
    pages = [vn.uvm_pagelookup(off) for off in (0, PS, 2 * PS)]
    vn.fsync()
    assert bytes(vn.backing[0:2]) + bytes(vn.backing[PS : PS + 2]) == b"AABB"
    assert bytes(vn.backing[2 * PS : 2 * PS + 2]) == b"CC"
    for pg in pages:
        assert pg is not None and m.uvm.uvm_pagegetdirty(pg) == UVM_PAGE_STATUS_UNKNOWN
    # The wired page kept its writable mapping: a store does not fault.
    faults = m.counters["fault"]
    p.write(va, b"aa")
    assert m.counters["fault"] == faults
    vn.fsync()
    assert bytes(vn.backing[0:2]) == b"aa"
    p.munlock(va, PS)


def test_pgo_put_cleanit_alone_leaves_the_paging_queues_alone(m: Machine) -> None:
    vn = m.vnode(b"." * PS)
    vn.write(0, b"x")
    pg = vn.uvm_pagelookup(0)
    assert pg is not None and pg.pqueue == PQ.ACTIVE
    vn.fsync()
    assert pg.pqueue == PQ.ACTIVE


def test_pgo_put_deactivate_moves_pages_to_the_inactive_queue(m: Machine) -> None:
    vn = m.vnode(b"." * 2 * PS)
    pages = [vn.pgo_get(0), vn.pgo_get(PS)]
    vn.write(0, b"x")
    assert vn.pgo_put(0, 0, PGO_ALLPAGES | PGO_CLEANIT | PGO_DEACTIVATE) == 0
    assert [pg.pqueue for pg in pages] == [PQ.INACTIVE, PQ.INACTIVE]
    assert bytes(vn.backing[:1]) == b"x"


def test_pagedaemon_orphan_of_a_dirty_file_page_is_clean(m: Machine) -> None:
    """The pagedaemon cleans and frees a file page (PGO_CLEANIT|PGO_FREE):
    it was write-protected (pmap_page_protect(NONE)) so uvm_pagecheckdirty
    leaves it CLEAN; a loaned page lives on as an orphan with that status
    and the data went to the backing store."""
    vn = m.vnode(b"." * PS)
    vn.write(0, b"dirty")
    kl = m.kernel_loan_file(vn, 0, PS)
    pg = kl.pages[0]
    assert m.reclaim(page=pg) == 1
    assert pg.uobject is None and pg.loan_count
    assert m.uvm.uvm_pagegetdirty(pg) == UVM_PAGE_STATUS_CLEAN
    assert bytes(vn.backing[:5]) == b"dirty"
    kl.release()


# -------------------------------------------------- vnode pager and UBC


def test_writeback_of_a_one_byte_last_page(m: Machine) -> None:
    vn = m.vnode(b"." * (PS + 1))
    vn.write(PS, b"!")
    vn.fsync()
    assert bytes(vn.backing) == b"." * PS + b"!"


def test_zero_length_read_and_write(m: Machine) -> None:
    """read(2)/write(2) of zero bytes succeed and transfer nothing (POSIX)."""
    vn = m.vnode(b"abc")
    assert vn.write(1, b"") == 0
    assert vn.read(1, 0) == b""
    assert vn.read(3, 10) == b""  # at end of file
    assert vn.size == 3 and m.uvm.allocated == 0


def test_write_to_an_empty_file_grows_it(m: Machine) -> None:
    vn = m.vnode()
    assert vn.write(0, b"hello") == 5
    assert vn.size == 5 and vn.contents() == b"hello"


def test_read_stops_at_end_of_file_from_a_resident_page(m: Machine) -> None:
    vn = m.vnode(b"a" * PS)
    vn.pgo_get(0)
    assert vn.read(PS - 2, 10) == b"aa"


def test_read_across_pages_not_resident(m: Machine) -> None:
    data = b"a" * PS + b"b" * PS + b"c" * 10
    vn = m.vnode(data)
    assert vn.read(PS - 1, PS + 3) == b"a" + b"b" * PS + b"cc"
    assert vn.contents() == data and m.uvm.allocated == 0


def test_write_refuses_text_naming_its_type(m: Machine) -> None:
    vn = m.vnode()
    with pytest.raises(TypeError, match=r"^write: data must be bytes-like, not str$"):
        vn.write(0, "text")  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["write", "read", "fsync", "truncate"])
def test_io_on_a_closed_machine_names_the_call(call: str) -> None:
    mach = Machine(memory="1M")
    vn = mach.vnode(b"abc")
    mach.close()
    args = {"write": (0, b"x"), "read": (0, 1), "fsync": (), "truncate": (1,)}[call]
    with pytest.raises(MachineClosed, match=rf"^{call}: the machine is closed"):
        getattr(vn, call)(*args)


def test_write_enomem_names_the_write_and_changes_nothing(m: Machine) -> None:
    vn = m.vnode(b"." * 2 * PS, name="f")
    vn.pgo_get(0)
    _starve(m)
    with pytest.raises(UVMError, match=r"^.*write to f: needs 1 free pages, 0 available"):
        vn.write(PS - 1, b"xy")
    assert vn.read(PS - 1, 2) == b".." and len(vn.uo_pages) == 1


def test_ubc_loanbreak_without_a_page_is_enomem(m: Machine) -> None:
    """The loan break of ubc_fault_page needs a page; callers reserve it,
    and without one it is ENOMEM naming the object and the offset."""
    vn = m.vnode(b"." * 2 * PS, name="f")
    kl = m.kernel_loan_file(vn, PS, PS)
    _starve(m)
    with pytest.raises(UVMError, match=r"f: no page to break the loan at 0x1000") as e:
        vn._ubc_loanbreak(kl.pages[0])
    assert e.value.errno == ENOMEM
    m.uvm.limit = None
    kl.release()


# --------------------------------------------------------------- truncate


def test_truncate_to_the_same_size_keeps_the_tail_beyond_eof(m: Machine) -> None:
    """ffs_truncate zeroes the tail of the last page only when the file
    shrinks (``osize > length``); bytes a mapping stored past EOF in the
    last page stay."""
    vn = m.vnode(b"." * (PS + 10))
    p = m.spawn("p")
    va = p.mmap(2 * PS, RW, flags=MAP_SHARED, obj=vn)
    p.write(va + PS + 10, b"tail")
    vn.truncate(PS + 10)
    assert vn.size == PS + 10
    assert p.read(va + PS + 10, 4) == b"tail"


def test_truncate_grows_to_the_size_asked(m: Machine) -> None:
    vn = m.vnode(b"abc")
    vn.truncate(PS + 5)
    assert vn.size == PS + 5 and vn.contents() == b"abc" + bytes(PS + 2)


def test_truncate_keeps_the_dirty_last_page(m: Machine) -> None:
    vn = m.vnode(b"." * 11 * PS)
    vn.write(10 * PS, b"12345678")
    vn.truncate(10 * PS + 5)
    assert vn.read(10 * PS, 10) == b"12345"
    assert vn.uvm_pagelookup(10 * PS) is not None


def test_truncate_frees_the_pages_past_a_page_more_than_half_full(m: Machine) -> None:
    vn = m.vnode(b"." * 3 * PS)
    for off in (0, PS, 2 * PS):
        vn.pgo_get(off)
    vn.truncate(PS + 3000)
    assert vn.uvm_pagelookup(2 * PS) is None and vn.uvm_pagelookup(PS) is not None
    assert vn.read(PS + 2999, 10) == b"."


def test_truncate_needs_no_page_for_a_tail_not_resident(m: Machine) -> None:
    """The tail is zeroed in the page only if it is resident (ubc_zerorange
    of a page not in memory is done on the backing store); no page is
    brought in, so a shortage does not stop it."""
    vn = m.vnode(b"." * 3 * PS)
    vn.pgo_get(2 * PS)
    _starve(m)
    vn.truncate(PS + 10)
    assert vn.size == PS + 10 and vn.uvm_pagelookup(PS) is None
    assert vn.uvm_pagelookup(2 * PS) is None


def test_truncate_reserves_only_for_its_own_tail_page(m: Machine) -> None:
    """Only a loaned tail page needs a page (its loan break); loans of other
    pages, kept or freed, need none."""
    vn = m.vnode(b"." * 3 * PS)
    kl0 = m.kernel_loan_file(vn, 0, PS)
    kl2 = m.kernel_loan_file(vn, 2 * PS, PS)
    vn.pgo_get(PS)
    _starve(m)
    vn.truncate(PS + PS // 2 + 8)
    assert vn.size == PS + PS // 2 + 8
    assert vn.read(PS, 8) == b"." * 8
    m.uvm.limit = None
    kl0.release()
    kl2.release()


def test_truncate_enomem_names_the_truncate(m: Machine) -> None:
    vn = m.vnode(b"." * 2 * PS, name="f")
    kl = m.kernel_loan_file(vn, PS, PS)
    _starve(m)
    with pytest.raises(UVMError, match=r"^.*truncate of f: needs 1 free pages, 0 available"):
        vn.truncate(PS + 10)
    assert vn.size == 2 * PS
    m.uvm.limit = None
    kl.release()
