"""The emulated providers (Twilio, Plivo): the messages they send, how strictly they judge the
bridge's, and how the shared call leg acknowledges marks and clears (over an in-memory socket)."""

import asyncio
import base64
import json
import re
import time
import uuid
from typing import Any, cast

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from bridge.emulator.call import CallEmulator
from bridge.emulator.plivo_wire import (
    PlivoCallEmulator,
    answer_params,
    cleared_audio_message,
    parse_answer_xml,
    played_stream_message,
    signature_headers,
)
from bridge.emulator.plivo_wire import dtmf_message as plivo_dtmf
from bridge.emulator.plivo_wire import media_message as plivo_media
from bridge.emulator.plivo_wire import parse_outbound as plivo_parse
from bridge.emulator.plivo_wire import start_message as plivo_start
from bridge.emulator.twilio_wire import (
    TwilioCallEmulator,
    connected_message,
    dtmf_message,
    mark_message,
    media_message,
    new_sid,
    parse_outbound,
    parse_twiml,
    sign,
    start_message,
    stop_message,
    voice_webhook_form,
)
from bridge.emulator.wire import CallRefused, Checked
from bridge.errors import ProtocolError
from bridge.telephony import plivo, twilio
from bridge.telephony.events import (
    AudioCleared,
    DtmfReceived,
    MarkReceived,
    MediaReceived,
    StreamStarted,
)
from bridge.telephony.plivo import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    PlivoCodec,
    build_answer_xml,
    validate_signature,
)
from bridge.telephony.plivo import parse_message as bridge_parses_plivo
from bridge.telephony.twilio import TwilioCodec

SID = "MZ" + "ab" * 16
CALL = "CA" + "cd" * 16
ACCOUNT = "AC" + "ef" * 16
FRAME_B64 = base64.b64encode(b"\xff" * 160).decode()


def test_sids_look_like_twilio_ones() -> None:
    for prefix in ("CA", "AC", "MZ"):
        assert re.fullmatch(prefix + "[0-9a-f]{32}", new_sid(prefix))
    assert new_sid("MZ") != new_sid("MZ")


def test_connected_comes_first_without_stream_sid() -> None:
    msg = json.loads(connected_message())
    assert msg == {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def test_start_carries_ids_parameters_and_media_format() -> None:
    msg = json.loads(start_message(1, SID, CALL, ACCOUNT, {"tenant": "acme"}))
    assert msg["event"] == "start"
    assert msg["sequenceNumber"] == "1"
    assert msg["streamSid"] == SID
    start = msg["start"]
    assert start["streamSid"] == SID
    assert start["callSid"] == CALL
    assert start["accountSid"] == ACCOUNT
    assert start["tracks"] == ["inbound"]
    assert start["customParameters"] == {"tenant": "acme"}
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


def test_media_template_is_valid_json_with_string_numbers() -> None:
    text = media_message(7, 6, 100, FRAME_B64, SID)
    assert json.loads(text) == {
        "event": "media",
        "sequenceNumber": "7",
        "media": {"track": "inbound", "chunk": "6", "timestamp": "100", "payload": FRAME_B64},
        "streamSid": SID,
    }


def test_dtmf_mark_and_stop_shapes() -> None:
    assert json.loads(dtmf_message(3, SID, "#")) == {
        "event": "dtmf",
        "streamSid": SID,
        "sequenceNumber": "3",
        "dtmf": {"track": "inbound_track", "digit": "#"},
    }
    assert json.loads(mark_message(4, SID, 'utt "1"')) == {
        "event": "mark",
        "sequenceNumber": "4",
        "streamSid": SID,
        "mark": {"name": 'utt "1"'},
    }
    assert json.loads(stop_message(5, SID, CALL, ACCOUNT)) == {
        "event": "stop",
        "sequenceNumber": "5",
        "streamSid": SID,
        "stop": {"accountSid": ACCOUNT, "callSid": CALL},
    }


def test_voice_webhook_form_is_a_ringing_inbound_call() -> None:
    form = voice_webhook_form(CALL, ACCOUNT)
    assert form["CallSid"] == CALL
    assert form["AccountSid"] == ACCOUNT
    assert form["CallStatus"] == "ringing"
    assert form["Direction"] == "inbound"
    assert form["From"] and form["To"]


def test_signatures_validate_with_the_twilio_sdk() -> None:
    validator = RequestValidator("secret")
    form = voice_webhook_form(CALL, ACCOUNT)
    url = "https://bridge.example/twilio/voice"
    assert validator.validate(url, form, sign("secret", url, form))
    ws_url = "wss://bridge.example/twilio/stream"
    assert validator.validate(ws_url, {}, sign("secret", ws_url, {}))
    assert not validator.validate(ws_url, {}, sign("other", ws_url, {}))


# --- TwiML ---


def test_twiml_gives_stream_url_and_parameters() -> None:
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://h/twilio/stream"><Parameter name="tenant" value="acme"/>'
        '<Parameter name="empty" value=""/></Stream></Connect></Response>'
    )
    assert parse_twiml(twiml) == ("wss://h/twilio/stream", {"tenant": "acme", "empty": ""})


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("not xml at all", "did not answer TwiML"),
        ("<Say>hi</Say>", "root is <Say>"),
        ("<Response><Say>hi</Say></Response>", "no <Connect><Stream>"),
        ('<Response><Start><Stream url="wss://h/s"/></Start></Response>', "one-way"),
        ('<Response><Connect><Stream url="https://h/s"/></Connect></Response>', "WebSocket"),
        (
            '<Response><Connect><Stream url="wss://h/s"><Parameter value="x"/></Stream>'
            "</Connect></Response>",
            "without a name",
        ),
    ],
)
def test_bad_twiml_is_a_clear_protocol_error(body: str, complaint: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(complaint)):
        parse_twiml(body)


