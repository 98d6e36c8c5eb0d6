"""Kernel borrowers (``uvmloan/borrow.py``): the rules the mutation run of the
module found unchecked (TESTING.md, "Python: the kernel modules").

``sosend_loan`` (uipc_socket.c) and ``nfsrv_read`` (nfs_serv.c) reserve
kernel VA first (``sokvaalloc`` -> ``uvm_km_alloc(kernel_map, ...,
UVM_KMF_VAONLY)``), lend with ``uvm_loan(..., UVM_LOAN_TOPAGE)`` or
``uvm_loanuobjpages``, map each page read-only with ``pmap_kenter_pa(va, pa,
VM_PROT_READ, 0)`` and publish after one ``pmap_update(pmap_kernel())``;
``sodoloanfree`` releases as ``pmap_kremove`` -> ``pmap_update`` ->
``uvm_unloan`` -> free the VA.  ``uvm_km_free`` (uvm_km.c) gives back
exactly an allocation whose mappings are gone.  A kernel store through a
loan mapping is fatal (the header comment of uvm_loan.c).  specs/loan.md and
specs/sosend.md.
"""

from __future__ import annotations

import pytest
from helpers import PS, events, machine_fixture

from uvmloan import Machine, UVMError
from uvmloan.borrow import (
    KernelLoan,
    kernel_loan,
    kernel_loan_uobj,
    uvm_km_alloc_vaonly,
    uvm_km_free_vaonly,
)
from uvmloan.errors import KernelAssertion, MachineClosed
from uvmloan.inject import inject
from uvmloan.param import ENOMEM, VM_PROT_READ
from uvmloan.process import Process
from uvmloan.trace import Event, KEnter, KRemove, Loan, PmapUpdate, Unloan

m = machine_fixture(ncpus=2, memory="1M", trace="record", check=True)

# Bytes that say where they are: byte i of the buffer is i % 251 (a prime,
# so no two nearby pages hold the same bytes at the same offsets).
PATTERN = bytes(i % 251 for i in range(4 * PS))


def _user(m: Machine, npages: int = 4) -> tuple[Process, int]:
    p = m.spawn("p")
    buf = p.mmap(npages * PS)
    p.write(buf, PATTERN[: npages * PS])
    return p, buf


def _kernel_entries(m: Machine) -> list[tuple[int, int, bool]]:
    return [(e.start, e.end, e.vaonly) for e in m.kernel_map.entries.values()]


def _since(m: Machine, mark: int, *kinds: type[Event]) -> list[Event]:
    return [e for e in m.trace[mark:] if isinstance(e, kinds)]


# ------------------------------------------------ uvm_km_alloc / uvm_km_free


def test_vaonly_allocation_is_a_vaonly_entry_of_that_size(m: Machine) -> None:
    """UVM_KMF_VAONLY: an entry of the kernel map, page rounded, no object,
    nothing mapped behind it (no PTE, no fault handler fills it)."""
    va = uvm_km_alloc_vaonly(m, 3 * PS)
    e = m.kernel_map.entries[va]
    assert (e.start, e.end, e.vaonly, e.object) == (va, va + 3 * PS, True, None)
    assert not e.copy_on_write and not e.needs_copy
    assert all(a not in m.pmap.kernel.ptes for a in range(va, va + 3 * PS, PS))
    uvm_km_free_vaonly(m, va, 3 * PS)
    assert va not in m.kernel_map.entries


def test_km_free_refuses_while_any_page_is_still_mapped(m: Machine) -> None:
    """uvm_km_free of VA-only space: the caller has kremoved every page first
    (sodoloanfree does, before sokvafree); a mapping left on any page, the
    last one too, is a kernel bug."""
    p, buf = _user(m, 1)
    pa = m.kernel_loan(p, buf, PS).pages[0].pa
    va = uvm_km_alloc_vaonly(m, 3 * PS)
    last = va + 2 * PS
    m.pmap.pmap_kenter_pa(last, pa, VM_PROT_READ, 0)
    with pytest.raises(KernelAssertion, match=rf"uvm_km_free: {last:#x} is still mapped"):
        uvm_km_free_vaonly(m, va, 3 * PS)
    assert va in m.kernel_map.entries
    m.pmap.pmap_kremove(last, PS)
    m.pmap.pmap_update(m.pmap.kernel)
    uvm_km_free_vaonly(m, va, 3 * PS)
    for kl in list(m.kernel_loans):
        kl.release()


