"""SILMA's public API v2, the pure part: requests both ways, bounded events, URLs, text cuts."""

from __future__ import annotations

import base64

import orjson
import pytest

from bridge.errors import ConfigError, TTSReplyError, TTSReplyTooLarge
from bridge.silma import v2_protocol as v2
from bridge.silma.endpoint import OURS, V2, parse_endpoint, parse_endpoints
from bridge.silma.v2_connection import Samples, failed

HINT_PN = "<STAG_PN>92005455</STAG_PN>"
HINT_EMAIL = "<STAG_EMAIL>ann.lee@example.com</STAG_EMAIL>"


def test_a_request_carries_only_the_fields_that_are_set() -> None:
    plain = orjson.loads(v2.build_request(v2.V2Request("Hi.", v2.V2Voice())))
    assert plain == {"model_id": "silma-tts-v2-msa", "text": "Hi.", "voice_id": "sarah"}
    full = v2.V2Voice("silma-tts-v2-english", "emma", custom_audio_id="voice_1",
                      user_id="acct", speed=1.2, creativity=0.3,
                      server_pronunciation_overrides=True)
    assert orjson.loads(v2.build_request(v2.V2Request("Hi.", full))) == {
        "model_id": "silma-tts-v2-english", "text": "Hi.", "voice_id": "emma",
        "custom_audio_id": "voice_1", "user_id": "acct", "speed": 1.2, "creativity": 0.3,
        "enable_server_pronunciation_overrides": True}


def test_what_we_build_our_server_parses_back() -> None:
    voice = v2.V2Voice("silma-tts-v2-ksa", "salim", user_id="acct", speed=0.8)
    assert v2.parse_request(v2.build_request(v2.V2Request("مرحبا", voice))) == \
        v2.V2Request("مرحبا", voice)


@pytest.mark.parametrize(("body", "code", "says"), [
    (b"{", "bad_request", "not valid JSON"),
    (b"[]", "bad_request", "JSON object"),
    (b'{"text": "hi", "voice_id": "sarah"}', "bad_request", "model_id"),
    (b'{"model_id": "m", "text": " ", "voice_id": "sarah"}', "bad_request", "text"),
    (b'{"model_id": "m", "text": "hi"}', "bad_request", "voice_id"),
    (orjson.dumps({"model_id": "m", "text": "x" * 251, "voice_id": "v"}), "text_too_long",
     "251 characters"),
    (b'{"model_id": "m", "text": "hi", "voice_id": "v", "speed": 9}', "bad_request", "speed"),
    (b'{"model_id": "m", "text": "hi", "voice_id": "v", "speed": true}', "bad_request",
     "speed"),
    (b'{"model_id": "m", "text": "hi", "voice_id": 7}', "bad_request", "voice_id"),
    (b'{"model_id": "m", "text": "hi", "voice_id": "v", "creativity": 2}', "bad_request",
     "creativity"),
    (b'{"model_id": "m", "text": "hi", "voice_id": "v", '
     b'"enable_server_pronunciation_overrides": "yes"}', "bad_request", "true or false"),
])
def test_a_bad_request_is_refused_with_a_code_and_a_reason(body: bytes, code: str,
                                                           says: str) -> None:
    with pytest.raises(v2.V2RequestError, match=says) as refused:
        v2.parse_request(body)
    assert refused.value.code == code


def test_a_cloned_voice_alone_is_a_voice() -> None:
    request = v2.parse_request(b'{"model_id": "m", "text": "hi", "custom_audio_id": "voice_1",'
                               b' "user_id": "acct"}')
    assert request.voice.custom_audio_id == "voice_1" and request.voice.voice_id == ""


def test_voice_problems_are_the_ones_the_api_would_refuse() -> None:
    assert v2.V2Voice().problems() == []
    assert v2.V2Voice(custom_audio_id="voice_1").problems() == ["custom_audio_id needs user_id"]
    assert v2.V2Voice(server_pronunciation_overrides=True).problems() == [
        "server pronunciation overrides need user_id"]
    assert v2.V2Voice(model_id=" ", voice_id="").problems() == ["model_id is empty",
                                                                "voice_id is empty"]


def test_events_round_trip_and_carry_their_audio() -> None:
    samples = b"\x00\x00\x80\x3f" * 3
    assert v2.parse_event(v2.build_event(v2.STREAMING, samples)) == v2.V2Event(
        v2.STREAMING, samples)
    assert v2.parse_event(v2.build_event(v2.FAILED, code="busy")) == v2.V2Event(
        v2.FAILED, b"", "busy")
    assert v2.parse_event(b'{"audio": ""}') == v2.V2Event(None)


@pytest.mark.parametrize(("raw", "says"), [
    (b"<html>bad gateway</html>", "not valid JSON"),
    (b'"completed"', "not a JSON object"),
    (b'{"status": "paused"}', "unknown status"),
    (b'{"status": "streaming", "audio": 12}', "base64 string"),
    (b'{"status": "streaming", "audio": "***"}', "valid base64"),
])
def test_a_malformed_event_is_refused(raw: bytes, says: str) -> None:
    with pytest.raises(TTSReplyError, match=says):
        v2.parse_event(raw)


