"""x86-style page table entries, kept as plain integers.

A PTE is ``frame << PTE_FRAME_SHIFT | bits``, the same layout as an amd64 PTE
(``sys/arch/x86/include/pte.h``): P, W, U, A, D, G in the hardware bits,
PTE_WIRED and PTE_PVLIST in the two software-available bits NetBSD uses
(AVL1, AVL2), NX in bit 63.  Keeping PTEs as ints makes TLB snapshots free:
a TLB entry is simply the integer the walk read.
"""

from __future__ import annotations

from ..param import VMProt

PTE_P = 0x001  # present
PTE_W = 0x002  # writable
PTE_U = 0x004  # user accessible
PTE_A = 0x020  # accessed (set by the MMU on any use)
PTE_D = 0x040  # dirty (set by the MMU on the first write)
PTE_G = 0x100  # global: survives a non-global flush (kernel only)
PTE_WIRED = 0x200  # software: wired mapping (x86 PTE_AVL1)
PTE_PVLIST = 0x400  # software: managed, on the page's pv list (x86 PTE_AVL2)
PTE_NX = 1 << 63  # no execute

PTE_FRAME_SHIFT = 12
PTE_FLAGS_MASK = (1 << PTE_FRAME_SHIFT) - 1
PTE_FRAME_MASK = ~PTE_FLAGS_MASK & ((1 << 63) - 1)


def pte_frame(pte: int) -> int:
    return (pte & PTE_FRAME_MASK) >> PTE_FRAME_SHIFT


def pte_make(frame: int, prot: int) -> int:
    """The hardware bits x86 ``protection_codes[prot]`` yields, plus P."""
    pte = (frame << PTE_FRAME_SHIFT) | PTE_P
    if prot & VMProt.WRITE:
        pte |= PTE_W
    if not prot & VMProt.EXECUTE:
        pte |= PTE_NX
    return pte


def pte_prot(pte: int) -> int:
    """The permissions a PTE grants (no PTE_P means none)."""
    if not pte & PTE_P:
        return VMProt.NONE
    prot = VMProt.READ
    if pte & PTE_W:
        prot |= VMProt.WRITE
    if not pte & PTE_NX:
        prot |= VMProt.EXECUTE
    return prot


def pte_str(pte: int) -> str:
    bits = [
        name
        for bit, name in (
            (PTE_P, "P"),
            (PTE_W, "W"),
            (PTE_U, "U"),
            (PTE_A, "A"),
            (PTE_D, "D"),
            (PTE_G, "G"),
            (PTE_WIRED, "WIRED"),
            (PTE_PVLIST, "PVLIST"),
            (PTE_NX, "NX"),
        )
        if pte & bit
    ]
    return f"<pte frame={pte_frame(pte)} {'|'.join(bits) or '0'}>"
