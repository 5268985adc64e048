"""Deepgram's live transcription protocol and the stream's decisions, with no I/O.

The wire format, from Deepgram's documentation (developers.deepgram.com):
- the endpoint `wss://api.deepgram.com/v1/listen` with the audio described in the query
  (`encoding=mulaw&sample_rate=8000&channels=1`), `interim_results=true` for partials,
  `model`, `language`, `punctuate` (docs/interim-results, docs/encoding,
  docs/understand-endpointing-interim-results); the key in `Authorization: Token <key>`
  (reference/authentication);
- audio as binary frames; control messages as text frames: `{"type": "KeepAlive"}` at least
  every 10 s of no audio or the server closes with NET-0001 (docs/audio-keep-alive),
  `{"type": "Finalize"}` to flush what it holds into final results marked `from_finalize`
  (docs/finalize), `{"type": "CloseStream"}` to end the stream;
- replies as JSON text frames; `Results`: `is_final`, `speech_final`, `start` and `duration`
  (seconds of the stream's audio), `channel.alternatives[0].transcript` (the SDK's
  LiveTranscriptionEvent type); `Metadata`, `SpeechStarted` and `UtteranceEnd` carry nothing
  this bridge uses.

Deepgram's times count from the start of each connection's audio; `StreamAudio` knows which
second of the caller's audio a new connection starts at, so transcripts keep the detector's
clock across a reconnect and across audio dropped while there was no connection.
"""

from __future__ import annotations

import dataclasses
import math
import urllib.parse

import orjson

from bridge.errors import ProtocolError

DEFAULT_URL = "wss://api.deepgram.com"
DEFAULT_MODEL = "nova-3"
LISTEN_PATH = "/v1/listen"
SAMPLE_RATE = 8000  # mu-law: one byte per sample

KEEPALIVE = '{"type": "KeepAlive"}'
FINALIZE = '{"type": "Finalize"}'
CLOSE_STREAM = '{"type": "CloseStream"}'


def listen_url(base: str, *, model: str, language: str) -> str:
    """The listen endpoint under `base` (a ws(s):// or http(s):// origin, empty: Deepgram's)
    with the query describing the caller's audio."""
    parts = urllib.parse.urlsplit(base or DEFAULT_URL)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a WebSocket or HTTP URL: {base!r}")
    query = {
        "encoding": "mulaw", "sample_rate": str(SAMPLE_RATE), "channels": "1",
        "interim_results": "true", "punctuate": "true",
        "model": model or DEFAULT_MODEL,
    }
    if language:
        query["language"] = language
    path = parts.path.rstrip("/") + LISTEN_PATH
    return urllib.parse.urlunsplit((scheme, parts.netloc, path,
                                    urllib.parse.urlencode(query), ""))


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """A `Results` message: `text` for `start`..`start + duration` of the connection's audio."""

    text: str
    is_final: bool
    speech_final: bool
    start: float
    duration: float


def parse_message(data: str | bytes) -> Result | None:
    """A server message: a Result, or None for the kinds that carry nothing for us (and for
    kinds added later). ProtocolError for what is not the documented JSON."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"Deepgram sent a message that is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("Deepgram sent a message that is not a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("Deepgram sent a message without a string 'type'")
    if kind != "Results":
        return None
    channel = message.get("channel")
    alternatives = channel.get("alternatives") if isinstance(channel, dict) else None
    if not isinstance(alternatives, list):
        raise ProtocolError("Deepgram Results without channel.alternatives")
    best = alternatives[0] if alternatives else {"transcript": ""}
    text = best.get("transcript") if isinstance(best, dict) else None
    if not isinstance(text, str):
        raise ProtocolError("Deepgram Results whose first alternative has no transcript")
    return Result(text.strip(), _flag(message, "is_final"), _flag(message, "speech_final"),
                  _seconds(message, "start"), _seconds(message, "duration"))


def _flag(message: dict[str, object], key: str) -> bool:
    value = message.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"Deepgram Results with a {key!r} that is not a boolean")
    return value


def _seconds(message: dict[str, object], key: str) -> float:
    value = message.get(key)
    # bool is an int: refuse it, it is no time.
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        raise ProtocolError(f"Deepgram Results with a {key!r} that is not a time in seconds")
    return float(value)


class StreamAudio:
    """Caller audio not yet sent, bounded: while no connection takes it (connecting,
    reconnecting) the oldest is dropped. `head_s` is the second of the caller's audio its
    first byte holds."""

    def __init__(self, max_s: float) -> None:
        self._max_bytes = max(1, round(max_s * SAMPLE_RATE))
        self._pending = bytearray()
        self._consumed = 0  # bytes of caller audio ever added

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def head_s(self) -> float:
        return (self._consumed - len(self._pending)) / SAMPLE_RATE

    def add(self, mulaw: bytes) -> None:
        self._consumed += len(mulaw)
        self._pending += mulaw
        excess = len(self._pending) - self._max_bytes
        if excess > 0:
            del self._pending[:excess]

    def take(self) -> bytes:
        chunk = bytes(self._pending)
        self._pending.clear()
        return chunk


class Reconnects:
    """After a lost or failed connection: one more try. A connection that lived `stable_s`
    earns the try back, so a long call survives a blip now and then but not a server that
    keeps dropping it."""

    def __init__(self, *, stable_s: float = 30.0) -> None:
        self._stable_s = stable_s
        self._left = 1
        self._connected_at: float | None = None
        self.ever_connected = False

    def connected(self, now: float) -> None:
        self._connected_at = now
        self.ever_connected = True

    def may_retry(self, now: float) -> bool:
        """The connection is gone (or never came): try again?"""
        if self._connected_at is not None and now - self._connected_at >= self._stable_s:
            self._left = 1
        self._connected_at = None
        if self._left == 0:
            return False
        self._left -= 1
        return True


class Endpoints:
    """The detector's last start and end on the wall clock: a final result's latency is the
    time since the end of the speech it belongs to, and 0 while the caller is still talking
    (the result came before the endpoint)."""

    def __init__(self) -> None:
        self._started_at: float | None = None
        self._ended_at: float | None = None

    def started(self, now: float) -> None:
        self._started_at = now

    def ended(self, now: float) -> None:
        self._ended_at = now

    def latency(self, now: float) -> float:
        if self._ended_at is None:
            return 0.0
        if self._started_at is not None and self._started_at > self._ended_at:
            return 0.0
        return max(0.0, now - self._ended_at)
