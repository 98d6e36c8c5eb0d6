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

from .mmu import MMU
from .page import PageAllocator
from .physmem import PhysMem
from .pmap.cpu import CPU, Platform
from .pmap.pmap import Pmap, PmapModule
from .profile import Profile, get_profile
from .trace import Event, JSONLinesSink, Tracer

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(size: int | str) -> int:
    """"64M", "1G", "512k" or an int number of bytes."""
    if isinstance(size, bool):
        raise TypeError("memory must be a size like '64M' or a number of bytes")
    if isinstance(size, int):
        return size
    if not isinstance(size, str):
        raise TypeError(f"memory must be a size like '64M' or an int, not {type(size).__name__}")
    m = _SIZE_RE.match(size)
    if not m:
        raise ValueError(f"cannot parse memory size {size!r}; use e.g. '64M', '1G' or bytes")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _make_tracer(trace: bool | str | Path | Tracer) -> tuple[Tracer, JSONLinesSink | None]:
    if isinstance(trace, Tracer):
        return trace, None
    if trace is False or trace == "off":
        return Tracer(on=False), None
    if trace is True or trace == "counters":
        return Tracer(), None
    if trace == "record":
        t = Tracer()
        t.record()
        return t, None
    if isinstance(trace, str | Path):
        t = Tracer()
        sink = JSONLinesSink(trace)
        t.add_sink(sink)
        return t, sink
    raise ValueError(
        f"trace must be 'off', 'counters', 'record', a JSON Lines path or a Tracer, not {trace!r}"
    )


class Machine:
    """A simulated multiprocessor running the modelled NetBSD kernel.

    ``Machine(ncpus=2, memory="64M", profile="netbsd-10", trace="record")``.
    ``profile`` is a name or a Profile; keyword ``profile_overrides`` change
    single fields (``{"tp_maxva": 7}``).
    """

    def __init__(
        self,
        ncpus: int = 1,
        memory: int | str | None = None,
        *,
        npages: int | None = None,
        page_size: int | None = None,
        profile: str | Profile = "netbsd-10",
        profile_overrides: dict[str, Any] | None = None,
        trace: bool | str | Path | Tracer = "counters",
    ) -> None:
        if not isinstance(ncpus, int) or isinstance(ncpus, bool) or not 1 <= ncpus <= 256:
            raise ValueError(f"ncpus must be an int from 1 to 256, got {ncpus!r}")
        overrides = dict(profile_overrides or {})
        if page_size is not None:
            overrides["page_size"] = page_size
        prof = get_profile(profile, **overrides)
        ps = prof.page_size
        if memory is not None and npages is not None:
            raise ValueError("give memory or npages, not both")
        if npages is None:
            nbytes = parse_size(memory if memory is not None else "64M")
            if nbytes <= 0 or nbytes % ps:
                raise ValueError(f"memory {memory!r} must be a positive multiple of the page size {ps}")
            npages = nbytes // ps
        if not isinstance(npages, int) or isinstance(npages, bool) or npages < 1:
            raise ValueError(f"npages must be a positive int, got {npages!r}")
        self.profile: Profile = prof
        self.tracer, self._sink = _make_tracer(trace)
        self.physmem = PhysMem(npages, ps)
        self.platform = Platform.build(prof, self.physmem, self.tracer, ncpus)
        self.uvm = PageAllocator(self.platform, npages, ps)
        self.pmap = PmapModule(self.platform, self.uvm.phys_to_page)
        self.mmu = MMU(self.platform, self.pmap)

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
        """Recorded events (empty unless built with trace='record' or after record())."""
        return self.tracer.events if self.tracer.events is not None else []

    def pmap_kernel(self) -> Pmap:
        return self.pmap.kernel

    def cpu(self, index: int) -> CPU:
        return self.platform.cpu(index)

    @contextmanager
    def on_cpu(self, index: int) -> Iterator[CPU]:
        with self.platform.on_cpu(index) as cpu:
            yield cpu

    @property
    def curcpu(self) -> CPU:
        return self.platform.curcpu()

    @property
    def now(self) -> int:
        """The latest clock of any CPU (simulated ns)."""
        return max(c.clock for c in self.platform.cpus)

    def close(self) -> None:
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
