"""The load test's WebSocket client framing (scripts/loadtest_lib/wsframe.py): what it writes
is read by websockets' own parser, what it reads is the server's framing, split anyhow."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

# scripts/ is not a package: its modules import each other as top-level ones.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from loadtest_lib.wsframe import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameError,
    FrameReader,
    accept_value,
    client_frame,
    upgrade_problem,
    upgrade_request,
)


def _websockets_reads(data: bytes) -> Frame:
    """One client frame as a websockets server parses it (mask required)."""
    stream = StreamReader()
    stream.feed_data(data)
    parser = Frame.parse(stream.read_exact, mask=True)
    with pytest.raises(StopIteration) as done:
        next(parser)
    assert not stream.buffer, "the frame's length covers it all"
    frame: Frame = done.value.value
    return frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 300, 65535, 65536])
def test_client_frames_are_masked_frames_websockets_reads(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = _websockets_reads(client_frame(payload))
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload


def test_control_frames_keep_their_opcode() -> None:
    assert _websockets_reads(client_frame(b"\x03\xe8", OP_CLOSE)).opcode is Opcode.CLOSE


def test_accept_value_is_rfc_6455s_example() -> None:
    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_upgrade_request_carries_the_carrier_headers() -> None:
    text = upgrade_request("127.0.0.1:8080", "/twilio/stream/u/t", "a2V5", {"User-Agent": "X"})
    assert text.startswith(b"GET /twilio/stream/u/t HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert b"\r\nSec-WebSocket-Key: a2V5\r\n" in text and b"\r\nUser-Agent: X\r\n" in text
    assert text.endswith(b"\r\n\r\n")


def test_upgrade_problem_accepts_only_a_matching_101() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    good = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    assert upgrade_problem(good, key) is None
    assert "refused" in (upgrade_problem(b"HTTP/1.1 403 Forbidden", key) or "")
    assert "Accept" in (upgrade_problem(good.replace(b"s3p", b"xxx"), key) or "")
    assert "extensions" in (upgrade_problem(good + b"\r\nSec-WebSocket-Extensions: x", key)
                            or "")


def _server_frame(payload: bytes, opcode: int = OP_TEXT, fin: bool = True) -> bytes:
    return Frame(Opcode(opcode), payload, fin=fin).serialize(mask=False)


def test_reader_returns_whole_messages_however_the_bytes_are_split() -> None:
    messages = [b"a" * 10, b"b" * 300, b"c" * 70000, b""]
    wire = b"".join(_server_frame(m) for m in messages)
    for step in (1, 7, 1000, len(wire)):
        reader = FrameReader()
        got = []
        for i in range(0, len(wire), step):
            got += reader.feed(wire[i : i + step])
        assert got == [(OP_TEXT, m) for m in messages]


def test_reader_joins_fragments_and_passes_control_frames_between_them() -> None:
    wire = (_server_frame(b"hel", fin=False) + _server_frame(b"ping", OP_PING)
            + _server_frame(b"lo", 0x0))
    assert FrameReader().feed(wire) == [(OP_PING, b"ping"), (OP_TEXT, b"hello")]


def test_reader_keeps_binary_frames_apart() -> None:
    assert FrameReader().feed(_server_frame(b"\x00\x01", OP_BINARY)) == [(OP_BINARY, b"\x00\x01")]


@pytest.mark.parametrize(
    "wire",
    [
        Frame(Opcode.TEXT, b"x").serialize(mask=True),  # servers never mask
        _server_frame(b"x", 0x0),  # a continuation of nothing
        _server_frame(b"a", fin=False) + _server_frame(b"b"),  # a new message mid-fragment
    ],
)
def test_reader_refuses_broken_framing(wire: bytes) -> None:
    with pytest.raises(FrameError):
        FrameReader().feed(wire)


def test_reader_bounds_a_message() -> None:
    with pytest.raises(FrameError):
        FrameReader(max_message_bytes=100).feed(_server_frame(b"x" * 101))
