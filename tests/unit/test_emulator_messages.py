"""The emulated Twilio: the messages it sends, and how strictly it judges the bridge's."""

import base64
import json
import re

import pytest
from twilio.request_validator import RequestValidator

from bridge.emulator.twilio_peer import (
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
from bridge.errors import ProtocolError

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
    parsed, problems = parse_outbound(_dumps(msg), SID)
    assert any(complaint in p for p in problems), problems
    assert (parsed is not None) is usable


def test_non_json_is_flagged_without_quoting_it() -> None:
    parsed, problems = parse_outbound("{not json " + FRAME_B64, SID)
    assert parsed is None
    assert len(problems) == 1 and "not JSON" in problems[0]
    assert FRAME_B64 not in problems[0]
