"""Twilio Media Streams (bidirectional, `<Connect><Stream>`): message codec, TwiML, signatures.

Inbound parsing is strict about the fields we act on (streamSid, callSid, media payload, DTMF digit,
mark name) and lenient about informational ones (protocol/version, accountSid, tracks,
customParameters, mediaFormat, media track/timestamp): those fall back to a default when absent,
but a value of the wrong type is still an error. Ids, DTMF digits, mark names, custom
parameters and payloads are bounded (see bridge.telephony.jsonfields). Error messages never quote
the payload.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any

import orjson
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from bridge.telephony.events import (
    Connected,
    DtmfReceived,
    MarkReceived,
    StreamStarted,
    StreamStopped,
)
from bridge.telephony.jsonfields import EventParser, Fields

_FIELDS = Fields("Twilio")
# Bound once: the media path runs ~50 times a second per call.
_b2a_base64 = binascii.b2a_base64


def _parse_start(msg: dict[str, Any]) -> StreamStarted:
    start = _FIELDS.require_object(msg, "start", "start")
    # The sid is documented both inside `start` and at the top level; either will do.
    stream_sid = _FIELDS.identifier(
        start.get("streamSid", msg.get("streamSid")), "start", "start.streamSid", required=True
    )
    call_sid = _FIELDS.identifier(start.get("callSid"), "start", "start.callSid", required=True)
    account_sid = _FIELDS.identifier(
        start.get("accountSid", ""), "start", "start.accountSid", required=False
    )
    tracks = _FIELDS.tracks(start)
    params = start.get("customParameters", {})
    if type(params) is not dict or not all(type(v) is str for v in params.values()):
        raise _FIELDS.bad_field(
            "start", "start.customParameters", params, "an object with string values"
        )
    encoding, rate = _FIELDS.media_format(start, "audio/x-mulaw", 8000)
    return StreamStarted(
        stream_id=stream_sid,
        call_id=call_sid,
        account_id=account_sid,
        tracks=tracks,
        custom_parameters=_FIELDS.parameters(params, "start", "start.customParameters"),
        encoding=encoding,
        sample_rate=rate,
    )


def _parse_connected(msg: dict[str, Any]) -> Connected:
    # Informational, but logged: held to the id rules ("Call", "1.0.0").
    return Connected(
        protocol=_FIELDS.identifier(
            _FIELDS.optional_str(msg, "protocol", "connected", ""),
            "connected",
            "protocol",
            required=False,
        ),
        version=_FIELDS.identifier(
            _FIELDS.optional_str(msg, "version", "connected", ""),
            "connected",
            "version",
            required=False,
        ),
    )


def _parse_dtmf(msg: dict[str, Any]) -> DtmfReceived:
    return DtmfReceived(_FIELDS.dtmf_digit(msg))


def _parse_mark(msg: dict[str, Any]) -> MarkReceived:
    name = _FIELDS.require_object(msg, "mark", "mark").get("name")
    return MarkReceived(_FIELDS.mark_name(name, "mark", "mark.name"))


def _parse_stop(msg: dict[str, Any]) -> StreamStopped:
    return StreamStopped()


_PARSERS: dict[str, EventParser] = {
    "connected": _parse_connected,
    "start": _parse_start,
    "dtmf": _parse_dtmf,
    "mark": _parse_mark,
    "stop": _parse_stop,
}

parse_message = _FIELDS.message_parser(_PARSERS)


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


def build_busy_twiml(message: str = "") -> str:
    """TwiML for a call the bridge cannot serve now. No message: `<Reject reason="busy"/>`,
    which Twilio documents as not picking up at all (the caller hears a busy signal, nothing is
    billed). A message: `<Say>` it, then `<Hangup/>` (the call is answered for that)."""
    response = VoiceResponse()
    if message:
        response.say(message)
        response.hangup()
    else:
        response.reject(reason="busy")
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
