"""Twilio Media Streams (bidirectional, `<Connect><Stream>`): message codec, TwiML, signatures.

Inbound parsing is strict about the fields we act on (streamSid, callSid, media payload, DTMF digit,
mark name) and lenient about informational ones (protocol/version, accountSid, tracks,
customParameters, mediaFormat, media track/timestamp): those fall back to a default when absent,
but a value of the wrong type is still an error. Error messages never quote the payload.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from bridge.errors import ProtocolError
from bridge.telephony.events import (
    Connected,
    DtmfReceived,
    InboundEvent,
    MarkReceived,
    MediaReceived,
    StreamStarted,
    StreamStopped,
)

# Bound once: the media path runs ~50 times a second per call.
_a2b_base64 = binascii.a2b_base64
_b2a_base64 = binascii.b2a_base64
_loads = orjson.loads


def parse_message(raw: str | bytes) -> InboundEvent:
    """Parse one text frame from Twilio into a provider-neutral event."""
    try:
        msg = _loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"Twilio message is not valid JSON: {exc}") from exc
    if type(msg) is not dict:
        raise ProtocolError(f"Twilio message is not a JSON object but {_json_type(msg)}")
    event = msg.get("event")
    if event == "media":  # nearly every message: checked before anything else
        return _parse_media(msg)
    if event is None:
        raise ProtocolError("Twilio message has no 'event' field")
    if type(event) is not str:
        raise ProtocolError(f"Twilio message 'event' must be a string, got {_json_type(event)}")
    parser = _PARSERS.get(event)
    if parser is None:
        raise ProtocolError(f"unknown Twilio event {event[:40]!r}")
    return parser(msg)


def _parse_media(msg: dict[str, Any]) -> MediaReceived:
    media = msg.get("media")
    if type(media) is not dict:
        raise _bad_field("media", "media", media, "an object")
    payload = media.get("payload")
    if type(payload) is not str:
        raise _bad_field("media", "media.payload", payload, "a base64 string")
    try:
        audio = _a2b_base64(payload, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise ProtocolError(f"Twilio media: media.payload is not valid base64 ({exc})") from exc
    track = media.get("track", "inbound")
    if type(track) is not str:
        raise _bad_field("media", "media.track", track, "a string")
    return MediaReceived(audio, _timestamp(media.get("timestamp")), track)


def _timestamp(value: object) -> int | None:
    # Twilio sends a decimal string. It only feeds tracing, so an odd value must not cost the
    # caller 20 ms of audio: anything that is not an integer reads as "unknown".
    if type(value) is str:
        return int(value) if value.isascii() and value.isdigit() else None
    if type(value) is int:
        return value
    return None


def _parse_start(msg: dict[str, Any]) -> StreamStarted:
    start = _object(msg, "start", "start")
    # The sid is documented both inside `start` and at the top level; either will do.
    stream_sid = start.get("streamSid", msg.get("streamSid"))
    if type(stream_sid) is not str or not stream_sid:
        raise _bad_field("start", "start.streamSid", stream_sid, "a non-empty string")
    call_sid = start.get("callSid")
    if type(call_sid) is not str or not call_sid:
        raise _bad_field("start", "start.callSid", call_sid, "a non-empty string")
    account_sid = _optional_str(start, "accountSid", "start", "")
    tracks = start.get("tracks", [])
    if type(tracks) is not list or not all(type(t) is str for t in tracks):
        raise _bad_field("start", "start.tracks", tracks, "a list of strings")
    params = start.get("customParameters", {})
    if type(params) is not dict or not all(type(v) is str for v in params.values()):
        raise _bad_field("start", "start.customParameters", params, "an object with string values")
    fmt = start.get("mediaFormat", {})
    if type(fmt) is not dict:
        raise _bad_field("start", "start.mediaFormat", fmt, "an object")
    encoding = _optional_str(fmt, "encoding", "start.mediaFormat", "audio/x-mulaw")
    rate = fmt.get("sampleRate", 8000)
    # Documented as a number; tolerate "8000" like the other numbers Twilio sends as strings.
    if type(rate) is str and rate.isascii() and rate.isdigit():
        rate = int(rate)
    if type(rate) is not int or rate <= 0:
        raise _bad_field("start", "start.mediaFormat.sampleRate", rate, "a positive integer")
    return StreamStarted(
        stream_id=stream_sid,
        call_id=call_sid,
        account_id=account_sid,
        tracks=tuple(tracks),
        custom_parameters=params,
        encoding=encoding,
        sample_rate=rate,
    )


def _parse_connected(msg: dict[str, Any]) -> Connected:
    return Connected(
        protocol=_optional_str(msg, "protocol", "connected", ""),
        version=_optional_str(msg, "version", "connected", ""),
    )


def _parse_dtmf(msg: dict[str, Any]) -> DtmfReceived:
    digit = _object(msg, "dtmf", "dtmf").get("digit")
    if type(digit) is not str or not digit:
        raise _bad_field("dtmf", "dtmf.digit", digit, "a non-empty string")
    return DtmfReceived(digit)


def _parse_mark(msg: dict[str, Any]) -> MarkReceived:
    name = _object(msg, "mark", "mark").get("name")
    if type(name) is not str:
        raise _bad_field("mark", "mark.name", name, "a string")
    return MarkReceived(name)


def _parse_stop(msg: dict[str, Any]) -> StreamStopped:
    return StreamStopped()


_PARSERS: dict[str, Callable[[dict[str, Any]], InboundEvent]] = {
    "connected": _parse_connected,
    "start": _parse_start,
    "dtmf": _parse_dtmf,
    "mark": _parse_mark,
    "stop": _parse_stop,
}


def _object(msg: dict[str, Any], key: str, event: str) -> dict[str, Any]:
    value = msg.get(key)
    if type(value) is not dict:
        raise _bad_field(event, key, value, "an object")
    return value


def _optional_str(obj: dict[str, Any], key: str, where: str, default: str) -> str:
    value = obj.get(key, default)
    if type(value) is not str:
        raise ProtocolError(f"Twilio {where}: {key} must be a string, got {_json_type(value)}")
    return value


def _bad_field(event: str, field: str, value: object, expected: str) -> ProtocolError:
    if value is None:
        return ProtocolError(f"Twilio {event}: missing {field} (expected {expected})")
    return ProtocolError(f"Twilio {event}: {field} must be {expected}, got {_json_type(value)}")


def _json_type(value: object) -> str:
    # Names the JSON type instead of echoing the value: it may be megabytes of base64 audio.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class TwilioCodec:
    """Outbound messages for one Twilio stream, exactly the documented shapes, compact JSON."""

    __slots__ = ("_clear", "_mark_prefix", "_media_prefix", "stream_sid")

    # Twilio answers a clear by echoing every pending mark.
    clear_acks_marks = True

    def __init__(self, stream_sid: str) -> None:
        if not isinstance(stream_sid, str) or not stream_sid:
            raise ValueError("stream_sid must be a non-empty string")
        self.stream_sid = stream_sid
        # Encoded once so every media() is two concatenations around the base64.
        sid = orjson.dumps(stream_sid).decode()
        self._media_prefix = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"

    def media(self, payload: bytes) -> str:
        if not payload:
            raise ValueError("Twilio rejects an empty media payload")
        return self._media_prefix + _b2a_base64(payload, newline=False).decode("ascii") + '"}}'

    def mark(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise ValueError("mark name must be a non-empty string")
        return self._mark_prefix + orjson.dumps(name).decode() + "}}"

    def clear(self) -> str:
        return self._clear

    def __repr__(self) -> str:
        return f"TwilioCodec(stream_sid={self.stream_sid!r})"


def build_twiml(stream_url: str, parameters: Mapping[str, str]) -> str:
    """TwiML that connects the call to our bidirectional media stream.

    Twilio drops a query string from the stream URL, so context travels as <Parameter>s
    (they come back in start.customParameters).
    """
    if "?" in stream_url:
        raise ValueError(
            f"stream URL {stream_url!r} has a query string, which Twilio drops: "
            "pass the values as parameters instead"
        )
    if not stream_url.startswith(("wss://", "ws://")):
        raise ValueError(f"stream URL {stream_url!r} must start with wss:// (or ws:// locally)")
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response.to_xml())


def validate_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """True when `signature` (X-Twilio-Signature) matches `url` + form `params`.

    `url` is the public URL Twilio requested (see bridge.telephony.urls); for the WebSocket
    upgrade pass the wss:// URL and `{}`. `params` must be a mapping: given a string, the SDK
    treats it as a JSON body and raises TypeError.
    """
    # An empty token would make anyone's HMAC-with-empty-key signature valid.
    if not signature or not auth_token:
        return False
    return bool(RequestValidator(auth_token).validate(url, params, signature))


def compute_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for this request (for the emulator and tests)."""
    return str(RequestValidator(auth_token).compute_signature(url, params))
