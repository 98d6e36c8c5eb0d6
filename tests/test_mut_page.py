"""vm_page and the page allocator (``uvmloan/page.py``): the rules the
mutation run of the module found unchecked (TESTING.md, "Python: the kernel
modules").

``uvm_pagefree`` and its loan branch (uvm_page.c 1.246; digest T5): an
object page leaves its object, an anon page its anon, an unadopted O->A page
drops the anon's loan; loans left make an orphan, none frees the page.
``uvm_pagereplace``; the liveness checks every queue operation makes; the
dirtiness status of uvm_page_status.c 1.6 (``uvm_pagemarkdirty`` clears the
pmap's modified bit only for UNKNOWN, ``uvm_pagecheckdirty`` only when
either status is UNKNOWN); ``uvm_pagereadonly_p``.
"""

from __future__ import annotations

import pytest
from helpers import PS, events, machine_fixture, zeroed_page

from uvmloan import Machine, check_invariants, uvm_loanuobjpages, uvm_unloan
from uvmloan.anon import Anon
from uvmloan.errors import KernelAssertion
from uvmloan.page import (
    PQ,
    UVM_PAGE_STATUS_CLEAN,
    UVM_PAGE_STATUS_DIRTY,
    UVM_PAGE_STATUS_UNKNOWN,
    Page,
    PageAllocator,
    _keys_of,
)
from uvmloan.param import PG, UVM_LOAN_TOPAGE, UVM_PGA_USERESERVE, UVM_PGA_ZERO, VM_PROT_READ
from uvmloan.process import Process
from uvmloan.testing.loan_ops import page_at, page_role
from uvmloan.trace import Orphan, PageAlloc, PageFree

m = machine_fixture(ncpus=2, memory="1M", trace="record")


def _one(pg: Page | None) -> Page:
    assert pg is not None
    return pg


def _file_page(m: Machine, name: str = "f", off: int = 0) -> Page:
    vn = m.vnode(b"v" * (off + PS), name=name)
    return vn.pgo_get(off)


def _o2a(m: Machine) -> tuple[Page, Anon]:
    """An object page an anon holds with one loan (the digest's OBJ+A; the
    state 1.104's #ifdef notdef O->A code would make, built by hand)."""
    pg = _file_page(m)
    anon = Anon()
    pg.loan_count += 1
    pg.uanon = anon
    anon.an_page = pg
    return pg, anon


def _anon_mapping(m: Machine) -> tuple[Process, int, Page]:
    """A process's anon page, written through its mapping (DIRTY, and the
    pmap says modified)."""
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"w")
    return p, va, _one(page_at(p, va))


def _anon_page(m: Machine) -> Page:
    return _anon_mapping(m)[2]


# ------------------------------------------------------ counting-only keys


def test_counting_mode_keys_are_the_events_own() -> None:
    """The counting-only trace mode counts what the events would (specs/trace.md:
    ``page alloc``, ``page free``); the prototype's fields do not matter."""
    assert _keys_of(PageAlloc, 0, "-") == ("page alloc",)
    assert _keys_of(PageFree, 0) == ("page free",)


# ----------------------------------------------------------------- repr


def test_repr_names_the_owners(m: Machine) -> None:
    loose = zeroed_page(m)
    assert " - q=none" in repr(loose)
    pg, anon = _o2a(m)
    assert f"obj=f@0x0 anon={anon.name} q=" in repr(pg)
    apg = _anon_page(m)
    assert apg.uanon is not None
    assert f"wire=0 - anon={apg.uanon.name} q=active" in repr(apg)


# ------------------------------------------------------------ uvm_pagefree