def test_km_free_gives_back_exactly_one_vaonly_allocation(m: Machine) -> None:
    """The range must be the whole allocation: neither a part of it (start
    or end inside) nor more, nor a mapping that is not VA-only."""
    va = uvm_km_alloc_vaonly(m, 2 * PS)
    before = _kernel_entries(m)
    for start, size in ((va, PS), (va, 3 * PS), (va + PS, PS), (va - PS, 3 * PS)):
        with pytest.raises(KernelAssertion, match="is not a VA-only allocation") as ei:
            uvm_km_free_vaonly(m, start, size)
        assert f"[{start:#x}, {start + size:#x})" in str(ei.value)
        assert _kernel_entries(m) == before
    uvm_km_free_vaonly(m, va, 2 * PS)
    # An ordinary (backed) kernel mapping is not VA-only space.
    kva = m.kernel_map.uvm_map(PS, None, 0, VM_PROT_READ, copy_on_write=False)
    with pytest.raises(KernelAssertion, match="is not a VA-only allocation"):
        uvm_km_free_vaonly(m, kva, PS)
    assert kva in m.kernel_map.entries
    m.kernel_map.uvm_unmap(kva, kva + PS)


def test_km_free_of_nothing_allocated_is_refused(m: Machine) -> None:
    va = uvm_km_alloc_vaonly(m, PS)
    uvm_km_free_vaonly(m, va, PS)
    with pytest.raises(KernelAssertion, match="is not a VA-only allocation"):
        uvm_km_free_vaonly(m, va, PS)


# ------------------------------------------------------ the borrow itself


def test_kernel_loan_maps_every_page_read_only_then_one_update(m: Machine) -> None:
    """sosend_loan: pmap_kenter_pa(va + i*PAGE_SIZE, pa, VM_PROT_READ, 0)
    for each page, in order, then one pmap_update(pmap_kernel()); the
    partial first and last pages are whole pages of the loan."""
    p, buf = _user(m)
    mark = len(m.trace)
    kl = m.kernel_loan(p, buf + 100, 2 * PS)
    assert kl.npages == 3 and kl.data_off == 100 and kl.length == 2 * PS
    assert kl.data_va == kl.kva + 100
    assert kl.kva % PS == 0
    assert m.kernel_map.entries[kl.kva].end == kl.kva + 3 * PS
    ents = _since(m, mark, KEnter, PmapUpdate)
    kenters = [e for e in ents if isinstance(e, KEnter)]
    assert [(e.va, e.frame, e.prot) for e in kenters] == [
        (kl.kva + i * PS, pg.frame, VM_PROT_READ) for i, pg in enumerate(kl.pages)
    ]
    assert [pg.pa for pg in kl.pages] == [
        m.pmap.pmap_extract(p.map.pmap, buf + i * PS) for i in range(3)
    ]
    tail = ents[ents.index(kenters[-1]) + 1 :]
    assert [type(e) for e in tail] == [PmapUpdate]
    assert tail[0].space == "kernel"
    assert m.kernel_loans == {kl: None}
    kl.release()


def test_kernel_loan_reads_the_user_bytes(m: Machine) -> None:
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf + 100, 2 * PS)
    assert kl.read() == PATTERN[100 : 100 + 2 * PS]
    assert kl.read(5) == PATTERN[105 : 100 + 2 * PS]
    assert kl.read(5, 7) == PATTERN[105:112]
    assert kl.read(2 * PS - 1, 1) == PATTERN[2 * PS + 99 : 2 * PS + 100]
    assert kl.read(2 * PS) == b""
    kl.release()


def test_kernel_loan_of_a_page_aligned_buffer(m: Machine) -> None:
    """No rounding when the buffer is page aligned at both ends: exactly its
    pages are lent (one more page would be a loan of the next page)."""
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf + PS, PS)
    assert (kl.npages, kl.data_off) == (1, 0)
    assert kl.pages[0].pa == m.pmap.pmap_extract(p.map.pmap, buf + PS)
    assert kl.read() == PATTERN[PS : 2 * PS]
    assert kl.pieces() == [(kl.pages[0].frame, 0, PS)]
    kl.release()


