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

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection
from typing import Protocol

import aiohttp
import structlog

from bridge.audio.codec import is_wav, raw_bytes_per_second
from bridge.errors import TTSError, TTSReplyError, TTSUnavailable
from bridge.silma import protocol as p
from bridge.silma import v2_protocol as v2
from bridge.silma.connection import AudioPiece, ReplyCounters, SilmaConnection, read_capped
from bridge.silma.connections import TTSConnection
from bridge.silma.endpoint import V2, Endpoint
from bridge.silma.retry_core import (
    RETRYABLE,
    Delivered,
    GiveUp,
    Kind,
    Patience,
    RetryBudget,
    RetryPolicy,
    classify,
    decide,
)
from bridge.silma.v2_connection import stream_over_http
from bridge.silma.voice_core import voice_key

StepCallback = Callable[[str], None]
log = structlog.get_logger("bridge.silma")


@dataclasses.dataclass
class _Attempt:
    """What one try learned that the retry loop needs: the server it reached."""

    server: str | None = None
    avoid: frozenset[str] = frozenset()


def _ignore(_: str) -> None:
    return None


def _bytes_per_second(piece: AudioPiece) -> int | None:
    return None if is_wav(piece.data) else raw_bytes_per_second(piece.format, piece.sample_rate)


def _needed_now() -> float:
    return 0.0  # any time in the past: the caller waits from the ask


class ConnectionSource(Protocol):
    """Hands out a connection for one request and takes it back afterwards.

    `avoid` names servers (SilmaConnection.server) a retry would rather not use again: a source
    with several servers picks another when it can, one with a single server ignores it.
    `failure` tells the source how the request ended when it failed (a retry_core.Kind value),
    so it can eject a server that fails or stalls; None is a success or the caller leaving."""

    # Retries of this source's requests spend it (shared by every call on the source).
    retry_budget: RetryBudget

    async def acquire(self, avoid: Collection[str] = ()) -> TTSConnection: ...

    def release(self, conn: TTSConnection, failure: str | None = None) -> None: ...

    def note_fallback(self) -> None:
        """A request went over HTTP instead."""

    def note_first_audio(self, seconds: float) -> None:
        """An urgent piece brought its first audio this long after it was asked for (retries
        included): what admission measures callers' waits by."""


