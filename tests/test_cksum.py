"""The Internet checksum (RFC 1071) of uvmloan.physmem, under every backend."""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Iterator

import pytest
from helpers import ref_sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uvmloan.physmem import PhysMem, Piece

PS = 512


@pytest.fixture
def pm(backend: str) -> Iterator[PhysMem]:
    with PhysMem(64, PS, backend=backend) as m:
        yield m


def place(m: PhysMem, data: bytes, splits: list[int], start_frame: int = 1) -> list[Piece]:
    """Write data into the arena as pieces cut at `splits`, each piece on its own
    frame at an offset that keeps parity varied; return the piece list."""
    pieces: list[Piece] = []
    bounds = [0, *sorted(set(splits)), len(data)]
    frame = start_frame
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        if b < a:
            continue
        n = b - a
        off = (i * 37 + 3) % (PS - n + 1) if n < PS else 0
        m.copyin([frame], off, data[a:b])
        pieces.append((frame, off, n))
        frame += 1
    return pieces


def test_rfc1071_example(pm: PhysMem) -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ref_sum(data) == 0xDDF2
    assert pm.cksum_bytes(data) == 0xDDF2
    assert ~pm.cksum_bytes(data) & 0xFFFF == 0x220D
    pm.copyin([3], 0, data)
    assert pm.cksum_sum([(3, 0, 8)]) == 0xDDF2
    assert pm.in_cksum([(3, 0, 8)]) == 0x220D
    # the same bytes cut at odd boundaries, at odd offsets, on other frames
    for splits in ([1], [3], [1, 2, 5], [1, 3, 5, 7], [0, 8], [2, 4, 6], [7]):
        pieces = place(pm, data, splits, start_frame=10)
        assert pm.gather(pieces) == data
        assert pm.cksum_sum(pieces) == 0xDDF2, splits
        assert pm.in_cksum(pieces) == 0x220D, splits


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 31, 32, 33, 100, 511, 512])
def test_all_ones(pm: PhysMem, n: int) -> None:
    """0xff bytes make every addition carry."""
    data = b"\xff" * n
    want = ref_sum(data)
    assert want == (0xFFFF if n % 2 == 0 else 0xFF00)  # 0xffff words are "zero"
    assert pm.cksum_bytes(data) == want
    pm.fill_page(2, 0xFF)
    pm.fill_page(3, 0xFF)
    assert pm.cksum_sum([(2, 0, n)]) == want
    k = max(1, n // 2)
    assert pm.cksum_sum([(2, PS - k, k), (3, 0, n - k)]) == want
    assert pm.cksum_sum([(2, 0, PS), (3, 0, PS)]) == 0xFFFF


def test_zero_and_empty(pm: PhysMem) -> None:
    assert pm.cksum_sum([]) == 0
    assert pm.in_cksum([]) == 0xFFFF
    assert pm.cksum_bytes(b"") == 0
    assert pm.cksum_bytes(bytes(100)) == 0
    assert pm.cksum_sum([(5, 0, PS), (6, 3, 0)]) == 0
    assert pm.cksum_sum([], 0xFFFF) == 0xFFFF
    assert pm.cksum_sum([(5, 0, 10)], 0x1FFFE) == 0xFFFF
    assert pm.cksum_bytes(b"", 5) == 5


def test_grid_alignments_and_lengths(pm: PhysMem) -> None:
    """Every offset 0..9 and length 0..40, whole and split at odd boundaries."""
    rng = random.Random(1071)
    src = bytes(rng.randrange(256) for _ in range(PS))
    pm.copyin([1], 0, src)
    for off in range(10):
        for length in range(41):
            data = src[off : off + length]
            want = ref_sum(data)
            assert pm.cksum_sum([(1, off, length)]) == want, (off, length)
            assert pm.cksum_bytes(data) == want
            assert pm.cksum_bytes(memoryview(src)[off : off + length]) == want
            # split into 1..4 pieces at odd boundaries, pieces scattered over frames
            for _ in range(3):
                k = rng.randrange(0, 4)
                splits = [rng.randrange(0, length + 1) | 1 for _ in range(k)]
                splits = [s for s in splits if s <= length]
                pieces = place(pm, data, splits, start_frame=20)
                assert pm.gather(pieces) == data
                assert pm.cksum_sum(pieces) == want, (off, length, pieces)


@pytest.mark.parametrize("initial", [0, 1, 0xFFFF, 0x10000, 0x12345678, 2**32, 2**63, 2**64 - 1])
def test_initial_values(pm: PhysMem, initial: int) -> None:
    data = bytes(range(1, 200))
    pm.copyin([4], 1, data)
    want = ref_sum(data, initial)
    assert pm.cksum_sum([(4, 1, len(data))], initial) == want
    assert pm.cksum_bytes(data, initial) == want
    assert pm.in_cksum([(4, 1, len(data))], initial) == ~want & 0xFFFF


def ip_pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Unfolded sum of the IPv4 pseudo-header (src, dst, 0, proto, length)."""
    ph = src + dst + struct.pack("!BBH", 0, proto, length)
    return sum(struct.unpack("!6H", ph))


def test_udp_pseudo_header(pm: PhysMem) -> None:
    src, dst = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 7])
    payload = bytes(range(33)) * 3  # odd length
    udp_len = 8 + len(payload)
    hdr = struct.pack("!HHHH", 12345, 53, udp_len, 0)
    pseudo = ip_pseudo_sum(src, dst, 17, udp_len)
    want = ~ref_sum(src + dst + struct.pack("!BBH", 0, 17, udp_len) + hdr + payload) & 0xFFFF

    # header in a caller buffer, payload in two loaned frames at an odd split
    pm.copyin([8], PS - 41, payload[:41])
    pm.copyin([9], 0, payload[41:])
    hsum = pm.cksum_bytes(hdr, pseudo)
    ck = pm.in_cksum([(8, PS - 41, 41), (9, 0, len(payload) - 41)], hsum)
    assert ck == want
    # the receiver's check: the sum over pseudo-header + segment (checksum
    # filled in) is 0xffff
    hdr_ck = struct.pack("!HHHH", 12345, 53, udp_len, ck)
    pm.copyin([10], 3, hdr_ck + payload)
    assert pm.cksum_sum([(10, 3, udp_len)], pseudo) == 0xFFFF


def test_tcp_pseudo_header_many_pieces(pm: PhysMem) -> None:
    rng = random.Random(6)
    src, dst = bytes([10, 1, 2, 3]), bytes([10, 4, 5, 6])
    seg = bytes(rng.randrange(256) for _ in range(1460 + 20))
    pseudo = ip_pseudo_sum(src, dst, 6, len(seg))
    splits = sorted(rng.sample(range(1, len(seg)), 9))
    # pieces must fit in a page: add cuts every PS bytes
    splits = sorted(set(splits) | set(range(PS - 1, len(seg), PS - 1)))
    pieces = place(pm, seg, splits, start_frame=30)
    assert pm.gather(pieces) == seg
    assert pm.in_cksum(pieces, pseudo) == ~ref_sum(seg, pseudo) & 0xFFFF


def test_whole_pages(backend: str) -> None:
    rng = random.Random(16)
    with PhysMem(40, 4096, backend=backend) as m:
        data = rng.randbytes(32 * 4096)
        m.copyin(list(range(32)), 0, data)
        want = ref_sum(data)
        assert m.cksum_sum([(f, 0, 4096) for f in range(32)]) == want
        assert m.cksum_bytes(data) == want
        # a 1-byte piece first shifts every later page to an odd stream position
        assert m.cksum_sum([(33, 0, 1)] + [(f, 0, 4096) for f in range(32)]) == ref_sum(
            b"\x00" + data
        )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(min_size=0, max_size=3 * PS),
    cuts=st.lists(st.integers(0, 3 * PS), max_size=8),
    initial=st.integers(0, 2**64 - 1),
)
def test_matches_reference(pm: PhysMem, data: bytes, cuts: list[int], initial: int) -> None:
    cuts = [c for c in cuts if c <= len(data)] + list(range(PS - 1, len(data), PS - 1))
    pieces = place(pm, data, cuts, start_frame=1)
    assert pm.gather(pieces) == data
    want = ref_sum(data, initial)
    assert pm.cksum_sum(pieces, initial) == want
    assert pm.cksum_bytes(data, initial) == want
