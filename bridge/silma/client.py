"""The bridge's SILMA client: text in, audio pieces out, over a warm WebSocket or HTTP fallback.

Connections come from a ConnectionSource (the warm pool). When no WebSocket can be had, or the
server refuses WebSocket, the request goes over HTTP on the shared keep-alive session and the
fallback is counted. Progress is reported through `on_step` so the caller can trace it without
this module knowing about traces.

Whatever the server sends reaches the caller as a BridgeError (TTSError family), never as a raw
ValueError/KeyError: an HTTP reply is read with a byte cap, redirects are not followed (a 3xx is
an error), and the body goes through the same bounded parser as WebSocket replies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from typing import Protocol

import aiohttp

from bridge.errors import TTSError, TTSReplyError, TTSUnavailable
from bridge.silma import protocol as p
from bridge.silma.connection import (
    AudioPiece,
    ReplyCounters,
    SilmaConnection,
    auth_headers,
    read_capped,
)
from bridge.silma.endpoint import Endpoint
from bridge.silma.retry_core import RetryBudget

StepCallback = Callable[[str], None]


def _ignore(_: str) -> None:
    return None


class ConnectionSource(Protocol):
    """Hands out a connection for one request and takes it back afterwards.

    `avoid` names servers (SilmaConnection.server) a retry would rather not use again: a source
    with several servers picks another when it can, one with a single server ignores it.
    `failure` tells the source how the request ended when it failed (a retry_core.Kind value),
    so it can eject a server that fails or stalls; None is a success or the caller leaving."""

    # Retries of this source's requests spend it (shared by every call on the source).
    retry_budget: RetryBudget

    async def acquire(self, avoid: Collection[str] = ()) -> SilmaConnection: ...

    def release(self, conn: SilmaConnection, failure: str | None = None) -> None: ...

    def note_fallback(self) -> None:
        """A request went over HTTP instead."""


class SilmaClient:
    def __init__(self, endpoint: Endpoint, source: ConnectionSource,
                 session: aiohttp.ClientSession, *, api_key: str, voice: p.SynthesizeRequest,
                 timeout_s: float, want_ulaw: bool,
                 counters: ReplyCounters | None = None) -> None:
        self.endpoint = endpoint
        # The pool's counters, so refused HTTP replies show in its stats with the WebSocket's.
        self.counters = counters if counters is not None else ReplyCounters()
        self._source = source
        self._session = session
        self._api_key = api_key
        self._voice = voice  # reference audio, transcript, speed and seed; text filled per call
        self._timeout_s = timeout_s
        self._want_ulaw = want_ulaw

    def _request(self, text: str) -> p.SynthesizeRequest:
        return p.SynthesizeRequest(
            text=text, reference_audio=self._voice.reference_audio,
            reference_text=self._voice.reference_text, speed=self._voice.speed,
            seed=self._voice.seed,
        )

    async def synthesize(self, text: str, on_step: StepCallback = _ignore
                         ) -> AsyncIterator[AudioPiece]:
        """Yield the audio of `text`. Raises TTSError when neither WebSocket nor HTTP works."""
        request = self._request(text)
        try:
            conn = await self._source.acquire()
        except TTSUnavailable:
            conn = None
        on_step("pool_wait_done")
        if conn is None:
            self._source.note_fallback()
            on_step("fallback")
            async for piece in self._over_http(request, on_step):
                yield piece
            return
        try:
            wire = conn.prepare(request, want_stream=True,
                                want_format="ulaw" if self._want_ulaw else None,
                                want_rate=8000 if self._want_ulaw else None)
            on_step("request_sent")
            async for piece in conn.synthesize(wire, self._timeout_s):
                yield piece
        finally:
            self._source.release(conn)

    async def _over_http(self, request: p.SynthesizeRequest, on_step: StepCallback
                         ) -> AsyncIterator[AudioPiece]:
        on_step("request_sent")
        try:
            reply = await self._http_reply(request)
        except TTSReplyError as exc:
            self.counters.refused(exc)
            raise
        if isinstance(reply, p.ErrorReply):
            raise TTSError(f"TTS server: {reply.error}", retryable=reply.retryable,
                           code=reply.code, retry_after_s=reply.retry_after_s)
        if not isinstance(reply, p.SynthesisComplete):
            raise TTSReplyError(f"TTS server answered HTTP with {type(reply).__name__}")
        yield AudioPiece(reply.audio, reply.format, reply.sample_rate or p.SEED_SAMPLE_RATE)

    async def _http_reply(self, request: p.SynthesizeRequest) -> p.ServerMessage:
        try:
            async with self._session.post(
                self.endpoint.synthesize_url, data=p.build_synthesize(request),
                headers={**auth_headers(self._api_key), "Content-Type": "application/json",
                         "Accept-Encoding": "identity"},
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                allow_redirects=False,  # a redirect could point anywhere: never followed
            ) as response:
                if 300 <= response.status < 400:
                    raise TTSError(f"TTS server answered HTTP {response.status} (a redirect), "
                                   "which is not followed")
                encoding = response.headers.get("Content-Encoding", "identity").lower()
                if encoding not in ("", "identity"):
                    raise TTSReplyError(f"TTS server sent a {encoding[:20]}-encoded reply; "
                                        "only identity is accepted")
                body = await read_capped(response, p.MAX_REPLY_BYTES, "the TTS HTTP reply")
                status = response.status
        except TimeoutError:  # before OSError, of which it is a subclass
            raise TTSError("TTS request over HTTP timed out", retryable=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TTSUnavailable(f"TTS server unreachable over HTTP: {exc}") from exc
        try:
            return p.parse_server_message(body)
        except TTSReplyError as exc:
            raise type(exc)(f"TTS server answered HTTP {status}: {exc}") from exc
