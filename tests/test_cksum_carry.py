"""The Internet checksum against a plain RFC 1071 reference, where carries matter.

tests/test_cksum.py uses 512-byte pages and mostly random bytes; with those a
sum that still carries after one fold is rare, so a fold that stops after one
step, or a carry lost when a piece's sum is byte-swapped because the piece
starts at an odd position of the stream, goes unseen.  Here the pages are
4 KiB and 64 KiB, the pieces many, at odd offsets and of odd lengths, the data
0xff-heavy, the initial values near 2**64, and one buffer is longer than the C
module's SUM_CHUNK (1 GiB; physmem.c has no build-time switch for a smaller
chunk).  Every backend is checked; the reference below is the only oracle.
"""

from __future__ import annotations

import mmap
import os
import random
import struct
import sys
from collections.abc import Callable, Iterator

import pytest

from uvmloan.physmem import PhysMem, Piece, available_backends


def word_sum(data: bytes) -> int:
    """Unfolded sum of the big-endian 16-bit words; an odd last byte is padded with 0."""
    if len(data) % 2:
        data += b"\x00"
    return sum(struct.unpack(f">{len(data) // 2}H", data))


def fold(s: int) -> int:
    """End-around carry until 16 bits remain (RFC 1071 section 4.1)."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def rfc1071(data: bytes, initial: int = 0) -> int:
    """The folded, not inverted, ones'-complement sum of data plus initial."""
    return fold(initial + word_sum(data))


# -- data that makes additions carry -------------------------------------------