class SilmaClient:
    def __init__(self, endpoint: Endpoint, source: ConnectionSource,
                 session: aiohttp.ClientSession, *, api_key: str, voice: p.SynthesizeRequest,
                 timeout_s: float, want_ulaw: bool,
                 counters: ReplyCounters | None = None,
                 policy: RetryPolicy | None = None,
                 rng: Callable[[], float] = random.random,
                 v2_voice: v2.V2Voice | None = None) -> None:
        self.endpoint = endpoint
        # The pool's counters, so refused HTTP replies show in its stats with the WebSocket's.
        self.counters = counters if counters is not None else ReplyCounters()
        self._source = source
        self._session = session
        self._api_key = api_key
        self._voice = voice  # reference audio, transcript, speed and seed; text filled per call
        # Its digest, once per call: hashing a clip (up to MBs) per piece would cost the loop.
        self._voice_key = voice_key(voice)
        # Who speaks on SILMA's v2 API (an endpoint whose api is V2): there the clip is unused.
        self._v2_voice = v2_voice if v2_voice is not None else v2.V2Voice()
        self._timeout_s = timeout_s
        self._want_ulaw = want_ulaw
        self._policy = policy if policy is not None else RetryPolicy()
        self._rng = rng

    def _request(self, text: str) -> p.SynthesizeRequest:
        return p.SynthesizeRequest(
            text=text, reference_audio=self._voice.reference_audio,
            reference_text=self._voice.reference_text, speed=self._voice.speed,
            seed=self._voice.seed,
        )

    async def synthesize(self, text: str, on_step: StepCallback = _ignore, *,
                         urgent: bool = False,
                         needed_at: Callable[[], float] = _needed_now
                         ) -> AsyncGenerator[AudioPiece, None]:
        """Yield the audio of `text`, trying again while there is time (retry_core decides)
        when an attempt fails; one cut after some of its audio was yielded resumes where that
        audio ended. `urgent`: a caller is
        waiting on this piece now (an utterance's first), so the server queues it first.
        `needed_at`: when (loop time) the caller's audio ahead of this piece runs out: its
        deadline runs from then. Raises TTSError when it gives up; the message starts
        with the failure's Kind."""
        request = self._request(text)
        loop = asyncio.get_running_loop()
        asked = loop.time()
        patience = Patience(asked, self._policy.deadline_s)

        def time_left_s() -> float:
            return patience.time_left(loop.time(), needed_at())

        avoid: set[str] = set()
        delivered = Delivered()
        attempt = 0
        while True:
            attempt += 1
            delivered.new_attempt()
            attempt_of = _Attempt(avoid=frozenset(avoid))
            try:
                # aclosing: a caller who stops listening (barge-in) releases the connection
                # now, not when the abandoned generator is collected.
                async with contextlib.aclosing(self._attempt(
                        request, on_step, attempt_of, urgent=urgent,
                        time_left_s=time_left_s())) as pieces:
                    async for piece in pieces:
                        heard_before = delivered.seconds > 0
                        data = delivered.take(piece.data, _bytes_per_second(piece))
                        if not data:
                            continue  # heard already, before a cut: the resumed part skips it
                        if urgent and not heard_before:
                            self._source.note_first_audio(loop.time() - asked)
                        yield piece if data is piece.data else dataclasses.replace(piece,
                                                                                    data=data)
                self._source.retry_budget.earn()  # a success: retries may be made again
                return
            except TTSError as exc:
                kind = classify(exc)
                if delivered.seconds > 0 and (kind not in RETRYABLE or not delivered.resumable):
                    kind = Kind.MID_STREAM  # some was heard and the rest cannot be resumed
                if attempt_of.server is not None:
                    avoid.add(attempt_of.server)
                decision = decide(self._policy, self._source.retry_budget, attempt=attempt,
                                  kind=kind, retry_after_s=exc.retry_after_s,
                                  time_left_s=time_left_s(), rng=self._rng)
                if isinstance(decision, GiveUp):  # logged by the speaker, with the call's context
                    raise _given_up(exc, f"{kind.value}: {decision.why}: {exc}"[:500]) from exc
                log.debug("tts_retry", reason=kind.value, attempt=attempt,
                          delay_s=round(decision.delay_s, 3), error=str(exc)[:200])
                on_step(f"retry:{kind.value}")
                await asyncio.sleep(decision.delay_s)  # the backoff itself: nothing to wait on

    async def _attempt(self, request: p.SynthesizeRequest, on_step: StepCallback,
                       attempt: _Attempt, *, urgent: bool, time_left_s: float
                       ) -> AsyncGenerator[AudioPiece, None]:
        """One try: a pooled WebSocket when one can be had, else HTTP."""
        try:
            conn = await self._source.acquire(avoid=attempt.avoid)
        except TTSUnavailable:
            conn = None
        on_step("pool_wait_done")
        if conn is None:
            self._source.note_fallback()
            on_step("fallback")
            async for piece in self._over_http(request, on_step):
                yield piece
            return
        attempt.server = conn.server
        failure: str | None = None
        try:
            if isinstance(conn, SilmaConnection):
                asked = self._send(conn, request, urgent=urgent, time_left_s=time_left_s)
            else:
                asked = conn.synthesize(self._v2_request(request), self._timeout_s)
            on_step("request_sent")
            async with (contextlib.aclosing(asked) as pieces,
                        contextlib.aclosing(self._stall_guarded(pieces)) as guarded):
                async for piece in guarded:
                    yield piece
        except TTSError as exc:
            failure = classify(exc).value
            raise
        finally:
            self._source.release(conn, failure)

    def _send(self, conn: SilmaConnection, request: p.SynthesizeRequest, *, urgent: bool,
              time_left_s: float) -> AsyncGenerator[AudioPiece, None]:
        """The request in our protocol, with the extensions this server announced."""
        wire = conn.prepare(request, want_stream=True,
                            want_format="ulaw" if self._want_ulaw else None,
                            want_rate=8000 if self._want_ulaw else None)
        if conn.supports("priority"):
            wire = dataclasses.replace(
                wire, priority=p.URGENT if urgent else p.NORMAL,
                deadline_ms=max(1, min(p.MAX_DEADLINE_MS, int(time_left_s * 1000))))
        return conn.synthesize(wire, self._timeout_s, voice=self._voice_key)

    def _v2_request(self, request: p.SynthesizeRequest) -> v2.V2Request:
        return v2.V2Request(request.text, self._v2_voice)

    async def _stall_guarded(self, pieces: AsyncIterator[AudioPiece]
                             ) -> AsyncGenerator[AudioPiece, None]:
        """`pieces`, failed as a stall when the first has not come within the first-audio
        deadline (the request is then abandoned: cancelled on the server, or the socket
        retired)."""
        try:
            async with asyncio.timeout(self._policy.first_audio_timeout_s):
                first = await anext(pieces, None)
        except TimeoutError:
            raise TTSError(f"stalled: no audio within "
                           f"{self._policy.first_audio_timeout_s:g} s", code="stall") from None
        if first is None:
            return
        yield first
        async for piece in pieces:
            yield piece

    async def _over_http(self, request: p.SynthesizeRequest, on_step: StepCallback
                         ) -> AsyncIterator[AudioPiece]:
        on_step("request_sent")
        if self.endpoint.api == V2:  # streamed: audio passes on as it arrives
            try:
                async with contextlib.aclosing(stream_over_http(
                        self._session, self.endpoint, self._api_key, self._v2_request(request),
                        self._timeout_s)) as pieces:
                    async for piece in pieces:
                        yield piece
            except TTSReplyError as exc:
                self.counters.refused(exc)
                raise
            return
        try:
            reply, retry_after = await self._http_reply(request)
        except TTSReplyError as exc:
            self.counters.refused(exc)
            raise
        if isinstance(reply, p.ErrorReply):
            # The body's estimate is finer than the header's whole seconds: it wins.
            raise TTSError(f"TTS server: {reply.error}", retryable=reply.retryable,
                           code=reply.code,
                           retry_after_s=reply.retry_after_s if reply.retry_after_s is not None
                           else retry_after)
        if not isinstance(reply, p.SynthesisComplete):
            raise TTSReplyError(f"TTS server answered HTTP with {type(reply).__name__}")
        yield AudioPiece(reply.audio, reply.format, reply.sample_rate or p.SEED_SAMPLE_RATE)

    async def _http_reply(self, request: p.SynthesizeRequest
                          ) -> tuple[p.ServerMessage, float | None]:
        """The parsed reply, and the Retry-After header's seconds when it carries some."""
        try:
            async with self._session.post(
                self.endpoint.synthesize_url, data=p.build_synthesize(request),
                headers={**self.endpoint.auth_headers(self._api_key),
                         "Content-Type": "application/json",
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
                retry_after = _retry_after_header(response.headers.get("Retry-After"))
        except TimeoutError:  # before OSError, of which it is a subclass
            raise TTSError("TTS request over HTTP timed out", retryable=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TTSUnavailable(f"TTS server unreachable over HTTP: {exc}") from exc
        try:
            return p.parse_server_message(body), retry_after
        except TTSReplyError as exc:
            raise type(exc)(f"TTS server answered HTTP {status}: {exc}") from exc


def _given_up(exc: TTSError, message: str) -> TTSError:
    """The last attempt's error under the give-up's message (its Kind first, for
    failure_reason): of the same class, so a caller that tells unreachable from refused still
    can."""
    if isinstance(exc, (TTSUnavailable, TTSReplyError)):
        return type(exc)(message)
    return TTSError(message, retryable=exc.retryable, code=exc.code,
                    retry_after_s=exc.retry_after_s)


def _retry_after_header(value: str | None) -> float | None:
    """Retry-After in delta-seconds (RFC 9110 10.2.3); an HTTP date or junk is not used (the
    backoff applies alone), and the value is bounded like the WebSocket's hint."""
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), p.MAX_RETRY_AFTER_S)
