"""``uvmloan transfer --policy``: the three send policies side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uvmloan.cli import main

KIB = 1024


def test_transfer_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    size = 256 * KIB
    argv = ["transfer", "--size", "256K", "--overwrite", "--out", str(tmp_path)]
    for pol in ("copy", "netbsd-loan", "linux-zerocopy"):
        argv += ["--policy", pol]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "linux-zerocopy" in out and "zerocopy pin" in out
    record = json.loads((tmp_path / "transfer.json").read_text())
    res = {r["mode"]: r["counters"] for r in record["results"]}
    assert list(res) == ["copy", "netbsd-loan", "linux-zerocopy"]
    zc = res["linux-zerocopy"]
    # four 64 KiB sends, each one pinned mbuf of 16 aligned pages; nothing
    # lent, nothing copied into clusters
    assert zc["zerocopy pin"] == size // (64 * KIB)
    assert zc["zerocopy unpin"] == size // (64 * KIB)
    assert zc.get("loan", 0) == 0 and zc.get("sosend copy big", 0) == 0
    # the sender overwrote each region only after its notification: nothing
    # modified in flight, and the run checked the receiver got the bytes
    assert zc.get("zerocopy.tx_modified", 0) == 0
    assert res["netbsd-loan"]["sosend loan big"] == size // (64 * KIB)
    assert res["copy"]["sosend copy big"] == size // 2048


def test_mode_names_still_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transfer", "--size", "64K", "--mode", "loan", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "transfer.json").read_text())
    assert [r["mode"] for r in record["results"]] == ["loan"]
    capsys.readouterr()
