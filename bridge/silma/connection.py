"""One WebSocket connection to a SILMA TTS server: handshake, request streams, cancel.

The connection learns what the server supports from a `hello` exchange; a server that knows only
the seed protocol answers it with an error (or closes), and then only seed messages are sent.
A reader task routes replies to the request they belong to (by id when the server echoes ids,
else to the one request in flight). A request abandoned mid-synthesis leaves the connection
reusable only if the server acknowledged a cancel; otherwise the connection is retired.

The server may be chosen by a tenant and is untrusted: every reply is bounded and validated
(protocol.parse_server_message). A reply that breaks the protocol, or any failure in the reader,
fails every request in flight on this connection with a TTSError-family error carrying the
reason, is logged and counted (ReplyCounters, shared by the pool), and closes the connection so
the pool replaces it; the reader never dies silently and no request is left waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import itertools
import ssl
from collections.abc import AsyncGenerator, Callable, Iterator

import aiohttp
import structlog

from bridge.errors import ProtocolError, TTSError, TTSReplyError, TTSReplyTooLarge, TTSUnavailable
from bridge.silma import protocol as p
from bridge.silma.endpoint import Endpoint
from bridge.silma.voice_core import Await, Inline, UseId, VoiceRegistry, voice_key, with_voice_id

HELLO_TIMEOUT_S = 2.0
CANCEL_ACK_TIMEOUT_S = 2.0
# Audio one request may bring in all (decoded bytes): a piece is a sentence or two; 32 MiB is
# ~6 min of 24 kHz float32 (70 min of mu-law), past any sentence, and bounds what a server
# streaming without end can queue in memory before the request fails.
MAX_REQUEST_AUDIO_BYTES = 32 * 1024 * 1024
# Replies one request may bring (empty chunks cost memory too): 20,000 is 400 s of 20 ms chunks.
MAX_REQUEST_REPLIES = 20_000
_ids = itertools.count(1)
log = structlog.get_logger("bridge.silma")


@dataclasses.dataclass
class ReplyCounters:
    """What servers sent that was refused, shared by one pool's connections and its client."""

    malformed: int = 0  # replies that break the protocol (bad JSON, types, rates, binary frames)
    oversize: int = 0  # replies past a size bound (message, chunk, request)
    unrouted: int = 0  # well-formed replies for no request in flight (late after a cancel)
    reader_failures: int = 0  # unexpected exceptions contained at a reader's root
    last_reason: str | None = None

    def refused(self, exc: BaseException) -> None:
        if isinstance(exc, TTSReplyTooLarge):
            self.oversize += 1
        elif isinstance(exc, TTSReplyError):
            self.malformed += 1
        else:
            self.reader_failures += 1
        self.last_reason = str(exc)[:300]


