"""The SILMA TTS WebSocket/HTTP protocol: pure message records, parsing and building.

Shared by our client (bridge.silma) and our server (bridge.tts_server). The seed protocol is three
messages: `synthesize` -> `synthesis_complete` | `error`. Everything else here is an extension,
announced by the server (`hello` reply and the health endpoint) and used only when announced:

    {"type":"hello"}                       -> {"type":"hello","capabilities":[...],...}
    synthesize + "id"                      every reply for it carries the same id
    synthesize + "stream": true            audio_chunk{id, seq, audio} ... then synthesis_complete
    synthesize + "format"/"sample_rate"    output encoding (f32le s16le wav ulaw) and rate
    {"type":"cancel","id":...}             -> {"type":"cancelled","id":...}; the socket stays usable
    several synthesize in flight on one socket ("multiplex", up to max_in_flight)
    {"type":"register_voice","audio":...,"reference_text":...}  ("voice")
                                           -> {"type":"voice_registered","voice_id":...}; then
    synthesize + "voice_id" instead of audio/reference_text; an id the server has forgotten gets
    error code "unknown_voice" (register again, then retry)
    synthesize + "priority" (0 = a caller waits on it now, the default 1 = later) and
    "deadline_ms" (no use after this many ms)  ("priority"): queued by priority, then age;
    one whose deadline passes while queued is answered "timeout" instead of being rendered late
    error + "retry_after_s"                when to try again (busy): the server's own estimate
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any

import orjson

from bridge.errors import ProtocolError, TTSReplyError, TTSReplyTooLarge

SEED_FORMAT = "f32le"
SEED_SAMPLE_RATE = 24000
FORMATS = ("f32le", "s16le", "wav", "ulaw")
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
CAPABILITIES = ("id", "stream", "cancel", "multiplex", "format", "sample_rate", "voice",
                "priority")
SPEED_RANGE = (0.5, 2.0)

# Error codes: bad_request, busy, timeout, cancelled, unauthorized, internal, unknown_voice.
MAX_VOICE_ID_CHARS = 128
RETRYABLE_CODES = frozenset({"busy", "timeout"})
URGENT, NORMAL = 0, 1  # priorities: a caller is waiting on it now; anything else
MAX_PRIORITY = 9
MAX_DEADLINE_MS = 3_600_000
MAX_RETRY_AFTER_S = 3600.0


@dataclasses.dataclass(frozen=True, slots=True)
class SynthesizeRequest:
    text: str
    reference_audio: bytes = b""
    reference_text: str = ""
    speed: float = 1.0
    seed: int | None = None
    # Extensions (None / False = the client did not ask).
    id: str | None = None
    stream: bool = False
    format: str | None = None
    sample_rate: int | None = None
    voice_id: str | None = None  # a registered voice, instead of audio + reference_text
    priority: int | None = None  # URGENT or NORMAL (None: the server's default, NORMAL)
    deadline_ms: int | None = None  # no use to the client after this long

    @property
    def output_format(self) -> str:
        return self.format or SEED_FORMAT

    @property
    def output_rate(self) -> int:
        return self.sample_rate or SEED_SAMPLE_RATE


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Cancel:
    id: str


@dataclasses.dataclass(frozen=True, slots=True)
class RegisterVoice:
    audio: bytes
    reference_text: str
    id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class VoiceRegistered:
    voice_id: str
    id: str | None = None
    duration_s: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class ServerHello:
    capabilities: tuple[str, ...]
    engine: str = ""
    sample_rate: int = SEED_SAMPLE_RATE
    max_in_flight: int = 1
    can_clone: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class AudioChunk:
    id: str | None
    seq: int
    audio: bytes
    format: str
    sample_rate: int


@dataclasses.dataclass(frozen=True, slots=True)
class SynthesisComplete:
    id: str | None
    audio: bytes
    format: str
    sample_rate: int
    chunks: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Cancelled:
    id: str


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorReply:
    error: str
    id: str | None = None
    code: str = "internal"
    retry_after_s: float | None = None  # busy: the server's estimate of when to try again

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES


ClientMessage = SynthesizeRequest | Hello | Cancel | RegisterVoice
ServerMessage = (
    ServerHello | AudioChunk | SynthesisComplete | Cancelled | ErrorReply | VoiceRegistered
)


class RequestError(ProtocolError):
    """A client message that cannot be served; carries the request id when one was readable."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def _b64decode(value: Any, what: str, request_id: str | None) -> bytes:
    if not isinstance(value, str):
        raise RequestError(f"{what} must be a base64 string", request_id)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{what} is not valid base64", request_id) from None


