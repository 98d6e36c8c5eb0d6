"""The machine-dependent layer: pmap(9), CPUs, TLBs and shootdowns (x86)."""

from .cpu import CPU, Platform, ShootdownPacket, TLBState
from .pmap import (
    PMAP_CANFAIL,
    PMAP_WIRED,
    Pmap,
    PmapModule,
    VMPageMD,
)
from .pte import (
    PTE_A,
    PTE_D,
    PTE_G,
    PTE_NX,
    PTE_P,
    PTE_PVLIST,
    PTE_U,
    PTE_W,
    PTE_WIRED,
    pte_frame,
    pte_prot,
    pte_str,
)
from .tlb import TLB

__all__ = [
    "CPU",
    "PMAP_CANFAIL",
    "PMAP_WIRED",
    "PTE_A",
    "PTE_D",
    "PTE_G",
    "PTE_NX",
    "PTE_P",
    "PTE_PVLIST",
    "PTE_U",
    "PTE_W",
    "PTE_WIRED",
    "TLB",
    "Platform",
    "Pmap",
    "PmapModule",
    "ShootdownPacket",
    "TLBState",
    "VMPageMD",
    "pte_frame",
    "pte_prot",
    "pte_str",
]
