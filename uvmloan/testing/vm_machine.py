"""A hypothesis state machine for the machine-independent VM: ``VMStateMachine``.

Processes map private and shared anonymous memory and private and shared
file mappings, fork, read and write (on any CPU), unmap, change
protections, switch CPUs and exit; files are written and read with
write(2)/read(2) and synced.  Beside the model runs a *reference*: plain
bytearrays per page, with the semantics a POSIX programmer expects of
NetBSD:

* private anonymous pages are zero at first and copied at fork;
* shared anonymous pages are one bytearray shared by reference;
* a shared file page *is* the file's bytes;
* a private file page shows the file until the process first writes it,
  then holds its own copy (taken, page by page, when the store faults);
  fork copies that state.

Every read must return what the reference says, every access that the
reference says is illegal must raise ``SegmentationFault``, and
``check_invariants`` must hold after every step.  At the end every process
exits and every frame must be free again except the vnodes' cached pages.

Use it from pytest::

    from uvmloan.testing.vm_machine import VMStateMachine, vm_settings
    TestVM = VMStateMachine.TestCase
    TestVM.settings = vm_settings()

``vm_settings()`` reads ``UVMLOAN_HYPOTHESIS_PROFILE`` (``default`` or
``deep``).  Subclass and change the class attributes (``NCPUS``,
``MAX_PROCS``, ``MAX_PAGES`` ...) to explore other shapes; set
``INJECT`` to a name from ``uvmloan.inject.BUGS`` to run against a broken
model.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ..errors import SegmentationFault, UVMError
from ..invariants import check_invariants
from ..machine import Machine
from ..object import VnodeObject
from ..param import ENOMEM, MAP_PRIVATE, MAP_SHARED, VM_PROT_READ, VM_PROT_WRITE
from ..process import Process

ANON_PRIVATE = "anon-private"
ANON_SHARED = "anon-shared"
FILE_PRIVATE = "file-private"
FILE_SHARED = "file-shared"
KINDS = (ANON_PRIVATE, ANON_SHARED, FILE_PRIVATE, FILE_SHARED)
# Read/write first: hypothesis shrinks towards the first element.
PROTS = (int(VM_PROT_READ | VM_PROT_WRITE), int(VM_PROT_READ), 0)
MMAP_PROTS = (PROTS[0], PROTS[0], PROTS[0], PROTS[1], PROTS[2])


@attrs.define(eq=False)
class RefFile:
    """A file: the model's vnode and what read(2) must return."""

    vn: VnodeObject
    data: bytearray


@attrs.define(eq=False)
class RefPage:
    """What one page of one process holds, by the reference semantics."""

    kind: str
    prot: int
    ps: int
    own: bytearray | None = None  # private bytes (anon-private; file-private once written)
    shared: bytearray | None = None  # anon-shared: one bytearray shared by reference
    file: RefFile | None = None
    foff: int = 0

    def view(self) -> bytearray | memoryview:
        """The bytes a load sees (and a store changes, once ``prepare_write`` ran)."""
        if self.own is not None:
            return self.own
        if self.shared is not None:
            return self.shared
        assert self.file is not None
        return memoryview(self.file.data)[self.foff : self.foff + self.ps]

    def prepare_write(self) -> None:
        """The write fault of a private file page: copy the file page now."""
        if self.kind == FILE_PRIVATE and self.own is None:
            assert self.file is not None
            self.own = bytearray(self.file.data[self.foff : self.foff + self.ps])

    def forked(self) -> RefPage:
        own = bytearray(self.own) if self.own is not None else None
        return RefPage(self.kind, self.prot, self.ps, own, self.shared, self.file, self.foff)


@attrs.define(eq=False)
class RefProc:
    """A live process and the reference contents of its address space."""

    proc: Process
    pages: dict[int, RefPage] = attrs.field(factory=dict)  # page va -> page
    # (start, npages) of every mmap, for picking addresses (maybe partly unmapped).
    regions: list[tuple[int, int]] = attrs.field(factory=list)
    # Pages this process (or its parent before fork) accessed, oldest first.
    touched: list[int] = attrs.field(factory=list)