def _load(raw: str | bytes) -> dict[str, Any]:
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestError("message is not valid JSON") from None
    if not isinstance(message, dict):
        raise RequestError("message must be a JSON object")
    return message


def parse_client_message(raw: str | bytes, *, max_text_chars: int) -> ClientMessage:
    """Parse and validate one client message. Raises RequestError with a readable reason."""
    message = _load(raw)
    kind = message.get("type", "synthesize")  # the seed server treats any body as synthesize
    if kind == "hello":
        return Hello()
    if kind == "cancel":
        request_id = message.get("id")
        if not isinstance(request_id, str) or not request_id:
            raise RequestError("cancel needs the id of the request to cancel")
        return Cancel(request_id)
    if kind == "register_voice":
        return parse_register_voice(message)
    if kind != "synthesize":
        raise RequestError(f"unknown message type {kind!r}")
    return parse_synthesize(message, max_text_chars=max_text_chars)


def parse_register_voice(message: dict[str, Any]) -> RegisterVoice:
    request_id = message.get("id")
    if request_id is not None and (not isinstance(request_id, str) or not request_id):
        raise RequestError("id must be a non-empty string")
    audio = _b64decode(message.get("audio") or "", "audio", request_id)
    if not audio:
        raise RequestError("register_voice needs the reference clip in audio", request_id)
    text = message.get("reference_text") or ""
    if not isinstance(text, str):
        raise RequestError("reference_text must be a string", request_id)
    return RegisterVoice(audio, text, request_id)


def parse_synthesize(message: dict[str, Any], *, max_text_chars: int) -> SynthesizeRequest:
    request_id = message.get("id")
    if request_id is not None and (not isinstance(request_id, str) or not request_id):
        raise RequestError("id must be a non-empty string")
    text = message.get("text")
    if not isinstance(text, str) or not text.strip():
        raise RequestError("text is missing or empty", request_id)
    if len(text) > max_text_chars:
        raise RequestError(
            f"text is {len(text)} characters, over the limit of {max_text_chars}", request_id
        )
    reference = message.get("audio") or ""
    reference_audio = _b64decode(reference, "audio", request_id) if reference else b""
    reference_text = message.get("reference_text") or ""
    if not isinstance(reference_text, str):
        raise RequestError("reference_text must be a string", request_id)
    speed = message.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise RequestError("speed must be a number", request_id)
    if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
        raise RequestError(
            f"speed {speed} is out of range {SPEED_RANGE[0]}-{SPEED_RANGE[1]}", request_id
        )
    seed = message.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError("seed must be an integer", request_id)
    stream = message.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream must be true or false", request_id)
    fmt = message.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise RequestError(f"format must be one of {', '.join(FORMATS)}", request_id)
    rate = message.get("sample_rate")
    # `8000.0 in SAMPLE_RATES` is True: insist on an int, the rate goes into WAV headers.
    if rate is not None and (type(rate) is not int or rate not in SAMPLE_RATES):
        raise RequestError(
            f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}", request_id
        )
    voice_id = message.get("voice_id")
    if voice_id is not None and (
        not isinstance(voice_id, str) or not 0 < len(voice_id) <= MAX_VOICE_ID_CHARS
    ):
        raise RequestError("voice_id must be a registered voice's id", request_id)
    if voice_id is not None and reference_audio:
        raise RequestError("send either audio or voice_id, not both", request_id)
    priority = message.get("priority")
    if priority is not None and (type(priority) is not int or not 0 <= priority <= MAX_PRIORITY):
        raise RequestError(f"priority must be an integer in 0..{MAX_PRIORITY}", request_id)
    deadline_ms = message.get("deadline_ms")
    if deadline_ms is not None and (
        type(deadline_ms) is not int or not 0 < deadline_ms <= MAX_DEADLINE_MS
    ):
        raise RequestError(f"deadline_ms must be an integer in 1..{MAX_DEADLINE_MS}", request_id)
    return SynthesizeRequest(
        text=text,
        reference_audio=reference_audio,
        reference_text=reference_text,
        speed=float(speed),
        seed=seed,
        id=request_id,
        stream=stream,
        format=fmt,
        sample_rate=rate,
        voice_id=voice_id,
        priority=priority,
        deadline_ms=deadline_ms,
    )


