"""A double of SILMA's cloud API v2 (a paid API) on 127.0.0.1, speaking its documented wire
format (PROTOCOLS.md, from SILMA's plugins): {base}/ws/stream and POST {base}/stream, the
`apiKey` header, `started` / `streaming` / `completed` / `failed` events with base64 float32,
or bare binary frames, and close code 4001 for a refused key. It replays real speech (Piper,
resampled to 24 kHz) for any text, and records what it was sent so tests can assert on it.

`script` holds what the next requests get, one entry each, then plain success: "ok",
"busy" / "invalid_voice" (a failed event, or that code over HTTP), "garbage" (a non-JSON text
frame), "close_4001" (the socket closed as a refused key), "stall" (nothing, until the client
leaves).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from bridge.audio.resample import StreamResampler
from bridge.silma import v2_protocol as v2
from bridge.tts_server.engines import Utterance
from bridge.tts_server.engines.piper import PiperEngine
from tests.servers import serving_app

BASE = "/tts/v2"
CHUNK_SAMPLES = 4800  # 0.2 s per streaming event, as a streaming server would send


async def piper_speech(engine: PiperEngine, text: str) -> bytes:
    """`text` spoken by Piper, as the float32 24 kHz bytes SILMA's API sends."""
    resampler = StreamResampler(engine.sample_rate, v2.SAMPLE_RATE)
    parts = [resampler.process(chunk) async for chunk in engine.synthesize(Utterance(text))]
    parts.append(resampler.flush())
    return np.concatenate(parts).astype("<f4").tobytes()


@dataclasses.dataclass
class CloudDouble:
    audio: bytes
    api_key: str = "sk-cloud"
    binary: bool = False  # send bare binary frames, split off sample boundaries
    accept_websocket: bool = True
    # How a wrong key is refused on the WebSocket: "close" (close code 4001 after the upgrade)
    # or "upgrade" (HTTP 401 instead of the upgrade); SILMA's plugins handle both.
    key_refusal: str = "close"
    pace_s: float = 0.0  # between streaming events: a GPU rendering at about real time
    script: list[str] = dataclasses.field(default_factory=list)
    requests: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    keys_seen: list[str] = dataclasses.field(default_factory=list)
    sockets_opened: int = 0  # health checks' upgrades included
    # Set when a socket that carried a request closes (not a health check's upgrade).
    dropped: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    url: str = ""

    def _next(self) -> str:
        return self.script.pop(0) if self.script else "ok"

    def _chunks(self) -> list[bytes]:
        step = CHUNK_SAMPLES * 4
        if self.binary:
            step += 3  # every frame but the last ends mid-sample: the client must join them
        return [self.audio[i:i + step] for i in range(0, len(self.audio), step)]

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        self.keys_seen.append(request.headers.get(v2.API_KEY_HEADER, ""))
        if not self.accept_websocket:
            raise web.HTTPNotFound()
        key_ok = request.headers.get(v2.API_KEY_HEADER) == self.api_key
        if not key_ok and self.key_refusal == "upgrade":
            return web.json_response({"detail": "invalid_api_key"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets_opened += 1
        served = len(self.requests)
        try:
            if not key_ok:
                await ws.close(code=4001, message=b"invalid api key")
                return ws
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                self.requests.append(orjson.loads(message.data))
                if not await self._answer(ws, self._next()):
                    break
        finally:
            if len(self.requests) > served:
                self.dropped.set()
        return ws

    async def _answer(self, ws: web.WebSocketResponse, what: str) -> bool:
        """One utterance's replies; False when the socket is to close."""
        if what == "close_4001":
            await ws.close(code=4001, message=b"invalid api key")
            return False
        if what == "garbage":
            await ws.send_str("<html>502 Bad Gateway</html>")
            return True
        if what == "stall":
            await ws.receive()  # whatever comes next: the client's close
            return False
        await ws.send_str(v2.build_event(v2.STARTED).decode())
        if what != "ok":
            await ws.send_str(v2.build_event(v2.FAILED, code=what).decode())
            return True
        for chunk in self._chunks():
            if self.binary:
                await ws.send_bytes(chunk)
            else:
                await ws.send_str(v2.build_event(v2.STREAMING, chunk).decode())
            await asyncio.sleep(self.pace_s)  # the rendering time itself, not a wait
        await ws.send_str(v2.build_event(v2.COMPLETED).decode())
        return True

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.keys_seen.append(request.headers.get(v2.API_KEY_HEADER, ""))
        if request.headers.get(v2.API_KEY_HEADER) != self.api_key:
            return web.json_response({"detail": "invalid_api_key"}, status=401)
        self.requests.append(await request.json())
        what = self._next()
        if what != "ok":
            status = 503 if what == "busy" else 400
            return web.json_response({"detail": what}, status=status)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        for chunk in self._chunks():
            await response.write(chunk)
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def cloud_double(audio: bytes, **options: Any) -> AsyncIterator[CloudDouble]:
    double = CloudDouble(audio, **options)
    app = web.Application()
    app.router.add_get(f"{BASE}{v2.WS_PATH}", double.websocket)
    app.router.add_post(f"{BASE}{v2.HTTP_PATH}", double.stream)
    async with serving_app(app) as url:
        double.url = url + BASE
        yield double
