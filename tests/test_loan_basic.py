"""uvm_loan / uvm_unloan: the loan kinds, their errors and their undo.

Rules from the digest (``shared/reference/netbsd-uvm-loan.md``) sections 1
and 2, sources ``sys/uvm/uvm_loan.c`` 1.104 (``uvm_loan``, ``uvm_loanentry``,
``uvm_loananon``, ``uvm_loanuobj``, ``uvm_loanpage``, ``uvm_loanzero``,
``uvm_unloan``, ``uvm_unloanpage``, ``uvm_loanuobjpages``); the rule-by-rule
table is in ``specs/loan.md``.
"""

from __future__ import annotations

import pytest
from helpers import PS, counted, events, machine_fixture

from uvmloan import (
    MAP_SHARED,
    PG,
    UVM_LOAN_TOANON,
    UVM_LOAN_TOPAGE,
    VM_PROT_NONE,
    VM_PROT_READ,
    Anon,
    Machine,
    Page,
    UVMError,
    check_invariants,
    uvm_loan,
    uvm_loanuobjpages,
    uvm_unloan,
)
from uvmloan.loan import UVM_LOAN_GET_CHUNK, ZeroLoanObject
from uvmloan.page import PQ
from uvmloan.param import EBUSY, EINVAL, ENOENT, ENOMEM
from uvmloan.testing.loan_ops import anon_at, machine_snapshot, page_at, page_role
from uvmloan.trace import Loan, LoanFail, PageProtect, Unloan

m = machine_fixture(ncpus=2, memory="2M", trace="record")


def _pages(x: list[Page] | list[Anon]) -> list[Page]:
    out = [p for p in x if isinstance(p, Page)]
    assert len(out) == len(x)
    return out


def _anons(x: list[Page] | list[Anon]) -> list[Anon]:
    out = [a for a in x if isinstance(a, Anon)]
    assert len(out) == len(x)
    return out


def _protects(m: Machine, frame: int) -> list[PageProtect]:
    return [e for e in events(m, PageProtect) if e.frame == frame]


# ------------------------------------------------------------ one loan


def test_one_anon_loan_is_a_to_k(m: Machine) -> None:
    """T1 (uvm_loananon TOPAGE): loan_count 1, protected, activated, owner kept."""
    p = m.spawn("sender", cpu=0)
    buf = p.mmap(PS)
    p.write(buf, b"A" * PS)
    pg = page_at(p, buf)
    assert pg is not None and page_role(pg) == "ANON"
    pages = _pages(uvm_loan(p.map, buf, PS, UVM_LOAN_TOPAGE))
    assert pages == [pg]
    assert pg.loan_count == 1 and pg.wire_count == 0
    assert page_role(pg) == "ANON" and pg.flags & PG.ANON
    assert pg.pqueue is PQ.ACTIVE
    assert m.uvm.loan_ledger == {pg: 1}
    (ev,) = events(m, Loan)
    assert (ev.kind, ev.frame, ev.va, ev.loan_count, ev.protected) == (
        "A->K",
        pg.frame,
        buf,
        1,
        True,
    )
    assert ev.space == "sender"
    (pp,) = _protects(m, pg.frame)
    assert pp.prot == VM_PROT_READ
    # the write: one zero-fill fault (uvm_fault.c 1.226 uvm_fault_upper);
    # uvm_loananon (uvm_loan.c 1.104): one A->K loan, pmap_page_protect(READ)
    # on the 0->1 transition; the PTE was written (A, D) so pmap_sync_pv queues
    # one SYNC_PV shootdown (pmap.c)
    assert counted(m, "loan", "unloan", "fault", "pmap page_protect", "tlbshoot request") == {
        "fault": 1,
        "fault resolved": 1,
        "loan": 1,
        "loan.A->K": 1,
        "pmap page_protect": 1,
        "tlbshoot request": 1,
    }
    check_invariants(m)


def test_one_object_loan_is_o_to_k_and_pages_in(m: Machine) -> None:
    """uvm_loanuobj: pgo_get brings a non-resident file page in, then uvm_loanpage."""
    vn = m.vnode(b"F" * (2 * PS))
    p = m.spawn("reader", cpu=0)
    fva = p.mmap(2 * PS, flags=MAP_SHARED, obj=vn)
    assert vn.uvm_pagelookup(PS) is None
    pages = _pages(uvm_loan(p.map, fva + PS, PS, UVM_LOAN_TOPAGE))
    (pg,) = pages
    assert vn.uvm_pagelookup(PS) is pg and page_role(pg) == "OBJ"
    assert pg.loan_count == 1 and pg.flags & PG.FILE
    assert m.physmem.copyout([pg.frame], 0, 4) == b"FFFF"
    assert [(e.kind, e.protected) for e in events(m, Loan)] == [("O->K", True)]
    assert m.counters["loan.O->K"] == 1
    check_invariants(m)