async def read_capped(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """A response body read as it streams in, refused (TTSReplyTooLarge) past `limit` bytes:
    an untrusted server's declared length is not believed, its bytes are counted."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise TTSReplyTooLarge(f"{what} declares {declared} bytes, over the bound of {limit}")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise TTSReplyTooLarge(f"{what} is over the bound of {limit} bytes")
    return bytes(body)


def fresh_error(error: TTSError) -> TTSError:
    """A new instance per waiting request: one exception object raised in several tasks would
    collect all their tracebacks."""
    if isinstance(error, TTSUnavailable | TTSReplyError):
        return type(error)(str(error))
    return TTSError(str(error), retryable=error.retryable, code=error.code,
                    retry_after_s=error.retry_after_s)


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


@dataclasses.dataclass
class _Route:
    """One request in flight: its replies, and how much it has been sent so far."""

    queue: asyncio.Queue[_Reply]
    audio_bytes: int = 0
    replies: int = 0
    failed: bool = False  # over a bound: told once, the rest of its replies are dropped


async def connect_socket(session: aiohttp.ClientSession, endpoint: Endpoint, *, api_key: str,
                         timeout_s: float, heartbeat_s: float | None,
                         ssl: ssl.SSLContext | bool, max_msg_size: int
                         ) -> aiohttp.ClientWebSocketResponse:
    """A WebSocket to `endpoint`, the key in its API's header. Raises TTSRefused when the
    upgrade is refused, TTSUnavailable when the server cannot be reached in time."""
    try:
        async with asyncio.timeout(timeout_s):
            # max_msg_size: a bigger message closes the socket (1009) instead of being
            # buffered; the default would take 4 MiB, our old setting took 64 MiB.
            return await session.ws_connect(
                endpoint.ws_url, headers=endpoint.auth_headers(api_key), compress=0,
                heartbeat=heartbeat_s, ssl=ssl, max_msg_size=max_msg_size,
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


class PooledSocket:
    """What the pool keeps of any TTS WebSocket, whichever API it speaks: its state, the hook
    that tells the pool it was lost, retiring and closing it. A subclass starts `_reader`, whose
    end calls `_reader_ended`."""

    _reader: asyncio.Task[None]

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, created_at: float, *,
                 counters: ReplyCounters | None, where: str) -> None:
        self._ws = ws
        self.created_at = created_at
        self.state = ConnState.READY
        self.requests_served = 0
        self.counters = counters if counters is not None else ReplyCounters()
        self.close_reason: str | None = None  # why the reader stopped, once it has
        self._where = where  # the WebSocket URL, for logs (never carries the key)
        self._closing: asyncio.Task[bool] | None = None
        self.on_closed: Callable[[], None] | None = None  # the pool's hook for a lost socket

    @property
    def server(self) -> str:
        """Which server this connection reaches (its WebSocket URL, no credential in it)."""
        return self._where

    @property
    def usable(self) -> bool:
        return self.state is ConnState.READY and not self._ws.closed

    @property
    def in_flight(self) -> int:
        """Requests on this socket now (each API counts its own)."""
        return 0

    def _refused(self, exc: BaseException) -> None:
        """A reply refused: counted for the pool's stats, and logged."""
        self.counters.refused(exc)
        log.warning("tts_reply_refused", endpoint=self._where, in_flight=self.in_flight,
                    reason=str(exc)[:300])

    def _reader_failed(self, exc: Exception) -> TTSError:
        """What ended a reader, as the error its requests get: a refused reply (counted and
        logged), a lost socket, or anything else, contained at the reader's root (counted and
        logged with its traceback)."""
        if isinstance(exc, TTSReplyError):
            self._refused(exc)
            return exc
        if isinstance(exc, TTSUnavailable):
            return exc
        if isinstance(exc, aiohttp.ClientError | ConnectionError):
            return TTSUnavailable(f"TTS connection lost: {exc}")
        error = TTSReplyError(f"TTS connection failed reading a reply: "
                              f"{type(exc).__name__}: {exc}"[:300])
        self.counters.refused(exc)
        log.exception("tts_reader_failed", endpoint=self._where, error=str(error))
        return error

    def _reader_ended(self, error: TTSError) -> None:
        """The reader's last act, whatever ended it: closed, and the pool told."""
        self.close_reason = str(error)
        self.state = ConnState.CLOSED
        if not self._ws.closed and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._ws.close())
        if self.on_closed is None:
            return
        try:
            self.on_closed()
        except Exception:  # the reader's root: a failing hook must not hide the close
            log.exception("tts_on_closed_failed", endpoint=self._where)

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


