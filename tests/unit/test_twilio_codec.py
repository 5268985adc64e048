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
from bridge.telephony.jsonfields import (
    MAX_ID_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_TRACKS,
)
from bridge.telephony.twilio import TwilioCodec, parse_message
from tests.protocol_refusals import assert_refused

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


def test_media_timestamp_is_never_read_so_never_fatal() -> None:
    doc = golden("media_inbound")
    payload = base64.b64decode(doc["media"]["payload"])
    del doc["media"]["timestamp"]
    assert _parse_media(doc).payload == payload
    for odd in ("soon", "-5", "²", None, 1.5, True, "9" * 5000, 2**63):
        doc["media"]["timestamp"] = odd
        assert _parse_media(doc).payload == payload


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
    ["11", "a", "d", "E", "٣", " 1", "1\n", "\x1b[31m", "1" * 1_000_00],
    ids=[
        "two keys",
        "lowercase a",
        "lowercase d",
        "E",
        "arabic digit",
        "space",
        "newline",
        "ansi",
        "100k digits",
    ],
)
def test_a_dtmf_digit_is_exactly_one_key(digit: str) -> None:
    _refused(_dtmf(digit), "dtmf.digit must be one key of 0-9, *, #, A-D")


def _start(**fields: object) -> str:
    return _with("start", lambda d: d["start"].update(fields))


@pytest.mark.parametrize("field", ["callSid", "streamSid", "accountSid"])
def test_start_ids_are_bounded_to_128_characters(field: str) -> None:
    event = parse_message(_start(**{field: "C" * MAX_ID_CHARS}))
    assert isinstance(event, StreamStarted)
    _refused(_start(**{field: "C" * (MAX_ID_CHARS + 1)}), f"start.{field} is 129 characters")
    _refused(_start(**{field: "C" * 100_000}), f"start.{field} is 100000 characters")


@pytest.mark.parametrize("field", ["callSid", "streamSid", "accountSid"])
@pytest.mark.parametrize(
    "bad", ["CA\x1b[2J", "CA\nforged log line", "CA 1", "CA/../x", "CAé", "CA\x00", "CA\u202e"]
)
def test_start_ids_have_a_safe_charset(field: str, bad: str) -> None:
    _refused(_start(**{field: bad}), f"start.{field} has characters outside")


def test_start_ids_take_every_documented_shape() -> None:
    event = parse_message(_start(callSid="CA" + "0f" * 16, streamSid="MZ-a_b.c:d"))
    assert isinstance(event, StreamStarted)
    assert (event.call_id, event.stream_id) == ("CA" + "0f" * 16, "MZ-a_b.c:d")


def test_top_level_stream_sid_is_held_to_the_same_rules() -> None:
    doc = golden("start")
    del doc["start"]["streamSid"]
    doc["streamSid"] = "MZ\x1b[0m"
    _refused(json.dumps(doc), "start.streamSid has characters outside")


def test_tracks_are_bounded_in_number_and_as_ids() -> None:
    event = parse_message(_start(tracks=["inbound"] * MAX_TRACKS))
    assert isinstance(event, StreamStarted)
    assert len(event.tracks) == MAX_TRACKS
    _refused(_start(tracks=["inbound"] * (MAX_TRACKS + 1)), "start.tracks lists 9 tracks")
    _refused(_start(tracks=["in\x1bbound"]), "start.tracks has characters outside")
    _refused(_start(tracks=["i" * 129]), "start.tracks is 129 characters")


def _media(**fields: object) -> str:
    return _with("media_inbound", lambda d: d["media"].update(fields))


def test_media_track_is_held_to_the_id_rules() -> None:
    assert (
        _parse_media(
            golden("media_inbound") | {"media": {"payload": "/w==", "track": "inbound_track"}}
        ).track
        == "inbound_track"
    )
    assert isinstance(parse_message(_media(track="t" * 128)), MediaReceived)
    _refused(_media(track="t" * 129), "media.track is 129 characters")
    _refused(_media(track="\x1b]0;pwned\x07"), "media.track has characters outside")


def test_mark_names_are_printable_ascii_up_to_128_characters() -> None:
    name = "n" * MAX_ID_CHARS
    assert parse_message(_with("mark", lambda d: d["mark"].update(name=name))) == MarkReceived(name)
    _refused(_with("mark", lambda d: d["mark"].update(name=name + "n")), "mark.name is 129")
    for bad in ("utt-1\x1b[31m", "utt\n1", "utt-é"):
        _refused(
            _with("mark", lambda d, b=bad: d["mark"].update(name=b)),
            "mark.name has characters outside printable ASCII",
        )


def test_connected_fields_are_held_to_the_id_rules() -> None:
    _refused('{"event": "connected", "protocol": "Call\\u001b[1m"}', "protocol has characters")
    _refused(json.dumps({"event": "connected", "version": "1" * 129}), "version is 129")


def test_numeric_strings_are_bounded_before_int() -> None:
    # int() refuses 4,300+ digits with a ValueError, which is not a ProtocolError.
    five_thousand = "9" * 5000
    _refused(
        _start(mediaFormat={"sampleRate": five_thousand}),
        "start.mediaFormat.sampleRate must be a positive integer",
    )
    _refused(_start(mediaFormat={"sampleRate": "1" * 19}), "sampleRate must be a positive")
    _refused(_start(mediaFormat={"sampleRate": 2**31}), "sampleRate must be a positive")
    event = parse_message(_start(mediaFormat={"sampleRate": "0" * 14 + "8000"}))
    assert isinstance(event, StreamStarted) and event.sample_rate == 8000