def _random(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def _all_ff(rng: random.Random, n: int) -> bytes:
    return b"\xff" * n


# bytes.translate tables over random bytes: cheap, and the result is still random
_FF_HEAVY = bytes(0xFF if i < 224 else (i - 224) * 8 for i in range(256))
_NEAR_FFFF = bytes(
    0xFF if i < 200 else 0xFE if i < 224 else 0x00 if i < 240 else 0x01 for i in range(256)
)


def _ff_heavy(rng: random.Random, n: int) -> bytes:
    """Seven bytes in eight 0xff, the rest spread over 0..248."""
    return rng.randbytes(n).translate(_FF_HEAVY)


def _near_ffff(rng: random.Random, n: int) -> bytes:
    """0xff with some 0xfe, 0x00 and 0x01: every partial sum sits near a carry."""
    return rng.randbytes(n).translate(_NEAR_FFFF)


FILLS: list[Callable[[random.Random, int], bytes]] = [_random, _all_ff, _ff_heavy, _near_ffff]


def _initial(rng: random.Random) -> int:
    """Initial values with emphasis on the top of the 64-bit range."""
    r = rng.randrange(8)
    if r == 0:
        return 0
    if r == 1:
        return rng.randrange(1 << 16)
    if r == 2:
        return rng.randrange(1 << 64)
    if r == 3:
        return (1 << 32) - 1 - rng.randrange(1 << 8)
    return (1 << 64) - 1 - rng.randrange(1 << 17)  # within 2**17 of 2**64


def _piece_bounds(rng: random.Random, ps: int) -> tuple[int, int]:
    """(offset, length) inside one page, mostly odd offsets and odd lengths."""
    off = rng.randrange(ps)
    if rng.random() < 0.7:
        off |= 1
    room = ps - off
    r = rng.randrange(6)
    if r == 0:
        length = room  # up to the end of the page
    elif r == 1:
        length = min(room, rng.choice([1, 2, 3]))
    else:
        length = rng.randrange(room + 1)
        if rng.random() < 0.6 and length < room:
            length |= 1
    return off, length


NPIECES_MAX = 12

# (page size, cases): 64 KiB pages cost more per case; both budgets find the
# one-step fold many times over (it fails roughly one case in ten at 64 KiB).
BUDGETS = [(4096, 500), (65536, 80)]


@pytest.fixture(params=BUDGETS, ids=[f"ps{ps}" for ps, _ in BUDGETS])
def arena(request: pytest.FixtureRequest, backend: str) -> Iterator[tuple[PhysMem, int]]:
    ps, cases = request.param
    with PhysMem(NPIECES_MAX, ps, backend=backend) as m:
        yield m, cases


def test_many_pieces_match_the_reference(arena: tuple[PhysMem, int]) -> None:
    m, cases = arena
    ps = m.page_size
    rng = random.Random(0x1071 + ps)
    for case in range(cases):
        n = rng.randrange(2, NPIECES_MAX + 1)
        fill = FILLS[case % len(FILLS)]
        pieces: list[Piece] = []
        stream = b""
        # each piece on its own frame, the whole frame written (so a piece read
        # from the wrong offset sees other bytes, at least with random data)
        for frame in rng.sample(range(NPIECES_MAX), n):
            page = fill(rng, ps)
            m.copyin([frame], 0, page)
            off, length = _piece_bounds(rng, ps)
            pieces.append((frame, off, length))
            stream += page[off : off + length]
        initial = _initial(rng)
        want = rfc1071(stream, initial)
        ctx = (case, fill.__name__, pieces, initial)
        assert m.cksum_sum(pieces, initial) == want, ctx
        assert m.in_cksum(pieces, initial) == 0xFFFF - want, ctx
        assert m.cksum_bytes(stream, initial) == want, ctx
        # the same bytes one position later: every piece changes parity
        assert m.cksum_bytes(memoryview(b"\xff" + stream)[1:], initial) == want, ctx


@pytest.mark.parametrize("ps", [4096, 65536])
def test_whole_ff_pages_after_an_odd_piece(backend: str, ps: int) -> None:
    """Full pages of carry-heavy data, each behind an odd number of bytes."""
    rng = random.Random(ps)
    with PhysMem(8, ps, backend=backend) as m:
        for fill in FILLS:
            pages = [fill(rng, ps) for _ in range(6)]
            for f, page in enumerate(pages):
                m.copyin([f], 0, page)
            m.copyin([7], 0, b"\xff\x01\xfe")
            for lead in (1, 3):
                pieces: list[Piece] = [(7, 0, lead)] + [(f, 0, ps) for f in range(6)]
                stream = b"\xff\x01\xfe"[:lead] + b"".join(pages)
                for initial in (0, (1 << 64) - 1, (1 << 64) - 0x10000):
                    want = rfc1071(stream, initial)
                    got = m.cksum_sum(pieces, initial)
                    assert got == want, (fill.__name__, lead, initial)
                    assert m.cksum_bytes(stream, initial) == want


@pytest.mark.parametrize(
    "initial",
    [
        (1 << 64) - 1,
        (1 << 64) - 2,
        (1 << 64) - 0xFFFF,
        (1 << 64) - 0x10000,
        (1 << 64) - 0x10001,
        (1 << 63) + 0xFFFF,
        (1 << 48) - 1,
        (1 << 32) - 1,
        0xFFFF_FFFF_0000_FFFF,
    ],
)
def test_initial_near_two_to_the_64(backend: str, initial: int) -> None:
    with PhysMem(4, 4096, backend=backend) as m:
        for data in (
            b"",
            b"\x00",
            b"\x01",
            b"\xff",
            b"\xff\xff",
            b"\x00\x01\xff",
            b"\xff" * 4095,
            bytes(range(256)) * 3 + b"\x7f",
        ):
            want = rfc1071(data, initial)
            assert m.cksum_bytes(data, initial) == want, (data[:4], initial)
            if data:
                m.copyin([1], 4096 - len(data), data)
                piece: Piece = (1, 4096 - len(data), len(data))
                assert m.cksum_sum([piece], initial) == want
                assert m.in_cksum([piece], initial) == 0xFFFF - want
            else:
                assert m.cksum_sum([], initial) == want


# -- a buffer longer than SUM_CHUNK ------------------------------------------------

SUM_CHUNK = 1 << 30  # cext/physmem.c


def _room_for_big_buffer() -> bool:
    if sys.maxsize < 1 << 40:
        return False
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return False
    return avail >= 3 * SUM_CHUNK


@pytest.mark.skipif("c" not in available_backends(), reason="the C backend is not built")
@pytest.mark.skipif(not _room_for_big_buffer(), reason="needs 3 GiB of free memory")
def test_buffer_longer_than_sum_chunk() -> None:
    """cksum_bytes over SUM_CHUNK + 1 MiB + 1 bytes: zero except for carry-heavy
    windows at even positions (near the start, across the chunk boundary, and the
    odd tail), so the reference is the sum of the windows' word sums (zero
    words add nothing).  C only: the twin has no chunking."""
    rng = random.Random(30)
    size = SUM_CHUNK + (1 << 20) + 1
    windows = {
        2: _ff_heavy(rng, 1 << 16),
        SUM_CHUNK - (1 << 18): _near_ffff(rng, 1 << 19),  # straddles the boundary
        SUM_CHUNK + (1 << 19): _ff_heavy(rng, 4099),
        size - 4097: _ff_heavy(rng, 4097),  # odd tail: padded
    }
    buf = mmap.mmap(-1, size)  # anonymous: zero-filled
    try:
        for at, w in windows.items():
            assert at % 2 == 0
            buf[at : at + len(w)] = w
        with PhysMem(1, 4096, backend="c") as m:
            for initial in (0, (1 << 64) - 1):
                want = fold(initial + sum(word_sum(w) for w in windows.values()))
                assert m.cksum_bytes(buf, initial) == want
            # one byte later every window starts at an odd position, after a 0 byte
            mv = memoryview(buf)
            try:
                want = fold(sum(word_sum(b"\x00" + w) for w in windows.values()))
                assert m.cksum_bytes(mv[1:]) == want
            finally:
                mv.release()
    finally:
        buf.close()
