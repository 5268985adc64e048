"""The load test's caller media (scripts/loadtest_lib/media_frames.py): its templates write the
emulator's own messages byte for byte, which the bridge's codecs read as caller audio."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from loadtest_lib.media_frames import SILENCE_B64, MediaTemplate, caller_payloads
from loadtest_lib.wsframe import FrameReader

from bridge.emulator.plivo_wire import PlivoWire
from bridge.emulator.twilio_wire import TwilioWire
from bridge.telephony import plivo, twilio
from bridge.telephony.events import MediaReceived

PAYLOAD = base64.b64encode(bytes(range(160)))
VALUES = [(1, 1, 0), (2, 2, 20), (57, 50, 980), (123456, 99999, 1999980)]


@pytest.mark.parametrize(("seq", "chunk", "offset"), VALUES)
def test_twilio_template_writes_the_emulators_message(seq: int, chunk: int, offset: int) -> None:
    wire = TwilioWire(None, None, {"userid": "u1"})
    wire.seq = seq - 1  # the wire numbers its next message seq
    expected = wire.media(chunk, offset, PAYLOAD.decode())
    body = MediaTemplate.twilio(wire.stream_sid).body(seq, chunk, offset, PAYLOAD)
    assert body.decode() == expected


@pytest.mark.parametrize(("seq", "chunk", "offset"), VALUES)
@pytest.mark.parametrize("params", [{}, {"userid": "u1", "x": 'a"b{c}%d'}])
def test_plivo_template_writes_the_emulators_message(
    seq: int, chunk: int, offset: int, params: dict[str, str]
) -> None:
    wire = PlivoWire(None, None, params)
    wire.start()  # its timestamps count from the wall clock at start
    wire.seq = seq - 1
    expected = wire.media(chunk, offset, PAYLOAD.decode())
    epoch_ms = int(re.search(r'"timestamp":"(\d+)"', expected)[1]) - offset  # type: ignore[index]
    template = MediaTemplate.plivo(wire.stream_sid, wire.extra_headers)
    assert template.body(seq, chunk, epoch_ms + offset, PAYLOAD).decode() == expected


def _unmasked(frame: bytes) -> bytes:
    # Zero masking key: the frame's payload is the message itself, after 8 header bytes.
    assert frame[0] == 0x81 and frame[1] & 0x80, "FIN text, masked"
    assert frame[4:8] == b"\x00\x00\x00\x00"
    return frame[8:]


def test_the_bridges_codecs_read_the_frames_as_caller_audio() -> None:
    sid = "MZ" + "0" * 32
    frame = MediaTemplate.twilio(sid).frame(2, 1, 0, PAYLOAD)
    event = twilio.parse_message(_unmasked(frame).decode())
    assert isinstance(event, MediaReceived) and event.payload == bytes(range(160))
    pv = MediaTemplate.plivo("4c1e", "userid=u1").frame(3, 2, 1_700_000_000_020, PAYLOAD)
    event = plivo.parse_message(_unmasked(pv).decode())
    assert isinstance(event, MediaReceived) and event.payload == bytes(range(160))


def test_frames_are_one_whole_frame_each() -> None:
    frame = MediaTemplate.twilio("MZ1").frame(1, 1, 0, PAYLOAD)
    assert int.from_bytes(frame[2:4], "big") == len(frame) - 8
    # Read back as a (server-side) frame once the mask bit and key are taken off.
    plain = bytes([frame[0], 126]) + frame[2:4] + frame[8:]
    assert FrameReader().feed(plain) == [(1, frame[8:])]


def test_caller_payloads_are_20_ms_frames_padded_with_silence() -> None:
    frames = caller_payloads(b"\x01" * 400)
    assert [len(base64.b64decode(f)) for f in frames] == [160, 160, 160]
    assert base64.b64decode(frames[-1]) == b"\x01" * 80 + b"\xff" * 80
    assert base64.b64decode(SILENCE_B64) == b"\xff" * 160 and isinstance(frames[0], bytes)
