"""An agent in another process: per call, the bridge opens a WebSocket to a configured URL and
exchanges JSON with it (the protocol is documented in README, "Remote agents").

Bridge -> agent: one JSON text message per event ({"type": "call_started", ...}), and, once the
agent sends {"type": "audio", "enabled": true}, the caller's audio as binary messages of 16-bit
little-endian PCM at 8 kHz (one per 20 ms frame).
Agent -> bridge: {"type": "say", "text": "...", "partial": false} (partial true streams an
utterance in pieces; the next non-partial say ends it), {"type": "clear"},
{"type": "hangup", "goodbye": "..."}, {"type": "audio", "enabled": true|false},
{"type": "send_dtmf", "digits": "12#"} (tones played in band, after what is queued).
A command the bridge cannot read is logged and skipped.

The link (decisions in remote_core.py):
- The upgrade carries the configured headers (the Authorization header); they are never logged,
  and neither is the URL's query string or user info. A ping every HEARTBEAT_S finds a peer that
  vanished without closing.
- Unreachable at call start (one try within connect_timeout_s: the caller has just answered and
  every retry is silence): the call says `fallback` and hangs up, and the reason is logged.
- Lost mid-call (closed by the agent or the network, without a hang-up from the agent and
  before call_ended): the call goes on (what is queued keeps playing) while the bridge
  reconnects up to `reconnect_attempts` times with a short jittered backoff. On each new
  connection it first sends call_started again with "resumed": true, "attempt": n and
  "missed_events": k, then the events of the gap in order; every call_started carries these
  three fields (false, 0, 0 on the first). A resumed agent starts with caller audio off (it may
  be another instance that never asked for it) and must ask again.
- Events during the gap are queued, bounded (GAP_EVENTS): they are what the agent needs to keep
  its state right (a digit pressed, an utterance heard or interrupted), they are small, and a
  gap is seconds; past the bound the oldest are dropped and counted in missed_events. Caller
  audio is not queued: it is real time, and the subscription ends with the connection. An event
  sent in the instant before a drop is noticed may be lost with the connection.
- A streamed utterance (partial says) cut off by the drop is ended with what it has, so the
  call does not wait for pieces that will never come.
- Attempts spent: the fallback and hang-up again, with the reason logged.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

import aiohttp
import orjson
import structlog
from yarl import URL

from bridge.agent.base import (
    AgentEvent,
    CallControl,
    CallEnded,
    CallStarted,
    SpeechStream,
    event_json,
)
from bridge.agent.remote_core import (
    DEFAULT_BACKOFF,
    Backlog,
    Backoff,
    GiveUp,
    Reconnects,
    Retry,
)
from bridge.audio.mulaw import ulaw2lin
from bridge.errors import BridgeError
from bridge.supervisor import Supervisor

AUDIO_BACKLOG_FRAMES = 50  # 1 s: beyond it the oldest caller audio is dropped, not the call
HEARTBEAT_S = 10.0  # a silent peer is found within 1.5x this (aiohttp waits half for the pong)
SEND_ERRORS = (aiohttp.ClientError, ConnectionError)
log = structlog.get_logger("bridge.agent")

AgentSocket = aiohttp.ClientWebSocketResponse


class Link(enum.Enum):
    IDLE = "idle"  # before call_started
    CONNECTED = "connected"
    CONNECTING = "connecting"  # (re)connecting: events go to the backlog
    GONE = "gone"  # given up, or the call is ending: nothing more is sent


class RemoteAgent:
    def __init__(self, session: aiohttp.ClientSession, url: str, *, connect_timeout_s: float,
                 headers: dict[str, str] | None = None, reconnect_attempts: int = 3,
                 fallback: str = "", backoff: Backoff = DEFAULT_BACKOFF) -> None:
        self._session = session
        self._url = url
        self._log_url = str(URL(url).with_user(None).with_query(None))
        self._connect_timeout_s = connect_timeout_s
        self._headers = headers or {}
        self._fallback = fallback
        self._reconnects = Reconnects(reconnect_attempts, backoff)
        self._backlog = Backlog()
        self._link = Link.IDLE
        self._ws: AgentSocket | None = None
        self._call: CallControl | None = None
        self._started: dict[str, Any] = {}
        self._introduced = False  # the agent has received a call_started
        self._missed_told = 0  # of the backlog's drops, how many the agent was told about
        self._ending = False  # hung up, fallen back or told call_ended: never reconnect
        self._stream: SpeechStream | None = None
        self._audio: asyncio.Queue[bytes] | None = None
        self._audio_task: asyncio.Task[None] | None = None
        self._tasks = Supervisor(self._task_failed)
        self.bad_commands = 0
        self.reconnected = 0

    @property
    def link(self) -> Link:
        return self._link

    @property
    def _call_id(self) -> str:
        return self._call.call_id if self._call is not None else ""

    async def handle(self, call: CallControl, event: AgentEvent) -> None:
        if isinstance(event, CallStarted):
            self._call = call
            self._started = event_json(event)
            await self._open()
            return
        if isinstance(event, CallEnded):
            self._ending = True
        await self._send_event(orjson.dumps(event_json(event)).decode())

    async def _send_event(self, text: str) -> None:
        if self._link is Link.CONNECTED and self._ws is not None:
            try:
                await self._ws.send_str(text)
                return
            except SEND_ERRORS:
                pass  # dropped under us: the link notices, reconnects and replays it
            self._backlog.put(text)
        elif self._link is Link.CONNECTING:
            self._backlog.put(text)
        # IDLE or GONE: there is no agent to tell

    async def _open(self) -> None:
        connected = await self._connect()
        if isinstance(connected, str):
            self._give_up(f"unreachable at call start: {connected}")
            return
        self._ws = connected
        self._link = Link.CONNECTING
        self._reconnects.connected(asyncio.get_running_loop().time())
        await self._introduce(connected, attempt=0)
        self._tasks.spawn("remote-agent-link", self._run(connected))

    async def _connect(self) -> AgentSocket | str:
        """A new connection, or why there is none (fit to log: no header, no query string)."""
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await self._session.ws_connect(self._url, compress=0, headers=self._headers,
                                                      heartbeat=HEARTBEAT_S)
        except aiohttp.ClientResponseError as exc:  # the upgrade refused, e.g. 401 on a bad key
            return f"upgrade refused: HTTP {exc.status}"
        except TimeoutError:
            return f"no answer within {self._connect_timeout_s:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _introduce(self, ws: AgentSocket, *, attempt: int) -> None:
        """call_started (resumed or not), then the gap's events in order; then the link is
        CONNECTED. A send that fails leaves the rest queued for the reader to notice the drop."""
        missed = self._backlog.dropped - self._missed_told
        hello = {**self._started, "resumed": self._introduced, "attempt": attempt,
                 "missed_events": missed}
        try:
            await ws.send_str(orjson.dumps(hello).decode())
            self._introduced = True
            self._missed_told += missed
            while self._backlog:
                item = self._backlog.take()
                try:
                    await ws.send_str(item)
                except SEND_ERRORS:
                    self._backlog.put_back(item)
                    raise
        except SEND_ERRORS as exc:
            log.info("remote_agent_lost_while_resuming", call_id=self._call_id,
                     error=type(exc).__name__)
            return
        # No await since the backlog was found empty: no event can be overtaken.
        self._link = Link.CONNECTED

    async def _run(self, ws: AgentSocket) -> None:
        """Read the agent's commands; when the connection drops mid-call, reconnect or give up."""
        while True:
            reason = await self._read(ws)
            self._detach()
            if self._ending:
                return
            log.warning("remote_agent_lost", call_id=self._call_id, url=self._log_url,
                        reason=reason)
            decision = self._reconnects.lost(asyncio.get_running_loop().time(), reason)
            next_ws = await self._reconnect(decision)
            if next_ws is None:
                return
            ws = next_ws

    async def _reconnect(self, decision: Retry | GiveUp) -> AgentSocket | None:
        while isinstance(decision, Retry):
            await asyncio.sleep(decision.delay_s)
            if self._ending:
                return None
            connected = await self._connect()
            if isinstance(connected, str):
                log.info("remote_agent_reconnect_failed", call_id=self._call_id,
                         attempt=decision.attempt, reason=connected)
                decision = self._reconnects.failed(connected)
                continue
            self._ws = connected  # owned from here on: close() closes it
            if self._ending:  # the call ended during the upgrade: nothing left to resume
                await connected.close()
                return None
            self._reconnects.connected(asyncio.get_running_loop().time())
            self.reconnected += 1
            log.info("remote_agent_reconnected", call_id=self._call_id,
                     attempt=decision.attempt)
            await self._introduce(connected, attempt=decision.attempt)
            return connected
        self._give_up(decision.reason)
        return None

    async def _read(self, ws: AgentSocket) -> str:
        """Apply commands until the connection ends; returns how it ended."""
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                command = orjson.loads(msg.data)
                if not isinstance(command, dict):
                    raise ValueError("not a JSON object")
                await self._apply(command)
            except (ValueError, TypeError, KeyError) as exc:
                self.bad_commands += 1
                log.warning("remote_agent_bad_command", call_id=self._call_id, error=str(exc))
            except BridgeError as exc:  # e.g. a say past the call's bound: refused, reader goes on
                log.warning("remote_agent_command_refused", call_id=self._call_id,
                            error=str(exc))
        error = ws.exception()
        if error is not None:
            return f"{type(error).__name__}: {error}"
        return f"closed with code {ws.close_code}"

    def _detach(self) -> None:
        """The connection is gone: what belonged to it ends with it."""
        self._link = Link.GONE if self._ending else Link.CONNECTING
        self._ws = None
        if self._stream is not None:
            self._stream.end()
            self._stream = None
        self._set_audio(False)

    def _give_up(self, reason: str) -> None:
        """No agent for the rest of the call: say the fallback and hang up, not dead air."""
        self._link = Link.GONE
        log.warning("remote_agent_gave_up", call_id=self._call_id, url=self._log_url,
                    reason=reason, events_dropped=self._backlog.dropped + len(self._backlog))
        if self._call is None or self._ending:
            return
        self._ending = True
        self._tasks.spawn("remote-agent-fallback", self._call.hangup(self._fallback or None))

    def caller_audio(self, mulaw: bytes) -> None:
        if self._audio is None:
            return
        if self._audio.qsize() >= AUDIO_BACKLOG_FRAMES:
            self._audio.get_nowait()
        self._audio.put_nowait(ulaw2lin(mulaw).astype("<i2").tobytes())

    async def _write_audio(self, ws: AgentSocket, queue: asyncio.Queue[bytes]) -> None:
        while True:
            frame = await queue.get()
            try:
                await ws.send_bytes(frame)
            except SEND_ERRORS:
                return  # the connection is going: the reader handles it, audio ends with it

    async def _apply(self, command: dict[str, Any]) -> None:
        call = self._call
        assert call is not None
        kind = command.get("type")
        if kind == "say":
            text = command.get("text", "")
            if not isinstance(text, str):
                raise TypeError("say.text must be a string")
            self._say(call, text, partial=bool(command.get("partial", False)))
        elif kind == "clear":
            self._stream = None
            call.clear()
        elif kind == "hangup":
            goodbye = command.get("goodbye")
            self._ending = True  # the agent may close its socket now: not a drop to mend
            # Hang-up waits for the goodbye's playout: not on this reader, which must go on.
            self._tasks.spawn("remote-agent-hangup",
                              call.hangup(goodbye if isinstance(goodbye, str) else None))
        elif kind == "audio":
            self._set_audio(bool(command.get("enabled", True)))
        elif kind == "send_dtmf":
            digits = command.get("digits")
            if not isinstance(digits, str):
                raise TypeError("send_dtmf.digits must be a string")
            call.send_dtmf(digits)  # ValueError (not a key, too many) counts as a bad command
        else:
            raise ValueError(f"unknown command type {kind!r}")

    def _say(self, call: CallControl, text: str, *, partial: bool) -> None:
        if partial:
            if self._stream is None:
                self._stream = call.say_stream()
            self._stream.push(text)
        elif self._stream is not None:
            self._stream.push(text)
            self._stream.end()
            self._stream = None
        elif text.strip():
            call.say(text)

    def _set_audio(self, enabled: bool) -> None:
        if enabled and self._audio is None and self._ws is not None:
            self._audio = asyncio.Queue()
            self._audio_task = self._tasks.spawn("remote-agent-audio",
                                                 self._write_audio(self._ws, self._audio))
        elif not enabled and self._audio is not None:
            self._audio = None
            if self._audio_task is not None:
                self._audio_task.cancel()
                self._audio_task = None

    def _task_failed(self, name: str, exc: BaseException) -> None:
        log.warning("remote_agent_task_failed", task=name, url=self._log_url,
                    error=f"{type(exc).__name__}: {exc}", exc_info=exc)

    async def close(self) -> None:
        self._ending = True
        self._link = Link.GONE
        await self._tasks.aclose()
        if self._ws is not None:
            await self._ws.close()
        if self.reconnected or self._backlog.dropped:
            log.info("remote_agent_link", call_id=self._call_id, reconnected=self.reconnected,
                     events_dropped=self._backlog.dropped)
