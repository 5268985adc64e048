"""WebSocket {base}/ws: the seed protocol plus the announced extensions, many requests a socket.

The reader loop never waits on synthesis: each request runs in its own task, and replies from
several tasks interleave as whole frames (no compression, so frame writes never yield midway).
A bad frame gets an error reply and the socket stays usable.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from bridge.silma.protocol import (
    AudioChunk,
    Cancel,
    ErrorReply,
    Hello,
    RegisterVoice,
    RequestError,
    SynthesizeRequest,
    build_audio_chunk,
    build_cancelled,
    build_complete,
    build_error,
    build_server_hello,
    build_voice_registered,
)
from bridge.tts_server.auth import is_authorized
from bridge.tts_server.http_api import unauthorized
from bridge.tts_server.service import TTSService, error_reply

log = structlog.get_logger("bridge.tts_server")

HEARTBEAT_S = 30.0  # pings find dead peers of long-lived pooled sockets


class WebSocketApi:
    def __init__(self, service: TTSService) -> None:
        self._service = service
        self._open: set[web.WebSocketResponse] = set()

    async def close_all(self) -> None:
        await close_sockets(self._open)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        service = self._service
        if not is_authorized(request.headers, service.settings.api_key):
            return unauthorized()  # refused before the upgrade
        # aiohttp's own limit sits above ours, so a message somewhat over the limit is still read
        # and answered with a clear error; only one beyond twice the limit closes with 1009.
        ws = web.WebSocketResponse(
            compress=False,
            max_msg_size=2 * service.settings.max_message_bytes,
            heartbeat=HEARTBEAT_S,
            decode_text=False,
        )
        await ws.prepare(request)
        session = _Session(ws, service)
        self._open.add(ws)
        try:
            await session.read_loop()
        finally:
            self._open.discard(ws)
            await session.cancel_all()
        return ws


async def close_sockets(sockets: set[web.WebSocketResponse]) -> None:
    """On shutdown: a pooled socket would otherwise hold the server open until it idles out."""
    await asyncio.gather(
        *(
            ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
            for ws in tuple(sockets)
        ),
        return_exceptions=True,
    )


class _Session:
    def __init__(self, ws: web.WebSocketResponse, service: TTSService) -> None:
        self._ws = ws
        self._service = service
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_id: dict[str, asyncio.Task[None]] = {}

    async def read_loop(self) -> None:
        async for message in self._ws:
            if message.type == WSMsgType.TEXT:
                await self._on_text(message.data)
            elif message.type == WSMsgType.BINARY:
                binary = "binary frames are not supported: send JSON text"
                await self._send_error(ErrorReply(binary, code="bad_request"))
            elif message.type == WSMsgType.ERROR:
                log.info("tts_ws_closed", reason=str(self._ws.exception()))

    async def cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_text(self, raw: bytes) -> None:
        try:
            message = self._service.parse(raw)
        except RequestError as exc:
            await self._send_error(error_reply(exc, None))
            return
        if isinstance(message, Hello):
            await self._send(build_server_hello(self._service.hello()))
        elif isinstance(message, Cancel):
            await self._cancel(message.id)
        elif isinstance(message, RegisterVoice):
            try:
                registered = self._service.register_voice(message)
            except RequestError as exc:
                await self._send_error(error_reply(exc, message.id))
                return
            await self._send(build_voice_registered(registered))
        else:
            await self._start(message)

    async def _start(self, request: SynthesizeRequest) -> None:
        if request.id is not None and request.id in self._by_id:
            await self._send_error(
                ErrorReply(f"request id {request.id!r} is already in flight", code="bad_request")
            )
            return
        limit = self._service.max_in_flight
        if len(self._tasks) >= limit:
            full = f"{limit} requests already in flight on this socket"
            await self._send_error(ErrorReply(full, request.id, "busy"))
            return
        task = asyncio.create_task(self._serve(request))
        self._tasks.add(task)
        if request.id is not None:
            self._by_id[request.id] = task
        task.add_done_callback(lambda done: self._forget(request.id, done))

    def _forget(self, request_id: str | None, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if request_id is not None and self._by_id.get(request_id) is task:
            del self._by_id[request_id]

    async def _serve(self, request: SynthesizeRequest) -> None:
        on_chunk = self._send_chunk if request.stream else None
        try:
            done = await self._service.synthesize(request, on_chunk)
        except Exception as exc:  # request root: every failure becomes an error reply
            await self._send_error(error_reply(exc, request.id))
            return
        await self._send(build_complete(done))

    async def _cancel(self, request_id: str) -> None:
        task = self._by_id.get(request_id)
        if task is not None:
            task.cancel()
            # Let it unwind first, so nothing of the request follows the ack.
            await asyncio.wait({task})
        # Acked even when the request already finished, so a client waiting on it never hangs.
        await self._send(build_cancelled(request_id))

    async def _send_chunk(self, chunk: AudioChunk) -> None:
        await self._send(build_audio_chunk(chunk))

    async def _send_error(self, reply: ErrorReply) -> None:
        await self._send(build_error(reply))

    async def _send(self, frame: bytes) -> None:
        try:
            await self._ws.send_frame(frame, WSMsgType.TEXT)
        except ConnectionResetError:
            pass  # the peer is gone; the read loop ends and cancels what is left
