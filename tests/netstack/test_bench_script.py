"""benchmarks/netstack_bench.py keeps working (a tiny transfer, no timing claims)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("loan", [True, False])
def test_bench_transfer_moves_the_exact_bytes(loan: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import netstack_bench as nb

    r = nb.our_transfer(256 * 1024, loan, "record")
    # 256 KiB in 64 KiB sends (our_transfer checks the bytes); no segment
    # carries more than the MSS of 1460, so at least 180 of them
    assert r["sends"] == 4 and r["data_segments"] >= -(-256 * 1024 // 1460)
    # loan mode lends (in as many chunks as the 32 KiB send buffer has room
    # for at a time); the netbsd-10 default (MULTIPROCESSOR) never does
    assert (r["loan_big"] > 0) == loan
    sys.modules.pop("netstack_bench", None)