# --- what the bridge sends ---


def _dumps(msg: object) -> str:
    return json.dumps(msg)


def test_valid_outbound_messages_pass_without_problems() -> None:
    media = {"event": "media", "streamSid": SID, "media": {"payload": FRAME_B64}}
    msg, problems = parse_outbound(_dumps(media), SID)
    assert problems == []
    assert msg is not None and msg.event == "media" and msg.payload == b"\xff" * 160

    msg, problems = parse_outbound(
        _dumps({"event": "mark", "streamSid": SID, "mark": {"name": "utt-1"}}), SID
    )
    assert problems == [] and msg is not None and msg.name == "utt-1"

    msg, problems = parse_outbound(_dumps({"event": "clear", "streamSid": SID}), SID)
    assert problems == [] and msg is not None and msg.event == "clear"


def test_larger_media_in_frame_multiples_is_fine() -> None:
    payload = base64.b64encode(b"\x7f" * 1600).decode()
    msg, problems = parse_outbound(
        _dumps({"event": "media", "streamSid": SID, "media": {"payload": payload}}), SID
    )
    assert problems == [] and msg is not None and len(msg.payload) == 1600


@pytest.mark.parametrize(
    ("msg", "complaint", "usable"),
    [
        (
            {"event": "media", "streamSid": SID, "media": {"payload": FRAME_B64}, "seq": "1"},
            "unexpected fields ['seq']",
            True,
        ),
        (
            {
                "event": "media",
                "streamSid": SID,
                "media": {"payload": FRAME_B64, "track": "outbound"},
            },
            "unexpected fields ['track'] in 'media'",
            True,
        ),
        (
            {"event": "clear", "streamSid": SID, "mark": {"name": "x"}},
            "unexpected fields ['mark']",
            True,
        ),
        (
            {"event": "media", "streamSid": "MZ" + "00" * 16, "media": {"payload": FRAME_B64}},
            "is not this stream's",
            False,
        ),
        ({"event": "clear"}, "is not this stream's", False),
        ({"event": "media", "streamSid": SID, "media": {"payload": ""}}, "empty", False),
        ({"event": "media", "streamSid": SID, "media": {}}, "empty or missing payload", False),
        (
            {"event": "media", "streamSid": SID, "media": {"payload": "not base64!"}},
            "not valid base64",
            False,
        ),
        (
            {
                "event": "media",
                "streamSid": SID,
                "media": {"payload": base64.b64encode(b"\xff" * 100).decode()},
            },
            "100 bytes is not a multiple of 160",
            True,
        ),
        ({"event": "media", "streamSid": SID}, "missing the 'media' object", False),
        ({"event": "mark", "streamSid": SID, "mark": {"name": ""}}, "non-empty string", False),
        ({"event": "playAudio", "streamSid": SID}, "unknown event 'playAudio'", False),
        ({"streamSid": SID}, "unknown event None", False),
        (["media"], "not an object", False),
    ],
)
def test_strict_validator_flags_what_twilio_rejects(
    msg: object, complaint: str, usable: bool
) -> None:
    _assert_flagged(parse_outbound(_dumps(msg), SID), complaint, usable)