def test_repeated_loans_protect_only_on_first(m: Machine) -> None:
    """I11: pmap_page_protect(READ) only on the 0->1 transition of loan_count."""
    p = m.spawn("sender")
    buf = p.mmap(PS)
    p.write(buf, b"x")
    pg = page_at(p, buf)
    assert pg is not None
    for i in range(1, 4):
        uvm_loan(p.map, buf, PS, UVM_LOAN_TOPAGE)
        assert pg.loan_count == i
    assert [e.protected for e in events(m, Loan)] == [True, False, False]
    assert [e.loan_count for e in events(m, Loan)] == [1, 2, 3]
    assert len(_protects(m, pg.frame)) == 1
    assert m.uvm.loan_ledger[pg] == 3
    check_invariants(m)


def test_unloan_to_zero_keeps_owned_page(m: Machine) -> None:
    """T4: each unloan drops one loan; an owned page reaching 0 is not freed."""
    p = m.spawn("sender")
    buf = p.mmap(PS)
    p.write(buf, b"x")
    pg = page_at(p, buf)
    assert pg is not None
    loans = [_pages(uvm_loan(p.map, buf, PS, UVM_LOAN_TOPAGE)) for _ in range(3)]
    for i, pages in enumerate(loans):
        uvm_unloan(pages, UVM_LOAN_TOPAGE)
        assert pg.loan_count == 2 - i
    unl = events(m, Unloan)
    assert [(e.frame, e.loan_count, e.freed) for e in unl] == [
        (pg.frame, 2, False),
        (pg.frame, 1, False),
        (pg.frame, 0, False),
    ]
    assert page_role(pg) == "ANON" and m.uvm.pages[pg.frame] is pg
    assert m.uvm.loan_ledger == {}
    assert m.counters["unloan"] == 3
    # No loan left: a write no longer breaks anything (the fault re-enables W).
    p.write(buf, b"y")
    assert page_at(p, buf) is pg
    # three A->K loans, one page_protect (0->1 only, I11), three unloans; the
    # second write faults on the read-only PTE and, loan_count 0 and an_ref 1,
    # re-enables W without a break (uvm_fault.c 1.226 uvm_fault_upper)
    assert counted(m, "loan", "unloan", "fault", "pmap page_protect") == {
        "fault": 2,
        "fault resolved": 2,
        "loan": 3,
        "loan.A->K": 3,
        "unloan": 3,
        "pmap page_protect": 1,
    }
    check_invariants(m)


def test_loan_output_order_matches_addresses(m: Machine) -> None:
    """Entry i of the result is the page at start + i*PAGE_SIZE, across entries."""
    vn = m.vnode(b"v" * PS)
    p = m.spawn("mix")
    a = p.mmap(2 * PS, addr=0x10000000)
    f = p.mmap(PS, flags=MAP_SHARED, obj=vn, addr=0x10000000 + 2 * PS)
    h = p.mmap(PS, addr=0x10000000 + 3 * PS)
    assert (f, h) == (a + 2 * PS, a + 3 * PS)
    p.write(a, b"1" * (2 * PS))
    pages = _pages(uvm_loan(p.map, a, 4 * PS, UVM_LOAN_TOPAGE))
    assert pages[:2] == [page_at(p, a), page_at(p, a + PS)]
    assert pages[2] is vn.uvm_pagelookup(0)
    assert page_role(pages[3]) == "ZERO"
    assert [e.kind for e in events(m, Loan)] == ["A->K", "A->K", "O->K", "zero->K"]
    assert [e.va for e in events(m, Loan)] == [a, a + PS, f, h]
    check_invariants(m)


def test_no_protection_check(m: Machine) -> None:
    """1.3 step 4: uvm_loan never looks at the entry's protection."""
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"secret")
    p.mprotect(buf, PS, VM_PROT_NONE)
    (pg,) = _pages(uvm_loan(p.map, buf, PS, UVM_LOAN_TOPAGE))
    assert pg.loan_count == 1
    assert m.physmem.copyout([pg.frame], 0, 6) == b"secret"
    check_invariants(m)