def test_kernel_loan_of_one_byte_ends_its_page(m: Machine) -> None:
    p, buf = _user(m)
    kl = kernel_loan(m, p.map, buf + PS - 1, 1)
    assert (kl.npages, kl.data_off) == (1, PS - 1)
    assert kl.read() == PATTERN[PS - 1 : PS]
    kl.release()
    kl = kernel_loan(m, p.map, buf + PS - 1, 2)
    assert kl.npages == 2
    assert kl.read() == PATTERN[PS - 1 : PS + 1]
    kl.release()


def test_kernel_loan_at_address_zero_is_a_value(m: Machine) -> None:
    """va 0 is an address (not "none"): uvm_loan refuses it (below the map),
    not the argument check, and the VA is given back."""
    p = m.spawn("p")
    before = _kernel_entries(m)
    with pytest.raises(ValueError, match=r"^uvm_loan: .* outside the address space"):
        kernel_loan(m, p.map, 0, PS)
    assert _kernel_entries(m) == before


@pytest.mark.parametrize("length", [0, -1, True, 1.0, None])
def test_kernel_loan_length_must_be_a_positive_int(m: Machine, length: object) -> None:
    p, buf = _user(m)
    with pytest.raises(ValueError, match=r"^kernel_loan: length must be a positive int, got "):
        kernel_loan(m, p.map, buf, length)  # type: ignore[arg-type]
    assert m.kernel_loans == {}


@pytest.mark.parametrize("va", [-1, True, float(0x10000), None])
def test_kernel_loan_va_must_be_a_non_negative_int(m: Machine, va: object) -> None:
    p, _ = _user(m)
    with pytest.raises(ValueError, match=r"^kernel_loan: va must be a non-negative int, got "):
        kernel_loan(m, p.map, va, PS)  # type: ignore[arg-type]
    assert m.kernel_loans == {}


def test_failed_loan_gives_back_exactly_its_kva(m: Machine) -> None:
    """sokvafree after a failed uvm_loan; other kernel VA stays."""
    p, buf = _user(m, 1)
    other = uvm_km_alloc_vaonly(m, PS)
    before = _kernel_entries(m)
    with pytest.raises(UVMError):
        m.kernel_loan(p, buf, 2 * PS)  # the second page is not mapped
    assert _kernel_entries(m) == before
    uvm_km_free_vaonly(m, other, PS)


def test_m_ext_maxpages_counts_the_rounded_pages(m: Machine) -> None:
    """KASSERT(npgs <= M_EXT_MAXPAGES): the rounded page count, equal allowed."""
    p, buf = _user(m)
    with pytest.raises(KernelAssertion) as ei:
        kernel_loan(m, p.map, buf + 1, PS, max_pages=1)
    assert str(ei.value) == "kernel_loan: 2 pages > M_EXT_MAXPAGES (1)"
    kernel_loan(m, p.map, buf + 1, PS, max_pages=2).release()
    kernel_loan(m, p.map, buf, PS, max_pages=1).release()


def test_kva_exhaustion_is_enomem_naming_the_borrower(m: Machine) -> None:
    km = m.kernel_map
    va = km._find_space(PS, None)
    uvm_km_alloc_vaonly(m, km.maxva - va - PS)  # one page left (kept: freeing walks it)
    p, buf = _user(m)
    with pytest.raises(UVMError) as ei:
        kernel_loan(m, p.map, buf, 2 * PS)
    assert ei.value.errno == ENOMEM
    assert "kernel_loan: no kernel VA for 2 pages" in str(ei.value)
    assert ei.value.__cause__ is None and ei.value.__suppress_context__
    vn = m.vnode(PATTERN[: 2 * PS])
    with pytest.raises(UVMError) as ei:
        kernel_loan_uobj(m, vn, 0, 2 * PS)
    assert ei.value.errno == ENOMEM
    assert "kernel_loan_uobj: no kernel VA for 2 pages" in str(ei.value)
    # The last page of VA is still there for a one-page loan.
    kernel_loan(m, p.map, buf, PS).release()


