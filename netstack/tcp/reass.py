"""The reassembly queue (tcp_reass): out-of-order segments keyed by stream offset.

Keys are absolute receive-stream offsets (bytes since the peer's SYN, not
wrapped), so a ``SortedDict`` orders them even across a sequence wrap.
Overlap is trimmed as NetBSD's tcp_reass (tcp_input.c 1.344) does: a new
segment inside a queued fragment is a duplicate; one that overlaps a
fragment's end loses its front ("overlap at end"); one that overlaps a
fragment's start loses its tail ("overlap at start"); a fragment the new
segment covers entirely is dropped ("duplicate fragment").  NetBSD then
concatenates adjacent fragments into one mbuf chain; the model keeps them
as separate entries, which delivers the same bytes.  Each entry keeps the glue's
payload object with a ``skip``/``length`` window into it.
"""

from __future__ import annotations

import attrs
from sortedcontainers import SortedDict


@attrs.define(slots=True)
class ReassEntry:
    payload: object
    skip: int
    length: int
    fin: bool


class ReassQueue:
    """tp->segq: non-overlapping entries beyond rcv_nxt."""

    __slots__ = ("_q",)

    def __init__(self) -> None:
        self._q: SortedDict[int, ReassEntry] = SortedDict()

    def __len__(self) -> int:
        return len(self._q)

    def __bool__(self) -> bool:
        return bool(self._q)

    def nbytes(self) -> int:
        return sum(e.length for e in self._q.values())

    def entries(self) -> list[tuple[int, ReassEntry]]:
        return list(self._q.items())

    def insert(self, start: int, payload: object, skip: int, length: int, fin: bool) -> int:
        """Queue [start, start+length) (+FIN); return the new bytes it added."""
        q = self._q
        end = start + length
        # Predecessor: trim our front by what it already holds.
        i = q.bisect_right(start) - 1
        if i >= 0:
            pstart = q.keys()[i]
            pent = q[pstart]
            pend = pstart + pent.length
            if pend >= end:
                if fin and pend == end and not pent.fin:
                    pent.fin = True
                return 0  # a duplicate: everything is already queued
            if pend > start:
                cut = pend - start
                skip += cut
                length -= cut
                start = pend
        # Successors: a fragment the new segment covers entirely is dropped;
        # one that starts inside it and runs past its end keeps its bytes and
        # the new segment loses its tail (tcp_reass "overlap at start").
        while True:
            j = q.bisect_left(start)
            if j >= len(q):
                break
            sstart = q.keys()[j]
            if sstart >= end:
                break
            sent = q[sstart]
            send = sstart + sent.length
            if send > end:
                length = sstart - start
                end = sstart
                fin = False  # the FIN, if any, lies beyond: the fragment has it
                break
            del q[sstart]
            if send == end and sent.fin:
                fin = True
        added = length
        if length > 0 or fin:
            q[start] = ReassEntry(payload, skip, length, fin)
        return added

    def pop_in_order(self, rcv_nxt: int) -> ReassEntry | None:
        """Take the entry starting exactly at ``rcv_nxt`` (offsets), if any."""
        q = self._q
        if q and q.keys()[0] == rcv_nxt:
            return q.pop(rcv_nxt)
        return None

    def first_start(self) -> int | None:
        q = self._q
        return q.keys()[0] if q else None

    def clear(self) -> None:
        self._q.clear()