def test_loan_pages_in_a_swapped_anon(m: Machine) -> None:
    """uvm_loananon TOPAGE: uvmfault_anonget brings a paged-out anon back first."""
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"swapped")
    old = page_at(p, buf)
    assert old is not None
    assert m.reclaim(page=old) == 1
    anon = anon_at(p, buf)
    assert anon is not None and anon.an_page is None and anon.an_swslot
    (pg,) = _pages(uvm_loan(p.map, buf, PS, UVM_LOAN_TOPAGE))
    assert anon.an_page is pg and pg.loan_count == 1
    assert m.physmem.copyout([pg.frame], 0, 7) == b"swapped"
    check_invariants(m)


# ------------------------------------------------------------ zero page


def test_zero_page_is_shared_rdonly_unprotected(m: Machine) -> None:
    """T2/I13 (uvm_loanzero): one page for every COW hole, PG_RDONLY, never
    protected, never freed by unloan."""
    p = m.spawn("p")
    q = m.spawn("q")
    h1 = p.mmap(3 * PS)
    h2 = q.mmap(PS)
    a = _pages(uvm_loan(p.map, h1, 3 * PS, UVM_LOAN_TOPAGE))
    b = _pages(uvm_loan(q.map, h2, PS, UVM_LOAN_TOPAGE))
    zpg = a[0]
    assert all(x is zpg for x in a + b)
    assert isinstance(zpg.uobject, ZeroLoanObject) and zpg.offset == 0
    assert zpg.flags & PG.RDONLY and not zpg.flags & PG.ANON
    assert zpg.loan_count == 4
    assert m.physmem.copyout([zpg.frame], 0, PS) == bytes(PS)
    assert [(e.kind, e.protected) for e in events(m, Loan)] == [("zero->K", False)] * 4
    assert _protects(m, zpg.frame) == []
    assert m.counters["loan.zero->K"] == 4
    # The holes stay holes: loaning did not fault anything in.
    assert page_at(p, h1) is None and page_at(q, h2) is None
    uvm_unloan(a, UVM_LOAN_TOPAGE)
    uvm_unloan(b, UVM_LOAN_TOPAGE)
    assert zpg.loan_count == 0 and m.uvm.pages.get(zpg.frame) is zpg
    assert [e.freed for e in events(m, Unloan)] == [False] * 4
    # Loaning again gives the very same page.
    (again,) = _pages(uvm_loan(q.map, h2, PS, UVM_LOAN_TOPAGE))
    assert again is zpg
    check_invariants(m)


def test_zero_page_survives_reclaim(m: Machine) -> None:
    """ulz_put never frees the zero page; the pagedaemon skips it."""
    p = m.spawn("p")
    h = p.mmap(PS)
    (zpg,) = _pages(uvm_loan(p.map, h, PS, UVM_LOAN_TOPAGE))
    assert m.reclaim(page=zpg) == 0
    m.reclaim()
    assert m.uvm.pages.get(zpg.frame) is zpg and zpg.loan_count == 1
    uvm_unloan([zpg], UVM_LOAN_TOPAGE)
    m.reclaim()
    assert m.uvm.pages.get(zpg.frame) is zpg
    check_invariants(m)


def test_zero_page_no_wire_check_needed(m: Machine) -> None:
    """A hole has no page to be wired; a shared anonymous hole is an aobj page."""
    p = m.spawn("p")
    sh = p.mmap(PS, flags=MAP_SHARED)
    (pg,) = _pages(uvm_loan(p.map, sh, PS, UVM_LOAN_TOPAGE))
    assert page_role(pg) == "OBJ" and not isinstance(pg.uobject, ZeroLoanObject)
    assert [e.kind for e in events(m, Loan)] == ["O->K"]
    check_invariants(m)


# ------------------------------------------------------------ failures


