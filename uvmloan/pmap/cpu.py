"""CPUs and the platform they share.

``CPU`` is the model's ``struct cpu_info``: its TLB, its clock, the user pmap
loaded in it (CR3), x86's lazy-TLB state and its pending shootdown packet.
``Platform`` is what every layer reaches for ``curcpu()``: the CPUs, the
profile and cost model, the tracer, the scheduler and physical memory.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ..physmem import PhysMem
from ..profile import CostModel, Profile
from ..sim import Scheduler
from ..trace import Tracer
from .tlb import TLB

if TYPE_CHECKING:
    from .pmap import Pmap

FaultHandler = Callable[["CPU", "Pmap", int, int, bool], None]
"""fault_handler(cpu, pmap, va, access_type, user): resolve or raise."""


class TLBState(enum.Enum):
    """x86 ``ci_tlbstate``."""

    VALID = "valid"
    LAZY = "lazy"  # pmap_deactivate()d: still in pm_cpus, still caching
    STALE = "stale"  # a shootdown took it out of pm_cpus while lazy


@attrs.define(slots=True, eq=False)
class ShootdownPacket:
    """x86_tlb.c ``pmap_tlb_packet_t``: the per-CPU pending shootdown set."""

    vas: list[int] = attrs.field(factory=list)
    allva: bool = False
    global_pte: bool = False
    userpmap: bool = False
    targets: set[int] = attrs.field(factory=set)
    # The MI (ASID) policy tracks address spaces rather than addresses.
    pmaps: dict[Pmap, None] = attrs.field(factory=dict)

    @property
    def empty(self) -> bool:
        return not self.vas and not self.allva and not self.pmaps

    def clear(self) -> None:
        self.vas.clear()
        self.allva = False
        self.global_pte = False
        self.userpmap = False
        self.targets = set()
        self.pmaps = {}


@attrs.define(slots=True, eq=False, repr=False)
class CPU:
    index: int
    tlb: TLB
    clock: int = 0
    curpmap: Pmap | None = None
    tlbstate: TLBState = TLBState.VALID
    packet: ShootdownPacket = attrs.field(factory=ShootdownPacket)
    # MI ASID policy (pmap_tlb.c, one TLB per CPU): the ASID each pmap holds
    # on this CPU's TLB (ti_pais), the ASIDs marked in use (ti_asid_bitmap,
    # KERNEL_PID 0 always), the next ASID to try (ti_asid_hint) and the
    # number of ASID pool reinitialisations (evcnt "asid pool reinit").
    asids: dict[Pmap, int] = attrs.field(factory=dict)
    asid_bitmap: set[int] = attrs.field(factory=lambda: {0})
    asid_hint: int = 1
    asid_reinits: int = 0
    # Shootdown IPIs not yet taken (MI policy: the initiator does not wait).
    pending_ipis: list[Callable[[], None]] = attrs.field(factory=list)

    def charge(self, ns: int) -> None:
        self.clock += ns

    def __repr__(self) -> str:
        cur = self.curpmap.name if self.curpmap is not None else None
        return f"<CPU {self.index} t={self.clock}ns pmap={cur} tlb={len(self.tlb)}>"


class _OnCPU:
    """``Platform.on_cpu``'s context manager: a plain class, because a
    generator-based ``contextmanager`` costs a microsecond per user access
    and every load and store goes through one."""

    __slots__ = ("_cpu", "_plat", "_saved")

    def __init__(self, plat: Platform, cpu: CPU) -> None:
        self._plat = plat
        self._cpu = cpu
        self._saved = plat.cur

    def __enter__(self) -> CPU:
        self._saved = self._plat.cur
        self._plat.cur = self._cpu.index
        return self._cpu

    def __exit__(self, *exc: object) -> None:
        self._plat.cur = self._saved


@attrs.define(slots=True, eq=False)
class Platform:
    profile: Profile
    physmem: PhysMem
    tracer: Tracer
    cpus: list[CPU]
    sched: Scheduler = attrs.field(factory=Scheduler)
    cur: int = 0
    fault_handler: FaultHandler | None = None
    #: ``profile.costs``, resolved once (a plain attribute, not a property:
    #: every charge in the model reads it).  A machine's profile is fixed
    #: for its life.  (No on_setattr hook keeps the two in step: attrs would
    #: then route every attribute store, ``cur`` included, through Python.)
    costs: CostModel = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.costs = self.profile.costs

    @classmethod
    def build(cls, profile: Profile, physmem: PhysMem, tracer: Tracer, ncpus: int) -> Platform:
        tagged = profile.tlb_policy != "x86"  # x86 tags every entry ASID 0 (mmu.translate)
        cpus = [
            CPU(
                i,
                TLB(
                    profile.tlb_entries,
                    profile.tlb_replacement,
                    seed=profile.seed + i,
                    tagged=tagged,
                ),
            )
            for i in range(ncpus)
        ]
        return cls(profile, physmem, tracer, cpus)

    @property
    def ncpus(self) -> int:
        return len(self.cpus)

    def curcpu(self) -> CPU:
        return self.cpus[self.cur]

    def now(self) -> int:
        return self.cpus[self.cur].clock

    def charge(self, ns: int) -> None:
        self.cpus[self.cur].clock += ns

    def cpu(self, index: int) -> CPU:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"cpu must be an int index, not {type(index).__name__}")
        if not 0 <= index < len(self.cpus):
            raise ValueError(f"unknown CPU {index}: this machine has CPUs 0..{len(self.cpus) - 1}")
        return self.cpus[index]

    def on_cpu(self, index: int) -> _OnCPU:
        """Run the enclosed kernel work on CPU ``index`` (it becomes curcpu)."""
        return _OnCPU(self, self.cpu(index))
