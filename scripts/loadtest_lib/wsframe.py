"""The client side of RFC 6455, only as much as an emulated carrier needs: the upgrade request,
the check of its 101, client frames, and an incremental reader of the server's frames.

Pure: bytes in, bytes out, no sockets. The load test's callers (caller.py) write what this
builds straight to their transports, so a caller frame costs a header and a concatenation
instead of aiohttp's writer (a coroutine, a lock, a masking pass).

Client frames carry the all-zero masking key. The mask bit stays set, as RFC 6455 requires of
a client, and the server unmasks every frame with whatever key it carries (the bridge runs the
same XOR over the payload for any key), so the bridge's work per frame is what a carrier's frame
costs it; only the generator skips a masking pass. The key's randomness guards proxies' caches
against crafted payloads, which matters on no loopback socket.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_FIN = 0x80
_MASK_BIT = 0x80
_ZERO_KEY = b"\x00\x00\x00\x00"
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE_BYTES = 1 << 20  # the bridge's messages are ~1.4 KB: anything near this is broken
MAX_HEAD_BYTES = 16 * 1024  # the 101 response's head


class FrameError(Exception):
    """The server broke the framing: the connection cannot be read any further."""


def upgrade_request(host: str, path: str, key: str, headers: dict[str, str]) -> bytes:
    """The GET that asks for the WebSocket upgrade (`key`: 16 random bytes, base64), with the
    carrier's own `headers` (user agent, signature)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def accept_value(key: str) -> str:
    """What the server must answer in Sec-WebSocket-Accept for `key`."""
    return base64.b64encode(hashlib.sha1(key.encode() + _ACCEPT_GUID).digest()).decode()


def upgrade_problem(head: bytes, key: str) -> str | None:
    """Why the response head (up to the blank line) is not a valid 101 for `key`, or None."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        return f"upgrade refused: {lines[0][:80]!r}"
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    if fields.get("sec-websocket-accept") != accept_value(key):
        return "upgrade answered with a wrong Sec-WebSocket-Accept"
    if "sec-websocket-extensions" in fields:
        return f"the server chose extensions nobody offered: {fields['sec-websocket-extensions']}"
    return None


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One whole masked client frame (zero key: the payload goes as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes((_FIN | opcode, _MASK_BIT | n))
    elif n < 1 << 16:
        head = bytes((_FIN | opcode, _MASK_BIT | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((_FIN | opcode, _MASK_BIT | 127)) + n.to_bytes(8, "big")
    return head + _ZERO_KEY + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()[:120]


@dataclass
class FrameReader:
    """The server's frames, from the bytes as they come: `feed` returns each whole message
    (opcode, payload) and each control frame, in order; fragments are joined."""

    max_message_bytes: int = MAX_MESSAGE_BYTES
    _buf: bytearray = field(default_factory=bytearray)
    _fragments: list[bytes] = field(default_factory=list)
    _fragment_opcode: int = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & _MASK_BIT:
                raise FrameError("the server masked a frame")
            if b0 & 0x70:
                raise FrameError("reserved bits set: no extension was negotiated")
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if n > self.max_message_bytes:
                raise FrameError(f"a frame of {n} bytes")
            if end - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            self._frame(b0 & _FIN, b0 & 0x0F, payload, out)
        del buf[:pos]
        return out

    def _frame(self, fin: int, opcode: int, payload: bytes, out: list[tuple[int, bytes]]) -> None:
        if opcode >= OP_CLOSE:  # control frames may come between fragments
            if not fin or len(payload) > 125:
                raise FrameError("a fragmented or oversized control frame")
            out.append((opcode, payload))
            return
        if opcode == OP_CONTINUATION:
            if not self._fragments:
                raise FrameError("a continuation frame with no message to continue")
        elif self._fragments:
            raise FrameError("a new message inside a fragmented one")
        else:
            self._fragment_opcode = opcode
        if fin and not self._fragments:
            out.append((opcode, payload))  # the common case: one whole frame
            return
        self._fragments.append(payload)
        if sum(map(len, self._fragments)) > self.max_message_bytes:
            raise FrameError("a fragmented message over the size bound")
        if fin:
            out.append((self._fragment_opcode, b"".join(self._fragments)))
            self._fragments.clear()
