"""PTETable (uvmloan.ptetable): the C type and its pure-Python twin behave as
a dict of page-aligned va -> PTE iterated in address order, with the PTPs
of 512 entries made and freed as x86's pmap makes and frees them."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvmloan import Machine
from uvmloan import ptetable as ptm
from uvmloan.ptetable import PTP_SHIFT, PyPTETable

SHIFT = 12
PS = 1 << SHIFT
SPAN = PS << PTP_SHIFT  # the address space one PTP covers (2 MiB)

KINDS: list[Any] = [PyPTETable]
if ptm._c is not None:
    KINDS.append(ptm._c.PTETable)


def kinds(f: Any) -> Any:
    return pytest.mark.parametrize("kind", KINDS, ids=[k.__module__ for k in KINDS])(f)


class Reference:
    """What a PTETable must do: a dict, sorted iteration, PTPs counted by
    va >> (page_shift + 9)."""

    def __init__(self) -> None:
        self.d: dict[int, int] = {}

    def nptp(self) -> int:
        return len({va // SPAN for va in self.d})


# Addresses in a few PTPs (so PTPs fill, empty and come back) and far apart
# (so the hash that finds them collides and deletes shift), some unaligned,
# negative or too large, and keys that are not ints at all.
# Few enough addresses that stores overwrite, removals find their entry and
# unaligned lookups land on a page with one; PTPs enough to grow the hash
# twice (8, then 16 slots) and make PTPs collide in it.
ptp_numbers = st.sampled_from([0, 1, 2, 7, 8, 15, 16, 1 << 20, (1 << 52) - 1])
aligned = st.builds(
    lambda p, i: p * SPAN + i * PS, ptp_numbers, st.sampled_from([0, 1, 2, 255, 510, 511])
)
keys = st.one_of(
    aligned,
    aligned,
    aligned,
    st.builds(lambda v, o: v + o, aligned, st.integers(1, PS - 1)),
    st.integers(-(1 << 70), -1),
    st.just(1 << 64),
    st.just(None),
    st.just("0x1000"),
    st.just(1.0 * PS),
)
ptes = st.one_of(st.integers(0, (1 << 64) - 1), st.just(-1), st.just(1 << 64), st.just("pte"))
ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "get", "get2", "getitem", "contains", "del", "pop", "pop2",
                         "len", "items", "clear"]),
        keys,
        ptes,
    ),
    max_size=100,
)


def outcome(fn: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn())
    except (KeyError, TypeError, ValueError) as e:
        return (type(e).__name__, None)


def apply(t: Any, op: str, k: Any, v: Any) -> tuple[str, Any]:
    if op == "set":
        return outcome(lambda: t.__setitem__(k, v))
    if op == "get":
        return outcome(lambda: t.get(k))
    if op == "get2":
        return outcome(lambda: t.get(k, "dflt"))
    if op == "getitem":
        return outcome(lambda: t[k])
    if op == "contains":
        return outcome(lambda: k in t)
    if op == "del":
        return outcome(lambda: t.__delitem__(k))
    if op == "pop":
        return outcome(lambda: t.pop(k))
    if op == "pop2":
        return outcome(lambda: t.pop(k, "dflt"))
    if op == "len":
        return outcome(lambda: len(t))
    if op == "items":
        return outcome(lambda: (list(t.items()), t.keys(), t.values(), list(t)))
    t.clear()
    return ("ok", None)


def ref_apply(r: Reference, op: str, k: Any, v: Any) -> tuple[str, Any]:
    """The rules, spelled out on a dict."""
    d = r.d
    valid = isinstance(k, int) and 0 <= k < 1 << 64 and k % PS == 0
    if op == "set":
        # the key is checked first, then the PTE: each for its type, then its value
        for x, ok in ((k, valid), (v, isinstance(v, int) and 0 <= v < 1 << 64)):
            if not isinstance(x, int):
                return ("TypeError", None)
            if not ok:
                return ("ValueError", None)
        d[k] = v
        return ("ok", None)
    present = valid and k in d
    if op == "get":
        return ("ok", d[k] if present else None)
    if op == "get2":
        return ("ok", d[k] if present else "dflt")
    if op == "getitem":
        return ("ok", d[k]) if present else ("KeyError", None)
    if op == "contains":
        return ("ok", present)
    if op in ("del", "pop"):
        if not present:
            return ("KeyError", None)
        pte = d.pop(k)
        return ("ok", pte if op == "pop" else None)
    if op == "pop2":
        return ("ok", d.pop(k) if present else "dflt")
    if op == "len":
        return ("ok", len(d))
    if op == "items":
        items = sorted(d.items())
        return ("ok", (items, [a for a, _ in items], [b for _, b in items], [a for a, _ in items]))
    d.clear()
    return ("ok", None)


@kinds
@settings(max_examples=300, deadline=None)
@given(ops=ops)
def test_behaves_as_the_reference(kind: Any, ops: list[tuple[str, Any, Any]]) -> None:
    t = kind(SHIFT)
    r = Reference()
    for op, k, v in ops:
        got = apply(t, op, k, v)
        want = ref_apply(r, op, k, v)
        assert got == want, (op, k, v)
        assert len(t) == len(r.d)
        assert t.nptp == r.nptp()
    assert t.items() == sorted(r.d.items())


@kinds
def test_many_ptps_come_and_go_in_any_order(kind: Any) -> None:
    """Hundreds of PTPs (the hash grows five times and its probe runs
    overlap), removed in a shuffled order: after every removal each entry
    left is found, and iteration is in address order."""
    rng = random.Random(0)
    t = kind(SHIFT)
    ref: dict[int, int] = {}
    vas = [p * SPAN + (p % 512) * PS for p in rng.sample(range(1 << 30), 300)]
    for n, va in enumerate(vas):
        t[va] = n
        ref[va] = n
        t[va + PS * (va % 3 == 0)] = n + 1  # a second entry in some PTPs
        ref[va + PS * (va % 3 == 0)] = n + 1
    assert t.nptp == 300 and t.items() == sorted(ref.items())
    order = list(ref)
    rng.shuffle(order)
    for k, va in enumerate(order):
        assert t.pop(va) == ref.pop(va)
        assert va not in t and va + 1 not in t
        if k % 17 == 0:
            assert all(t[x] == y for x, y in ref.items())
            assert t.items() == sorted(ref.items()) and list(t) == sorted(ref)
        assert t.nptp == len({x // SPAN for x in ref})
    assert len(t) == 0 and t.nptp == 0


@kinds
def test_ptps_are_made_and_freed_with_their_entries(kind: Any) -> None:
    t = kind(SHIFT)
    # one PTP for the first 512 pages, a second for the 513th
    for i in range(513):
        t[i * PS] = i
    assert t.nptp == 2 and len(t) == 513
    del t[512 * PS]
    assert t.nptp == 1  # pmap_free_ptp: the last PTE of that PTP went
    for i in range(511):
        t.pop(i * PS)
    assert t.nptp == 1 and t[511 * PS] == 511
    t.pop(511 * PS)
    assert t.nptp == 0 and len(t) == 0 and not t and t.items() == []


@kinds
def test_an_unaligned_address_has_no_entry_even_in_a_mapped_page(kind: Any) -> None:
    # as in the dict: only the page-aligned key is there
    t = kind(SHIFT)
    t[3 * PS] = 9
    for va in (3 * PS + 1, 3 * PS + PS - 1, 3 * PS + 8):
        assert va not in t and t.get(va) is None and t.get(va, "d") == "d"
        with pytest.raises(KeyError):
            t[va]
        assert t.pop(va, "d") == "d"
    assert t.items() == [(3 * PS, 9)]


@kinds
def test_an_entry_whose_pte_is_zero_is_still_an_entry(kind: Any) -> None:
    # the model tests PTE_P, not presence, in places: an entry may be 0
    t = kind(SHIFT)
    t[PS] = 0
    assert PS in t and t[PS] == 0 and t.get(PS, 7) == 0 and len(t) == 1


@kinds
def test_bad_stores_say_what_is_wrong_and_change_nothing(kind: Any) -> None:
    t = kind(SHIFT)
    t[0] = 1
    with pytest.raises(ValueError, match="not page aligned"):
        t[PS + 1] = 5
    with pytest.raises(ValueError, match=r"virtual address is in \[0, 2\*\*64\)"):
        t[-PS] = 5
    with pytest.raises(TypeError, match="virtual address is an int, not str"):
        t["0"] = 5
    with pytest.raises(TypeError, match="a PTE is an int, not float"):
        t[PS] = 1.0
    with pytest.raises(ValueError, match=r"a PTE is in \[0, 2\*\*64\)"):
        t[PS] = 1 << 64
    assert t.items() == [(0, 1)] and t.nptp == 1
    with pytest.raises(ValueError, match=r"page_shift must be in \[4, 30\], got 3"):
        kind(3)
    with pytest.raises(KeyError):
        t.pop(PS)


def test_the_c_table_holds_a_dense_pte_in_about_eight_bytes() -> None:
    if ptm._c is None:
        pytest.skip("the C extension uvmloan._ptetable is not built")
    t = ptm._c.PTETable(SHIFT)
    n = 8 * 512
    for i in range(n):
        t[(1 << 40) + i * PS] = i | 1
    # 8 PTPs of 512 entries: 8 bytes a PTE, a presence bit, a few words
    # of header, and the hash that finds them
    assert t.nptp == 8
    assert 8 * n <= t.nbytes <= 8.3 * n
    assert PyPTETable(SHIFT).nbytes == 0  # the twin's memory is Python's


def test_pmaps_keep_their_ptes_in_the_backends_table() -> None:
    with Machine(ncpus=1, memory="8M", trace="off") as m:
        p = m.spawn("p")
        va = p.mmap(4 * PS)
        p.write(va, b"x")
        pm = p.map.pmap
        assert type(pm.ptes) is ptm.PTETable
        assert pm.ptes.page_shift == SHIFT and list(pm.ptes) == [va]
        assert ("c" if ptm._c is not None else "python") == ptm.BACKEND


@kinds
def test_page_shift_is_checked_as_the_c_type_checks_it(kind: Any) -> None:
    assert kind(4).page_shift == 4 and kind(30).page_shift == 30
    for bad in (3, 31, True):  # True is the int 1
        msg = rf"^PTETable: page_shift must be in \[4, 30\], got {int(bad)}$"
        with pytest.raises(ValueError, match=msg):
            kind(bad)
    with pytest.raises(TypeError):
        kind("12")


def test_the_twin_names_a_page_shift_that_is_not_an_int() -> None:
    with pytest.raises(TypeError, match=r"^PTETable: page_shift must be an int, not str$"):
        PyPTETable("12")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^PTETable: page_shift must be an int, not float$"):
        PyPTETable(12.0)  # type: ignore[arg-type]


@kinds
def test_errors_carry_the_address_and_say_exactly_what_is_wrong(kind: Any) -> None:
    t = kind(SHIFT)
    ops: list[Callable[[], object]] = [
        lambda: t[5 * PS], lambda: t.__delitem__(5 * PS), lambda: t.pop(5 * PS)
    ]
    for op in ops:
        with pytest.raises(KeyError) as e:
            op()
        assert e.value.args == (5 * PS,)
    with pytest.raises(ValueError, match=r"^PTETable: a virtual address is in \[0, 2\*\*64\)$"):
        t[1 << 64] = 1
    with pytest.raises(ValueError, match=r"^PTETable: a PTE is in \[0, 2\*\*64\)$"):
        t[PS] = -1
    with pytest.raises(ValueError, match=r"^PTETable: va 0x1001 is not page aligned$"):
        t[PS + 1] = 1
    t[PS] = 7
    with pytest.raises(TypeError, match=r"^pop\(va\[, default\]\)$"):
        t.pop(PS, 1, 2)
    assert t.items() == [(PS, 7)]
