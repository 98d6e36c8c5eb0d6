"""Constants with NetBSD's names and values.

Sources: ``sys/uvm/uvm_param.h`` / ``uvm_prot.h`` (VM_PROT_*),
``sys/sys/mman.h`` (MAP_*), ``sys/uvm/uvm_loan.h`` (UVM_LOAN_*),
``sys/uvm/uvm_page.h`` rev 1.109 (PG_*).
"""

from __future__ import annotations

from errno import EACCES, EAGAIN, EBUSY, EFAULT, EINVAL, EIO, ENOBUFS, ENOENT, ENOMEM, ERESTART

PAGE_SIZE = 4096
"""Default page size; a Machine may choose another power of two >= 512."""


class _Bits:
    """A namespace of flag bits kept as plain ints.

    The model tests and sets these bits on every fault and page operation;
    plain ints keep that at C speed (enum.IntFlag arithmetic is a Python call
    per operation).  ``names(v)`` spells a value for people.
    """

    @classmethod
    def bit(cls, name: str) -> int:
        """The value of a flag by name ("ANON" -> PG.ANON); KeyError if unknown."""
        v = vars(cls).get(name)
        if not name.isupper() or not isinstance(v, int):
            raise KeyError(f"no flag {name!r} in {cls.__name__}")
        return v

    @classmethod
    def names(cls, value: int) -> str:
        parts = [
            name
            for name, bit in vars(cls).items()
            if name.isupper()
            and isinstance(bit, int)
            and bit
            and bit & (bit - 1) == 0
            and value & bit
        ]
        return "|".join(parts) if parts else "0"


class VMProt(_Bits):
    """vm_prot_t bits (``uvm_prot.h``)."""

    NONE = 0x0
    READ = 0x1
    WRITE = 0x2
    EXECUTE = 0x4
    ALL = 0x7


VM_PROT_NONE = VMProt.NONE
VM_PROT_READ = VMProt.READ
VM_PROT_WRITE = VMProt.WRITE
VM_PROT_EXECUTE = VMProt.EXECUTE
VM_PROT_ALL = VMProt.READ | VMProt.WRITE | VMProt.EXECUTE

# mmap(2) flags (sys/sys/mman.h).
MAP_SHARED = 0x0001
MAP_PRIVATE = 0x0002
MAP_FIXED = 0x0010
MAP_ANON = 0x1000

# uvm_loan(9) flags (sys/uvm/uvm_loan.h).
UVM_LOAN_TOANON = 0x1
UVM_LOAN_TOPAGE = 0x2


class PG(_Bits):
    """vm_page flags, ``sys/uvm/uvm_page.h`` rev 1.109."""

    NONE = 0
    CLEAN = 0x00000001
    DIRTY = 0x00000002
    BUSY = 0x00000004
    PAGEOUT = 0x00000010
    RELEASED = 0x00000020
    FAKE = 0x00000040
    RDONLY = 0x00000080
    TABLED = 0x00000200
    AOBJ = 0x00000400
    ANON = 0x00000800
    FILE = 0x00001000
    READAHEAD = 0x00002000
    FREE = 0x00004000
    MARKER = 0x00008000
    PAGER1 = 0x00010000

    STAT = 0x00000800 | 0x00000400 | 0x00001000  # ANON | AOBJ | FILE


PG_CLEAN = PG.CLEAN
PG_DIRTY = PG.DIRTY
PG_BUSY = PG.BUSY
PG_RELEASED = PG.RELEASED
PG_FAKE = PG.FAKE
PG_RDONLY = PG.RDONLY
PG_TABLED = PG.TABLED
PG_AOBJ = PG.AOBJ
PG_ANON = PG.ANON
PG_FILE = PG.FILE
PG_FREE = PG.FREE

# uvm_pagealloc flags (sys/uvm/uvm_page.h).
UVM_PGA_USERESERVE = 0x0001
UVM_PGA_ZERO = 0x0002

__all__ = [
    "EACCES",
    "EAGAIN",
    "EBUSY",
    "EFAULT",
    "EINVAL",
    "EIO",
    "ENOBUFS",
    "ENOENT",
    "ENOMEM",
    "ERESTART",
    "MAP_ANON",
    "MAP_FIXED",
    "MAP_PRIVATE",
    "MAP_SHARED",
    "PAGE_SIZE",
    "PG",
    "PG_ANON",
    "PG_AOBJ",
    "PG_BUSY",
    "PG_CLEAN",
    "PG_DIRTY",
    "PG_FAKE",
    "PG_FILE",
    "PG_FREE",
    "PG_RDONLY",
    "PG_RELEASED",
    "PG_TABLED",
    "UVM_LOAN_TOANON",
    "UVM_LOAN_TOPAGE",
    "UVM_PGA_USERESERVE",
    "UVM_PGA_ZERO",
    "VM_PROT_ALL",
    "VM_PROT_EXECUTE",
    "VM_PROT_NONE",
    "VM_PROT_READ",
    "VM_PROT_WRITE",
    "VMProt",
]
