"""Doubles of the paid speech-to-text APIs on 127.0.0.1, speaking their documented wire formats
(the sources are cited in bridge/stt/openai_stt.py and bridge/stt/deepgram_core.py). They check
what the bridge sends and record it, so tests assert on both sides.

TranscriptionDouble: `POST {base}/audio/transcriptions` (multipart: file=WAV, model, language,
response_format=json; `Authorization: Bearer <key>`) answering `{"text": ...}`. `script` holds
what the next requests get, one entry each, then plain success: "ok", "500", "slow" (no answer
within any timeout the tests use), "garbage" (not JSON), "no_text" (JSON without "text").

DeepgramDouble: `GET {base}/v1/listen` upgraded to a WebSocket (`Authorization: Token <key>`,
HTTP 401 otherwise; the query must describe 8 kHz mono mu-law with interim results). It counts
the audio bytes of each connection, sends an interim `Results` every PARTIAL_S of audio and a
final one (`is_final`, `speech_final`, `from_finalize`) at each `Finalize`, covering the audio
since the previous final, with `words` as its transcript; `KeepAlive` and `CloseStream` are
recorded (the latter ends the stream). `drop_after_s`: each of the first `drops` connections is
cut (no close frame) once that much audio came on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import wave
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import BodyPartReader, WSMsgType, web

from tests.servers import serving_app

PARTIAL_S = 0.5
MULAW_RATE = 8000


@dataclasses.dataclass
class TranscriptionDouble:
    text: str = "hello from the caller"
    api_key: str = "sk-test-key"
    script: list[str] = dataclasses.field(default_factory=list)
    requests: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    request_seen: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # any
    url: str = ""  # the base URL, ".../v1"

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        self.request_seen.set()
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}},
                status=401)
        fields: dict[str, Any] = {}
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or part.name is None:
                return web.json_response({"error": {"message": "bad part"}}, status=400)
            if part.name == "file":
                fields["filename"] = part.filename
                fields["content_type"] = part.headers.get("Content-Type")
                fields["wav"] = _wav_info(await part.read())
            else:
                fields[part.name] = await part.text()
        self.requests.append(fields)
        missing = {"model", "response_format", "wav"} - fields.keys()
        if missing or fields["response_format"] != "json":
            return web.json_response({"error": {"message": f"missing {sorted(missing)}"}},
                                     status=400)
        action = self.script.pop(0) if self.script else "ok"
        if action == "500":
            return web.json_response({"error": {"message": "server error"}}, status=500)
        if action == "slow":
            await asyncio.sleep(60)
        if action == "garbage":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if action == "no_text":
            return web.json_response({"transcript": self.text})
        return web.json_response({"text": self.text})


def _wav_info(data: bytes) -> dict[str, Any]:
    with wave.open(io.BytesIO(data), "rb") as wav:
        return {"rate": wav.getframerate(), "channels": wav.getnchannels(),
                "width": wav.getsampwidth(), "seconds": wav.getnframes() / wav.getframerate()}


@contextlib.asynccontextmanager
async def serving_transcriptions(double: TranscriptionDouble) -> AsyncIterator[TranscriptionDouble]:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/audio/transcriptions", double.transcriptions)
    async with serving_app(app) as base:
        double.url = f"{base}/v1"
        yield double


EXPECTED_QUERY = {"encoding": "mulaw", "sample_rate": "8000", "channels": "1",
                  "interim_results": "true"}


@dataclasses.dataclass
class DeepgramDouble:
    words: str = "i would like a table for two"
    api_key: str = "dg-test-key"
    drop_after_s: float | None = None
    drops: int = 0
    connections: int = 0
    refused: int = 0
    queries: list[dict[str, str]] = dataclasses.field(default_factory=list)
    audio_bytes: list[int] = dataclasses.field(default_factory=list)  # per connection
    texts: list[str] = dataclasses.field(default_factory=list)  # control messages received
    connected: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # each time
    keepalive: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    close_stream: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    url: str = ""

    async def listen(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            self.refused += 1
            return web.json_response({"err_code": "INVALID_AUTH"}, status=401)
        query = dict(request.query)
        self.queries.append(query)
        if any(query.get(k) != v for k, v in EXPECTED_QUERY.items()):
            return web.json_response({"err_code": "Bad Request"}, status=400)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self.connected.set()
        index = len(self.audio_bytes)
        self.audio_bytes.append(0)
        drop = self.drop_after_s if index < self.drops else None
        final_at = 0  # bytes covered by finals so far
        partial_at = 0
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                self.audio_bytes[index] += len(message.data)
                received = self.audio_bytes[index]
                if drop is not None and received >= drop * MULAW_RATE:
                    # Cut without a close frame, as a network failure would.
                    assert request.transport is not None
                    request.transport.abort()
                    break
                if received - partial_at >= PARTIAL_S * MULAW_RATE:
                    partial_at = received
                    await ws.send_str(_results(self._partial(), final_at, received, final=False))
            elif message.type == WSMsgType.TEXT:
                kind = orjson.loads(message.data)["type"]
                self.texts.append(kind)
                if kind == "KeepAlive":
                    self.keepalive.set()
                elif kind == "Finalize":
                    received = self.audio_bytes[index]
                    await ws.send_str(_results(self.words, final_at, received, final=True))
                    final_at = partial_at = received
                elif kind == "CloseStream":
                    self.close_stream.set()
                    await ws.send_str(orjson.dumps({"type": "Metadata", "duration": 0}).decode())
                    await ws.close()
        return ws

    def _partial(self) -> str:
        words = self.words.split()
        return " ".join(words[: max(1, len(words) // 2)])


def _results(text: str, start_byte: int, end_byte: int, *, final: bool) -> str:
    start = start_byte / MULAW_RATE
    return orjson.dumps({
        "type": "Results", "channel_index": [0, 1],
        "start": start, "duration": end_byte / MULAW_RATE - start,
        "is_final": final, "speech_final": final, "from_finalize": final,
        "channel": {"alternatives": [{"transcript": text, "confidence": 0.9, "words": []}]},
        "metadata": {"request_id": "double", "model_info": {"name": "double"}},
    }).decode()


@contextlib.asynccontextmanager
async def serving_deepgram(double: DeepgramDouble) -> AsyncIterator[DeepgramDouble]:
    app = web.Application()
    app.router.add_get("/v1/listen", double.listen)
    async with serving_app(app) as base:
        double.url = base
        yield double
