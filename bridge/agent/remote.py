"""An agent in another process: per call, the bridge opens a WebSocket to a configured URL and
exchanges JSON with it (the protocol is documented in README, "Remote agents").

Bridge -> agent: one JSON text message per event ({"type": "call_started", ...}), and, once the
agent sends {"type": "audio", "enabled": true}, the caller's audio as binary messages of 16-bit
little-endian PCM at 8 kHz (one per 20 ms frame).
Agent -> bridge: {"type": "say", "text": "...", "partial": false} (partial true streams an
utterance in pieces; the next non-partial say ends it), {"type": "clear"},
{"type": "hangup", "goodbye": "..."}, {"type": "audio", "enabled": true|false}.
A command the bridge cannot read is logged and skipped; the agent being unreachable leaves the
call running in silence rather than failing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson
import structlog

from bridge.agent.base import AgentEvent, CallControl, CallStarted, SpeechStream, event_json
from bridge.audio.mulaw import ulaw2lin
from bridge.errors import BridgeError
from bridge.supervisor import Supervisor

AUDIO_BACKLOG_FRAMES = 50  # 1 s: beyond it the oldest caller audio is dropped, not the call
log = structlog.get_logger("bridge.agent")


class RemoteAgent:
    def __init__(self, session: aiohttp.ClientSession, url: str, *, connect_timeout_s: float,
                 headers: dict[str, str] | None = None) -> None:
        self._session = session
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._headers = headers or {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._call: CallControl | None = None
        self._stream: SpeechStream | None = None
        self._audio: asyncio.Queue[bytes] | None = None
        self._tasks = Supervisor(self._task_failed)
        self.bad_commands = 0

    async def handle(self, call: CallControl, event: AgentEvent) -> None:
        if isinstance(event, CallStarted):
            self._call = call
            await self._connect()
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self._ws.send_str(orjson.dumps(event_json(event)).decode())

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                self._ws = await self._session.ws_connect(self._url, compress=0,
                                                          headers=self._headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("remote_agent_unreachable", url=self._url, error=str(exc))
            return
        self._tasks.spawn("remote-agent-reader", self._read())

    def caller_audio(self, mulaw: bytes) -> None:
        if self._audio is None:
            return
        if self._audio.qsize() >= AUDIO_BACKLOG_FRAMES:
            self._audio.get_nowait()
        self._audio.put_nowait(ulaw2lin(mulaw).astype("<i2").tobytes())

    async def _write_audio(self, queue: asyncio.Queue[bytes]) -> None:
        while self._ws is not None and not self._ws.closed:
            frame = await queue.get()
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self._ws.send_bytes(frame)

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                command = orjson.loads(msg.data)
                if not isinstance(command, dict):
                    raise ValueError("not a JSON object")
                await self._apply(command)
            except (ValueError, TypeError, KeyError) as exc:
                self.bad_commands += 1
                log.warning("remote_agent_bad_command", error=str(exc))
            except BridgeError as exc:  # e.g. a say past the call's bound: refused, reader goes on
                log.warning("remote_agent_command_refused", error=str(exc))

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
            # Hang-up waits for the goodbye's playout: not on this reader, which must go on.
            self._tasks.spawn("remote-agent-hangup",
                              call.hangup(goodbye if isinstance(goodbye, str) else None))
        elif kind == "audio":
            self._set_audio(bool(command.get("enabled", True)))
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
        if enabled and self._audio is None:
            self._audio = asyncio.Queue()
            self._tasks.spawn("remote-agent-audio", self._write_audio(self._audio))
        elif not enabled:
            self._audio = None

    def _task_failed(self, name: str, exc: BaseException) -> None:
        log.warning("remote_agent_task_failed", task=name, url=self._url,
                    error=f"{type(exc).__name__}: {exc}", exc_info=exc)

    async def close(self) -> None:
        await self._tasks.aclose()
        if self._ws is not None:
            await self._ws.close()
