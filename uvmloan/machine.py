"""Machine: the facade research code builds first.

A machine owns physical memory (one mmap'd arena), its CPUs with their TLBs
and clocks, the pmap module with the kernel pmap, the MMU, the page allocator
and the tracer.  Processes, maps and loans hang off it (later layers).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .borrow import KernelLoan, kernel_loan, kernel_loan_uobj
from .errors import MachineClosed, SegmentationFault, UVMError
from .fault import uvm_fault
from .map import VMMap
from .mmu import MMU
from .object import AnonObject, VnodeObject
from .page import Page, PageAllocator
from .param import EACCES, EFAULT, EINVAL, ENOMEM, VMProt
from .pdaemon import uvmpd_reclaim_page, uvmpd_scan
from .physmem import BACKEND, PhysMem
from .pmap.cpu import CPU, Platform, TLBState
from .pmap.pmap import Pmap, PmapModule
from .process import Process
from .profile import Profile, get_profile
from .trace import Event, JSONLinesSink, Tracer, trace_header

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(size: int | str, what: str = "memory size") -> int:
    """ "64M", "1G", "512k" (also "64MB", "64MiB") or an int number of bytes.

    ``what`` names the quantity in error messages.
    """
    if isinstance(size, bool):
        raise TypeError(f"{what} must be a size like '64M' or a number of bytes")
    if isinstance(size, int):
        return size
    if not isinstance(size, str):
        raise TypeError(f"{what} must be a size like '64M' or an int, not {type(size).__name__}")
    m = _SIZE_RE.match(size)
    if not m:
        raise ValueError(f"cannot parse {what} {size!r}; use e.g. 4096, '64K', '10M' or '1G'")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


TRACE_MODES = ("off", "counters", "record")


def _make_tracer(trace: str | Path | Tracer) -> Tracer:
    if isinstance(trace, Tracer):
        return trace
    if trace == "off":
        return Tracer(on=False)
    if trace == "counters":
        return Tracer()
    if trace == "record":
        t = Tracer()
        t.record()
        return t
    if isinstance(trace, Path):
        return Tracer()
    if isinstance(trace, str):
        # A mistyped mode must not become a file of that name.
        raise ValueError(
            f"trace={trace!r} is not a trace mode; use one of {', '.join(map(repr, TRACE_MODES))}"
            ", a Tracer, or write JSON Lines with a pathlib.Path or trace_file='path'"
        )
    raise ValueError(
        "trace must be 'off', 'counters', 'record', a pathlib.Path or a Tracer, "
        f"not {type(trace).__name__}"
    )


class Machine:
    """A simulated multiprocessor running the modelled NetBSD kernel.

    ``Machine(ncpus=2, memory="64M", profile="netbsd-10", trace="record")``.
    ``profile`` is a name or a Profile; keyword ``profile_overrides`` change
    single fields (``{"tp_maxva": 7}``).

    ``trace`` is a mode: ``"off"`` (no counters, no events), ``"counters"``
    (the default) or ``"record"`` (events kept in ``m.trace``), or a Tracer
    of your own.  ``trace_file="t.jsonl"`` (or ``trace=Path("t.jsonl")``)
    also writes the events as JSON Lines (``specs/trace.md``).

    ``close()`` unmaps the memory; the machine refuses all work afterwards
    (``MachineClosed``) but its counters and trace stay readable.
    """

    def __init__(
        self,
        ncpus: int | None = None,
        memory: int | str | None = None,
        *,
        npages: int | None = None,
        page_size: int | None = None,
        profile: str | Path | Profile = "netbsd-10",
        profile_overrides: dict[str, Any] | None = None,
        trace: str | Path | Tracer = "counters",
        trace_file: str | Path | None = None,
        on_shortage: str = "raise",
    ) -> None:
        if on_shortage not in ("raise", "reclaim"):
            raise ValueError(f"on_shortage must be 'raise' or 'reclaim', got {on_shortage!r}")
        # What a fault does when no page can be had.  NetBSD sleeps in
        # uvm_wait() until the pagedaemon freed some and restarts the fault;
        # "reclaim" runs the pagedaemon and restarts, "raise" reports ENOMEM.
        self.on_shortage = on_shortage
        if ncpus is not None and (
            not isinstance(ncpus, int) or isinstance(ncpus, bool) or not 1 <= ncpus <= 256
        ):
            raise ValueError(f"ncpus must be an int from 1 to 256, got {ncpus!r}")
        overrides = dict(profile_overrides or {})
        if page_size is not None:
            overrides["page_size"] = page_size
        prof = get_profile(profile, **overrides)
        if ncpus is None:
            ncpus = prof.ncpus  # the profile's machine (1 for netbsd-10)
        ps = prof.page_size
        if memory is not None and npages is not None:
            raise ValueError("give memory or npages, not both")
        if npages is None:
            nbytes = parse_size(memory if memory is not None else "64M")
            if nbytes <= 0 or nbytes % ps:
                raise ValueError(
                    f"memory {memory!r} must be a positive multiple of the page size {ps}"
                )
            npages = nbytes // ps
        if not isinstance(npages, int) or isinstance(npages, bool) or npages < 1:
            raise ValueError(f"npages must be a positive int, got {npages!r}")
        self.profile: Profile = prof
        self.tracer = _make_tracer(trace)
        if isinstance(trace, Path):
            if trace_file is not None:
                raise ValueError("give the JSON Lines path as trace= or trace_file=, not both")
            trace_file = trace
        if trace_file is not None:
            if not isinstance(trace_file, str | Path) or not str(trace_file).strip():
                raise TypeError(f"trace_file must be a path, not {trace_file!r}")
            if not self.tracer.on:
                raise ValueError("trace_file needs tracing on: trace='off' emits no events")
        self.physmem = PhysMem(npages, ps)
        self._sink: JSONLinesSink | None = None
        if trace_file is not None:
            try:
                self._sink = JSONLinesSink(
                    trace_file,
                    trace_header(
                        prof, ncpus=ncpus, npages=npages, backend=BACKEND, on_shortage=on_shortage
                    ),
                )
            except BaseException:
                self.physmem.close()
                raise
            self.tracer.add_sink(self._sink)
        self.platform = Platform.build(prof, self.physmem, self.tracer, ncpus)
        self.uvm = PageAllocator(self.platform, npages, ps, on_shortage=on_shortage)
        self.pmap = PmapModule(self.platform, self.uvm.phys_to_page)
        self.uvm.pmap = self.pmap
        self.mmu = MMU(self.platform, self.pmap)
        self.kernel_map = VMMap(
            "kernel_map",
            self.pmap.kernel,
            self.uvm,
            prof.vm_min_kernel_address,
            prof.vm_max_kernel_address,
            base=prof.vm_min_kernel_address + 0x40000000,
        )
        self._maps: dict[Pmap, VMMap] = {self.pmap.kernel: self.kernel_map}
        self.processes: list[Process] = []
        self.kernel_loans: dict[KernelLoan, None] = {}
        self._pid = 0
        self._closed = False
        self.platform.fault_handler = self._fault_handler

    # ---------------------------------------------------------- processes

    def _next_pid(self) -> int:
        self._pid += 1
        return self._pid

    def spawn(self, name: str = "proc", cpu: int = 0) -> Process:
        """A new process with an empty address space, scheduled on ``cpu``."""
        self._check_open("spawn")
        if not isinstance(name, str) or not name:
            raise ValueError(f"spawn: name must be a non-empty string, got {name!r}")
        p = Process(self, name, cpu)
        self.processes.append(p)
        return p

    def vnode(self, data: bytes | bytearray | memoryview = b"", name: str = "") -> VnodeObject:
        """A file with the given contents and a vnode pager."""
        self._check_open("vnode")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"vnode: data must be bytes-like, not {type(data).__name__}")
        return VnodeObject(self.uvm, name=name, backing=bytearray(data))

    def aobj(self, name: str = "") -> AnonObject:
        """An anonymous UVM object (aobj), as shared anonymous memory uses."""
        self._check_open("aobj")
        return AnonObject(self.uvm, name=name)

    # ------------------------------------------------------- kernel borrowers

    def kernel_loan(
        self, proc: Process, va: int, length: int, cpu: int | None = None
    ) -> KernelLoan:
        """The kernel borrows ``length`` user bytes at ``va`` of ``proc`` (sosend_loan style)."""
        self._check_open("kernel_loan")
        if not isinstance(proc, Process) or proc.machine is not self:
            raise ValueError("kernel_loan: proc must be a process of this machine")
        if not proc.alive:
            raise ValueError(f"kernel_loan: process {proc.name} has exited")
        c = proc.cpu if cpu is None else self.platform.cpu(cpu).index
        self._switch_to(proc, c)
        with self.platform.on_cpu(c):
            return kernel_loan(self, proc.map, va, length)

    def kernel_loan_file(
        self, vn: VnodeObject, offset: int, length: int, cpu: int = 0
    ) -> KernelLoan:
        """The kernel borrows file bytes (nfsrv_read style, uvm_loanuobjpages)."""
        self._check_open("kernel_loan_file")
        with self.platform.on_cpu(cpu):
            return kernel_loan_uobj(self, vn, offset, length)

    def reclaim(self, pages: int | None = None, page: Page | None = None, cpu: int = 0) -> int:
        """Run the pagedaemon: take ``page``, or up to ``pages`` pages (default all it can)."""
        self._check_open("reclaim")
        with self.platform.on_cpu(cpu):
            if page is not None:
                r = uvmpd_reclaim_page(self.uvm, page)
                return 1 if r in ("freed", "orphaned", "paged out") else 0
            return uvmpd_scan(self.uvm, self.uvm.npages if pages is None else pages)

    def _check_open(self, what: str) -> None:
        """Refuse work on a closed machine, before anything changes."""
        if self._closed:
            raise MachineClosed(
                f"{what}: this machine is closed (close() unmapped its memory); build a new Machine"
            )

    def _switch_to(self, proc: Process, cpu: int) -> None:
        self._check_open("schedule a process")
        c = self.platform.cpu(cpu)
        # pmap_load (pmap.c 1.381) also runs for the pmap already loaded: a
        # LAZY CPU goes VALID, a STALE one rejoins pm_cpus and flushes its
        # dead user entries (pmap_reactivate) before user code runs.
        if c.curpmap is not proc.map.pmap or c.tlbstate is not TLBState.VALID:
            with self.platform.on_cpu(cpu):
                self.pmap.pmap_activate(proc.map.pmap, c)

    def _switch_fast(self, proc: Process, cpu: int) -> CPU:
        """``_switch_to`` for a caller that checked the machine is open and
        ``cpu`` is a valid index; returns the CPU.  The common case, the
        process already loaded and VALID there, costs two tests."""
        c = self.platform.cpus[cpu]
        if c.curpmap is not proc.map.pmap or c.tlbstate is not TLBState.VALID:
            with self.platform.on_cpu(cpu):
                self.pmap.pmap_activate(proc.map.pmap, c)
        return c

    def map_of(self, pmap: Pmap) -> VMMap:
        return self._maps[pmap]

    def _fault_handler(self, cpu: CPU, pmap: Pmap, va: int, access_type: int, user: bool) -> None:
        vmmap = self._maps.get(pmap)
        if vmmap is None:
            raise SegmentationFault(va, "access", "no address space for this pmap")
        if user and pmap.is_kernel:
            # trap.c: a user-mode fault is resolved in the process's own map,
            # which has nothing at a kernel address: SIGSEGV, never kernel_map.
            acc = "write" if access_type & VMProt.WRITE else "read"
            raise SegmentationFault(va, acc, "user access to a kernel address")
        try:
            for _attempt in range(8):
                try:
                    uvm_fault(vmmap, va, access_type)
                    return
                except UVMError as e:
                    if e.errno != ENOMEM or self.on_shortage != "reclaim":
                        raise
                    # uvm_wait(): wake the pagedaemon, then restart the fault.
                    if uvmpd_scan(self.uvm, 16) == 0:
                        raise
            uvm_fault(vmmap, va, access_type)
        except UVMError as e:
            if e.errno in (EFAULT, EACCES):
                acc = "write" if access_type & VMProt.WRITE else "read"
                if pmap.is_kernel and not user:
                    from .errors import KernelAssertion

                    raise KernelAssertion(f"kernel {acc} fault at {va:#x}: {e.message}") from e
                raise SegmentationFault(va, acc, e.message) from e
            raise

    def _mlock(self, proc: Process, start: int, end: int) -> None:
        """``uvm_map_pageable`` (wire): validate, pass 1 (clip, private
        amaps), reserve the pages the wiring faults will take, pass 2.

        NetBSD's wiring faults wait for memory (``uvm_wait``) and restart, so
        mlock never fails half done for want of pages; the model reserves
        them first (``pdaemon.uvm_wait``: the pagedaemon runs with
        ``on_shortage="reclaim"``) and, failing that, undoes pass 1 and
        raises ENOMEM with the map as it was.
        """
        from .pdaemon import uvm_wait

        m = proc.map
        ents = m.entries_in(start, end)
        m._check_covered(start, end, ents, "mlock")
        for ent in ents:
            if ent.protection == VMProt.NONE:
                # uvm_map_pageable: an entry without access cannot be wired.
                raise UVMError(EINVAL, f"mlock: {ent!r} has protection VM_PROT_NONE")
        # A page past the end of a file is not refused here: as in NetBSD,
        # pass 2's wiring fault fails on it (EFAULT), the pages wired so far
        # are unwired, and what the faults before it did stays (a private
        # page's promoted copy, pass 1's amaps).
        # uvm_map_pageable pass 1: entries that may become writable, or have
        # no object, get their private amap now; the wiring faults below
        # never see needs-copy (uvm_fault_check KASSERTs !maxprot there).
        ents, undo = m.wire_prepare(start, end)
        try:
            uvm_wait(self.uvm, lambda: m.wire_need(ents), "mlock")
        except UVMError:
            undo()
            raise
        done: list[int] = []
        try:
            # uvm_map_pageable pass 2: only entries wired for the first time
            # are faulted in; a second mlock only counts (wired_count).
            for ent in ents:
                if ent.wired_count:
                    continue
                for va in range(ent.start, ent.end, self.page_size):
                    uvm_fault(m, va, VMProt.READ, wire=True, maxprot=True)
                    done.append(va)
        except BaseException:
            for va in done:
                e = m.uvm_map_lookup_entry(va)
                if e is not None:
                    m._unwire_pages(e, va, va + self.page_size)
                    self._pmap_unwire(m, va)
            raise
        for e in ents:
            e.wired_count += 1

    def _munlock(self, proc: Process, start: int, end: int) -> None:
        m = proc.map
        ents = m.entries_in(start, end)
        m._check_covered(start, end, ents, "munlock")
        ents = m.clip_range(start, end)
        for e in ents:
            if e.wired_count:
                m._unwire_pages(e, e.start, e.end)
                for va in range(e.start, e.end, self.page_size):
                    self._pmap_unwire(m, va)
                e.wired_count = 0

    def _pmap_unwire(self, m: VMMap, va: int) -> None:
        self.pmap.pmap_unwire(m.pmap, va)

    # -------------------------------------------------------------- accessors

    @property
    def ncpus(self) -> int:
        return self.platform.ncpus

    @property
    def cpus(self) -> list[CPU]:
        return self.platform.cpus

    @property
    def page_size(self) -> int:
        return self.profile.page_size

    @property
    def counters(self) -> Counter[str]:
        return self.tracer.counters

    @property
    def trace(self) -> list[Event]:
        """The recorded events; only a machine that records has them."""
        if self.tracer.events is None:
            how = "counts only" if self.tracer.on else "has tracing off"
            raise RuntimeError(
                f"this machine does not record events (it {how}): build it with "
                "Machine(..., trace='record') or call m.tracer.record() first; "
                "m.counters has the counts"
            )
        return self.tracer.events

    def pmap_kernel(self) -> Pmap:
        return self.pmap.kernel

    def cpu(self, index: int) -> CPU:
        return self.platform.cpu(index)

    @contextmanager
    def on_cpu(self, index: int) -> Iterator[CPU]:
        """Run the enclosed kernel work on CPU ``index``."""
        self._check_open("on_cpu")
        with self.platform.on_cpu(index) as cpu:
            yield cpu

    @property
    def curcpu(self) -> CPU:
        return self.platform.curcpu()

    @property
    def now(self) -> int:
        """The latest clock of any CPU (simulated ns)."""
        return max(c.clock for c in self.platform.cpus)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Flush the trace file and unmap the memory; idempotent."""
        self._closed = True
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        self.physmem.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<Machine {self.ncpus} CPUs, {self.uvm.npages} pages of {self.page_size} B, "
            f"profile {self.profile.name}, {self.uvm.allocated} allocated>"
        )
