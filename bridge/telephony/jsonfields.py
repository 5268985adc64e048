"""The parts of the Twilio and Plivo stream codecs that match: envelope, media message, fields.

Both providers send JSON objects dispatched on `event`, with caller audio as strict base64 in
media.payload; only the provider's name in error messages differs. Error messages name the JSON
type of a bad value and never quote it.

A stream's messages are hostile input (issue 14): whoever holds a stream URL can send anything.
Every value the bridge keeps, logs or acts on is bounded here in size and, for ids, in charset,
and every way a message can be wrong ends in ProtocolError (the session's malformed-message path,
counted and logged), never in another exception. The bounds sit far above what either provider
sends, so no real call comes near them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

from bridge.errors import ProtocolError
from bridge.telephony.events import InboundEvent, MediaReceived

EventParser = Callable[[dict[str, Any]], InboundEvent]

# --- bounds on what a provider may send -----------------------------------------------------

# Decoded caller audio per media message. Both providers send 160 bytes (20 ms); 64 KiB is 8 s
# of 8 kHz mu-law, 400 times that, so only a hostile peer reaches it.
MAX_PAYLOAD_BYTES = 64 * 1024
# The same bound on the base64 text, checked before decoding: 4 characters per 3 bytes.
MAX_PAYLOAD_CHARS = 4 * -(-MAX_PAYLOAD_BYTES // 3)
# A whole message, checked before JSON parsing. The largest legitimate one is a media message at
# the payload bound (87,384 base64 characters) plus its envelope, or a start with every custom
# parameter at its bounds (~19 KB); 128 KiB covers both. The socket's own cap is higher (1 MiB),
# so this is what keeps a megabyte of JSON from being parsed at all.
MAX_MESSAGE_CHARS = 128 * 1024
# Ids (call, stream, account sids, mark and checkpoint names, tracks). Twilio's are 34
# characters, Plivo's UUIDs 36; 128 leaves room for any other id scheme yet keeps a log line
# or a trace short.
MAX_ID_CHARS = 128
# What an id may hold: every Twilio sid and Plivo UUID fits, and nothing a terminal interprets
# (ANSI escape sequences, control characters, newlines that forge log lines) or that needs
# quoting in a URL path.
_ID = re.compile(r"[A-Za-z0-9_.:-]*")
# Mark names: printable ASCII. Twilio's documented example has a space ("my label") and the
# codecs round-trip names with quotes; without ESC or other control characters no terminal
# reads anything in them as an escape sequence.
_MARK_NAME = re.compile(r"[ -~]*")
# A media type (mediaFormat.encoding, "audio/x-mulaw"): token characters and the separators of
# MIME parameters ("audio/x-l16;rate=8000"), still nothing a terminal interprets.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9_.:+/;=-]*")
MAX_MEDIA_TYPE_CHARS = 64
# start.tracks: each provider names at most "inbound" and "outbound"; 8 is generous.
MAX_TRACKS = 8
# Digits of a numeric string before int(): 18 digits always fit in 63 bits, and Python's int()
# refuses 4,300+ digits with a ValueError (CVE-2020-10735) that is not a ProtocolError.
MAX_NUMBER_DIGITS = 18
# A DTMF key: the 16 keys of RFC 4733's telephone-event (0-9, *, #, A-D). Neither provider
# documents lowercase letters or several keys in one message, so neither is accepted.
DTMF_DIGITS = frozenset("0123456789*#ABCD")
# Context the call carries (Twilio customParameters, Plivo extra_headers). Twilio documents no
# limit; Plivo allows 512 bytes of extra headers in all. 32 keys of 64 characters with values
# of 512 are far above both and keep a start message's context a few KiB at most.
MAX_PARAMETERS = 32
MAX_PARAMETER_KEY_CHARS = 64
MAX_PARAMETER_VALUE_CHARS = 512
# Control characters (C0, DEL, C1), line and paragraph separators and bidirectional overrides:
# none belongs in call context, and each can rewrite what a console or log viewer shows.
_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Tracks media messages carry in practice: membership is cheaper than a regex on the hot path.
_COMMON_TRACKS = frozenset({"inbound", "outbound", "inbound_track", "outbound_track"})


def is_identifier(text: str) -> bool:
    """A non-empty id by the rule every provider id is held to (length, then charset)."""
    return 0 < len(text) <= MAX_ID_CHARS and _ID.fullmatch(text) is not None


def decimal(text: str) -> int | None:
    """The value of a string of at most MAX_NUMBER_DIGITS ASCII digits; None for anything else
    (so int() never sees thousands of digits, nor Unicode digits such as "²")."""
    if len(text) <= MAX_NUMBER_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


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

    def identifier(self, value: object, event: str, field: str, *, required: bool) -> str:
        """`value` as an id: a string of at most MAX_ID_CHARS letters, digits and `_.:-`,
        non-empty when `required`."""
        if type(value) is not str or (required and not value):
            raise self.bad_field(
                event, field, value, "a non-empty string" if required else "a string"
            )
        return self.checked_text(value, event, field, _ID, MAX_ID_CHARS, "letters, digits, _.:-")

    def mark_name(self, value: object, event: str, field: str) -> str:
        """A mark or checkpoint name: at most MAX_ID_CHARS of printable ASCII, may be empty."""
        if type(value) is not str:
            raise self.bad_field(event, field, value, "a string")
        return self.checked_text(value, event, field, _MARK_NAME, MAX_ID_CHARS, "printable ASCII")

    def checked_text(
        self,
        value: str,
        event: str,
        field: str,
        allowed: re.Pattern[str],
        limit: int,
        charset: str,
    ) -> str:
        # Length first: the charset check then never scans more than `limit` characters.
        if len(value) > limit:
            raise ProtocolError(
                f"{self.provider} {event}: {field} is {len(value)} characters, "
                f"at most {limit} allowed"
            )
        if not allowed.fullmatch(value):
            raise ProtocolError(
                f"{self.provider} {event}: {field} has characters outside {charset}"
            )
        return value

    def tracks(self, start: dict[str, Any]) -> tuple[str, ...]:
        tracks = start.get("tracks", [])
        if type(tracks) is not list or not all(type(t) is str for t in tracks):
            raise self.bad_field("start", "start.tracks", tracks, "a list of strings")
        if len(tracks) > MAX_TRACKS:
            raise ProtocolError(
                f"{self.provider} start: start.tracks lists {len(tracks)} tracks, "
                f"at most {MAX_TRACKS} allowed"
            )
        return tuple(self.identifier(t, "start", "start.tracks", required=False) for t in tracks)

    def dtmf_digit(self, msg: dict[str, Any]) -> str:
        digit = self.require_object(msg, "dtmf", "dtmf").get("digit")
        if type(digit) is not str or not digit:
            raise self.bad_field("dtmf", "dtmf.digit", digit, "a non-empty string")
        if digit not in DTMF_DIGITS:  # a set of one-character strings: also bounds the length
            raise ProtocolError(
                f"{self.provider} dtmf: dtmf.digit must be one key of 0-9, *, #, A-D "
                f"(got {len(digit)} characters)"
            )
        return digit

    def parameters(self, params: Mapping[str, str], event: str, field: str) -> dict[str, str]:
        """Call context (string keys and values) held to the MAX_PARAMETER* bounds and free of
        control characters; a new dict, so the caller owns what it keeps."""
        if len(params) > MAX_PARAMETERS:
            raise ProtocolError(
                f"{self.provider} {event}: {field} has {len(params)} entries, "
                f"at most {MAX_PARAMETERS} allowed"
            )
        for key, value in params.items():
            if not key or len(key) > MAX_PARAMETER_KEY_CHARS:
                raise ProtocolError(
                    f"{self.provider} {event}: {field} has a key of {len(key)} characters, "
                    f"1 to {MAX_PARAMETER_KEY_CHARS} allowed"
                )
            if len(value) > MAX_PARAMETER_VALUE_CHARS:
                raise ProtocolError(
                    f"{self.provider} {event}: {field} has a value of {len(value)} characters, "
                    f"at most {MAX_PARAMETER_VALUE_CHARS} allowed"
                )
            if _UNSAFE_TEXT.search(key) or _UNSAFE_TEXT.search(value):
                raise ProtocolError(
                    f"{self.provider} {event}: {field} holds control or bidirectional characters"
                )
        return dict(params)

    def media_format(
        self, start: dict[str, Any], encoding: str, sample_rate: int
    ) -> tuple[str, int]:
        """(encoding, sample rate) from start.mediaFormat; the arguments are the defaults."""
        fmt = start.get("mediaFormat", {})
        if type(fmt) is not dict:
            raise self.bad_field("start", "start.mediaFormat", fmt, "an object")
        encoding = self.checked_text(
            self.optional_str(fmt, "encoding", "start.mediaFormat", encoding),
            "start",
            "start.mediaFormat.encoding",
            _MEDIA_TYPE,
            MAX_MEDIA_TYPE_CHARS,
            "a media type's characters",
        )
        rate = fmt.get("sampleRate", sample_rate)
        # Documented as a number; tolerate "8000", as Twilio sends its other numbers as strings.
        if type(rate) is str and (number := decimal(rate)) is not None:
            rate = number
        # 2**31: no audio rate comes near it, and it keeps arithmetic on the rate in machine ints.
        if type(rate) is not int or not 0 < rate < 2**31:
            raise self.bad_field(
                "start", "start.mediaFormat.sampleRate", rate, "a positive integer"
            )
        return encoding, rate

    def message_parser(
        self, parsers: Mapping[str, EventParser]
    ) -> Callable[[str | bytes], InboundEvent]:
        """parse_message for this provider: media is built here, every other event by `parsers`.

        media.timestamp, chunk and sequenceNumber are not read: nothing in the bridge uses
        them, and an odd value in them must not cost the caller 20 ms of audio.
        """
        # Everything the media path touches is bound in the closure: it runs ~50 times a second
        # per call, and closure cells are cheaper than global or attribute lookups.
        provider = self.provider
        bad_field = self.bad_field
        identifier = self.identifier
        loads = orjson.loads
        b64decode = pybase64.b64decode
        common_tracks = _COMMON_TRACKS
        max_message = MAX_MESSAGE_CHARS
        max_payload = MAX_PAYLOAD_CHARS
        max_audio = MAX_PAYLOAD_BYTES

        def parse_media(msg: dict[str, Any]) -> MediaReceived:
            media = msg.get("media")
            if type(media) is not dict:
                raise bad_field("media", "media", media, "an object")
            payload = media.get("payload")
            if type(payload) is not str:
                raise bad_field("media", "media.payload", payload, "a base64 string")
            if len(payload) > max_payload:  # before decoding: no work on a huge payload
                raise ProtocolError(
                    f"{provider} media: media.payload is {len(payload)} base64 characters, "
                    f"at most {max_payload} allowed"
                )
            try:
                # pybase64's SIMD decoder: 0.6 of binascii's time on a 20 ms payload, as strict
                # (validate: only the alphabet, padding only at the end, none too much).
                audio = b64decode(payload, validate=True)
            except ValueError as exc:  # binascii.Error, which non-ASCII text raises too
                raise ProtocolError(
                    f"{provider} media: media.payload is not valid base64 ({exc})"
                ) from exc
            if len(audio) > max_audio:  # the last group of 4 characters may hold 1 to 3 bytes
                raise ProtocolError(
                    f"{provider} media: media.payload is {len(audio)} bytes, "
                    f"at most {max_audio} allowed"
                )
            track = media.get("track", "inbound")
            if type(track) is not str:
                raise bad_field("media", "media.track", track, "a string")
            if track not in common_tracks:  # anything else is checked like any other id
                identifier(track, "media", "media.track", required=False)
            return MediaReceived(audio, track)

        def parse_message(raw: str | bytes) -> InboundEvent:
            if len(raw) > max_message:
                unit = "characters" if type(raw) is str else "bytes"
                raise ProtocolError(
                    f"{provider} message of {len(raw)} {unit}, at most {max_message} allowed"
                )
            try:
                msg = loads(raw)
            except orjson.JSONDecodeError as exc:
                # Also deep nesting (orjson stops at 1,024 levels), invalid UTF-8 in a binary
                # frame, lone surrogates and numbers out of a double's range.
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
                # ascii(): a hostile name's escape sequences reach the log as inert text.
                raise ProtocolError(f"unknown {provider} event {event[:40]!a}")
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