def _assert_flagged(checked: Checked, complaint: str, usable: bool) -> None:
    parsed, problems = checked
    assert any(complaint in p for p in problems), problems
    assert (parsed is not None) is usable


def test_non_json_is_flagged_without_quoting_it() -> None:
    parsed, problems = parse_outbound("{not json " + FRAME_B64, SID)
    assert parsed is None
    assert len(problems) == 1 and "not JSON" in problems[0]
    assert FRAME_B64 not in problems[0]


def test_the_bridge_codec_passes_the_twilio_validator() -> None:
    codec = TwilioCodec(SID)
    for text in (codec.media(b"\x7f" * 320), codec.mark("utt-1"), codec.clear()):
        parsed, problems = parse_outbound(text, SID)
        assert problems == [] and parsed is not None


# --- Plivo: the answer URL ---

STREAM = str(uuid.UUID(int=1))
CALL_UUID = str(uuid.UUID(int=2))
PLIVO_ACCOUNT = "MA" + "X" * 18


def test_answer_xml_from_the_bridge_gives_url_and_extra_headers() -> None:
    xml = build_answer_xml("ws://h/plivo/stream", {"userid": "default", "tenant": "acme"})
    assert parse_answer_xml(xml) == ("ws://h/plivo/stream", {"userid": "default", "tenant": "acme"})
    assert parse_answer_xml(build_answer_xml("wss://h/plivo/stream", {})) == (
        "wss://h/plivo/stream",
        {},
    )


_GOOD = 'bidirectional="true" contentType="audio/x-mulaw;rate=8000"'


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("not xml", "did not answer Plivo XML"),
        ("<Response><Speak>hi</Speak></Response>", "no <Stream>"),
        (
            '<Response><Stream contentType="audio/x-mulaw;rate=8000">ws://h/s</Stream></Response>',
            "bidirectional",
        ),
        ('<Response><Stream bidirectional="true">ws://h/s</Stream></Response>', "no contentType"),
        (
            '<Response><Stream bidirectional="true" contentType="audio/x-l16;rate=16000">'
            "ws://h/s</Stream></Response>",
            "streams only audio/x-mulaw;rate=8000",
        ),
        (f"<Response><Stream {_GOOD}>\n  wss://h/s\n</Stream></Response>", "whitespace"),
        (f"<Response><Stream {_GOOD}>https://h/s</Stream></Response>", "not a WebSocket URL"),
        (f'<Response><Stream {_GOOD} extraHeaders="a=1,b">ws://h/s</Stream></Response>', "'b'"),
        (f'<Response><Stream {_GOOD} extraHeaders="a=x-y">ws://h/s</Stream></Response>', "letters"),
        (
            f'<Response><Stream {_GOOD} extraHeaders="a={"1" * 600}">ws://h/s</Stream></Response>',
            "Plivo allows 512",
        ),
    ],
)
def test_bad_answer_xml_is_a_clear_protocol_error(body: str, complaint: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(complaint)):
        parse_answer_xml(body)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_plivo_signatures_validate_with_the_bridge(method: str) -> None:
    params = answer_params(CALL_UUID)
    url = "https://bridge.example/plivo/answer/default"
    if method == "GET":  # the parameters travel, and are signed, in the query string
        url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    signed = params if method == "POST" else {}
    headers = signature_headers("secret", method, url, signed)
    nonce, signature = headers[NONCE_HEADER], headers[SIGNATURE_HEADER]
    assert validate_signature("secret", method, url, nonce, signature, signed)
    assert not validate_signature("other", method, url, nonce, signature, signed)