def vm_settings(profile: str | None = None, **overrides: Any) -> settings:
    """Settings for ``VMStateMachine.TestCase``: ``default`` (150 examples of up
    to 50 steps, ~15 s) or ``deep`` (1500 of up to 100, a few minutes).

    ``profile`` defaults to ``$UVMLOAN_HYPOTHESIS_PROFILE`` (else ``default``).
    """
    name = profile or os.environ.get("UVMLOAN_HYPOTHESIS_PROFILE", "default")
    base: dict[str, Any] = {
        "default": {"max_examples": 150, "stateful_step_count": 50},
        "deep": {"max_examples": 1500, "stateful_step_count": 100},
    }.get(name, {})
    if not base:
        raise ValueError(f"unknown hypothesis profile {name!r}; use 'default' or 'deep'")
    kw: dict[str, Any] = {
        "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
        **base,
        **overrides,
    }
    return settings(**kw)


class VMStateMachine(RuleBasedStateMachine):
    """Processes, mappings, forks and accesses against a reference model."""

    NCPUS: ClassVar[int] = 2
    MEMORY: ClassVar[str] = "4M"
    PAGE_SIZE: ClassVar[int] = 4096
    MAX_PROCS: ClassVar[int] = 5  # fork stops here; spawn only below 2
    MAX_REGIONS: ClassVar[int] = 5
    MAX_PAGES: ClassVar[int] = 4  # pages per mmap
    FILE_PAGES: ClassVar[tuple[int, ...]] = (4, 3)
    INJECT: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.m = Machine(
            ncpus=self.NCPUS, memory=self.MEMORY, page_size=self.PAGE_SIZE, trace="counters"
        )
        if self.INJECT is not None:
            from ..inject import inject

            inject(self.m, self.INJECT)
        self.ps = self.PAGE_SIZE
        self.procs: list[RefProc] = []
        self.files: list[RefFile] = []
        self.nspawned = 0
        self.closed = False

    # ------------------------------------------------------------ helpers

    def _spawn(self, cpu: int) -> None:
        self.nspawned += 1
        p = self.m.spawn(f"p{self.nspawned}", cpu=cpu)
        self.procs.append(RefProc(p))

    def _pages_of(self, va: int, n: int) -> list[int]:
        ps = self.ps
        first = va - va % ps
        last = (va + n - 1) - (va + n - 1) % ps
        return list(range(first, last + 1, ps))

    def _expect_access(self, rp: RefProc, va: int, n: int, write: bool) -> int | None:
        """Apply the side effects of the faults an access takes; return the
        first page va that must raise SIGSEGV, or None if the access works.

        The MMU translates page by page in order and faults each one in, so
        pages before a bad one are touched (a private file page gets its copy)
        even though no byte is stored.
        """
        need = int(VM_PROT_WRITE) if write else int(VM_PROT_READ)
        for pva in self._pages_of(va, n):
            pg = rp.pages.get(pva)
            if pg is None or not pg.prot & need:
                return pva
            if write:
                pg.prepare_write()
        return None

    def _pick_proc(self, data: st.DataObject) -> RefProc:
        return self.procs[self._index(data, len(self.procs), "proc")]

    @staticmethod
    def _index(data: st.DataObject, n: int, label: str) -> int:
        # Draw indices, never the objects: hypothesis pretty-prints what is
        # drawn, and a process with its pages is large.
        return data.draw(st.integers(0, n - 1), label=label)

    def _pick_mapped_proc(self, data: st.DataObject) -> RefProc:
        cands = [r for r in self.procs if r.regions]
        return cands[self._index(data, len(cands), "proc")]

    def _pick_span(self, data: st.DataObject, rp: RefProc) -> tuple[int, int]:
        """An address and a length: often in a page the process touched
        before (where copy-on-write and sharing happen), else anywhere in one
        of its regions; now and then running past the region's end."""
        hot = [va for va in rp.touched if va in rp.pages]
        use_hot: bool = bool(hot) and data.draw(st.booleans(), label="hot")
        if use_hot:
            base = data.draw(st.sampled_from(hot), label="page")
            off = data.draw(st.integers(0, self.ps - 1), label="offset")
            n = data.draw(st.integers(1, self.ps), label="n")
            return base + off, n
        start, npages = data.draw(st.sampled_from(rp.regions), label="region")
        size = npages * self.ps
        off = data.draw(st.integers(0, size - 1), label="offset")
        if data.draw(st.integers(0, 7), label="overrun") == 0:
            n = data.draw(st.integers(1, 2 * self.ps), label="n")
        else:
            n = data.draw(st.integers(1, min(size - off, self.ps + 7)), label="n")
        return start + off, n

    def _touch(self, rp: RefProc, va: int, n: int) -> None:
        for pva in self._pages_of(va, n):
            if pva in rp.pages and pva not in rp.touched:
                rp.touched.append(pva)

    # ------------------------------------------------------------- rules

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        """The files, and a first process with one region of each kind, the
        first page of each already touched: every run starts where fork,
        copy-on-write and sharing have something to work on."""
        for i, npages in enumerate(self.FILE_PAGES):
            body = bytes((i * 37 + k) % 251 + 1 for k in range(npages * self.ps))
            vn = self.m.vnode(body, name=f"file{i}")
            self.files.append(RefFile(vn, bytearray(body)))
        self._spawn(0)
        rp = self.procs[0]
        for kind in KINDS:
            self._mmap(rp, kind, PROTS[0], 2, self.files[0], 0)
            va = rp.regions[-1][0]
            self._write_checked(rp, va + 8, bytes([0x11 + len(rp.regions)]) * 8, 0)
        del data

    @precondition(lambda self: len(self.procs) < 2)
    @rule(cpu=st.integers(0, 7))
    def spawn(self, cpu: int) -> None:
        self._spawn(cpu % self.NCPUS)

    @precondition(lambda self: bool(self.procs))
    @rule(data=st.data(), kind=st.sampled_from(KINDS), prot=st.sampled_from(MMAP_PROTS))
    def mmap(self, data: st.DataObject, kind: str, prot: int) -> None:
        rp = self._pick_proc(data)
        if len(rp.regions) >= self.MAX_REGIONS:
            return
        npages = data.draw(st.integers(1, self.MAX_PAGES), label="npages")
        f = self.files[self._index(data, len(self.files), "file")]
        fpages = len(f.data) // self.ps
        if kind in (FILE_PRIVATE, FILE_SHARED):
            npages = min(npages, fpages)
        foff = data.draw(st.integers(0, fpages - min(npages, fpages)), label="fileoff")
        self._mmap(rp, kind, prot, npages, f, foff * self.ps)

    def _mmap(self, rp: RefProc, kind: str, prot: int, npages: int, f: RefFile, foff: int) -> None:
        is_file = kind in (FILE_PRIVATE, FILE_SHARED)
        flags = MAP_SHARED if kind in (ANON_SHARED, FILE_SHARED) else MAP_PRIVATE
        va = rp.proc.mmap(
            npages * self.ps,
            prot=prot,
            flags=flags,
            obj=f.vn if is_file else None,
            offset=foff if is_file else 0,
        )
        assert va % self.ps == 0
        shared_store = [bytearray(self.ps) for _ in range(npages)] if kind == ANON_SHARED else None
        for i in range(npages):
            pva = va + i * self.ps
            assert pva not in rp.pages, f"mmap returned {va:#x}, overlapping a mapping"
            pg = RefPage(kind, prot, self.ps)
            if is_file:
                pg.file, pg.foff = f, foff + i * self.ps
            elif kind == ANON_PRIVATE:
                pg.own = bytearray(self.ps)
            elif shared_store is not None:
                pg.shared = shared_store[i]
            rp.pages[pva] = pg
        rp.regions.append((va, npages))

    @precondition(lambda self: any(rp.regions for rp in self.procs))
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        for _ in range(data.draw(st.integers(1, 3), label="reads")):
            self._read_one(data)

    def _read_one(self, data: st.DataObject) -> None:
        rp = self._pick_mapped_proc(data)
        va, n = self._pick_span(data, rp)
        cpu = data.draw(st.integers(0, self.NCPUS - 1), label="cpu")
        bad = self._expect_access(rp, va, n, write=False)
        self._touch(rp, va, n)
        if bad is not None:
            try:
                got = rp.proc.read(va, n, cpu=cpu)
            except SegmentationFault as e:
                assert e.va == bad, f"read fault at {e.va:#x}, expected at {bad:#x}"
                return
            raise AssertionError(
                f"read of {n} bytes at {va:#x} gave {got[:8]!r}...; expected SIGSEGV at {bad:#x}"
            )
        got = rp.proc.read(va, n, cpu=cpu)
        want = self._ref_bytes(rp, va, n)
        if got != want:
            i = next(i for i in range(n) if got[i] != want[i])
            raise AssertionError(
                f"{rp.proc.name} read {n} bytes at {va:#x} on CPU {cpu}: byte {i} "
                f"(va {va + i:#x}) is {got[i]:#x}, the reference says {want[i]:#x}"
            )

    def _ref_bytes(self, rp: RefProc, va: int, n: int) -> bytes:
        out = bytearray()
        pos, end = va, va + n
        while pos < end:
            base = pos - pos % self.ps
            take = min(end, base + self.ps) - pos
            out += rp.pages[base].view()[pos - base : pos - base + take]
            pos += take
        return bytes(out)

    @precondition(lambda self: any(rp.regions for rp in self.procs))
    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        for _ in range(data.draw(st.integers(1, 3), label="writes")):
            self._write_one(data, data.draw(st.integers(0, 255), label="seed"))

    def _write_one(self, data: st.DataObject, seed: int) -> None:
        rp = self._pick_mapped_proc(data)
        va, n = self._pick_span(data, rp)
        cpu = data.draw(st.integers(0, self.NCPUS - 1), label="cpu")
        self._write_checked(rp, va, bytes((seed + 7 * i) % 256 for i in range(n)), cpu)

    def _write_checked(self, rp: RefProc, va: int, payload: bytes, cpu: int) -> None:
        n = len(payload)
        bad = self._expect_access(rp, va, n, write=True)
        self._touch(rp, va, n)
        try:
            rp.proc.write(va, payload, cpu=cpu)
        except SegmentationFault as e:
            assert bad is not None, f"write at {va:#x} ({n} bytes) raised {e}"
            assert e.va == bad, f"write fault at {e.va:#x}, expected at {bad:#x}"
            return
        assert bad is None, f"write of {n} bytes at {va:#x} worked; expected SIGSEGV at {bad:#x}"
        pos, end, i = va, va + n, 0
        while pos < end:
            base = pos - pos % self.ps
            take = min(end, base + self.ps) - pos
            rp.pages[base].view()[pos - base : pos - base + take] = payload[i : i + take]
            pos += take
            i += take

    @precondition(lambda self: bool(self.procs) and len(self.procs) < self.MAX_PROCS)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        rp = self._pick_proc(data)
        cpu = data.draw(st.integers(0, self.NCPUS - 1), label="cpu")
        self.nspawned += 1
        child = rp.proc.fork(f"p{self.nspawned}", cpu=cpu)
        pages = {va: pg.forked() for va, pg in rp.pages.items()}
        crp = RefProc(child, pages, list(rp.regions), list(rp.touched))
        self.procs.append(crp)

    @precondition(lambda self: any(rp.regions for rp in self.procs))
    @rule(data=st.data())
    def munmap(self, data: st.DataObject) -> None:
        rp = self._pick_mapped_proc(data)
        start, npages = data.draw(st.sampled_from(rp.regions), label="region")
        first = data.draw(st.integers(0, npages - 1), label="first")
        count = data.draw(st.integers(1, npages - first), label="count")
        va = start + first * self.ps
        rp.proc.munmap(va, count * self.ps)
        for i in range(count):
            rp.pages.pop(va + i * self.ps, None)
        if not any(start + i * self.ps in rp.pages for i in range(npages)):
            rp.regions.remove((start, npages))

    @precondition(lambda self: any(rp.regions for rp in self.procs))
    @rule(data=st.data(), prot=st.sampled_from(MMAP_PROTS))
    def mprotect(self, data: st.DataObject, prot: int) -> None:
        rp = self._pick_mapped_proc(data)
        start, npages = data.draw(st.sampled_from(rp.regions), label="region")
        first = data.draw(st.integers(0, npages - 1), label="first")
        count = data.draw(st.integers(1, npages - first), label="count")
        va = start + first * self.ps
        vas = [va + i * self.ps for i in range(count)]
        hole = any(v not in rp.pages for v in vas)
        try:
            rp.proc.mprotect(va, count * self.ps, prot)
        except UVMError as e:
            assert hole and e.errno == ENOMEM, f"mprotect [{va:#x}, +{count}p) raised {e}"
            return
        assert not hole, f"mprotect over a hole at [{va:#x}, +{count}p) succeeded"
        for v in vas:
            rp.pages[v].prot = prot

    @precondition(lambda self: len(self.procs) > 1)
    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        rp = self._pick_proc(data)
        rp.proc.exit()
        self.procs.remove(rp)

    @precondition(lambda self: bool(self.procs))
    @rule(data=st.data(), cpu=st.integers(0, 7))
    def run_on(self, data: st.DataObject, cpu: int) -> None:
        self._pick_proc(data).proc.run_on(cpu % self.NCPUS)

    @rule(data=st.data(), what=st.sampled_from(("write", "read", "fsync")))
    def file_io(self, data: st.DataObject, what: str) -> None:
        """write(2), read(2) or fsync(2) of one of the files."""
        f = self.files[self._index(data, len(self.files), "file")]
        size = len(f.data)
        if what == "fsync":
            with self.m.on_cpu(0):
                f.vn.fsync()
            assert f.vn.backing == f.data, f"fsync of {f.vn.name}: the disk differs from read(2)"
            return
        off = data.draw(st.integers(0, size - 1), label="offset")
        if what == "read":
            n = data.draw(st.integers(1, size - off), label="n")
            assert f.vn.read(off, n) == bytes(f.data[off : off + n]), f"read(2) of {f.vn.name}"
            return
        n = data.draw(st.integers(1, min(size - off, self.ps + 9)), label="n")
        seed = data.draw(st.integers(0, 255), label="seed")
        payload = bytes((seed * 3 + i) % 256 for i in range(n))
        with self.m.on_cpu(data.draw(st.integers(0, self.NCPUS - 1), label="cpu")):
            f.vn.write(off, payload)
        f.data[off : off + n] = payload

    # -------------------------------------------------------- invariants

    @invariant()
    def model_invariants(self) -> None:
        if not self.closed:
            check_invariants(self.m)

    def check_all_memory(self) -> None:
        """Every readable page of every process holds what the reference says."""
        for rp in self.procs:
            for va, pg in sorted(rp.pages.items()):
                if not pg.prot & int(VM_PROT_READ):
                    continue
                got = rp.proc.read(va, self.ps)
                want = bytes(pg.view())
                if got != want:
                    i = next(i for i in range(self.ps) if got[i] != want[i])
                    raise AssertionError(
                        f"{rp.proc.name} page {va:#x} ({pg.kind}): byte {i} is {got[i]:#x}, "
                        f"the reference says {want[i]:#x}"
                    )

    @rule()
    def read_everything(self) -> None:
        self.check_all_memory()

    def teardown(self) -> None:
        if self.closed:
            return
        try:
            self.check_all_memory()
            for rp in list(self.procs):
                rp.proc.exit()
            self.procs.clear()
            check_invariants(self.m)
            cache = sum(len(f.vn.uo_pages) for f in self.files)
            uvm = self.m.uvm
            leftover = [pg for pg in uvm.pages.values() if not isinstance(pg.uobject, VnodeObject)]
            assert not leftover, f"pages still allocated after every process exited: {leftover}"
            assert uvm.allocated == cache, f"{uvm.allocated} pages allocated, {cache} cached"
            assert uvm.free_count == uvm.npages - cache
        finally:
            self.closed = True
            self.m.close()


__all__ = ["KINDS", "RefFile", "RefPage", "RefProc", "VMStateMachine", "vm_settings"]
