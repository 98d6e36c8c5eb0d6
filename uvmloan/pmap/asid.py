"""ASID management of the MI ``tlb_policy="mi-asid"`` (``sys/uvm/pmap/pmap_tlb.c``).

Follows ``pmap_tlb.c`` 1.31 (2020) as built for MIPS multiprocessors
(``PMAP_TLB_NEED_SHOOTDOWN``, ``PMAP_TLB_FLUSH_ASID_ON_RESET`` false), one
TLB per CPU; the functions read the same in 1.21 (2017) and 1.44 (2021):

* ``pmap_tlb_asid_alloc``: take ``ti_asid_hint`` if free, else the lowest
  ASID not marked in ``ti_asid_bitmap``; mark it, advance the hint.
* ``pmap_tlb_pai_reset``: the pmap loses its ASID on that TLB but the ASID
  stays marked in use and its TLB entries stay (orphaned, "let natural TLB
  entry replacement flush them out"), so it is not handed to another pmap
  before the pool is exhausted.
* ``pmap_tlb_asid_acquire``: a pmap without an ASID gets one; when none is
  free (``tlbinfo_noasids_p``) the pool is reinitialised first.
* ``pmap_tlb_asid_reinitialize(ti, TLBINV_NOBODY)``: clear the bitmap, mark
  the ASIDs still present in the TLB (``tlb_record_asids``); if they are half
  of the pool or more, invalidate every user ASID's entries and clear the
  bitmap again.  Then an on-processor pmap keeps its ASID (marked again), a
  pmap whose ASID is still marked keeps it, every other pmap is reset.

Safety rests on one property, checked by ``check_invariants`` (TLB2): every
ASID that tags an entry in a TLB is marked in that TLB's bitmap, so a newly
allocated ASID never finds another pmap's translations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import KernelAssertion
from ..trace import ASIDReset, TLBFlush

if TYPE_CHECKING:
    from .cpu import CPU, Platform
    from .pmap import Pmap

KERNEL_PID = 0


def pmap_tlb_pai_reset(cpu: CPU, pm: Pmap) -> int | None:
    """Retire ``pm``'s ASID on ``cpu`` (returned; None if it had none): no
    flush, and the ASID stays marked in use."""
    return cpu.asids.pop(pm, None)


def pmap_tlb_asid_reinitialize(plat: Platform, cpu: CPU) -> None:
    """``pmap_tlb_asid_reinitialize(ti, TLBINV_NOBODY)`` on ``cpu``'s TLB."""
    cpu.asid_reinits += 1
    asid_max = plat.profile.asid_max
    found = cpu.tlb.asids_present()
    tr = plat.tracer
    if len(found) >= asid_max // 2:
        cpu.tlb.flush_user_asids()
        cpu.charge(plat.costs.tlbflush_ns)
        if tr.on:
            tr.emit(TLBFlush(cpu.clock, cpu.index, "-", False, "asid pool reinit"))
        cpu.asid_bitmap = {KERNEL_PID}
    else:
        cpu.asid_bitmap = {KERNEL_PID, *found}
    cpu.asid_hint = KERNEL_PID + 1
    for pm, asid in list(cpu.asids.items()):
        if cpu.curpmap is pm:  # on-processor: its ASID cannot change now
            cpu.asid_bitmap.add(asid)
        elif asid not in cpu.asid_bitmap:
            pmap_tlb_pai_reset(cpu, pm)
            if tr.on:
                tr.emit(ASIDReset(cpu.clock, cpu.index, pm.name, cpu.index))


def pmap_tlb_asid_alloc(plat: Platform, cpu: CPU, pm: Pmap) -> int:
    """``pmap_tlb_asid_alloc``: the hint if free, else the lowest free ASID."""
    asid_max = plat.profile.asid_max
    bitmap = cpu.asid_bitmap
    hint = cpu.asid_hint
    if hint > asid_max or hint in bitmap:
        hint = next((a for a in range(KERNEL_PID + 1, asid_max + 1) if a not in bitmap), 0)
        if not hint:
            raise KernelAssertion(f"pmap_tlb_asid_alloc: no free ASID on CPU {cpu.index}")
    bitmap.add(hint)
    cpu.asid_hint = hint + 1
    cpu.asids[pm] = hint
    return hint


def pmap_tlb_asid_acquire(plat: Platform, cpu: CPU, pm: Pmap) -> int:
    """The ASID of ``pm`` on ``cpu``, allocated (after a reinit if the pool
    is exhausted) if it has none."""
    asid = cpu.asids.get(pm)
    if asid is not None:
        return asid
    if len(cpu.asid_bitmap) - 1 >= plat.profile.asid_max:  # tlbinfo_noasids_p
        pmap_tlb_asid_reinitialize(plat, cpu)
    return pmap_tlb_asid_alloc(plat, cpu, pm)
