"""The media socket's pure parts (bridge/web/media_socket.py): the request head handed to
websockets, frame extents, outgoing text frames, checked against websockets' own framing."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.streams import StreamReader

from bridge.web.media_socket import frame_extent, request_head, text_frame


def test_the_request_head_reads_back_as_the_request_aiohttp_read() -> None:
    head = request_head("/twilio/stream/default/tok?x=1", [
        (b"Host", b"bridge.example"), (b"Upgrade", b"websocket"), (b"X-Twilio-Signature", b"a=")])
    reader = StreamReader()
    reader.feed_data(head)
    parser = Request.parse(reader.read_line)
    with pytest.raises(StopIteration) as done:
        next(parser)
    request: Request = done.value.value
    assert request.path == "/twilio/stream/default/tok?x=1"
    assert request.headers == Headers([("Host", "bridge.example"), ("Upgrade", "websocket"),
                                       ("X-Twilio-Signature", "a=")])
    assert head.endswith(b"\r\n\r\n")


def _client_frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, payload, fin=fin).serialize(mask=True, extensions=[])


@pytest.mark.parametrize(("size", "head"), [(0, 6), (125, 6), (126, 8), (65535, 8),
                                            (65536, 14), (300_000, 14)])
def test_frame_extent_is_header_and_payload_of_a_masked_frame(size: int, head: int) -> None:
    wire = _client_frame(Opcode.TEXT, b"x" * size)
    assert frame_extent(wire, 0) == (head, size)
    assert head + size == len(wire)
    assert frame_extent(b"junk" + wire, 4) == (head, size)  # from any position


def test_frame_extent_of_unmasked_and_control_frames() -> None:
    unmasked = Frame(Opcode.BINARY, b"abc").serialize(mask=False, extensions=[])
    assert frame_extent(unmasked, 0) == (2, 3)
    ping = _client_frame(Opcode.PING, b"hi")
    assert frame_extent(ping, 0) == (6, 2)


@pytest.mark.parametrize("size", [0, 200, 70_000])
def test_frame_extent_waits_for_a_whole_header(size: int) -> None:
    wire = _client_frame(Opcode.BINARY, b"y" * size)
    head, _ = frame_extent(wire, 0) or (0, 0)
    for cut in range(head):
        assert frame_extent(wire[:cut], 0) is None, cut
    assert frame_extent(wire[:head], 0) == (head, size)  # the payload may come later


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 100_000])
def test_a_text_frame_is_what_websockets_frames(size: int) -> None:
    payload = b"z" * size
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False,
                                                                         extensions=[])


def test_unmasking_uses_websockets_c_extension_here() -> None:
    """The fallback works but costs ~2 µs a message more: a platform without the extension
    should be a known choice, not a silent one (scripts/bench_inbound.py shows the cost)."""
    from websockets import speedups

    from bridge.web import media_socket

    assert vars(media_socket)["apply_mask"] is speedups.apply_mask
