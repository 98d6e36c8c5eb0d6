"""Bad input to the loan API: clear errors, and the machine left as it was.

Every rejected call is checked against a full snapshot
(:func:`uvmloan.testing.loan_ops.machine_snapshot`: pages, anons, ledger,
page tables, pv lists, TLBs, pending shootdowns, maps, processes) and
``check_invariants`` must pass afterwards.  NetBSD only ``KASSERT``s the
flags of ``uvm_loan``; the model raises ``ValueError``/``TypeError`` for
argument errors and ``KernelAssertion`` where NetBSD would panic
(``KASSERT(pg->loan_count > 0)`` in ``uvm_unloanpage``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from uvmloan import (
    MAP_SHARED,
    UVM_LOAN_TOANON,
    UVM_LOAN_TOPAGE,
    KernelAssertion,
    KernelLoan,
    Machine,
    Page,
    Process,
    check_invariants,
    uvm_loan,
    uvm_loanuobjpages,
    uvm_unloan,
)
from uvmloan.testing.loan_ops import anon_at, machine_snapshot, page_at

PS = 4096


class World:
    """A machine with loans outstanding of every kind, to be left alone."""

    def __init__(self) -> None:
        m = Machine(ncpus=3, memory="2M", trace="record")
        self.m = m
        self.p = m.spawn("p", cpu=0)
        self.vn = m.vnode(b"f" * (2 * PS))
        self.buf = self.p.mmap(4 * PS)
        self.p.write(self.buf, b"b" * (2 * PS), cpu=1)
        self.fva = self.p.mmap(2 * PS, flags=MAP_SHARED, obj=self.vn)
        self.kl = m.kernel_loan(self.p, self.buf + 5, 3 * PS)  # anon + anon + zero
        self.kf = m.kernel_loan(self.p, self.fva, PS)
        self.kl.read(cpu=2)
        self.pages = [
            x for x in uvm_loan(self.p.map, self.buf, PS, UVM_LOAN_TOPAGE) if isinstance(x, Page)
        ]
        self.dead = m.spawn("dead", cpu=1)
        self.dead.mmap(PS)
        self.dead.exit()


@pytest.fixture
def w() -> Iterator[World]:
    world = World()
    yield world
    world.m.close()


def _rejects(
    w: World, exc: type[BaseException], fn: Callable[[], Any], match: str | None = None
) -> None:
    before = machine_snapshot(w.m)
    with pytest.raises(exc, match=match):
        fn()
    assert machine_snapshot(w.m) == before
    check_invariants(w.m)


# ------------------------------------------------------------- uvm_loan


@pytest.mark.parametrize(
    ("start_off", "length", "exc", "match"),
    [
        (1, PS, ValueError, "start"),
        (0, PS + 1, ValueError, "len"),
        (0, 100, ValueError, "len"),
        (0, 0, ValueError, "positive"),
        (0, -PS, ValueError, "positive"),
    ],
)
def test_uvm_loan_bad_range(w: World, start_off: int, length: int, exc: type, match: str) -> None:
    _rejects(w, exc, lambda: uvm_loan(w.p.map, w.buf + start_off, length, UVM_LOAN_TOPAGE), match)


@pytest.mark.parametrize("flags", [0, 3, 4, 0x10, UVM_LOAN_TOPAGE | 8, -1])
def test_uvm_loan_bad_flags(w: World, flags: int) -> None:
    """Exactly one of TOANON/TOPAGE, nothing else (NetBSD: KASSERT)."""
    _rejects(w, ValueError, lambda: uvm_loan(w.p.map, w.buf, PS, flags), "flags|exactly one")


@pytest.mark.parametrize("flags", [True, "2", 2.0, None])
def test_uvm_loan_flags_of_wrong_type(w: World, flags: object) -> None:
    _rejects(w, TypeError, lambda: uvm_loan(w.p.map, w.buf, PS, flags), "flags")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [1.0, "0x1000", None, True])
def test_uvm_loan_non_int_range(w: World, bad: object) -> None:
    _rejects(w, TypeError, lambda: uvm_loan(w.p.map, bad, PS, UVM_LOAN_TOPAGE))  # type: ignore[arg-type]
    _rejects(w, TypeError, lambda: uvm_loan(w.p.map, w.buf, bad, UVM_LOAN_TOPAGE))  # type: ignore[arg-type]


def test_uvm_loan_bad_map(w: World) -> None:
    _rejects(w, TypeError, lambda: uvm_loan(w.p, w.buf, PS, UVM_LOAN_TOPAGE), "VMMap")  # type: ignore[arg-type]


def test_uvm_loan_outside_address_space(w: World) -> None:
    _rejects(w, ValueError, lambda: uvm_loan(w.p.map, 0, PS, UVM_LOAN_TOPAGE), "outside")
    top = w.p.map.maxva
    _rejects(w, ValueError, lambda: uvm_loan(w.p.map, top, PS, UVM_LOAN_TOPAGE), "outside")


# ------------------------------------------------------------- uvm_unloan


def test_unloan_twice_is_kernel_assertion(w: World) -> None:
    """KASSERT(pg->loan_count > 0): the second unloan of the same loan."""
    p = w.p
    extra = p.mmap(PS)
    p.write(extra, b"e")
    pages = uvm_loan(p.map, extra, PS, UVM_LOAN_TOPAGE)
    uvm_unloan(pages, UVM_LOAN_TOPAGE)
    _rejects(w, KernelAssertion, lambda: uvm_unloan(pages, UVM_LOAN_TOPAGE), "loan_count")


def test_unloan_twice_of_a_freed_orphan(w: World) -> None:
    """The page was freed by the first unloan: the second finds it free."""
    p = w.p
    extra = p.mmap(PS)
    p.write(extra, b"e")
    pages = uvm_loan(p.map, extra, PS, UVM_LOAN_TOPAGE)
    p.munmap(extra, PS)
    uvm_unloan(pages, UVM_LOAN_TOPAGE)
    _rejects(w, KernelAssertion, lambda: uvm_unloan(pages, UVM_LOAN_TOPAGE), "free")


def test_unloan_more_than_loaned_in_one_call(w: World) -> None:
    """The same page listed more often than it is loaned: nothing changes,
    not even the loans that could have been dropped."""
    pg = w.pages[0]
    n = pg.loan_count
    _rejects(w, KernelAssertion, lambda: uvm_unloan([pg] * (n + 1), UVM_LOAN_TOPAGE))
    assert pg.loan_count == n


def test_unloan_never_loaned(w: World) -> None:
    p = w.p
    extra = p.mmap(PS)
    p.write(extra, b"n")
    pg = page_at(p, extra)
    assert pg is not None and pg.loan_count == 0
    _rejects(w, KernelAssertion, lambda: uvm_unloan([w.pages[0], pg], UVM_LOAN_TOPAGE))


def test_unloan_with_wrong_flag(w: World) -> None:
    """Pages with TOANON, anons with TOPAGE: TypeError, nothing changes."""
    _rejects(w, TypeError, lambda: uvm_unloan(w.pages, UVM_LOAN_TOANON), "anons")
    anon = anon_at(w.p, w.buf)
    assert anon is not None
    _rejects(w, TypeError, lambda: uvm_unloan([anon], UVM_LOAN_TOPAGE), "pages")


@pytest.mark.parametrize("item", [0, None, "page", 4096.0, b"x"])
def test_unloan_non_page_items(w: World, item: object) -> None:
    _rejects(w, TypeError, lambda: uvm_unloan([w.pages[0], item], UVM_LOAN_TOPAGE))  # type: ignore[arg-type]


@pytest.mark.parametrize("flags", [0, 3, 8])
def test_unloan_bad_flags(w: World, flags: int) -> None:
    _rejects(w, ValueError, lambda: uvm_unloan(w.pages, flags))


def test_unloan_pages_of_another_machine(w: World) -> None:
    other = Machine(ncpus=1, memory="512k")
    try:
        q = other.spawn("q")
        b = q.mmap(PS)
        q.write(b, b"o")
        theirs = [x for x in uvm_loan(q.map, b, PS, UVM_LOAN_TOPAGE) if isinstance(x, Page)]
        _rejects(w, ValueError, lambda: uvm_unloan(w.pages + theirs, UVM_LOAN_TOPAGE), "machines")
    finally:
        other.close()


def test_unloan_empty_is_a_no_op(w: World) -> None:
    before = machine_snapshot(w.m)
    uvm_unloan([], UVM_LOAN_TOPAGE)
    uvm_unloan([], UVM_LOAN_TOANON)
    assert machine_snapshot(w.m) == before


# ------------------------------------------------------------- kernel loans


def test_release_twice(w: World) -> None:
    w.kf.release()
    _rejects(w, KernelAssertion, w.kf.release, "twice")


def test_read_after_release(w: World) -> None:
    w.kf.release()
    _rejects(w, KernelAssertion, lambda: w.kf.read(0, 1), "released")


def test_kernel_loan_of_exited_process(w: World) -> None:
    _rejects(w, ValueError, lambda: w.m.kernel_loan(w.dead, 0x20000000, PS), "exited")


def test_kernel_loan_of_foreign_process(w: World) -> None:
    other = Machine(ncpus=1, memory="512k")
    try:
        q: Process = other.spawn("q")
        _rejects(w, ValueError, lambda: w.m.kernel_loan(q, 0x20000000, PS), "process")
    finally:
        other.close()


@pytest.mark.parametrize(("va_off", "length"), [(0, 0), (0, -1), (0, 1.5), (-(10**12), 4)])
def test_kernel_loan_bad_range(w: World, va_off: int, length: int) -> None:
    va = w.buf + va_off if va_off > -(10**12) else -1
    _rejects(w, ValueError, lambda: w.m.kernel_loan(w.p, va, length))


def test_kernel_loan_bad_cpu(w: World) -> None:
    _rejects(w, ValueError, lambda: w.m.kernel_loan(w.p, w.buf, 1, cpu=7), "CPU")


def test_kernel_loan_of_hole_range_fails_cleanly(w: World) -> None:
    """A failing uvm_loan under kernel_loan allocates no KVA and maps nothing
    (the partial loans are undone; pages only lose W, as in NetBSD)."""
    m = w.m
    end = w.p.map.uvm_map_lookup_entry(w.buf)
    assert end is not None
    from uvmloan import UVMError

    kmap_before = list(m.kernel_map.entries)
    with pytest.raises(UVMError):
        m.kernel_loan(w.p, end.end - PS, 2 * PS + 8 * PS * 1000)
    assert list(m.kernel_map.entries) == kmap_before
    assert all(kl.released is False for kl in m.kernel_loans)
    check_invariants(m)


def test_loanuobjpages_bad_args(w: World) -> None:
    _rejects(w, TypeError, lambda: uvm_loanuobjpages(w.p, 0, 1), "UVMObject")  # type: ignore[arg-type]
    _rejects(w, ValueError, lambda: uvm_loanuobjpages(w.vn, 1, 1), "pgoff")
    _rejects(w, ValueError, lambda: uvm_loanuobjpages(w.vn, -PS, 1), "pgoff")
    _rejects(w, ValueError, lambda: uvm_loanuobjpages(w.vn, 0, 0), "npages")
    _rejects(w, ValueError, lambda: uvm_loanuobjpages(w.vn, 0, -3), "npages")


def test_kernel_loan_file_bad_args(w: World) -> None:
    _rejects(w, ValueError, lambda: w.m.kernel_loan_file(w.vn, 0, 0))
    _rejects(w, ValueError, lambda: w.m.kernel_loan_file(w.vn, -1, 10))


def test_world_is_consistent(w: World) -> None:
    """The fixture itself: every kind of loan outstanding, invariants hold."""
    assert isinstance(w.kl, KernelLoan) and w.kl.npages == 4
    kinds = {pg.loan_count for pg in w.kl.pages}
    assert kinds and min(kinds) >= 1
    check_invariants(w.m)