class SilmaConnection(PooledSocket):
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, hello: p.ServerHello | None,
                 created_at: float, *, counters: ReplyCounters | None = None,
                 where: str = "") -> None:
        super().__init__(ws, created_at, counters=counters, where=where)
        self.hello = hello
        self._routes: dict[str | None, _Route] = {}
        # Voices this connection's server registered, and registrations under way (by key).
        self._voices = VoiceRegistry()
        self._registering: dict[str, asyncio.Future[None]] = {}
        self._reader = asyncio.create_task(self._read_loop(), name="silma-reader")

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, endpoint: Endpoint, *, api_key: str,
                   timeout_s: float, heartbeat_s: float | None = None,
                   ssl: ssl.SSLContext | bool = True,
                   counters: ReplyCounters | None = None) -> SilmaConnection:
        """Connect and handshake. Raises TTSUnavailable when the server cannot be reached."""
        loop = asyncio.get_running_loop()
        counters = counters if counters is not None else ReplyCounters()
        ws = await connect_socket(session, endpoint, api_key=api_key, timeout_s=timeout_s,
                                  heartbeat_s=heartbeat_s, ssl=ssl,
                                  max_msg_size=p.MAX_REPLY_BYTES)
        try:
            async with asyncio.timeout(timeout_s):
                hello = await cls._handshake(ws, counters, endpoint.ws_url)
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            await ws.close()
            raise TTSUnavailable("TTS server did not answer the handshake") from exc
        return cls(ws, hello, loop.time(), counters=counters, where=endpoint.ws_url)

    @staticmethod
    async def _handshake(ws: aiohttp.ClientWebSocketResponse, counters: ReplyCounters,
                         where: str) -> p.ServerHello | None:
        await ws.send_str(p.build_hello().decode())
        # No answer in time fails the connect (open() turns it into TTSUnavailable): a server
        # that accepts the socket but never speaks must not count as ready. A seed server
        # answers an unknown message with an error, which is handled below.
        async with asyncio.timeout(HELLO_TIMEOUT_S):
            msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise aiohttp.ClientError("TTS server closed during the handshake")
        try:
            reply = p.parse_server_message(msg.data)
        except ProtocolError as exc:
            # Counted, then treated as a seed server: only seed messages are sent to it.
            counters.refused(exc)
            log.warning("tts_reply_refused", endpoint=where, during="handshake",
                        reason=str(exc)[:300])
            return None
        return reply if isinstance(reply, p.ServerHello) else None

    # -- capabilities ------------------------------------------------------------------------
    def supports(self, capability: str) -> bool:
        return self.hello is not None and capability in self.hello.capabilities

    @property
    def max_in_flight(self) -> int:
        if self.supports("multiplex") and self.supports("id") and self.hello is not None:
            return max(1, min(self.hello.max_in_flight, p.MAX_ANNOUNCED_IN_FLIGHT))
        return 1

    @property
    def in_flight(self) -> int:
        return len(self._routes)

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

    async def synthesize(self, request: p.SynthesizeRequest, timeout_s: float, *,
                         voice: str | None = None) -> AsyncGenerator[AudioPiece, None]:
        """Send one request and yield its audio as it arrives.

        A server that registers voices gets the request's clip once per connection and its id
        afterwards (voice_core decides); one that forgot the voice (`unknown_voice`, before any
        audio) gets it registered again and the request once more. `voice`: the request's
        voice_key, from a caller that sends the same clip many times (else computed here).
        Leaving the iteration early (cancellation, barge-in) cancels the request on the server
        when it can, else retires this connection.
        """
        if not self.usable:
            raise TTSUnavailable("TTS connection is closed")
        key = voice if voice is not None else voice_key(request)
        sent = await self._voiced(request, key, timeout_s)
        yielded = False
        try:
            async for piece in self._exchange(sent, timeout_s):
                yielded = True
                yield piece
            return
        except TTSError as exc:
            if not self._voices.unknown_voice(exc.code, key, sent, yielded=yielded,
                                              retried=False):
                raise
        log.info("tts_voice_forgotten", endpoint=self._where, voice_id=sent.voice_id)
        async for piece in self._exchange(await self._voiced(request, key, timeout_s),
                                          timeout_s):
            yield piece

    async def _voiced(self, request: p.SynthesizeRequest, key: str | None,
                      timeout_s: float) -> p.SynthesizeRequest:
        """The request as it is to be sent here: naming its registered voice where it can."""
        while True:
            step = self._voices.plan(self._can_register, key, self._registering)
            if isinstance(step, Inline):
                return request
            if isinstance(step, UseId):
                return with_voice_id(request, step.voice_id)
            if isinstance(step, Await):
                # asyncio.wait neither cancels the registration (another request's) nor raises
                # its failure: whatever came of it, this request decides again.
                await asyncio.wait({self._registering[step.key]})
                continue
            registration: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._registering[step.key] = registration
            try:
                self._voices.registered(step.key, await self._register(request, timeout_s))
            finally:
                del self._registering[step.key]
                registration.set_result(None)

    @property
    def _can_register(self) -> bool:
        return self.supports("voice") and self.supports("id")

    async def _register(self, request: p.SynthesizeRequest, timeout_s: float) -> str:
        """Register the request's clip on this server; its voice id (validated by the caller)."""
        message = p.RegisterVoice(request.reference_audio, request.reference_text,
                                  id=f"v{next(_ids)}")
        queue: asyncio.Queue[_Reply] = asyncio.Queue()
        self._routes[message.id] = _Route(queue)
        try:
            with self._as_tts_errors("voice registration"):
                await self._ws.send_str(p.build_register_voice(message).decode())
                async with asyncio.timeout(timeout_s):
                    reply = await queue.get()
        finally:
            self._routes.pop(message.id, None)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, p.ErrorReply):
            raise TTSError(f"TTS server refused the voice: {reply.error}",
                           retryable=reply.retryable, code=reply.code,
                           retry_after_s=reply.retry_after_s)
        if not isinstance(reply, p.VoiceRegistered):
            raise TTSReplyError(f"TTS server answered a voice registration with "
                                f"{type(reply).__name__}")
        return reply.voice_id

    async def _exchange(self, request: p.SynthesizeRequest,
                        timeout_s: float) -> AsyncGenerator[AudioPiece, None]:
        """One synthesize request on the wire and its replies."""
        if request.id in self._routes:
            raise TTSError("request id already in flight on this connection")
        queue: asyncio.Queue[_Reply] = asyncio.Queue()
        self._routes[request.id] = _Route(queue)
        done = False
        try:
            with self._as_tts_errors("request"):
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
                                yield self._piece(reply.audio, reply.format,
                                                  reply.sample_rate)
                            return
                        elif isinstance(reply, p.ErrorReply):
                            done = True
                            raise TTSError(f"TTS server: {reply.error}",
                                           retryable=reply.retryable, code=reply.code,
                                           retry_after_s=reply.retry_after_s)
        finally:
            if not done:
                await self._abandon(request.id, queue)
            self._routes.pop(request.id, None)

    @contextlib.contextmanager
    def _as_tts_errors(self, what: str) -> Iterator[None]:
        """A timeout or a lost socket during `what`, as the TTSError the client classifies."""
        try:
            yield
        except TimeoutError:
            raise TTSError(f"TTS {what} timed out", retryable=True) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._retire()
            raise TTSUnavailable(f"TTS connection lost: {exc}") from exc

    @staticmethod
    def _piece(audio: bytes, fmt: str, rate: int) -> AudioPiece:
        # Seed servers send no format: raw f32le at 24 kHz unless the bytes are a WAV file.
        return AudioPiece(audio, fmt or "", rate or p.SEED_SAMPLE_RATE)

    async def _abandon(self, request_id: str | None, queue: asyncio.Queue[_Reply]) -> None:
        """The caller stopped listening before the request finished."""
        if request_id is None or not self.supports("cancel") or not self.usable:
            self._retire()
            return
        # Best effort: no ack in time, or the socket failing, and the connection is retired.
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, ConnectionError):
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
        """The connection's reader (a task root): whatever ends it, every request in flight is
        failed with the reason, and a refused reply or an unexpected failure is logged and
        counted before the connection closes."""
        error: TTSError = TTSUnavailable("TTS server closed the connection")
        try:
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    reply = p.parse_server_message(msg.data)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    raise self._frame_error(msg.data)
                else:  # BINARY: the protocol is JSON text frames only
                    raise TTSReplyError(f"TTS server sent a {msg.type.name.lower()} frame "
                                        f"({len(msg.data or b'')} bytes); only JSON text")
                self._route(reply)
        except Exception as exc:  # the task root: every failure becomes the requests' reason
            error = self._reader_failed(exc)
        finally:
            for route in self._routes.values():
                route.queue.put_nowait(fresh_error(error))
            self._reader_ended(error)

    def _frame_error(self, data: object) -> TTSError:
        if isinstance(data, aiohttp.WebSocketError) and \
                data.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
            return TTSReplyTooLarge(
                f"TTS server sent a message over the bound of {p.MAX_REPLY_BYTES} bytes")
        if isinstance(data, aiohttp.WebSocketError):
            return TTSReplyError(f"TTS server broke the WebSocket protocol: {data}"[:300])
        return TTSUnavailable(f"TTS connection lost: {data}")

    def _route(self, reply: p.ServerMessage) -> None:
        key = getattr(reply, "id", None)
        route = self._routes.get(key)
        if route is None and key is None and len(self._routes) == 1:
            route = next(iter(self._routes.values()))  # seed server: no ids
        if route is None:
            self.counters.unrouted += 1  # late after a cancel, or an id that is not ours
            return
        if route.failed:
            # Only an end of the request still matters: the cancel the reader sent is answered.
            if isinstance(reply, p.Cancelled | p.SynthesisComplete | p.ErrorReply):
                route.queue.put_nowait(reply)
            return
        route.replies += 1
        if isinstance(reply, p.AudioChunk | p.SynthesisComplete):
            route.audio_bytes += len(reply.audio)
        if route.audio_bytes > MAX_REQUEST_AUDIO_BYTES or route.replies > MAX_REQUEST_REPLIES:
            # The one request fails (and is cancelled by its reader); the socket stays up.
            route.failed = True
            exc = TTSReplyTooLarge(
                f"TTS server sent over {MAX_REQUEST_AUDIO_BYTES} audio bytes or "
                f"{MAX_REQUEST_REPLIES} replies for one request")
            self._refused(exc)
            route.queue.put_nowait(exc)
            return
        route.queue.put_nowait(reply)
