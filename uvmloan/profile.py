"""Semantic profiles and cost models.

A profile is data: the constants and switches of one NetBSD era plus the cost
table of the machine it runs on.  Code reads a switch from the profile at the
one place that decides; nothing compares profile names.

Cost figures are simulated nanoseconds.  Where a figure comes from a published
anchor the comment names it (``shared/reference/anchors.md`` section B); the
rest are round numbers of the right order, documented as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

TLBPolicy = Literal["x86", "mi-asid"]
TLBReplacement = Literal["lru", "fifo", "random"]


def _nonneg(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"cost {attribute.name} must be >= 0, got {value}")


@attrs.frozen(kw_only=True)
class CostModel:
    """What each modelled operation charges its CPU, in nanoseconds.

    Bandwidths are bytes per microsecond (1000 B/us = 1 MB/s), so costs stay
    integer arithmetic: ``ns = nbytes * 1000 // bw``.
    """

    # Single-thread copy on a current x86 server: STREAM-class ~20 GB/s
    # triad (anchors A10) means ~10 GB/s of memcpy (read + write).
    copy_bw: int = attrs.field(default=10_000, validator=_nonneg)
    # Zeroing writes only: twice the copy rate.
    zero_bw: int = attrs.field(default=20_000, validator=_nonneg)
    # Internet checksum reads only; a tuned 64-bit loop runs near read bandwidth.
    cksum_bw: int = attrs.field(default=15_000, validator=_nonneg)
    # One INVLPG: "about 100 ns" (Linux arch/x86/mm/tlb.c, anchors B).
    invlpg_ns: int = attrs.field(default=100, validator=_nonneg)
    # Full CR3 reload: 96 cycles (Molnar 2015, anchors B) ~ 40 ns; refills are
    # charged separately as page walks when they happen.
    tlbflush_ns: int = attrs.field(default=40, validator=_nonneg)
    # Sending an IPI through the LAPIC (initiator side).
    ipi_send_ns: int = attrs.field(default=300, validator=_nonneg)
    # Delivery latency plus interrupt entry on the target; the remote ACK
    # path is ">= 1000 cycles" (anchors B, secondary source).
    ipi_deliver_ns: int = attrs.field(default=700, validator=_nonneg)
    # Handler exit and the acknowledgement becoming visible to the initiator.
    ipi_ack_ns: int = attrs.field(default=400, validator=_nonneg)
    # Rewriting one PTE (atomic swap, pv-list bookkeeping).
    pte_update_ns: int = attrs.field(default=60, validator=_nonneg)
    # A 4-level page walk that misses the paging-structure caches.
    page_walk_ns: int = attrs.field(default=30, validator=_nonneg)
    # Trap entry and return for a page fault.
    fault_entry_ns: int = attrs.field(default=500, validator=_nonneg)
    # uvm_pagealloc / uvm_pagefree bookkeeping (not the zeroing).
    page_alloc_ns: int = attrs.field(default=80, validator=_nonneg)
    # Context switch (without the TLB flush, charged separately).
    context_switch_ns: int = attrs.field(default=1_000, validator=_nonneg)
    # Transport protocol processing per packet: each tcp_output segment,
    # tcp_input segment, udp_output and udp_input datagram (netstack).
    per_packet_ns: int = attrs.field(default=1_500, validator=_nonneg)
    # ip_output or ip_input of one packet (header build or validation, route
    # and protocol switch): a round number of the right order, a few hundred
    # cycles.
    ip_packet_ns: int = attrs.field(default=250, validator=_nonneg)
    # A device interrupt (receive or transmit completion): entry, driver
    # handler dispatch and exit; a round number, about 1 us.
    intr_ns: int = attrs.field(default=1_000, validator=_nonneg)

    def copy_ns(self, nbytes: int) -> int:
        return nbytes * 1000 // self.copy_bw if self.copy_bw else 0

    def zero_ns(self, nbytes: int) -> int:
        return nbytes * 1000 // self.zero_bw if self.zero_bw else 0

    def cksum_ns(self, nbytes: int) -> int:
        return nbytes * 1000 // self.cksum_bw if self.cksum_bw else 0


def _pow2_at_least_512(_inst: object, _attr: attrs.Attribute[Any], value: int) -> None:
    if value < 512 or value & (value - 1):
        raise ValueError(f"page_size must be a power of two >= 512, got {value}")


@attrs.frozen(kw_only=True)
class Profile:
    """The constants and switches of one era, plus a cost model."""

    name: str
    description: str = ""
    page_size: int = attrs.field(default=4096, validator=_pow2_at_least_512)
    # x86_tlb.c 1.20: TP_MAXVA 16 individual VAs per shootdown packet, then a
    # full flush (1.13 of 2019 had 7; the 2008-2018 code had 6).
    tp_maxva: int = attrs.field(default=16, validator=attrs.validators.ge(0))
    tlb_policy: TLBPolicy = attrs.field(
        default="x86", validator=attrs.validators.in_(("x86", "mi-asid"))
    )
    tlb_entries: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    # MI pmap_tlb.c (tlb_policy "mi-asid"): ti_asid_max, the highest user
    # ASID; MIPS R4K pmap_md_tlb_asid_max() is MIPS_TLB_NUM_PIDS - 1 = 255.
    # A small value makes the ASID pool wrap (pmap_tlb_asid_reinitialize).
    asid_max: int = attrs.field(default=255, validator=attrs.validators.ge(1))
    tlb_replacement: TLBReplacement = attrs.field(
        default="lru", validator=attrs.validators.in_(("lru", "fifo", "random"))
    )
    # x86 pmap_bootstrap: kernel PTEs carry PTE_G when the CPU has PGE and SVS
    # is off.
    kernel_global: bool = True
    # The kernel is built with options MULTIPROCESSOR (GENERIC amd64 is).
    multiprocessor: bool = True
    # uipc_socket.c: sock_loan_thresh 4096, or -1 under SOSEND_NO_LOAN or
    # MULTIPROCESSOR (1.215 of 2013 and later).
    sock_loan_thresh_up: int = 4096
    sock_loan_thresh_mp: int = -1
    sock_loan_chunk: int = 65536
    somaxkva: int = 16 * 1024 * 1024
    # Who frees a loaned mbuf's pages and KVA: the "sopendfree" kernel thread
    # (uipc_socket.c 1.215 and later) or, as the 2002 original (1.66.4.1)
    # did, the socket itself at its next sosend/soreceive/disconnect.
    sosend_pendfree: Literal["thread", "per-socket"] = attrs.field(
        default="thread", validator=attrs.validators.in_(("thread", "per-socket"))
    )
    # uvm_loan.c 1.104 keeps loaned pages on the paging queues (activated);
    # 1.29.2.4 (2002) dequeued them and re-activated owned pages when their
    # last loan went.  Object->anon and zero->anon loans are compiled out in
    # 1.104 and the model has only that behaviour (no switch).  1.27's wiring
    # of loaned pages is not modelled.
    loan_dequeues: bool = False
    # 1.104 lends every COW hole as one shared zero page; 1.27 and 1.29.2.4
    # lent a fresh zeroed ownerless page per loan, freed by the unloan.
    zero_loan_style: Literal["shared", "fresh"] = "shared"
    # Kernel and user VA layout (amd64).
    vm_min_user_address: int = 0x1000
    vm_maxuser_address: int = 0x00007F7FFFFFF000
    vm_min_kernel_address: int = 0xFFFF800000000000
    vm_max_kernel_address: int = 0xFFFFFFFFFFFFF000
    costs: CostModel = attrs.field(factory=CostModel)
    seed: int = 0

    @property
    def sock_loan_thresh(self) -> int:
        """The one place that decides whether sosend may loan."""
        return self.sock_loan_thresh_mp if self.multiprocessor else self.sock_loan_thresh_up


PROFILES: dict[str, Profile] = {
    "netbsd-10": Profile(
        name="netbsd-10",
        description=(
            "NetBSD 10 era: uvm_loan.c 1.104, uvm_fault.c 1.226, uvm_page.c 1.246, "
            "x86_tlb.c 1.20 (TP_MAXVA 16), MULTIPROCESSOR kernel"
        ),
    ),
}


def get_profile(profile: str | Profile = "netbsd-10", **overrides: Any) -> Profile:
    """Return a profile by name, with fields overridden one by one.

    ``costs`` may be given as a CostModel or as a mapping of cost fields to
    change: ``get_profile("netbsd-10", tp_maxva=7, costs={"ipi_send_ns": 900})``.
    """
    if isinstance(profile, Profile):
        base = profile
    elif isinstance(profile, str):
        try:
            base = PROFILES[profile]
        except KeyError:
            known = ", ".join(sorted(PROFILES))
            raise ValueError(f"unknown profile {profile!r}; known profiles: {known}") from None
    else:
        raise TypeError(f"profile must be a name or a Profile, not {type(profile).__name__}")
    if not overrides:
        return base
    fields = attrs.fields_dict(Profile)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown profile field(s): {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    for name, value in overrides.items():
        if name != "costs":
            _check_type("profile field", name, getattr(base, name), value)
    costs = overrides.get("costs")
    if isinstance(costs, Mapping):
        cost_fields = attrs.fields_dict(CostModel)
        bad = sorted(set(costs) - set(cost_fields))
        if bad:
            raise ValueError(
                f"unknown cost field(s): {', '.join(bad)}; known: {', '.join(sorted(cost_fields))}"
            )
        for name, value in costs.items():
            _check_type("cost", name, getattr(base.costs, name), value)
        overrides["costs"] = attrs.evolve(base.costs, **costs)
    elif costs is not None and not isinstance(costs, CostModel):
        raise TypeError(
            f"profile field costs must be a CostModel or a mapping of cost names to ints, "
            f"not {type(costs).__name__}"
        )
    return attrs.evolve(base, **overrides)


def _check_type(kind: str, name: str, default: object, value: object) -> None:
    # Every field is an int, a bool or a str (a Literal's values are strings):
    # the default's type is the field's type.  bool is not an int here.
    want = type(default)
    if want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, want)
    if not ok:
        got = f"{type(value).__name__} {value!r}"
        raise TypeError(f"{kind} {name} must be {want.__name__}, not {got}")