def test_hole_is_enoent_and_undoes(m: Machine) -> None:
    """1.5: an unmapped VA fails with ENOENT; earlier TOPAGE loans are undone."""
    p = m.spawn("p")
    buf = p.mmap(PS, addr=0x10000000)
    p.write(buf, b"a")
    pg = page_at(p, buf)
    assert pg is not None
    with pytest.raises(UVMError) as ei:
        uvm_loan(p.map, buf, 2 * PS, UVM_LOAN_TOPAGE)
    assert ei.value.errno == ENOENT
    assert ei.value.reason is not None and ei.value.reason.startswith("ENOENT")
    assert pg.loan_count == 0 and m.uvm.loan_ledger == {}
    (fail,) = events(m, LoanFail)
    assert (fail.errno, fail.undone) == (ENOENT, 1)
    assert [(e.frame, e.loan_count) for e in events(m, Unloan)] == [(pg.frame, 0)]
    assert m.counters["loan.fail"] == 1
    # NetBSD leaves the page write-protected; the next write simply re-enables W.
    p.write(buf, b"b")
    assert page_at(p, buf) is pg and m.counters["loan.break"] == 0
    check_invariants(m)


def test_hole_first_page_is_enoent(m: Machine) -> None:
    p = m.spawn("p")
    with pytest.raises(UVMError) as ei:
        uvm_loan(p.map, 0x10000000, PS, UVM_LOAN_TOPAGE)
    assert ei.value.errno == ENOENT
    (fail,) = events(m, LoanFail)
    assert fail.undone == 0


def test_wired_anon_page_is_einval_reason_ebusy(m: Machine) -> None:
    """1.4/I2: a wired page refuses the loan: EINVAL, cause kept in reason."""
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"w")
    p.mlock(buf, PS)
    pg = page_at(p, buf)
    assert pg is not None and pg.wire_count == 1
    before = machine_snapshot(m, allow=["loan.fail"])
    with pytest.raises(UVMError) as ei:
        uvm_loan(p.map, buf, PS, UVM_LOAN_TOPAGE)
    assert ei.value.errno == EINVAL
    assert ei.value.reason is not None and ei.value.reason.startswith("EBUSY")
    assert "wired" in ei.value.reason
    assert machine_snapshot(m, allow=["loan.fail"]) == before
    assert m.counters["loan.fail"] == 1
    assert pg.wire_count == 1 and pg.loan_count == 0
    check_invariants(m)


def test_wired_object_page_is_einval_and_loanuobjpages_ebusy(m: Machine) -> None:
    """uvm_loanpage returns EBUSY; uvm_loan folds it into EINVAL,
    uvm_loanuobjpages reports it verbatim."""
    vn = m.vnode(b"f" * (2 * PS))
    p = m.spawn("p")
    fva = p.mmap(2 * PS, flags=MAP_SHARED, obj=vn)
    p.mlock(fva + PS, PS)
    with pytest.raises(UVMError) as ei:
        uvm_loan(p.map, fva, 2 * PS, UVM_LOAN_TOPAGE)
    assert ei.value.errno == EINVAL and ei.value.reason is not None
    assert ei.value.reason.startswith("EBUSY")
    with pytest.raises(UVMError) as ei2:
        uvm_loanuobjpages(vn, 0, 2)
    assert ei2.value.errno == EBUSY
    for off in (0, PS):
        pg = vn.uvm_pagelookup(off)
        assert pg is not None and pg.loan_count == 0
    assert m.uvm.loan_ledger == {}
    check_invariants(m)


@pytest.mark.parametrize("second", ["wired", "hole", "layerless"])
def test_partial_failure_undoes_first_page(m: Machine, second: str) -> None:
    """1.6/I12: the second page fails, the first page's loan is undone."""
    p = m.spawn("p")
    buf = p.mmap(PS, addr=0x10000000)
    p.write(buf, b"1")
    first = page_at(p, buf)
    assert first is not None
    if second == "wired":
        nxt = p.mmap(PS, addr=buf + PS)
        p.write(nxt, b"2")
        p.mlock(nxt, PS)
        errno = EINVAL
    elif second == "hole":
        errno = ENOENT
    else:
        # A VA-only entry (no amap, no object, not copy-on-write): -1.
        p.map.uvm_map(PS, None, 0, VM_PROT_READ, addr=buf + PS, copy_on_write=False, vaonly=True)
        errno = EINVAL
    with pytest.raises(UVMError) as ei:
        uvm_loan(p.map, buf, 2 * PS, UVM_LOAN_TOPAGE)
    assert ei.value.errno == errno
    assert first.loan_count == 0 and m.uvm.loan_ledger == {}
    (fail,) = events(m, LoanFail)
    assert fail.undone == 1
    # uvm_loan.c 1.104 uvm_loan: the first page is lent (A->K), the second
    # fails, the fail path unloans what was lent: one loan, one unloan, one
    # failure, no break
    assert counted(m, "loan", "unloan", "pmap page_protect") == {
        "loan": 1,
        "loan.A->K": 1,
        "loan.fail": 1,
        "unloan": 1,
        "pmap page_protect": 1,
    }
    check_invariants(m)