def test_pagefree_of_a_free_or_foreign_page_asserts(m: Machine) -> None:
    pg = _file_page(m)
    m.uvm.uvm_pagefree(pg)
    with pytest.raises(
        KernelAssertion, match=rf"^uvm_pagefree: page of frame {pg.frame} is already free$"
    ):
        m.uvm.uvm_pagefree(pg)
    with pytest.raises(TypeError, match=r"^uvm_pagefree: expected a Page, not int$"):
        m.uvm.uvm_pagefree(3)  # type: ignore[arg-type]
    # A vm_page that is not the one allocated for its frame (not PG_FREE
    # either): the stale-reference check is by identity.
    live = _file_page(m, "g")
    impostor = Page(live.frame, m.uvm)
    with pytest.raises(KernelAssertion, match=r"already free"):
        m.uvm.uvm_pagefree(impostor)
    assert m.uvm.pages.get(live.frame) is live


def test_pagefree_unwires_and_leaves_a_page_with_no_owner(m: Machine) -> None:
    """``if the page was wired, unwire it now``; the freed vm_page keeps no
    object, anon or queue (PQ FREE)."""
    pg = _file_page(m)
    m.uvm.uvm_pagewire(pg)
    m.uvm.uvm_pagewire(pg)
    m.uvm.uvm_pagefree(pg)
    assert pg.wire_count == 0 and pg.uobject is None and pg.uanon is None
    assert pg.flags == PG.FREE and pg.pqueue is PQ.FREE
    apg = _anon_page(m)
    anon = apg.uanon
    m.pmap.pmap_page_protect(apg, 0)
    m.uvm.uvm_pagefree(apg)
    assert apg.uanon is None and anon.an_page is None


def test_pagefree_of_a_mapped_page_asserts(m: Machine) -> None:
    apg = _anon_page(m)
    with pytest.raises(
        KernelAssertion, match=r"^uvm_pagefree: <Page .*> still has 1 managed mappings$"
    ):
        m.uvm.uvm_pagefree(apg)


def test_page_free_event_has_no_space(m: Machine) -> None:
    pg = _file_page(m)
    m.uvm.uvm_pagefree(pg)
    (ev,) = [e for e in events(m, PageFree) if e.frame == pg.frame]
    assert ev.space == "-" and ev.cpu == 0


# --------------------------------------------------- the loan branch (T5)


def test_loan_branch_object_page_orphan(m: Machine) -> None:
    pg = _file_page(m, "f", PS)
    klist = uvm_loanuobjpages(pg.uobject, PS, 1)
    pg.flags |= PG.BUSY | PG.RELEASED | PG.PAGER1
    m.uvm.uvm_pagefree(pg)
    assert page_role(pg) == "ORPHAN" and pg.loan_count == 1
    # Every one of PG_BUSY|PG_RELEASED|PG_PAGER1 goes (uvm_page.c 1.246).
    assert not pg.flags & (PG.BUSY | PG.RELEASED | PG.PAGER1)
    assert not pg.flags & (PG.FILE | PG.AOBJ)
    (ev,) = events(m, Orphan)
    assert (ev.frame, ev.loan_count, ev.why, ev.space) == (
        pg.frame,
        1,
        "object f freed offset 0x1000",
        "-",
    )
    uvm_unloan(klist, UVM_LOAN_TOPAGE)
    check_invariants(m)


def test_loan_branch_anon_page_orphan(m: Machine) -> None:
    p = m.spawn("p")
    va = p.mmap(PS)
    p.write(va, b"a")
    kl = m.kernel_loan(p, va, 1)
    pg = kl.pages[0]
    anon = pg.uanon
    assert anon is not None and pg.flags & PG.ANON
    m.pmap.pmap_page_protect(pg, 0)
    m.uvm.uvm_pagefree(pg)
    assert pg.uanon is None and anon.an_page is None and not pg.flags & PG.ANON
    assert page_role(pg) == "ORPHAN" and pg.pqueue is PQ.NONE
    (ev,) = events(m, Orphan)
    assert ev.why == f"anon {anon.name} freed" and ev.loan_count == 1
    kl.release()


