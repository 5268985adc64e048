"""SILMA's public API v2 on our server: POST {base}/tts/v2/stream, WS {base}/tts/v2/ws/stream.

SILMA's own client plugins (livekit-plugins-silma, pipecat-silma) work against it with only
their base URL pointed here. The wire format is bridge.silma.v2_protocol's. Each request goes
through TTSService.synthesize like one of our own protocol (the same scheduler, deadline and
`tts_request` log line, labelled api=v2), its audio resampled to 24 kHz float32 and sent chunk
by chunk as the engine makes it.

- model_id: one of tts_server.v2_models, else unknown_model; its language decides how the
  pronunciation hints are read (<STAG_PN>, <STAG_EMAIL>, <STAG_LINK>: pronunciation.py).
- voice_id: a predefined voice (tts_server.v2_voices_dir) or `default`, the engine's own, else
  unknown_voice; custom_audio_id, which wins, names a voice registered over our protocol
  (register_voice), else unknown_voice.
- speed (0.5-2.0) goes to the engine. creativity (prosody variance) is accepted and ignored: no
  engine here has such a knob. user_id and enable_server_pronunciation_overrides are accepted;
  this server keeps no per-account overrides, so the flag changes nothing.
- With an api_key set, a request needs `apiKey: <key>` (or our `Authorization: Bearer`); a
  WebSocket without it is refused 401 before the upgrade, which SILMA's clients do not retry.
- WebSocket: {"status":"started"}, {"status":"streaming","audio":...} per piece of at most
  MAX_EVENT_AUDIO_S, then {"status":"completed"}, or {"status":"failed","code":...}; the socket
  stays usable. The wire has no request id, so a client ties replies to its requests by order
  alone: a request sent while another is spoken waits its turn (at most v2_max_pending of them;
  more are answered failed/busy), and every reply, a refusal too, comes in its request's turn.
  A client that runs MAX_BACKLOG replies ahead of what it reads is closed (1013). Closing the
  socket cancels what it asked for and frees its scheduler slot.
- HTTP: 200 application/octet-stream with the samples streamed; an error before the first
  byte is a status with {"detail": "<code>"}; one after it cuts the response short (the
  connection is closed before the body's end), never JSON after audio.
Bad input is answered, logged (`tts_v2_refused`: code and reason, never the text or the key)
and counted (health `v2_refused`, metric tts_server_v2_refused_total).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Mapping

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from bridge.silma import v2_protocol as v2
from bridge.silma.protocol import SPEED_RANGE, AudioChunk, SynthesizeRequest
from bridge.tts_server.auth import is_authorized_v2
from bridge.tts_server.http_api import retry_after
from bridge.tts_server.pronunciation import read_hints
from bridge.tts_server.service import ChunkSink, TTSService, error_reply
from bridge.tts_server.v2_catalog import V2Catalog
from bridge.tts_server.voices import StoredVoice, UnknownVoice
from bridge.tts_server.ws_api import HEARTBEAT_S, close_sockets

log = structlog.get_logger("bridge.tts_server")

PREFIX = "/tts/v2"
FORMAT = "f32le"
# A request is 250 characters of text and a few short fields: 16 KiB leaves room for escapes.
MAX_REQUEST_BYTES = 16 * 1024
MAX_BACKLOG = 64  # replies one socket may be owed (requests and refusals) before it is closed
# Audio per streaming event: keeps each message far below clients' limits (websockets' 1 MiB).
MAX_EVENT_AUDIO_S = 1.0
_EVENT_AUDIO_BYTES = int(MAX_EVENT_AUDIO_S * v2.SAMPLE_RATE) * 4
HTTP_STATUS = {"bad_request": 400, "text_too_long": 400, "unknown_model": 400,
               "unknown_voice": 400, "invalid_api_key": 401, "busy": 503, "timeout": 504}


@dataclasses.dataclass(frozen=True, slots=True)
class _Job:
    """One v2 request, ready for the service."""

    request: SynthesizeRequest
    voice: StoredVoice | None
    labels: Mapping[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class _Refusal:
    code: str


class V2Api:
    def __init__(self, service: TTSService, catalog: V2Catalog) -> None:
        self._service = service
        self._catalog = catalog
        self._open: set[web.WebSocketResponse] = set()

    async def close_all(self) -> None:
        await close_sockets(self._open)

    # -- requests ---------------------------------------------------------------------------
    def job(self, raw: bytes, transport: str) -> _Job:
        """A request checked and translated; V2RequestError with the client's code."""
        if len(raw) > MAX_REQUEST_BYTES:
            raise v2.V2RequestError(f"request is {len(raw)} bytes, over the limit of "
                                    f"{MAX_REQUEST_BYTES}")
        parsed = v2.parse_request(raw, speed_range=SPEED_RANGE)
        voice = parsed.voice
        language = self._catalog.language(voice.model_id)
        spoken = (self._registered(voice.custom_audio_id) if voice.custom_audio_id
                  else self._catalog.voice(voice.voice_id))
        try:
            text = read_hints(parsed.text, language)
        except ValueError as exc:
            raise v2.V2RequestError(str(exc)) from None
        request = SynthesizeRequest(
            text=text,
            speed=1.0 if voice.speed is None else voice.speed,
            stream=True,
            format=FORMAT,
            sample_rate=v2.SAMPLE_RATE,
        )
        labels = {"api": "v2", "transport": transport, "model": voice.model_id,
                  "voice": voice.custom_audio_id or voice.voice_id}
        return _Job(request, spoken, labels)

    def _registered(self, voice_id: str) -> StoredVoice:
        """A voice registered over our protocol: held by the job from now on, so one the
        store forgets while the job waits is still spoken."""
        try:
            return self._service.voices.get(voice_id)
        except UnknownVoice as exc:
            raise v2.V2RequestError(str(exc), "unknown_voice") from None

    def refused(self, code: str, transport: str, reason: str) -> _Refusal:
        self._service.v2_refused[code] += 1
        log.info("tts_v2_refused", code=code, transport=transport, reason=reason)
        return _Refusal(code)

    async def speak(self, job: _Job, on_chunk: ChunkSink) -> None:
        await self._service.synthesize(job.request, on_chunk, voice=job.voice, labels=job.labels)

    @staticmethod
    def failure(exc: Exception) -> tuple[str, float | None]:
        """The client's code for a request that failed in synthesis, and when to retry."""
        reply = error_reply(exc, None)  # logs anything unexpected as a crash
        return reply.code, reply.retry_after_s

    def authorized(self, request: web.Request) -> bool:
        return is_authorized_v2(request.headers, self._service.settings.api_key)

    # -- HTTP -------------------------------------------------------------------------------
    async def stream(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            self.refused("invalid_api_key", "http", "missing or wrong API key")
            return _error_response("invalid_api_key")
        raw = await _read_bounded(request, MAX_REQUEST_BYTES)
        if raw is None:
            self.refused("bad_request", "http", f"body over {MAX_REQUEST_BYTES} bytes")
            return _error_response("bad_request", status=413)
        try:
            job = self.job(raw, "http")
        except v2.V2RequestError as exc:
            self.refused(exc.code, "http", str(exc))
            return _error_response(exc.code)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})

        async def write(chunk: AudioChunk) -> None:
            if not response.prepared:
                await response.prepare(request)
            await response.write(chunk.audio)

        try:
            await self.speak(job, write)
        except ConnectionResetError:
            return response  # the client left; the service logged it and freed the slot
        except Exception as exc:  # request root: every failure becomes an answer
            code, retry_after_s = self.failure(exc)
            if not response.prepared:
                return _error_response(code, retry_after_s)
            # Audio went out already: end the body short of its end, so the client sees a
            # broken stream rather than a whole one, or JSON inside its audio.
            if request.transport is not None:
                request.transport.close()
            return response
        if not response.prepared:  # the engine made no audio at all
            await response.prepare(request)
        await response.write_eof()
        return response

    # -- WebSocket --------------------------------------------------------------------------
    async def ws(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            self.refused("invalid_api_key", "ws", "missing or wrong API key")
            return _error_response("invalid_api_key")  # refused before the upgrade
        # aiohttp's own limit sits above ours, so a message somewhat over the limit is still
        # read and answered; only one beyond twice the limit closes the socket with 1009.
        ws = web.WebSocketResponse(compress=False, max_msg_size=2 * MAX_REQUEST_BYTES,
                                   heartbeat=HEARTBEAT_S, decode_text=False)
        await ws.prepare(request)
        self._open.add(ws)
        try:
            await _Session(ws, self, self._service.settings.v2_max_pending).run()
        finally:
            self._open.discard(ws)
        return ws


class _Session:
    """One v2 socket: a reader that admits requests in order, a speaker that answers them."""

    def __init__(self, ws: web.WebSocketResponse, api: V2Api, max_pending: int) -> None:
        self._ws = ws
        self._api = api
        self._max_pending = max_pending
        self._owed: asyncio.Queue[_Job | _Refusal] = asyncio.Queue()
        self._waiting = 0  # jobs in _owed
        self._speaking = False

    async def run(self) -> None:
        """Until the client closes (or is closed); what is left of its requests is cancelled."""
        reader = asyncio.create_task(self._read())
        speaker = asyncio.create_task(self._speak())
        try:
            await asyncio.wait({reader, speaker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, speaker):
                task.cancel()
            for task in (reader, speaker):
                # The speaker ends by itself only when the client is gone (a reset write);
                # anything else either task raised is a fault, raised on.
                with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                    await task

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type == WSMsgType.TEXT:
                item = self._admit(message.data)
            elif message.type == WSMsgType.BINARY:
                item = self._api.refused("bad_request", "ws", "a binary frame: send JSON text")
            else:  # an ERROR (the socket broke): the next read ends the loop
                log.info("tts_v2_ws_error", reason=str(self._ws.exception()))
                continue
            if self._owed.qsize() >= MAX_BACKLOG:
                self._api.refused("busy", "ws", f"{MAX_BACKLOG} replies owed: socket closed")
                await self._ws.close(code=WSCloseCode.TRY_AGAIN_LATER,
                                     message=b"too many requests ahead of their replies")
                return
            self._owed.put_nowait(item)

    def _admit(self, raw: bytes) -> _Job | _Refusal:
        try:
            job = self._api.job(raw, "ws")
        except v2.V2RequestError as exc:
            return self._api.refused(exc.code, "ws", str(exc))
        if self._waiting + self._speaking > self._max_pending:
            return self._api.refused("busy", "ws", f"{self._waiting} requests already wait "
                                     "on this socket")
        self._waiting += 1
        return job

    async def _speak(self) -> None:
        while True:
            item = await self._owed.get()
            if isinstance(item, _Refusal):
                await self._send(v2.build_event(v2.FAILED, code=item.code))
                continue
            self._waiting -= 1
            self._speaking = True
            try:
                await self._say(item)
            finally:
                self._speaking = False

    async def _say(self, job: _Job) -> None:
        await self._send(v2.build_event(v2.STARTED))
        try:
            await self._api.speak(job, self._send_audio)
        except ConnectionResetError:
            raise  # the client is gone: nothing more to say on this socket
        except Exception as exc:  # request root: every failure becomes a reply
            await self._send(v2.build_event(v2.FAILED, code=self._api.failure(exc)[0]))
            return
        await self._send(v2.build_event(v2.COMPLETED))

    async def _send_audio(self, chunk: AudioChunk) -> None:
        audio = chunk.audio
        for start in range(0, len(audio), _EVENT_AUDIO_BYTES):
            await self._send(v2.build_event(v2.STREAMING,
                                            audio[start:start + _EVENT_AUDIO_BYTES]))

    async def _send(self, frame: bytes) -> None:
        # A closed or closing socket raises ConnectionResetError (aiohttp's reset error).
        await self._ws.send_frame(frame, WSMsgType.TEXT)


def _error_response(code: str, retry_after_s: float | None = None,
                    status: int | None = None) -> web.Response:
    return web.Response(
        body=v2.build_error_body(code),
        status=status or HTTP_STATUS.get(code, 500),
        content_type="application/json",
        headers=retry_after(retry_after_s) if code == "busy" else None,
    )


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it is over `limit` bytes (read no further than that)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for piece in request.content.iter_any():
        body += piece
        if len(body) > limit:
            return None
    return bytes(body)