# ------------------------------------------------------------- file loans


def test_file_loan_maps_the_file_pages_at_their_offsets(m: Machine) -> None:
    """nfsrv_read: uvm_loanuobjpages over the page-rounded range, each page
    kentered read-only at its place, then one pmap_update."""
    vn = m.vnode(PATTERN)
    mark = len(m.trace)
    kl = kernel_loan_uobj(m, vn, PS + 10, PS)
    assert (kl.npages, kl.data_off, kl.length) == (2, 10, PS)
    assert [pg.offset for pg in kl.pages] == [PS, 2 * PS]
    assert all(pg.uobject is vn for pg in kl.pages)
    assert kl.read() == PATTERN[PS + 10 : 2 * PS + 10]
    ents = _since(m, mark, KEnter, PmapUpdate)
    assert [(e.va, e.frame, e.prot) for e in ents if isinstance(e, KEnter)] == [
        (kl.kva + i * PS, pg.frame, VM_PROT_READ) for i, pg in enumerate(kl.pages)
    ]
    assert isinstance(ents[-1], PmapUpdate)
    assert [type(e) for e in ents].count(PmapUpdate) == 1
    assert [e.loan_count for e in _since(m, mark, Loan) if isinstance(e, Loan)] == [1, 1]
    assert m.kernel_loans == {kl: None}
    kl.release()
    assert all(pg.loan_count == 0 for pg in kl.pages)


def test_file_loan_aligned_and_one_byte(m: Machine) -> None:
    vn = m.vnode(PATTERN)
    kl = kernel_loan_uobj(m, vn, 2 * PS, PS)
    assert (kl.npages, kl.data_off, [pg.offset for pg in kl.pages]) == (1, 0, [2 * PS])
    kl.release()
    kl = kernel_loan_uobj(m, vn, PS - 1, 1)
    assert (kl.npages, kl.data_off, [pg.offset for pg in kl.pages]) == (1, PS - 1, [0])
    assert kl.read() == PATTERN[PS - 1 : PS]
    kl.release()


@pytest.mark.parametrize("length", [0, -1, True, 1.0])
def test_file_loan_length_must_be_positive(m: Machine, length: object) -> None:
    vn = m.vnode(PATTERN)
    with pytest.raises(ValueError, match=r"^kernel_loan_uobj: length must be positive, got "):
        kernel_loan_uobj(m, vn, 0, length)  # type: ignore[arg-type]
    assert m.kernel_loans == {}


def test_file_loan_m_ext_maxpages(m: Machine) -> None:
    vn = m.vnode(PATTERN)
    with pytest.raises(KernelAssertion) as ei:
        kernel_loan_uobj(m, vn, 1, PS, max_pages=1)
    assert str(ei.value) == "kernel_loan_uobj: 2 pages > M_EXT_MAXPAGES (1)"
    kernel_loan_uobj(m, vn, 1, PS, max_pages=2).release()


def test_failed_file_loan_gives_back_exactly_its_kva(m: Machine) -> None:
    """Past the end of the file uvm_loanuobjpages fails; the VA goes back."""
    vn = m.vnode(PATTERN[:PS])
    before = _kernel_entries(m)
    with pytest.raises(UVMError):
        kernel_loan_uobj(m, vn, 0, 3 * PS)
    assert _kernel_entries(m) == before
    assert m.kernel_loans == {}


# ------------------------------------------------------------- the reads


def test_read_bounds_are_the_loan(m: Machine) -> None:
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf + 8, 100)
    for off, n in ((-1, 1), (0, -1), (0, 101), (100, 1), (101, None)):
        with pytest.raises(ValueError, match=r"-byte loan$") as ei:
            kl.read(off, n)
        end = off + (n if n is not None else 100 - off)
        assert str(ei.value) == f"read [{off}, {end}) outside the 100-byte loan"
    assert kl.read(0, 100) == PATTERN[8:108]
    assert kl.read(100, 0) == b""
    assert kl.read(99) == PATTERN[107:108]
    kl.release()