def _with_id(body: dict[str, Any], request_id: str | None) -> bytes:
    if request_id is not None:
        body["id"] = request_id
    return orjson.dumps(body)


def build_synthesize(request: SynthesizeRequest) -> bytes:
    """A client's request. Extension fields are written only when set, so a seed server is safe."""
    body: dict[str, Any] = {"type": "synthesize", "text": request.text}
    if request.reference_audio:
        body["audio"] = base64.b64encode(request.reference_audio).decode()
        body["reference_text"] = request.reference_text
    body["speed"] = request.speed
    if request.seed is not None:
        body["seed"] = request.seed
    if request.stream:
        body["stream"] = True
    if request.format:
        body["format"] = request.format
    if request.sample_rate:
        body["sample_rate"] = request.sample_rate
    if request.voice_id:
        body["voice_id"] = request.voice_id
    if request.priority is not None:
        body["priority"] = request.priority
    if request.deadline_ms is not None:
        body["deadline_ms"] = request.deadline_ms
    return _with_id(body, request.id)


def build_register_voice(message: RegisterVoice) -> bytes:
    body = {
        "type": "register_voice",
        "audio": base64.b64encode(message.audio).decode(),
        "reference_text": message.reference_text,
    }
    return _with_id(body, message.id)


def build_voice_registered(reply: VoiceRegistered) -> bytes:
    body = {"type": "voice_registered", "voice_id": reply.voice_id, "duration_s": reply.duration_s}
    return _with_id(body, reply.id)


def build_hello() -> bytes:
    return b'{"type":"hello"}'


def build_cancel(request_id: str) -> bytes:
    return orjson.dumps({"type": "cancel", "id": request_id})


def build_server_hello(hello: ServerHello) -> bytes:
    return orjson.dumps(
        {
            "type": "hello",
            "capabilities": list(hello.capabilities),
            "engine": hello.engine,
            "sample_rate": hello.sample_rate,
            "max_in_flight": hello.max_in_flight,
            "can_clone": hello.can_clone,
        }
    )


def build_audio_chunk(chunk: AudioChunk) -> bytes:
    body = {
        "type": "audio_chunk",
        "seq": chunk.seq,
        "audio": base64.b64encode(chunk.audio).decode(),
        "format": chunk.format,
        "sample_rate": chunk.sample_rate,
    }
    return _with_id(body, chunk.id)


def build_complete(done: SynthesisComplete) -> bytes:
    body: dict[str, Any] = {
        "type": "synthesis_complete",
        "audio": base64.b64encode(done.audio).decode(),
        "format": done.format,
        "sample_rate": done.sample_rate,
    }
    if done.chunks:
        body["chunks"] = done.chunks
    return _with_id(body, done.id)


def build_cancelled(request_id: str) -> bytes:
    return orjson.dumps({"type": "cancelled", "id": request_id})


def build_error(error: ErrorReply) -> bytes:
    body: dict[str, Any] = {"type": "error", "error": error.error, "code": error.code}
    if error.retryable:
        body["retryable"] = True
    if error.retry_after_s is not None:
        body["retry_after_s"] = round(error.retry_after_s, 3)
    return _with_id(body, error.id)