def test_loan_branch_unadopted_page_drops_the_anons_loan(m: Machine) -> None:
    """An O->A page freed by its object stays the anon's (ANON-UNADOPTED,
    still queued); freed again as the anon's, it drops that anon's loan
    only, and with a kernel loan left it is an orphan ("owner freed")."""
    pg, anon = _o2a(m)
    klist = uvm_loanuobjpages(pg.uobject, 0, 1)
    assert pg.loan_count == 2
    m.uvm.uvm_pagefree(pg)
    assert page_role(pg) == "ANON-UNADOPTED" and pg.loan_count == 2
    m.uvm.uvm_pagefree(pg)
    assert page_role(pg) == "ORPHAN" and pg.loan_count == 1
    assert pg.uanon is None and anon.an_page is None
    assert [e.why for e in events(m, Orphan)] == ["object f freed offset 0x0", "owner freed"]
    uvm_unloan(klist, UVM_LOAN_TOPAGE)
    assert pg.flags & PG.FREE
    check_invariants(m)


def test_loan_branch_frees_when_the_anons_loan_was_the_last(m: Machine) -> None:
    pg, anon = _o2a(m)
    m.uvm.uvm_pagefree(pg)  # the object lets go: the anon's loan remains
    assert page_role(pg) == "ANON-UNADOPTED" and pg.loan_count == 1
    frame = pg.frame
    m.uvm.uvm_pagefree(pg)
    assert pg.flags == PG.FREE and pg.loan_count == 0 and m.uvm.pages.get(frame) is None
    assert anon.an_page is None and pg.uanon is None
    assert [e.frame for e in events(m, PageFree)] == [frame]


# --------------------------------------------------------- uvm_pagereplace


def test_pagereplace_refuses_what_is_not_an_object_page_to_a_loose_one(m: Machine) -> None:
    old = _file_page(m)
    owned = _file_page(m, "g")
    apg = _anon_page(m)
    loose = zeroed_page(m)
    for a, b in ((loose, zeroed_page(m)), (old, owned), (old, apg)):
        with pytest.raises(KernelAssertion, match=r"^uvm_pagereplace: <Page .*> -> <Page .*>$"):
            m.uvm.uvm_pagereplace(a, b)
    assert old.uobject.uvm_pagelookup(0) is old and owned.uobject.uvm_pagelookup(0) is owned


# ------------------------------------------------------ queue operations


def test_queue_operations_name_themselves_for_a_free_page(m: Machine) -> None:
    pg = _file_page(m)
    m.uvm.uvm_pagefree(pg)
    for op in ("uvm_pageactivate", "uvm_pagedeactivate", "uvm_pagewire", "uvm_pageunwire"):
        with pytest.raises(
            KernelAssertion, match=rf"^{op}: page of frame {pg.frame} is already free$"
        ):
            getattr(m.uvm, op)(pg)
    with pytest.raises(TypeError, match=r"^uvm_pageactivate: expected a Page, not int$"):
        m.uvm.uvm_pageactivate(7)  # type: ignore[arg-type]
    live = _file_page(m, "g")
    with pytest.raises(KernelAssertion, match=r"^uvm_pageactivate: .* already free$"):
        m.uvm.uvm_pageactivate(Page(live.frame, m.uvm))
    assert live.pqueue is PQ.ACTIVE and live.flags & PG.FREE == 0


def test_unwire_of_an_unwired_page_asserts(m: Machine) -> None:
    pg = _file_page(m)
    with pytest.raises(KernelAssertion, match=r"^uvm_pageunwire: <Page .*> is not wired$"):
        m.uvm.uvm_pageunwire(pg)
    assert pg.wire_count == 0


# ---------------------------------------------------------- dirtiness


