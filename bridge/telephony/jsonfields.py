"""The parts of the Twilio and Plivo stream codecs that match: envelope, media message, fields.

Both providers send JSON objects dispatched on `event`, with caller audio as strict base64 in
media.payload; only the provider's name in error messages differs. Error messages name the JSON
type of a bad value and never quote it.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.errors import ProtocolError
from bridge.telephony.events import InboundEvent, MediaReceived

EventParser = Callable[[dict[str, Any]], InboundEvent]


@dataclass(frozen=True, slots=True)
class Fields:
    """Field checks whose errors start with `provider` ("Twilio start: missing start.callSid")."""

    provider: str

    def require_object(self, msg: dict[str, Any], key: str, event: str) -> dict[str, Any]:
        value = msg.get(key)
        if type(value) is not dict:
            raise self.bad_field(event, key, value, "an object")
        return value

    def optional_str(self, obj: dict[str, Any], key: str, where: str, default: str) -> str:
        value = obj.get(key, default)
        if type(value) is not str:
            raise ProtocolError(
                f"{self.provider} {where}: {key} must be a string, got {json_type(value)}"
            )
        return value

    def bad_field(self, event: str, field: str, value: object, expected: str) -> ProtocolError:
        if value is None:
            return ProtocolError(f"{self.provider} {event}: missing {field} (expected {expected})")
        return ProtocolError(
            f"{self.provider} {event}: {field} must be {expected}, got {json_type(value)}"
        )

    def media_format(
        self, start: dict[str, Any], encoding: str, sample_rate: int
    ) -> tuple[str, int]:
        """(encoding, sample rate) from start.mediaFormat; the arguments are the defaults."""
        fmt = start.get("mediaFormat", {})
        if type(fmt) is not dict:
            raise self.bad_field("start", "start.mediaFormat", fmt, "an object")
        encoding = self.optional_str(fmt, "encoding", "start.mediaFormat", encoding)
        rate = fmt.get("sampleRate", sample_rate)
        # Documented as a number; tolerate "8000", as Twilio sends its other numbers as strings.
        if type(rate) is str and rate.isascii() and rate.isdigit():
            rate = int(rate)
        if type(rate) is not int or rate <= 0:
            raise self.bad_field(
                "start", "start.mediaFormat.sampleRate", rate, "a positive integer"
            )
        return encoding, rate

    def message_parser(
        self,
        parsers: Mapping[str, EventParser],
        timestamp: Callable[[object], int | None],
    ) -> Callable[[str | bytes], InboundEvent]:
        """parse_message for this provider: media is built here, every other event by `parsers`.

        `timestamp` turns media.timestamp into MediaReceived.timestamp_ms.
        """
        # Everything the media path touches is bound in the closure: it runs ~50 times a second
        # per call, and closure cells are cheaper than global or attribute lookups.
        provider = self.provider
        bad_field = self.bad_field
        loads = orjson.loads
        a2b_base64 = binascii.a2b_base64

        def parse_media(msg: dict[str, Any]) -> MediaReceived:
            media = msg.get("media")
            if type(media) is not dict:
                raise bad_field("media", "media", media, "an object")
            payload = media.get("payload")
            if type(payload) is not str:
                raise bad_field("media", "media.payload", payload, "a base64 string")
            try:
                audio = a2b_base64(payload, strict_mode=True)
            except ValueError as exc:  # binascii.Error, or non-ASCII text
                raise ProtocolError(
                    f"{provider} media: media.payload is not valid base64 ({exc})"
                ) from exc
            track = media.get("track", "inbound")
            if type(track) is not str:
                raise bad_field("media", "media.track", track, "a string")
            return MediaReceived(audio, timestamp(media.get("timestamp")), track)

        def parse_message(raw: str | bytes) -> InboundEvent:
            try:
                msg = loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ProtocolError(f"{provider} message is not valid JSON: {exc}") from exc
            if type(msg) is not dict:
                raise ProtocolError(f"{provider} message is not a JSON object but {json_type(msg)}")
            event = msg.get("event")
            if event == "media":  # nearly every message: checked before anything else
                return parse_media(msg)
            if event is None:
                raise ProtocolError(f"{provider} message has no 'event' field")
            if type(event) is not str:
                raise ProtocolError(
                    f"{provider} message 'event' must be a string, got {json_type(event)}"
                )
            parser = parsers.get(event)
            if parser is None:
                raise ProtocolError(f"unknown {provider} event {event[:40]!r}")
            return parser(msg)

        parse_message.__doc__ = (
            f"Parse one text frame from {provider} into a provider-neutral event."
        )
        return parse_message


def json_type(value: object) -> str:
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
