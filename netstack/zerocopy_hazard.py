"""The MSG_ZEROCOPY hazard, measured: bytes on the wire that the send did not take.

Linux (``Documentation/networking/msg_zerocopy.rst``, "Page pinning also
changes system call semantics"): "the process cannot immediately overwrite
the buffer after system call return without possibly modifying the data in
flight".  The model does exactly that: pinned pages stay writable, and each
transmission (the NIC's gather in ``netif.dma_read``, or the CPU's copy of
a small segment into its header mbuf in ``tcp_build_datapkt``) reads what
the frames hold at that moment, retransmissions included.

Instrumentation only (nothing here is charged or part of the kernel): each
pinned storage (``ZcChunk``) keeps the bytes its frames held when the send
took them (``snap``); every transmit read is compared with them.  A segment
that leaves with any byte different counts once in ``zerocopy.tx_modified``
(the host's ``ZcHost.tx_modified``, plus ``tx_modified_bytes`` for the
bytes that differ) and emits a :class:`ZcTxModified` event.  A sender that
waits for the completion notification before it writes never trips it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from uvmloan.trace import Event

from .mbuf import M_EXT_PAGES, M_EXT_ROMAP, Mbuf

if TYPE_CHECKING:
    from .zerocopy import ZcChunk


@attrs.frozen(slots=True)
class ZcTxModified(Event):
    """A segment left with pinned bytes that differ from what its send took."""

    KIND: ClassVar[str] = "zerocopy.tx_modified"
    zckey: int  # first send id of the storage's ubuf_info
    offset: int  # offset of the first modified byte's read in its storage
    nbytes: int  # bytes of pinned storage in the segment
    ndiff: int  # of those, bytes that differ


def compare(chunk: ZcChunk, off: int, data: bytes | bytearray | memoryview) -> int:
    """Bytes of ``data`` (read at storage offset ``off``) that differ from the snapshot."""
    snap = chunk.snap[off : off + len(data)]
    if snap == data:
        return 0
    return sum(1 for a, b in zip(snap, bytes(data), strict=True) if a != b)


def _record(chunk: ZcChunk, off: int, nbytes: int, ndiff: int) -> None:
    layer = chunk.layer
    host = layer.zerocopy
    host.tx_modified += 1
    host.tx_modified_bytes += ndiff
    mach = layer.machine
    tr = mach.tracer
    if tr.on:
        cpu = mach.platform.curcpu()
        tr.emit(ZcTxModified(cpu.clock, cpu.index, "kernel", chunk.uarg.id, off, nbytes, ndiff))


def _chunk(m: Mbuf) -> Any:
    if (m.m_flags & (M_EXT_PAGES | M_EXT_ROMAP)) != M_EXT_PAGES:
        return None
    ext = m.m_ext
    arg = ext.ext_arg if ext is not None else None
    return arg if hasattr(arg, "snap") else None


def note_copydata(m: Mbuf, off: int, data: bytes | bytearray | memoryview) -> None:
    """The CPU copied ``data`` out of ``m``'s pinned storage for a segment."""
    chunk = _chunk(m)
    if chunk is None:
        return
    o = m.m_data + off
    ndiff = compare(chunk, o, data)
    if ndiff:
        _record(chunk, o, len(data), ndiff)


def note_frame(m: Mbuf, frame: bytes | bytearray) -> None:
    """The NIC gathered ``frame`` from chain ``m``: compare its pinned parts."""
    pos = 0
    ndiff = 0
    nbytes = 0
    first: tuple[Any, int] | None = None
    cur: Mbuf | None = m
    while cur is not None:
        ln = cur.m_len
        if ln:
            chunk = _chunk(cur)
            if chunk is not None:
                d = compare(chunk, cur.m_data, memoryview(frame)[pos : pos + ln])
                nbytes += ln
                if d:
                    ndiff += d
                    if first is None:
                        first = (chunk, cur.m_data)
        pos += ln
        cur = cur.m_next
    if first is not None:
        _record(first[0], first[1], nbytes, ndiff)


__all__ = ["ZcTxModified", "compare", "note_copydata", "note_frame"]
