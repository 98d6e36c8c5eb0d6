"""Growing a file makes the bytes past its old end file data, and fsync must
write them (specs/map.md, "Growing a file").

The VM state machine found it: a store through a shared file mapping past
end of file, an fsync (the page is cleaned: CLEAN, or UNKNOWN if wired),
then ftruncate or write(2) grows the file.  read(2) showed the stored byte
but the next fsync skipped the page, so the disk kept a zero there.  FFS
marks the page holding the old end of file dirty when the file grows
(``ufs_balloc_range``, ufs_inode.c 1.95, called by ``ffs_truncate`` and
``ffs_write``).  The four store-past-EOF tests failed before the fix; the
last one guards its limit (no page is brought in for the grown range).
"""

from __future__ import annotations

import pytest
from helpers import PS, machine_fixture

from uvmloan import MAP_SHARED, Machine
from uvmloan.object import VnodeObject
from uvmloan.page import UVM_PAGE_STATUS_CLEAN, UVM_PAGE_STATUS_DIRTY, UVM_PAGE_STATUS_UNKNOWN

m = machine_fixture(ncpus=1, memory="1M", check=True)

HALF = PS // 2


def _store_past_eof_then_fsync(m: Machine, wired: bool) -> VnodeObject:
    """A one-byte file ``a``; ``X`` stored at offset PS/2 through a shared
    mapping (past EOF, in the last page); fsync.  The disk holds ``a``."""
    vn = m.vnode(b"a", name="f")
    p = m.spawn("p")
    va = p.mmap(PS, flags=MAP_SHARED, obj=vn)
    if wired:
        p.mlock(va, PS)
    p.write(va + HALF, b"X")
    vn.fsync()
    pg = vn.uvm_pagelookup(0)
    assert pg is not None
    # genfs_do_putpages: write-protected and CLEAN, or (wired, cleanall
    # false) left writable and UNKNOWN with the modified bit cleared.
    want = UVM_PAGE_STATUS_UNKNOWN if wired else UVM_PAGE_STATUS_CLEAN
    assert m.uvm.uvm_pagegetdirty(pg) == want
    assert vn.backing == bytearray(b"a")
    return vn


@pytest.mark.parametrize("wired", [False, True], ids=["unwired", "wired"])
def test_fsync_after_truncate_up_writes_what_a_store_put_past_the_old_eof(
    m: Machine, wired: bool
) -> None:
    vn = _store_past_eof_then_fsync(m, wired)
    vn.truncate(PS)
    # The page cache's bytes are file data now: a, zeros, X at PS/2, zeros.
    want = b"a" + bytes(HALF - 1) + b"X" + bytes(HALF - 1)
    assert vn.read(0, PS) == want
    pg = vn.uvm_pagelookup(0)
    assert pg is not None and m.uvm.uvm_pagegetdirty(pg) == UVM_PAGE_STATUS_DIRTY
    vn.fsync()
    assert vn.backing == bytearray(want)


@pytest.mark.parametrize("wired", [False, True], ids=["unwired", "wired"])
def test_fsync_after_write_past_eof_writes_what_a_store_put_past_the_old_eof(
    m: Machine, wired: bool
) -> None:
    vn = _store_past_eof_then_fsync(m, wired)
    # write(2) of "Z" at PS + 10: the file is PS + 11 bytes; the rest of
    # page 0 keeps the page cache's bytes, page 1 is zeros then Z.
    assert vn.write(PS + 10, b"Z") == 1
    want = b"a" + bytes(HALF - 1) + b"X" + bytes(HALF - 1) + bytes(10) + b"Z"
    assert vn.read(0, 2 * PS) == want
    vn.fsync()
    assert vn.backing == bytearray(want)


def test_truncate_up_with_the_last_page_not_resident_pages_nothing_in(m: Machine) -> None:
    """Nothing is past EOF on disk but zeros, so the grown range is zeros
    and no page is brought in for it."""
    vn = m.vnode(b"abc", name="f")
    vn.truncate(PS + 1)
    assert len(vn.uo_pages) == 0
    assert vn.read(0, PS + 1) == b"abc" + bytes(PS - 2)
    vn.fsync()
    assert vn.backing == bytearray(b"abc" + bytes(PS - 2))
