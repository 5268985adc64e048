"""SILMA's public API (v2) from the bridge's side: a pooled WebSocket and the streamed HTTP.

A V2Connection is what the warm pool keeps for a v2 endpoint, beside SilmaConnection for ours,
with the same face to the pool and the client (server, usable, max_in_flight, synthesize, ...).
The protocol carries one utterance at a time and no request id, and has no cancel: a request
left before `completed` (barge-in, a deadline) closes the socket, which stops the server's
work and cannot hand stale audio to the next request; the pool opens a fresh one.

The server is untrusted like any other: events are bounded and validated (v2_protocol), a
request's audio in all is bounded, samples split across messages are joined, and anything
that breaks the protocol fails the request, is counted, and retires the socket.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncGenerator

import aiohttp

from bridge.errors import TTSError, TTSReplyError, TTSReplyTooLarge, TTSUnavailable
from bridge.silma import v2_protocol as v2
from bridge.silma.connection import (
    MAX_REQUEST_AUDIO_BYTES,
    MAX_REQUEST_REPLIES,
    AudioPiece,
    PooledSocket,
    ReplyCounters,
    connect_socket,
    fresh_error,
)
from bridge.silma.endpoint import Endpoint

# SILMA fronts its API with a proxy that closes a quiet socket (its plugins ping every 20 s):
# pooled sockets ping at least this often.
KEEPALIVE_S = 20.0
_AUDIO_FORMAT = "f32le"
_SAMPLE_BYTES = 4
_HTTP_READ_BYTES = 16 * 1024
MAX_ERROR_BODY_BYTES = 4096
_BUSY_CODES = frozenset({"busy", "rate_limited", "overloaded"})
_HTTP_CODES = {429: "busy", 503: "busy", 504: "timeout"}  # a status without a code in its body

_Event = v2.V2Event | bytes | BaseException  # a JSON event, a binary frame of samples, the end


class Samples:
    """Joins float32 samples whose bytes arrive split across messages: whole samples out."""

    def __init__(self) -> None:
        self._tail = b""
        self.total = 0

    def take(self, data: bytes) -> bytes:
        self.total += len(data)
        if self.total > MAX_REQUEST_AUDIO_BYTES:
            raise TTSReplyTooLarge(f"TTS server sent over {MAX_REQUEST_AUDIO_BYTES} audio bytes "
                                   "for one request")
        data = self._tail + data if self._tail else data
        whole = len(data) - len(data) % _SAMPLE_BYTES
        self._tail = data[whole:]
        return data[:whole]


def _piece(data: bytes) -> AudioPiece:
    return AudioPiece(data, _AUDIO_FORMAT, v2.SAMPLE_RATE)


def failed(code: str | None, message: str = "synthesis failed") -> TTSError:
    """A `failed` event (or an HTTP error's code) as the TTSError the client classifies: a
    server asking to slow down is busy (retried after a backoff), a timeout is a timeout."""
    kind = "busy" if code in _BUSY_CODES else code
    return TTSError(f"TTS server: {message} ({code or 'no code'})",
                    retryable=code in v2.RETRYABLE_CODES, code=kind or "failed")


def key_refused(close_code: int | None) -> bool:
    return close_code in v2.AUTH_CLOSE_CODES


class V2Connection(PooledSocket):
    hello = None  # v2 has no handshake: nothing is announced

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, created_at: float, *,
                 counters: ReplyCounters | None = None, where: str = "") -> None:
        super().__init__(ws, created_at, counters=counters, where=where)
        self._current: asyncio.Queue[_Event] | None = None
        self._closed_by: TTSError | None = None  # what ended the reader, once it has
        self._reader = asyncio.create_task(self._read_loop(), name="silma-v2-reader")

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, endpoint: Endpoint, *, api_key: str,
                   timeout_s: float, heartbeat_s: float | None = None,
                   ssl: ssl.SSLContext | bool = True,
                   counters: ReplyCounters | None = None) -> V2Connection:
        """Connect (the upgrade carries the key): no handshake follows. Raises TTSRefused when
        the upgrade is refused, TTSUnavailable when the server cannot be reached."""
        ws = await connect_socket(session, endpoint, api_key=api_key, timeout_s=timeout_s,
                                  heartbeat_s=min(heartbeat_s or KEEPALIVE_S, KEEPALIVE_S),
                                  ssl=ssl, max_msg_size=v2.MAX_EVENT_BYTES)
        return cls(ws, asyncio.get_running_loop().time(), counters=counters,
                   where=endpoint.ws_url)

    # -- what the pool and the client ask of a connection --------------------------------------
    def supports(self, capability: str) -> bool:
        return False  # none of our protocol's extensions

    max_in_flight = 1

    @property
    def in_flight(self) -> int:
        return 0 if self._current is None else 1

    def __repr__(self) -> str:
        return f"<V2Connection {self.state.value} in_flight={self.in_flight} " \
               f"served={self.requests_served}>"

    async def synthesize(self, request: v2.V2Request, timeout_s: float
                         ) -> AsyncGenerator[AudioPiece, None]:
        """Send one utterance and yield its audio as it streams in. Leaving early closes the
        socket (the protocol has no cancel)."""
        if self._closed_by is not None:
            raise fresh_error(self._closed_by)  # why the server closed it (a refused key is final)
        if not self.usable or self._current is not None:
            raise TTSUnavailable("TTS connection is closed or busy")
        queue: asyncio.Queue[_Event] = asyncio.Queue()
        self._current = queue
        samples = Samples()
        done = False
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._ws.send_str(v2.build_request(request).decode())
                    replies = 0
                    while True:
                        event = await queue.get()
                        if isinstance(event, BaseException):
                            raise event  # the reader's: counted and logged there
                        replies += 1
                        data = self._bounded(samples, event, replies)
                        if data:
                            yield _piece(data)
                        if isinstance(event, v2.V2Event) and event.status == v2.COMPLETED:
                            done = True
                            self.requests_served += 1
                            return
                        if isinstance(event, v2.V2Event) and event.status == v2.FAILED:
                            done = True
                            raise failed(event.code)
            except TimeoutError:
                raise TTSError("TTS request timed out", retryable=True) from None
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise TTSUnavailable(f"TTS connection lost: {exc}") from exc
        finally:
            self._current = None
            if not done:
                self._retire()

    def _bounded(self, samples: Samples, event: v2.V2Event | bytes, replies: int) -> bytes:
        """The event's whole samples, the request failing (counted) past its bounds."""
        try:
            if replies > MAX_REQUEST_REPLIES:
                raise TTSReplyTooLarge(f"TTS server sent over {MAX_REQUEST_REPLIES} replies "
                                       "for one request")
            return samples.take(event if isinstance(event, bytes) else event.audio)
        except TTSReplyTooLarge as exc:
            self._refused(exc)
            raise

    # -- reading -------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        """The socket's reader (a task root): events go to the request in flight; whatever ends
        it fails that request with the reason, and the pool hears the socket is gone."""
        error: TTSError = TTSUnavailable("TTS server closed the connection")
        try:
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._route(v2.parse_event(msg.data))
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    self._route(msg.data)  # some deployments send the samples bare
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    raise TTSUnavailable(f"TTS connection lost: {msg.data}"[:300])
            if key_refused(self._ws.close_code):
                error = TTSError(f"TTS server refused the API key (close code "
                                 f"{self._ws.close_code})", code="unauthorized")
        except Exception as exc:  # the task root: every failure becomes the request's reason
            error = self._reader_failed(exc)
        finally:
            self._closed_by = error
            if self._current is not None:
                self._current.put_nowait(fresh_error(error))
            self._reader_ended(error)

    def _route(self, event: v2.V2Event | bytes) -> None:
        if self._current is None:
            self.counters.unrouted += 1  # nothing asked: a server speaking out of turn
            return
        self._current.put_nowait(event)


async def stream_over_http(session: aiohttp.ClientSession, endpoint: Endpoint, api_key: str,
                           request: v2.V2Request, timeout_s: float, *,
                           ssl: ssl.SSLContext | bool = True
                           ) -> AsyncGenerator[AudioPiece, None]:
    """POST {base}/stream: the waveform as it streams in. A redirect is not followed; an error
    status (or a JSON body where audio should be) raises with the server's code."""
    try:
        async with session.post(
            endpoint.synthesize_url, data=v2.build_request(request), ssl=ssl,
            headers={**endpoint.auth_headers(api_key), "Content-Type": "application/json",
                     "Accept-Encoding": "identity"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            if response.status != 200:
                raise await _http_error(response)
            kind = response.headers.get("Content-Type", "").lower()
            if "json" in kind:
                raise TTSReplyError("TTS server answered /stream with JSON, not audio")
            samples = Samples()
            async for chunk in response.content.iter_chunked(_HTTP_READ_BYTES):
                data = samples.take(chunk)
                if data:
                    yield _piece(data)
    except TimeoutError:  # before OSError, of which it is a subclass
        raise TTSError("TTS request over HTTP timed out", retryable=True) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise TTSUnavailable(f"TTS server unreachable over HTTP: {exc}") from exc


async def _http_error(response: aiohttp.ClientResponse) -> TTSError:
    status = response.status
    if 300 <= status < 400:
        return TTSError(f"TTS server answered HTTP {status} (a redirect), which is not followed")
    body = await response.content.read(MAX_ERROR_BODY_BYTES)
    code = v2.error_code_of_body(body) or _HTTP_CODES.get(status)
    if status in (401, 403):
        return TTSError(f"TTS server refused the API key (HTTP {status})", code="unauthorized")
    if status in v2.RETRYABLE_HTTP and code not in v2.RETRYABLE_CODES:
        return TTSError(f"TTS server answered HTTP {status} ({code or 'no code'})",
                        retryable=True)  # a gateway's hiccup: worth another try
    return failed(code, f"HTTP {status}")
