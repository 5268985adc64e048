"""Unread bytes on each established TCP socket of a local port, from the kernel's sock_diag
netlink interface (what `ss` uses), with /proc/net/tcp as the fallback.

The load test samples the bridge's inbound backlog every second. /proc/net/tcp is text the
kernel formats for every socket on the machine: with 1,000 calls' sockets that is ~13 ms of
kernel time on the generator's core and ~4 ms of parsing that holds the GIL, once a second, a
stall its own lateness probe saw. A sock_diag dump filtered by the kernel to the port is
binary, 72 bytes a socket: ~4 ms of kernel time and a fraction of a ms of parsing.

`parse_dump` (pure) reads a dump's messages; `receive_queues` asks the kernel.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from loadtest_lib.stats import tcp_receive_queues

NETLINK_INET_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_ESTABLISHED = 1
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_S_EQ = 11
_NLATTR = struct.Struct("=HH")  # len, type
_BC_OP = struct.Struct("=BBH")  # code, yes, no
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid (48 bytes)
_REQ = struct.Struct("=BBBBI48s")
# inet_diag_msg (72 bytes): family, state, timer, retrans; the sockid (48 bytes: sport, dport
# big-endian first); then expires, rqueue, wqueue, uid, inode
_MSG_BYTES = 72
_SPORT = struct.Struct(">H")  # at offset 4
_RQUEUE = struct.Struct("=I")  # at offset 4 + 48 + 4


def request(local_port: int, seq: int = 1) -> bytes:
    """A dump request for the established IPv4 TCP sockets on `local_port`: the port is also
    filtered by the kernel (a bytecode attribute), so only those sockets are written out."""
    body = _REQ.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << TCP_ESTABLISHED, bytes(48))
    # INET_DIAG_BC_S_EQ takes the port from the next op's `no`; a match jumps to the program's
    # end (accept), a mismatch past it (reject).
    program = _BC_OP.pack(INET_DIAG_BC_S_EQ, 8, 12) + _BC_OP.pack(0, 0, local_port)
    attr = _NLATTR.pack(_NLATTR.size + len(program), INET_DIAG_REQ_BYTECODE) + program
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body) + len(attr), SOCK_DIAG_BY_FAMILY,
                          NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body + attr


def parse_dump(data: bytes, local_port: int) -> tuple[list[int], bool]:
    """(rqueue of each socket in `data` whose local port is `local_port`, whether the dump
    ended here). OSError when the kernel answered an error."""
    queues: list[int] = []
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size:
            break
        if kind == NLMSG_DONE:
            return queues, True
        if kind == NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", data, pos + _NLMSGHDR.size)
            raise OSError(-errno, "sock_diag dump refused")
        if kind == SOCK_DIAG_BY_FAMILY and length >= _NLMSGHDR.size + _MSG_BYTES:
            body = pos + _NLMSGHDR.size
            if _SPORT.unpack_from(data, body + 4)[0] == local_port:
                queues.append(_RQUEUE.unpack_from(data, body + 56)[0])
        pos += (length + 3) & ~3  # messages are 4-byte aligned
    return queues, False


def receive_queues(local_port: int) -> list[int]:
    """Unread bytes of each established IPv4 socket on `local_port` (blocking: run it in a
    thread). Falls back to /proc/net/tcp where netlink is not available."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_INET_DIAG) as nl:
            nl.sendall(request(local_port))
            queues: list[int] = []
            while True:
                got, done = parse_dump(nl.recv(1 << 16), local_port)
                queues += got
                if done:
                    return queues
    except (OSError, AttributeError):  # AttributeError: no AF_NETLINK (not Linux)
        try:
            return tcp_receive_queues(Path("/proc/net/tcp").read_text(), local_port)
        except OSError:
            return []
