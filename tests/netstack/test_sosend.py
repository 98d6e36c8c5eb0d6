"""sosend on one machine: the loan decision, chunking, rounding, KVA, release, errors.

A sink protocol stands in for TCP: pr_send appends to the send buffer
(what tcp_usrreq's PRU_SEND does) and the test plays the acknowledgements
with sbdrop.  Worked numbers follow NetBSD's rules (uipc_socket.c 1.246):
MHLEN 400, MINCLSIZE 857, MCLBYTES 2048, SOCK_LOAN_CHUNK 65536, pages 4096.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netstack.mbuf import M_EXT_PAGES, M_EXT_ROMAP, M_READONLY, M_TRAILINGSPACE, Mbuf, m_copydata
from netstack.sockbuf import sbappendstream, sbdrop, sbflush
from netstack.sockerr import EFAULT, ENOTCONN, EPIPE, EWOULDBLOCK, SocketError
from netstack.socket import (
    PR_CONNREQUIRED,
    SS_CANTSENDMORE,
    SS_ISCONNECTED,
    Protocol,
    Socket,
    SocketLayer,
    Uio,
    soalloc,
    soreceive,
    soreserve,
    sosend,
)
from uvmloan import Machine, check_invariants
from uvmloan.param import VM_PROT_NONE, VM_PROT_READ
from uvmloan.process import Process

PS = 4096
CHUNK = 65536


class Sink(Protocol):
    name = "sink"
    pr_flags = PR_CONNREQUIRED

    def __init__(self, hiwat: int = 200_000) -> None:
        self.hiwat = hiwat

    def attach(self, so: Socket) -> None:
        assert soreserve(so, self.hiwat, self.hiwat)
        so.so_state |= SS_ISCONNECTED

    def send(self, so: Socket, top: Mbuf, addr: object) -> None:
        sbappendstream(so.so_snd, top)


@pytest.fixture
def mach() -> Iterator[Machine]:
    # One CPU, the option off: a uniprocessor kernel loans (thresh 4096).
    m = Machine(memory="8M", profile_overrides={"multiprocessor": False})
    yield m
    check_invariants(m)
    m.close()


def setup(m: Machine, hiwat: int = 200_000, **kw: object) -> tuple[SocketLayer, Socket]:
    layer = SocketLayer.for_machine(m, **kw)  # type: ignore[arg-type]
    return layer, soalloc(layer, Sink(hiwat))


def user_buf(m: Machine, n: int, fill: bytes = b"") -> tuple[Process, int]:
    p = m.spawn("sender")
    va = p.mmap(n + (-n) % PS)
    data = fill or bytes((i * 7 + 3) & 0xFF for i in range(n))
    p.write(va, data[: n + (-n) % PS])
    return p, va


def send(so: Socket, p: Process, va: int, n: int) -> Uio:
    uio = Uio(p.map, va, n, proc=p)
    with so.machine.on_cpu(0):
        sosend(so, uio)
    return uio


def sosend_counts(m: Machine) -> dict[str, int]:
    return {k[len("sosend ") :]: v for k, v in m.counters.items() if k.startswith("sosend ")}


def release_all(layer: SocketLayer, so: Socket) -> None:
    with so.machine.on_cpu(0):
        sbflush(so.so_snd)
        layer.run_deferred()


def test_multiprocessor_kernel_never_loans() -> None:
    # netbsd-10 is built with options MULTIPROCESSOR: sock_loan_thresh -1,
    # even on a single CPU.
    m = Machine(ncpus=1, memory="8M")
    try:
        layer, so = setup(m)
        assert layer.sock_loan_thresh == -1
        p, va = user_buf(m, 131072)
        send(so, p, va, 131072)
        # 131072 / MCLBYTES clusters, no uvm_loan call at all.
        assert sosend_counts(m) == {"copy big": 64}
        assert m.counters["loan"] == 0 and m.counters["pmap kenter_pa"] == 0
        assert so.so_snd.sb_cc == 131072
        release_all(layer, so)
        layer.pool.check_leaks()
        check_invariants(m)
    finally:
        m.close()


def test_uniprocessor_loans_64k_chunks(mach: Machine) -> None:
    layer, so = setup(mach)
    assert layer.sock_loan_thresh == 4096
    p, va = user_buf(mach, 131072)
    send(so, p, va, 131072)
    assert sosend_counts(mach) == {"loan big": 2}
    assert mach.counters["loan"] == 32  # 2 chunks x 16 pages
    ms = so.so_snd.mbufs()
    assert [mm.m_len for mm in ms] == [CHUNK, CHUNK]
    for mm in ms:
        assert mm.m_flags & (M_EXT_PAGES | M_EXT_ROMAP) == M_EXT_PAGES | M_EXT_ROMAP
        assert M_READONLY(mm) and M_TRAILINGSPACE(mm) == 0
    assert layer.socurkva == 2 * CHUNK
    # One pmap_update(pmap_kernel()) per chunk after its kenters.
    assert mach.counters["pmap kenter_pa"] == 32
    release_all(layer, so)
    assert layer.socurkva == 0 and not mach.kernel_loans
    layer.pool.check_leaks()


def test_unaligned_buffer_rounds_to_pages(mach: Machine) -> None:
    layer, so = setup(mach)
    p, base = user_buf(mach, 77824)
    va = base + 100
    send(so, p, va, 70000)
    # Chunk 1: 65536 bytes at offset 100 span trunc_page..round_page of
    # [base+100, base+65636): 17 pages.  Chunk 2: the 4464 left (>= 4096)
    # at base+65636 spans pages 16 and 17: 2 pages (page 16 lent twice).
    assert sosend_counts(mach) == {"loan big": 2}
    assert mach.counters["loan"] == 19
    assert layer.socurkva == (17 + 2) * PS
    ms = so.so_snd.mbufs()
    assert [mm.m_len for mm in ms] == [65536, 4464]
    want = bytes((i * 7 + 3) & 0xFF for i in range(77824))[100:70100]
    assert m_copydata(ms[0], 0, 65536) + m_copydata(ms[1], 0, 4464) == want
    # The 100 bytes before the buffer share its first page: write-protected
    # too, so the owner's store there breaks the loan.
    breaks = mach.counters["loan.break"]
    p.write(base, b"Z")
    assert mach.counters["loan.break"] == breaks + 1
    release_all(layer, so)
    assert layer.socurkva == 0
    layer.pool.check_leaks()


@pytest.mark.parametrize(
    ("tail", "counts"),
    [
        # 1000 >= MINCLSIZE and space >= MCLBYTES: one cluster.
        (1000, {"loan big": 1, "copy big": 1}),
        # 500 < MINCLSIZE: pkthdr mbufs of MHLEN 400, then 100.
        (500, {"loan big": 1, "copy small": 2}),
        # 4095 < thresh: clusters of 2048 + 2047.
        (4095, {"loan big": 1, "copy big": 2}),
        # exactly the threshold: loaned.
        (4096, {"loan big": 2}),
    ],
)
def test_tail_below_threshold_is_copied(mach: Machine, tail: int, counts: dict[str, int]) -> None:
    layer, so = setup(mach)
    n = CHUNK + tail
    p, va = user_buf(mach, n)
    send(so, p, va, n)
    assert sosend_counts(mach) == counts
    assert so.so_snd.sb_cc == n
    release_all(layer, so)
    layer.pool.check_leaks()


def test_space_limits_the_chunk_and_nonblocking_send_is_partial(mach: Machine) -> None:
    layer, so = setup(mach, hiwat=8192)
    p, va = user_buf(mach, CHUNK)
    uio = Uio(p.map, va, CHUNK, proc=p)
    with mach.on_cpu(0), pytest.raises(SocketError) as ei:
        sosend(so, uio, flags=0x80)  # MSG_DONTWAIT
    assert ei.value.errno == EWOULDBLOCK
    # sbspace = min(8192, 2 * 8192) took one 8192-byte loan.
    assert uio.iov_len == CHUNK - 8192
    assert sosend_counts(mach) == {"loan big": 1}
    assert mach.counters["loan"] == 2
    release_all(layer, so)
    layer.pool.check_leaks()


def test_kva_limit_falls_back_to_copy(mach: Machine) -> None:
    layer, so = setup(mach)
    layer.somaxkva = 2 * CHUNK
    p, va = user_buf(mach, 3 * CHUNK)
    send(so, p, va, 3 * CHUNK)
    # Two chunks fill somaxkva.  The third 64 KiB: each of the 31 mbufs
    # built while iov_len and space are still >= 4096 waits for KVA ("kva
    # limit"), nothing can free it, so it is copied: 32 clusters.
    assert sosend_counts(mach) == {"loan big": 2, "kva limit": 31, "copy big": 32}
    assert layer.socurkva == 2 * CHUNK
    release_all(layer, so)
    layer.pool.check_leaks()


def test_overwrite_after_send_keeps_old_bytes_until_acked(mach: Machine) -> None:
    layer, so = setup(mach)
    p, va = user_buf(mach, CHUNK, fill=b"A" * CHUNK)
    send(so, p, va, CHUNK)
    pages_before = mach.uvm.allocated
    p.write(va, b"B" * CHUNK)
    # Every page was lent: 16 breaks, 16 fresh copies for the process.
    assert mach.counters["loan.break"] == 16
    assert mach.uvm.allocated == pages_before + 16
    assert m_copydata(so.so_snd.sb_mb, 0, CHUNK) == b"A" * CHUNK  # type: ignore[arg-type]
    check_invariants(mach)
    # Acknowledge half: trimmed in place, the loan stays.
    with mach.on_cpu(0):
        sbdrop(so.so_snd, 4096)
        layer.run_deferred()
    assert mach.kernel_loans and so.so_snd.sb_cc == CHUNK - 4096
    # Acknowledge the rest: soloanfree -> sopendfree -> the orphans are freed.
    with mach.on_cpu(0):
        sbdrop(so.so_snd, CHUNK - 4096)
        assert layer.so_pendfree and mach.kernel_loans  # queued, not yet freed
        layer.run_deferred()
    assert not mach.kernel_loans and layer.socurkva == 0
    assert mach.uvm.allocated == pages_before
    layer.pool.check_leaks()


def test_2002_per_socket_pendfree_drained_at_next_call(mach: Machine) -> None:
    layer, so = setup(mach, pendfree_style="per-socket")
    p, va = user_buf(mach, 2 * CHUNK)
    send(so, p, va, CHUNK)
    with mach.on_cpu(0):
        sbdrop(so.so_snd, CHUNK)
        layer.run_deferred()
    # uipc_socket.c 1.66.4.1: queued on the socket, no thread.
    assert len(so.so_pendfree) == 1 and layer.socurkva == CHUNK
    send(so, p, va + CHUNK, CHUNK)  # sosend entry runs sodopendfree first
    assert not so.so_pendfree and layer.socurkva == CHUNK
    release_all(layer, so)
    with mach.on_cpu(0):
        from netstack.socket import sodopendfree

        sodopendfree(so)
    assert layer.socurkva == 0
    layer.pool.check_leaks()


def test_receive_into_loaned_buffer_breaks_the_loan(mach: Machine) -> None:
    layer, so = setup(mach)
    p, va = user_buf(mach, CHUNK, fill=b"S" * CHUNK)
    send(so, p, va, CHUNK)
    # Something arrives on the receive buffer; the user reads it into the
    # very buffer that is lent (copyout = a user store: the loan breaks).
    with mach.on_cpu(0):
        rm = layer.pool.m_gethdr()
        from netstack.mbuf import m_append

        m_append(rm, b"R" * 300)
        sbappendstream(so.so_rcv, rm)
        uio = Uio(p.map, va, 300, proc=p, uio_rw_write=False)
        n, _addr, _fl = soreceive(so, uio)
    assert n == 300
    assert mach.counters["loan.break"] == 1
    assert p.read(va, 301) == b"R" * 300 + b"S"
    assert m_copydata(so.so_snd.sb_mb, 0, 400) == b"S" * 400  # type: ignore[arg-type]
    release_all(layer, so)
    layer.pool.check_leaks()


def test_bad_input_errnos_and_nothing_leaks(mach: Machine) -> None:
    layer, so = setup(mach)
    p, va = user_buf(mach, 3 * PS)
    # Unmapped: uvm_loan fails, the copy faults: EFAULT.
    with pytest.raises(SocketError) as ei:
        send(so, p, 0x7000_0000_0000, 8192)
    assert ei.value.errno == EFAULT
    # Kernel address: EFAULT.
    with pytest.raises(SocketError) as ei:
        send(so, p, mach.profile.vm_min_kernel_address, 8192)
    assert ei.value.errno == EFAULT
    # PROT_NONE: EFAULT.
    p.mprotect(va, PS, VM_PROT_NONE)
    with pytest.raises(SocketError) as ei:
        send(so, p, va, 100)
    assert ei.value.errno == EFAULT
    assert so.so_snd.sb_cc == 0 and layer.socurkva == 0 and not mach.kernel_loans
    layer.pool.check_leaks()
    # Read-only memory can be sent (sosend only reads it): loaned.
    p.mprotect(va + PS, 2 * PS, VM_PROT_READ)
    send(so, p, va + PS, 2 * PS)
    assert sosend_counts(mach)["loan big"] == 1
    # Receiving into read-only memory is EFAULT.
    with mach.on_cpu(0):
        rm = layer.pool.m_gethdr()
        from netstack.mbuf import m_append

        m_append(rm, b"x" * 10)
        sbappendstream(so.so_rcv, rm)
        uio = Uio(p.map, va + PS, 10, proc=p, uio_rw_write=False)
        with pytest.raises(SocketError) as ei:
            soreceive(so, uio)
    assert ei.value.errno == EFAULT
    with mach.on_cpu(0):
        sbflush(so.so_rcv)
    release_all(layer, so)
    # Not connected / cannot send more.
    so.so_state &= ~SS_ISCONNECTED
    with pytest.raises(SocketError) as ei:
        send(so, p, va + PS, 10)
    assert ei.value.errno == ENOTCONN
    so.so_state |= SS_ISCONNECTED | SS_CANTSENDMORE
    with pytest.raises(SocketError) as ei:
        send(so, p, va + PS, 10)
    assert ei.value.errno == EPIPE
    layer.pool.check_leaks()
    assert layer.socurkva == 0 and not mach.kernel_loans


def test_bad_layer_arguments() -> None:
    m = Machine(memory="1M")
    try:
        with pytest.raises(ValueError, match="sock_loan_thresh"):
            SocketLayer.for_machine(m, sock_loan_thresh=-5)
        with pytest.raises(ValueError, match="pendfree_style"):
            SocketLayer.for_machine(m, pendfree_style="bogus")  # type: ignore[arg-type]
        # A per-host override turns loaning on for an MP kernel.
        assert SocketLayer.for_machine(m, sock_loan_thresh=4096).sock_loan_thresh == 4096
        assert SocketLayer.for_machine(m).pendfree_style == "thread"
    finally:
        m.close()
    # The 2002 behaviour is a profile switch too.
    m2 = Machine(memory="1M", profile_overrides={"sosend_pendfree": "per-socket"})
    try:
        assert SocketLayer.for_machine(m2).pendfree_style == "per-socket"
    finally:
        m2.close()
    with pytest.raises(ValueError, match="sosend_pendfree"):
        Machine(memory="1M", profile_overrides={"sosend_pendfree": "sometimes"})


def test_loan_and_release_order_of_kernel_operations() -> None:
    from netstack.socket import soloanfree
    from uvmloan.trace import KEnter, KRemove, Loan, PmapUpdate, Unloan

    m = Machine(memory="8M", profile_overrides={"multiprocessor": False}, trace="record")
    try:
        layer, so = setup(m)
        p, va = user_buf(m, 2 * CHUNK)
        m.tracer.events = []
        send(so, p, va, CHUNK)
        ev = [e for e in m.trace if isinstance(e, Loan | KEnter | PmapUpdate)]
        kinds = [type(e).__name__ for e in ev]
        # uvm_loan first (16 pages), then 16 read-only kenters, then one
        # pmap_update(pmap_kernel()) before the data is used.
        first_kenter = kinds.index("KEnter")
        assert "Loan" not in kinds[first_kenter:]
        assert kinds[first_kenter:] == ["KEnter"] * 16 + ["PmapUpdate"]
        assert all(e.prot == 0x1 for e in ev if isinstance(e, KEnter))  # VM_PROT_READ
        head = so.so_snd.sb_mb
        assert head is not None and head.m_ext is not None
        assert head.m_ext.ext_free is soloanfree and head.m_ext.ext_arg is so
        # Release: kremove, then pmap_update, then uvm_unloan, then the VA.
        m.tracer.events = []
        release_all(layer, so)
        rel = [type(e).__name__ for e in m.trace if isinstance(e, KRemove | PmapUpdate | Unloan)]
        assert rel == ["KRemove"] * 16 + ["PmapUpdate"] + ["Unloan"] * 16
        assert layer.socurkva == 0
        layer.pool.check_leaks()
    finally:
        m.close()