def test_answer_params_are_an_inbound_call() -> None:
    params = answer_params(CALL_UUID)
    assert params["CallUUID"] == CALL_UUID
    assert params["Direction"] == "inbound"
    assert params["From"] and params["To"]


# --- Plivo: what it sends (sequenceNumber and chunk are numbers, timestamps strings) ---


def test_plivo_start_shape_and_the_bridge_reads_it() -> None:
    text = plivo_start(1, STREAM, CALL_UUID, PLIVO_ACCOUNT, "userid=default;tenant=acme")
    assert json.loads(text) == {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": CALL_UUID,
            "streamId": STREAM,
            "accountId": PLIVO_ACCOUNT,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": "userid=default;tenant=acme",
    }
    event = bridge_parses_plivo(text)
    assert isinstance(event, StreamStarted)
    assert (event.stream_id, event.call_id) == (STREAM, CALL_UUID)
    assert event.custom_parameters == {"userid": "default", "tenant": "acme"}


def test_plivo_media_template_is_valid_json_with_number_fields() -> None:
    text = plivo_media(7, 6, 1718000000100, FRAME_B64, STREAM, 'odd"value')
    assert json.loads(text) == {
        "event": "media",
        "sequenceNumber": 7,
        "streamId": STREAM,
        "media": {
            "track": "inbound",
            "timestamp": "1718000000100",
            "chunk": 6,
            "payload": FRAME_B64,
        },
        "extra_headers": 'odd"value',
    }
    event = bridge_parses_plivo(text)
    assert isinstance(event, MediaReceived) and event.payload == b"\xff" * 160


def test_plivo_dtmf_ack_and_cleared_shapes() -> None:
    text = plivo_dtmf(3, STREAM, "#", 1718000000500)
    assert json.loads(text) == {
        "event": "dtmf",
        "sequenceNumber": 3,
        "streamId": STREAM,
        "dtmf": {"track": "inbound", "digit": "#", "timestamp": "1718000000500"},
    }
    assert bridge_parses_plivo(text) == DtmfReceived("#")
    text = played_stream_message(4, STREAM, 'utt "1"')
    assert json.loads(text) == {
        "event": "playedStream",
        "sequenceNumber": 4,
        "streamId": STREAM,
        "name": 'utt "1"',
    }
    assert bridge_parses_plivo(text) == MarkReceived('utt "1"')
    text = cleared_audio_message(5, STREAM)
    assert json.loads(text) == {"event": "clearedAudio", "sequenceNumber": 5, "streamId": STREAM}
    assert isinstance(bridge_parses_plivo(text), AudioCleared)


# --- Plivo: what it accepts ---


def _play(**media: object) -> dict[str, object]:
    return {
        "event": "playAudio",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": FRAME_B64} | media,
    }


def test_the_bridge_codec_passes_the_plivo_validator() -> None:
    codec = PlivoCodec(STREAM)
    parsed, problems = plivo_parse(codec.media(b"\x7f" * 1600), STREAM)
    assert problems == [] and parsed is not None
    assert parsed.event == "media" and parsed.payload == b"\x7f" * 1600
    parsed, problems = plivo_parse(codec.mark("utt-1"), STREAM)
    assert (
        problems == [] and parsed is not None and (parsed.event, parsed.name) == ("mark", "utt-1")
    )
    parsed, problems = plivo_parse(codec.clear(), STREAM)
    assert problems == [] and parsed is not None and parsed.event == "clear"


