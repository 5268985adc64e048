"""The load test's inbound-backlog sampler (scripts/loadtest_lib/tcp_queues.py): the sock_diag
request and the parsing of its dump, and on this machine the same queues /proc/net/tcp shows."""

from __future__ import annotations

import socket
import struct
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from loadtest_lib.stats import tcp_receive_queues
from loadtest_lib.tcp_queues import (
    NLMSG_DONE,
    NLMSG_ERROR,
    SOCK_DIAG_BY_FAMILY,
    parse_dump,
    receive_queues,
    request,
)


def _message(kind: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body


def _socket_entry(sport: int, rqueue: int) -> bytes:
    sockid = struct.pack(">HH", sport, 40000) + bytes(44)
    return struct.pack("=BBBB", socket.AF_INET, 1, 0, 0) + sockid + struct.pack(
        "=IIIII", 0, rqueue, 0, 0, 0) + b"\x08\x00\x08\x00\x00\x00\x00\x00"  # an attribute


def test_the_dump_request_filters_established_ipv4_tcp_sockets_on_the_port() -> None:
    raw = request(8080)
    length, kind, flags = struct.unpack_from("=IHH", raw)
    assert (length, kind, flags & 0x301) == (len(raw), SOCK_DIAG_BY_FAMILY, 0x301)
    family, protocol, _, _, states = struct.unpack_from("=BBBBI", raw, 16)
    assert (family, protocol, states) == (socket.AF_INET, socket.IPPROTO_TCP, 1 << 1)
    assert raw.endswith(struct.pack("=BBH", 0, 0, 8080))  # the port, in the filter program


def test_parse_dump_takes_the_ports_sockets_until_done() -> None:
    data = (_message(SOCK_DIAG_BY_FAMILY, _socket_entry(8080, 120))
            + _message(SOCK_DIAG_BY_FAMILY, _socket_entry(9999, 5))
            + _message(SOCK_DIAG_BY_FAMILY, _socket_entry(8080, 0)))
    assert parse_dump(data, 8080) == ([120, 0], False)
    assert parse_dump(_message(NLMSG_DONE, bytes(4)), 8080) == ([], True)


def test_parse_dump_raises_the_kernels_error() -> None:
    with pytest.raises(OSError):
        parse_dump(_message(NLMSG_ERROR, struct.pack("=i", -22) + bytes(16)), 8080)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag is Linux's")
def test_receive_queues_are_what_proc_net_tcp_shows() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        accepted = [listener.accept()[0] for _ in clients]
        try:
            for n, client in enumerate(clients):
                client.send(b"x" * (100 * n))
            time.sleep(0.05)
            queues = sorted(receive_queues(port))
            assert queues == [0, 100, 200]
            assert queues == sorted(tcp_receive_queues(Path("/proc/net/tcp").read_text(), port))
        finally:
            for s in clients + accepted:
                s.close()
