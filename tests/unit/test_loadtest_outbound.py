"""The load test's reading of the bridge's messages (scripts/loadtest_lib/outbound.py): the
fast path finds what the emulator's strict check finds in a well-formed message, and anything
else is judged by that strict check, in its words."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from loadtest_lib.outbound import STRICT_EVERY, OutboundReader, base64_length

from bridge.emulator.plivo_wire import PlivoWire
from bridge.emulator.twilio_wire import TwilioWire
from bridge.emulator.wire import Wire
from bridge.telephony.plivo import PlivoCodec
from bridge.telephony.twilio import TwilioCodec

AUDIO = bytes(range(256)) * 3 + bytes(32)  # 800 bytes: 5 frames


@pytest.mark.parametrize("n", [1, 2, 3, 159, 160, 800])
def test_base64_length_is_the_decoded_size(n: int) -> None:
    assert base64_length(base64.b64encode(b"x" * n).decode()) == n


@pytest.mark.parametrize("text", ["", "abc", "abcde"])
def test_base64_length_refuses_impossible_lengths(text: str) -> None:
    assert base64_length(text) is None


class Strict:
    """The emulator wire's strict parse, counting its calls."""

    def __init__(self, wire: Wire) -> None:
        self.wire, self.calls = wire, 0

    def __call__(self, data: str):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.wire.parse(data)


def _setup(provider: str) -> tuple[OutboundReader, Strict, TwilioCodec | PlivoCodec]:
    wire: Wire = TwilioWire(None, None, None) if provider == "twilio" else PlivoWire(None, None,
                                                                                     None)
    strict = Strict(wire)
    codec = TwilioCodec(wire.stream_sid) if provider == "twilio" else PlivoCodec(wire.stream_sid)
    return OutboundReader(provider, wire.stream_sid, strict), strict, codec


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
def test_media_of_the_bridges_codec_is_read_fast_and_checked_strictly_now_and_then(
    provider: str,
) -> None:
    reader, strict, codec = _setup(provider)
    raw = codec.media(AUDIO).encode()
    for _ in range(3 * STRICT_EVERY):
        msg, problems = reader.read(raw)
        assert msg is not None and msg.event == "media" and problems == []
        assert reader.media_bytes == len(AUDIO)
    assert strict.calls == 3  # the first, then one in STRICT_EVERY


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
def test_marks_and_clears_go_through_the_strict_check(provider: str) -> None:
    reader, strict, codec = _setup(provider)
    msg, problems = reader.read(codec.mark("m1").encode())
    assert msg is not None and (msg.event, msg.name, problems) == ("mark", "m1", [])
    msg, problems = reader.read(codec.clear().encode())
    assert msg is not None and msg.event == "clear" and problems == []
    assert strict.calls == 2


def test_a_malformed_media_message_is_reported_in_the_emulators_words() -> None:
    reader, strict, codec = _setup("twilio")
    reader.read(codec.media(AUDIO).encode())  # past the first strict check
    good = codec.media(AUDIO)
    for bad in (
        good.replace('"payload"', '"payload","x":1'),  # an unexpected field
        good.replace("streamSid", "streamSID"),  # a field the provider does not know
        good.replace(base64.b64encode(AUDIO).decode(),  # not a multiple of 160 bytes
                     base64.b64encode(AUDIO[:90]).decode()),
    ):
        assert reader.read(bad.encode()) == strict.wire.parse(bad)
        assert reader.read(bad.encode())[1], "a problem is reported"


def test_bad_base64_characters_are_caught_by_the_next_strict_check() -> None:
    reader, _, codec = _setup("twilio")
    reader.read(codec.media(AUDIO).encode())  # checked strictly: the next ones go fast
    bad = codec.media(AUDIO).replace(base64.b64encode(AUDIO).decode()[:8], "!@#$%^&*")
    problems = [reader.read(bad.encode())[1] for _ in range(2 * STRICT_EVERY)]
    first = next(i for i, p in enumerate(problems) if p)
    assert first == STRICT_EVERY - 1 and "base64" in problems[first][0]
    assert all(problems[first:]), "strictly checked until a good one comes"


def test_a_plivo_media_message_declaring_another_codec_is_reported() -> None:
    reader, _, codec = _setup("plivo")
    reader.read(codec.media(AUDIO).encode())
    bad = codec.media(AUDIO).replace("audio/x-mulaw", "audio/x-l16")
    _, problems = reader.read(bad.encode())
    assert problems and "contentType" in problems[0]
