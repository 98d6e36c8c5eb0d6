"""The two-host example for the README: TCP from a loaned buffer (it must keep running)."""

from __future__ import annotations


def test_two_host_tcp_from_a_loaned_buffer() -> None:
    from netstack.network import Network

    with Network(seed=0) as net:
        # A uniprocessor kernel: sosend loans (netbsd-10's MULTIPROCESSOR never does).
        a = net.host("a", memory="32M", profile_overrides={"multiprocessor": False})
        b = net.host("b", memory="32M")
        net.link(a, b, bandwidth_bps=100_000_000, delay_ns=50_000)

        from netstack.sockapi import SO_RCVBUF, SO_SNDBUF, SOL_SOCKET

        server = b.socket("tcp")
        server.setsockopt(SOL_SOCKET, SO_RCVBUF, 128 * 1024)  # inherited by accept
        server.bind(("", 80))
        server.listen()
        client = a.socket("tcp")
        client.setsockopt(SOL_SOCKET, SO_SNDBUF, 128 * 1024)  # room for one 64 KiB loan
        client.connect((b.addr, 80))
        conn, _peer = server.accept()

        proc = a.machine.spawn("sender")
        buf = proc.mmap(256 * 1024)
        proc.write(buf, b"x" * 256 * 1024)
        sent = client.send(proc, buf, 64 * 1024)  # one 64 KiB loan of 16 pages
        proc.write(buf, b"y" * 64 * 1024)  # overwrite at once: the loan breaks
        client.close()
        net.run_until_idle()

        got = conn.recv_bytes(128 * 1024)
        assert sent == len(got) == 64 * 1024 and got == b"x" * sent  # the old bytes
        c = a.machine.counters
        assert c["sosend loan big"] == 1 and c["loan"] == 16 and c["loan.break"] == 16
        assert not a.machine.kernel_loans  # acknowledged: loans released
        conn.close()
