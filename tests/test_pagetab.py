"""FrameTable (uvm.pages): frame -> page in chunks of 512 frames; iteration,
items and values go in frame order over the allocated frames only."""

from __future__ import annotations

from typing import Any

from uvmloan.pagetab import FrameTable


class P:
    """A stand-in page (FrameTable stores any true object)."""

    def __init__(self, frame: int) -> None:
        self.frame = frame

    def __repr__(self) -> str:
        return f"P{self.frame}"


def test_iteration_items_and_values_in_frame_order_across_sparse_chunks() -> None:
    t = FrameTable(2048)  # four chunks of 512
    pages: dict[int, Any] = {f: P(f) for f in (1537, 3, 511, 512, 0)}
    for f in (1537, 3, 511, 512, 0):  # inserted out of order
        t[f] = pages[f]
    del t[3]
    assert list(t) == [0, 511, 512, 1537]
    assert t.items() == [(0, pages[0]), (511, pages[511]), (512, pages[512]), (1537, pages[1537])]
    assert t.values() == [pages[0], pages[511], pages[512], pages[1537]]
    assert len(t) == 4
    assert t.get(3) is None and t.get(1537) is pages[1537] and 1536 not in t


def test_items_is_a_snapshot() -> None:
    t = FrameTable(600)
    for f in (5, 520):
        t[f] = P(f)  # type: ignore[assignment]
    for f, pg in t.items():
        assert pg.frame == f
        del t[f]  # changing the table while walking its items
    assert list(t) == [] and t.items() == [] and t.values() == []
