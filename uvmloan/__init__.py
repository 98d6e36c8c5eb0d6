"""uvmloan: an executable model of NetBSD's UVM page loaning.

Pages live in a real mmap'd arena moved by a C extension; above it sit the
x86 pmap with per-CPU TLBs and batched shootdowns, the machine-independent
VM, ``uvm_loan`` and (in ``netstack``) a simulated TCP/UDP stack whose send
buffers borrow user pages.
"""

from .errors import (
    FrameRangeError,
    InvariantViolation,
    KernelAssertion,
    PhysMemError,
    SegmentationFault,
    UVMError,
    UVMLoanError,
)
from .machine import Machine, parse_size
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
from .profile import PROFILES, CostModel, Profile, get_profile

__version__ = "0.1.0"

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
    "CostModel",
    "FrameRangeError",
    "InvariantViolation",
    "KernelAssertion",
    "Machine",
    "PhysMem",
    "PhysMemError",
    "Profile",
    "SegmentationFault",
    "UVMError",
    "UVMLoanError",
    "VMProt",
    "__version__",
    "get_profile",
    "parse_size",
]