def test_events_past_the_bounds_are_refused_before_use() -> None:
    with pytest.raises(TTSReplyTooLarge):
        v2.parse_event(b" " * (v2.MAX_EVENT_BYTES + 1))
    big = base64.b64encode(bytes(v2.MAX_EVENT_AUDIO_BYTES + 4)).decode()
    with pytest.raises(TTSReplyTooLarge):
        v2.parse_event(orjson.dumps({"status": "streaming", "audio": big}))


def test_only_machine_readable_codes_are_kept() -> None:
    # Prose may quote the caller's words: it never reaches a log or an error message.
    assert v2.parse_event(b'{"status": "failed", "code": "Could not say: my PIN is 1234"}'
                          ).code is None
    assert v2.error_code_of_body(b'{"detail": "invalid_api_key"}') == "invalid_api_key"
    assert v2.error_code_of_body(b'{"detail": {"code": "busy"}}') == "busy"
    assert v2.error_code_of_body(b'{"detail": "The text \\"hello\\" is bad"}') is None
    assert v2.error_code_of_body(b"<html>") is None


def test_failures_are_classified_for_retries() -> None:
    busy, limited, final = failed("busy"), failed("rate_limited"), failed("invalid_voice")
    assert (busy.retryable, busy.code) == (True, "busy")
    assert (limited.retryable, limited.code) == (True, "busy")
    assert (final.retryable, final.code) == (False, "invalid_voice")
    assert failed(None).code == "failed"


def test_urls_of_an_api_base() -> None:
    assert v2.ws_url("https://api.silma.ai/tts/v2/") == "wss://api.silma.ai/tts/v2/ws/stream"
    assert v2.ws_url("http://127.0.0.1:9/tts/v2") == "ws://127.0.0.1:9/tts/v2/ws/stream"
    assert v2.stream_url("https://api.silma.ai/tts/v2") == "https://api.silma.ai/tts/v2/stream"


@pytest.mark.parametrize("given", [
    "https://api.silma.ai/tts/v2", "https://api.silma.ai/tts/v2/",
    "wss://api.silma.ai/tts/v2/ws/stream", "https://api.silma.ai/tts/v2/stream",
])
def test_a_v2_endpoint_is_its_base_however_it_is_pasted(given: str) -> None:
    endpoint = parse_endpoint(given, V2)
    assert (endpoint.api, endpoint.http_base, endpoint.ws_url, endpoint.synthesize_url) == (
        V2, "https://api.silma.ai/tts/v2", "wss://api.silma.ai/tts/v2/ws/stream",
        "https://api.silma.ai/tts/v2/stream")


def test_each_api_carries_its_key_its_own_way() -> None:
    assert parse_endpoint("https://a.test/tts/v2", V2).auth_headers("k") == {"apiKey": "k"}
    assert parse_endpoint("https://a.test/api", OURS).auth_headers("k") == {
        "Authorization": "Bearer k"}
    assert parse_endpoint("https://a.test/api", V2).auth_headers("") == {}
    with pytest.raises(ConfigError, match="one of"):
        parse_endpoint("https://a.test", "v3")
    assert [e.api for e in parse_endpoints("https://a.test/v2 https://b.test/v2", V2)] == [
        V2, V2]


def test_samples_split_across_messages_come_out_whole() -> None:
    joined = Samples()
    stream = bytes(range(40))
    out = joined.take(stream[:5]) + joined.take(stream[5:6]) + joined.take(stream[6:40])
    assert out == stream and joined.take(b"\x01\x02") == b""


def test_split_text_keeps_short_text_whole() -> None:
    assert v2.split_text("  Hello there.  ") == ["Hello there."]
    assert v2.split_text("") == []


def test_split_text_cuts_at_the_latest_sentence_then_clause_that_fits() -> None:
    first = "This is the first sentence of a long answer, and it goes on a while."
    second = "Then a second one follows, with a clause; and another clause here."
    pieces = v2.split_text(f"{first} {second}", max_chars=100)
    assert pieces == [first, second]
    clauses = v2.split_text("one two three four five six, seven eight nine ten eleven", 40)
    assert clauses == ["one two three four five six,", "seven eight nine ten eleven"]
    # A clause end in the first half would leave a needlessly short piece: a word end wins.
    early = v2.split_text("one, two three four five six seven eight nine ten eleven", 40)
    assert early == ["one, two three four five six seven eight", "nine ten eleven"]


def test_split_text_never_cuts_a_hint_and_every_piece_fits() -> None:
    text = ("Please call our support line at " + HINT_PN + " or write to " + HINT_EMAIL +
            " any time of the day. " * 20)
    pieces = v2.split_text(text, max_chars=60)
    assert all(len(piece) <= 60 for piece in pieces)
    joined = " ".join(pieces)
    assert HINT_PN in joined and HINT_EMAIL in joined
    assert all(piece.count("<STAG_") == piece.count("</STAG_") for piece in pieces)


def test_a_hint_over_the_limit_is_read_as_plain_text() -> None:
    long_hint = "<STAG_LINK>" + "a" * 80 + "</STAG_LINK>"
    pieces = v2.split_text(f"Visit {long_hint} today", max_chars=50)
    assert "<STAG_" not in "".join(pieces) and all(len(p) <= 50 for p in pieces)


def test_one_word_over_the_limit_is_cut_hard() -> None:
    assert v2.split_text("x" * 120, max_chars=50) == ["x" * 50, "x" * 50, "x" * 20]
