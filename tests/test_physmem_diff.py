"""Differential tests: the C module against its pure-Python twin.

Random operation sequences (valid and invalid) run on a C arena and a
pure-Python arena side by side; results, errors (class and message) and the
whole arena contents must be identical after every step.  A second test drives
the raw entry points directly with boundary-heavy integers and compares the
return codes, so the two check the same things in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from uvmloan import _physmem_py as py
from uvmloan.physmem import PhysMem, Piece, available_backends

pytestmark = pytest.mark.skipif(
    "c" not in available_backends(), reason="the C backend is not built"
)

NPAGES = 8
PAGE_SIZES = [512, 1024]

Outcome = tuple[Any, ...]


def outcome(fn: Callable[[], Any]) -> Outcome:
    try:
        r = fn()
    except Exception as e:  # the class and message are compared
        return ("error", type(e).__name__, str(e))
    if isinstance(r, (bytes, bytearray, memoryview)):
        return ("ok", bytes(r))
    return ("ok", r)


# mostly valid frames, sometimes just outside, sometimes absurd
frames_st = st.one_of(
    st.integers(0, NPAGES - 1),
    st.integers(0, NPAGES - 1),
    st.integers(0, NPAGES - 1),
    st.sampled_from([-1, NPAGES, NPAGES + 1, 2**31, -(2**63), 2**63 - 1, 2**64]),
)
bytes_st = st.integers(0, 255) | st.sampled_from([-1, 256, 2**63])


@st.composite
def piece_st(draw: st.DrawFn, ps: int, valid: bool = True) -> Piece:
    f = draw(st.integers(0, NPAGES - 1) if valid else frames_st)
    off = draw(st.integers(0, ps - 1))
    ln = draw(st.integers(0, ps - off))
    if not valid:
        off = draw(st.sampled_from([off, off, -1, ps, ps - 1]))
        ln = draw(st.sampled_from([ln, ln, -1, ps - off + 1, ps]))
    return (f, off, ln)


class DiffMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ps = 512
        self.c: PhysMem | None = None
        self.p: PhysMem | None = None

    @initialize(ps=st.sampled_from(PAGE_SIZES), poison=st.booleans())
    def make(self, ps: int, poison: bool) -> None:
        self.ps = ps
        self.c = PhysMem(NPAGES, ps, backend="c", poison=poison)
        self.p = PhysMem(NPAGES, ps, backend="python", poison=poison)

    def both(self, op: Callable[[PhysMem], Any]) -> Any:
        assert self.c is not None and self.p is not None
        rc, rp = outcome(lambda: op(self.c)), outcome(lambda: op(self.p))  # type: ignore[arg-type]
        assert rc == rp
        return rc

    @invariant()
    def same_memory(self) -> None:
        if self.c is not None and self.p is not None:
            for f in range(NPAGES):
                assert self.c.frame_view(f) == self.p.frame_view(f), f

    def teardown(self) -> None:
        for m in (self.c, self.p):
            if m is not None:
                m.close()

    # -- pages
    @rule(src=frames_st, dst=frames_st)
    def copy_page(self, src: int, dst: int) -> None:
        self.both(lambda m: m.copy_page(src, dst))

    @rule(f=frames_st)
    def zero_page(self, f: int) -> None:
        self.both(lambda m: m.zero_page(f))

    @rule(f=frames_st, b=bytes_st)
    def fill_page(self, f: int, b: int) -> None:
        self.both(lambda m: m.fill_page(f, b))

    @rule(a=frames_st, b=frames_st)
    def compare_pages(self, a: int, b: int) -> None:
        self.both(lambda m: m.compare_pages(a, b))

    @rule(f=frames_st)
    def release_frame(self, f: int) -> None:
        self.both(lambda m: m.release_frame(f))

    # -- batches
    @rule(pairs=st.lists(st.tuples(frames_st, frames_st), max_size=6))
    def copy_pages(self, pairs: list[tuple[int, int]]) -> None:
        self.both(lambda m: m.copy_pages([s for s, _ in pairs], [d for _, d in pairs]))

    @rule(fl=st.lists(frames_st, max_size=6))
    def zero_pages(self, fl: list[int]) -> None:
        self.both(lambda m: m.zero_pages(fl))

    @rule(fl=st.lists(frames_st, max_size=6), b=bytes_st)
    def fill_pages(self, fl: list[int], b: int) -> None:
        self.both(lambda m: m.fill_pages(fl, b))

    # -- byte ranges
    @rule(
        fl=st.lists(frames_st, max_size=4),
        off=st.integers(-1, 1024),
        data=st.binary(max_size=2200),
        kind=st.sampled_from(["bytes", "bytearray", "memoryview"]),
    )
    def copyin(self, fl: list[int], off: int, data: bytes, kind: str) -> None:
        buf: Any = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}[kind](data)
        self.both(lambda m: m.copyin(fl, off, buf))

    @rule(fl=st.lists(frames_st, max_size=4), off=st.integers(-1, 1024), n=st.integers(-1, 2200))
    def copyout(self, fl: list[int], off: int, n: int) -> None:
        self.both(lambda m: m.copyout(fl, off, n))

    @rule(fl=st.lists(frames_st, max_size=4), off=st.integers(-1, 1024), n=st.integers(0, 2200))
    def copyout_into(self, fl: list[int], off: int, n: int) -> None:
        def op(m: PhysMem) -> bytes:
            out = bytearray(n)
            m.copyout_into(fl, off, out)
            return bytes(out)

        self.both(op)

    # -- scatter / gather / checksum
    @rule(data=st.data(), valid=st.booleans())
    def gather(self, data: st.DataObject, valid: bool) -> None:
        pieces = data.draw(st.lists(piece_st(self.ps, valid), max_size=5))
        self.both(lambda m: m.gather(pieces))
        extra = data.draw(st.integers(-3, 3))

        def into(m: PhysMem) -> tuple[int, bytes]:
            out = bytearray(max(0, sum(max(p[2], 0) for p in pieces) + extra))
            n = m.gather_into(pieces, out)
            return n, bytes(out)

        self.both(into)

    @rule(data=st.data(), valid=st.booleans(), delta=st.sampled_from([0, 0, 0, -1, 1]))
    def scatter(self, data: st.DataObject, valid: bool, delta: int) -> None:
        pieces = data.draw(st.lists(piece_st(self.ps, valid), max_size=5))
        n = max(0, sum(max(p[2], 0) for p in pieces) + delta)
        payload = data.draw(st.binary(min_size=n, max_size=n))
        self.both(lambda m: m.scatter(pieces, payload))

    @rule(
        data=st.data(),
        valid=st.booleans(),
        initial=st.integers(0, 2**64 - 1) | st.sampled_from([0, 0xFFFF, -1, 2**64]),
    )
    def cksum(self, data: st.DataObject, valid: bool, initial: int) -> None:
        pieces = data.draw(st.lists(piece_st(self.ps, valid), max_size=6))
        self.both(lambda m: m.cksum_sum(pieces, initial))
        self.both(lambda m: m.in_cksum(pieces, initial))

    @rule(payload=st.binary(max_size=300), initial=st.integers(0, 2**64 - 1))
    def cksum_bytes(self, payload: bytes, initial: int) -> None:
        self.both(lambda m: m.cksum_bytes(payload, initial))

    @rule(f=frames_st)
    def read_frame(self, f: int) -> None:
        self.both(lambda m: m.read_frame(f))


DiffMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDiffMachine = DiffMachine.TestCase


# ---------------------------------------------------------------------------
# the raw entry points: same return code for the same arguments

# boundary-heavy integers for the raw entry points (page size 512, 8 frames)
frame_e = st.one_of(st.integers(-1, NPAGES), st.sampled_from([-(2**63), 2**63 - 1]))
edge_int = st.one_of(
    st.sampled_from([-2, -1, 0, 1, 2, 511, 512, 513, 1024]),
    st.integers(0, 1100),
    st.sampled_from([-(2**63), 2**63 - 1]),
)


class Raw:
    """One arena per backend, driven through the low-level API."""

    def __init__(self) -> None:
        from uvmloan._physmem import ffi, lib

        self.ffi, self.lib = ffi, lib
        pp = ffi.new("pm_arena **")
        assert lib.pm_create(NPAGES, 512, pp) == 0
        self.ch = pp[0]
        out: list[Any] = [None]
        assert py.pm_create(NPAGES, 512, out) == 0
        self.ph = out[0]
        for f in range(NPAGES):
            seed = bytes(((f * 37 + i * 11) & 0xFF) for i in range(512))
            assert lib.pm_copyin1(self.ch, f, 0, seed, 512) == 0
            assert py.pm_copyin1(self.ph, f, 0, memoryview(seed), 512) == 0

    def close(self) -> None:
        self.lib.pm_destroy(self.ch)
        py.pm_destroy(self.ph)

    def memory(self) -> tuple[bytes, bytes]:
        c = bytes(self.ffi.buffer(self.lib.pm_base(self.ch), NPAGES * 512))
        base = py.pm_base(self.ph)
        assert base is not None
        return c, bytes(base)


RAW_OPS = [
    "copy_page",
    "zero_page",
    "fill_page",
    "poison",
    "compare",
    "copy_pages",
    "fill_pages",
    "copyin",
    "copyout",
    "gather",
    "scatter",
    "cksum",
    "cksum_buf",
]


@settings(max_examples=500, deadline=None)
@given(
    op=st.sampled_from(RAW_OPS),
    a=st.one_of(frame_e, edge_int),
    b=st.one_of(frame_e, edge_int),
    c=edge_int,
    lst=st.lists(frame_e, max_size=5),
    pieces=st.lists(st.tuples(frame_e, edge_int, edge_int), max_size=4),
    data=st.binary(max_size=1200),
    initial=st.integers(0, 2**64 - 1),
)
def test_raw_codes_agree(
    op: str,
    a: int,
    b: int,
    c: int,
    lst: list[int],
    pieces: list[tuple[int, int, int]],
    data: bytes,
    initial: int,
) -> None:
    r = Raw()
    ffi, lib = r.ffi, r.lib
    try:
        n = len(data)
        if op == "copy_page":
            got = (lib.pm_copy_page(r.ch, a, b), py.pm_copy_page(r.ph, a, b))
        elif op == "zero_page":
            got = (lib.pm_zero_page(r.ch, a), py.pm_zero_page(r.ph, a))
        elif op == "fill_page":
            got = (lib.pm_fill_page(r.ch, a, b), py.pm_fill_page(r.ph, a, b))
        elif op == "poison":
            got = (lib.pm_poison_page(r.ch, a), py.pm_poison_page(r.ph, a))
        elif op == "compare":
            oc, op_ = ffi.new("int64_t *"), [None]
            got = (lib.pm_compare_pages(r.ch, a, b, oc), py.pm_compare_pages(r.ph, a, b, op_))
            if got[0] == 0:
                assert oc[0] == op_[0]
        elif op == "copy_pages":
            got = (
                lib.pm_copy_pages(r.ch, lst, lst[::-1], len(lst)),
                py.pm_copy_pages(r.ph, lst, lst[::-1], len(lst)),
            )
        elif op == "fill_pages":
            got = (
                lib.pm_fill_pages(r.ch, lst, len(lst), a),
                py.pm_fill_pages(r.ph, lst, len(lst), a),
            )
        elif op == "copyin":
            ln = min(max(c, -2), n)
            got = (
                lib.pm_copyin(r.ch, lst, len(lst), b, data, ln),
                py.pm_copyin(r.ph, lst, len(lst), b, memoryview(data), ln),
            )
        elif op == "copyout":
            ln = min(max(c, -2), 1200)
            cb, pb = ffi.new("char[]", 1200), bytearray(1200)
            got = (
                lib.pm_copyout(r.ch, lst, len(lst), b, cb, ln),
                py.pm_copyout(r.ph, lst, len(lst), b, memoryview(pb), ln),
            )
            assert bytes(ffi.buffer(cb)) == bytes(pb)
        elif op == "gather":
            cb, pb = ffi.new("char[]", 1200), bytearray(1200)
            dl = min(a, 1200)
            wc, wp = ffi.new("int64_t *"), [None]
            got = (
                lib.pm_gather(r.ch, pieces, len(pieces), cb, dl, wc),
                py.pm_gather(r.ph, pieces, len(pieces), memoryview(pb), dl, wp),
            )
            assert bytes(ffi.buffer(cb)) == bytes(pb)
            if got[0] == 0:
                assert wc[0] == wp[0]
        elif op == "scatter":
            sl = min(a, n)
            got = (
                lib.pm_scatter(r.ch, pieces, len(pieces), data, sl),
                py.pm_scatter(r.ph, pieces, len(pieces), memoryview(data), sl),
            )
        elif op == "cksum":
            sc, sp = ffi.new("uint32_t *"), [None]
            got = (
                lib.pm_cksum(r.ch, pieces, len(pieces), initial, sc),
                py.pm_cksum(r.ph, pieces, len(pieces), initial, sp),
            )
            if got[0] == 0:
                assert sc[0] == sp[0]
        else:
            sc, sp = ffi.new("uint32_t *"), [None]
            ln = min(c, n)
            got = (
                lib.pm_cksum_buf(data, ln, initial, sc),
                py.pm_cksum_buf(memoryview(data), ln, initial, sp),
            )
            if got[0] == 0:
                assert sc[0] == sp[0]
        assert got[0] == got[1], (op, got)
        cm, pm_ = r.memory()
        assert cm == pm_
    finally:
        r.close()
