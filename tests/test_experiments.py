"""The copy-vs-loan experiment: the model's answer to "when does loaning pay".

The expectations here are the published shape (digest 0.3, anchors A2): on a
uniprocessor loaning beats copying once the copy costs more than the page
bookkeeping; on a multiprocessor whose CPUs cached the buffer, the
synchronous write-protect shootdowns make loaning dearer (why NetBSD set
sock_loan_thresh to -1 under MULTIPROCESSOR); a sender that rewrites its
buffer at once pays a loan break per page.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uvmloan import experiments
from uvmloan.cli import main
from uvmloan.experiments import crossover, send_cost, sweep


def test_uniprocessor_loan_beats_copy() -> None:
    copy = send_cost("copy", 65536, 1)
    loan = send_cost("loan", 65536, 1)
    assert loan.sender_ns < copy.sender_ns
    assert loan.ipis == 0 and loan.shootdown_rounds == 0


def test_multiprocessor_loan_pays_ipis_and_loses() -> None:
    copy = send_cost("copy", 65536, 2)
    loan = send_cost("loan", 65536, 2)
    assert loan.sender_ns > copy.sender_ns
    assert loan.shootdown_rounds == 16  # one synchronous round per first loan of a page
    assert loan.ipis == 16
    assert loan.total_ns > loan.sender_ns  # the other CPU ran the handlers


def test_untouched_elsewhere_needs_no_ipi() -> None:
    loan = send_cost("loan", 16384, 4, touched_on_all_cpus=False)
    assert loan.ipis == 0


def test_reuse_breaks_every_page() -> None:
    loan = send_cost("loan", 4 * 4096, 1, reuse=True)
    copy = send_cost("copy", 4 * 4096, 1, reuse=True)
    assert loan.loan_breaks == 4 and copy.loan_breaks == 0
    assert loan.pages_allocated == 4
    assert loan.sender_ns > copy.sender_ns


def test_slow_memory_makes_loaning_pay_everywhere() -> None:
    slow = {"costs": {"copy_bw": 100}}  # 100 MB/s: an embedded board
    pts = sweep([4096, 65536], [1, 2], profile_overrides=slow)
    assert crossover(pts, 1) == 4096
    assert crossover(pts, 2) == 4096


def test_crossover_on_default_machine() -> None:
    pts = sweep([4096, 65536], [1, 2])
    assert crossover(pts, 1) == 4096
    assert crossover(pts, 2) is None
    assert "loan/copy" in experiments.table(pts)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("mmap", 4096, 1), "policy"),
        (("copy", 0, 1), "size"),
        (("copy", 4096, 0), "ncpus"),
    ],
)
def test_bad_arguments(args: tuple[str, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        send_cost(*args)  # type: ignore[arg-type]


def test_cli_compare_writes_data_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["compare", "--sizes", "4K,16K", "--cpus", "1,2", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "1 CPU(s): loaning is cheaper from 4K" in out
    data = json.loads((tmp_path / "compare.json").read_text())
    assert len(data["points"]) == 8
    png = tmp_path / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_compare_rejects_bad_cost(tmp_path: Path) -> None:
    argv = ["compare", "--cpus", "1", "--sizes", "4K", "--cost", "copy_bw=fast"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path)])
    assert exc.value.code == 2