def test_encoding_is_a_bounded_media_type() -> None:
    event = parse_message(_start(mediaFormat={"encoding": "audio/x-l16;rate=16000"}))
    assert isinstance(event, StreamStarted) and event.encoding == "audio/x-l16;rate=16000"
    _refused(_start(mediaFormat={"encoding": "audio/x-mulaw\x1b[5m"}), "encoding has characters")
    _refused(_start(mediaFormat={"encoding": "a" * 65}), "encoding is 65 characters")


def test_custom_parameters_are_bounded() -> None:
    at_bounds = {f"k{i:02}" + "k" * 61: "v" * 512 for i in range(32)}
    event = parse_message(_start(customParameters=at_bounds))
    assert isinstance(event, StreamStarted) and event.custom_parameters == at_bounds
    _refused(_start(customParameters={f"k{i}": "v" for i in range(33)}), "has 33 entries")
    _refused(_start(customParameters={"k" * 65: "v"}), "a key of 65 characters")
    _refused(_start(customParameters={"": "v"}), "a key of 0 characters")
    _refused(_start(customParameters={"k": "v" * 513}), "a value of 513 characters")
    for bad in ({"k": "\x1b[31mred"}, {"k\x00": "v"}, {"k": "a\u202eb"}, {"k": "a\nb"}):
        _refused(_start(customParameters=bad), "holds control or bidirectional characters")
    _refused(_start(customParameters={"k": ["v"]}), "an object with string values")


def test_custom_parameters_are_a_copy() -> None:
    event = parse_message(golden_text("start"))
    assert isinstance(event, StreamStarted)
    assert event.custom_parameters == golden("start")["start"]["customParameters"]


def test_media_payload_is_bounded_to_64_kib() -> None:
    at_bound = base64.b64encode(b"\x7f" * MAX_PAYLOAD_BYTES).decode()
    event = parse_message(_media(payload=at_bound))
    assert isinstance(event, MediaReceived) and len(event.payload) == 65536
    # One byte more is still 87,384 characters (the last group holds 1 to 3 bytes)...
    one_more = base64.b64encode(b"\x7f" * (MAX_PAYLOAD_BYTES + 1)).decode()
    assert len(one_more) == len(at_bound)
    _refused(_media(payload=one_more), "media.payload is 65537 bytes, at most 65536 allowed")
    # ...and a longer text is refused before it is decoded.
    _refused(_media(payload=at_bound + "AAAA"), "87388 base64 characters, at most 87384 allowed")


def test_messages_are_bounded_before_parsing() -> None:
    raw = '{"event": "dtmf", "pad": "' + "x" * MAX_MESSAGE_CHARS + '"}'
    _refused(raw, f"message of {len(raw)} characters, at most 131072 allowed")
    _refused(raw.encode(), "bytes, at most 131072 allowed")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[" * 5000 + "]" * 5000, "not valid JSON"),
        ('{"event": "mark", "mark": ' + "{" * 2000 + "}" * 2000 + "}", "not valid JSON"),
        (b'{"event": "dtmf", "dtmf": {"digit": "\xff"}}', "not valid JSON"),
        (b"\x80\x81\x82", "not valid JSON"),
        ('{"event": "dtmf", "dtmf": {"digit": "\\ud800"}}', "not valid JSON"),
        ('{"event": "start", "start": {"mediaFormat": {"sampleRate": NaN}}}', "not valid JSON"),
        ('{"event": "start", "start": {"mediaFormat": {"sampleRate": 1e400}}}', "not valid JSON"),
        ('{"event": "\\u001b[31mhello"}', "unknown Twilio event '\\x1b[31mhello'"),
        (
            '{"event": "dtmf", "dtmf": ' + "[" * 100 + "]" * 100 + "}",
            "dtmf must be an object, got an array",
        ),
        (
            '{"event": "media", "media": {"payload": "/w==", "track": {"a": 1}}}',
            "media.track must be a string, got an object",
        ),
        (
            '{"event": "media", "media": {"payload": "/w==", "track": ["x"]}}',
            "media.track must be a string, got an array",
        ),
    ],
    ids=[
        "deep array",
        "deep object",
        "invalid utf-8",
        "binary garbage",
        "lone surrogate",
        "NaN",
        "infinity",
        "ansi event name",
        "nested dtmf",
        "track object",
        "track array",
    ],
)
def test_every_hostile_parse_is_a_protocol_error(raw: str | bytes, message: str) -> None:
    _refused(raw, message)


def test_huge_integers_and_floats_never_escape() -> None:
    # orjson reads integers past 64 bits as floats; neither may reach int() or a str() that
    # ends up in a log.
    for value in ("1" + "0" * 30, "-" + "9" * 25, "1.5e300", "-0"):
        raw = (
            '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", '
            f'"mediaFormat": {{"sampleRate": {value}}}}}}}'
        )
        _refused(raw, "sampleRate must be a positive integer")
