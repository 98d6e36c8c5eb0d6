"""Run a real Wireshark dissector (tshark) over the captures the tests write.

Tests that need tshark call :func:`require_tshark`: it skips when tshark is
missing, except in CI (``CI=true``), where a missing tshark is a failure
(``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHECKS = (
    "-o", "ip.check_checksum:TRUE",
    "-o", "tcp.check_checksum:TRUE",
    "-o", "udp.check_checksum:TRUE",
)
GOOD = "1"  # Wireshark's checksum.status: 0 bad, 1 good, 2 unverified


def tshark_path() -> str | None:
    return shutil.which("tshark")


def require_tshark() -> str:
    path = tshark_path()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("tshark is not installed, and CI must run the pcap checks")
        pytest.skip("tshark is not installed")
    return path


def _run(path: str | Path, *args: str) -> str:
    exe = require_tshark()
    res = subprocess.run(
        [exe, "-n", "-r", str(path), *CHECKS, *args],
        capture_output=True, text=True, check=False, timeout=120,
    )
    if res.returncode != 0:
        raise AssertionError(f"tshark failed on {path}: {res.stderr.strip()}")
    return res.stdout


def fields(path: str | Path, *names: str) -> list[list[str]]:
    """One row per frame with the named fields (empty string when absent)."""
    args = ["-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for n in names:
        args += ["-e", n]
    out = _run(path, *args)
    return [line.split("\t") for line in out.splitlines()]


def assert_checksums_good(path: str | Path) -> int:
    """Every IP, TCP and UDP checksum in the capture is verified good;
    returns the number of frames."""
    rows = fields(
        path, "frame.number", "ip.checksum.status", "tcp.checksum.status",
        "udp.checksum.status", "ip.proto", "ip.flags.mf", "ip.frag_offset",
    )
    assert rows, f"{path}: no frames"
    for num, ip_st, tcp_st, udp_st, proto, mf, fragoff in rows:
        assert ip_st == GOOD, f"frame {num}: IP checksum status {ip_st!r}"
        fragment = mf == "1" or fragoff not in ("", "0")
        last_of_datagram = mf != "1"
        if proto == "6" and last_of_datagram:
            assert tcp_st == GOOD, f"frame {num}: TCP checksum status {tcp_st!r}"
        if proto == "17" and last_of_datagram:
            # a fragmented datagram is checked on its last fragment, after
            # Wireshark reassembled it
            assert udp_st == GOOD, f"frame {num}: UDP checksum status {udp_st!r}"
        if fragment and not last_of_datagram:
            assert tcp_st == "" and udp_st == ""
    return len(rows)


def follow_tcp(path: str | Path, stream: int = 0) -> tuple[bytes, bytes]:
    """The TCP stream reassembled by Wireshark: (client->server, server->client)."""
    out = _run(path, "-q", "-z", f"follow,tcp,raw,{stream}")
    c2s = bytearray()
    s2c = bytearray()
    in_body = False
    for line in out.splitlines():
        if line.startswith("Node 1:"):
            in_body = True
            continue
        if not in_body or line.startswith("====="):
            continue
        if line.startswith("\t"):
            s2c += bytes.fromhex(line.strip())
        elif line.strip():
            c2s += bytes.fromhex(line.strip())
    return bytes(c2s), bytes(s2c)


def comments(path: str | Path) -> list[str]:
    return [r[0] for r in fields(path, "frame.comment")]