# Bounds on what a server may send, checked before anything is decoded or allocated: a TTS
# server may be chosen by a tenant and is untrusted. A declared rate of 1 Hz once turned one
# 16 KB chunk into 795 MiB of resampled audio; telephony never needs below 8 kHz or above 48 kHz.
MIN_REPLY_SAMPLE_RATE = 8000
MAX_REPLY_SAMPLE_RATE = 48000
# One message (the WebSocket's max_msg_size, the HTTP fallback's body cap): a seed server sends
# a whole utterance in one reply, ~20 s of 24 kHz float32 is 1.9 MB raw, 2.6 MB base64; 8 MiB
# leaves room for a long sentence (~58 s) and refuses the 64 MiB the audit could push.
MAX_REPLY_BYTES = 8 * 1024 * 1024
# Decoded audio in one message: 4 MiB is ~43 s of 24 kHz float32, twice the 20 s a seed
# whole-utterance reply needs; checked on the base64 length, before decoding.
MAX_CHUNK_AUDIO_BYTES = 4 * 1024 * 1024
MAX_REPLY_TEXT_CHARS = 1000  # error messages, engine names: read by people, kept short in logs
MAX_REPLY_ID_CHARS = 128  # ours are "r<counter>"; a longer id cannot be one of ours
MAX_CAPABILITIES = 64
MAX_ANNOUNCED_IN_FLIGHT = 64  # a server announcing more gets at most this many per socket


class _Bad(Exception):
    """A field fails validation; parse_server_message turns it into TTSReplyError."""


def _opt_str(message: dict[str, Any], key: str, limit: int, default: str = "") -> str:
    value = message.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _Bad(f"{key} must be a string")
    return value[:limit]


def _reply_id(message: dict[str, Any]) -> str | None:
    value = message.get("id")
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_REPLY_ID_CHARS:
        raise _Bad(f"id must be a string of 1-{MAX_REPLY_ID_CHARS} characters")
    return value


