"""Modular sequence-number arithmetic (RFC 9293 3.4; NetBSD sys/netinet/tcp_seq.h).

Sequence numbers live in a 32-bit space that wraps; comparisons are made on
the signed 32-bit difference, exactly as ``SEQ_LT`` and friends do with
``(int)((a)-(b)) < 0``.  Every function takes and returns plain ints in
``[0, 2**32)``.
"""

from __future__ import annotations

SEQ_MOD = 1 << 32
_MASK = SEQ_MOD - 1
_HALF = 1 << 31


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32 (``n`` may be negative)."""
    return (a + n) & _MASK


def seq_sub(a: int, b: int) -> int:
    """The signed distance ``a - b`` in ``[-2**31, 2**31)`` (``(int)(a - b)``)."""
    d = (a - b) & _MASK
    return d - SEQ_MOD if d >= _HALF else d


def SEQ_LT(a: int, b: int) -> bool:
    return seq_sub(a, b) < 0


def SEQ_LEQ(a: int, b: int) -> bool:
    return seq_sub(a, b) <= 0


def SEQ_GT(a: int, b: int) -> bool:
    return seq_sub(a, b) > 0


def SEQ_GEQ(a: int, b: int) -> bool:
    return seq_sub(a, b) >= 0


def SEQ_MIN(a: int, b: int) -> int:
    return a if SEQ_LT(a, b) else b


def SEQ_MAX(a: int, b: int) -> int:
    return a if SEQ_GT(a, b) else b
