"""Twilio media-stream messages: documented inbound shapes parse field by field, malformed ones
raise ProtocolError saying what is wrong, outbound messages match the documented shapes exactly."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import ProtocolError
from bridge.telephony.events import (
    Connected,
    DtmfReceived,
    MarkReceived,
    MediaReceived,
    OutboundCodec,
    StreamStarted,
    StreamStopped,
)
from bridge.telephony.twilio import TwilioCodec, parse_message

GOLDEN = Path(__file__).parent / "golden" / "twilio"
SID = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"


def golden_text(name: str) -> str:
    return (GOLDEN / f"{name}.json").read_text()


def golden(name: str) -> dict[str, Any]:
    return json.loads(golden_text(name))


# --- inbound: the documented examples ---------------------------------------------------------


def test_connected() -> None:
    assert parse_message(golden_text("connected")) == Connected(protocol="Call", version="1.0.0")


def test_start() -> None:
    event = parse_message(golden_text("start"))
    assert isinstance(event, StreamStarted)
    assert event.stream_id == SID
    assert event.call_id == "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    assert event.account_id == "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    assert event.tracks == ("inbound",)
    assert event.custom_parameters == {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"}
    assert event.encoding == "audio/x-mulaw"
    assert event.sample_rate == 8000


@pytest.mark.parametrize(
    ("name", "track"), [("media_inbound", "inbound"), ("media_outbound", "outbound")]
)
def test_media(name: str, track: str) -> None:
    doc = golden(name)
    event = parse_message(golden_text(name))
    assert isinstance(event, MediaReceived)
    assert event.payload == base64.b64decode(doc["media"]["payload"])
    assert len(event.payload) == 160
    assert event.timestamp_ms == 5
    assert event.track == track


def test_dtmf() -> None:
    assert parse_message(golden_text("dtmf")) == DtmfReceived(digit="1")


def test_mark() -> None:
    assert parse_message(golden_text("mark")) == MarkReceived(name="my label")


def test_stop() -> None:
    assert parse_message(golden_text("stop")) == StreamStopped()


def test_bytes_input() -> None:
    assert parse_message(golden_text("dtmf").encode()) == DtmfReceived(digit="1")


def test_start_takes_the_top_level_stream_sid_when_start_lacks_it() -> None:
    doc = golden("start")
    del doc["start"]["streamSid"]
    event = parse_message(json.dumps(doc))
    assert isinstance(event, StreamStarted)
    assert event.stream_id == SID


def test_start_defaults_for_informational_fields() -> None:
    doc = {"event": "start", "start": {"streamSid": SID, "callSid": "CA1"}}
    event = parse_message(json.dumps(doc))
    assert event == StreamStarted(
        stream_id=SID,
        call_id="CA1",
        account_id="",
        tracks=(),
        custom_parameters={},
        encoding="audio/x-mulaw",
        sample_rate=8000,
    )


def _parse_media(doc: dict[str, Any]) -> MediaReceived:
    event = parse_message(json.dumps(doc))
    assert isinstance(event, MediaReceived)
    return event


def test_media_timestamp_is_optional_and_never_fatal() -> None:
    doc = golden("media_inbound")
    del doc["media"]["timestamp"]
    assert _parse_media(doc).timestamp_ms is None
    for odd in ("soon", "-5", "²", None, 1.5, True):
        doc["media"]["timestamp"] = odd
        assert _parse_media(doc).timestamp_ms is None
    doc["media"]["timestamp"] = 40
    assert _parse_media(doc).timestamp_ms == 40


def test_media_track_defaults_to_inbound() -> None:
    doc = golden("media_inbound")
    del doc["media"]["track"]
    assert _parse_media(doc).track == "inbound"


def test_sample_rate_as_a_string_is_tolerated() -> None:
    doc = golden("start")
    doc["start"]["mediaFormat"]["sampleRate"] = "8000"
    event = parse_message(json.dumps(doc))
    assert isinstance(event, StreamStarted)
    assert event.sample_rate == 8000


# --- inbound: malformed -----------------------------------------------------------------------


def _with(name: str, edit: Any) -> str:
    doc = golden(name)
    edit(doc)
    return json.dumps(doc)


MALFORMED = [
    ("not json", '{"event": "media", ', "not valid JSON"),
    ("empty frame", "", "not valid JSON"),
    ("array", '[{"event": "media"}]', "not a JSON object but an array"),
    ("string", '"media"', "not a JSON object but a string"),
    ("no event", '{"streamSid": "MZ1"}', "no 'event' field"),
    ("event not a string", '{"event": 7}', "'event' must be a string, got a number"),
    ("unknown event", '{"event": "hello"}', "unknown Twilio event 'hello'"),
    ("media without media", '{"event": "media"}', "missing media"),
    (
        "media without payload",
        _with("media_inbound", lambda d: d["media"].pop("payload")),
        "missing media.payload",
    ),
    (
        "payload not a string",
        _with("media_inbound", lambda d: d["media"].update(payload=123)),
        "media.payload must be a base64 string, got a number",
    ),
    (
        "invalid base64",
        _with("media_inbound", lambda d: d["media"].update(payload="no+JhoaJjpz*")),
        "media.payload is not valid base64",
    ),
    (
        "base64 with bad padding",
        _with("media_inbound", lambda d: d["media"].update(payload="no+JhoaJjpz")),
        "media.payload is not valid base64",
    ),
    (
        "non-ascii payload",
        _with("media_inbound", lambda d: d["media"].update(payload="é+JhoaJjpz=")),
        "media.payload is not valid base64",
    ),
    (
        "track not a string",
        _with("media_inbound", lambda d: d["media"].update(track=["inbound"])),
        "media.track must be a string, got an array",
    ),
    (
        "start without streamSid",
        _with("start", lambda d: (d.pop("streamSid"), d["start"].pop("streamSid"))),
        "missing start.streamSid",
    ),
    (
        "start with empty streamSid",
        _with("start", lambda d: d["start"].update(streamSid="")),
        "start.streamSid must be a non-empty string, got an empty string",
    ),
    ("start without start", '{"event": "start", "streamSid": "MZ1"}', "missing start"),
    (
        "start without callSid",
        _with("start", lambda d: d["start"].pop("callSid")),
        "missing start.callSid",
    ),
    (
        "tracks not a list",
        _with("start", lambda d: d["start"].update(tracks="inbound")),
        "start.tracks must be a list of strings",
    ),
    (
        "custom parameter not a string",
        _with("start", lambda d: d["start"]["customParameters"].update(n=1)),
        "start.customParameters must be an object with string values",
    ),
    (
        "bad sample rate",
        _with("start", lambda d: d["start"]["mediaFormat"].update(sampleRate="fast")),
        "start.mediaFormat.sampleRate must be a positive integer",
    ),
    (
        "encoding not a string",
        _with("start", lambda d: d["start"]["mediaFormat"].update(encoding=None)),
        "encoding must be a string, got null",
    ),
    ("dtmf without dtmf", '{"event": "dtmf"}', "missing dtmf"),
    (
        "dtmf without digit",
        _with("dtmf", lambda d: d["dtmf"].pop("digit")),
        "missing dtmf.digit",
    ),
    ("mark without name", '{"event": "mark", "mark": {}}', "missing mark.name"),
    (
        "connected version not a string",
        '{"event": "connected", "protocol": "Call", "version": 1}',
        "version must be a string, got a number",
    ),
]


@pytest.mark.parametrize(
    ("raw", "message"), [(raw, msg) for _, raw, msg in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed(raw: str, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(raw)
    assert message in str(info.value)


def test_errors_never_echo_the_audio() -> None:
    payload = base64.b64encode(b"\x00" * 160).decode() + "*"
    doc = {"event": "media", "media": {"payload": payload}}
    with pytest.raises(ProtocolError) as info:
        parse_message(json.dumps(doc))
    assert payload[:20] not in str(info.value)


def test_unknown_event_name_is_truncated() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(json.dumps({"event": "x" * 10_000}))
    assert len(str(info.value)) < 100


# --- outbound ---------------------------------------------------------------------------------


def test_outbound_media_matches_the_documented_shape() -> None:
    expected = golden("send_media")
    audio = base64.b64decode(expected["media"]["payload"])
    out = TwilioCodec(SID).media(audio)
    assert json.loads(out) == expected
    assert list(json.loads(out)) == ["event", "streamSid", "media"]
    assert out == json.dumps(expected, separators=(",", ":"))  # compact, no extra fields


def test_outbound_mark_matches_the_documented_shape() -> None:
    out = TwilioCodec(SID).mark("my label")
    assert json.loads(out) == golden("send_mark")
    assert out == f'{{"event":"mark","streamSid":"{SID}","mark":{{"name":"my label"}}}}'


def test_outbound_clear_matches_the_documented_shape() -> None:
    out = TwilioCodec(SID).clear()
    assert json.loads(out) == golden("send_clear")
    assert out == f'{{"event":"clear","streamSid":"{SID}"}}'


def test_outbound_media_any_size() -> None:
    codec = TwilioCodec(SID)
    for size in (1, 160, 800, 8000):
        audio = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        doc = json.loads(codec.media(audio))
        assert base64.b64decode(doc["media"]["payload"], validate=True) == audio


def test_outbound_media_refuses_an_empty_payload() -> None:
    with pytest.raises(ValueError, match="empty"):
        TwilioCodec(SID).media(b"")


def test_mark_names_and_stream_sid_are_json_escaped() -> None:
    sid = 'MZ"\\\n'
    name = 'utt-3 "quoted" \\ \u00e9 \n'
    codec = TwilioCodec(sid)
    assert json.loads(codec.mark(name)) == {
        "event": "mark",
        "streamSid": sid,
        "mark": {"name": name},
    }
    assert json.loads(codec.media(b"\xff"))["streamSid"] == sid
    assert json.loads(codec.clear()) == {"event": "clear", "streamSid": sid}


@pytest.mark.parametrize("name", ["", None])
def test_mark_refuses_an_empty_name(name: Any) -> None:
    with pytest.raises(ValueError, match="mark name"):
        TwilioCodec(SID).mark(name)


@pytest.mark.parametrize("sid", ["", None, 5])
def test_codec_refuses_a_missing_stream_sid(sid: Any) -> None:
    with pytest.raises(ValueError, match="stream_sid"):
        TwilioCodec(sid)


def test_codec_round_trips_through_the_parser_as_twilio_would_echo() -> None:
    # A mark we send comes back with the same name; our media parses as media.
    codec = TwilioCodec(SID)
    assert parse_message(codec.mark("utt-3")) == MarkReceived("utt-3")
    echoed = parse_message(codec.media(b"\x7f" * 160))
    assert isinstance(echoed, MediaReceived)
    assert echoed.payload == b"\x7f" * 160


def test_codec_satisfies_the_outbound_protocol() -> None:
    codec: OutboundCodec = TwilioCodec(SID)
    assert codec.clear_acks_marks is True
    assert SID in repr(codec)
