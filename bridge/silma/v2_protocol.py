"""SILMA's public TTS API, v2: pure records, parsing and building, shared by both sides.

The facts come from SILMA's own client plugins (livekit-plugins-silma 0.1.0, pipecat-silma
0.1.0; README, "SILMA's public API (v2)", has the details):

    WebSocket {base}/ws/stream, HTTP POST {base}/stream, header `apiKey: <key>` on both
    request   {"model_id":..., "text": <= 250 chars, "voice_id":..., "speed"?, "creativity"?,
               "user_id"?, "custom_audio_id"?, "enable_server_pronunciation_overrides"?}
    WebSocket replies, one utterance at a time per socket, no request id on the wire:
              {"status":"started"} {"status":"streaming","audio":<b64 f32le 24 kHz>} ...
              {"status":"completed"} | {"status":"failed","code":...}
              (some deployments send the samples as binary frames instead)
    HTTP      200 + the raw float32 body streamed; an error is another status (or a JSON body)
              carrying {"detail": "<code>"}
    close codes 4001, 4003, 1008: the key was refused

The protocol has no cancel message: a client that stops listening closes the socket. Our
client (bridge.silma.v2_connection) and our server (bridge.tts_server.v2_api) both use this
module. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Callable
from typing import Any

import orjson

from bridge.errors import ProtocolError, TTSReplyError, TTSReplyTooLarge

DEFAULT_BASE_URL = "https://api.silma.ai/tts/v2"
MODELS = ("silma-tts-v2-english", "silma-tts-v2-msa", "silma-tts-v2-ksa")
DEFAULT_MODEL = "silma-tts-v2-msa"
DEFAULT_VOICE = "sarah"
MAX_TEXT_CHARS = 250
SAMPLE_RATE = 24000
WS_PATH = "/ws/stream"
HTTP_PATH = "/stream"
API_KEY_HEADER = "apiKey"
AUTH_CLOSE_CODES = frozenset({4001, 4003, 1008})
STARTED, STREAMING, COMPLETED, FAILED = "started", "streaming", "completed", "failed"
STATUSES = (STARTED, STREAMING, COMPLETED, FAILED)
# Codes worth trying again (our server's; SILMA's cloud documents none): anything else is final.
RETRYABLE_CODES = frozenset({"busy", "timeout", "rate_limited", "overloaded"})
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
MAX_ID_CHARS = 128
MAX_CODE_CHARS = 64
# One message's decoded audio: our server sends a chunk of well under a second; 4 MiB is 43 s.
MAX_EVENT_AUDIO_BYTES = 4 * 1024 * 1024
MAX_EVENT_BYTES = 6 * 1024 * 1024  # the base64 of that, and room for the rest of the event
# A machine-readable code, as opposed to prose that may quote the caller's text.
_CODE = re.compile(r"[a-z][a-z0-9_.\-]{0,63}")
# Pronunciation hints: <STAG_PN>92005455</STAG_PN>, <STAG_EMAIL>..</STAG_EMAIL>, <STAG_LINK>..
HINT = re.compile(r"<STAG_([A-Z]+)>(.*?)</STAG_\1>", re.DOTALL)


@dataclasses.dataclass(frozen=True, slots=True)
class V2Voice:
    """Who speaks and how: everything of a v2 request but its text."""

    model_id: str = DEFAULT_MODEL
    voice_id: str = DEFAULT_VOICE
    custom_audio_id: str | None = None  # a cloned voice on the user's SILMA account
    user_id: str | None = None  # the SILMA account; needed by custom_audio_id and overrides
    speed: float | None = None  # None: the server's default
    creativity: float | None = None
    server_pronunciation_overrides: bool = False

    def problems(self) -> list[str]:
        """What the API would refuse or silently ignore (SILMA's plugins check the same)."""
        found = []
        if not self.model_id.strip():
            found.append("model_id is empty")
        if not self.voice_id.strip() and not self.custom_audio_id:
            found.append("voice_id is empty")
        if self.custom_audio_id and not self.user_id:
            found.append("custom_audio_id needs user_id")
        if self.server_pronunciation_overrides and not self.user_id:
            found.append("server pronunciation overrides need user_id")
        return found


@dataclasses.dataclass(frozen=True, slots=True)
class V2Request:
    text: str
    voice: V2Voice


@dataclasses.dataclass(frozen=True, slots=True)
class V2Event:
    """One WebSocket reply: its status (None when it carries only audio) and audio."""

    status: str | None
    audio: bytes = b""
    code: str | None = None


class V2RequestError(ProtocolError):
    """A request our server cannot serve; `code` is what the client is told."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


def ws_url(base: str) -> str:
    """The WebSocket of an API base: http(s) becomes ws(s), a bare host is wss."""
    root = base.rstrip("/")
    for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
        if root.startswith(plain):
            root = secure + root[len(plain):]
    if not root.startswith(("ws://", "wss://")):
        root = "wss://" + root
    return root + WS_PATH


def stream_url(base: str) -> str:
    return base.rstrip("/") + HTTP_PATH


def headers(api_key: str) -> dict[str, str]:
    return {API_KEY_HEADER: api_key} if api_key else {}


def _json_object(raw: str | bytes, error: Callable[[str], Exception], what: str
                 ) -> dict[str, Any]:
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise error(f"{what} is not valid JSON") from None
    if not isinstance(message, dict):
        raise error(f"{what} is not a JSON object")
    return message


# -- requests ---------------------------------------------------------------------------------
def build_request(request: V2Request) -> bytes:
    """The JSON body of one utterance; optional fields only when set, as the plugins send."""
    voice = request.voice
    body: dict[str, Any] = {"model_id": voice.model_id, "text": request.text,
                            "voice_id": voice.voice_id}
    if voice.speed is not None:
        body["speed"] = voice.speed
    if voice.creativity is not None:
        body["creativity"] = voice.creativity
    if voice.user_id is not None:
        body["user_id"] = voice.user_id
    if voice.custom_audio_id is not None:
        body["custom_audio_id"] = voice.custom_audio_id
    if voice.server_pronunciation_overrides:
        body["enable_server_pronunciation_overrides"] = True
    return orjson.dumps(body)


def _optional_str(message: dict[str, Any], key: str) -> str | None:
    value = message.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise V2RequestError(f"{key} must be a string of 1-{MAX_ID_CHARS} characters")
    return value


def _optional_number(message: dict[str, Any], key: str, low: float, high: float
                     ) -> float | None:
    value = message.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not low <= value <= high:
        raise V2RequestError(f"{key} must be a number in {low:g}..{high:g}")
    return float(value)


def parse_request(raw: str | bytes, *, max_text_chars: int = MAX_TEXT_CHARS,
                  speed_range: tuple[float, float] = (0.5, 2.0)) -> V2Request:
    """One client request, validated (our server's side). Raises V2RequestError."""
    message = _json_object(raw, V2RequestError, "the request")
    model_id = message.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise V2RequestError("model_id is missing")
    text = message.get("text")
    if not isinstance(text, str) or not text.strip():
        raise V2RequestError("text is missing or empty")
    if len(text) > max_text_chars:
        raise V2RequestError(f"text is {len(text)} characters, over the limit of "
                             f"{max_text_chars}", "text_too_long")
    voice_id = _optional_str(message, "voice_id")
    custom = _optional_str(message, "custom_audio_id")
    if voice_id is None and custom is None:
        raise V2RequestError("voice_id is missing")
    overrides = message.get("enable_server_pronunciation_overrides", False)
    if not isinstance(overrides, bool):
        raise V2RequestError("enable_server_pronunciation_overrides must be true or false")
    voice = V2Voice(
        model_id=model_id[:MAX_ID_CHARS], voice_id=voice_id or "",
        custom_audio_id=custom, user_id=_optional_str(message, "user_id"),
        speed=_optional_number(message, "speed", *speed_range),
        creativity=_optional_number(message, "creativity", 0.0, 1.0),
        server_pronunciation_overrides=overrides)
    return V2Request(text, voice)


# -- replies ----------------------------------------------------------------------------------
def build_event(status: str, audio: bytes = b"", code: str | None = None) -> bytes:
    body: dict[str, Any] = {"status": status}
    if audio:
        body["audio"] = base64.b64encode(audio).decode()
    if code is not None:
        body["code"] = code
    return orjson.dumps(body)


def build_error_body(code: str) -> bytes:
    return orjson.dumps({"detail": code})


def code_of(value: object) -> str | None:
    """A reply's error code when it is a machine-readable one; prose (which may quote the
    caller's text) is never carried into logs or errors."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and _CODE.fullmatch(value):
        return value
    return None


def parse_event(raw: str | bytes) -> V2Event:
    """One WebSocket text reply, bounded and validated (our client's side: the server is
    untrusted). Raises TTSReplyError, TTSReplyTooLarge past the bounds."""
    if len(raw) > MAX_EVENT_BYTES:
        raise TTSReplyTooLarge(f"TTS server sent a {len(raw)}-byte event, over the bound of "
                               f"{MAX_EVENT_BYTES}")
    message = _json_object(raw, TTSReplyError, "the TTS server's text frame")
    status = message.get("status")
    if status is not None and status not in STATUSES:
        raise TTSReplyError(f"TTS server sent an unknown status {str(status)[:40]!r}")
    audio = message.get("audio")
    data = b""
    if audio is not None and audio != "":
        if not isinstance(audio, str):
            raise TTSReplyError("TTS server sent audio that is not a base64 string")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise TTSReplyError("TTS server sent audio that is not valid base64") from None
        if len(data) > MAX_EVENT_AUDIO_BYTES:
            raise TTSReplyTooLarge(f"TTS server sent {len(data)} audio bytes in one event, "
                                   f"over the bound of {MAX_EVENT_AUDIO_BYTES}")
    return V2Event(status, data, code_of(message.get("code")))


def error_code_of_body(body: bytes) -> str | None:
    """The code of an HTTP error body ({"detail": "code"} or {"detail": {"code": ...}})."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    detail = parsed.get("detail") if isinstance(parsed, dict) else None
    if isinstance(detail, dict):
        detail = detail.get("code")
    return code_of(detail)


# -- text -------------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"[.!?؟…][\"')\]]*(?=\s)")
_CLAUSE_END = re.compile(r"[,;:،؛](?=\s)")
_SPACE = re.compile(r"\s+")


def _cut_points(text: str, hints: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(position after which the text may be cut, rank): a sentence end ranks 3, a clause end
    2, white space 1; never inside a pronunciation hint."""
    points = [(m.end(), 3) for m in _SENTENCE_END.finditer(text)]
    points += [(m.end(), 2) for m in _CLAUSE_END.finditer(text)]
    points += [(m.start(), 1) for m in _SPACE.finditer(text)]
    return [(at, rank) for at, rank in points
            if not any(start < at < end for start, end in hints)]


def _hard_cut(at: int, hints: list[tuple[int, int]]) -> int:
    """Where a word over the limit is cut: at `at`, or before a hint that spans it."""
    for start, end in hints:
        if start < at < end:
            return start if start > 0 else end
    return at


def split_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> list[str]:
    """Text cut into requests of at most `max_chars`, each cut at the latest sentence end that
    fits, else clause end, else white space; a pronunciation hint is never cut (one that alone
    is over the limit loses its tags and is read as plain text)."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    text = HINT.sub(lambda m: m.group(0) if len(m.group(0)) <= max_chars else m.group(2),
                    text).strip()
    pieces: list[str] = []
    while len(text) > max_chars:
        hints = [(m.start(), m.end()) for m in HINT.finditer(text)]
        # The best rank in the window's second half (so no piece is needlessly short), the
        # latest of that rank; any cut at all before none.
        fitting = [(rank if at >= max_chars // 2 else 0, at)
                   for at, rank in _cut_points(text, hints) if 0 < at <= max_chars]
        at = max(fitting)[1] if fitting else _hard_cut(max_chars, hints)
        piece, text = text[:at].strip(), text[at:].strip()
        if piece:
            pieces.append(piece)
    if text:
        pieces.append(text)
    return pieces
