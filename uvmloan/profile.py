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
from pathlib import Path, PurePath
from typing import Any, Literal

import attrs

TLBPolicy = Literal["x86", "mi-asid"]
TLBReplacement = Literal["lru", "fifo", "random"]


def _nonneg(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"cost {attribute.name} must be >= 0, got {value}")


def _posint(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


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
    # Entering and leaving the kernel for one system call (trap, argument
    # copy-in, return), without the work it does: netstack charges it per
    # socket system call (send, recv, the error queue's recvmsg).
    syscall_ns: int = attrs.field(default=150, validator=_nonneg)
    # The clock of the CPU the figures are for, in MHz.  Informational: no
    # charge reads it; figures quoted in cycles are converted with it
    # (``ns_for_cycles``), e.g. 96 cycles of a CR3 reload at 2400 MHz = 40 ns.
    cpu_mhz: int = attrs.field(default=2_400, validator=_posint)

    def copy_ns(self, nbytes: int) -> int:
        return nbytes * 1000 // self.copy_bw if self.copy_bw else 0

    def zero_ns(self, nbytes: int) -> int:
        return nbytes * 1000 // self.zero_bw if self.zero_bw else 0

    def cksum_ns(self, nbytes: int) -> int:
        return nbytes * 1000 // self.cksum_bw if self.cksum_bw else 0

    def ns_for_cycles(self, cycles: int) -> int:
        """``cycles`` of this CPU in nanoseconds (rounded down)."""
        return cycles * 1000 // self.cpu_mhz


@attrs.frozen(kw_only=True)
class NicModel:
    """The network interface the machine sends through: data only.

    The network stack reads ``cksum_offload`` and ``tx_ring`` (the defaults
    of an interface on a link), ``sg`` (without it MSG_ZEROCOPY copies, as
    Linux does) and ``link_bps`` (its bulk transfer's link); ``sg_max_segs``,
    ``tso`` and ``dma_desc_ns`` are data it does not model yet (the driver
    always gathers the whole chain, segments are built by tcp_output,
    descriptors cost nothing).
    """

    # Line rate in bits per second (100baseTX: 100 Mbit/s, the netstack
    # link's default).
    link_bps: int = attrs.field(default=100_000_000, validator=_posint)
    # Scatter/gather DMA: a packet may be gathered from several buffers (a
    # header mbuf plus loaned pages) without copying them into one.
    sg: bool = True
    # Most buffers (DMA segments) one transmitted packet may have.
    sg_max_segs: int = attrs.field(default=16, validator=_posint)
    # The NIC computes the TCP/UDP checksum (else the CPU does, at cksum_bw).
    cksum_offload: bool = False
    # TCP segmentation offload: the NIC cuts a large send into segments.
    tso: bool = False
    # Setting up one DMA descriptor (write the ring entry, bus_dmamap_load
    # bookkeeping), charged per segment when the driver is modelled.
    dma_desc_ns: int = attrs.field(default=100, validator=_nonneg)
    # Transmit descriptors: frames the driver may post before the NIC has
    # sent them (netstack's Netif.tx_ring; 1 = one frame at a time).
    tx_ring: int = attrs.field(default=1, validator=_posint)


def _to_nic(value: object) -> NicModel:
    # A trace header writes the NIC as a table; building a Profile from it
    # gives the NicModel back (Profile(**header["profile"]) round-trips).
    if isinstance(value, Mapping):
        return NicModel(**value)
    if not isinstance(value, NicModel):
        raise TypeError(
            f"profile field nic must be a NicModel or a mapping, not {type(value).__name__}"
        )
    return value


def _pow2_at_least_512(_inst: object, _attr: attrs.Attribute[Any], value: int) -> None:
    if value < 512 or value & (value - 1):
        raise ValueError(f"page_size must be a power of two >= 512, got {value}")


@attrs.frozen(kw_only=True)
class Profile:
    """The constants and switches of one era, plus a cost model.

    The shipped profiles are TOML files (``uvmloan/profiles/*.toml``, see
    ``specs/eras.md``); the defaults here are ``netbsd-10``'s.
    """

    name: str
    description: str = ""
    # The NetBSD sources the switches follow (informational: code reads the
    # switches, never this label).
    era: str = "netbsd-10"
    # The CPUs a Machine built from this profile has unless told otherwise.
    ncpus: int = attrs.field(
        default=1, validator=[attrs.validators.ge(1), attrs.validators.le(256)]
    )
    page_size: int = attrs.field(default=4096, validator=_pow2_at_least_512)
    # x86_tlb.c 1.20: TP_MAXVA 16 individual VAs per shootdown packet, then a
    # full flush (1.13 of 2019 had 7; the 2008-2018 code had 6).  The
    # 2001-2003 i386 pmap had PMAP_TLB_MAXJOBS 16 jobs per CPU queue, then a
    # full flush (specs/eras.md).
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
    # last loan went.  1.27's wiring of loaned pages is not modelled.
    loan_dequeues: bool = False
    # 1.104 lends every COW hole as one shared zero page; 1.27 and 1.29.2.4
    # lent a fresh zeroed ownerless page per loan, freed by the unloan.
    zero_loan_style: Literal["shared", "fresh"] = attrs.field(
        default="shared", validator=attrs.validators.in_(("shared", "fresh"))
    )
    # UVM_LOAN_TOANON of object pages (O->A) and of copy-on-write holes
    # (zero->A): compiled out (#ifdef notdef) in 1.83 and 1.104; present in
    # 1.29.2.4 (uvm_loanuobj, uvm_loanzero).
    toanon_objects: bool = False
    # uvm_unloananon: empty in 1.104 (a failed TOANON loan leaks its an_ref
    # increments); 1.29.2.4 dropped each reference and freed the anon at 0.
    unloananon_unrefs: bool = False
    # What a loan does with a wired page: 1.83 and later refuse it (anon:
    # -1; object: uvm_loanpage EBUSY; TOANON of an anon: -1);
    # 1.29.2.4 only KASSERTs wire_count == 0 for A->K and checks nothing
    # for O->K and A->A.
    wired_loans: Literal["refuse", "unchecked"] = attrs.field(
        default="refuse", validator=attrs.validators.in_(("refuse", "unchecked"))
    )
    # Kernel and user VA layout (amd64).
    vm_min_user_address: int = 0x1000
    vm_maxuser_address: int = 0x00007F7FFFFFF000
    vm_min_kernel_address: int = 0xFFFF800000000000
    vm_max_kernel_address: int = 0xFFFFFFFFFFFFF000
    costs: CostModel = attrs.field(factory=CostModel)
    nic: NicModel = attrs.field(factory=NicModel, converter=_to_nic)
    seed: int = 0

    @property
    def sock_loan_thresh(self) -> int:
        """The one place that decides whether sosend may loan."""
        return self.sock_loan_thresh_mp if self.multiprocessor else self.sock_loan_thresh_up


#: The shipped profiles by name, loaded from ``uvmloan/profiles/*.toml``.
PROFILES: dict[str, Profile] = {}


def get_profile(profile: str | Path | Profile = "netbsd-10", **overrides: Any) -> Profile:
    """Return a profile by name (or TOML file), with fields overridden one by one.

    ``profile`` is a shipped profile's name, a ``Path`` to a profile file
    (``load_profile``) or a Profile.  ``costs`` and ``nic`` may be given as a
    CostModel/NicModel or as a mapping of fields to change:
    ``get_profile("netbsd-10", tp_maxva=7, costs={"ipi_send_ns": 900})``.
    """
    if isinstance(profile, Profile):
        base = profile
    elif isinstance(profile, str):
        try:
            base = PROFILES[profile]
        except KeyError:
            known = ", ".join(sorted(PROFILES))
            raise ValueError(f"unknown profile {profile!r}; known profiles: {known}") from None
    elif isinstance(profile, PurePath):
        from .profile_toml import load_profile

        base = load_profile(profile)
    else:
        raise TypeError(
            f"profile must be a name, a Path or a Profile, not {type(profile).__name__}"
        )
    if not overrides:
        return base
    return apply_overrides(base, overrides)


def apply_overrides(base: Profile, overrides: Mapping[str, Any], where: str = "") -> Profile:
    """``base`` with ``overrides`` applied field by field, each checked.

    ``where`` names the file the overrides come from, for the messages.
    """
    at = f"{where}: " if where else ""
    fields = attrs.fields_dict(Profile)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(
            f"{at}unknown profile field(s): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(fields))}"
        )
    changes = dict(overrides)
    for name, value in overrides.items():
        if name not in _NESTED:
            _check_type(f"{at}profile field", name, getattr(base, name), value)
    for name, cls in _NESTED.items():
        value = overrides.get(name)
        if isinstance(value, Mapping):
            sub = attrs.fields_dict(cls)
            bad = sorted(set(value) - set(sub))
            if bad:
                raise ValueError(
                    f"{at}unknown {_KIND[name]} field(s): {', '.join(bad)}; "
                    f"known: {', '.join(sorted(sub))}"
                )
            current = getattr(base, name)
            for k, v in value.items():
                _check_type(f"{at}{_KIND[name]}", k, getattr(current, k), v)
            try:
                changes[name] = attrs.evolve(current, **value)
            except ValueError as e:
                raise ValueError(f"{at}{e}") from None
        elif value is not None and not isinstance(value, cls):
            raise TypeError(
                f"{at}profile field {name} must be a {cls.__name__} or a mapping of "
                f"{_KIND[name]} names to values, not {type(value).__name__}"
            )
    try:
        return attrs.evolve(base, **changes)
    except ValueError as e:
        raise ValueError(f"{at}{e}") from None


_NESTED: dict[str, type[Any]] = {"costs": CostModel, "nic": NicModel}
_KIND = {"costs": "cost", "nic": "nic"}


def list_profiles() -> list[tuple[str, str]]:
    """(name, description) of every shipped profile, by name."""
    return [(n, PROFILES[n].description) for n in sorted(PROFILES)]


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


def _load_shipped() -> None:
    from .profile_toml import load_shipped

    PROFILES.update(load_shipped())


_load_shipped()