def test_read_runs_on_the_cpu_asked(m: Machine) -> None:
    """The kernel's access fills that CPU's TLB, not another's."""
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf, PS)
    vpn = kl.kva // PS
    for c in (0, 1):
        m.platform.cpu(c).tlb.flush(include_global=True)
    assert kl.read(0, 4, cpu=1) == PATTERN[:4]
    assert [k[1] for k, _ in m.platform.cpu(1).tlb] == [vpn]
    assert [k[1] for k, _ in m.platform.cpu(0).tlb] == []
    with m.platform.on_cpu(0):
        assert kl.read(0, 4) == PATTERN[:4]
    assert [k[1] for k, _ in m.platform.cpu(0).tlb] == [vpn]
    kl.release()


def test_read_through_a_released_loan_is_fatal(m: Machine) -> None:
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf, PS)
    kl.release()
    with pytest.raises(KernelAssertion, match=r"^read through a released kernel loan$"):
        kl.read()


# ------------------------------------------------------------- the writes


@pytest.mark.parametrize("cpu", [None, 1])
def test_kernel_store_through_a_loan_is_fatal(m: Machine, cpu: int | None) -> None:
    """uvm_loan.c's header: the kernel never writes a loaned page; the store
    at the loan's data (offset 0 is its first byte) faults fatally and
    changes nothing."""
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf + PS + 3, 10)
    with pytest.raises(KernelAssertion, match="kernel write to read-only kernel mapping") as ei:
        kl.write(0, b"xyz", cpu=cpu)
    assert f"{kl.kva:#x}" in str(ei.value)
    assert kl.read() == PATTERN[PS + 3 : PS + 13]
    assert p.read(buf + PS + 3, 3) == PATTERN[PS + 3 : PS + 6]
    kl.release()


def test_kernel_store_faults_at_its_address_on_the_cpu_asked(m: Machine) -> None:
    """The store goes to the loan's byte ``offset`` (here in its second page)
    and runs on the CPU asked: that CPU's clock pays for the fault."""
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf + 3, 2 * PS)
    clocks = [m.platform.cpu(c).clock for c in (0, 1)]
    with pytest.raises(KernelAssertion) as ei:
        kl.write(PS, b"x", cpu=1)
    assert f"read-only kernel mapping at {kl.kva + PS:#x} " in str(ei.value)
    assert m.platform.cpu(0).clock == clocks[0]
    assert m.platform.cpu(1).clock > clocks[1]
    kl.release()


# ------------------------------------------------------ what a NIC DMAs


def test_pieces_are_the_borrowed_bytes_page_by_page(m: Machine) -> None:
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf + 100, 2 * PS)
    f = [pg.frame for pg in kl.pages]
    assert kl.pieces() == [(f[0], 100, PS - 100), (f[1], 0, PS), (f[2], 0, 100)]
    assert m.physmem.gather(kl.pieces()) == PATTERN[100 : 100 + 2 * PS]
    kl.release()
    kl = m.kernel_loan(p, buf + 5, 7)
    assert kl.pieces() == [(kl.pages[0].frame, 5, 7)]
    kl.release()


def test_pieces_skip_a_whole_first_page_and_stop_at_the_length() -> None:
    """A KernelLoan whose data starts a page in (or ends early) has pieces
    only for its bytes: pieces of 0 bytes are never handed to a NIC."""
    mach = Machine(ncpus=1, memory="1M")
    try:
        p, buf = _user(mach)
        kl = mach.kernel_loan(p, buf, 3 * PS)
        pages = kl.pages
        f = [pg.frame for pg in pages]
        view = KernelLoan(mach, kl.kva, pages, PS + 6, 10)
        assert view.pieces() == [(f[1], 6, 10)]
        view = KernelLoan(mach, kl.kva, pages, 2 * PS, PS)
        assert view.pieces() == [(f[2], 0, PS)]
        view = KernelLoan(mach, kl.kva, pages, 0, PS)
        assert view.pieces() == [(f[0], 0, PS)]
        view = KernelLoan(mach, kl.kva, pages, PS - 1, 2)
        assert view.pieces() == [(f[0], PS - 1, 1), (f[1], 0, 1)]
        kl.release()
    finally:
        mach.close()