def _int(message: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = message.get(key, default)
    # bool is an int in Python, and 1e9 floats would pass int(): only a real int is a count.
    if type(value) is not int or not low <= value <= high:
        raise _Bad(f"{key} must be an integer in {low}..{high}")
    return value


def _retry_after(message: dict[str, Any]) -> float | None:
    """A busy server's hint, seconds; the client caps what it honours (retry_core)."""
    value = message.get("retry_after_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 <= value <= MAX_RETRY_AFTER_S:
        raise _Bad(f"retry_after_s must be a number of seconds in 0..{MAX_RETRY_AFTER_S:g}")
    return float(value)


def _rate(message: dict[str, Any]) -> int:
    """A declared sample rate, 0 when none is declared (the seed default applies)."""
    value = message.get("sample_rate")
    if value is None or (value == 0 and type(value) is int):
        return 0
    if type(value) is not int or not MIN_REPLY_SAMPLE_RATE <= value <= MAX_REPLY_SAMPLE_RATE:
        raise _Bad(f"declared sample_rate {str(value)[:20]} is outside "
                   f"{MIN_REPLY_SAMPLE_RATE}-{MAX_REPLY_SAMPLE_RATE} Hz")
    return value


def _format(message: dict[str, Any]) -> str:
    value = message.get("format")
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or value not in FORMATS:
        raise _Bad(f"format {str(value)[:20]!r} is not one of {', '.join(FORMATS)}")
    return value


def _audio(message: dict[str, Any]) -> bytes:
    value = message.get("audio")
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise _Bad("audio must be a base64 string")
    # Checked on the encoded length, before decoding allocates anything.
    if len(value) > (MAX_CHUNK_AUDIO_BYTES + 2) // 3 * 4:
        raise TTSReplyTooLarge(
            f"TTS server sent {len(value)} characters of base64 audio in one message, over "
            f"the bound of {MAX_CHUNK_AUDIO_BYTES} decoded bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("audio is not valid base64") from None


# Bytes per sample of the raw formats; "" is the seed's raw float32 unless the bytes are WAV.
_SAMPLE_BYTES = {"f32le": 4, "s16le": 2, "": 4}


def _audio_of(message: dict[str, Any]) -> tuple[bytes, str]:
    """The audio and its format, raw audio holding whole samples (our server encodes every
    chunk from whole samples; a half sample is a broken server, refused here, not in DSP)."""
    audio, fmt = _audio(message), _format(message)
    size = _SAMPLE_BYTES.get(fmt, 1)
    if len(audio) % size and not (fmt == "" and audio[:4] == b"RIFF"):
        raise _Bad(f"{len(audio)} bytes of {fmt or 'raw float32'} audio is not whole samples")
    return audio, fmt


def _capabilities(message: dict[str, Any]) -> tuple[str, ...]:
    value = message.get("capabilities", ())
    if not isinstance(value, list | tuple) or len(value) > MAX_CAPABILITIES or not all(
            isinstance(c, str) for c in value):
        raise _Bad(f"capabilities must be a list of at most {MAX_CAPABILITIES} strings")
    return tuple(value)


def _bool(message: dict[str, Any], key: str, default: bool) -> bool:
    value = message.get(key, default)
    if not isinstance(value, bool):
        raise _Bad(f"{key} must be true or false")
    return value


def parse_server_message(raw: str | bytes) -> ServerMessage:
    """Parse and bound a server reply. Tolerates the seed server (no type on HTTP, no format
    fields). Raises TTSReplyError (a ProtocolError) for anything else, TTSReplyTooLarge past the
    size bounds: every field is type-checked here, so no other exception type escapes."""
    if len(raw) > MAX_REPLY_BYTES:
        raise TTSReplyTooLarge(
            f"TTS server sent a {len(raw)}-byte message, over the bound of {MAX_REPLY_BYTES}")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise TTSReplyError("TTS server sent invalid JSON") from None
    if not isinstance(message, dict):
        raise TTSReplyError("TTS server sent a non-object message")
    kind = message.get("type")
    if kind is None:  # the seed HTTP server answers {"audio": ...} or {"error": ...}
        kind = "error" if "error" in message and "audio" not in message else "synthesis_complete"
    if not isinstance(kind, str):
        raise TTSReplyError("TTS server sent a message whose type is not a string")
    try:
        request_id = _reply_id(message)
        if kind == "error":
            error = message.get("error", "unknown error")
            return ErrorReply(str(error)[:MAX_REPLY_TEXT_CHARS] if error is not None
                              else "unknown error", request_id,
                              _opt_str(message, "code", MAX_VOICE_ID_CHARS, "internal"),
                              _retry_after(message))
        if kind == "hello":
            return ServerHello(
                capabilities=_capabilities(message),
                engine=_opt_str(message, "engine", MAX_REPLY_TEXT_CHARS),
                sample_rate=_rate(message) or SEED_SAMPLE_RATE,
                max_in_flight=_int(message, "max_in_flight", 1, 1, 1 << 31),
                can_clone=_bool(message, "can_clone", True),
            )
        if kind == "cancelled":
            if request_id is None:
                raise _Bad("cancelled needs the id of the request")
            return Cancelled(request_id)
        if kind == "voice_registered":
            voice_id = message.get("voice_id")
            if not isinstance(voice_id, str) or not 0 < len(voice_id) <= MAX_VOICE_ID_CHARS:
                raise _Bad("voice_id must be a non-empty string")
            duration = message.get("duration_s", 0.0)
            if isinstance(duration, bool) or not isinstance(duration, int | float):
                raise _Bad("duration_s must be a number")
            return VoiceRegistered(voice_id, request_id, float(duration))
        if kind == "audio_chunk":
            seq = _int(message, "seq", -1, 0, 1 << 31)
            audio, fmt = _audio_of(message)
            return AudioChunk(request_id, seq, audio, fmt, _rate(message))
        if kind == "synthesis_complete":
            audio, fmt = _audio_of(message)
            return SynthesisComplete(request_id, audio, fmt, _rate(message),
                                     _int(message, "chunks", 0, 0, 1 << 31))
    except _Bad as exc:
        raise TTSReplyError(f"TTS server sent a malformed {kind[:40]} message: {exc}") from None
    raise TTSReplyError(f"TTS server sent an unknown message type {kind[:40]!r}")
