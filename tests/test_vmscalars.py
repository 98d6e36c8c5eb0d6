"""PageScalars / AnonScalars (uvmloan.vmscalars): the integer fields of
vm_page and vm_anon as machine words.  The C type and the pure-Python twin
store and return the same values; the C type refuses what its word cannot
hold and keeps the old value; a resident page of the C backend holds no int
object for its frame, flags, offset or first mapping's va."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uvmloan import Machine
from uvmloan import vmscalars as vs
from uvmloan.anon import Anon
from uvmloan.page import Page
from uvmloan.pmap.pmap import VMPageMD
from uvmloan.vmscalars import ANON_FIELDS, PAGE_FIELDS, PyAnonScalars, PyPageScalars, _word

PAGE_KINDS: list[Any] = [PyPageScalars]
ANON_KINDS: list[Any] = [PyAnonScalars]
if vs._c is not None:
    PAGE_KINDS.append(vs._c.PageScalars)
    ANON_KINDS.append(vs._c.AnonScalars)

BOTH = [(k, PAGE_FIELDS) for k in PAGE_KINDS] + [(k, ANON_FIELDS) for k in ANON_KINDS]
IDS = [f"{k.__module__}.{k.__name__}" for k, _ in BOTH]

needs_c = pytest.mark.skipif(
    vs._c is None, reason="the C type is not in use (not built, or UVMLOAN_PUREPYTHON=1)"
)


@pytest.mark.parametrize(("kind", "fields"), BOTH, ids=IDS)
def test_fields_start_at_zero(kind: Any, fields: dict[str, tuple[int, int]]) -> None:
    o = kind()
    assert {f: getattr(o, f) for f in fields} == dict.fromkeys(fields, 0)


def _values(lo: int, hi: int) -> st.SearchStrategy[int]:
    """The ends of the word's range, values around the cached small ints,
    and anything in between."""
    edges = [lo, lo + 1, hi - 1, hi, 0, 1, 255, 256, 257, 4096, 0x806]
    return st.one_of(st.sampled_from([v for v in edges if lo <= v <= hi]), st.integers(lo, hi))


@st.composite
def stores(draw: st.DrawFn, fields: dict[str, tuple[int, int]]) -> list[tuple[str, int]]:
    names = sorted(fields)
    out = []
    for _ in range(draw(st.integers(1, 12))):
        f = draw(st.sampled_from(names))
        out.append((f, draw(_values(*fields[f]))))
    return out


@pytest.mark.parametrize("fields", [PAGE_FIELDS, ANON_FIELDS], ids=["page", "anon"])
@given(data=st.data())
def test_c_and_twin_agree_on_every_store(fields: dict[str, tuple[int, int]], data: Any) -> None:
    kinds = PAGE_KINDS if fields is PAGE_FIELDS else ANON_KINDS
    objs = [k() for k in kinds]
    want = dict.fromkeys(fields, 0)
    for f, v in data.draw(stores(fields)):
        want[f] = v
        for o in objs:
            setattr(o, f, v)
            got = getattr(o, f)
            assert got == v and type(got) is int, (type(o), f, v, got)
        for o in objs:
            assert {g: getattr(o, g) for g in fields} == want


BAD: list[tuple[object, type[Exception]]] = [
    (None, TypeError),
    (1.0, TypeError),
    ("5", TypeError),
    (b"\x05", TypeError),
]


@needs_c
@pytest.mark.parametrize(("kind", "fields"), [b for b in BOTH if b[0].__module__ != vs.__name__])
def test_c_refuses_what_the_word_cannot_hold_and_keeps_the_value(
    kind: Any, fields: dict[str, tuple[int, int]]
) -> None:
    o = kind()
    for f, (lo, hi) in fields.items():
        setattr(o, f, 77)
        cases: list[tuple[object, type[Exception]]] = [
            *BAD,
            (lo - 1, OverflowError),
            (hi + 1, OverflowError),
            (1 << 70, OverflowError),
        ]
        for bad, exc in cases:
            # the rule the twin's docstring states, applied to the C type
            with pytest.raises(exc) as rule:
                _word(f, bad)
            with pytest.raises(exc) as got:
                setattr(o, f, bad)
            assert str(got.value) == str(rule.value), (f, bad)
            assert f in str(got.value)
            assert getattr(o, f) == 77, f"{f} changed by a refused store of {bad!r}"
        with pytest.raises(TypeError, match=f"cannot delete the {f} field"):
            delattr(o, f)
        assert getattr(o, f) == 77


def test_word_rule() -> None:
    assert _word("pv_va", (1 << 64) - 1) == (1 << 64) - 1
    assert _word("frame", -(1 << 63)) == -(1 << 63)
    assert _word("flags", True) is True  # an int (bool is one), as the C type takes it
    with pytest.raises(OverflowError, match="pv_va does not fit in an unsigned 64-bit word"):
        _word("pv_va", -1)
    with pytest.raises(OverflowError, match="an_id does not fit in a signed 64-bit word"):
        _word("an_id", 1 << 63)
    with pytest.raises(TypeError, match="offset must be an int, not float"):
        _word("offset", 0.5)
    with pytest.raises(KeyError):
        _word("loan_count", 1)


@needs_c
def test_c_store_of_an_int_subclass_stores_its_value() -> None:
    from uvmloan.param import PG

    assert vs._c is not None
    o = vs._c.PageScalars()
    o.flags = True
    assert o.flags == 1 and type(o.flags) is int
    o.flags = PG.ANON | PG.DIRTY
    assert o.flags == 0x802 and type(o.flags) is int


def test_page_and_anon_sit_on_the_active_backend() -> None:
    assert issubclass(VMPageMD, vs.PageScalars)
    assert issubclass(Page, vs.PageScalars)
    assert issubclass(Anon, vs.AnonScalars)
    assert ("c" if vs._c is not None else "python") == vs.BACKEND
    # the model's subclasses add no slot or attrs field of the same name
    # (which would shadow the word)
    for cls, fields in ((Page, PAGE_FIELDS), (Anon, ANON_FIELDS)):
        base = vs.PageScalars if cls is Page else vs.AnonScalars
        for klass in cls.__mro__[: cls.__mro__.index(base)]:
            assert not set(fields) & set(getattr(klass, "__slots__", ())), klass
        assert not set(fields) & {a.name for a in cls.__attrs_attrs__}


def _big_ints(o: object) -> list[int]:
    return [r for r in gc.get_referents(o) if type(r) is int and not -5 <= r <= 256]


def test_a_resident_page_holds_no_int_object_for_its_words() -> None:
    with Machine(ncpus=1, memory="4M") as m:
        p = m.spawn("p")
        va = p.mmap(64 * 4096)
        for i in range(64):
            p.write(va + i * 4096, b"w")
        pages = [pg for _f, pg in m.uvm.pages.items() if pg.uanon is not None]
        assert len(pages) == 64
        for pg in pages:
            assert pg.frame > 0 or pg is pages[0]
            assert pg.flags > 256 and pg.pv_va > 256  # values that need an int object
            assert pg.uanon.an_id > 0
            if vs.BACKEND == "c":
                assert _big_ints(pg) == [], pg
                assert _big_ints(pg.uanon) == [], pg.uanon
            else:
                # the twin keeps them as slots: the int objects are there
                assert pg.flags in _big_ints(pg) and pg.pv_va in _big_ints(pg)


@pytest.mark.parametrize("kind", [*PAGE_KINDS, *ANON_KINDS, Page, Anon], ids=lambda k: k.__name__)
def test_freeing_an_object_drops_its_type_reference(kind: Any) -> None:
    """A heap type's instance holds a reference to its type, released when
    the instance goes (the C type's dealloc does it for the Python
    subclasses too)."""
    import sys

    def make() -> object:
        if kind is Page:
            return Page(5, None)  # type: ignore[arg-type]
        return kind()

    objs = [make() for _ in range(10)]
    del objs
    gc.collect()
    before = sys.getrefcount(kind)
    objs = [make() for _ in range(1000)]
    assert sys.getrefcount(kind) >= before + 1000
    del objs
    gc.collect()
    assert sys.getrefcount(kind) == before


def test_optional_c_module_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from uvmloan._cext import optional_c_module

    assert optional_c_module("_no_such_extension") is None  # an optional build left it out
    monkeypatch.setenv("UVMLOAN_PUREPYTHON", "1")
    assert optional_c_module("_vmscalars") is None  # the twin asked for: not even imported
    monkeypatch.setenv("UVMLOAN_PUREPYTHON", "0")
    if vs._c is not None:
        assert optional_c_module("_vmscalars") is vs._c