@pytest.mark.parametrize(
    ("msg", "complaint", "usable"),
    [
        (_play() | {"streamId": STREAM}, "unexpected fields ['streamId']", True),
        (_play(track="outbound"), "unexpected fields ['track'] in 'media'", True),
        (_play(contentType="audio/x-l16"), "contentType 'audio/x-l16' is not the stream's", True),
        (_play(contentType=None), "contentType None", True),
        (_play(sampleRate=16000), "sampleRate 16000 is not the number 8000", True),
        (_play(sampleRate="8000"), "sampleRate '8000'", True),
        (_play(payload=""), "empty or missing payload", False),
        (_play(payload="not base64!"), "not valid base64", False),
        (
            _play(payload=base64.b64encode(b"\xff" * 100).decode()),
            "100 bytes is not a multiple of 160",
            True,
        ),
        ({"event": "playAudio"}, "missing the 'media' object", False),
        ({"event": "checkpoint", "streamId": "other", "name": "a"}, "is not this stream's", False),
        ({"event": "checkpoint", "name": "a"}, "streamId None is not this stream's", False),
        ({"event": "checkpoint", "streamId": STREAM, "name": ""}, "non-empty string", False),
        (
            {"event": "checkpoint", "streamId": STREAM, "name": "a", "mark": {}},
            "unexpected fields ['mark']",
            True,
        ),
        ({"event": "clearAudio", "streamId": "other"}, "is not this stream's", False),
        ({"event": "clearAudio", "streamId": STREAM, "x": 1}, "unexpected fields ['x']", True),
        ({"event": "media", "streamSid": STREAM}, "unknown event 'media' (Plivo accepts", False),
        ({"event": "clear", "streamId": STREAM}, "unknown event 'clear'", False),
    ],
)
def test_strict_validator_flags_what_plivo_rejects(
    msg: object, complaint: str, usable: bool
) -> None:
    _assert_flagged(plivo_parse(_dumps(msg), STREAM), complaint, usable)


# --- the shared call leg, over an in-memory socket ---


class FakeSocket:
    """Stands in for aiohttp's client WebSocket: records what the emulator sends and delivers
    what a test feeds it as the bridge."""

    close_code = 1000

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.media_sent = asyncio.Event()
        self._inbox: asyncio.Queue[aiohttp.WSMessage | None] = asyncio.Queue()

    def feed(self, msg: object) -> None:
        self._inbox.put_nowait(aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, json.dumps(msg), None))

    async def send_str(self, text: str) -> None:
        self.sent.append(json.loads(text))
        if self.sent[-1]["event"] == "media":
            self.media_sent.set()

    async def close(self) -> None:
        self._inbox.put_nowait(None)

    def exception(self) -> None:
        return None

    def get_extra_info(self, name: str) -> None:
        return None

    def __aiter__(self) -> "FakeSocket":
        return self

    async def __anext__(self) -> aiohttp.WSMessage:
        msg = await self._inbox.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    def events(self) -> list[str]:
        # Caller audio flows all along: leave it out.
        return [m["event"] for m in self.sent if m["event"] != "media"]

    def first(self, event: str) -> dict[str, Any]:
        return next(m for m in self.sent if m["event"] == event)


class FakeSession:
    def __init__(self) -> None:
        self.socket = FakeSocket()
        self.headers: dict[str, str] = {}

    async def ws_connect(self, url: str, *, headers: dict[str, str], **_: object) -> FakeSocket:
        self.headers = headers
        return self.socket


async def _connected(
    cls: type[CallEmulator],
    url: str = "ws://bridge.example/stream",
    **options: Any,
) -> tuple[CallEmulator, FakeSession]:
    session = FakeSession()
    call = cls(cast(aiohttp.ClientSession, session), url, **options)
    await call.connect(greetings=1)
    return call, session


async def _settle(call: CallEmulator, marks: int) -> None:
    async with asyncio.timeout(2):
        await call.wait_for_marks(marks)


_SECOND_B64 = base64.b64encode(b"\x7f" * 8000).decode()  # still playing when a clear comes


async def test_plivo_leg_starts_without_connected_and_acks_a_played_checkpoint() -> None:
    call, session = await _connected(PlivoCallEmulator, parameters={"userid": "default"})
    ws = session.socket
    assert ws.sent[0]["event"] == "start" and ws.sent[0]["sequenceNumber"] == 1
    assert ws.sent[0]["extra_headers"] == "userid=default"
    assert uuid.UUID(call.call_sid) and uuid.UUID(call.stream_sid)
    ws.feed({"event": "checkpoint", "streamId": call.stream_sid, "name": "utt-0"})  # nothing queued
    await _settle(call, 1)
    await call.stop()
    assert ws.events() == ["start", "playedStream"]  # no stop message: the socket just closes
    assert ws.first("playedStream")["name"] == "utt-0"
    seqs = [m["sequenceNumber"] for m in ws.sent]
    assert seqs == list(range(1, len(seqs) + 1))
    report = call.report()
    assert report.provider == "plivo" and report.ok and report.marks_echoed == 1


