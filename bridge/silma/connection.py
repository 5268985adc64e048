"""One WebSocket connection to a SILMA TTS server: handshake, request streams, cancel.

The connection learns what the server supports from a `hello` exchange; a server that knows only
the seed protocol answers it with an error (or closes), and then only seed messages are sent.
A reader task routes replies to the request they belong to (by id when the server echoes ids,
else to the one request in flight). A request abandoned mid-synthesis leaves the connection
reusable only if the server acknowledged a cancel; otherwise the connection is retired.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import itertools
import ssl
from collections.abc import AsyncIterator, Callable

import aiohttp

from bridge.errors import ProtocolError, TTSError, TTSUnavailable
from bridge.silma import protocol as p
from bridge.silma.endpoint import Endpoint

HELLO_TIMEOUT_S = 2.0
CANCEL_ACK_TIMEOUT_S = 2.0
_ids = itertools.count(1)


@dataclasses.dataclass(frozen=True, slots=True)
class AudioPiece:
    """Audio as the server sent it; decoding is the caller's (the call session's) job."""

    data: bytes
    format: str
    sample_rate: int


class TTSRefused(TTSUnavailable):
    """The server answered but refused the WebSocket upgrade (HTTP may still work)."""


class ConnState(enum.Enum):
    READY = "ready"
    CLOSED = "closed"


_Reply = p.ServerMessage | BaseException


def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class SilmaConnection:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, hello: p.ServerHello | None,
                 created_at: float) -> None:
        self._ws = ws
        self.hello = hello
        self.created_at = created_at
        self.state = ConnState.READY
        self.requests_served = 0
        self._closing: asyncio.Task[bool] | None = None
        self.on_closed: Callable[[], None] | None = None  # the pool's hook for a lost socket
        self._routes: dict[str | None, asyncio.Queue[_Reply]] = {}
        self._reader = asyncio.create_task(self._read_loop(), name="silma-reader")

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, endpoint: Endpoint, *, api_key: str,
                   timeout_s: float, heartbeat_s: float | None = None,
                   ssl: ssl.SSLContext | bool = True) -> SilmaConnection:
        """Connect and handshake. Raises TTSUnavailable when the server cannot be reached."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                ws = await session.ws_connect(
                    endpoint.ws_url, headers=auth_headers(api_key), compress=0,
                    heartbeat=heartbeat_s, ssl=ssl, max_msg_size=64 * 1024 * 1024,
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise TTSRefused(f"TTS server refused the WebSocket ({exc.status})") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TTSUnavailable(f"cannot connect to TTS server: {exc or type(exc).__name__}") \
                from exc
        except TimeoutError:
            raise TTSUnavailable(f"TTS server did not accept a connection in {timeout_s}s") \
                from None
        try:
            async with asyncio.timeout(timeout_s):
                hello = await cls._handshake(ws)
        except (TimeoutError, aiohttp.ClientError) as exc:
            await ws.close()
            raise TTSUnavailable("TTS server did not answer the handshake") from exc
        return cls(ws, hello, loop.time())

    @staticmethod
    async def _handshake(ws: aiohttp.ClientWebSocketResponse) -> p.ServerHello | None:
        await ws.send_str(p.build_hello().decode())
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                msg = await ws.receive()
        except TimeoutError:
            return None  # a seed server may stay silent on an unknown message
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise aiohttp.ClientError("TTS server closed during the handshake")
        try:
            reply = p.parse_server_message(msg.data)
        except ProtocolError:
            return None
        return reply if isinstance(reply, p.ServerHello) else None

    # -- capabilities ------------------------------------------------------------------------
    def supports(self, capability: str) -> bool:
        return self.hello is not None and capability in self.hello.capabilities

    @property
    def max_in_flight(self) -> int:
        if self.supports("multiplex") and self.supports("id") and self.hello is not None:
            return max(1, self.hello.max_in_flight)
        return 1

    @property
    def in_flight(self) -> int:
        return len(self._routes)

    @property
    def usable(self) -> bool:
        return self.state is ConnState.READY and not self._ws.closed

    def __repr__(self) -> str:
        return (f"<SilmaConnection {self.state.value} in_flight={self.in_flight} "
                f"served={self.requests_served}>")

    # -- requests ----------------------------------------------------------------------------
    def prepare(self, request: p.SynthesizeRequest, *, want_stream: bool,
                want_format: str | None, want_rate: int | None) -> p.SynthesizeRequest:
        """Add the extensions this server announced; a seed server gets the seed message."""
        return dataclasses.replace(
            request,
            id=f"r{next(_ids)}" if self.supports("id") else None,
            stream=want_stream and self.supports("stream"),
            format=want_format if self.supports("format") else None,
            sample_rate=want_rate if self.supports("sample_rate") else None,
        )

    async def synthesize(self, request: p.SynthesizeRequest,
                         timeout_s: float) -> AsyncIterator[AudioPiece]:
        """Send one request and yield its audio as it arrives.

        Leaving the iteration early (cancellation, barge-in) cancels the request on the server
        when it can, else retires this connection.
        """
        if not self.usable:
            raise TTSUnavailable("TTS connection is closed")
        if request.id in self._routes:
            raise TTSError("request id already in flight on this connection")
        queue: asyncio.Queue[_Reply] = asyncio.Queue()
        self._routes[request.id] = queue
        done = False
        try:
            await self._ws.send_str(p.build_synthesize(request).decode())
            async with asyncio.timeout(timeout_s):
                while True:
                    reply = await queue.get()
                    if isinstance(reply, BaseException):
                        raise reply
                    if isinstance(reply, p.AudioChunk):
                        yield self._piece(reply.audio, reply.format, reply.sample_rate)
                    elif isinstance(reply, p.SynthesisComplete):
                        done = True
                        self.requests_served += 1
                        if reply.audio:
                            yield self._piece(reply.audio, reply.format, reply.sample_rate)
                        return
                    elif isinstance(reply, p.ErrorReply):
                        done = True
                        raise TTSError(f"TTS server: {reply.error}", retryable=reply.retryable)
        except TimeoutError:
            raise TTSError("TTS request timed out", retryable=True) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._retire()
            raise TTSUnavailable(f"TTS connection lost: {exc}") from exc
        finally:
            if not done:
                await self._abandon(request.id, queue)
            self._routes.pop(request.id, None)

    @staticmethod
    def _piece(audio: bytes, fmt: str, rate: int) -> AudioPiece:
        # Seed servers send no format: raw f32le at 24 kHz unless the bytes are a WAV file.
        return AudioPiece(audio, fmt or "", rate or p.SEED_SAMPLE_RATE)

    async def _abandon(self, request_id: str | None, queue: asyncio.Queue[_Reply]) -> None:
        """The caller stopped listening before the request finished."""
        if request_id is None or not self.supports("cancel") or not self.usable:
            self._retire()
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CANCEL_ACK_TIMEOUT_S):
                await asyncio.shield(self._ws.send_str(p.build_cancel(request_id).decode()))
                while True:
                    reply = await queue.get()
                    if isinstance(reply, p.Cancelled | p.SynthesisComplete | p.ErrorReply):
                        return  # acknowledged: the connection carries no stale audio
                    if isinstance(reply, BaseException):
                        break
        self._retire()

    # -- reading -----------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        error: BaseException = TTSUnavailable("TTS server closed the connection")
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    reply = p.parse_server_message(msg.data)
                except ProtocolError as exc:
                    error = exc
                    break
                self._route(reply)
        except (aiohttp.ClientError, ConnectionError) as exc:
            error = TTSUnavailable(f"TTS connection lost: {exc}")
        finally:
            self.state = ConnState.CLOSED
            for queue in self._routes.values():
                queue.put_nowait(error)
            if self.on_closed is not None:
                self.on_closed()

    def _route(self, reply: p.ServerMessage) -> None:
        key = getattr(reply, "id", None)
        queue = self._routes.get(key)
        if queue is None and key is None and len(self._routes) == 1:
            queue = next(iter(self._routes.values()))  # seed server: no ids
        if queue is not None:
            queue.put_nowait(reply)

    def _retire(self) -> None:
        if self.state is not ConnState.CLOSED:
            self.state = ConnState.CLOSED
            self._closing = asyncio.get_running_loop().create_task(self._ws.close())

    async def close(self) -> None:
        self.state = ConnState.CLOSED
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
