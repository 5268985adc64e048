"""Streaming speech-to-text over Deepgram's live WebSocket (the protocol and its sources:
deepgram_core.py): partial transcripts while the caller talks, finals as Deepgram settles them.

Per call, two supervised tasks: the connection (connect, read results, reconnect once when
the socket drops: deepgram_core.Reconnects) and the sender (caller audio in chunks of
SEND_S, a Finalize at each endpoint of the voice detector so the final comes at once rather
than at Deepgram's own endpoint, a KeepAlive when no audio went for KEEPALIVE_S). Audio that
comes while there is no connection waits, bounded to PENDING_S (the oldest goes first).
A refused key (HTTP 401/403 at the upgrade) is not retried. When the stream is lost for good,
`on_failure` hears it once ("refused", "unreachable" or "stream_lost") and the transcriber is
quiet from then on; the call goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp
import structlog

from bridge.errors import ProtocolError
from bridge.settings import SttSettings
from bridge.stt import deepgram_core as dg
from bridge.stt.base import OnFailure, OnTranscript, Transcript
from bridge.supervisor import Supervisor

log = structlog.get_logger("bridge.stt")

SEND_S = 0.1  # Deepgram takes chunks of any size; 100 ms saves four sends in five
PENDING_S = 5.0
KEEPALIVE_S = 4.0  # the server closes after 10 s of neither audio nor KeepAlive
CLOSE_TIMEOUT_S = 1.0
HEARTBEAT_S = 15.0  # pings find a peer that vanished without closing
MAX_MESSAGE_BYTES = 256 * 1024
_REFUSED = (401, 403)


class DeepgramStt:
    name = "deepgram"

    def __init__(self, settings: SttSettings, http: aiohttp.ClientSession, *,
                 keepalive_s: float = KEEPALIVE_S) -> None:
        self._url = dg.listen_url(settings.url, model=settings.model, language=settings.language)
        self._headers = {"Authorization": f"Token {settings.api_key}"}
        self._connect_timeout_s = settings.request_timeout_s
        self._keepalive_s = keepalive_s
        self._http = http  # the caller's: it is not closed here

    def open(self, call_id: str, on_transcript: OnTranscript,
             on_failure: OnFailure) -> DeepgramTranscriber:
        return DeepgramTranscriber(
            call_id, self._http, self._url, self._headers, on_transcript, on_failure,
            connect_timeout_s=self._connect_timeout_s, keepalive_s=self._keepalive_s)

    async def aclose(self) -> None:
        """Nothing shared to release: each call's stream is its own, the session the caller's."""


class DeepgramTranscriber:
    """One call's stream. Build it on the event loop (it starts its tasks)."""

    def __init__(self, call_id: str, http: aiohttp.ClientSession, url: str,
                 headers: dict[str, str], on_transcript: OnTranscript, on_failure: OnFailure,
                 *, connect_timeout_s: float, keepalive_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log.bind(call_id=call_id, stt="deepgram")
        self._http = http
        self._url = url
        self._headers = headers
        self._on_transcript = on_transcript
        self._on_failure = on_failure
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._clock = clock
        self._audio = dg.StreamAudio(PENDING_S)
        self._send_bytes = round(SEND_S * dg.SAMPLE_RATE)
        self._endpoints = dg.Endpoints()
        self._reconnects = dg.Reconnects()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._offset_s = 0.0  # the caller's second at which this connection's audio starts
        self._finalize = False  # an endpoint came: flush Deepgram's held audio
        self._wake = asyncio.Event()
        self._live = True  # False once closed or failed: no callbacks after
        self._supervisor = Supervisor(self._part_failed)
        self._supervisor.spawn("stt-deepgram-connection", self._connection())
        self._supervisor.spawn("stt-deepgram-sender", self._sender())

    # -- the call's side: in its socket read, so nothing here waits --------------------------
    def audio(self, mulaw: bytes) -> None:
        if not self._live:
            return
        self._audio.add(mulaw)
        if self._ws is not None and len(self._audio) >= self._send_bytes:
            self._wake.set()

    def speech_started(self, at_s: float) -> None:
        self._endpoints.started(self._clock())

    def speech_ended(self, at_s: float) -> None:
        self._endpoints.ended(self._clock())
        self._finalize = True
        self._wake.set()

    async def aclose(self) -> None:
        self._live = False
        ws = self._ws
        if ws is not None and not ws.closed:
            # Tell Deepgram the stream is over (it stops billing for it); nobody waits for
            # what it would still send.
            with contextlib.suppress(OSError, aiohttp.ClientError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await ws.send_str(dg.CLOSE_STREAM)
                    await ws.close()
        await self._supervisor.aclose()
        if ws is not None:
            await ws.close()

    # -- the tasks --------------------------------------------------------------------------
    async def _connection(self) -> None:
        while self._live:
            try:
                # A handshake slower than the request timeout is a failed connect.
                async with asyncio.timeout(self._connect_timeout_s):
                    ws = await self._http.ws_connect(
                        self._url, headers=self._headers, max_msg_size=MAX_MESSAGE_BYTES,
                        heartbeat=HEARTBEAT_S,
                        timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S))
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in _REFUSED:
                    self._fail("refused", f"the upgrade was answered HTTP {exc.status}")
                    return
                reason = f"the upgrade was answered HTTP {exc.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = f"cannot connect: {type(exc).__name__}: {exc}"
            else:
                self._reconnects.connected(self._clock())
                reason = await self._serve(ws)
                if not self._live:
                    return  # closed by aclose (or failed meanwhile): nothing to reconnect
            if not self._reconnects.may_retry(self._clock()):
                label = "stream_lost" if self._reconnects.ever_connected else "unreachable"
                self._fail(label, reason)
                return
            self._log.warning("stt_reconnecting", reason=reason)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Read results until the socket is gone; returns why it went."""
        self._offset_s = self._audio.head_s
        self._ws = ws
        self._wake.set()  # what waited while connecting goes at once
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._result(message.data)
            return f"the socket closed (code {ws.close_code})"
        finally:
            self._ws = None
            await ws.close()

    def _result(self, data: str) -> None:
        try:
            result = dg.parse_message(data)
        except ProtocolError as exc:
            # One bad message costs that message, not the stream.
            self._log.warning("stt_bad_message", error=str(exc))
            return
        if result is None or not result.text or not self._live:
            return
        start = self._offset_s + result.start
        latency = self._endpoints.latency(self._clock()) if result.is_final else 0.0
        self._on_transcript(Transcript(result.text, result.is_final, start,
                                       start + result.duration, latency))

    async def _sender(self) -> None:
        while self._live:
            try:
                async with asyncio.timeout(self._keepalive_s):
                    await self._wake.wait()
                idle = False
            except TimeoutError:
                idle = True
            self._wake.clear()
            ws = self._ws
            if ws is None or ws.closed:
                continue  # the audio waits (bounded) for the next connection
            try:
                if len(self._audio):
                    await ws.send_bytes(self._audio.take())
                elif idle:
                    await ws.send_str(dg.KEEPALIVE)
                if self._finalize:
                    self._finalize = False
                    await ws.send_str(dg.FINALIZE)
            except (OSError, aiohttp.ClientError) as exc:
                # The connection task sees the socket go and decides; this chunk is lost.
                self._log.info("stt_send_failed", error=f"{type(exc).__name__}: {exc}")

    def _fail(self, label: str, reason: str) -> None:
        self._log.warning("stt_failed", reason=label, error=reason)
        if self._live:
            self._live = False
            self._on_failure(label)

    def _part_failed(self, name: str, exc: BaseException) -> None:
        self._fail("internal", f"{name} failed: {exc!r}")

