"""Plivo audio-stream messages: documented inbound shapes parse field by field, malformed ones
raise ProtocolError saying what is wrong, extra_headers read in every shape Plivo uses, outbound
messages match the documented shapes exactly."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import ProtocolError
from bridge.telephony.events import (
    AudioCleared,
    DtmfReceived,
    MarkReceived,
    MediaReceived,
    OutboundCodec,
    StreamStarted,
    StreamStopped,
)
from bridge.telephony.jsonfields import MAX_ID_CHARS
from bridge.telephony.plivo import PlivoCodec, parse_extra_headers, parse_message
from tests.protocol_refusals import assert_refused

GOLDEN = Path(__file__).parent / "golden" / "plivo"
STREAM_ID = "b9e8d7c6-5a4b-4c3d-8e2f-1a0b9c8d7e6f"
CALL_ID = "4d3c5b1a-7e2f-4a60-9b8c-0d1e2f3a4b5c"


def golden_text(name: str) -> str:
    return (GOLDEN / f"{name}.json").read_text()


def golden(name: str) -> dict[str, Any]:
    return json.loads(golden_text(name))


# --- inbound: the documented shapes -----------------------------------------------------------


def test_golden_files_use_plivo_number_types() -> None:
    # Unlike Twilio, Plivo sends sequenceNumber and chunk as numbers and only timestamps as text.
    assert golden("start")["sequenceNumber"] == 1
    media = golden("media")
    assert isinstance(media["sequenceNumber"], int)
    assert isinstance(media["media"]["chunk"], int)
    assert isinstance(media["media"]["timestamp"], str)
    assert isinstance(golden("dtmf")["dtmf"]["timestamp"], str)
    assert "channels" not in golden("start")["start"]["mediaFormat"]


def test_start() -> None:
    event = parse_message(golden_text("start"))
    assert isinstance(event, StreamStarted)
    assert event.stream_id == STREAM_ID
    assert event.call_id == CALL_ID
    assert event.account_id == "MAXXXXXXXXXXXXXXXXXX"
    assert event.tracks == ("inbound",)
    assert event.custom_parameters == {"tenant": "acme", "voice": "v1"}
    assert event.encoding == "audio/x-mulaw"
    assert event.sample_rate == 8000


def test_media() -> None:
    doc = golden("media")
    event = parse_message(golden_text("media"))
    assert isinstance(event, MediaReceived)
    assert event.payload == base64.b64decode(doc["media"]["payload"])
    assert len(event.payload) == 160
    assert event.track == "inbound"


def test_dtmf() -> None:
    assert parse_message(golden_text("dtmf")) == DtmfReceived(digit="5")


@pytest.mark.parametrize("name", ["playedStream", "played"])
def test_checkpoint_ack_under_both_names(name: str) -> None:
    assert parse_message(golden_text(name)) == MarkReceived(name="utt-3")


def test_cleared_audio() -> None:
    assert parse_message(golden_text("clearedAudio")) == AudioCleared()


def test_stop_if_it_ever_appears() -> None:
    assert parse_message('{"event": "stop", "sequenceNumber": 12}') == StreamStopped()


def test_bytes_input() -> None:
    assert parse_message(golden_text("dtmf").encode()) == DtmfReceived(digit="5")


def test_start_takes_the_top_level_stream_id_when_start_lacks_it() -> None:
    doc = golden("start")
    del doc["start"]["streamId"]
    doc["streamId"] = STREAM_ID
    event = parse_message(json.dumps(doc))
    assert isinstance(event, StreamStarted)
    assert event.stream_id == STREAM_ID


def test_start_defaults_for_informational_fields() -> None:
    doc = {"event": "start", "start": {"streamId": STREAM_ID, "callId": CALL_ID}}
    assert parse_message(json.dumps(doc)) == StreamStarted(
        stream_id=STREAM_ID,
        call_id=CALL_ID,
        account_id="",
        tracks=(),
        custom_parameters={},
        encoding="audio/x-mulaw",
        sample_rate=8000,
    )


def test_sample_rate_as_a_string_is_tolerated() -> None:
    doc = golden("start")
    doc["start"]["mediaFormat"]["sampleRate"] = "8000"
    event = parse_message(json.dumps(doc))
    assert isinstance(event, StreamStarted)
    assert event.sample_rate == 8000


def test_start_with_garbled_extra_headers_still_starts() -> None:
    doc = golden("start")
    doc["extra_headers"] = "{not json"
    event = parse_message(json.dumps(doc))
    assert isinstance(event, StreamStarted)
    assert event.custom_parameters == {}


def _parse_media(doc: dict[str, Any]) -> MediaReceived:
    event = parse_message(json.dumps(doc))
    assert isinstance(event, MediaReceived)
    return event


def test_media_track_defaults_to_inbound() -> None:
    doc = golden("media")
    del doc["media"]["track"]
    assert _parse_media(doc).track == "inbound"


def test_media_ignores_informational_fields_whatever_their_shape() -> None:
    doc = golden("media")
    for key in ("timestamp", "chunk"):
        del doc["media"][key]
    del doc["sequenceNumber"]
    doc["extra_headers"] = ["odd"]
    assert _parse_media(doc).payload == base64.b64decode(golden("media")["media"]["payload"])


def test_played_name_may_be_empty() -> None:
    doc = {"event": "playedStream", "streamId": STREAM_ID, "name": ""}
    assert parse_message(json.dumps(doc)) == MarkReceived(name="")


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
    ("no event", '{"streamId": "s1"}', "no 'event' field"),
    ("event not a string", '{"event": 7}', "'event' must be a string, got a number"),
    ("unknown event", '{"event": "hello"}', "unknown Plivo event 'hello'"),
    ("our own outbound event", '{"event": "checkpoint"}', "unknown Plivo event 'checkpoint'"),
    ("media without media", '{"event": "media"}', "missing media"),
    (
        "media not an object",
        '{"event": "media", "media": "AAAA"}',
        "media must be an object, got a string",
    ),
    (
        "media without payload",
        _with("media", lambda d: d["media"].pop("payload")),
        "missing media.payload",
    ),
    (
        "payload not a string",
        _with("media", lambda d: d["media"].update(payload=123)),
        "media.payload must be a base64 string, got a number",
    ),
    (
        "invalid base64",
        _with("media", lambda d: d["media"].update(payload="no+JhoaJjpz*")),
        "media.payload is not valid base64",
    ),
    (
        "base64 with bad padding",
        _with("media", lambda d: d["media"].update(payload="no+JhoaJjpz")),
        "media.payload is not valid base64",
    ),
    (
        "non-ascii payload",
        _with("media", lambda d: d["media"].update(payload="é+JhoaJjpz=")),
        "media.payload is not valid base64",
    ),
    (
        "track not a string",
        _with("media", lambda d: d["media"].update(track=["inbound"])),
        "media.track must be a string, got an array",
    ),
    ("start without start", '{"event": "start", "streamId": "s1"}', "missing start"),
    (
        "start without streamId",
        _with("start", lambda d: d["start"].pop("streamId")),
        "missing start.streamId",
    ),
    (
        "start with empty streamId",
        _with("start", lambda d: d["start"].update(streamId="")),
        "start.streamId must be a non-empty string, got an empty string",
    ),
    (
        "start without callId",
        _with("start", lambda d: d["start"].pop("callId")),
        "missing start.callId",
    ),
    (
        "callId not a string",
        _with("start", lambda d: d["start"].update(callId=42)),
        "start.callId must be a non-empty string, got a number",
    ),
    (
        "accountId not a string",
        _with("start", lambda d: d["start"].update(accountId=False)),
        "accountId must be a string, got a boolean",
    ),
    (
        "tracks not a list",
        _with("start", lambda d: d["start"].update(tracks="inbound")),
        "start.tracks must be a list of strings",
    ),
    (
        "tracks with a number",
        _with("start", lambda d: d["start"].update(tracks=["inbound", 2])),
        "start.tracks must be a list of strings",
    ),
    (
        "mediaFormat not an object",
        _with("start", lambda d: d["start"].update(mediaFormat="audio/x-mulaw")),
        "start.mediaFormat must be an object",
    ),
    (
        "bad sample rate",
        _with("start", lambda d: d["start"]["mediaFormat"].update(sampleRate="fast")),
        "start.mediaFormat.sampleRate must be a positive integer",
    ),
    (
        "zero sample rate",
        _with("start", lambda d: d["start"]["mediaFormat"].update(sampleRate=0)),
        "start.mediaFormat.sampleRate must be a positive integer",
    ),
    (
        "float sample rate",
        _with("start", lambda d: d["start"]["mediaFormat"].update(sampleRate=8000.5)),
        "start.mediaFormat.sampleRate must be a positive integer, got a number",
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
    (
        "dtmf with empty digit",
        _with("dtmf", lambda d: d["dtmf"].update(digit="")),
        "dtmf.digit must be a non-empty string, got an empty string",
    ),
    (
        "playedStream without name",
        _with("playedStream", lambda d: d.pop("name")),
        "Plivo playedStream: missing name",
    ),
    (
        "played with a numeric name",
        _with("played", lambda d: d.update(name=3)),
        "Plivo played: name must be a string, got a number",
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


# --- extra_headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "tenant=acme,voice=v1",
        "tenant=acme;voice=v1",
        '{"tenant": "acme", "voice": "v1"}',
        {"tenant": "acme", "voice": "v1"},
        " tenant = acme ; voice = v1 ",
        "tenant=acme;voice=v1;",
    ],
    ids=["commas", "semicolons", "json", "decoded", "spaces", "trailing separator"],
)
def test_extra_headers_in_every_shape(value: object) -> None:
    assert parse_extra_headers(value) == {"tenant": "acme", "voice": "v1"}


def test_extra_headers_documented_example_with_dashes() -> None:
    # What Plivo's own example sends back: values are not limited to what we may send.
    assert parse_extra_headers("userId=12345;sessionId=abc-xyz") == {
        "userId": "12345",
        "sessionId": "abc-xyz",
    }


def test_extra_headers_mixed_separators_and_equals_in_values() -> None:
    assert parse_extra_headers("a=1,b=2;c=x=y") == {"a": "1", "b": "2", "c": "x=y"}


def test_extra_headers_json_scalars_read_as_text() -> None:
    assert parse_extra_headers('{"userId": 12345, "ratio": 0.5, "name": "x"}') == {
        "userId": "12345",
        "ratio": "0.5",
        "name": "x",
    }


def test_extra_headers_empty_value_is_kept() -> None:
    assert parse_extra_headers("a=,b=2") == {"a": "", "b": "2"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {}),
        ("", {}),
        ("   ", {}),
        (",;,", {}),
        ("novalue", {}),
        ("=orphan,a=1", {"a": "1"}),
        ("a=1,,garbage,b=2", {"a": "1", "b": "2"}),
        ("{not json", {}),
        ('{"a": 1', {}),
        ("[1, 2]", {}),
        ('{"a": null, "b": true, "c": [1], "d": {"e": "f"}, "g": "h"}', {"g": "h"}),
        ({"a": None, "b": False, "c": "d"}, {"c": "d"}),
        ('{"": "x", " ": "y", "a": "b"}', {"a": "b"}),
        (42, {}),
        (["a=1"], {}),
        (b"a=1", {}),
    ],
)
def test_extra_headers_garbage_is_dropped_not_fatal(
    value: object, expected: dict[str, str]
) -> None:
    assert parse_extra_headers(value) == expected


# --- outbound ---------------------------------------------------------------------------------


def test_outbound_play_audio_matches_the_documented_shape() -> None:
    expected = golden("send_play_audio")
    audio = base64.b64decode(expected["media"]["payload"])
    out = PlivoCodec(STREAM_ID).media(audio)
    assert json.loads(out) == expected
    assert out == json.dumps(expected, separators=(",", ":"))  # compact, no extra fields
    assert out == (
        '{"event":"playAudio","media":{"contentType":"audio/x-mulaw","sampleRate":8000,'
        f'"payload":"{expected["media"]["payload"]}"}}}}'
    )


def test_outbound_checkpoint_matches_the_documented_shape() -> None:
    out = PlivoCodec(STREAM_ID).mark("utt-3")
    assert json.loads(out) == golden("send_checkpoint")
    assert out == f'{{"event":"checkpoint","streamId":"{STREAM_ID}","name":"utt-3"}}'


def test_outbound_clear_audio_matches_the_documented_shape() -> None:
    out = PlivoCodec(STREAM_ID).clear()
    assert json.loads(out) == golden("send_clear_audio")
    assert out == f'{{"event":"clearAudio","streamId":"{STREAM_ID}"}}'


def test_outbound_media_any_size() -> None:
    codec = PlivoCodec(STREAM_ID)
    for size in (1, 160, 800, 8000):
        audio = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        doc = json.loads(codec.media(audio))
        assert base64.b64decode(doc["media"]["payload"], validate=True) == audio


def test_outbound_media_refuses_an_empty_payload() -> None:
    with pytest.raises(ValueError, match="empty"):
        PlivoCodec(STREAM_ID).media(b"")


def test_checkpoint_names_and_stream_id_are_json_escaped() -> None:
    sid = 'id"\\\n'
    name = 'utt-3 "quoted" \\ \u00e9 \n'
    codec = PlivoCodec(sid)
    assert json.loads(codec.mark(name)) == {"event": "checkpoint", "streamId": sid, "name": name}
    assert json.loads(codec.clear()) == {"event": "clearAudio", "streamId": sid}


@pytest.mark.parametrize("name", ["", None])
def test_checkpoint_refuses_an_empty_name(name: Any) -> None:
    with pytest.raises(ValueError, match="checkpoint name"):
        PlivoCodec(STREAM_ID).mark(name)


@pytest.mark.parametrize("sid", ["", None, 5])
def test_codec_refuses_a_missing_stream_id(sid: Any) -> None:
    with pytest.raises(ValueError, match="stream_id"):
        PlivoCodec(sid)


def test_played_stream_echo_of_our_checkpoint_parses_to_its_name() -> None:
    sent = json.loads(PlivoCodec(STREAM_ID).mark("utt-7"))
    echo = {**sent, "event": "playedStream", "sequenceNumber": 20}
    assert parse_message(json.dumps(echo)) == MarkReceived("utt-7")


def test_codec_satisfies_the_outbound_protocol() -> None:
    codec: OutboundCodec = PlivoCodec(STREAM_ID)
    # Cleared checkpoints are never acknowledged: the session must not wait for them.
    assert codec.clear_acks_marks is False
    assert STREAM_ID in repr(codec)


# --- inbound: hostile input is bounded (issue 14) ---------------------------------------------
# Every bound from bridge.telephony.jsonfields, just inside and just past it; past it is always a
# ProtocolError (the session's counted malformed-message path) whose message echoes nothing.


def _refused(raw: str | bytes, message: str) -> ProtocolError:
    return assert_refused(parse_message, raw, message)


def _dtmf(digit: object) -> str:
    return _with("dtmf", lambda d: d["dtmf"].update(digit=digit))


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_every_dtmf_key_parses(digit: str) -> None:
    assert parse_message(_dtmf(digit)) == DtmfReceived(digit)


@pytest.mark.parametrize(
    "digit",
    ["55", "a", "b", "E", "٣", "5 ", "\x1b[31m", "5" * 100_000],
    ids=[
        "two keys",
        "lowercase a",
        "lowercase b",
        "E",
        "arabic digit",
        "space",
        "ansi",
        "100k digits",
    ],
)
def test_a_dtmf_digit_is_exactly_one_key(digit: str) -> None:
    _refused(_dtmf(digit), "dtmf.digit must be one key of 0-9, *, #, A-D")


def _start(**fields: object) -> str:
    return _with("start", lambda d: d["start"].update(fields))


@pytest.mark.parametrize("field", ["callId", "streamId", "accountId"])
def test_start_ids_are_bounded_to_128_characters(field: str) -> None:
    assert isinstance(parse_message(_start(**{field: "a" * MAX_ID_CHARS})), StreamStarted)
    _refused(_start(**{field: "a" * (MAX_ID_CHARS + 1)}), f"start.{field} is 129 characters")
    _refused(_start(**{field: "a" * 100_000}), f"start.{field} is 100000 characters")


@pytest.mark.parametrize("field", ["callId", "streamId", "accountId"])
@pytest.mark.parametrize("bad", ["id\x1b[2J", "id\r\nx", "id 1", "id/x", "idé", "id\x7f"])
def test_start_ids_have_a_safe_charset(field: str, bad: str) -> None:
    _refused(_start(**{field: bad}), f"start.{field} has characters outside")


def test_top_level_stream_id_is_held_to_the_same_rules() -> None:
    doc = golden("start")
    del doc["start"]["streamId"]
    doc["streamId"] = "s" * 129
    _refused(json.dumps(doc), "start.streamId is 129 characters")


def test_tracks_are_bounded_in_number_and_as_ids() -> None:
    assert isinstance(parse_message(_start(tracks=["inbound"] * 8)), StreamStarted)
    _refused(_start(tracks=["inbound"] * 9), "start.tracks lists 9 tracks, at most 8")
    _refused(_start(tracks=["\x1b[1minbound"]), "start.tracks has characters outside")


def test_media_track_is_held_to_the_id_rules() -> None:
    doc = golden("media")
    doc["media"]["track"] = "\x1b[31m"
    _refused(json.dumps(doc), "media.track has characters outside")
    doc["media"]["track"] = "x" * 129
    _refused(json.dumps(doc), "media.track is 129 characters")


@pytest.mark.parametrize("event", ["playedStream", "played"])
def test_checkpoint_names_are_printable_ascii_up_to_128_characters(event: str) -> None:
    def played(name: str) -> str:
        return json.dumps({"event": event, "streamId": STREAM_ID, "name": name})

    assert parse_message(played("u" * 128)) == MarkReceived("u" * 128)
    _refused(played("u" * 129), f"Plivo {event}: name is 129 characters")
    _refused(played("utt-1\x1b[0m"), "name has characters outside printable ASCII")


def test_numeric_strings_are_bounded_before_int() -> None:
    # int() refuses 4,300+ digits with a ValueError, which is not a ProtocolError.
    _refused(_start(mediaFormat={"sampleRate": "9" * 5000}), "sampleRate must be a positive")
    _refused(_start(mediaFormat={"sampleRate": "9" * 19}), "sampleRate must be a positive")
    _refused(_start(mediaFormat={"sampleRate": 10**12}), "sampleRate must be a positive")
    doc = golden("media")
    doc["media"]["timestamp"] = "9" * 5000  # never read
    assert _parse_media(doc).payload == base64.b64decode(golden("media")["media"]["payload"])


def test_media_payload_is_bounded_to_64_kib() -> None:
    doc = golden("media")
    doc["media"]["payload"] = base64.b64encode(b"\xff" * 65536).decode()
    assert len(_parse_media(doc).payload) == 65536
    doc["media"]["payload"] = base64.b64encode(b"\xff" * 65537).decode()
    _refused(json.dumps(doc), "media.payload is 65537 bytes, at most 65536 allowed")
    doc["media"]["payload"] = "A" * 87388
    _refused(json.dumps(doc), "87388 base64 characters, at most 87384 allowed")


def test_messages_are_bounded_before_parsing() -> None:
    raw = json.dumps({"event": "dtmf", "dtmf": {"digit": "1" * 200_000}})
    _refused(raw, "at most 131072 allowed")
    _refused(raw.encode(), "bytes, at most 131072 allowed")


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 5000 + "]" * 5000,
        '{"event": "playedStream", "name": ' + "[" * 3000 + "]" * 3000 + "}",
        b'{"event": "playedStream", "name": "\xc3\x28"}',
        b"\xfe\xff\x00\x01",
        '{"event": "playedStream", "name": "\\udfff"}',
        '{"event": "start", "start": {"mediaFormat": {"sampleRate": Infinity}}}',
    ],
    ids=[
        "deep array",
        "deep name",
        "invalid utf-8",
        "binary garbage",
        "lone surrogate",
        "infinity",
    ],
)
def test_hostile_json_is_a_protocol_error(raw: str | bytes) -> None:
    _refused(raw, "not valid JSON")


def test_unknown_event_names_reach_the_log_escaped() -> None:
    _refused('{"event": "\\u001b]0;owned\\u0007"}', "unknown Plivo event '\\x1b]0;owned\\x07'")


def _start_with_headers(value: object) -> str:
    return _with("start", lambda d: d.update(extra_headers=value))


def test_extra_headers_at_their_bounds_are_kept() -> None:
    pairs = {f"k{i:02}" + "k" * 61: "v" * 512 for i in range(32)}
    for shape in (
        pairs,
        json.dumps(pairs),
        ";".join(f"{k}={v}" for k, v in pairs.items()),
    ):
        event = parse_message(_start_with_headers(shape))
        assert isinstance(event, StreamStarted)
        assert event.custom_parameters == pairs


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (",".join(f"k{i}=v" for i in range(33)), "extra_headers has 33 entries, at most 32"),
        ({f"k{i}": None for i in range(33)}, "extra_headers has 33 entries"),
        (json.dumps({f"k{i}": None for i in range(33)}), "extra_headers has 33 entries"),
        ("k" * 65 + "=v", "a key of 65 characters"),
        ({"k": "v" * 513}, "a value of 513 characters"),
        ('{"k": "' + "v" * 513 + '"}', "a value of 513 characters"),
        ("tenant=\x1b[31macme", "holds control or bidirectional characters"),
        ({"tenant": "a\u2028b"}, "holds control or bidirectional characters"),
        ("a=1;" * 5000, "extra_headers is 20000 characters, at most 18690 allowed"),
    ],
    ids=[
        "33 pairs",
        "33 dropped entries",
        "33 json entries",
        "long key",
        "long value",
        "long json value",
        "ansi",
        "line separator",
        "long text",
    ],
)
def test_hostile_extra_headers_are_refused(value: object, message: str) -> None:
    _refused(_start_with_headers(value), message)
    with pytest.raises(ProtocolError, match=message.split(",")[0]):
        parse_extra_headers(value)
