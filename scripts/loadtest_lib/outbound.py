"""What the bridge sends a caller, read for what the load test measures: how much audio a media
message carries, a mark's name, a clear.

The common message (media, exactly as the provider wants it) takes a fast path: one orjson
parse, key-set comparisons and the payload's length, no base64 decode (the audio itself is
never listened to). Anything else, and every `STRICT_EVERY`-th media message of a call, goes
through the emulator's own strict check (bridge/emulator: twilio_wire / plivo_wire
parse_outbound), so a malformed message is still found and reported in the emulator's words,
and a bridge that started sending bad base64 is caught within a second of its audio.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from bridge.emulator.wire import Checked, Outbound

FRAME_BYTES = 160
STRICT_EVERY = 64  # media messages: 1 in 64 fully checked (every ~6 s of a call's audio)
_TWILIO_MEDIA = frozenset({"event", "streamSid", "media"})
_TWILIO_BODY = frozenset({"payload"})
_PLIVO_MEDIA = frozenset({"event", "media"})
_PLIVO_BODY = frozenset({"contentType", "sampleRate", "payload"})
_PLIVO_CONTENT_TYPE = "audio/x-mulaw"


def base64_length(payload: str) -> int | None:
    """Bytes a canonical base64 string decodes to, from its length and padding (None when its
    length cannot be base64's). The characters themselves are left to the strict check."""
    n = len(payload)
    if not n or n % 4:
        return None
    return n // 4 * 3 - (payload[-1] == "=") - (payload[-2] == "=")


class OutboundReader:
    """One call's reader. `read(raw)` -> (what to act on or None, problems): media messages as
    Outbound("media") whose `payload` is left empty and whose size is in `media_bytes`."""

    def __init__(self, provider: str, stream_id: str, strict: Callable[[str], Checked]) -> None:
        self._stream_id = stream_id
        self._strict = strict  # the emulator wire's parse: Twilio's or Plivo's rules
        self._fast = self._twilio if provider == "twilio" else self._plivo
        self._until_strict = 0  # the first media message is checked strictly
        self.media_bytes = 0  # size of the last media message read

    def read(self, raw: bytes) -> Checked:
        if self._until_strict:
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                msg = None
            size = self._fast(msg) if type(msg) is dict else None
            if size is not None and size and size % FRAME_BYTES == 0:
                self._until_strict -= 1
                self.media_bytes = size
                return _MEDIA, []
        checked, problems = self._strict(raw.decode("utf-8", "replace"))
        if checked is not None and checked.event == "media":
            self._until_strict = STRICT_EVERY - 1
            self.media_bytes = len(checked.payload)
        return checked, problems

    def _twilio(self, msg: dict[str, Any]) -> int | None:
        if msg.keys() != _TWILIO_MEDIA or msg["event"] != "media" \
                or msg["streamSid"] != self._stream_id:
            return None
        body = msg["media"]
        if type(body) is not dict or body.keys() != _TWILIO_BODY:
            return None
        payload = body["payload"]
        return base64_length(payload) if type(payload) is str else None

    def _plivo(self, msg: dict[str, Any]) -> int | None:
        if msg.keys() != _PLIVO_MEDIA or msg["event"] != "playAudio":
            return None
        body = msg["media"]
        if type(body) is not dict or body.keys() != _PLIVO_BODY \
                or body["contentType"] != _PLIVO_CONTENT_TYPE \
                or type(body["sampleRate"]) is not int or body["sampleRate"] != 8000:
            return None
        payload = body["payload"]
        return base64_length(payload) if type(payload) is str else None


_MEDIA = Outbound("media")  # shared, never mutated: the size travels in `media_bytes`