def test_partial_failure_undo_on_zero_and_object_pages(m: Machine) -> None:
    """Undo covers every kind: the zero page and a file page get their loan back."""
    vn = m.vnode(b"o" * PS)
    p = m.spawn("p")
    h = p.mmap(PS, addr=0x10000000)
    p.mmap(PS, flags=MAP_SHARED, obj=vn, addr=h + PS)
    with pytest.raises(UVMError):
        uvm_loan(p.map, h, 3 * PS, UVM_LOAN_TOPAGE)
    zobj = m.uvm.zero_object
    assert isinstance(zobj, ZeroLoanObject)
    zpg = zobj.uvm_pagelookup(0)
    opg = vn.uvm_pagelookup(0)
    assert zpg is not None and opg is not None
    assert zpg.loan_count == 0 and opg.loan_count == 0
    check_invariants(m)


def test_file_page_past_eof_is_einval(m: Machine) -> None:
    """genfs_getpages refuses offsets past EOF (EINVAL); uvm_loanuobj -> -1."""
    vn = m.vnode(b"e" * 5000)  # two pages
    p = m.spawn("p")
    fva = p.mmap(3 * PS, flags=MAP_SHARED, obj=vn)
    with pytest.raises(UVMError) as ei:
        uvm_loan(p.map, fva, 3 * PS, UVM_LOAN_TOPAGE)
    assert ei.value.errno == EINVAL
    assert vn.uvm_pagelookup(2 * PS) is None
    for off in (0, PS):
        pg = vn.uvm_pagelookup(off)
        assert pg is not None and pg.loan_count == 0
    with pytest.raises(UVMError) as ei2:
        uvm_loanuobjpages(vn, 0, 3)
    assert ei2.value.errno == EINVAL
    check_invariants(m)


# ------------------------------------------------------------ TOANON


def test_toanon_is_an_ref_increment(m: Machine) -> None:
    """T3 (uvm_loananon TOANON): an_ref++, protect on the first share only,
    loan_count untouched."""
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"anon")
    pg = page_at(p, buf)
    anon = anon_at(p, buf)
    assert pg is not None and anon is not None
    got = _anons(uvm_loan(p.map, buf, PS, UVM_LOAN_TOANON))
    assert got == [anon] and anon.an_ref == 2 and pg.loan_count == 0
    assert len(_protects(m, pg.frame)) == 1
    uvm_loan(p.map, buf, PS, UVM_LOAN_TOANON)
    assert anon.an_ref == 3
    assert len(_protects(m, pg.frame)) == 1
    assert [(e.kind, e.protected) for e in events(m, Loan)] == [("A->A", True), ("A->A", False)]
    assert m.counters["loan.A->A"] == 2 and m.uvm.loan_ledger == {}
    # The share is copy-on-write: the owner's write promotes, the anon keeps
    # the bytes it was lent.
    p.write(buf, b"ANON")
    assert anon.an_page is pg and anon.an_ref == 2
    assert m.physmem.copyout([pg.frame], 0, 4) == b"anon"
    assert p.read(buf, 4) == b"ANON"
    assert m.counters["loan.break"] == 0
    check_invariants(m)


def test_toanon_of_swapped_anon_still_counts(m: Machine) -> None:
    """an_ref++ even when the page is not resident; nothing to protect."""
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"s")
    pg = page_at(p, buf)
    assert pg is not None
    m.reclaim(page=pg)
    anon = anon_at(p, buf)
    assert anon is not None and anon.an_page is None
    n = m.counters["pmap page_protect"]
    assert _anons(uvm_loan(p.map, buf, PS, UVM_LOAN_TOANON)) == [anon]
    assert anon.an_ref == 2 and m.counters["pmap page_protect"] == n
    check_invariants(m)


def test_toanon_wired_is_einval(m: Machine) -> None:
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"s")
    p.mlock(buf, PS)
    anon = anon_at(p, buf)
    assert anon is not None
    with pytest.raises(UVMError) as ei:
        uvm_loan(p.map, buf, PS, UVM_LOAN_TOANON)
    assert ei.value.errno == EINVAL and anon.an_ref == 1
    check_invariants(m)


