"""Real servers on 127.0.0.1 for integration tests: our TTS server and the bridge."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import socket
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from bridge.settings import Settings, TTSServerSettings, load_settings
from bridge.silma import protocol as p
from bridge.tts_server import app as tts_app
from bridge.tts_server.engines import Engine
from bridge.web.app import create_app
from bridge.web.context import CONTEXT, BridgeContext
from bridge.web.services import Services, open_services

DEFAULT_TOKEN = "test-default-user-token"  # the default user's access token in tests


def make_settings(**tts_server: Any) -> Settings:
    """Test settings: our TTS server on a free port; webhooks answered unsigned (the emulated
    carriers sign only where a test gives them a token)."""
    base = load_settings(env={})
    return base.replace(tts_server=dataclasses.replace(base.tts_server, port=0, **tts_server),
                        allow_unsigned_webhooks=True)


@contextlib.asynccontextmanager
async def running_tts(settings: Settings) -> AsyncIterator[tts_app.RunningServer]:
    async with serving_tts(settings.tts_server) as server:
        yield server


@contextlib.asynccontextmanager
async def serving_tts(settings: TTSServerSettings, engine: Engine | None = None
                      ) -> AsyncIterator[tts_app.RunningServer]:
    """Our TTS server on a free loopback port, its engine loaded: `engine` (shared, never
    closed here) or the one `settings` name."""
    server = await tts_app.start(settings, host="127.0.0.1", port=0, engine=engine)
    try:
        async with asyncio.timeout(20):
            await server.service.loaded()
        yield server
    finally:
        await server.close()


@dataclasses.dataclass
class RunningBridge:
    url: str
    runner: web.AppRunner

    @property
    def context(self) -> BridgeContext:
        return self.runner.app[CONTEXT]


@contextlib.asynccontextmanager
async def bridge_services(settings: Settings, database_url: str | None = None
                          ) -> AsyncIterator[Services]:
    """The bridge's services on `database_url`, else on a SQLite database of their own."""
    with tempfile.TemporaryDirectory() as data:
        async with open_services(settings.replace(
                database_url=database_url or f"sqlite+aiosqlite:///{data}/bridge.db")) as services:
            yield services


@contextlib.asynccontextmanager
async def running_bridge(settings: Settings, *, tts_url: str,
                         database_url: str | None = None) -> AsyncIterator[RunningBridge]:
    """The bridge on a free port, its public URL pointing at itself, speaking through `tts_url`,
    with its own SQLite database unless `database_url` names one."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound before the app exists: its public URL needs the port
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    fleet = settings.fleet
    async with bridge_services(settings.replace(
            public_url=url, silma=dataclasses.replace(settings.silma, endpoint=tts_url),
            fleet=dataclasses.replace(fleet, internal_url=fleet.internal_url or url),
            default_user_token=settings.default_user_token or DEFAULT_TOKEN),
            database_url) as services:
        runner = web.AppRunner(create_app(services), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            yield RunningBridge(url, runner)
        finally:
            await runner.cleanup()


async def caller_speech(tts: tts_app.RunningServer, text: str) -> bytes:
    """Real speech as the caller's line carries it: 8 kHz mu-law from our TTS server."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{tts.url}/synthesize", json={
                "type": "synthesize", "text": text, "format": "ulaw", "sample_rate": 8000}) as r:
            body = await r.json()
    return base64.b64decode(body["audio"])


async def wait_ended(bridge: RunningBridge, call_id: str) -> dict[str, Any]:
    """The trace of `call_id` once the bridge has filed it as ended."""
    session = bridge.context.registry.live.get(call_id)
    if session is not None:
        async with asyncio.timeout(10):
            await session.ended.wait()
    trace = bridge.context.registry.trace(call_id)
    assert trace is not None and trace["live"] is False
    return trace


@contextlib.asynccontextmanager
async def silent_tts_server() -> AsyncIterator[str]:
    """Answers hello, then never answers a synthesize (the stall of issue 16)."""

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for message in sock:
            data = message.data if isinstance(message.data, str) else bytes(message.data).decode()
            if '"hello"' in data:
                await sock.send_str(p.build_server_hello(p.ServerHello(
                    capabilities=("stream",))).decode())
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    async with serving_app(app) as url:
        yield "ws" + url.removeprefix("http") + "/ws"


@contextlib.asynccontextmanager
async def serving_app(app: web.Application) -> AsyncIterator[str]:
    """`app` on a free port of 127.0.0.1 (its base URL) until the block ends."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
