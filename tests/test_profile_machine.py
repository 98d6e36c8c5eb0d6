"""Profiles and cost models (uvmloan.profile) and the Machine facade's
arguments (uvmloan.machine)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from uvmloan import PROFILES, CostModel, Machine, Profile, get_profile, parse_size

# ----------------------------------------------------------------------------
# Profiles


def test_baseline_profile_is_netbsd_10() -> None:
    p = get_profile()
    assert p is PROFILES["netbsd-10"] and p.name == "netbsd-10"
    assert p.tp_maxva == 16 and p.tlb_policy == "x86" and p.page_size == 4096
    assert p.kernel_global and p.multiprocessor
    # uipc_socket.c: sock_loan_thresh is -1 on MULTIPROCESSOR kernels.
    assert p.sock_loan_thresh == -1
    assert get_profile(multiprocessor=False).sock_loan_thresh == 4096


def test_overrides_make_a_new_profile_and_leave_the_base_alone() -> None:
    p = get_profile("netbsd-10", tp_maxva=7, tlb_entries=32)
    assert p.tp_maxva == 7 and p.tlb_entries == 32
    assert PROFILES["netbsd-10"].tp_maxva == 16
    assert get_profile(p) is p and get_profile(p, seed=3).tp_maxva == 7


def test_cost_overrides_as_a_mapping_or_a_cost_model() -> None:
    p = get_profile(costs={"ipi_send_ns": 900, "invlpg_ns": 7})
    assert p.costs.ipi_send_ns == 900 and p.costs.invlpg_ns == 7
    assert p.costs.ipi_ack_ns == CostModel().ipi_ack_ns  # others kept
    cm = CostModel(copy_bw=1)
    assert get_profile(costs=cm).costs is cm
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        p.costs.ipi_send_ns = 1  # type: ignore[misc]


def test_cost_helpers() -> None:
    cm = CostModel(copy_bw=1000, zero_bw=2000, cksum_bw=500)
    assert cm.copy_ns(4096) == 4096 and cm.zero_ns(4096) == 2048 and cm.cksum_ns(10) == 20
    free = CostModel(copy_bw=0, zero_bw=0, cksum_bw=0)
    assert free.copy_ns(1 << 20) == free.zero_ns(1) == free.cksum_ns(1) == 0


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"tp_maxvaa": 7}, ValueError, "unknown profile field.*tp_maxvaa"),
        ({"costs": {"ipi_snd_ns": 1}}, ValueError, "unknown cost field.*ipi_snd_ns"),
        ({"costs": {"ipi_send_ns": -1}}, ValueError, "ipi_send_ns must be >= 0"),
        ({"page_size": 3000}, ValueError, "page_size must be a power of two"),
        ({"page_size": 256}, ValueError, "page_size"),
        ({"tp_maxva": -1}, ValueError, "tp_maxva"),
        ({"tlb_policy": "sparc"}, ValueError, "tlb_policy"),
        ({"tlb_replacement": "mru"}, ValueError, "tlb_replacement"),
        ({"tlb_entries": 0}, ValueError, "tlb_entries"),
    ],
)
def test_bad_overrides(kwargs: dict[str, Any], exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        get_profile("netbsd-10", **kwargs)


def test_unknown_profile_and_wrong_type() -> None:
    with pytest.raises(ValueError, match=r"unknown profile 'netbsd-99'.*netbsd-10"):
        get_profile("netbsd-99")
    with pytest.raises(TypeError, match="profile must be"):
        get_profile(10)  # type: ignore[arg-type]


def test_profile_is_frozen_data() -> None:
    p = get_profile()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        p.tp_maxva = 1  # type: ignore[misc]
    assert isinstance(p, Profile) and attrs.asdict(p)["tp_maxva"] == 16


# ----------------------------------------------------------------------------
# Machine arguments


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        ("64M", 64 << 20),
        ("1G", 1 << 30),
        ("512k", 512 << 10),
        ("512K", 512 << 10),
        (" 2 MiB ", 2 << 20),
        ("3MB", 3 << 20),
        ("8192", 8192),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, nbytes: int) -> None:
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["lots", "1.5M", "-1M", "1T", "M", ""])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="memory size"):
        parse_size(text)


def test_parse_size_types() -> None:
    with pytest.raises(TypeError, match="memory"):
        parse_size(True)
    with pytest.raises(TypeError, match="memory"):
        parse_size(1.5)  # type: ignore[arg-type]


def test_machine_sizes_and_profile() -> None:
    with Machine(ncpus=4, memory="1M") as m:
        assert m.ncpus == 4 and len(m.cpus) == 4 and m.uvm.npages == 256
        assert m.page_size == 4096 and m.profile.name == "netbsd-10"
        assert [c.index for c in m.cpus] == [0, 1, 2, 3]
        assert "4 CPUs" in repr(m) and "256 pages" in repr(m)
    with Machine(ncpus=1, npages=10) as m:
        assert m.uvm.npages == 10
    with Machine(ncpus=1, memory="64k", page_size=8192) as m:
        assert m.page_size == 8192 and m.uvm.npages == 8
    with Machine(ncpus=1, memory="64k", profile_overrides={"tp_maxva": 7}) as m:
        assert m.profile.tp_maxva == 7 and m.pmap.platform.profile.tp_maxva == 7
    with Machine(ncpus=1, memory="64k", profile=get_profile(tlb_entries=5)) as m:
        assert m.cpu(0).tlb.capacity == 5


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"ncpus": 0}, ValueError, "ncpus"),
        ({"ncpus": 257}, ValueError, "ncpus"),
        ({"ncpus": True}, ValueError, "ncpus"),
        ({"ncpus": 2.0}, ValueError, "ncpus"),
        ({"memory": "1000"}, ValueError, "multiple of the page size"),
        ({"memory": 0}, ValueError, "positive multiple"),
        ({"memory": "lots"}, ValueError, "memory size"),
        ({"memory": [1]}, TypeError, "memory"),
        ({"memory": "1M", "npages": 4}, ValueError, "memory or npages"),
        ({"npages": 0}, ValueError, "npages"),
        ({"npages": "4"}, ValueError, "npages"),
        ({"page_size": 1000}, ValueError, "page_size"),
        ({"profile": "netbsd-99"}, ValueError, "unknown profile"),
        ({"profile_overrides": {"nope": 1}}, ValueError, "unknown profile field"),
        ({"trace": None}, ValueError, "trace must be"),
        ({"trace": 5}, ValueError, "trace must be"),
    ],
)
def test_machine_argument_errors(
    kwargs: dict[str, Any], exc: type[Exception], pattern: str
) -> None:
    args: dict[str, Any] = {"ncpus": 1, "memory": "64k"}
    args.update(kwargs)
    if "npages" in kwargs and "memory" not in kwargs:
        del args["memory"]
    with pytest.raises(exc, match=pattern):
        Machine(**args)


def test_cpu_lookup_and_on_cpu() -> None:
    with Machine(ncpus=3, memory="64k") as m:
        assert m.cpu(2) is m.cpus[2] and m.curcpu is m.cpu(0)
        with m.on_cpu(2) as c:
            assert c is m.cpu(2) and m.curcpu is c
            with m.on_cpu(1):
                assert m.curcpu is m.cpu(1)
            assert m.curcpu is c
        assert m.curcpu is m.cpu(0)
        with pytest.raises(RuntimeError), m.on_cpu(1):
            raise RuntimeError("kernel work failed")
        assert m.curcpu is m.cpu(0)  # restored after an exception
        with pytest.raises(ValueError, match=r"unknown CPU 3: this machine has CPUs 0\.\.2"):
            m.cpu(3)
        with pytest.raises(TypeError, match="cpu must be an int"):
            m.cpu(1.0)  # type: ignore[arg-type]


def test_machine_clock_and_close() -> None:
    m = Machine(ncpus=2, memory="64k")
    m.cpu(1).charge(500)
    assert m.now == 500 and m.cpu(0).clock == 0
    m.close()
