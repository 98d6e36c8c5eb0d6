"""``uvmloan transfer``: the netstack's demonstration, reached from the uvmloan command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tshark import assert_checksums_good, follow_tcp

from netstack.bulk import pattern as _pattern
from uvmloan.cli import main

KIB = 1024


def test_transfer_by_copy_and_by_loan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    size = 256 * KIB
    rc = main(["transfer", "--size", "256K", "--overwrite", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "sosend loan big" in out and "copy" in out and "loan" in out
    record = json.loads((tmp_path / "transfer.json").read_text())
    res = {r["mode"]: r for r in record["results"]}
    copy, loan = res["copy"]["counters"], res["loan"]["counters"]
    # MULTIPROCESSOR kernel: sock_loan_thresh -1, every 64 KiB send is copied
    # into 2 KiB clusters (uipc_socket.c sosend: resid >= MINCLSIZE)
    assert copy.get("sosend loan big", 0) == 0 and copy.get("loan", 0) == 0
    assert copy["sosend copy big"] == size // 2048
    # uniprocessor kernel: one 64 KiB loan of 16 aligned pages per send, and
    # the overwrite right after each send breaks every page's loan
    assert loan["sosend loan big"] == size // (64 * KIB)
    assert loan["loan"] == size // 4096
    assert loan["loan.break"] == size // 4096
    assert res["loan"]["loaned_frames"] > 0 and res["copy"]["loaned_frames"] == 0
    for mode in ("copy", "loan"):
        pcap = Path(res[mode]["pcap"])
        assert assert_checksums_good(pcap) == res[mode]["frames"]
        c2s, _s2c = follow_tcp(pcap)
        assert c2s == _pattern(size, 0)  # the bytes before the overwrite


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--size", "0"], "size must be positive"),
        (["--size", "65M"], "--size must be from 1 byte to 64M"),
        (["--size", "lots"], "--size"),
        (["--loss", "0.9"], "--loss must be from 0 to 0.5"),
        (["--mode", "zerocopy"], "invalid choice"),
    ],
)
def test_transfer_rejects_bad_arguments(
    argv: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["transfer", *argv, "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "transfer.json").exists()