def test_a_page_both_clean_and_dirty_asserts(m: Machine) -> None:
    pg = _file_page(m)  # PG_TABLED|PG_FILE besides the status bits
    pg.flags |= PG.CLEAN | PG.DIRTY
    with pytest.raises(
        KernelAssertion, match=r"^uvm_pagegetdirty: <Page .*> is both CLEAN and DIRTY$"
    ):
        m.uvm.uvm_pagegetdirty(pg)
    with pytest.raises(KernelAssertion, match=r"^uvm_pagegetdirty: .* both CLEAN and DIRTY$"):
        m.uvm.uvm_pagereadonly_p(pg)
    with pytest.raises(KernelAssertion, match=r"^uvm_pagemarkdirty: bad status 0x3$"):
        m.uvm.uvm_pagemarkdirty(pg, PG.CLEAN | PG.DIRTY)


def test_readonly_p(m: Machine) -> None:
    """PG_RDONLY or CLEAN: mapped read-only; DIRTY and UNKNOWN: writable."""
    pg = _file_page(m)
    assert m.uvm.uvm_pagegetdirty(pg) == UVM_PAGE_STATUS_CLEAN
    assert m.uvm.uvm_pagereadonly_p(pg)
    m.uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_DIRTY)
    assert not m.uvm.uvm_pagereadonly_p(pg)
    pg.flags |= PG.RDONLY
    assert m.uvm.uvm_pagereadonly_p(pg)
    pg.flags &= ~PG.RDONLY
    m.uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_UNKNOWN)
    assert not m.uvm.uvm_pagereadonly_p(pg)


def test_markdirty_clears_the_modified_bit_only_for_unknown(m: Machine) -> None:
    """uvm_pagemarkdirty: going UNKNOWN starts relying on the pmap, so the
    pmap's modified bit is cleared; going DIRTY or CLEAN leaves it."""
    proc, va, pg = _anon_mapping(m)
    uvm, pmap = m.uvm, m.pmap
    assert uvm.uvm_pagegetdirty(pg) == UVM_PAGE_STATUS_DIRTY and pmap.pmap_is_modified(pg)
    uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_UNKNOWN)
    assert not pmap.pmap_is_modified(pg)
    proc.write(va, b"again")  # through the writable mapping: no fault
    assert uvm.uvm_pagegetdirty(pg) == UVM_PAGE_STATUS_UNKNOWN and pmap.pmap_is_modified(pg)
    uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_DIRTY)
    assert pmap.pmap_is_modified(pg)
    uvm.uvm_pagemarkdirty(pg, UVM_PAGE_STATUS_CLEAN)
    assert pmap.pmap_is_modified(pg)


def test_checkdirty_transitions(m: Machine) -> None:
    """uvm_pagecheckdirty (uvm_page_status.c 1.6): CLEAN stays CLEAN, not
    modified; DIRTY is modified and goes CLEAN (write-protected) or UNKNOWN;
    pmap_clear_modify only when either status is UNKNOWN."""
    uvm, pmap = m.uvm, m.pmap
    clean = _file_page(m)
    assert uvm.uvm_pagecheckdirty(clean, False) is False
    assert uvm.uvm_pagegetdirty(clean) == UVM_PAGE_STATUS_CLEAN

    a = _anon_page(m)
    pmap.pmap_page_protect(a, VM_PROT_READ)
    assert uvm.uvm_pagecheckdirty(a, True) is True
    assert uvm.uvm_pagegetdirty(a) == UVM_PAGE_STATUS_CLEAN
    assert pmap.pmap_is_modified(a)  # DIRTY -> CLEAN: no pmap_clear_modify

    b = _anon_page(m)
    assert uvm.uvm_pagecheckdirty(b, False) is True
    assert uvm.uvm_pagegetdirty(b) == UVM_PAGE_STATUS_UNKNOWN
    assert not pmap.pmap_is_modified(b)
    assert uvm.uvm_pagecheckdirty(b, False) is False  # UNKNOWN, not modified since


# ------------------------------------------------------------ uvm_pagealloc


