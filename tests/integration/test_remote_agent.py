"""The remote agent's command reader, against a real agent WebSocket on loopback: a command the
call refuses (a say past its bound) is logged and skipped, and the reader goes on."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from bridge.agent.base import CallStarted
from bridge.agent.remote import RemoteAgent
from bridge.call.core import CallBusy


class Call:
    """The CallControl side: refuses every say after the first `room`."""

    def __init__(self, room: int) -> None:
        self.said: list[str] = []
        self.cleared = asyncio.Event()
        self._room = room

    @property
    def call_id(self) -> str:
        return "CA1"

    def say(self, text: str) -> object:
        if len(self.said) >= self._room:
            raise CallBusy("the call already has utterances waiting")
        self.said.append(text)
        return None

    def say_stream(self) -> object:
        raise AssertionError("not used here")

    def clear(self) -> None:
        self.cleared.set()

    async def hangup(self, goodbye: str | None = None) -> None:
        return None


async def test_a_refused_say_does_not_stop_the_commands_that_follow():
    async def agent(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # call_started
        for n in range(3):
            await ws.send_json({"type": "say", "text": f"reply {n}"})
        await ws.send_json({"type": "clear"})
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/agent", agent)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    call = Call(room=1)
    try:
        async with aiohttp.ClientSession() as http:
            remote = RemoteAgent(http, f"http://127.0.0.1:{port}/agent", connect_timeout_s=5)
            await remote.handle(call, CallStarted("CA1", "twilio", {}))  # type: ignore[arg-type]
            async with asyncio.timeout(10):
                await call.cleared.wait()
            await remote.close()
    finally:
        await runner.cleanup()
    assert call.said == ["reply 0"]
    assert remote.bad_commands == 0  # refused by the call, not malformed
