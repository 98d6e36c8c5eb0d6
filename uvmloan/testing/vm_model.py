"""The checking side of the VM state machine: the reference's expectations
of each access (which page faults, what bytes come back), the invariants
run after every step and the final checks of ``teardown``.

``VMModel`` is a mixin of :class:`~uvmloan.testing.vm_machine.VMStateMachine`;
it draws nothing (the rules, in ``vm_machine``, do).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import event
from hypothesis.stateful import invariant

from ..errors import SegmentationFault
from ..invariants import check_invariants
from ..machine import Machine
from ..object import VnodeObject
from ..page import Page
from ..param import (
    EFAULT,
    EINVAL,
    ENOMEM,
    VM_PROT_READ,
    VM_PROT_WRITE,
)
from ..pmap.pte import PTE_P, PTE_W, PTE_WIRED, pte_frame, pte_str
from .failures import CheckFailure
from .vm_reference import RefFile, RefPage, RefProc


def _where(rp: RefProc, va: int, pg: RefPage) -> str:
    """How a failure names a page of the reference (built only on failure:
    the wiring check visits every page after every step)."""
    return f"{rp.proc.name} {va:#x} ({pg.kind})"


class VMModel:
    """Expectations and checks over the machine and its reference."""

    m: Machine
    ps: int
    procs: list[RefProc]
    files: list[RefFile]
    closed: bool
    wiring_exact: bool
    extra_wires: Counter[Page]

    # ------------------------------------------------------------ expectations

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
            if pg is None or not pg.prot & need or pg.beyond_eof():
                return pva
            if write:
                pg.prepare_write()
        return None

    def _touch(self, rp: RefProc, va: int, n: int) -> None:
        for pva in self._pages_of(va, n):
            if pva in rp.pages and pva not in rp.touched:
                rp.touched.append(pva)

    def _wired_faults(self, rp: RefProc, va: int, n: int, write: bool) -> list[int]:
        """The pages of an access that will fault on a wired entry: the
        reference says wired and the PTE does not allow the access."""
        pmap = rp.proc.pmap
        out = []
        for pva in self._pages_of(va, n):
            pg = rp.pages.get(pva)
            if pg is None or not pg.wired:
                continue
            pte = pmap.pte(pva)
            if not pte & PTE_P or (write and not pte & PTE_W):
                out.append(pva)
        return out

    def _note_wired_faults(self, rp: RefProc, vas: list[int], stop: int | None) -> None:
        """Each fault on a wired entry before page ``stop`` wired its page once more."""
        for pva in vas:
            if stop is not None and pva >= stop:
                break
            if rp.pages.get(pva) is None or not rp.pages[pva].prot:
                continue
            if rp.pages[pva].beyond_eof():
                continue
            self.extra_wires[self._wired_page(rp, pva)] += 1
            event("fault on a wired entry")

    def _model_page(self, rp: RefProc, va: int) -> Page | None:
        """The resident page the model's map provides at ``va`` (anon first)."""
        vmmap = rp.proc.map
        e = vmmap.uvm_map_lookup_entry(va)
        assert e is not None, f"{rp.proc.name}: no map entry at {va:#x}; the reference has a page"
        return vmmap.page_at(e, va)

    def _wired_page(self, rp: RefProc, va: int) -> Page:
        mpg = self._model_page(rp, va)
        pg = rp.pages[va]
        assert mpg is not None, (
            f"{rp.proc.name} {va:#x} ({pg.kind}) is wired but no page is resident there"
        )
        return mpg

    # -------------------------------------------------------- invariants

    @invariant()
    def model_invariants(self) -> None:
        if not self.closed:
            check_invariants(self.m)
            if self.wiring_exact:
                self.check_wiring()

    def check_wiring(self) -> None:
        """Wire counts and wired PTEs agree with the reference's mlocks.

        A page's ``wire_count`` is the number of wired mappings of it (a
        file or shared anonymous page may be wired by several); no other
        page is wired; a present PTE has ``PTE_WIRED`` exactly when its
        mapping is wired, and a wired one maps the wired page.
        """
        want: Counter[tuple[str, int, int]] = Counter()
        for rp in self.procs:
            for pg in rp.pages.values():
                if pg.wired:
                    want[pg.key()] += 1
        seen: set[int] = set()
        for rp in self.procs:
            pmap = rp.proc.pmap
            for va, pg in rp.pages.items():
                pte = pmap.pte(va)
                if not pg.wired:
                    if pte & PTE_WIRED:
                        raise CheckFailure(
                            "wiring",
                            f"{_where(rp, va, pg)} is not wired but its PTE is {pte_str(pte)}",
                        )
                    continue
                mpg = self._wired_page(rp, va)
                n = want[pg.key()]
                x = self.extra_wires[mpg]
                if mpg.wire_count != n + x:
                    raise CheckFailure(
                        "wiring",
                        f"{_where(rp, va, pg)}: {mpg!r} has wire_count {mpg.wire_count}, "
                        f"wired by {n} mapping(s) and {x} fault(s) on a wired entry",
                    )
                seen.add(mpg.frame)
                if pte & PTE_P:
                    if not (pte & PTE_WIRED):
                        raise CheckFailure(
                            "wiring", f"{_where(rp, va, pg)} is wired but its PTE is {pte_str(pte)}"
                        )
                    if pte_frame(pte) != mpg.frame:
                        raise CheckFailure(
                            "wiring", f"{_where(rp, va, pg)}: PTE {pte_str(pte)}, not {mpg!r}"
                        )
        for frame, mpg in self.m.uvm.pages.items():
            if not (frame in seen or mpg.wire_count == self.extra_wires[mpg]):
                raise CheckFailure(
                    "wiring",
                    f"{mpg!r} is wired by no wired mapping"
                    f" (and {self.extra_wires[mpg]} fault(s) on a wired entry)",
                )

    def check_all_memory(self) -> None:
        """Every readable page of every process holds what the reference says
        (and one wholly past end of file faults)."""
        for rp in self.procs:
            for va, pg in sorted(rp.pages.items()):
                if not pg.prot & int(VM_PROT_READ):
                    continue
                wf = self._wired_faults(rp, va, self.ps, write=False)
                if pg.beyond_eof():
                    try:
                        got = rp.proc.read(va, self.ps)
                    except SegmentationFault as e:
                        if e.va != va:
                            raise CheckFailure(
                                "fault", f"read fault at {e.va:#x}, expected at {va:#x}"
                            ) from e
                        continue
                    raise CheckFailure(
                        "fault",
                        f"{rp.proc.name} page {va:#x} ({pg.kind}) is past end of file but "
                        f"read {got[:8]!r}...",
                    )
                got = rp.proc.read(va, self.ps)
                self._note_wired_faults(rp, wf, None)
                want = bytes(pg.view())
                if got != want:
                    i = next(i for i in range(self.ps) if got[i] != want[i])
                    raise CheckFailure(
                        "bytes",
                        f"{rp.proc.name} page {va:#x} ({pg.kind}): byte {i} is {got[i]:#x}, "
                        f"the reference says {want[i]:#x}",
                    )

    # -------------------------------------------------------- checked accesses

    def _read_checked(self, rp: RefProc, va: int, n: int, cpu: int) -> None:
        wf = self._wired_faults(rp, va, n, write=False)
        bad = self._expect_access(rp, va, n, write=False)
        self._touch(rp, va, n)
        if bad is not None:
            try:
                got = rp.proc.read(va, n, cpu=cpu)
            except SegmentationFault as e:
                if e.va != bad:
                    raise CheckFailure("fault", f"read fault at {e.va:#x}, not {bad:#x}") from e
                self._note_wired_faults(rp, wf, bad)
                if rp.pages.get(bad) is not None and rp.pages[bad].beyond_eof():
                    event("read: SIGSEGV past EOF")
                return
            raise CheckFailure(
                "fault",
                f"read of {n} bytes at {va:#x} gave {got[:8]!r}...; expected SIGSEGV at {bad:#x}",
            )
        got = rp.proc.read(va, n, cpu=cpu)
        self._note_wired_faults(rp, wf, None)
        want = self._ref_bytes(rp, va, n)
        for pva in self._pages_of(va, n):
            pg = rp.pages[pva]
            if pg.file is not None and pg.foff >= len(pg.file.mem):
                event("read: a private copy past EOF")
        if got != want:
            i = next(i for i in range(n) if got[i] != want[i])
            raise CheckFailure(
                "bytes",
                f"{rp.proc.name} read {n} bytes at {va:#x} on CPU {cpu}: byte {i} "
                f"(va {va + i:#x}) is {got[i]:#x}, the reference says {want[i]:#x}",
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

    def _write_checked(self, rp: RefProc, va: int, payload: bytes, cpu: int) -> None:
        n = len(payload)
        wf = self._wired_faults(rp, va, n, write=True)
        bad = self._expect_access(rp, va, n, write=True)
        self._touch(rp, va, n)
        try:
            rp.proc.write(va, payload, cpu=cpu)
        except SegmentationFault as e:
            if bad is None:
                raise CheckFailure("fault", f"write at {va:#x} ({n} bytes) raised {e}") from e
            if e.va != bad:
                raise CheckFailure("fault", f"write fault at {e.va:#x}, not {bad:#x}") from e
            self._note_wired_faults(rp, wf, bad)
            return
        if bad is not None:
            raise CheckFailure(
                "fault", f"write of {n} bytes at {va:#x} worked; expected SIGSEGV at {bad:#x}"
            )
        self._note_wired_faults(rp, wf, None)
        pos, end, i = va, va + n, 0
        while pos < end:
            base = pos - pos % self.ps
            take = min(end, base + self.ps) - pos
            rp.pages[base].view()[pos - base : pos - base + take] = payload[i : i + take]
            pos += take
            i += take

    def _expect_mlock(self, rp: RefProc, vas: list[int]) -> int | None:
        """The errno mlock must fail with (None: success), applying the
        copy-on-write resolutions of the wiring faults it takes."""
        if any(v not in rp.pages for v in vas):
            return ENOMEM
        if any(rp.pages[v].prot == 0 for v in vas):
            return EINVAL
        for v in vas:
            pg = rp.pages[v]
            if pg.wired:
                continue  # uvm_map_pageable pass 2 faults only entries wired for the first time
            if pg.beyond_eof():
                return EFAULT
            pg.prepare_write()  # cow_now: max_protection has VM_PROT_WRITE
        return None

    def teardown(self) -> None:
        if self.closed:
            return
        try:
            self.check_all_memory()
            for f in self.files:
                if f.vn.read(0, f.size + 1) != f.data:
                    raise CheckFailure("bytes", f"read(2) of all of {f.vn.name}")
            for rp in list(self.procs):
                rp.proc.exit()
            self.procs.clear()
            check_invariants(self.m)
            uvm = self.m.uvm
            zobj = uvm.zero_object
            kept = [
                pg
                for pg in uvm.pages.values()
                if isinstance(pg.uobject, VnodeObject) or (zobj is not None and pg.uobject is zobj)
            ]
            cache = sum(len(f.vn.uo_pages) for f in self.files)
            leftover = [pg for pg in uvm.pages.values() if pg not in kept]
            if leftover:
                raise CheckFailure(
                    "leak", f"pages still allocated after every process exited: {leftover}"
                )
            if not (len(kept) >= cache and uvm.allocated == len(kept)):
                raise CheckFailure(
                    "leak", "len(kept) >= cache and uvm.allocated == len(kept) failed"
                )
            if uvm.free_count != uvm.npages - len(kept):
                raise CheckFailure("leak", "uvm.free_count == uvm.npages - len(kept) failed")
            # Only the extra wirings of faults on wired entries outlive every
            # mapping (on vnode pages, which stay cached).  Once a truncate
            # freed a wired page the count is unknown: a refault through the
            # still-wired entry wires the new page, and munmap may unwire it.
            if self.wiring_exact:
                wired = [
                    (pg, self.extra_wires[pg])
                    for pg in kept
                    if pg.wire_count != self.extra_wires[pg]
                ]
                if wired:
                    raise CheckFailure(
                        "wiring",
                        "pages wired otherwise than by their fault(s) on a wired entry after"
                        f" every process exited: {wired}",
                    )
        finally:
            self.closed = True
            self.m.close()


__all__ = ["VMModel"]
