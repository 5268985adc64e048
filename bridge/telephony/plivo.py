"""Plivo Audio Streams (bidirectional `<Stream>`): message codec, answer XML, V3 signatures.

Mirrors bridge.telephony.twilio so the call session never branches on the provider. Inbound
parsing is strict about the fields we act on (streamId, callId, media payload, DTMF digit,
checkpoint name) and lenient about informational ones (accountId, tracks, mediaFormat, media
track, extra_headers): those fall back to a default when absent, but a value of the wrong type is
still an error, except extra_headers, whose garbled pairs are dropped. Ids, DTMF digits,
checkpoint names, extra headers and payloads are bounded (see bridge.telephony.jsonfields).
Error messages never quote the payload.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from typing import Any

import orjson
from plivo import plivoxml
from plivo.utils.signature_v3 import (
    construct_get_url,
    construct_post_url,
    get_signature_v3,
    validate_v3_signature,
)

from bridge.errors import ProtocolError
from bridge.telephony.events import (
    AudioCleared,
    DtmfReceived,
    MarkReceived,
    StreamStarted,
    StreamStopped,
)
from bridge.telephony.jsonfields import (
    MAX_PARAMETER_KEY_CHARS,
    MAX_PARAMETER_VALUE_CHARS,
    MAX_PARAMETERS,
    EventParser,
    Fields,
)

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"

# What we ask for in the answer XML and declare in every playAudio: they must agree.
_CONTENT_TYPE = "audio/x-mulaw"
_SAMPLE_RATE = 8000
# Plivo's documented limits for the extraHeaders attribute.
_EXTRA_HEADERS_MAX_BYTES = 512
# The longest extra_headers text a bounded set of pairs can take, as JSON, the longest form:
# per pair the key, the value, four quotes, ": " and ", "; then the braces.
_EXTRA_HEADERS_MAX_TEXT = (
    MAX_PARAMETERS * (MAX_PARAMETER_KEY_CHARS + MAX_PARAMETER_VALUE_CHARS + 8) + 2
)

_FIELDS = Fields("Plivo")
# Bound once: the media path runs ~50 times a second per call.
_b2a_base64 = binascii.b2a_base64


def _parse_start(msg: dict[str, Any]) -> StreamStarted:
    start = _FIELDS.require_object(msg, "start", "start")
    # Documented inside `start`; media messages carry it at the top level, so accept that too.
    stream_id = _FIELDS.identifier(
        start.get("streamId", msg.get("streamId")), "start", "start.streamId", required=True
    )
    call_id = _FIELDS.identifier(start.get("callId"), "start", "start.callId", required=True)
    account_id = _FIELDS.identifier(
        _FIELDS.optional_str(start, "accountId", "start", ""),
        "start",
        "start.accountId",
        required=False,
    )
    tracks = _FIELDS.tracks(start)
    # Absent means what the answer XML asked for.
    encoding, rate = _FIELDS.media_format(start, _CONTENT_TYPE, _SAMPLE_RATE)
    return StreamStarted(
        stream_id=stream_id,
        call_id=call_id,
        account_id=account_id,
        tracks=tracks,
        custom_parameters=parse_extra_headers(msg.get("extra_headers")),
        encoding=encoding,
        sample_rate=rate,
    )


def _parse_dtmf(msg: dict[str, Any]) -> DtmfReceived:
    return DtmfReceived(_FIELDS.dtmf_digit(msg))


def _parse_played(msg: dict[str, Any]) -> MarkReceived:
    return MarkReceived(_FIELDS.mark_name(msg.get("name"), msg["event"], "name"))


def _parse_cleared(msg: dict[str, Any]) -> AudioCleared:
    return AudioCleared()


def _parse_stop(msg: dict[str, Any]) -> StreamStopped:
    # Undocumented (the stream normally ends with the socket); honoured if it ever arrives.
    return StreamStopped()


_PARSERS: dict[str, EventParser] = {
    "start": _parse_start,
    "dtmf": _parse_dtmf,
    "playedStream": _parse_played,
    "played": _parse_played,  # the name an older Plivo article gives the checkpoint ack
    "clearedAudio": _parse_cleared,
    "stop": _parse_stop,
}

parse_message = _FIELDS.message_parser(_PARSERS)


_PAIR_SEPARATOR = re.compile("[,;]")


def parse_extra_headers(value: object) -> dict[str, str]:
    """The `extra_headers` of a start message as a dict.

    Plivo sends them as "k=v,k2=v2", "k=v;k2=v2" or a JSON object, depending on the source; a
    decoded object is taken as is. They are informational context, so a garbled pair (no '=',
    empty key, non-scalar JSON value) is dropped instead of failing the call. Hostile ones are
    not dropped but refused with ProtocolError: more than MAX_PARAMETERS entries, keys or values
    past their bounds, control characters, text longer than any bounded set of pairs.
    """
    if isinstance(value, dict):
        return _bounded(_scalar_items(value), len(value))
    if not isinstance(value, str):
        return {}
    if len(value) > _EXTRA_HEADERS_MAX_TEXT:  # before any splitting or JSON parsing
        raise ProtocolError(
            f"Plivo start: extra_headers is {len(value)} characters, "
            f"at most {_EXTRA_HEADERS_MAX_TEXT} allowed"
        )
    text = value.strip()
    if text.startswith("{"):
        try:
            obj = orjson.loads(text)  # text starting with "{" parses to an object
        except orjson.JSONDecodeError:
            return {}
        return _bounded(_scalar_items(obj), len(obj))
    headers: dict[str, str] = {}
    for pair in _PAIR_SEPARATOR.split(text):
        key, equals, val = pair.partition("=")
        key = key.strip()
        if equals and key:
            headers[key] = val.strip()
    return _bounded(headers, len(headers))


def _bounded(headers: dict[str, str], entries: int) -> dict[str, str]:
    # `entries` counts dropped ones too: a thousand null values is hostile, not garbled.
    if entries > MAX_PARAMETERS:
        raise ProtocolError(
            f"Plivo start: extra_headers has {entries} entries, at most {MAX_PARAMETERS} allowed"
        )
    return _FIELDS.parameters(headers, "start", "extra_headers")


def _scalar_items(obj: dict[Any, Any]) -> dict[str, str]:
    # JSON numbers (userId=12345 encoded as a number) read back as their text; nulls, booleans,
    # arrays and objects have no single obvious text and are dropped. (orjson reads integers
    # past 64 bits as floats, so str() never meets a huge int.)
    return {
        str(k): str(v) for k, v in obj.items() if str(k).strip() and type(v) in (str, int, float)
    }


class PlivoCodec:
    """Outbound messages for one Plivo stream, exactly the documented shapes, compact JSON."""

    __slots__ = ("_clear", "_mark_prefix", "stream_id")

    # A checkpoint whose audio was cleared is never acknowledged (unlike Twilio's marks).
    clear_acks_marks = False

    # playAudio names no stream; the codec it declares must match the answer XML's contentType.
    _MEDIA_PREFIX = (
        '{"event":"playAudio","media":{"contentType":"'
        + _CONTENT_TYPE
        + '","sampleRate":'
        + str(_SAMPLE_RATE)
        + ',"payload":"'
    )

    def __init__(self, stream_id: str) -> None:
        if not isinstance(stream_id, str) or not stream_id:
            raise ValueError("stream_id must be a non-empty string")
        self.stream_id = stream_id
        # Encoded once so every message is a concatenation.
        sid = orjson.dumps(stream_id).decode()
        self._mark_prefix = '{"event":"checkpoint","streamId":' + sid + ',"name":'
        self._clear = '{"event":"clearAudio","streamId":' + sid + "}"

    def media(self, payload: bytes) -> str:
        if not payload:
            raise ValueError("refusing an empty playAudio payload")
        return self._MEDIA_PREFIX + _b2a_base64(payload, newline=False).decode("ascii") + '"}}'

    def mark(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise ValueError("checkpoint name must be a non-empty string")
        return self._mark_prefix + orjson.dumps(name).decode() + "}"

    def clear(self) -> str:
        return self._clear

    def __repr__(self) -> str:
        return f"PlivoCodec(stream_id={self.stream_id!r})"


def build_answer_xml(stream_url: str, extra_headers: Mapping[str, str]) -> str:
    """Plivo XML that connects the call to our bidirectional audio stream.

    `extra_headers` come back in the start message's extra_headers (see parse_extra_headers).
    Plivo allows only ASCII letters and digits in them and 512 bytes in all.
    """
    if "?" in stream_url:
        raise ValueError(
            f"stream URL {stream_url!r} has a query string: "
            "pass the values as extra headers or in the path instead"
        )
    if not stream_url.startswith(("wss://", "ws://")):
        raise ValueError(f"stream URL {stream_url!r} must start with wss:// (or ws:// locally)")
    stream = plivoxml.StreamElement(
        stream_url,
        bidirectional=True,
        # Without it the call may drop right after the stream connects.
        keepCallAlive=True,
        # Always explicit: two Plivo pages disagree on the default.
        contentType=f"{_CONTENT_TYPE};rate={_SAMPLE_RATE}",
        extraHeaders=_extra_headers_attribute(extra_headers),
    )
    # Not pretty-printed: the URL is the element's text, and indentation would become part of it.
    return str(plivoxml.ResponseElement().add(stream).to_string(pretty=False))


def build_busy_xml(message: str = "") -> str:
    """Plivo XML for a call the bridge cannot serve now. No message: `<Hangup reason="busy"/>`
    as the first element, which Plivo documents as ending the call unanswered with that reason.
    A message: `<Speak>` it, then `<Hangup/>` (answered for that, then a normal hang-up)."""
    response = plivoxml.ResponseElement()
    if message:
        response.add_speak(message)
        response.add_hangup()
    else:
        response.add_hangup(reason="busy")
    return str(response.to_string(pretty=False))


def _extra_headers_attribute(extra_headers: Mapping[str, str]) -> str | None:
    for key, value in extra_headers.items():
        for what, text in (("key", key), ("value", value)):
            if not isinstance(text, str) or not (text.isascii() and text.isalnum()):
                raise ValueError(
                    f"extra header {what} {text!r} must be non-empty and only ASCII letters "
                    "and digits (Plivo's rule for extraHeaders)"
                )
    if not extra_headers:
        return None  # no attribute at all rather than an empty one
    joined = ",".join(f"{key}={value}" for key, value in extra_headers.items())
    if len(joined) > _EXTRA_HEADERS_MAX_BYTES:  # ASCII only, so characters are bytes
        raise ValueError(
            f"extra headers take {len(joined)} bytes as k=v pairs; "
            f"Plivo allows at most {_EXTRA_HEADERS_MAX_BYTES}"
        )
    return joined


def validate_signature(
    auth_token: str,
    method: str,
    url: str,
    nonce: str | None,
    signature: str | None,
    params: Mapping[str, str],
) -> bool:
    """True when `signature` (X-Plivo-Signature-V3) matches the request.

    `url` is the public http(s):// URL Plivo requested, query string included (see
    bridge.telephony.urls); `params` are the form fields of a POST (for a GET, pass `{}`: the
    query string is in `url`). The header may list several comma-separated signatures; any
    match is valid.
    """
    # An empty token would make anyone's HMAC-with-empty-key signature valid.
    if not auth_token or not nonce or not signature:
        return False
    verb = _checked_request(method, url)
    # Tolerates spaces after the commas, which the SDK's plain split would not.
    candidates = ",".join(s.strip() for s in signature.split(",") if s.strip())
    try:
        # dict(): the SDK merges the URL's query into the params dict it is given.
        return bool(validate_v3_signature(verb, url, nonce, auth_token, candidates, dict(params)))
    except UnicodeEncodeError:
        # Undecodable header or form bytes arrive as lone surrogates: not a signature we made.
        return False


def compute_signature(
    auth_token: str, method: str, url: str, nonce: str, params: Mapping[str, str]
) -> str:
    """The X-Plivo-Signature-V3 Plivo would send for this request (for the emulator and tests),
    built with the SDK's own canonicalisation so that it agrees with validate_signature."""
    verb = _checked_request(method, url)
    if verb == "GET":
        base_url = construct_get_url(url, dict(params))
    else:
        base_url = construct_post_url(url, dict(params))
    signature: bytes = get_signature_v3(auth_token, base_url.decode("utf-8"), nonce)
    return signature.decode("ascii")


def _checked_request(method: str, url: str) -> str:
    # Both come from our own routing and settings, so a bad one is a bug, not a forged request:
    # raise instead of answering False (the SDK would raise its own ValidationError).
    verb = method.upper()
    if verb not in ("GET", "POST"):
        raise ValueError(f"Plivo signs only GET and POST requests, not {method!r}")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"signed URL {url!r} must start with http:// or https://")
    return verb
