"""netstack.bulk: the transfer engine behind uvmloan transfer, the
reproductions and the tcp_bulk sweep experiment.

Counts are worked out from the workload: 64 KiB writes of page-aligned
slots are one sosend_loan chunk each, 16 pages lent per chunk; a ring
refilled by a loaning sender faults once per page per refill (the last loan
left it read-only); a zerocopy sender that refills a slot only after the
slot's notification never sends modified bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netstack.bulk import BulkResult, bulk_point, bulk_transfer

KIB = 1024


def test_loan_with_a_refilled_ring() -> None:
    # a ring larger than the send buffer (192 KiB) plus one write: a slot's
    # data has been acknowledged, its loan released, when it is refilled
    size, ring = 1024 * KIB, 320 * KIB
    r = bulk_transfer("loan", size, ring_bytes=ring, refill=True)
    sends, pages = size // (64 * KIB), size // 4096
    assert r.counters["sosend loan big"] == sends
    assert r.counters["loan"] == pages
    assert r.counters.get("loan.break", 0) == 0
    # the set-up touches the ring once; each later lap's refill faults on
    # every page the previous lap's loan left read-only
    assert r.counters["fault"] == ring // 4096 + (pages - ring // 4096)
    assert 0 < r.sender_cpu_ns <= r.sim_ns
    assert r.nbytes == size and r.kb_per_s > 0


def test_a_ring_smaller_than_the_send_buffer_breaks_loans() -> None:
    # refills reach slots whose data is still in the send buffer: copy on
    # write breaks those loans, and the receiver (checked inside) gets the
    # bytes as they were at each send
    r = bulk_transfer("loan", 512 * KIB, ring_bytes=128 * KIB, refill=True)
    assert r.counters["loan.break"] > 0


def test_overwrite_right_after_send_breaks_every_loan() -> None:
    size = 256 * KIB
    r = bulk_transfer("loan", size, ring_bytes=size, refill=False, overwrite=True)
    # every lent page is rewritten while its loan is held: one break each,
    # and the receiver (checked inside) still got the bytes from before
    assert r.counters["loan.break"] == size // 4096


def test_zerocopy_refills_a_slot_only_after_its_notification() -> None:
    size, ring = 512 * KIB, 128 * KIB
    r = bulk_transfer(
        "linux-zerocopy", size, ring_bytes=ring, refill=True, policy_data={"optmem_max": 1 << 20}
    )
    assert r.counters["zerocopy pin"] == size // (64 * KIB)
    assert r.counters.get("zerocopy.tx_modified", 0) == 0
    assert r.counters.get("loan", 0) == 0 and r.counters.get("sosend copy big", 0) == 0


def test_copy_never_lends() -> None:
    r = bulk_transfer("copy", 128 * KIB, profile="embedded-2002-up")
    assert r.counters.get("loan", 0) == 0 and r.counters["sosend copy big"] == 128 * KIB // 2048


def test_files_only_where_asked(tmp_path: Path) -> None:
    r = bulk_transfer("loan", 64 * KIB, out=tmp_path, pcap=True, pcap_name="x.pcapng")
    assert r.files == {"pcap": str(tmp_path / "x.pcapng")}
    assert r.frames > 0 and r.loaned_frames > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"policy": "zero"}, "policy must be one of copy, loan, netbsd-loan, linux-zerocopy"),
        ({"size": 0}, "size must be an int >= 1"),
        ({"ncpus": 2, "active_cpus": 3}, "active_cpus 3 is more than the 2 CPUs"),
        ({"trace": True}, "trace and pcap need an out directory"),
        ({"profile": "pdp-11"}, "unknown profile 'pdp-11'"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"policy": "loan", "size": 64 * KIB, **kwargs}
    with pytest.raises(ValueError, match=match):
        bulk_transfer(**args)  # type: ignore[arg-type]


def test_the_sweep_experiment_takes_sizes_as_text() -> None:
    rec = bulk_point("loan", size="128K", write_size="32K")
    assert rec["bytes"] == 128 * KIB and rec["write_size"] == 32 * KIB
    assert rec["sosend_loan_big"] == 4 and rec["loan"] == 32


def test_a_result_is_one_flat_record() -> None:
    r = BulkResult("copy", 1 << 20, 65536, 1, 1_000_000_000, 0.0, 250_000_000, {"fault": 3})
    rec = r.record(profile="p")
    assert rec["kb_per_s_1024"] == 1024.0 and rec["sender_busy"] == 0.25
    assert rec["sender_ns_per_mib"] == 250_000_000 and rec["fault"] == 3


def test_a_hosts_trace_reads_back_with_the_stacks_events(tmp_path: Path) -> None:
    from netstack.socket import SosendCounter
    from uvmloan.trace import read_jsonl

    r = bulk_transfer("loan", 256 * KIB, out=tmp_path, trace=True)
    events = read_jsonl(r.files["trace"])  # the stack's events come by entry point
    sosends = [e for e in events if isinstance(e, SosendCounter)]
    assert [e.counter for e in sosends] == ["loan big"] * 4  # four 64 KiB sends
    assert len(sosends) == r.counters["sosend loan big"]
    assert sum(e.name == "loan" for e in events) == r.counters["loan"] == 64
