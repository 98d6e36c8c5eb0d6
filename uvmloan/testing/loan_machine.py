"""A hypothesis state machine for page loaning: observational equivalence.

``LoanStateMachine`` drives one :class:`~uvmloan.Machine` (3 CPUs by
default) with random interleavings of

* kernel loans in ``sosend_loan``'s manner (``Machine.kernel_loan``) of any
  byte range of a process's address space: private anonymous buffers
  (written or never touched, i.e. holes lent as the zero page), shared
  anonymous memory (aobj), shared and private file mappings, ranges running
  into unmapped space; and of files in ``nfsrv_read``'s manner
  (``Machine.kernel_loan_file``);
* user stores and loads on any CPU, ``write(2)`` and ``ftruncate(2)`` of
  the files, ``mmap``/``munmap``, ``mprotect`` (a store into a read-only
  region, a load from a PROT_NONE one, must fault), ``mlock``/``munlock``,
  ``fork``, ``exit``, and short-lived processes (spawn, write, exit in one
  step: they cycle through the MI policy's ASIDs);
* releases of the loans (``sodoloanfree``'s order), borrower reads through
  the read-only kernel mapping on any CPU, and the pagedaemon reclaiming
  single pages or scanning.

Beside the machine it keeps a *copy-semantics reference*: the bytes every
region of every process and every file would hold if nothing were ever
lent (private memory is copied at fork, shared memory and files are shared,
a private file page follows the file until the process first writes it),
and for every loan the bytes the lender held when the loan was made.  It
checks, after every step:

* ``check_invariants(m)`` (the model's DIAGNOSTIC, loan invariants I1-I13);
* the borrower's bytes (gathered from the loan's frames, as a NIC would) are
  the bytes lent; a rule also reads them through the kernel mapping;
* every lender's view, read from the VM structures without faulting, equals
  the reference; rules also read and write through the MMU on any CPU;
* every release ran in ``sodoloanfree``'s order (kernel mappings removed and
  ``pmap_update`` completed before ``uvm_unloan``; invariant I4);

and when an example ends (``teardown``): every process exits, every loan is
released, and no page is left but vnode cache pages and the zero page.

Not driven here: ``UVM_LOAN_TOANON`` loans (their undo and unloan are empty
in 1.104, so their ``an_ref`` increments leak by design and would defeat the
leak check; ``tests/test_loan_basic.py`` and the TOANON scenarios cover
them) and memory shortage (scenario ``enomem-during-break``).

Run it from pytest::

    from uvmloan.testing.loan_machine import LoanStateMachine, loan_settings
    TestLoans = LoanStateMachine.TestCase
    TestLoans.settings = loan_settings()

``loan_settings()`` returns the "loan-ci" profile (a default run well under
a minute) or, with ``UVMLOAN_HYPOTHESIS_PROFILE=deep``, "loan-deep".
Extend it by subclassing.  The machine itself is configured through the
hooks every shipped machine shares (:mod:`uvmloan.testing.hooks`):
``NCPUS``, ``MEMORY``, ``PROFILE``, ``PROFILE_OVERRIDES``
(``{"tlb_policy": "mi-asid"}``, ``{"tlb_entries": 4}``), ``INJECT`` (bugs of
:mod:`uvmloan.inject`; the suite proves each one is caught) and the factory
:meth:`make_machine`.  ``MAX_PROCS``, ``MAX_REGIONS``, ``MAX_REGION_PAGES``,
``MAX_FILES``, ``MAX_LOANS`` size the world; add ``@rule`` methods that keep
the reference up to date through :meth:`apply_write` and friends, and
``@invariant`` methods for your own properties.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ..borrow import KernelLoan
from ..errors import SegmentationFault, UVMError
from ..invariants import check_invariants
from ..machine import Machine
from ..object import AnonObject, VnodeObject
from ..param import (
    EINVAL,
    ENOENT,
    MAP_PRIVATE,
    MAP_SHARED,
    VM_PROT_NONE,
    VM_PROT_READ,
    VM_PROT_WRITE,
)
from ..process import Process
from ..trace import Event, PageFree
from .failures import CheckFailure, hunt_settings
from .hooks import MachineHooks
from .loan_ops import leaked_pages, mappings_of, release_order_problems
from .profiles import PROFILE_ENV, machine_settings

__all__ = [
    "PROFILE_ENV",
    "FileRef",
    "LoanRef",
    "LoanStateMachine",
    "ProcRef",
    "Region",
    "loan_settings",
]

# Short profile name -> (max_examples, stateful_step_count).
LOAN_SIZES = {"ci": (150, 50), "deep": (2000, 100)}

IDX = st.integers(min_value=0, max_value=1 << 16)


def loan_settings(name: str | None = None) -> settings:
    """ "loan-ci" (default) or "loan-deep" (``UVMLOAN_HYPOTHESIS_PROFILE=deep``)."""
    return machine_settings("loan", LOAN_SIZES, name)


# (7 * i) % 251 + 1 for one period: byte i of _pattern(seed, n) is byte
# i + seed * 7**-1 (mod 251) of the periodic sequence, so a pattern is one
# slice of a repetition (C speed) instead of a generator over n bytes.
_PERIOD = bytes((7 * i) % 251 + 1 for i in range(251))
_INV7 = pow(7, -1, 251)


def _pattern(seed: int, n: int) -> bytes:
    """n bytes that differ from their neighbours (misplaced bytes show):
    byte i is ``(seed + 7 * i) % 251 + 1``."""
    start = (seed % 251) * _INV7 % 251
    reps = (start + n) // 251 + 1
    return (_PERIOD * reps)[start : start + n]


# ------------------------------------------------------------- reference


@attrs.define(eq=False)
class FileRef:
    """A file and the bytes it holds under copy semantics."""

    vn: VnodeObject
    data: bytearray


@attrs.define(eq=False)
class Region:
    """One mapping of one process and what its bytes are.

    kind: "anon" (private anonymous; ``data`` is its own), "shm" (shared
    anonymous; ``data`` is shared with the processes it was inherited by),
    "sfile" (MAP_SHARED file: the file's bytes), "pfile" (MAP_PRIVATE
    file: ``priv`` holds the pages the process wrote, others follow the
    file).
    """

    va: int
    npages: int
    kind: str
    data: bytearray | None = None
    file: FileRef | None = None
    priv: dict[int, bytearray] = attrs.field(factory=dict)
    wired: bool = False
    prot: str = "rw"  # "rw", "r" or "none" (mprotect)


@attrs.define(eq=False)
class ProcRef:
    proc: Process
    regions: list[Region] = attrs.field(factory=list)


@attrs.define(eq=False)
class LoanRef:
    kl: KernelLoan
    expect: bytes
    what: str


class LoanStateMachine(MachineHooks, RuleBasedStateMachine):
    """Kernel loans vs. a plain-copy reference; see the module docstring."""

    NCPUS: ClassVar[int | None] = 3
    MEMORY: ClassVar[int | str] = "1M"
    MAX_PROCS: ClassVar[int] = 4
    MAX_REGIONS: ClassVar[int] = 4
    MAX_REGION_PAGES: ClassVar[int] = 4
    MAX_FILES: ClassVar[int] = 2
    MAX_FILE_PAGES: ClassVar[int] = 3
    MAX_LOANS: ClassVar[int] = 6

    def __init__(self) -> None:
        super().__init__()
        self.m: Machine = self.make_machine()
        self.ps = self.m.page_size
        self.events: list[Event] = []
        self.m.tracer.add_sink(self.events.append)
        self.freed_while_mapped: list[str] = []
        self.m.tracer.add_sink(self._on_event)
        self.procs: list[ProcRef] = []
        self.files: list[FileRef] = []
        self.loans: list[LoanRef] = []
        self.nspawned = 0

    def _on_event(self, ev: Event) -> None:
        """At the moment a frame is freed nothing may map or cache it (I4:
        kernel loan mappings go, and pmap_update completes, before
        uvm_unloan; the same holds for user mappings and uvm_pagefree)."""
        if isinstance(ev, PageFree):
            where = mappings_of(self.m, ev.frame)
            if where:
                self.freed_while_mapped.append(f"frame {ev.frame} freed while {where[0]}")

    # ------------------------------------------------------------ helpers

    def _round(self, n: int) -> int:
        return n + (-n) % self.ps

    def file_page(self, f: FileRef, p: int) -> bytes | None:
        """Page p of the file as a mapping sees it; None past EOF (SIGBUS)."""
        ps = self.ps
        if p * ps >= self._round(len(f.data)):
            return None
        chunk = bytes(f.data[p * ps : (p + 1) * ps])
        return chunk + bytes(ps - len(chunk))

    def page_view(self, r: Region, p: int) -> bytes | None:
        """Page p of a region under copy semantics (None: access faults)."""
        ps = self.ps
        if r.kind in ("anon", "shm"):
            assert r.data is not None
            return bytes(r.data[p * ps : (p + 1) * ps])
        if r.kind == "pfile" and p in r.priv:
            return bytes(r.priv[p])
        assert r.file is not None
        return self.file_page(r.file, p)

    def find(self, pr: ProcRef, va: int) -> tuple[Region, int] | None:
        for r in pr.regions:
            if r.va <= va < r.va + r.npages * self.ps:
                return r, (va - r.va) // self.ps
        return None

    def apply_write(self, r: Region, off: int, data: bytes) -> None:
        """Record a user store of ``data`` at byte ``off`` of region ``r``."""
        ps = self.ps
        if r.kind in ("anon", "shm"):
            assert r.data is not None
            r.data[off : off + len(data)] = data
            return
        assert r.file is not None
        if r.kind == "sfile":
            r.file.data[off : off + len(data)] = data
            return
        for p in range(off // ps, (off + len(data) - 1) // ps + 1):
            if p not in r.priv:
                view = self.file_page(r.file, p)
                assert view is not None
                r.priv[p] = bytearray(view)
        for i, b in enumerate(data):
            pos = off + i
            r.priv[pos // ps][pos % ps] = b

    def writable(self, r: Region, off: int, n: int) -> bool:
        """Would a user store of n bytes at off complete (no SIGBUS)?"""
        ps = self.ps
        if r.kind == "sfile":
            assert r.file is not None
            return off + n <= len(r.file.data)
        return all(
            self.page_view(r, p) is not None for p in range(off // ps, (off + n - 1) // ps + 1)
        )

    def structural_view(self, pr: ProcRef, r: Region, p: int) -> bytes | None:
        """Page p of a region read from the VM structures, without a fault."""
        m = self.m
        ps = self.ps
        va = r.va + p * ps
        e = pr.proc.map.uvm_map_lookup_entry(va)
        assert e is not None, f"{pr.proc.name}: {va:#x} lost its entry"
        if e.amap is not None:
            anon = e.amap.lookup(e.slot(va))
            if anon is not None:
                if anon.an_page is not None:
                    return m.physmem.read_frame(anon.an_page.frame)
                return bytes(m.uvm.swap[anon.an_swslot])
        obj = e.object
        if obj is None:
            return bytes(ps)
        off = e.objoff(va)
        pg = obj.uvm_pagelookup(off)
        if pg is not None:
            return m.physmem.read_frame(pg.frame)
        if isinstance(obj, VnodeObject):
            if off >= self._round(obj.size):
                return None
            chunk = bytes(obj.backing[off : off + ps])
            return chunk + bytes(ps - len(chunk))
        return bytes(ps)

    def loan_expectation(self, pr: ProcRef, va: int, length: int) -> tuple[int, bytes]:
        """What uvm_loan of the page range must do: (0, bytes) or (errno, b"").

        Pages in order, as uvm_loan walks them: an unmapped page is ENOENT, a
        wired page or a file page past EOF (genfs_getpages) is EINVAL; the
        first failure decides.
        """
        ps = self.ps
        sva = va - va % ps
        eva = self._round(va + length)
        out = bytearray()
        for pva in range(sva, eva, ps):
            hit = self.find(pr, pva)
            if hit is None:
                return ENOENT, b""
            r, p = hit
            if r.wired:
                return EINVAL, b""
            view = self.page_view(r, p)
            if view is None:
                return EINVAL, b""
            out += view
        return 0, bytes(out[va - sva : va - sva + length])

    def pick(self, seq: Sequence[Any], i: int) -> Any:
        return seq[i % len(seq)]

    # ------------------------------------------------------------- setup

    @initialize(ncpu=st.integers(0, 2))
    def first_process(self, ncpu: int) -> None:
        self.spawn_proc(ncpu % self.m.ncpus)

    def spawn_proc(self, cpu: int) -> ProcRef:
        self.nspawned += 1
        pr = ProcRef(self.m.spawn(f"p{self.nspawned}", cpu=cpu))
        self.procs.append(pr)
        return pr

    # ------------------------------------------------------------- rules

    @precondition(lambda self: len(self.procs) < 2)
    @rule(cpu=IDX)
    def spawn(self, cpu: int) -> None:
        self.spawn_proc(cpu % self.m.ncpus)

    @rule(cpu=IDX, seed=IDX)
    def short_lived(self, cpu: int, seed: int) -> None:
        """A process that lives for one step: spawn, write a page on ``cpu``,
        exit.  Each one takes an ASID on that CPU under the MI policy, so
        runs cycle through (and wrap) the ASID pool (specs/pmap.md M-A6)."""
        pr = self.spawn_proc(cpu % self.m.ncpus)
        va = pr.proc.mmap(self.ps)
        data = _pattern(seed, 16)
        pr.proc.write(va + seed % (self.ps - 16), data)
        if pr.proc.read(va + seed % (self.ps - 16), 16) != data:
            raise CheckFailure(
                "bytes", "pr.proc.read(va + seed % (self.ps - 16), 16) == data failed"
            )
        pr.proc.exit()
        self.procs.remove(pr)

    @precondition(lambda self: len(self.files) < self.MAX_FILES)
    @rule(size=st.integers(1, 3 * 4096), seed=st.integers(0, 250))
    def new_file(self, size: int, seed: int) -> None:
        size = min(size, self.MAX_FILE_PAGES * self.ps)
        data = _pattern(seed, size)
        self.files.append(FileRef(self.m.vnode(data), bytearray(data)))

    @precondition(lambda self: self.procs)
    @rule(i=IDX, npages=st.integers(1, 4), shared=st.booleans(), fill=st.integers(0, 2), seed=IDX)
    def mmap_anon(self, i: int, npages: int, shared: bool, fill: int, seed: int) -> None:
        pr: ProcRef = self.pick(self.procs, i)
        if len(pr.regions) >= self.MAX_REGIONS:
            return
        npages = min(npages, self.MAX_REGION_PAGES)
        flags = MAP_SHARED if shared else MAP_PRIVATE
        va = pr.proc.mmap(npages * self.ps, flags=flags)
        r = Region(va, npages, "shm" if shared else "anon", data=bytearray(npages * self.ps))
        pr.regions.append(r)
        if fill:  # a written buffer; otherwise the region stays a hole
            data = _pattern(seed, npages * self.ps)
            pr.proc.write(va, data)
            self.apply_write(r, 0, data)

    @precondition(lambda self: self.procs and self.files)
    @rule(i=IDX, j=IDX, shared=st.booleans())
    def mmap_file(self, i: int, j: int, shared: bool) -> None:
        pr: ProcRef = self.pick(self.procs, i)
        f: FileRef = self.pick(self.files, j)
        if len(pr.regions) >= self.MAX_REGIONS or not f.data:
            return
        npages = self._round(len(f.data)) // self.ps
        flags = MAP_SHARED if shared else MAP_PRIVATE
        va = pr.proc.mmap(npages * self.ps, flags=flags, obj=f.vn)
        pr.regions.append(Region(va, npages, "sfile" if shared else "pfile", file=f))

    @precondition(lambda self: any(pr.regions for pr in self.procs))
    @rule(i=IDX, j=IDX)
    def munmap(self, i: int, j: int) -> None:
        pr: ProcRef = self.pick([pr for pr in self.procs if pr.regions], i)
        r: Region = self.pick(pr.regions, j)
        pr.proc.munmap(r.va, r.npages * self.ps)
        pr.regions.remove(r)

    @precondition(lambda self: any(pr.regions for pr in self.procs))
    @rule(i=IDX, j=IDX, off=IDX, n=st.integers(1, 2 * 4096 + 10), seed=IDX, cpu=IDX)
    def user_write(self, i: int, j: int, off: int, n: int, seed: int, cpu: int) -> None:
        pr: ProcRef = self.pick([pr for pr in self.procs if pr.regions], i)
        r: Region = self.pick(pr.regions, j)
        size = r.npages * self.ps
        off %= size
        n = min(n, size - off)
        data = _pattern(seed, n)
        if r.prot != "rw":
            # uvm_fault_check: EFAULT before anything changes -> SIGSEGV.
            try:
                pr.proc.write(r.va + off, data, cpu=cpu % self.m.ncpus)
            except SegmentationFault:
                return
            raise CheckFailure("fault", f"{pr.proc.name}: a store into a {r.prot} region succeeded")
        if not self.writable(r, off, n):
            return
        pr.proc.write(r.va + off, data, cpu=cpu % self.m.ncpus)
        self.apply_write(r, off, data)

    @precondition(lambda self: any(pr.regions for pr in self.procs))
    @rule(i=IDX, j=IDX, off=IDX, n=st.integers(1, 2 * 4096 + 10), cpu=IDX)
    def user_read(self, i: int, j: int, off: int, n: int, cpu: int) -> None:
        pr: ProcRef = self.pick([pr for pr in self.procs if pr.regions], i)
        r: Region = self.pick(pr.regions, j)
        ps = self.ps
        off %= r.npages * ps
        n = min(n, r.npages * ps - off)
        first = off // ps
        if r.prot == "none":
            try:
                pr.proc.read(r.va + off, n, cpu=cpu % self.m.ncpus)
            except SegmentationFault:
                return
            raise CheckFailure("fault", f"{pr.proc.name}: a load from a PROT_NONE region succeeded")
        views = [self.page_view(r, p) for p in range(first, (off + n - 1) // ps + 1)]
        if any(v is None for v in views):
            # The first page past EOF faults (a private file page not yet
            # written follows the file): SIGBUS.
            bad = r.va + (first + views.index(None)) * ps
            try:
                pr.proc.read(bad, 1, cpu=cpu % self.m.ncpus)
            except SegmentationFault:
                return
            raise CheckFailure("fault", f"{pr.proc.name}: read past EOF at {bad:#x} did not fault")
        want = b"".join(v for v in views if v is not None)[off % ps : off % ps + n]
        got = pr.proc.read(r.va + off, n, cpu=cpu % self.m.ncpus)
        if got != want:
            raise CheckFailure(
                "bytes", f"{pr.proc.name} reads {r.kind} at +{off:#x}: not the reference bytes"
            )

    @precondition(lambda self: self.files)
    @rule(j=IDX, off=IDX, n=st.integers(1, 4096 + 10), seed=IDX)
    def write2(self, j: int, off: int, n: int, seed: int) -> None:
        f: FileRef = self.pick(self.files, j)
        off %= len(f.data) + 1
        n = min(n, self.MAX_FILE_PAGES * self.ps - off)
        if n <= 0:
            return
        data = _pattern(seed, n)
        assert f.vn.write(off, data) == n
        if off + n > len(f.data):
            f.data.extend(bytes(off + n - len(f.data)))
        f.data[off : off + n] = data

    @precondition(lambda self: self.files)
    @rule(j=IDX, size=st.integers(0, 3 * 4096))
    def truncate(self, j: int, size: int) -> None:
        f: FileRef = self.pick(self.files, j)
        size = min(size, self.MAX_FILE_PAGES * self.ps)
        f.vn.truncate(size)
        if size < len(f.data):
            del f.data[size:]
        else:
            f.data.extend(bytes(size - len(f.data)))

    @precondition(
        lambda self: any(
            r.kind == "anon" and r.prot == "rw" for pr in self.procs for r in pr.regions
        )
    )
    @rule(i=IDX, j=IDX, lock=st.booleans())
    def mlock(self, i: int, j: int, lock: bool) -> None:
        cands = [
            (pr, r) for pr in self.procs for r in pr.regions if r.kind == "anon" and r.prot == "rw"
        ]
        pr, r = self.pick(cands, i + j)
        if lock:
            pr.proc.mlock(r.va, r.npages * self.ps)
        else:
            pr.proc.munlock(r.va, r.npages * self.ps)
        r.wired = lock

    @precondition(lambda self: any(not r.wired for pr in self.procs for r in pr.regions))
    @rule(i=IDX, prot=st.sampled_from(["rw", "r", "none"]))
    def mprotect(self, i: int, prot: str) -> None:
        """mprotect(2) of a whole region (never a wired one: mlock's
        interplay with protection is the VM layer's business)."""
        cands = [(pr, r) for pr in self.procs for r in pr.regions if not r.wired]
        pr, r = self.pick(cands, i)
        bits = {"rw": VM_PROT_READ | VM_PROT_WRITE, "r": VM_PROT_READ, "none": VM_PROT_NONE}
        pr.proc.mprotect(r.va, r.npages * self.ps, bits[prot])
        r.prot = prot

    @precondition(lambda self: self.procs and len(self.procs) < self.MAX_PROCS)
    @rule(i=IDX, cpu=IDX)
    def fork(self, i: int, cpu: int) -> None:
        pr: ProcRef = self.pick(self.procs, i)
        self.nspawned += 1
        child = pr.proc.fork(f"p{self.nspawned}", cpu=cpu % self.m.ncpus)
        cr = ProcRef(child)
        for r in pr.regions:
            if r.kind == "anon":
                assert r.data is not None
                c = Region(r.va, r.npages, "anon", data=bytearray(r.data), prot=r.prot)
            elif r.kind == "pfile":
                c = Region(
                    r.va,
                    r.npages,
                    "pfile",
                    file=r.file,
                    priv={p: bytearray(b) for p, b in r.priv.items()},
                    prot=r.prot,
                )
            else:
                c = Region(r.va, r.npages, r.kind, data=r.data, file=r.file, prot=r.prot)
            cr.regions.append(c)
        self.procs.append(cr)

    @precondition(lambda self: len(self.procs) > 1)
    @rule(i=IDX, now=st.integers(0, 2))
    def exit(self, i: int, now: int) -> None:
        if now:  # exits are rare: a process that goes takes its state along
            return
        pr: ProcRef = self.pick(self.procs, i)
        pr.proc.exit()
        self.procs.remove(pr)

    @precondition(lambda self: self.procs and len(self.loans) < self.MAX_LOANS)
    @rule(i=IDX, va=IDX, n=st.integers(1, 3 * 4096), cpu=IDX, spill=st.integers(0, 4))
    def kernel_loan(self, i: int, va: int, n: int, cpu: int, spill: int) -> None:
        """sosend_loan: uvm_loan TOPAGE, kenter read-only, pmap_update."""
        pr: ProcRef = self.pick([pr for pr in self.procs if pr.regions] or self.procs, i)
        if pr.regions:
            r = self.pick(pr.regions, va)
            size = r.npages * self.ps
            start = r.va + (va >> 4) % size
            if spill:  # mostly inside the region; sometimes past its end
                n = min(n, r.va + size - start)
        else:
            start = 0x20000000 + (va % 7) * self.ps + va % self.ps
        self.lend(pr, start, n, cpu % self.m.ncpus)

    @precondition(
        lambda self: (
            len(self.loans) < self.MAX_LOANS
            and any(r.kind == "anon" for pr in self.procs for r in pr.regions)
        )
    )
    @rule(i=IDX, va=IDX, n=st.integers(1, 3 * 4096), cpu=IDX)
    def kernel_loan_buffer(self, i: int, va: int, n: int, cpu: int) -> None:
        """sosend_loan of (part of) a private anonymous buffer: A->K loans."""
        cands = [(pr, r) for pr in self.procs for r in pr.regions if r.kind == "anon"]
        pr, r = self.pick(cands, i)
        size = r.npages * self.ps
        start = r.va + va % size
        self.lend(pr, start, min(n, r.va + size - start), cpu % self.m.ncpus)

    def lend(self, pr: ProcRef, start: int, n: int, cpu: int) -> None:
        """Machine.kernel_loan, checked against :meth:`loan_expectation`."""
        errno, want = self.loan_expectation(pr, start, n)
        before = self.m.uvm.loan_ledger.copy()
        try:
            kl = self.m.kernel_loan(pr.proc, start, n, cpu=cpu)
        except UVMError as e:
            if not errno:
                raise CheckFailure(
                    "errno", f"kernel_loan of {n} bytes at {start:#x} failed: {e}"
                ) from e
            if e.errno != errno:
                raise CheckFailure("errno", f"expected errno {errno}, got {e}") from e
            if self.m.uvm.loan_ledger != before:
                raise CheckFailure("undo", "a failed uvm_loan left loans behind") from e
            return
        if errno != 0:
            raise CheckFailure(
                "errno", f"kernel_loan at {start:#x} should have failed with {errno}"
            )
        if kl.read() != want:
            raise CheckFailure("bytes", "the borrower does not see the lender's bytes")
        self.loans.append(LoanRef(kl, want, f"{pr.proc.name} {start:#x}+{n}"))

    @precondition(lambda self: self.files and len(self.loans) < self.MAX_LOANS)
    @rule(j=IDX, off=IDX, n=st.integers(1, 3 * 4096), cpu=IDX)
    def kernel_loan_file(self, j: int, off: int, n: int, cpu: int) -> None:
        """nfsrv_read: uvm_loanuobjpages of the file's pages."""
        f: FileRef = self.pick(self.files, j)
        off %= self.MAX_FILE_PAGES * self.ps
        end = off + n
        pages = range(off // self.ps, (end - 1) // self.ps + 1)
        views = [self.file_page(f, p) for p in pages]
        try:
            kl = self.m.kernel_loan_file(f.vn, off, n, cpu=cpu % self.m.ncpus)
        except UVMError as e:
            if not any(v is None for v in views):
                raise CheckFailure("errno", f"kernel_loan_file failed: {e}") from e
            if e.errno != EINVAL:
                raise CheckFailure("errno", f"kernel_loan_file past EOF: {e}, want EINVAL") from e
            return
        if not all(v is not None for v in views):
            raise CheckFailure("errno", "a loan past EOF succeeded")
        want = b"".join(v for v in views if v is not None)[off % self.ps : off % self.ps + n]
        if kl.read() != want:
            raise CheckFailure("bytes", "kl.read() == want failed")
        self.loans.append(LoanRef(kl, want, f"file {off:#x}+{n}"))

    @precondition(lambda self: self.loans)
    @rule(k=IDX, off=IDX, n=IDX, cpu=IDX)
    def borrower_read(self, k: int, off: int, n: int, cpu: int) -> None:
        lr: LoanRef = self.pick(self.loans, k)
        off %= len(lr.expect)
        n = n % (len(lr.expect) - off) + 1
        got = lr.kl.read(off, n, cpu=cpu % self.m.ncpus)
        if got != lr.expect[off : off + n]:
            raise CheckFailure("bytes", f"borrower of {lr.what} reads changed bytes")

    @precondition(lambda self: self.loans)
    @rule(k=IDX, cpu=IDX)
    def release(self, k: int, cpu: int) -> None:
        lr: LoanRef = self.pick(self.loans, k)
        self.release_loan(lr, cpu % self.m.ncpus)

    def release_loan(self, lr: LoanRef, cpu: int = 0) -> None:
        kl = lr.kl
        frames = [pg.frame for pg in kl.pages]
        start = len(self.events)
        self.loans.remove(lr)
        with self.m.on_cpu(cpu):
            kl.release()
        problems = release_order_problems(self.events[start:], kl.kva, kl.npages * self.ps, frames)
        if problems:
            raise CheckFailure("release-order", f"release of {lr.what}: {problems[0]}")

    @rule(frame=IDX, scan=st.booleans(), n=st.integers(1, 8), cpu=IDX)
    def reclaim(self, frame: int, scan: bool, n: int, cpu: int) -> None:
        m = self.m
        if scan:
            m.reclaim(pages=n, cpu=cpu % self.m.ncpus)
            return
        pages = sorted(m.uvm.pages)
        if pages:
            m.reclaim(page=m.uvm.pages[self.pick(pages, frame)], cpu=cpu % self.m.ncpus)

    # -------------------------------------------------------- invariants

    @invariant()
    def check_all(self) -> None:
        """The three checks below, as one invariant (hypothesis pays a fixed
        cost per invariant and step); override any of them to change it.
        In the order hypothesis ran them as separate invariants (by name)."""
        self.borrowers_hold_lent_bytes()
        self.diagnostic()
        self.lenders_hold_reference_bytes()

    def diagnostic(self) -> None:
        if self.freed_while_mapped:
            raise CheckFailure("freed-while-mapped", self.freed_while_mapped[0])
        check_invariants(self.m)
        del self.events[:-2000]

    def borrowers_hold_lent_bytes(self) -> None:
        physmem = self.m.physmem
        for lr in self.loans:
            got = physmem.gather(lr.kl.pieces())
            if got != lr.expect:
                raise CheckFailure(
                    "bytes", f"the bytes lent by {lr.what} changed under the borrower"
                )

    def lenders_hold_reference_bytes(self) -> None:
        for pr in self.procs:
            for r in pr.regions:
                for p in range(r.npages):
                    want = self.page_view(r, p)
                    got = self.structural_view(pr, r, p)
                    if got != want:
                        raise CheckFailure(
                            "bytes",
                            f"{pr.proc.name} {r.kind} region at {r.va:#x} page {p}: "
                            "not the copy-semantics reference",
                        )
        for f in self.files:
            if f.vn.contents() != bytes(f.data):
                raise CheckFailure("bytes", f"{f.vn.name}: file bytes differ")

    # -------------------------------------------------------- the end

    def teardown(self) -> None:
        m = self.m
        try:
            for pr in list(self.procs):
                pr.proc.exit()
                self.procs.remove(pr)
            check_invariants(m)
            for lr in list(self.loans):
                got = m.physmem.gather(lr.kl.pieces())
                if got != lr.expect:
                    raise CheckFailure("bytes", f"{lr.what}: borrowed bytes changed after exit")
                self.release_loan(lr)
            check_invariants(m)
            leaks = leaked_pages(m)
            if leaks:
                raise CheckFailure(
                    "leak", f"pages leaked after everything was released: {leaks[:4]}"
                )
            if m.uvm.loan_ledger:
                raise CheckFailure("leak", "loans outstanding after every release")
            if any(e.vaonly for e in m.kernel_map):
                raise CheckFailure("leak", "loan KVA never freed")
            for f in self.files:
                if f.vn.contents() != bytes(f.data):
                    raise CheckFailure("bytes", "f.vn.contents() == bytes(f.data) failed")
        finally:
            m.close()


def no_shrink_settings(max_examples: int, steps: int = 40) -> settings:
    """Settings for proving an injected bug is found: deterministic, no shrink."""
    return hunt_settings(loan_settings(), max_examples, steps)


_ = AnonObject  # re-exported for subclasses that add aobj rules
