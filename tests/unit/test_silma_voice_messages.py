"""The voice-registration extension's messages: parse, build, round trip, bad input."""

from __future__ import annotations

import base64

import orjson
import pytest

from bridge.silma.protocol import (
    RegisterVoice,
    RequestError,
    SynthesizeRequest,
    VoiceRegistered,
    build_register_voice,
    build_synthesize,
    build_voice_registered,
    parse_client_message,
    parse_server_message,
)

CLIP = b"RIFF....WAVEfmt "


def parse(message: dict[str, object]) -> object:
    return parse_client_message(orjson.dumps(message), max_text_chars=100)


def test_register_voice_round_trips() -> None:
    message = RegisterVoice(CLIP, "Some words.", "r1")
    assert parse(orjson.loads(build_register_voice(message))) == message


def test_voice_registered_round_trips() -> None:
    reply = VoiceRegistered("ab" * 16, "r1", 3.25)
    assert parse_server_message(build_voice_registered(reply)) == reply


def test_synthesize_names_a_voice_instead_of_sending_it() -> None:
    request = SynthesizeRequest("Hello.", voice_id="ab" * 16, id="s1")
    raw = build_synthesize(request)
    assert b'"audio"' not in raw
    assert parse(orjson.loads(raw)) == request


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"type": "register_voice"}, "needs the reference clip"),
        ({"type": "register_voice", "audio": "!!"}, "not valid base64"),
        ({"type": "register_voice", "audio": base64.b64encode(CLIP).decode(), "reference_text": 5},
         "reference_text must be a string"),
        ({"text": "Hi.", "voice_id": 7}, "voice_id must be"),
        ({"text": "Hi.", "voice_id": "x" * 129}, "voice_id must be"),
        ({"text": "Hi.", "voice_id": "abc", "audio": base64.b64encode(CLIP).decode()},
         "either audio or voice_id"),
    ],
)
def test_bad_voice_messages_are_refused_with_a_reason(message: dict[str, object], reason: str) -> None:
    with pytest.raises(RequestError, match=reason):
        parse(message)