def test_fresh_pages_are_busy_clean_fake(m: Machine) -> None:
    """uvm_pagealloc_strat: PG_BUSY|PG_CLEAN|PG_FAKE (PG_ANON for an anon's,
    PG_TABLED and the object's kind for an object's); only UVM_PGA_ZERO
    makes an owned page DIRTY ("a zero'd page is not clean")."""
    fresh = PG.BUSY | PG.CLEAN | PG.FAKE
    vn = m.vnode(name="f")
    opg = _one(m.uvm.uvm_pagealloc(vn, PS, None))
    assert opg.flags == fresh | PG.TABLED | PG.FILE and vn.uvm_pagelookup(PS) is opg
    anon = Anon()
    apg = _one(m.uvm.uvm_pagealloc(None, 0, anon))
    assert apg.flags == fresh | PG.ANON and anon.an_page is apg
    loose = _one(m.uvm.uvm_pagealloc(None, 0, None))
    assert loose.flags == fresh
    zanon = Anon()
    zpg = _one(m.uvm.uvm_pagealloc(None, 0, zanon, UVM_PGA_ZERO))
    assert zpg.flags == PG.BUSY | PG.FAKE | PG.DIRTY | PG.ANON


def test_pagealloc_leaves_the_reserve_unless_asked(m: Machine) -> None:
    m.uvm.reserve = m.uvm.free_count
    assert m.uvm.uvm_pagealloc(None, 0, None) is None
    assert m.uvm.uvm_pagealloc(None, 0, None, UVM_PGA_USERESERVE) is not None


def test_pagealloc_with_an_object_and_an_anon_asserts(m: Machine) -> None:
    vn = m.vnode(name="f")
    with pytest.raises(KernelAssertion, match=r"^uvm_pagealloc: both an object and an anon given$"):
        m.uvm.uvm_pagealloc(vn, 0, Anon())
    assert m.uvm.allocated == 0


def test_page_alloc_events_name_the_owner(m: Machine) -> None:
    vn = m.vnode(name="f")
    anon = Anon()
    pages = [
        _one(m.uvm.uvm_pagealloc(vn, 2 * PS, None)),
        _one(m.uvm.uvm_pagealloc(None, 0, anon)),
        _one(m.uvm.uvm_pagealloc(None, 0, None)),
    ]
    evs = events(m, PageAlloc)
    assert [(e.frame, e.owner, e.space) for e in evs] == [
        (pages[0].frame, "f@0x2000", "-"),
        (pages[1].frame, f"anon {anon.name}", "-"),
        (pages[2].frame, "-", "-"),
    ]


def test_frames_past_the_first_chunk_are_found() -> None:
    """The frame table is made a chunk of 512 frames at a time: a page of
    the second chunk is PHYS_TO_VM_PAGE's; frames outside the machine, and
    what is not a frame number, have no vm_page."""
    with Machine(memory="2M") as mach:  # 512 frames: exactly one chunk
        uvm = mach.uvm
        assert uvm.npages == 512
        pages = [_one(uvm.uvm_pagealloc(None, 0, None)) for _ in range(2)]
        assert uvm.phys_to_page(1) is pages[1]
        assert uvm.phys_to_page(512) is None and uvm.phys_to_page(-1) is None
        assert uvm.phys_to_page(True) is None
        assert uvm.phys_to_page(1.0) is None  # type: ignore[arg-type]
    with Machine(memory="4M") as mach:
        uvm = mach.uvm
        pages = [_one(uvm.uvm_pagealloc(None, 0, None)) for _ in range(514)]
        assert [pg.frame for pg in pages[-2:]] == [512, 513]
        assert uvm.phys_to_page(512) is pages[512] and uvm.phys_to_page(513) is pages[513]


def test_free_stack_holds_every_frame_of_a_large_machine(m: Machine) -> None:
    """Freed frames are kept as C ints: 32-bit ones up to 2**31 - 1 frames,
    64-bit ones past that (a frame number must fit)."""
    big = PageAllocator(m.platform, 2**31 + 1, PS)
    big._recycled.append(2**31)
    assert big._recycled.pop() == 2**31
