"""Speech-to-text through an OpenAI-compatible transcription endpoint, one request per
utterance: OpenAI itself, Groq (`https://api.groq.com/openai/v1`, model
`whisper-large-v3-turbo`), or a local whisper server that speaks the same API.

The wire format, as OpenAI's API reference documents `POST /audio/transcriptions`
(platform.openai.com/docs/api-reference/audio/createTranscription) and Groq's speech-to-text
guide repeats it (console.groq.com/docs/speech-to-text): a multipart/form-data body with
`file` (an audio file whose name and content type say its format: wav here), `model`,
optionally `language` (ISO-639-1) and `response_format` (`json`: the reply is
`{"text": "..."}`), and `Authorization: Bearer <key>`.

The utterance goes as a 16-bit PCM WAV at 8 kHz (the caller's mu-law decoded; every server
takes PCM WAV, not all take mu-law WAV). The request is bounded by `request_timeout_s`, its
reply by MAX_REPLY_BYTES, and it never follows a redirect. A failure (timeout, connection, an
HTTP status, a reply that is not the documented JSON) loses that utterance only: it is logged
and told to `on_failure` by the shared batch shell (batch.py), and the call goes on. The key
is never logged; a reply's excerpt in the log has it masked.
"""

from __future__ import annotations

import io
import wave

import aiohttp
import orjson

from bridge.audio.mulaw import ulaw2lin
from bridge.settings import SttSettings
from bridge.stt.base import OnFailure, OnTranscript, Transcriber
from bridge.stt.batch import BatchTranscriber, SttError
from bridge.stt.utterance_core import SAMPLE_RATE, Utterance

DEFAULT_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "whisper-1"
PATH = "/audio/transcriptions"
MAX_REPLY_BYTES = 64 * 1024
MAX_TEXT_CHARS = 8000  # 30 s of the fastest speech is well under 1000 characters
_EXCERPT_CHARS = 200


class OpenAiStt:
    name = "openai"

    def __init__(self, settings: SttSettings, http: aiohttp.ClientSession) -> None:
        self._url = (settings.url or DEFAULT_URL).rstrip("/") + PATH
        self._model = settings.model or DEFAULT_MODEL
        # The API wants ISO-639-1 ("en"), where the bridge's setting may name a region too.
        self._language = settings.language.split("-")[0].lower()
        self._key = settings.api_key
        self._headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._timeout_s = settings.request_timeout_s
        self._http = http  # the caller's: it is not closed here

    def open(self, call_id: str, on_transcript: OnTranscript,
             on_failure: OnFailure) -> Transcriber:
        return BatchTranscriber(call_id, self.name, self.recognize, on_transcript, on_failure)

    async def recognize(self, utterance: Utterance) -> str:
        form = aiohttp.FormData()
        form.add_field("file", wav_bytes(utterance.mulaw), filename="utterance.wav",
                       content_type="audio/wav")
        form.add_field("model", self._model)
        if self._language:
            form.add_field("language", self._language)
        form.add_field("response_format", "json")
        try:
            async with self._http.post(
                self._url, data=form, headers=self._headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            ) as response:
                status = response.status
                body = await _read_bounded(response.content)
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise SttError("timeout", f"no reply within {self._timeout_s} s") from exc
        except aiohttp.ClientError as exc:
            raise SttError("unreachable", f"{type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise SttError("http_status", f"HTTP {status}: {self._excerpt(body)}")
        return parse_reply(body)

    async def aclose(self) -> None:
        """Nothing of its own to release: the HTTP session is the caller's."""

    def _excerpt(self, body: bytes) -> str:
        text = body[:_EXCERPT_CHARS].decode("utf-8", "replace")
        return text.replace(self._key, "***") if self._key else text


def wav_bytes(mulaw: bytes) -> bytes:
    """8 kHz mu-law as a mono 16-bit PCM WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(ulaw2lin(mulaw).astype("<i2").tobytes())
    return out.getvalue()


def parse_reply(body: bytes) -> str:
    """The text of a `response_format=json` reply, or SttError("bad_reply")."""
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SttError("bad_reply", f"the reply is not JSON: {exc}") from exc
    text = reply.get("text") if isinstance(reply, dict) else None
    if not isinstance(text, str):
        raise SttError("bad_reply", "the reply has no string 'text'")
    if len(text) > MAX_TEXT_CHARS:
        raise SttError("bad_reply", f"the reply's text is over {MAX_TEXT_CHARS} characters")
    return text


async def _read_bounded(content: aiohttp.StreamReader) -> bytes:
    body = bytearray()
    async for chunk in content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > MAX_REPLY_BYTES:
            raise SttError("bad_reply", f"the reply is over {MAX_REPLY_BYTES} bytes")
    return bytes(body)
