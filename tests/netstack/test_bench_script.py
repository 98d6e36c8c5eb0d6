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


def _run(loan: bool, trace: str, cpu: float, segments: int) -> dict[str, object]:
    return {"loan": loan, "trace": trace, "wall": cpu, "cpu": cpu, "sends": 16,
            "segments": segments, "data_segments": segments // 2, "loan_big": 0,
            "wall_min": cpu, "wall_max": cpu, "repeats": 1}


def test_report_judges_the_goal_against_the_comparable_nspy_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import netstack_bench as nb

    size = 1 << 20
    # ns.py (comparable cc): 1000 segments and 100,000 B per CPU second; with
    # its default cc 10x fewer bytes; ns-3: 10 s for 1000 segments
    nspy = {"tcp": {"segments": 600, "acks": 400, "acked_bytes": 100_000.0, "wall": 1.0,
                    "cpu": 1.0},
            "tcp_default_cc": {"segments": 600, "acks": 400, "acked_bytes": 10_000.0,
                               "wall": 1.0, "cpu": 1.0},
            "bare": {"packets": 10, "wall": 1.0, "cpu": 1.0}}
    ns3 = {"run_s": 10.0, "run_s_min": 9.0, "run_s_max": 11.0, "runs": 5,
           "data_segments": 600, "acks": 400, "acked_bytes": size, "drops": 0, "sim_s": 1.0}
    # ours: size bytes in 1.048576 s -> exactly 10x ns.py's bytes, and 1000
    # segments in that time -> 0.95x its segments
    runs = [_run(True, "off", 1.048576, 1000), _run(False, "off", 2.0, 1000)]
    r = {"size": size, "runs": runs, "nspy": nspy, "ns3": ns3, "loadavg_start": 0.0,
         "loadavg_end": 0.0, "workload": {"delay_ns": 1_000_000, "queue": 100}}
    text = nb.report(r)
    assert "0.95x its segments (1.0x: not met)" in text
    assert "10.0x its acknowledged bytes (10x: met; below 10x: copy/off)" in text
    # the default-cc column is 10x the comparable one for the loan row
    # (the CPU-time table's row: 1,000,000 acked B per CPU second); and the
    # ns-3 columns: 953.7 segments per CPU second against its 100: 9.54x, and
    # 1,000,000 / 104,857.6 = 9.54x its bytes
    loan_row = [x for x in text.splitlines()
                if x.startswith("| loan") and "1,000,000" in x][-1]
    cells = [c.strip() for c in loan_row.strip("|").split("|")]
    assert cells[4:] == ["0.95", "10.0", "100.0", "9.54", "9.54"]
    # without peers the report still renders our rows, and no goal line
    text = nb.report({**r, "nspy": None, "ns3": None})
    assert "Goal" not in text and "| copy | off" in text
    # the plot of the same results, with a layer profile
    pytest.importorskip("matplotlib")
    r["profiles"] = [{"loan": False, "size": size, "segments": 1000, "calls": 9000,
                      "seconds": 2.0, "layers": {"mbufs": 1.5, "other": 0.5}}]
    out = nb.plot(r, tmp_path / "netstack.png")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sys.modules.pop("netstack_bench", None)


def test_profile_layers_accounts_for_all_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import netstack_bench as nb

    p = nb.profile_layers(256 * 1024, True)
    layers = p["layers"]
    # every second of profiled time lands in exactly one layer
    assert abs(sum(layers.values()) - p["seconds"]) <= 1e-9 * max(1.0, p["seconds"])
    # the transfer runs through every layer of the stack, loans included
    for name in ("TCP core (sans-I/O: input, output, timers)", "mbufs",
                 "IP (ip_input, ip_output, headers)", "VM (uvm_loan, pmap, pages, faults)",
                 "C (physmem: gather, checksums, copies)", "events (Host.kernel, scheduler)"):
        assert layers.get(name, 0.0) > 0.0, name
    # and little is left unattributed
    assert layers.get("other", 0.0) < 0.1 * p["seconds"]
    assert p["segments"] > 180 and p["calls"] > p["segments"]
    sys.modules.pop("netstack_bench", None)
