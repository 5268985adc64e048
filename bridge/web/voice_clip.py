"""A user's reference voice clip: read from an upload (multipart or JSON base64) within a size
cap, checked to be real audio of a sane length, and stored as plain 16-bit mono WAV.

The app's body limit (1 MiB) is too small for a clip, so bodies are streamed here under a cap of
their own instead of through request.post() / request.json().
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json

from aiohttp import BodyPartReader, web

from bridge.audio.codec import decode_audio, is_wav, wav_bytes
from bridge.errors import AudioFormatError
from bridge.web.field_errors import FieldError

MAX_CLIP_BYTES = 10 * 1024 * 1024
MAX_CLIP_SECONDS = 30.0
MIN_CLIP_SECONDS = 0.5
MIN_RATE, MAX_RATE = 8000, 192_000
MAX_TRANSCRIPT_CHARS = 1000
_CHUNK = 64 * 1024
# JSON carries the clip in base64 (4 bytes per 3) plus the transcript and punctuation.
_MAX_JSON_BYTES = MAX_CLIP_BYTES * 4 // 3 + 4 * MAX_TRANSCRIPT_CHARS + 1024


@dataclasses.dataclass(frozen=True)
class VoiceUpload:
    clip: bytes
    transcript: str


def too_large() -> FieldError:
    return FieldError("clip", f"the clip is over {MAX_CLIP_BYTES // (1024 * 1024)} MB", 413)


async def read_voice_upload(request: web.Request) -> VoiceUpload:
    """The clip and transcript of a multipart form (fields `clip`, `transcript`) or a JSON object
    (`clip` in base64, `transcript`)."""
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request)
    if request.content_type == "application/json":
        return _from_json(await _read_capped(request, _MAX_JSON_BYTES))
    raise FieldError("clip", "send multipart/form-data or application/json", 415)


async def _read_capped(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise too_large()
    body = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise too_large()
    return bytes(body)


async def _read_multipart(request: web.Request) -> VoiceUpload:
    clip, transcript = b"", ""
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise FieldError("clip", "nested multipart bodies are not accepted")
        if part.name == "clip":
            clip = await _read_part(part, MAX_CLIP_BYTES)
        elif part.name == "transcript":
            raw = await _read_part(part, 4 * MAX_TRANSCRIPT_CHARS)
            try:
                transcript = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise FieldError("transcript", "the transcript is not UTF-8 text") from None
        else:
            await part.release()  # unknown fields (the CSRF token) are skipped
    return VoiceUpload(clip, transcript)


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise too_large() if part.name == "clip" else FieldError(
                str(part.name), "this field is too long")
    return bytes(data)


def _from_json(raw: bytes) -> VoiceUpload:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise FieldError("body", "not valid JSON") from None
    if not isinstance(body, dict):
        raise FieldError("body", "expected a JSON object")
    clip, transcript = body.get("clip", ""), body.get("transcript", "")
    if not isinstance(clip, str):
        raise FieldError("clip", "clip must be a base64 string")
    if not isinstance(transcript, str):
        raise FieldError("transcript", "transcript must be a string")
    try:
        data = base64.b64decode(clip, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError("clip", "clip is not valid base64") from None
    if len(data) > MAX_CLIP_BYTES:
        raise too_large()
    return VoiceUpload(data, transcript)


def normalized_clip(data: bytes) -> bytes:
    """The clip as 16-bit mono WAV at its own rate; ValueError saying what is wrong with it.
    Re-encoding drops any extra chunks (metadata) and gives every engine the same format."""
    if not data:
        raise ValueError("choose a WAV clip to upload")
    if not is_wav(data):
        raise ValueError("this file is not a WAV audio clip")
    try:
        samples, rate = decode_audio(data)
    except AudioFormatError as exc:
        raise ValueError(f"this WAV clip cannot be read: {exc}") from None
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
    seconds = len(samples) / rate
    if not MIN_CLIP_SECONDS <= seconds <= MAX_CLIP_SECONDS:
        raise ValueError(f"the clip is {seconds:.1f} s long; it must last "
                         f"{MIN_CLIP_SECONDS}-{MAX_CLIP_SECONDS:.0f} s")
    return wav_bytes(samples, rate)


def checked_transcript(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError("type what the clip says")
    if len(text) > MAX_TRANSCRIPT_CHARS:
        raise ValueError(f"the transcript is over {MAX_TRANSCRIPT_CHARS} characters")
    return text
