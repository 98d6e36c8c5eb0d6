"""Packet captures of a link or an interface: pcap and pcapng.

``capture(target, path, fmt="pcap" | "pcapng", linktype="raw" | "ethernet")``
taps a :class:`~netstack.link.Link` (every frame as it starts onto the wire,
both directions) or a :class:`~netstack.netif.Netif` (frames it sends, as
the driver's start routine hands them to the NIC, and frames it receives,
at the receive interrupt; bpf_mtap's places).

pcap: the nanosecond-resolution variant (magic ``0xa1b23c4d``, version 2.4,
https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-03.html section 4).
pcapng: Section Header Block, one Interface Description Block with
``if_tsresol`` 9 (10^-9 s), and an Enhanced Packet Block per frame whose
options carry ``opt_comment`` "payload from loaned pages" when the frame
was gathered from at least one ``M_EXT_PAGES`` mbuf
(draft-ietf-opsawg-pcapng-02 sections 4.1, 4.2, 4.3).

Link types (tcpdump.org/linktypes.html): ``LINKTYPE_RAW`` 101 (the IPv4
packet itself) or ``LINKTYPE_ETHERNET`` 1 with a synthetic 14-byte header:
locally administered MACs 02:00 followed by the IPv4 address, EtherType
0x0800.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import IO, Any, Literal

from .link import FrameMeta, Link
from .netif import Netif

PCAP_MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
SNAPLEN = 65535
ETHERTYPE_IP = 0x0800
LOANED_COMMENT = "payload from loaned pages"

_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_EPB = 0x00000006
_BOM = 0x1A2B3C4D
_OPT_ENDOFOPT = 0
_OPT_COMMENT = 1
_IF_NAME = 2
_IF_TSRESOL = 9


def _pad4(b: bytes) -> bytes:
    return b + bytes(-len(b) % 4)


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def ether_header(frame: bytes | bytearray) -> bytes:
    """A synthetic Ethernet II header for an IPv4 frame."""
    src = bytes(frame[12:16]) if len(frame) >= 20 else bytes(4)
    dst = bytes(frame[16:20]) if len(frame) >= 20 else bytes(4)
    return b"\x02\x00" + dst + b"\x02\x00" + src + struct.pack("!H", ETHERTYPE_IP)


class Capture:
    """An open capture file fed by taps; ``close()`` (or ``with``) ends it."""

    def __init__(
        self,
        path: str | Path,
        fmt: Literal["pcap", "pcapng"] = "pcap",
        linktype: Literal["raw", "ethernet"] = "raw",
        name: str = "",
    ) -> None:
        if fmt not in ("pcap", "pcapng"):
            raise ValueError(f"capture format must be 'pcap' or 'pcapng', not {fmt!r}")
        if linktype not in ("raw", "ethernet"):
            raise ValueError(f"linktype must be 'raw' or 'ethernet', not {linktype!r}")
        self.path = Path(path)
        self.fmt = fmt
        self.ethernet = linktype == "ethernet"
        self.linktype = LINKTYPE_ETHERNET if self.ethernet else LINKTYPE_RAW
        self.frames = 0
        self.loaned_frames = 0
        self._detach: list[Any] = []
        self._f: IO[bytes] | None = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        if fmt == "pcap":
            self._f.write(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, SNAPLEN,
                                      self.linktype))
        else:
            appl = _opt(4, b"uvmloan netstack")  # shb_userappl
            shb = struct.pack("<IHHq", _BOM, 1, 0, -1) + appl + _opt(_OPT_ENDOFOPT, b"")
            self._f.write(_block(_SHB, shb))
            opts = b""
            if name:
                opts += _opt(_IF_NAME, name.encode())
            opts += _opt(_IF_TSRESOL, bytes([9])) + _opt(_OPT_ENDOFOPT, b"")
            idb = struct.pack("<HHI", self.linktype, 0, SNAPLEN) + opts
            self._f.write(_block(_IDB, idb))

    def tap(self, now: int, frame: bytes | bytearray, meta: FrameMeta) -> None:
        f = self._f
        if f is None:
            return
        data = bytes(frame)
        if self.ethernet:
            data = ether_header(frame) + data
        n = len(data)
        self.frames += 1
        if self.fmt == "pcap":
            sec, nsec = divmod(now, 1_000_000_000)
            f.write(struct.pack("<IIII", sec, nsec, n, n))
            f.write(data)
            return
        opts = b""
        if meta.loaned:
            self.loaned_frames += 1
            opts = _opt(_OPT_COMMENT, LOANED_COMMENT.encode()) + _opt(_OPT_ENDOFOPT, b"")
        body = struct.pack("<IIIII", 0, now >> 32, now & 0xFFFFFFFF, n, n) + _pad4(data) + opts
        f.write(_block(_EPB, body))

    def close(self) -> None:
        for undo in self._detach:
            undo()
        self._detach.clear()
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def capture(
    target: Link | Netif,
    path: str | Path,
    fmt: Literal["pcap", "pcapng"] = "pcap",
    linktype: Literal["raw", "ethernet"] = "raw",
) -> Capture:
    """Start capturing ``target`` into ``path``."""
    if isinstance(target, Link):
        cap = Capture(path, fmt, linktype, name=target.name)
        target.add_tap(cap.tap)
        cap._detach.append(lambda: target.remove_tap(cap.tap))
    elif isinstance(target, Netif):
        cap = Capture(path, fmt, linktype, name=f"{target.host.name}:{target.if_xname}")
        target.add_tap(cap.tap)
        cap._detach.append(lambda: target.remove_tap(cap.tap))
    else:
        raise TypeError(f"capture a Link or a Netif, not {type(target).__name__}")
    return cap
