"""A hypothesis state machine for the machine-independent VM: ``VMStateMachine``.

Processes map private and shared anonymous memory and private and shared
file mappings, fork, read and write (on any CPU), unmap, change
protections, wire and unwire memory (mlock/munlock), switch CPUs and exit;
files are written (growing them) and read with write(2)/read(2), truncated
(shrinking or growing) and synced.  Beside the model runs a *reference*:
plain bytearrays per page, with the semantics a POSIX programmer expects of
NetBSD:

* private anonymous pages are zero at first and copied at fork;
* shared anonymous pages are one bytearray shared by reference;
* a shared file page *is* the file's page in the page cache;
* a private file page shows the file's page (and so every later write(2)
  or truncate) until the process first writes it, then holds its own copy
  (taken, page by page, when the store faults); fork copies that state;
* a file page wholly past end of file (after a truncate, or mapped past
  EOF) faults: SIGSEGV, unless it is a private page that already has its
  own copy (the anon layer answers first);
* the bytes of the last page past EOF are the page cache's: a store through
  a mapping there is seen by every mapping of the page but not by read(2);
  a truncate that shrinks the file zeroes them, one that grows it (or a
  write(2) past EOF) keeps them, as ``ffs_truncate``/``ext2fs_truncate``
  zero the tail only when shrinking;
* mlock/munlock change no byte, but mlock resolves copy-on-write now
  (``UVM_FAULT_WIRE|UVM_FAULT_MAXPROT``: every mapping here may become
  writable), so a private file page that was only read gets its own copy
  and stops showing the file.

Wiring is checked against the reference too: after every step each page
the reference calls wired is resident with ``wire_count`` equal to the
number of wired mappings of it plus the faults taken on a wired entry that
mapped it, every present PTE of a wired mapping has ``PTE_WIRED`` (and no
other PTE has), no other page is wired; mlock, munlock, fork and exit check
their own effects on the spot (see the rules).  A fault on a wired entry
(an access after mprotect took the PTE or its write right away) wires the
page once more and nothing ever unwires that extra wiring but freeing the
page (``uvm_fault_check``: ``VM_MAPENT_ISWIRED`` sets ``wire_paging``;
``uvm_fault_unwire_locked`` unwires once per page; uvm_fault.c 1.224/1.226):
the reference predicts those faults from the PTEs before each access.

Every read must return what the reference says, every access that the
reference says is illegal must raise ``SegmentationFault``, and
``check_invariants`` must hold after every step.  At the end every process
exits and every frame must be free again except the vnodes' cached pages
(and the zero page, if the loan layer made one), and no page is wired but
by such extra wirings.

Truncating a file below a page that a shared mapping has wired frees that
page, as NetBSD does (``genfs_do_putpages`` with ``PGO_FREE`` frees wired
pages, ``uvm_pagefree`` unwires them).  It is left out by default (the size
is raised to keep such pages) because the reference then no longer knows the
wire counts exactly; set ``TRUNCATE_WIRED = True`` to generate it: the exact
wiring checks are dropped for the rest of a run once it happens (bytes and
faults are still checked).

Use it from pytest::

    from uvmloan.testing.vm_machine import VMStateMachine, vm_settings
    TestVM = VMStateMachine.TestCase
    TestVM.settings = vm_settings()

``vm_settings()`` reads ``UVMLOAN_HYPOTHESIS_PROFILE`` (``default`` or
``deep``).  Subclass to explore other shapes: the machine through the hooks
every shipped machine shares (:mod:`uvmloan.testing.hooks`: ``NCPUS``,
``MEMORY``, ``PROFILE``, ``PROFILE_OVERRIDES``, ``INJECT`` with names from
``uvmloan.inject.BUGS``, and the factory :meth:`make_machine`), the world
through ``PAGE_SIZE``, ``MAX_PROCS``, ``MAX_PAGES`` ...
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from ..errors import UVMError
from ..machine import Machine
from ..page import Page
from ..param import (
    ENOMEM,
    MAP_PRIVATE,
    MAP_SHARED,
    PG,
    VM_PROT_READ,
    VM_PROT_WRITE,
)
from ..pmap.pte import PTE_P, PTE_W, PTE_WIRED, pte_frame, pte_str
from .draws import draw, draw_int
from .failures import CheckFailure
from .hooks import MachineHooks
from .vm_model import VMModel
from .vm_reference import (
    ANON_PRIVATE,
    ANON_SHARED,
    FILE_PRIVATE,
    FILE_SHARED,
    KINDS,
    MMAP_PROTS,
    PRIVATE_KINDS,
    PROTS,
    RefFile,
    RefPage,
    RefProc,
    file_body,
    file_payload,
    roundup,
    store_payload,
    vm_settings,
)

T = TypeVar("T")


class VMStateMachine(VMModel, MachineHooks, RuleBasedStateMachine):
    """Processes, mappings, forks, wiring and file I/O against a reference model."""

    NCPUS: ClassVar[int | None] = 2
    MEMORY: ClassVar[int | str] = "4M"
    PAGE_SIZE: ClassVar[int] = 4096
    MAX_PROCS: ClassVar[int] = 5  # fork stops here; spawn only below 2
    MAX_REGIONS: ClassVar[int] = 5
    MAX_PAGES: ClassVar[int] = 4  # pages per mmap
    FILE_PAGES: ClassVar[tuple[int, ...]] = (4, 3)
    MAX_FILE_PAGES: ClassVar[int] = 6  # write(2) and truncate stay below this size
    # Generate truncates that cut off pages wired through a shared mapping
    # (see the module docstring: the model keeps them, NetBSD frees them).
    TRUNCATE_WIRED: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.m: Machine = self.make_machine()
        self.ps = self.m.page_size
        self.procs: list[RefProc] = []
        self.files: list[RefFile] = []
        self.nspawned = 0
        self.closed = False
        # False once a truncate freed a wired page (TRUNCATE_WIRED): from then
        # on the reference no longer knows the wire counts exactly.
        self.wiring_exact = True
        # Wirings added by faults on wired entries, per page (see the module
        # docstring); they last until the page is freed.
        self.extra_wires: Counter[Page] = Counter()

    # ------------------------------------------------------------ helpers

    def machine_options(self) -> dict[str, Any]:
        return {"page_size": self.PAGE_SIZE}

    def _spawn(self, cpu: int) -> None:
        self.nspawned += 1
        p = self.m.spawn(f"p{self.nspawned}", cpu=cpu)
        self.procs.append(RefProc(p))

    def _pick_proc(self, data: st.DataObject) -> RefProc:
        return self.procs[self._index(data, len(self.procs), "proc")]

    @staticmethod
    def _index(data: st.DataObject, n: int, label: str) -> int:
        # Draw indices, never the objects: hypothesis pretty-prints what is
        # drawn, and a process with its pages is large.  One candidate is no
        # choice: nothing is drawn (a third of the process picks of a run).
        return draw_int(data, 0, n - 1, label)

    @classmethod
    def _choose(cls, data: st.DataObject, seq: Sequence[T], label: str) -> T:
        """An element of ``seq``, by a drawn index (``st.sampled_from`` of a
        list builds a new strategy on every call, an index strategy is
        cached)."""
        return seq[cls._index(data, len(seq), label)]

    def _pick_mapped_proc(self, data: st.DataObject) -> RefProc:
        cands = [r for r in self.procs if r.regions]
        return cands[self._index(data, len(cands), "proc")]

    def _pick_file(self, data: st.DataObject) -> RefFile:
        return self.files[self._index(data, len(self.files), "file")]

    def _pick_span(self, data: st.DataObject, rp: RefProc) -> tuple[int, int]:
        """An address and a length: often in a page the process touched
        before (where copy-on-write and sharing happen), else anywhere in one
        of its regions; now and then running past the region's end."""
        hot = [va for va in rp.touched if va in rp.pages]
        use_hot: bool = bool(hot) and draw(data, st.booleans(), "hot")
        if use_hot:
            base = self._choose(data, hot, "page")
            off = draw_int(data, 0, self.ps - 1, "offset")
            n = draw_int(data, 1, self.ps, "n")
            return base + off, n
        start, npages = self._choose(data, rp.regions, "region")
        size = npages * self.ps
        off = draw_int(data, 0, size - 1, "offset")
        if draw_int(data, 0, 7, "overrun") == 0:
            n = draw_int(data, 1, 2 * self.ps, "n")
        else:
            n = draw_int(data, 1, min(size - off, self.ps + 7), "n")
        return start + off, n

    def _pick_range(self, data: st.DataObject, rp: RefProc) -> list[int]:
        """The page addresses of a sub-range of one region (maybe with holes):
        half the time, if the process has wired pages, one starting at one of
        them (so that munlock, mprotect and munmap meet wired memory)."""
        ps = self.ps
        wired = sorted(va for va, pg in rp.pages.items() if pg.wired)
        if bool(wired) and draw(data, st.booleans(), "at wired"):
            va = self._choose(data, wired, "wired page")
            start, npages = next(r for r in rp.regions if r[0] <= va < r[0] + r[1] * ps)
            first = (va - start) // ps
        else:
            start, npages = self._choose(data, rp.regions, "region")
            first = draw_int(data, 0, npages - 1, "first")
        count = draw_int(data, 1, npages - first, "count")
        return [start + (first + i) * ps for i in range(count)]

    # ------------------------------------------------------------- rules

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        """The files, and a first process with one region of each kind, the
        first page of each already touched: every run starts where fork,
        copy-on-write and sharing have something to work on."""
        for i, npages in enumerate(self.FILE_PAGES):
            body = file_body(i, npages * self.ps)
            vn = self.m.vnode(body, name=f"file{i}")
            self.files.append(RefFile.new(vn, body, self.ps))
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
        self._spawn(cpu % self.m.ncpus)

    @precondition(lambda self: bool(self.procs))
    @rule(data=st.data(), kind=st.sampled_from(KINDS), prot=st.sampled_from(MMAP_PROTS))
    def mmap(self, data: st.DataObject, kind: str, prot: int) -> None:
        """mmap(2); a file mapping mostly lies within the file, but may start
        or run past its end (those pages fault until the file grows)."""
        rp = self._pick_proc(data)
        if len(rp.regions) >= self.MAX_REGIONS:
            return
        npages = draw_int(data, 1, self.MAX_PAGES, "npages")
        f = self._pick_file(data)
        fpages = len(f.mem) // self.ps
        if kind in (FILE_PRIVATE, FILE_SHARED):
            if fpages and draw_int(data, 0, 3, "past-eof") != 0:
                npages = min(npages, fpages)
                foff = draw_int(data, 0, fpages - npages, "fileoff")
            else:
                foff = draw_int(data, 0, fpages, "fileoff")
        else:
            foff = 0
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
        for _ in range(draw_int(data, 1, 3, "reads")):
            self._read_one(data)

    def _read_one(self, data: st.DataObject) -> None:
        rp = self._pick_mapped_proc(data)
        va, n = self._pick_span(data, rp)
        cpu = draw_int(data, 0, self.m.ncpus - 1, "cpu")
        self._read_checked(rp, va, n, cpu)

    @precondition(lambda self: any(rp.regions for rp in self.procs))
    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        for _ in range(draw_int(data, 1, 3, "writes")):
            self._write_one(data, draw_int(data, 0, 255, "seed"))

    def _write_one(self, data: st.DataObject, seed: int) -> None:
        rp = self._pick_mapped_proc(data)
        va, n = self._pick_span(data, rp)
        cpu = draw_int(data, 0, self.m.ncpus - 1, "cpu")
        self._write_checked(rp, va, store_payload(seed, n), cpu)

    @precondition(lambda self: bool(self.procs) and len(self.procs) < self.MAX_PROCS)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        """fork(2).  The parent's private pages are write-protected (the next
        store on either side copies), except wired ones: those are copied for
        the child at once (``amap_cow_now``), the parent keeps its wired page
        mapped as before (still writable), the child's copy is unwired."""
        rp = self._pick_proc(data)
        cpu = draw_int(data, 0, self.m.ncpus - 1, "cpu")
        wired: list[tuple[int, RefPage, Page, int]] = []
        if self.wiring_exact:
            for va, pg in sorted(rp.pages.items()):
                if pg.wired:
                    wired.append((va, pg, self._wired_page(rp, va), rp.proc.pmap.pte(va)))
        self.nspawned += 1
        child = rp.proc.fork(f"p{self.nspawned}", cpu=cpu)
        pages = {va: pg.forked() for va, pg in rp.pages.items()}
        crp = RefProc(child, pages, list(rp.regions), list(rp.touched))
        self.procs.append(crp)
        for va, pg in sorted(rp.pages.items()):
            pte = rp.proc.pmap.pte(va)
            # uvmspace_fork write-protects the parent's copy-on-write ranges
            # (a wired one is copied instead), so the next store copies.
            if not (pg.wired or pg.kind not in PRIVATE_KINDS or not pte & PTE_W):
                raise CheckFailure(
                    "page-table",
                    f"fork of {rp.proc.name}: private page {va:#x} ({pg.kind}) is still "
                    f"writable in the parent: {pte_str(pte)}",
                )
        if wired:
            event("fork: with wired pages")
        for va, pg, mpg, pte in wired:
            who = f"fork of {rp.proc.name}: wired {pg.kind} page {va:#x}"
            if self._model_page(rp, va) is not mpg:
                raise CheckFailure("wiring", f"{who}: the parent's page changed")
            now = rp.proc.pmap.pte(va)
            if now != pte:
                raise CheckFailure(
                    "wiring", f"{who}: parent PTE {pte_str(pte)} became {pte_str(now)}"
                )
            cpg = self._model_page(crp, va)
            if pg.kind in PRIVATE_KINDS:
                if not (cpg is not None and cpg is not mpg):
                    raise CheckFailure(
                        "wiring", f"{who}: the child has no private copy ({cpg!r}, parent {mpg!r})"
                    )
                if cpg.wire_count != 0:
                    raise CheckFailure("wiring", f"{who}: the child's copy {cpg!r} is wired")
            else:
                if cpg is not mpg:
                    raise CheckFailure(
                        "wiring", f"{who}: the child does not share it ({cpg!r} vs {mpg!r})"
                    )

    @precondition(lambda self: any(rp.regions for rp in self.procs))
    @rule(data=st.data())
    def munmap(self, data: st.DataObject) -> None:
        rp = self._pick_mapped_proc(data)
        vas = self._pick_range(data, rp)
        rp.proc.munmap(vas[0], len(vas) * self.ps)
        for va in vas:
            rp.pages.pop(va, None)
        ps = self.ps
        rp.regions = [
            (start, n)
            for start, n in rp.regions
            if any(start + i * ps in rp.pages for i in range(n))
        ]

    @precondition(lambda self: any(rp.regions for rp in self.procs))
    @rule(data=st.data(), prot=st.sampled_from(MMAP_PROTS))
    def mprotect(self, data: st.DataObject, prot: int) -> None:
        """mprotect(2) of a sub-range of one region; now and then a round trip
        (lower, then back to read/write) followed by an access to its first
        page, which faults it in again -- through a wired entry, if wired."""
        rp = self._pick_mapped_proc(data)
        vas = self._pick_range(data, rp)
        hole = any(v not in rp.pages for v in vas)
        prots = [prot]
        if prot != PROTS[0] and draw(data, st.booleans(), "and back"):
            prots.append(PROTS[0])
        for pr in prots:
            try:
                rp.proc.mprotect(vas[0], len(vas) * self.ps, pr)
            except UVMError as e:
                if not (hole and e.errno == ENOMEM):
                    raise CheckFailure(
                        "errno", f"mprotect [{vas[0]:#x}, +{len(vas)}p) raised {e}"
                    ) from e
                return
            if hole:
                raise CheckFailure(
                    "errno", f"mprotect over a hole at [{vas[0]:#x}, +{len(vas)}p) succeeded"
                )
            for v in vas:
                rp.pages[v].prot = pr
        if len(prots) > 1:
            # Use the first page again, as a program that dropped write
            # access for a while would.
            cpu = draw_int(data, 0, self.m.ncpus - 1, "cpu")
            if draw(data, st.booleans(), "store"):
                seed = draw_int(data, 0, 255, "seed")
                self._write_checked(rp, vas[0], bytes([seed]) * 16, cpu)
            else:
                self._read_checked(rp, vas[0], 16, cpu)

    @precondition(lambda self: any(rp.regions for rp in self.procs))
    @rule(data=st.data())
    def mlock(self, data: st.DataObject) -> None:
        """mlock(2) of a sub-range of one region.

        ENOMEM for a hole, EINVAL for a PROT_NONE page (nothing changes);
        otherwise pages of entries not wired yet are faulted in order with
        wiring faults, which resolve copy-on-write (a private file page gets
        its copy); a page wholly past EOF stops it with EFAULT, undoing the
        wiring but not the copies.  (The model's errno for a fault past EOF is
        EFAULT; NetBSD's pager says EINVAL and ``sys_mlock`` returns that.)
        After success every page is resident with ``wire_count >= 1``; each
        newly wired one is mapped by a present ``PTE_WIRED`` PTE, writable
        exactly when the protection allows.
        """
        rp = self._pick_mapped_proc(data)
        vas = self._pick_range(data, rp)
        self._touch(rp, vas[0], len(vas) * self.ps)
        want = self._expect_mlock(rp, vas)
        newly = [v for v in vas if v in rp.pages and not rp.pages[v].wired]
        try:
            rp.proc.mlock(vas[0], len(vas) * self.ps)
        except UVMError as e:
            event(f"mlock: errno {e.errno}")
            if not (want is not None):
                raise CheckFailure("errno", f"mlock [{vas[0]:#x}, +{len(vas)}p) raised {e}") from e
            if e.errno != want:
                raise CheckFailure(
                    "errno", f"mlock [{vas[0]:#x}, +{len(vas)}p) raised {e}, want {want}"
                ) from e
            return
        if want is not None:
            raise CheckFailure(
                "errno", f"mlock [{vas[0]:#x}, +{len(vas)}p) worked; want errno {want}"
            )
        event("mlock: wired" + (" (some already)" if len(newly) < len(vas) else ""))
        for v in vas:
            rp.pages[v].wired = True
        if not self.wiring_exact:
            return
        for v in vas:
            pg = rp.pages[v]
            mpg = self._wired_page(rp, v)
            who = f"after mlock, {rp.proc.name} {v:#x} ({pg.kind})"
            if not (mpg.wire_count >= 1):
                raise CheckFailure("wiring", f"{who}: {mpg!r} is not wired")
            pte = rp.proc.pmap.pte(v)
            if v in newly:
                if not (pte & PTE_P):
                    raise CheckFailure("wiring", f"{who}: no PTE")
                if pg.kind in PRIVATE_KINDS and not (mpg.flags & PG.ANON):
                    raise CheckFailure("wiring", f"{who}: {mpg!r} is not a private anon page")
                if bool(pte & PTE_W) != bool(pg.prot & VM_PROT_WRITE):
                    raise CheckFailure(
                        "wiring", f"{who}: PTE {pte_str(pte)} for protection {pg.prot}"
                    )
            if pte & PTE_P:
                if not (pte & PTE_WIRED):
                    raise CheckFailure("wiring", f"{who}: PTE {pte_str(pte)} lacks PTE_WIRED")
                if pte_frame(pte) != mpg.frame:
                    raise CheckFailure("wiring", f"{who}: PTE {pte_str(pte)} maps not {mpg!r}")

    @precondition(lambda self: any(rp.regions for rp in self.procs))
    @rule(data=st.data())
    def munlock(self, data: st.DataObject) -> None:
        """munlock(2): ENOMEM for a hole; otherwise every wired page of the
        range loses this mapping's wiring (``wire_count`` one lower per
        wired mapping of it in the range) and no PTE of it stays wired."""
        rp = self._pick_mapped_proc(data)
        vas = self._pick_range(data, rp)
        hole = any(v not in rp.pages for v in vas)
        before: dict[int, tuple[Page, int]] = {}
        drops: Counter[int] = Counter()
        if not hole and self.wiring_exact:
            for v in vas:
                if rp.pages[v].wired:
                    mpg = self._wired_page(rp, v)
                    before[mpg.frame] = (mpg, mpg.wire_count)
                    drops[mpg.frame] += 1
        try:
            rp.proc.munlock(vas[0], len(vas) * self.ps)
        except UVMError as e:
            if not (hole and e.errno == ENOMEM):
                raise CheckFailure("errno", f"munlock [{vas[0]:#x}, +{len(vas)}p): {e}") from e
            return
        if hole:
            raise CheckFailure(
                "errno", f"munlock over a hole at [{vas[0]:#x}, +{len(vas)}p) succeeded"
            )
        for v in vas:
            rp.pages[v].wired = False
            pte = rp.proc.pmap.pte(v)
            if pte & PTE_WIRED:
                raise CheckFailure("wiring", f"after munlock, {v:#x} has PTE {pte_str(pte)}")
        if before:
            event("munlock: unwired pages")
        for frame, (mpg, count) in before.items():
            if mpg.wire_count != count - drops[frame]:
                raise CheckFailure(
                    "wiring",
                    f"munlock of {drops[frame]} wired mapping(s) of {mpg!r}: "
                    f"wire_count was {count}",
                )

    @precondition(lambda self: len(self.procs) > 1)
    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        """exit(2); the private pages it had wired are freed."""
        rp = self._pick_proc(data)
        frames = []
        if self.wiring_exact:
            for va, pg in rp.pages.items():
                if pg.wired and pg.kind in PRIVATE_KINDS:
                    frames.append(self._wired_page(rp, va).frame)
        if frames:
            event("exit: with wired private pages")
        rp.proc.exit()
        self.procs.remove(rp)
        for frame in frames:
            left = self.m.uvm.pages.get(frame)
            if left is not None:
                raise CheckFailure("wiring", f"exit of {rp.proc.name} left its wired page {left!r}")

    @precondition(lambda self: bool(self.procs))
    @rule(data=st.data(), cpu=st.integers(0, 7))
    def run_on(self, data: st.DataObject, cpu: int) -> None:
        self._pick_proc(data).proc.run_on(cpu % self.m.ncpus)

    @rule(data=st.data(), what=st.sampled_from(("write", "read", "fsync")))
    def file_io(self, data: st.DataObject, what: str) -> None:
        """write(2) (anywhere up to a page past EOF, growing the file),
        read(2) or fsync(2) of one of the files."""
        f = self._pick_file(data)
        ps = self.ps
        if what == "fsync":
            with self.m.on_cpu(0):
                f.vn.fsync()
            if f.vn.backing != f.data:
                raise CheckFailure("bytes", f"fsync of {f.vn.name}: the disk differs from read(2)")
            return
        if what == "read":
            off = draw_int(data, 0, f.size + 9, "offset")
            n = draw_int(data, 1, 2 * ps, "n")
            got = f.vn.read(off, n)
            if got != f.data[off : off + n]:
                raise CheckFailure("bytes", f"read(2) of {f.vn.name} at {off}, {n} bytes")
            return
        limit = self.MAX_FILE_PAGES * ps
        off = draw_int(data, 0, min(f.size + ps, limit - 1), "offset")
        n = draw_int(data, 1, min(limit - off, ps + 9), "n")
        seed = draw_int(data, 0, 255, "seed")
        payload = file_payload(seed, n)
        with self.m.on_cpu(draw_int(data, 0, self.m.ncpus - 1, "cpu")):
            assert f.vn.write(off, payload) == n
        f.write(off, payload)
        if f.vn.size != f.size:
            raise CheckFailure(
                "bytes", f"write(2) left {f.vn.name} {f.vn.size} bytes, want {f.size}"
            )
        self._probe_file(data, f)

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        """ftruncate(2) to a page boundary or into a page, shrinking or growing.

        Pages wholly past the new end fault afterwards in every mapping
        except private pages that have their own copy; the new tail of the
        last page reads zero.  Unless ``TRUNCATE_WIRED``, the size is raised
        so that no page wired through a shared mapping is cut off.
        """
        f = self._pick_file(data)
        ps = self.ps
        page = draw_int(data, 0, self.MAX_FILE_PAGES, "page")
        sub = draw(data, st.sampled_from((0, 0, 1, ps // 2, ps - 1)), "sub")
        size = min(page * ps + sub, self.MAX_FILE_PAGES * ps)
        wired_ends = [
            pg.foff + 1
            for rp in self.procs
            for pg in rp.pages.values()
            if pg.wired and pg.file is f and pg.own is None
        ]
        lowest = max(wired_ends, default=0)
        if size < lowest:
            event("truncate: below a wired shared page")
            if self.TRUNCATE_WIRED:
                if roundup(size, ps) < lowest:
                    self.wiring_exact = False
            else:
                size = lowest
        event("truncate: " + ("shrink" if size < f.size else "grow or keep"))
        with self.m.on_cpu(draw_int(data, 0, self.m.ncpus - 1, "cpu")):
            f.vn.truncate(size)
        f.truncate(size)
        if f.vn.size != size:
            raise CheckFailure("bytes", f"truncate left {f.vn.name} {f.vn.size} bytes, want {size}")
        self._probe_file(data, f)

    def _probe_file(self, data: st.DataObject, f: RefFile) -> None:
        """Now and then read a page that maps ``f`` (file I/O just changed it)."""
        cands = [
            (rp, va)
            for rp in self.procs
            for va, pg in sorted(rp.pages.items())
            if pg.file is f and pg.prot & int(VM_PROT_READ)
        ]
        if not cands or not draw(data, st.booleans(), "probe"):
            return
        rp, va = cands[self._index(data, len(cands), "probe page")]
        cpu = draw_int(data, 0, self.m.ncpus - 1, "cpu")
        self._read_checked(rp, va, self.ps, cpu)

    @rule()
    def read_everything(self) -> None:
        self.check_all_memory()


__all__ = [
    "ANON_PRIVATE",
    "ANON_SHARED",
    "FILE_PRIVATE",
    "FILE_SHARED",
    "KINDS",
    "MMAP_PROTS",
    "PRIVATE_KINDS",
    "PROTS",
    "RefFile",
    "RefPage",
    "RefProc",
    "VMModel",
    "VMStateMachine",
    "vm_settings",
]