# ------------------------------------------------------------- the release


def test_release_is_sodoloanfree_in_order(m: Machine) -> None:
    """pmap_kremove of every page, pmap_update(pmap_kernel()), then
    uvm_unloan, then the VA freed; the loan leaves the machine's list."""
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf + 1, 2 * PS)
    kva = kl.kva
    mark = len(m.trace)
    kl.release()
    ents = _since(m, mark, KRemove, PmapUpdate, Unloan)
    kinds = [type(e) for e in ents]
    assert kinds == [KRemove] * 3 + [PmapUpdate] + [Unloan] * 3
    assert [e.va for e in ents if isinstance(e, KRemove)] == [kva, kva + PS, kva + 2 * PS]
    assert ents[3].space == "kernel"
    assert kl.released
    assert m.kernel_loans == {}
    assert kva not in m.kernel_map.entries
    assert all(a not in m.pmap.kernel.ptes for a in range(kva, kva + 3 * PS, PS))
    assert all(pg.loan_count == 0 for pg in kl.pages)
    assert repr(kl) == f"<KernelLoan {2 * PS} B at {kva + 1:#x}, 3 pages, released>"


def test_release_twice_is_fatal(m: Machine) -> None:
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf, PS)
    kl.release()
    mark = len(m.trace)
    with pytest.raises(KernelAssertion) as ei:
        kl.release()
    assert str(ei.value) == f"{kl!r} released twice"
    assert m.trace[mark:] == []


def test_release_leaves_other_loans_alone(m: Machine) -> None:
    p, buf = _user(m)
    a = m.kernel_loan(p, buf, PS)
    b = m.kernel_loan(p, buf, PS)
    assert list(m.kernel_loans) == [a, b]
    assert a.kva != b.kva
    a.release()
    assert list(m.kernel_loans) == [b]
    assert b.read(0, 3) == PATTERN[:3]
    assert b.pages[0].loan_count == 1
    b.release()


def test_repr_of_a_held_loan(m: Machine) -> None:
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf + 7, PS)
    assert repr(kl) == f"<KernelLoan {PS} B at {kl.kva + 7:#x}, 2 pages, held>"
    kl.release()


def test_a_closed_machine_refuses_each_call_by_name() -> None:
    mach = Machine(ncpus=1, memory="1M")
    p, buf = _user(mach)
    kl = mach.kernel_loan(p, buf, PS)
    mach.close()
    for call, name in (
        (lambda: kl.read(), "KernelLoan.read"),
        (lambda: kl.write(0, b"x"), "KernelLoan.write"),
        (kl.release, "KernelLoan.release"),
    ):
        with pytest.raises(MachineClosed, match=rf"^{name}: this machine is closed"):
            call()


def test_unloan_counts_go_down_by_one(m: Machine) -> None:
    """Two kernel loans of one page: each release takes one loan away."""
    p, buf = _user(m, 1)
    a = m.kernel_loan(p, buf, PS)
    b = m.kernel_loan(p, buf, PS)
    pg = a.pages[0]
    assert pg is b.pages[0] and pg.loan_count == 2
    a.release()
    assert pg.loan_count == 1
    assert [e.loan_count for e in events(m, Unloan)][-1] == 1
    b.release()
    assert pg.loan_count == 0


def test_injected_release_order_bug_unloans_first(m: Machine) -> None:
    """The "unloan-before-kremove" switch (uvmloan.inject) reverses
    sodoloanfree: uvm_unloan of every page runs before pmap_kremove; the
    pages are unloaned once, the VA is freed all the same."""
    inject(m, "unloan-before-kremove")
    p, buf = _user(m)
    kl = m.kernel_loan(p, buf, 2 * PS)
    mark = len(m.trace)
    kl.release()
    ents = _since(m, mark, KRemove, PmapUpdate, Unloan)
    assert [type(e) for e in ents] == [Unloan] * 2 + [KRemove] * 2 + [PmapUpdate]
    assert all(pg.loan_count == 0 for pg in kl.pages)
    assert kl.kva not in m.kernel_map.entries
    assert m.kernel_loans == {}