def test_toanon_refuses_object_and_zero_pages(m: Machine) -> None:
    """O->A and zero->A are compiled out in 1.104 (#ifdef notdef): -1, EINVAL.
    As in 1.104 the object page is still brought in and the zero page
    allocated before the refusal."""
    vn = m.vnode(b"o" * PS)
    p = m.spawn("p")
    fva = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    hole = p.mmap(PS)
    with pytest.raises(UVMError) as e1:
        uvm_loan(p.map, fva, PS, UVM_LOAN_TOANON)
    assert e1.value.errno == EINVAL and e1.value.reason is not None
    assert "compiled out" in e1.value.reason
    opg = vn.uvm_pagelookup(0)
    assert opg is not None and opg.loan_count == 0 and opg.uanon is None
    with pytest.raises(UVMError) as e2:
        uvm_loan(p.map, hole, PS, UVM_LOAN_TOANON)
    assert e2.value.errno == EINVAL
    zobj = m.uvm.zero_object
    assert isinstance(zobj, ZeroLoanObject)
    zpg = zobj.uvm_pagelookup(0)
    assert zpg is not None and zpg.loan_count == 0 and zpg.uanon is None
    check_invariants(m)


def test_toanon_undo_leaks_an_ref(m: Machine) -> None:
    """1.6: uvm_unloananon is empty in 1.104, so a failed TOANON loan keeps
    the an_ref increments it made (a known leak of that era)."""
    vn = m.vnode(b"o" * PS)
    p = m.spawn("p")
    buf = p.mmap(PS, addr=0x10000000)
    p.write(buf, b"a")
    p.mmap(PS, flags=MAP_SHARED, obj=vn, addr=buf + PS)
    anon = anon_at(p, buf)
    assert anon is not None
    with pytest.raises(UVMError):
        uvm_loan(p.map, buf, 2 * PS, UVM_LOAN_TOANON)
    assert anon.an_ref == 2
    (fail,) = events(m, LoanFail)
    assert fail.undone == 0
    check_invariants(m)


def test_unloan_toanon_is_a_no_op(m: Machine) -> None:
    p = m.spawn("p")
    buf = p.mmap(PS)
    p.write(buf, b"a")
    anons = _anons(uvm_loan(p.map, buf, PS, UVM_LOAN_TOANON))
    before = machine_snapshot(m)
    uvm_unloan(anons, UVM_LOAN_TOANON)
    assert machine_snapshot(m) == before and anons[0].an_ref == 2
    assert m.counters["unloan"] == 0


# ----------------------------------------------------- uvm_loanuobjpages


def test_loanuobjpages_in_chunks(m: Machine) -> None:
    """nfsrv_read's entry point: 40 pages in chunks of 16, all loaned."""
    n = 40
    vn = m.vnode(bytes(range(256)) * (n * PS // 256))
    pages = uvm_loanuobjpages(vn, 0, n)
    assert len(pages) == n and UVM_LOAN_GET_CHUNK == 16
    for i, pg in enumerate(pages):
        assert pg is vn.uvm_pagelookup(i * PS) and pg.loan_count == 1
    assert m.counters["loan.O->K"] == n
    uvm_unloan(pages, UVM_LOAN_TOPAGE)
    assert all(pg.loan_count == 0 for pg in pages)
    check_invariants(m)


def test_loanuobjpages_error_in_later_chunk_undoes_earlier(m: Machine) -> None:
    """A failing chunk: earlier chunks unloaned, the error verbatim (ENOMEM
    from the pager, EBUSY for a wired page)."""
    n = 40
    vn = m.vnode(b"n" * (n * PS))
    first = uvm_loanuobjpages(vn, 0, 20)  # 20 resident, loaned once
    m.uvm.limit = m.uvm.allocated  # pages 20.. cannot be brought in
    with pytest.raises(UVMError) as ei:
        uvm_loanuobjpages(vn, 0, n)
    assert ei.value.errno == ENOMEM
    assert all(pg.loan_count == 1 for pg in first)
    m.uvm.limit = None
    p = m.spawn("p")
    fva = p.mmap(n * PS, flags=MAP_SHARED, obj=vn)
    p.mlock(fva + 33 * PS, PS)
    with pytest.raises(UVMError) as ei2:
        uvm_loanuobjpages(vn, 0, n)
    assert ei2.value.errno == EBUSY
    assert all(pg.loan_count == 1 for pg in first)
    assert sum(pg.loan_count for pg in m.uvm.pages.values()) == 20
    uvm_unloan(first, UVM_LOAN_TOPAGE)
    check_invariants(m)
