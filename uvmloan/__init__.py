"""uvmloan: an executable model of NetBSD's UVM page loaning.

Pages live in a real mmap'd arena moved by a C extension; above it sit the
x86 pmap with per-CPU TLBs and batched shootdowns, the machine-independent
VM, ``uvm_loan`` and (in ``netstack``) a simulated TCP/UDP stack whose send
buffers borrow user pages.
"""

from . import experiments, inject, trace
from ._version import __version__
from .anon import Amap, Anon, uvm_anfree
from .borrow import KernelLoan
from .errors import (
    FrameRangeError,
    InvariantViolation,
    KernelAssertion,
    MachineClosed,
    PhysMemError,
    SegmentationFault,
    UVMError,
    UVMLoanError,
)
from .invariants import check_invariants
from .kernapi import (
    pmap_clear_modify,
    pmap_enter,
    pmap_extract,
    pmap_is_modified,
    pmap_is_referenced,
    pmap_page_protect,
    pmap_protect,
    pmap_remove,
    pmap_update,
    uvm_fault,
    uvm_loan,
    uvm_pagealloc,
    uvm_pagefree,
    uvm_unloan,
)
from .loan import (
    uvm_loanbreak,
    uvm_loanbreak_anon,
    uvm_loanuobjpages,
)
from .machine import Machine, parse_size
from .map import MapEntry, VMMap
from .object import AnonObject, UVMObject, VnodeObject
from .page import Page
from .param import (
    MAP_ANON,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PG,
    UVM_LOAN_TOANON,
    UVM_LOAN_TOPAGE,
    UVM_PGA_USERESERVE,
    UVM_PGA_ZERO,
    VM_PROT_ALL,
    VM_PROT_EXECUTE,
    VM_PROT_NONE,
    VM_PROT_READ,
    VM_PROT_WRITE,
    VMProt,
)
from .physmem import PhysMem
from .process import Process
from .profile import PROFILES, CostModel, NicModel, Profile, get_profile, list_profiles
from .profile_toml import load_profile

__all__ = [
    "MAP_ANON",
    "MAP_FIXED",
    "MAP_PRIVATE",
    "MAP_SHARED",
    "PAGE_SIZE",
    "PG",
    "PROFILES",
    "UVM_LOAN_TOANON",
    "UVM_LOAN_TOPAGE",
    "UVM_PGA_USERESERVE",
    "UVM_PGA_ZERO",
    "VM_PROT_ALL",
    "VM_PROT_EXECUTE",
    "VM_PROT_NONE",
    "VM_PROT_READ",
    "VM_PROT_WRITE",
    "Amap",
    "Anon",
    "AnonObject",
    "CostModel",
    "FrameRangeError",
    "InvariantViolation",
    "KernelAssertion",
    "KernelLoan",
    "Machine",
    "MachineClosed",
    "MapEntry",
    "NicModel",
    "Page",
    "PhysMem",
    "PhysMemError",
    "Process",
    "Profile",
    "SegmentationFault",
    "UVMError",
    "UVMLoanError",
    "UVMObject",
    "VMMap",
    "VMProt",
    "VnodeObject",
    "__version__",
    "check_invariants",
    "experiments",
    "get_profile",
    "inject",
    "list_profiles",
    "load_profile",
    "parse_size",
    "pmap_clear_modify",
    "pmap_enter",
    "pmap_extract",
    "pmap_is_modified",
    "pmap_is_referenced",
    "pmap_page_protect",
    "pmap_protect",
    "pmap_remove",
    "pmap_update",
    "trace",
    "uvm_anfree",
    "uvm_fault",
    "uvm_loan",
    "uvm_loanbreak",
    "uvm_loanbreak_anon",
    "uvm_loanuobjpages",
    "uvm_pagealloc",
    "uvm_pagefree",
    "uvm_unloan",
]
