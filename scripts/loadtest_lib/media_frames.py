"""The caller's media messages, as whole WebSocket frames from a per-call template.

A load test of 500 calls sends 25,000 of them a second. Each is the emulator's own message
(bridge/emulator/twilio_wire.py, plivo_wire.py: tests/unit/test_loadtest_media_frames.py
checks they are byte for byte the same), built from a template made once per call in which
only the sequence number, chunk, timestamp and payload change; the payloads are the caller's
audio base64-encoded once for every call (`caller_payloads`). A frame costs ~0.6 µs here;
its write costs the generator ~10 µs of kernel time (the loopback's receive side included).

Pure: no clock (Plivo's timestamps count from a wall-clock epoch the caller passes in).
"""

from __future__ import annotations

import base64

import orjson

from loadtest_lib.wsframe import client_frame

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
SILENCE_B64 = base64.b64encode(b"\xff" * FRAME_BYTES)


def caller_payloads(audio: bytes) -> tuple[bytes, ...]:
    """`audio` (8 kHz mu-law) as base64 20 ms frames (ASCII bytes), the last padded with
    silence."""
    return tuple(
        base64.b64encode(audio[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff"))
        for i in range(0, len(audio), FRAME_BYTES)
    )


def _percent(text: str) -> str:
    """A literal for %-formatting: its own percent signs doubled."""
    return text.replace("%", "%%")


class MediaTemplate:
    """One call's caller-media messages: `frame(seq, chunk, timestamp_ms, payload)` is the
    masked client frame of the message the emulator's wire would write for the same values
    (`payload`: base64 as ASCII bytes, as `caller_payloads` gives it)."""

    def __init__(self, template: str, *, chunk_first: bool) -> None:
        # bytes %-formatting: one C call per message, about 8 times cheaper than str.format
        # with keywords (0.3 vs 2.6 µs), the largest Python cost of a frame after its write.
        self._template = template.encode()
        self._chunk_first = chunk_first  # Twilio: chunk before timestamp; Plivo: after

    @classmethod
    def twilio(cls, stream_sid: str) -> MediaTemplate:
        # Twilio's numbers travel as strings (as twilio_wire.media_message writes them).
        return cls(
            '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound",'
            '"chunk":"%d","timestamp":"%d","payload":"%s"},'
            '"streamSid":"' + _percent(stream_sid) + '"}',
            chunk_first=True,
        )

    @classmethod
    def plivo(cls, stream_id: str, extra_headers: str) -> MediaTemplate:
        # Plivo's sequence number and chunk are numbers, its timestamp a string of Unix ms.
        headers = _percent(orjson.dumps(extra_headers).decode())
        return cls(
            '{"event":"media","sequenceNumber":%d,"streamId":"' + _percent(stream_id) + '",'
            '"media":{"track":"inbound","timestamp":"%d","chunk":%d,'
            '"payload":"%s"},"extra_headers":' + headers + "}",
            chunk_first=False,
        )

    def body(self, seq: int, chunk: int, timestamp_ms: int, payload_b64: bytes) -> bytes:
        if self._chunk_first:
            return self._template % (seq, chunk, timestamp_ms, payload_b64)
        return self._template % (seq, timestamp_ms, chunk, payload_b64)

    def frame(self, seq: int, chunk: int, timestamp_ms: int, payload_b64: bytes) -> bytes:
        body = self.body(seq, chunk, timestamp_ms, payload_b64)
        n = len(body)
        if 126 <= n < 1 << 16:  # always, for a 160-byte frame: the header inline
            return _HEAD16 + n.to_bytes(2, "big") + _ZERO_KEY + body
        return client_frame(body)


_HEAD16 = b"\x81\xfe"  # FIN text, masked, 16-bit length follows
_ZERO_KEY = b"\x00\x00\x00\x00"  # see wsframe.py: why the key is zero
