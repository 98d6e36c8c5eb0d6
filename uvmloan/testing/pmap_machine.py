"""A hypothesis state machine for the pmap, the TLBs and the MMU.

``PmapStateMachine`` drives one :class:`~uvmloan.Machine` (2-4 CPUs, no VM
layer: the fault handler is removed, so a fault is a ``SegmentationFault``
for a user access and a ``KernelAssertion`` for a kernel one) with random
``pmap_enter``/``pmap_remove``/``pmap_protect``/``pmap_page_protect``/
``pmap_kenter_pa``/``pmap_kremove``/``pmap_update``, activations, lazy
deactivations, reference-bit operations and user/kernel loads and stores on
any CPU.  Beside the machine it keeps three references:

* the mappings (pmap, va) -> (frame, writable) that pmap(9) promises, and
  from them the exact pv list of every page;
* the bytes of every frame (stores update it; loads are compared with it);
* the referenced/modified state of every page (``pmap_is_referenced`` and
  ``pmap_is_modified`` are compared with it).

It also tracks the *barrier*: the set of CPUs that ran a deferrable
operation (enter, remove, protect, kenter, kremove) and have not yet run
``pmap_update`` (or another call that flushes their packet:
``pmap_page_protect``, ``pmap_clear_*``, ``pmap_deactivate``).  When that
set is empty the barrier is reached and

* ``check_invariants(m)`` must pass (TLB1: no TLB grants what its PTE does
  not; PM1-PM3: page tables, pv lists, statistics);
* every access must behave as the page tables alone say: an access whose
  outcome depends on a stale TLB entry is a failure.

Before the barrier, accesses through stale entries are allowed and the
reference follows the hardware rules of :mod:`uvmloan.mmu` (a cached entry
is used as it is; a write through a clean entry re-walks).  After a
``pmap_page_protect`` issued while no other CPU owes a ``pmap_update``, the
page's managed mappings must already be protected on every CPU (the x86
call is synchronous).  The event counters of pmap_enter, pmap_kenter_pa and
pmap_update must equal the number of calls the rules made, and the MMU's own
TLB-hit and page-walk statistics the number each access must take by the
hardware rules (one translation per access: a hit, or a walk).

Run it from pytest with::

    from uvmloan.testing.pmap_machine import PmapStateMachine, hypothesis_settings
    TestPmap = PmapStateMachine.TestCase
    TestPmap.settings = hypothesis_settings()

Extend it by subclassing.  The machine is configured through the hooks
every shipped machine shares (:mod:`uvmloan.testing.hooks`): ``NCPUS``
(``None``, the default: drawn per example from ``MIN_CPUS``..``MAX_CPUS``),
``MEMORY``, ``PROFILE``, ``PROFILE_OVERRIDES`` (e.g. ``{"tlb_policy":
"mi-asid"}``), ``INJECT`` and the factory :meth:`make_machine` (override it
to change the fresh machine: ``m.pmap.inject_skip_update = True``).  The
sizes are ``NPAGES``, ``NUSER_VAS``, ``NKERNEL_VAS``; add ``@rule`` methods
that call pmap operations through :meth:`on_cpu` and update the references
with :meth:`ref_enter`/:meth:`ref_remove`/:meth:`mark_dirty` (or reuse
:meth:`do_enter`; rules may draw earlier mappings from the ``mappings``
bundle); add
``@invariant`` methods for your own properties.  ``hypothesis_settings()``
returns the "ci" (default) or "deep" settings profile (registered as
"pmap-ci"/"pmap-deep"), chosen by the environment variable
``UVMLOAN_HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, rule

from ..invariants import check_invariants
from ..machine import Machine
from ..page import Page
from ..param import UVM_PGA_ZERO, VMProt
from ..pmap.cpu import TLBState
from ..pmap.pmap import PMAP_WIRED, Pmap
from .failures import CheckFailure
from .hooks import MachineHooks
from .pmap_model import FAULTS, NONE, RW, WINDOW, PmapModel, R, pmap_state_snapshot
from .profiles import PROFILE_ENV, machine_settings, register_profiles

__all__ = [
    "FAULTS",
    "NONE",
    "PROFILE_ENV",
    "RW",
    "WINDOW",
    "PmapModel",
    "PmapStateMachine",
    "R",
    "hypothesis_settings",
    "pmap_state_snapshot",
    "register_hypothesis_profiles",
]

# Short profile name -> (max_examples, stateful_step_count).
PMAP_SIZES = {"ci": (150, 30), "deep": (1500, 80)}


def register_hypothesis_profiles() -> None:
    """Register the "pmap-ci" and "pmap-deep" settings profiles (once)."""
    register_profiles("pmap", PMAP_SIZES)


def hypothesis_settings(name: str | None = None) -> settings:
    """The "ci" or "deep" settings for this machine.

    ``name`` (or else ``$UVMLOAN_HYPOTHESIS_PROFILE``, else "ci") picks the
    profile; the profiles are registered as "pmap-ci"/"pmap-deep" so that
    other machines' profiles of the same short name cannot collide.  An
    unknown name means "ci".
    """
    return machine_settings("pmap", PMAP_SIZES, name)


class PmapStateMachine(PmapModel, MachineHooks, RuleBasedStateMachine):
    """Random pmap/TLB/MMU operations on 2-4 CPUs against reference models.

    See the module docstring for what is checked and how to extend it.
    """

    # --- knobs for subclasses -------------------------------------------------
    # The shared hooks (uvmloan.testing.hooks); NCPUS None: drawn per example
    # from MIN_CPUS..MAX_CPUS.  MEMORY must hold NPAGES + 8 pages.
    NCPUS: ClassVar[int | None] = None
    MEMORY: ClassVar[int | str] = "256k"
    TRACE: ClassVar[str] = "record"
    NPAGES: ClassVar[int] = 4
    NUSER_VAS: ClassVar[int] = 4
    NKERNEL_VAS: ClassVar[int] = 3
    NPMAPS: ClassVar[int] = 2
    MIN_CPUS: ClassVar[int] = 2
    MAX_CPUS: ClassVar[int] = 4
    UVA_BASE: ClassVar[int] = 0x10000
    KVA_OFFSET: ClassVar[int] = 0x1000_0000

    # (pmap index, va index, page index) of the mappings made so far: later
    # rules draw from them, so hypothesis readily builds chains like
    # fault_in -> enter again -> page_protect.
    mappings = Bundle("mappings")

    def __init__(self) -> None:
        super().__init__()
        self.m: Machine | None = None

    # --- setup ------------------------------------------------------------------

    @initialize(n=st.integers(0, 255))
    def init_machine(self, n: int) -> None:
        ncpus = self.NCPUS
        if ncpus is None:
            ncpus = self.MIN_CPUS + n % (self.MAX_CPUS - self.MIN_CPUS + 1)
        m = self.make_machine(ncpus)
        # Pure hardware semantics: no VM layer resolves faults.
        m.platform.fault_handler = None
        self.m = m
        self.ps = m.page_size
        self.pmaps: list[Pmap] = [m.pmap.pmap_create(f"p{i}") for i in range(self.NPMAPS)]
        self.kpm = m.pmap_kernel()
        self.pages: list[Page] = []
        for _ in range(self.NPAGES):
            pg = m.uvm.uvm_pagealloc(None, 0, None, UVM_PGA_ZERO)
            assert pg is not None
            self.pages.append(pg)
        self.uvas = [self.UVA_BASE + i * self.ps for i in range(self.NUSER_VAS)]
        kbase = m.profile.vm_min_kernel_address + self.KVA_OFFSET
        self.kvas = [kbase + i * self.ps for i in range(self.NKERNEL_VAS)]
        # Reference models.
        self.maps: dict[tuple[str, int], tuple[int, bool]] = {}
        self.kmaps: dict[int, tuple[int, bool]] = {}
        self.bytes: dict[int, bytearray] = {pg.frame: bytearray(WINDOW) for pg in self.pages}
        self.referenced: dict[int, bool] = {pg.frame: False for pg in self.pages}
        self.modified: dict[int, bool] = {pg.frame: False for pg in self.pages}
        self.dirty: set[int] = set()
        # What the rules did, counted here (not by the tracer): pmap(9) calls
        # made, and the TLB hits and page walks the accesses must have taken.
        self.calls: Counter[str] = Counter()
        self.expect_hits = 0
        self.expect_walks = 0
        # Every CPU starts out running a user process.
        for c in m.cpus:
            with m.on_cpu(c.index):
                m.pmap.pmap_activate(self.pmaps[c.index % len(self.pmaps)], c)

    def teardown(self) -> None:
        if self.m is not None:
            self.m.close()
            self.m = None

    # --- deferrable pmap operations ---------------------------------------------

    @rule(
        target=mappings,
        cpu=st.integers(0, 15),
        pmi=st.integers(0, 7),
        vi=st.integers(0, 15),
        pgi=st.integers(0, 15),
        writable=st.booleans(),
        access=st.sampled_from(["none", "read", "write"]),
        wired=st.booleans(),
    )
    def enter(
        self, cpu: int, pmi: int, vi: int, pgi: int, writable: bool, access: str, wired: bool
    ) -> tuple[int, int, int]:
        return self.do_enter(cpu, pmi, vi, pgi, writable, access, wired)

    def do_enter(
        self, cpu: int, pmi: int, vi: int, pgi: int, writable: bool, access: str, wired: bool
    ) -> tuple[int, int, int]:
        """pmap_enter of page ``pgi`` at user VA ``vi`` of pmap ``pmi`` on
        ``cpu``, with ``access`` ("none", "read", "write") as the access type,
        keeping the references up to date; returns the bundle value."""
        pmi, vi, pgi = pmi % len(self.pmaps), vi % len(self.uvas), pgi % len(self.pages)
        pm = self.pmaps[pmi]
        va = self.uvas[vi]
        pg = self.pages[pgi]
        prot = RW if writable else R
        flags = 0
        if access == "read" or (access == "write" and not writable):
            flags |= int(R)
        elif access == "write":
            flags |= int(RW)
        if wired:
            flags |= PMAP_WIRED
        with self.on_cpu(cpu):
            self.machine.pmap.pmap_enter(pm, va, pg.pa, prot, flags)
        self.calls["pmap enter"] += 1
        self.mark_dirty(cpu)
        self.ref_enter(pm, va, pg.frame, writable)
        if flags & int(R):
            self.referenced[pg.frame] = True
        if flags & int(VMProt.WRITE):
            self.modified[pg.frame] = True
        return (pmi, vi, pgi)

    @rule(
        cpu=st.integers(0, 15),
        mp=mappings,
        writable=st.booleans(),
        access=st.sampled_from(["none", "read", "write"]),
        wired=st.booleans(),
    )
    def reenter(
        self, cpu: int, mp: tuple[int, int, int], writable: bool, access: str, wired: bool
    ) -> None:
        """pmap_enter of a page made earlier, typically over its own mapping (a
        fault path racing another CPU, a wiring change, a protection upgrade)."""
        self.do_enter(cpu, *mp, writable, access, wired)

    @rule(
        cpu=st.integers(0, 15),
        mp=mappings,
        n=st.integers(1, 2),
        prot=st.sampled_from([NONE, R, RW]),
    )
    def protect_mapping(self, cpu: int, mp: tuple[int, int, int], n: int, prot: int) -> None:
        self.protect(cpu, mp[0], mp[1], n, prot)

    @rule(cpu=st.integers(0, 15), pmi=st.integers(0, 7), vi=st.integers(0, 15), n=st.integers(1, 4))
    def remove(self, cpu: int, pmi: int, vi: int, n: int) -> None:
        pm = self.pmaps[pmi % len(self.pmaps)]
        i = vi % len(self.uvas)
        sva = self.uvas[i]
        eva = sva + min(n, len(self.uvas) - i) * self.ps
        with self.on_cpu(cpu):
            self.machine.pmap.pmap_remove(pm, sva, eva)
        self.mark_dirty(cpu)
        for va in range(sva, eva, self.ps):
            self.ref_remove(pm, va)

    @rule(
        cpu=st.integers(0, 15),
        pmi=st.integers(0, 7),
        vi=st.integers(0, 15),
        n=st.integers(1, 4),
        prot=st.sampled_from([NONE, R, RW]),
    )
    def protect(self, cpu: int, pmi: int, vi: int, n: int, prot: int) -> None:
        pm = self.pmaps[pmi % len(self.pmaps)]
        i = vi % len(self.uvas)
        sva = self.uvas[i]
        eva = sva + min(n, len(self.uvas) - i) * self.ps
        with self.on_cpu(cpu):
            self.machine.pmap.pmap_protect(pm, sva, eva, prot)
        self.mark_dirty(cpu)
        for va in range(sva, eva, self.ps):
            key = (pm.name, va)
            if key not in self.maps:
                continue
            if prot == NONE:
                del self.maps[key]
            elif not prot & VMProt.WRITE:
                self.maps[key] = (self.maps[key][0], False)

    @rule(
        cpu=st.integers(0, 15),
        ki=st.integers(0, 15),
        pgi=st.integers(0, 15),
        writable=st.booleans(),
    )
    def kenter(self, cpu: int, ki: int, pgi: int, writable: bool) -> None:
        va = self.kvas[ki % len(self.kvas)]
        if va in self.kmaps:
            return  # pmap(9): never kenter over a valid mapping (tests/test_pmap_badinput.py)
        pg = self.pages[pgi % len(self.pages)]
        with self.on_cpu(cpu):
            self.machine.pmap.pmap_kenter_pa(va, pg.pa, RW if writable else R, 0)
        self.calls["pmap kenter_pa"] += 1
        self.mark_dirty(cpu)
        self.ref_enter(self.kpm, va, pg.frame, writable)

    @rule(cpu=st.integers(0, 15), ki=st.integers(0, 15), n=st.integers(1, 3))
    def kremove(self, cpu: int, ki: int, n: int) -> None:
        i = ki % len(self.kvas)
        sva = self.kvas[i]
        size = min(n, len(self.kvas) - i) * self.ps
        with self.on_cpu(cpu):
            self.machine.pmap.pmap_kremove(sva, size)
        self.mark_dirty(cpu)
        for va in range(sva, sva + size, self.ps):
            self.ref_remove(self.kpm, va)

    # --- barriers -----------------------------------------------------------------

    @rule(cpu=st.integers(0, 15), pmi=st.integers(0, 8))
    def update(self, cpu: int, pmi: int) -> None:
        pms = [*self.pmaps, self.kpm]
        with self.on_cpu(cpu):
            self.machine.pmap.pmap_update(pms[pmi % len(pms)])
        self.calls["pmap update"] += 1
        self.mark_flushed(cpu)
        if self.at_barrier:
            check_invariants(self.machine)

    @rule(cpu=st.integers(0, 15))
    def update_all(self, cpu: int) -> None:
        """pmap_update on every CPU that owes one (the barrier), starting at ``cpu``."""
        m = self.machine
        for i in range(m.ncpus):
            c = (cpu + i) % m.ncpus
            if c in self.dirty:
                with m.on_cpu(c):
                    m.pmap.pmap_update(self.kpm)
                self.calls["pmap update"] += 1
                self.mark_flushed(c)
        check_invariants(m)

    @rule(cpu=st.integers(0, 15), mp=mappings, prot=st.sampled_from([NONE, R]))
    def page_protect_mapped(self, cpu: int, mp: tuple[int, int, int], prot: int) -> None:
        self.page_protect(cpu, mp[2], prot)

    @rule(cpu=st.integers(0, 15), pgi=st.integers(0, 15), prot=st.sampled_from([NONE, R, RW]))
    def page_protect(self, cpu: int, pgi: int, prot: int) -> None:
        pg = self.pages[pgi % len(self.pages)]
        mappings = [(name, va) for (name, va), (f, _w) in self.maps.items() if f == pg.frame]
        # Deferred work still owed by *other* CPUs may leave entries of an
        # earlier incarnation of the same (pmap, va) cached; NetBSD's callers
        # hold the object lock across pmap_remove and pmap_update, so such a
        # page cannot be protected (or re-entered) meanwhile.  Check the
        # synchronous effect only when no other CPU owes a pmap_update.
        others_clean = not (self.dirty - {cpu % self.machine.ncpus})
        with self.on_cpu(cpu):
            self.machine.pmap.pmap_page_protect(pg, prot)
        if prot & VMProt.WRITE:
            return  # pmap.h: nothing at all happens
        # pmap_tlb_shootnow() flushed this CPU's whole packet -- except that
        # pmap_pp_remove returns at once for a page with no mappings.
        if prot != NONE or mappings:
            self.mark_flushed(cpu)
        for key in mappings:
            if prot == NONE:
                del self.maps[key]
            else:
                self.maps[key] = (pg.frame, False)
        if others_clean:
            covered = [(self._pmap_named(n), va) for n, va in mappings]
            self._check_page_protected(pg, covered, prot)
        if self.at_barrier:
            check_invariants(self.machine)

    @rule(cpu=st.integers(0, 15), pgi=st.integers(0, 15), which=st.sampled_from(["mod", "ref"]))
    def clear_attr(self, cpu: int, pgi: int, which: str) -> None:
        pg = self.pages[pgi % len(self.pages)]
        pmm = self.machine.pmap
        with self.on_cpu(cpu):
            if which == "mod":
                was = pmm.pmap_clear_modify(pg)
                expect = self.modified[pg.frame]
                self.modified[pg.frame] = False
            else:
                was = pmm.pmap_clear_reference(pg)
                expect = self.referenced[pg.frame]
                self.referenced[pg.frame] = False
        self.mark_flushed(cpu)
        if was != expect:
            raise CheckFailure(
                "attributes",
                f"pmap_clear_{which}(frame {pg.frame}) returned {was}, expected {expect}",
            )
        if self.at_barrier:
            check_invariants(self.machine)

    # --- scheduling -----------------------------------------------------------------

    @rule(cpu=st.integers(0, 15), pmi=st.integers(0, 7))
    def activate(self, cpu: int, pmi: int) -> None:
        pm = self.pmaps[pmi % len(self.pmaps)]
        with self.on_cpu(cpu) as c:
            self.machine.pmap.pmap_activate(pm, c)

    @rule(cpu=st.integers(0, 15))
    def deactivate(self, cpu: int) -> None:
        with self.on_cpu(cpu) as c:
            self.machine.pmap.pmap_deactivate(c)
        # pmap_deactivate runs pmap_tlb_shootnow() first (pmap.c 1.381).
        self.mark_flushed(cpu)

    # --- accesses -----------------------------------------------------------------

    @rule(
        cpu=st.integers(0, 15),
        vi=st.integers(0, 15),
        mapped=st.booleans(),
        off=st.integers(0, WINDOW - 4),
        data=st.none() | st.binary(min_size=1, max_size=4),
    )
    def user_access(self, cpu: int, vi: int, mapped: bool, off: int, data: bytes | None) -> None:
        """A user load (``data`` None) or store on ``cpu``'s current pmap; with
        ``mapped`` the VA is one the reference says is mapped."""
        m = self.machine
        c = m.cpu(cpu % m.ncpus)
        pm = c.curpmap
        if pm is None:
            return
        if c.tlbstate is not TLBState.VALID:
            # Returning to user mode runs pmap_load(), which reactivates.
            with m.on_cpu(c.index):
                m.pmap.pmap_activate(pm, c)
        vas = sorted(va for name, va in self.maps if name == pm.name) if mapped else []
        va = vas[vi % len(vas)] if vas else self.uvas[vi % len(self.uvas)]
        self._access(c, pm, va, off, data, user=True)

    @rule(
        cpu=st.integers(0, 15),
        mp=mappings,
        off=st.integers(0, WINDOW - 4),
        data=st.none() | st.binary(min_size=1, max_size=4),
    )
    def access_mapping(
        self, cpu: int, mp: tuple[int, int, int], off: int, data: bytes | None
    ) -> None:
        """Schedule the mapping's process on ``cpu`` (if it is not running
        there) and access the mapping's VA from user mode."""
        m = self.machine
        c = m.cpu(cpu % m.ncpus)
        pm = self.pmaps[mp[0]]
        if c.curpmap is not pm or c.tlbstate is not TLBState.VALID:
            with m.on_cpu(c.index):
                m.pmap.pmap_activate(pm, c)
        self._access(c, pm, self.uvas[mp[1]], off, data, user=True)

    @rule(
        cpu=st.integers(0, 15),
        ki=st.integers(0, 15),
        off=st.integers(0, WINDOW - 4),
        data=st.none() | st.binary(min_size=1, max_size=4),
    )
    def kernel_access(self, cpu: int, ki: int, off: int, data: bytes | None) -> None:
        m = self.machine
        c = m.cpu(cpu % m.ncpus)
        self._access(c, self.kpm, self.kvas[ki % len(self.kvas)], off, data, user=False)

    @rule(
        target=mappings,
        cpu=st.integers(0, 15),
        vi=st.integers(0, 15),
        pgi=st.integers(0, 15),
        writable=st.booleans(),
        off=st.integers(0, WINDOW - 4),
        data=st.none() | st.binary(min_size=1, max_size=4),
    )
    def fault_in(
        self, cpu: int, vi: int, pgi: int, writable: bool, off: int, data: bytes | None
    ) -> tuple[int, int, int]:
        """What uvm_fault does for a user access of the process running on
        ``cpu``: pmap_enter with the access type, pmap_update, retry."""
        m = self.machine
        c = m.cpu(cpu % m.ncpus)
        pm = c.curpmap if c.curpmap is not None else self.pmaps[0]
        if c.curpmap is not pm or c.tlbstate is not TLBState.VALID:
            with m.on_cpu(c.index):
                m.pmap.pmap_activate(pm, c)
        if data is not None and not writable:
            data = None  # a write fault never maps read-only
        mp = self.do_enter(
            c.index, self.pmaps.index(pm), vi, pgi, writable, "write" if data else "read", False
        )
        with m.on_cpu(c.index):
            m.pmap.pmap_update(pm)
        self.calls["pmap update"] += 1
        self.mark_flushed(c.index)
        if self.at_barrier:
            check_invariants(m)
        self._access(c, pm, self.uvas[mp[1]], off, data, user=True)
        return mp
