"""The remote agent against real agent WebSockets on loopback: its command reader (a command
the call refuses is logged and skipped, and the reader goes on; send_dtmf), its Authorization
header, reconnects with a resumed call_started and the gap's events, and the spoken fallback plus
hang-up when the agent cannot be reached or the attempts are spent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from structlog.testing import capture_logs

from bridge.agent.base import CallEnded, CallStarted, Dtmf
from bridge.agent.remote import Link, RemoteAgent
from bridge.agent.remote_core import GAP_EVENTS, Backoff
from bridge.call.core import CallBusy
from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from tests.servers import make_settings, running_bridge, wait_ended

FAST = Backoff(base_s=0.01, cap_s=0.02, stable_s=10.0)  # test time; the rules are unit-tested
FALLBACK = "Sorry, the agent is away."
SECRET = "Bearer agent-secret-7f3a"
STARTED = CallStarted("CA1", "twilio", {"from": "+15550100"})


class Stream:
    def __init__(self, call: Call) -> None:
        self.pieces: list[str] = []
        self._call = call

    def push(self, text: str) -> None:
        self.pieces.append(text)

    def end(self) -> None:
        self._call.said_queue.put_nowait("".join(self.pieces))


class Call:
    """The CallControl side: refuses every say after the first `room`; records the rest."""

    def __init__(self, room: int = 100) -> None:
        self.said: list[str] = []
        self.said_queue: asyncio.Queue[str] = asyncio.Queue()
        self.cleared = asyncio.Event()
        self.hung_up = asyncio.Event()
        self.goodbye: str | None = None
        self.dtmf: asyncio.Queue[str] = asyncio.Queue()
        self._room = room

    @property
    def call_id(self) -> str:
        return "CA1"

    def say(self, text: str) -> object:
        if len(self.said) >= self._room:
            raise CallBusy("the call already has utterances waiting")
        self.said.append(text)
        self.said_queue.put_nowait(text)
        return None

    def say_stream(self) -> Stream:
        return Stream(self)

    def clear(self) -> None:
        self.cleared.set()

    def send_dtmf(self, digits: str) -> None:
        if digits == "x":
            raise ValueError("not DTMF keys: 'x'")
        self.dtmf.put_nowait(digits)

    async def hangup(self, goodbye: str | None = None) -> None:
        self.goodbye = goodbye
        self.hung_up.set()

    async def next_said(self) -> str:
        async with asyncio.timeout(10):
            return await self.said_queue.get()


Script = Callable[[int, web.Request], Awaitable[web.StreamResponse]]


class AgentServer:
    """An agent on 127.0.0.1; `script(n, request)` answers its n-th connection (0-based)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[web.Request] = []
        self.arrived: list[asyncio.Event] = [asyncio.Event() for _ in range(8)]
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        n = len(self.requests)
        self.requests.append(request)
        self.arrived[n].set()
        return await self.script(n, request)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AgentServer]:
        app = web.Application()
        app.router.add_get("/agent", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"ws://127.0.0.1:{runner.addresses[0][1]}/agent"
        try:
            yield self
        finally:
            await runner.cleanup()


async def accept(request: web.Request) -> tuple[web.WebSocketResponse, dict[str, Any]]:
    """Upgrade and read the call_started."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    hello = await ws.receive_json()
    assert hello["type"] == "call_started"
    return ws, hello


async def drain(ws: web.WebSocketResponse) -> web.WebSocketResponse:
    async for _ in ws:
        pass
    return ws


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_say_does_not_stop_the_commands_that_follow():
    async def agent(n: int, request: web.Request) -> web.StreamResponse:
        ws, _ = await accept(request)
        for k in range(3):
            await ws.send_json({"type": "say", "text": f"reply {k}"})
        await ws.send_json({"type": "clear"})
        return await drain(ws)

    call = Call(room=1)
    async with AgentServer(agent).running() as server, aiohttp.ClientSession() as http:
        remote = RemoteAgent(http, server.url.replace("ws:", "http:"), connect_timeout_s=5)
        await remote.handle(call, STARTED)
        async with asyncio.timeout(10):
            await call.cleared.wait()
        await remote.close()
    assert call.said == ["reply 0"]
    assert remote.bad_commands == 0  # refused by the call, not malformed


async def test_a_dropped_agent_is_reconnected_told_the_call_resumed_and_given_the_gap():
    release = asyncio.Event()  # holds the second upgrade: the test adds events during the gap
    hellos: list[dict[str, Any]] = []
    gap: list[dict[str, Any]] = []

    async def agent(n: int, request: web.Request) -> web.StreamResponse:
        if n == 1:
            await release.wait()
        ws, hello = await accept(request)
        hellos.append(hello)
        if n == 0:
            await ws.send_json({"type": "say", "text": "one"})
            await ws.send_json({"type": "say", "text": "Hello, ", "partial": True})
            await ws.close()  # mid-call, mid-utterance, no hang-up
            return ws
        gap.extend([await ws.receive_json() for _ in range(GAP_EVENTS)])
        await ws.send_json({"type": "say", "text": "resumed"})
        event = await ws.receive_json()
        await ws.send_json({"type": "say", "text": f"pressed {event['digit']}"})
        await ws.send_json({"type": "send_dtmf", "digits": "x"})  # refused: counted, skipped
        await ws.send_json({"type": "send_dtmf", "digits": "12#"})
        return await drain(ws)

    call = Call()
    with capture_logs() as logs:
        async with AgentServer(agent).running() as server, aiohttp.ClientSession() as http:
            remote = RemoteAgent(http, f"{server.url}?key=query-secret", connect_timeout_s=5,
                                 headers={"Authorization": SECRET}, reconnect_attempts=3,
                                 fallback=FALLBACK, backoff=FAST)
            await remote.handle(call, STARTED)
            assert await call.next_said() == "one"
            assert await call.next_said() == "Hello, "  # the cut-off stream ended with its piece
            async with asyncio.timeout(10):
                await server.arrived[1].wait()
            assert remote.link is Link.CONNECTING
            for k in range(GAP_EVENTS + 2):  # two more than the backlog holds
                await remote.handle(call, Dtmf(str(k % 10)))
            release.set()
            assert await call.next_said() == "resumed"
            await remote.handle(call, Dtmf("9"))
            assert await call.next_said() == "pressed 9"
            async with asyncio.timeout(10):
                assert await call.dtmf.get() == "12#"
            await remote.handle(call, CallEnded("caller hung up"))
            await remote.close()
            auth = [r.headers.get("Authorization") for r in server.requests]

    assert auth == [SECRET, SECRET]
    first, resumed = hellos
    assert first == {"type": "call_started", "call_id": "CA1", "provider": "twilio",
                     "parameters": {"from": "+15550100"}, "resumed": False, "attempt": 0,
                     "missed_events": 0}
    assert resumed == {**first, "resumed": True, "attempt": 1, "missed_events": 2}
    # The oldest two were dropped; the rest arrived in order.
    assert [e["digit"] for e in gap] == [str(k % 10) for k in range(2, GAP_EVENTS + 2)]
    assert remote.reconnected == 1
    assert remote.bad_commands == 1
    assert not call.hung_up.is_set()
    assert any(entry["event"] == "remote_agent_lost" for entry in logs)
    assert not [entry for entry in logs if "secret" in repr(entry)]  # neither key nor header


async def test_an_unreachable_agent_is_a_spoken_fallback_and_a_hang_up():
    call = Call()
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            remote = RemoteAgent(http, f"ws://127.0.0.1:{free_port()}/agent",
                                 connect_timeout_s=5, headers={"Authorization": SECRET},
                                 reconnect_attempts=3, fallback=FALLBACK, backoff=FAST)
            await remote.handle(call, STARTED)
            async with asyncio.timeout(10):
                await call.hung_up.wait()
            await remote.close()
    assert call.goodbye == FALLBACK
    assert remote.link is Link.GONE
    [gave_up] = [entry for entry in logs if entry["event"] == "remote_agent_gave_up"]
    assert gave_up["reason"].startswith("unreachable at call start: ClientConnectorError")
    assert not [entry for entry in logs if "secret" in repr(entry)]


async def test_a_refused_key_is_a_fallback_with_the_status_as_its_reason():
    async def agent(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=401)

    call = Call()
    with capture_logs() as logs:
        async with AgentServer(agent).running() as server, aiohttp.ClientSession() as http:
            remote = RemoteAgent(http, server.url, connect_timeout_s=5,
                                 headers={"Authorization": SECRET}, fallback=FALLBACK,
                                 backoff=FAST)
            await remote.handle(call, STARTED)
            async with asyncio.timeout(10):
                await call.hung_up.wait()
            await remote.close()
    assert call.goodbye == FALLBACK
    assert len(server.requests) == 1  # not retried at call start: the caller is waiting
    [gave_up] = [entry for entry in logs if entry["event"] == "remote_agent_gave_up"]
    assert gave_up["reason"] == "unreachable at call start: upgrade refused: HTTP 401"


async def test_reconnect_attempts_are_bounded_then_the_fallback_is_said():
    async def agent(n: int, request: web.Request) -> web.StreamResponse:
        if n == 0:
            ws, _ = await accept(request)
            await ws.send_json({"type": "say", "text": "one"})
            await ws.close()
            return ws
        if n == 1:  # accepts, then drops at once: counts as a spent attempt
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.close()
            return ws
        return web.Response(status=503)

    call = Call()
    with capture_logs() as logs:
        async with AgentServer(agent).running() as server, aiohttp.ClientSession() as http:
            remote = RemoteAgent(http, server.url, connect_timeout_s=5, reconnect_attempts=2,
                                 fallback=FALLBACK, backoff=FAST)
            await remote.handle(call, STARTED)
            assert await call.next_said() == "one"
            async with asyncio.timeout(10):
                await call.hung_up.wait()
            await remote.close()
    assert len(server.requests) == 3  # the call's connection and two attempts
    assert call.goodbye == FALLBACK
    [gave_up] = [entry for entry in logs if entry["event"] == "remote_agent_gave_up"]
    assert gave_up["reason"] == "upgrade refused: HTTP 503 (2 reconnect attempts spent)"



async def test_a_real_call_whose_agent_is_unreachable_hears_the_fallback_and_ends(tts):
    settings = make_settings()
    settings = settings.replace(agent=dataclasses.replace(
        settings.agent, kind="remote", remote_url=f"ws://127.0.0.1:{free_port()}/agent",
        remote_authorization=SECRET, fallback=FALLBACK))
    async with running_bridge(settings, tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                               {"CallSid": "CAaway"}, None)
        call = TwilioCallEmulator(http, stream_url, call_sid="CAaway", parameters=params)
        await call.connect(greetings=1)
        async with asyncio.timeout(20):
            await call.wait_closed()  # the bridge hung up once the fallback was heard
        trace = await wait_ended(bridge, "CAaway")
    assert [(u["text"], u["outcome"]) for u in trace["utterance_traces"]] == [
        (FALLBACK, "played")]
    assert trace["end_reason"] == "hangup"