async def test_plivo_clear_drops_pending_checkpoints_unacknowledged() -> None:
    call, session = await _connected(PlivoCallEmulator)
    ws = session.socket
    ws.feed(_play(payload=_SECOND_B64))
    ws.feed({"event": "checkpoint", "streamId": call.stream_sid, "name": "utt-0"})
    ws.feed({"event": "clearAudio", "streamId": call.stream_sid})
    await _settle(call, 1)  # the dropped checkpoint ends the wait, though never acknowledged
    await call.wait_cleared()
    await call.stop()
    assert ws.events() == ["start", "clearedAudio"]
    assert len(call.clear_times) == 1
    report = call.report()
    assert report.ok
    assert (report.marks_echoed, report.marks_dropped) == (0, 1)
    assert report.utterances[0].cleared and report.utterances[0].playout_done_s is not None


async def test_twilio_clear_echoes_pending_marks() -> None:
    call, session = await _connected(TwilioCallEmulator)
    ws = session.socket
    ws.feed({"event": "media", "streamSid": call.stream_sid, "media": {"payload": _SECOND_B64}})
    ws.feed({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "utt-0"}})
    ws.feed({"event": "clear", "streamSid": call.stream_sid})
    await _settle(call, 1)
    await call.stop()
    assert ws.events() == ["connected", "start", "mark", "stop"]
    report = call.report()
    assert report.provider == "twilio" and report.ok
    assert (report.marks_echoed, report.marks_dropped) == (1, 0)
    assert report.utterances[0].cleared


async def test_plivo_upgrade_is_signed_as_a_get_of_the_http_url() -> None:
    call, session = await _connected(
        PlivoCallEmulator, "wss://bridge.example/plivo/stream", auth_token="secret"
    )
    await call.abort()
    nonce, signature = session.headers[NONCE_HEADER], session.headers[SIGNATURE_HEADER]
    url = "https://bridge.example/plivo/stream"
    assert validate_signature("secret", "GET", url, nonce, signature, {})


async def test_plivo_timestamps_are_wall_clock_ms_strings() -> None:
    call, session = await _connected(PlivoCallEmulator)
    async with asyncio.timeout(2):  # the first caller frame is due at once: the clock's next tick
        await session.socket.media_sent.wait()
    await call.send_dtmf("5")
    await call.abort()
    ws = session.socket
    dtmf = ws.first("dtmf")["dtmf"]
    assert (dtmf["track"], dtmf["digit"]) == ("inbound", "5")
    assert abs(int(dtmf["timestamp"]) - time.time() * 1000) < 60_000
    media = ws.first("media")
    assert media["media"]["chunk"] == 1 and isinstance(media["media"]["timestamp"], str)


async def test_plivo_rejects_twilio_messages_as_violations() -> None:
    call, session = await _connected(PlivoCallEmulator)
    session.socket.feed({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "x"}})
    session.socket.feed({"event": "checkpoint", "streamId": call.stream_sid, "name": "utt-0"})
    await _settle(call, 1)
    await call.stop()
    assert call.report().protocol_violations == [
        "unknown event 'mark' (Plivo accepts playAudio, checkpoint, clearAudio)"
    ]


@pytest.mark.parametrize("document, parse, said", [
    (twilio.build_busy_twiml(), parse_twiml, "<Reject reason='busy'>"),
    (twilio.build_busy_twiml("Lines are busy."), parse_twiml, "saying 'Lines are busy.'"),
    (plivo.build_busy_xml(), parse_answer_xml, "<Hangup reason='busy'>"),
    (plivo.build_busy_xml("Lines are busy."), parse_answer_xml, "saying 'Lines are busy.'"),
])
def test_the_bridges_busy_answers_are_refusals_not_broken_documents(
        document: str, parse: Any, said: str) -> None:
    with pytest.raises(CallRefused, match=re.escape(said)):
        parse(document)
