"""Process: a user address space scheduled on the machine's CPUs.

The facade research code uses: ``mmap``/``munmap``/``mprotect``/``mlock``/
``munlock``, ``read``/``write`` as user loads and stores through the MMU (so
they fault exactly as a program would), ``fork``, ``exit`` and ``run_on``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import KernelAssertion, SegmentationFault, UVMError
from .map import (
    MAP_INHERIT_COPY,
    MAP_INHERIT_SHARE,
    VMMap,
    check_map_args,
    uvmspace_fork,
    uvmspace_fork_reserve,
)
from .object import UVMObject, VnodeObject
from .param import (
    MAP_ANON,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    VM_PROT_ALL,
    VM_PROT_READ,
    VM_PROT_WRITE,
    VMProt,
)
from .pmap.cpu import TLBState

# A module constant: ``TLBState.VALID`` is a metaclass attribute lookup, and
# every user load and store tests it.
_VALID = TLBState.VALID

if TYPE_CHECKING:
    from .machine import Machine
    from .pmap.pmap import Pmap

_KNOWN_FLAGS = MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANON


class Process:
    """One process: a vm_map over its own pmap, running on a CPU."""

    def __init__(self, machine: Machine, name: str, cpu: int) -> None:
        # Validate the CPU before anything is allocated, so a bad argument
        # leaves no pmap or pid behind.
        cpu_index = machine.platform.cpu(cpu).index
        self.machine = machine
        self.name = name
        self.pid = machine._next_pid()
        pm = machine.pmap.pmap_create(name)
        prof = machine.profile
        self.map = VMMap(name, pm, machine.uvm, prof.vm_min_user_address, prof.vm_maxuser_address)
        self.cpu = cpu_index
        self.alive = True
        machine._maps[pm] = self.map

    def __repr__(self) -> str:
        state = "running" if self.alive else "exited"
        n = len(self.map.entries)
        return f"<Process {self.pid} {self.name} on CPU {self.cpu} {state}, {n} entries>"

    @property
    def pmap(self) -> Pmap:
        return self.map.pmap

    # --------------------------------------------------------------- checks

    def _alive(self, what: str) -> None:
        self.machine._check_open(what)
        if not self.alive:
            raise ValueError(f"{what}: process {self.name} has exited")

    def _cpu_arg(self, cpu: int | None) -> int:
        if cpu is None:
            return self.cpu
        return self.machine.platform.cpu(cpu).index

    def _page_range(self, va: object, length: object, what: str) -> tuple[int, int]:
        if not isinstance(va, int) or isinstance(va, bool):
            raise TypeError(f"{what}: address must be an int, not {type(va).__name__}")
        if not isinstance(length, int) or isinstance(length, bool):
            raise TypeError(f"{what}: length must be an int, not {type(length).__name__}")
        ps = self.machine.page_size
        if va % ps:
            raise ValueError(f"{what}: address {va:#x} is not page aligned (page size {ps})")
        if length <= 0:
            raise ValueError(f"{what}: length must be positive, got {length}")
        end = va + length + (-length) % ps
        if va < self.map.minva or end > self.map.maxva:
            raise ValueError(f"{what}: [{va:#x}, {end:#x}) is outside the user address space")
        return va, end

    # ------------------------------------------------------------- mappings

    def mmap(
        self,
        length: int,
        prot: int = VM_PROT_READ | VM_PROT_WRITE,
        flags: int = MAP_PRIVATE | MAP_ANON,
        obj: UVMObject | None = None,
        offset: int = 0,
        addr: int | None = None,
    ) -> int:
        """mmap(2).  Anonymous unless ``obj`` is given; returns the address."""
        self._alive("mmap")
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            raise ValueError(f"mmap: length must be a positive int, got {length!r}")
        pr = check_map_args(prot)
        if not isinstance(flags, int) or flags & ~_KNOWN_FLAGS:
            raise ValueError(f"mmap: unknown flags {flags!r}")
        shared, private = bool(flags & MAP_SHARED), bool(flags & MAP_PRIVATE)
        if shared == private:
            raise ValueError("mmap: exactly one of MAP_SHARED and MAP_PRIVATE is required")
        ps = self.machine.page_size
        if obj is None:
            if offset:
                raise ValueError("mmap: offset must be 0 for anonymous memory")
            flags |= MAP_ANON
        else:
            if flags & MAP_ANON:
                raise ValueError("mmap: MAP_ANON with an object")
            if not isinstance(obj, UVMObject) or obj.uvm is not self.machine.uvm:
                raise ValueError("mmap: obj must be an object of this machine (machine.vnode())")
            if not isinstance(offset, int) or offset < 0 or offset % ps:
                raise ValueError(f"mmap: offset {offset!r} must be a non-negative page multiple")
        if addr is not None:
            self._page_range(addr, length, "mmap")
        if flags & MAP_FIXED and addr is None:
            raise ValueError("mmap: MAP_FIXED needs addr")
        size = length + (-length) % ps
        uobj = obj
        if obj is None and shared:
            # Shared anonymous memory is an aobj shared by reference.
            from .object import AnonObject

            uobj = AnonObject(self.machine.uvm)
        maxprot = VM_PROT_ALL
        if isinstance(obj, VnodeObject) and shared:
            maxprot = VM_PROT_ALL
        va = self.map.uvm_map(
            size,
            uobj,
            offset,
            pr,
            maxprot,
            MAP_INHERIT_SHARE if shared else MAP_INHERIT_COPY,
            copy_on_write=private,
            addr=addr,
            fixed=bool(flags & MAP_FIXED),
        )
        if obj is None and shared and uobj is not None:
            uobj.detach()  # the map entry holds the only reference now
        return va

    def munmap(self, va: int, length: int) -> None:
        self._alive("munmap")
        start, end = self._page_range(va, length, "munmap")
        self._run_kernel(lambda: self.map.uvm_unmap(start, end))

    def mprotect(self, va: int, length: int, prot: int) -> None:
        self._alive("mprotect")
        start, end = self._page_range(va, length, "mprotect")
        pr = check_map_args(prot)
        self._run_kernel(lambda: self.map.uvm_map_protect(start, end, pr))

    def mlock(self, va: int, length: int) -> None:
        """mlock(2): fault every page in for wiring and raise its wire_count.

        A wiring fault of a writable entry is a write fault (``cow_now``), so
        copy-on-write is resolved and loans are broken first.  All-or-nothing.
        """
        self._alive("mlock")
        start, end = self._page_range(va, length, "mlock")
        self._run_kernel(lambda: self.machine._mlock(self, start, end))

    def munlock(self, va: int, length: int) -> None:
        self._alive("munlock")
        start, end = self._page_range(va, length, "munlock")
        self._run_kernel(lambda: self.machine._munlock(self, start, end))

    # ------------------------------------------------------------- accesses

    def run_on(self, cpu: int) -> None:
        """Schedule the process onto ``cpu`` (context switch if needed)."""
        self._alive("run_on")
        c = self.machine.platform.cpu(cpu)
        self.cpu = c.index
        self.machine._switch_to(self, c.index)

    # read and write are the model's hottest entry points (every user load
    # and store): they validate here once, with ``type(x) is`` tests for the
    # common exact types before the general ones, then call the MMU's
    # unchecked variants directly (no on_cpu: the accesses do not need
    # curcpu set, see read).

    def read(self, va: int, n: int, cpu: int | None = None) -> bytes:
        """A user load of ``n`` bytes at ``va`` on ``cpu`` (default: its CPU)."""
        m = self.machine
        if m._closed or not self.alive:
            self._alive("read")
        if type(va) is not int and (not isinstance(va, int) or isinstance(va, bool)):
            raise TypeError(f"read: address must be an int, not {type(va).__name__}")
        if (type(n) is not int and (not isinstance(n, int) or isinstance(n, bool))) or n < 0:
            raise ValueError(f"read: length must be a non-negative int, got {n!r}")
        c = self.cpu if cpu is None else self._cpu_arg(cpu)
        cpuinfo = m.platform.cpus[c]
        if cpuinfo.curpmap is not self.map.pmap or cpuinfo.tlbstate is not _VALID:
            m._switch_fast(self, c)  # a context switch (or pmap_load's reactivation)
        # curcpu() need not be set around the access: the MMU is given the
        # CPU, and only a fault reads plat.cur (MMU._fault makes it that CPU
        # for the handler and restores it).
        return m.mmu.load_checked(cpuinfo, va, n, True)

    def write(self, va: int, data: bytes | bytearray | memoryview, cpu: int | None = None) -> None:
        """A user store of ``data`` at ``va`` on ``cpu`` (default: its CPU)."""
        m = self.machine
        if m._closed or not self.alive:
            self._alive("write")
        if type(va) is not int and (not isinstance(va, int) or isinstance(va, bool)):
            raise TypeError(f"write: address must be an int, not {type(va).__name__}")
        if type(data) is not bytes and not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"write: data must be bytes-like, not {type(data).__name__}")
        c = self.cpu if cpu is None else self._cpu_arg(cpu)
        cpuinfo = m.platform.cpus[c]
        if cpuinfo.curpmap is not self.map.pmap or cpuinfo.tlbstate is not _VALID:
            m._switch_fast(self, c)  # a context switch (or pmap_load's reactivation)
        m.mmu.store_checked(cpuinfo, va, data, True)  # (curcpu: see read)

    # ------------------------------------------------------------ lifecycle

    def fork(self, name: str | None = None, cpu: int | None = None) -> Process:
        """fork(2): a child whose address space copies this one by inheritance."""
        self._alive("fork")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"fork: name must be a non-empty string, got {name!r}")
        m = self.machine
        cpu_index = self._cpu_arg(cpu)
        # The pages fork will copy are had before the child exists, so
        # ENOMEM leaves everything as it was (uvmspace_fork_reserve).
        self._run_kernel(lambda: uvmspace_fork_reserve(self.map))
        child = Process(m, name or f"{self.name}-child", cpu_index)
        try:
            self._run_kernel(lambda: uvmspace_fork(self.map, child.map))
        except BaseException:
            # fork1 fails (ENOMEM copying a wired entry): free what the child got.
            child._teardown()
            raise
        m.processes.append(child)
        return child

    def exit(self) -> None:
        """exit(2): unmap everything, leave every CPU, free the pmap."""
        self._alive("exit")
        self._teardown()

    def _teardown(self) -> None:
        """Unmap everything, leave every CPU, free the pmap (exit1/uvmspace_free)."""
        m = self.machine

        def teardown() -> None:
            if self.map.entries:
                first = self.map.entries.peekitem(0)[1].start
                last = self.map.entries.peekitem(-1)[1].end
                self.map.uvm_unmap(first, last)
            for cpuinfo in m.cpus:
                if cpuinfo.curpmap is self.map.pmap:
                    m.pmap.pmap_unload(cpuinfo)
            m.pmap.pmap_destroy(self.map.pmap)

        self._run_kernel(teardown)
        self.alive = False
        del m._maps[self.map.pmap]
        if self in m.processes:
            m.processes.remove(self)

    def _run_kernel(self, fn: object) -> None:
        m = self.machine
        m._switch_to(self, self.cpu)
        with m.platform.on_cpu(self.cpu):
            fn()  # type: ignore[operator]


__all__ = ["KernelAssertion", "Process", "SegmentationFault", "UVMError", "VMProt"]
