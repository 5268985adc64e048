"""Deepgram's messages parsed (and refused), the listen URL, and the stream's decisions:
bounded pending audio and its clock, one reconnect, latency from the endpoint."""

from __future__ import annotations

import urllib.parse

import orjson
import pytest

from bridge.errors import ProtocolError
from bridge.stt import deepgram_core as dg


def results(**changes: object) -> str:
    message: dict[str, object] = {
        "type": "Results", "channel_index": [0, 1], "start": 1.5, "duration": 0.75,
        "is_final": True, "speech_final": False,
        "channel": {"alternatives": [{"transcript": " book a table ", "confidence": 0.9}]},
    }
    message.update(changes)
    return orjson.dumps(message).decode()


def test_results_are_parsed() -> None:
    assert dg.parse_message(results()) == dg.Result("book a table", True, False, 1.5, 0.75)


def test_flags_default_to_false_and_no_alternative_is_no_text() -> None:
    message = orjson.loads(results(channel={"alternatives": []}))
    del message["is_final"], message["speech_final"]
    assert dg.parse_message(orjson.dumps(message)) == dg.Result("", False, False, 1.5, 0.75)


@pytest.mark.parametrize("kind", ["Metadata", "SpeechStarted", "UtteranceEnd", "SomethingNew"])
def test_other_kinds_carry_nothing(kind: str) -> None:
    assert dg.parse_message(orjson.dumps({"type": kind, "channel": [0]})) is None


@pytest.mark.parametrize(("data", "match"), [
    ("not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"channel": {}}', "'type'"),
    (results(channel={"alternatives": "x"}), "alternatives"),
    (results(channel=None), "alternatives"),
    (results(channel={"alternatives": [{"transcript": 5}]}), "transcript"),
    (results(is_final="yes"), "is_final"),
    (results(start=-1), "start"),
    (results(start=True), "start"),
    (results(duration="0.5"), "duration"),
    (results(duration=None), "duration"),
])
def test_malformed_messages_are_refused_with_the_reason(data: str, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        dg.parse_message(data)


def test_the_listen_url_describes_the_callers_audio() -> None:
    url = dg.listen_url("", model="", language="en-US")
    parts = urllib.parse.urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "api.deepgram.com", "/v1/listen")
    assert dict(urllib.parse.parse_qsl(parts.query)) == {
        "encoding": "mulaw", "sample_rate": "8000", "channels": "1",
        "interim_results": "true", "punctuate": "true", "model": "nova-3", "language": "en-US",
    }


@pytest.mark.parametrize(("base", "expected"), [
    ("https://dg.example/", "wss://dg.example/v1/listen"),
    ("http://127.0.0.1:8123", "ws://127.0.0.1:8123/v1/listen"),
    ("ws://127.0.0.1:8123/proxy", "ws://127.0.0.1:8123/proxy/v1/listen"),
])
def test_the_base_url_may_be_any_origin(base: str, expected: str) -> None:
    url = dg.listen_url(base, model="nova-2", language="")
    assert url.split("?")[0] == expected and "language" not in url


@pytest.mark.parametrize("base", ["ftp://x", "not a url", "wss://"])
def test_a_base_url_that_is_no_websocket_is_refused(base: str) -> None:
    with pytest.raises(ValueError, match="not a WebSocket"):
        dg.listen_url(base, model="", language="")


def test_pending_audio_is_bounded_and_knows_its_second() -> None:
    audio = dg.StreamAudio(max_s=0.5)
    audio.add(b"\x01" * 8000)  # 1 s: the first half is dropped
    assert len(audio) == 4000 and audio.head_s == 0.5
    assert audio.take() == b"\x01" * 4000
    assert len(audio) == 0 and audio.head_s == 1.0
    audio.add(b"\x02" * 800)
    assert audio.head_s == 1.0 and audio.take() == b"\x02" * 800


def test_one_reconnect_then_none() -> None:
    reconnects = dg.Reconnects(stable_s=30)
    reconnects.connected(0.0)
    assert reconnects.may_retry(5.0)
    reconnects.connected(6.0)
    assert not reconnects.may_retry(10.0)
    assert reconnects.ever_connected


def test_a_connection_that_lived_long_earns_the_reconnect_back() -> None:
    reconnects = dg.Reconnects(stable_s=30)
    reconnects.connected(0.0)
    assert reconnects.may_retry(1.0)
    reconnects.connected(2.0)
    assert reconnects.may_retry(40.0)  # it lived 38 s
    reconnects.connected(41.0)
    assert not reconnects.may_retry(42.0)


def test_failed_connects_count_too() -> None:
    reconnects = dg.Reconnects()
    assert reconnects.may_retry(0.0)
    assert not reconnects.may_retry(1.0)
    assert not reconnects.ever_connected


def test_latency_counts_from_the_last_endpoint_only_after_it() -> None:
    endpoints = dg.Endpoints()
    assert endpoints.latency(5.0) == 0.0  # no endpoint yet
    endpoints.started(1.0)
    assert endpoints.latency(2.0) == 0.0
    endpoints.ended(3.0)
    assert endpoints.latency(3.25) == 0.25
    endpoints.started(4.0)  # talking again: a final now came before its endpoint
    assert endpoints.latency(4.5) == 0.0
