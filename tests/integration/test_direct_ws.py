"""DirectWebSocketResponse on a real aiohttp server: data messages reach the callback in order,
inside the read; pings, the close handshake and oversize messages still work as in aiohttp.
These also guard the aiohttp internals the class relies on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from bridge.web.direct_ws import DirectWebSocketResponse


class Endpoint:
    def __init__(self, max_msg_size: int = 4096) -> None:
        self.received: list[str | bytes] = []
        self.through_queue: list[WSMsgType] = []  # what the handler's own iteration saw
        self.closed = asyncio.Event()
        self.got = asyncio.Event()
        self.want = 0
        self._max = max_msg_size

    def on_message(self, message: str | bytes) -> None:
        if message == "boom":
            raise RuntimeError("a handler bug")
        self.received.append(message)
        if len(self.received) >= self.want:
            self.got.set()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = DirectWebSocketResponse(max_msg_size=self._max)
        ws.on_message = self.on_message
        await ws.prepare(request)
        async for msg in ws:
            self.through_queue.append(msg.type)
        self.closed.set()
        return ws


@contextlib.asynccontextmanager
async def serving(endpoint: Endpoint) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/ws", endpoint.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


async def test_data_messages_reach_the_callback_in_order_and_pings_are_answered() -> None:
    endpoint = Endpoint()
    endpoint.want = 201
    async with serving(endpoint) as url, aiohttp.ClientSession() as http:
        async with http.ws_connect(url, autoping=False) as ws:
            for i in range(100):
                await ws.send_str(f"text {i}")
                await ws.send_bytes(f"bin {i}".encode())
            await ws.send_str("boom")  # the callback fails: logged, the connection lives on
            await ws.send_str("after")
            await ws.ping(b"are you there")
            async with asyncio.timeout(10):
                pong = await ws.receive()
                await endpoint.got.wait()
            assert pong.type is WSMsgType.PONG and pong.data == b"are you there"
            await ws.close()
        async with asyncio.timeout(10):
            await endpoint.closed.wait()
    expected: list[str | bytes] = []
    for i in range(100):
        expected += [f"text {i}", f"bin {i}".encode()]
    assert endpoint.received == [*expected, "after"]
    assert endpoint.through_queue == []  # no data message took aiohttp's queue


async def test_an_oversize_message_closes_the_stream_with_1009() -> None:
    endpoint = Endpoint(max_msg_size=1000)
    async with serving(endpoint) as url, aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            await ws.send_str("x" * 2000)
            async with asyncio.timeout(10):
                msg = await ws.receive()
                await endpoint.closed.wait()
    assert msg.type is WSMsgType.CLOSE and msg.data == WSCloseCode.MESSAGE_TOO_BIG
    assert endpoint.received == []
    assert endpoint.through_queue == [WSMsgType.ERROR]
