"""The reproduction registry, reproduction 4 (shootdown batching) and the
``uvmloan reproduce`` command's handling of bad input.

Reproduction 4's figures are checked against NetBSD's rule written out here
(x86_tlb.c 1.20: up to TP_MAXVA = 16 VAs per shootdown packet, the 17th
makes it TP_ALLVA, a full flush), not against the reproduction's own
verdict; and a profile with another TP_MAXVA must make the claim fail.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from uvmloan import experiments, get_profile
from uvmloan.cli import main
from uvmloan.experiments.batching import unmap_round

NCPUS = 4


@pytest.mark.parametrize("n", [8, 16, 17, 32])
def test_an_unmap_follows_the_tp_maxva_rule(n: int) -> None:
    pt = unmap_round(n, NCPUS, "netbsd-10")
    assert pt["rounds"] == 1  # one pmap_update, one round
    assert pt["ipis_delivered"] == NCPUS - 1  # the kernel pmap: every other CPU
    if n <= 16:
        assert (pt["invlpg_per_cpu"], pt["full_flushes_per_cpu"]) == (n, 0)
        assert pt["refill_ns"] == 0  # the sender's own entries survived
    else:
        assert (pt["invlpg_per_cpu"], pt["full_flushes_per_cpu"]) == (0, 1)
        # the full flush took the sender's 16 working-set entries with it:
        # one page walk each when it reads them again
        assert pt["refill_ns"] == 16 * get_profile("netbsd-10").costs.page_walk_ns


def test_the_17th_page_makes_the_round_cheaper_for_the_targets() -> None:
    p16, p17 = unmap_round(16, NCPUS, "netbsd-10"), unmap_round(17, NCPUS, "netbsd-10")
    costs = get_profile("netbsd-10").costs
    # target_ns runs from the start of the unmap to the end of the target's
    # handler: the initiator's pmap_kremove (one PTE update per page) before
    # it sends the IPI, the delivery, then 16 invlpg or one full flush
    assert p16["target_ns"] - p17["target_ns"] == (
        16 * costs.invlpg_ns - costs.tlbflush_ns - costs.pte_update_ns
    )


def test_shootdown_batching_writes_its_files(tmp_path: Path) -> None:
    res = experiments.shootdown_batching(tmp_path, quick=True, profile="netbsd-10")
    assert res.holds, res.verdict
    with (tmp_path / "shootdown-batching.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["pages"]) for r in rows] == [8, 12, 15, 16, 17, 18, 24, 32]
    assert (tmp_path / "shootdown-batching.png").stat().st_size > 10_000
    table = res.table()
    assert "largest unmap invalidated page by page" in table
    assert res.rows[0].model == 16 and res.rows[0].published == 16


def test_a_kernel_with_another_packet_size_fails_the_claim() -> None:
    # x86_tlb.c 1.13 (2019) had TP_MAXVA 7: the reproduction must notice
    old = get_profile("netbsd-10", tp_maxva=7)
    res = experiments.shootdown_batching(None, quick=True, profile=old)
    assert not res.holds
    # every unmap from 8 pages is more than 7 VAs: all of them full flushes
    assert res.rows[0].model == 0
    assert all(p["full_flushes_per_cpu"] == 1 for p in res.points)
    assert "TP_MAXVA 7" in res.verdict


def test_the_registry_lists_every_reproduction_in_order() -> None:
    names = list(experiments.reproductions())
    assert names[-1] == "shootdown-batching"
    assert {"announcement-2002", "mp-loan"} <= set(names)  # netstack's, by entry point
    nums = [r.number for r in experiments.reproductions().values()]
    assert nums == sorted(nums)


def test_a_registered_reproduction_is_an_attribute_of_experiments() -> None:
    fn = experiments.announcement_2002
    assert fn.number == 1
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        _ = experiments.no_such_thing


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"out": 5}, TypeError, "out must be a path"),
        ({"quick": "yes"}, TypeError, "quick must be a bool"),
        ({"ncpus": 1}, ValueError, "ncpus must be an int >= 2"),
        ({"profile": "vax-780"}, ValueError, "unknown profile 'vax-780'"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        experiments.shootdown_batching(**kwargs)


def test_reproduce_by_an_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown reproduction 'x'; known: announcement-2002"):
        experiments.reproduce("x")


def test_the_command_rejects_an_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown reproduction 'nope'; choose from: all, announcement-2002" in err
    assert "Traceback" not in err


def test_the_command_rejects_an_unwritable_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "shootdown-batching", "--out", str(blocker / "sub")])
    assert e.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_the_command_runs_one_and_prints_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reproduce", "shootdown-batching", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "invlpg per CPU, 17-page unmap" in out
    assert "the claim holds in the model" in out
    assert (tmp_path / "shootdown-batching.json").exists()
