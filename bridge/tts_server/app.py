"""The SILMA TTS API server process: app factory, and entry points to serve it.

- create_app(settings, engine=None): the aiohttp application, routes under settings.base_path:
  our protocol at /ws, /synthesize, /health, /metrics; SILMA's API v2 at /tts/v2 (v2_api.py)
- start(settings, host=, port=, engine=): a listening server (port 0 = any free port)
- serve(settings, host=, port=): runs until cancelled
- run(settings): blocking, uvloop when installed, quiet on Ctrl-C and SIGTERM
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import structlog
from aiohttp import web

from bridge.settings import TTSServerSettings
from bridge.silma import v2_protocol as v2
from bridge.tts_server.engines import Engine, get_engine
from bridge.tts_server.http_api import HttpApi
from bridge.tts_server.service import TTSService
from bridge.tts_server.v2_api import PREFIX as V2_PREFIX
from bridge.tts_server.v2_api import V2Api
from bridge.tts_server.v2_catalog import build_catalog
from bridge.tts_server.ws_api import WebSocketApi

log = structlog.get_logger("bridge.tts_server")

SERVICE = web.AppKey("tts_service", TTSService)
SHUTDOWN_GRACE_S = 5.0


def base_path(path: str) -> str:
    """'/' -> '', 'tts/' -> '/tts': routes are base + '/ws' etc."""
    stripped = path.strip().strip("/")
    return f"/{stripped}" if stripped else ""


def create_app(settings: TTSServerSettings, engine: Engine | None = None) -> web.Application:
    """The server app. An engine passed in is shared: started if needed, never closed here.
    Raises ConfigError for a bad v2 model table or voices folder."""
    owned = engine is None
    service = TTSService(settings, engine or get_engine(settings))
    catalog = build_catalog(settings, service.engine.name)
    app = web.Application(client_max_size=settings.max_message_bytes)
    app[SERVICE] = service
    base = base_path(settings.base_path)
    http, ws, silma_v2 = HttpApi(service), WebSocketApi(service), V2Api(service, catalog)
    app.router.add_get(f"{base}/ws", ws.handle)
    app.router.add_post(f"{base}/synthesize", http.synthesize)
    app.router.add_get(f"{base}/health", http.health)
    app.router.add_get(f"{base}/metrics", http.metrics)
    app.router.add_get(f"{base}{V2_PREFIX}{v2.WS_PATH}", silma_v2.ws)
    app.router.add_post(f"{base}{V2_PREFIX}{v2.HTTP_PATH}", silma_v2.stream)

    async def close_sockets(_: web.Application) -> None:
        await asyncio.gather(ws.close_all(), silma_v2.close_all())

    app.on_shutdown.append(close_sockets)

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        service.start_loading()
        yield
        await service.stop_loading()
        if owned:
            await service.engine.close()

    app.cleanup_ctx.append(lifecycle)
    return app


@dataclasses.dataclass(frozen=True)
class RunningServer:
    runner: web.AppRunner
    service: TTSService
    url: str  # http://host:port{base}

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/ws"

    @property
    def v2_url(self) -> str:
        """The base URL of SILMA's API v2 here, as its clients take it."""
        return self.url + V2_PREFIX

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(
    settings: TTSServerSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    engine: Engine | None = None,
) -> RunningServer:
    """Listen now (port 0 picks a free port); the engine loads in the background."""
    app = create_app(settings, engine)
    # In-flight HTTP requests get a few seconds to finish on shutdown, then are cancelled.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    host = host or settings.host
    site = web.TCPSite(runner, host, settings.port if port is None else port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    authority = f"[{host}]" if ":" in host else host  # an IPv6 literal needs brackets
    url = f"http://{authority}:{bound_port}{base_path(settings.base_path)}"
    return RunningServer(runner, app[SERVICE], url)


async def serve(
    settings: TTSServerSettings, *, host: str | None = None, port: int | None = None
) -> None:
    """Run the server until cancelled. Raises when the engine fails to load."""
    server = await start(settings, host=host, port=port)
    try:
        log.info("tts_server_listening", url=server.url, engine=server.service.engine.name)
        await server.service.loaded()
        log.info("tts_server_ready", engine=server.service.engine.name)
        await asyncio.Event().wait()
    finally:
        await server.close()


def run(settings: TTSServerSettings) -> None:
    """Blocking entry point for the CLI: uvloop when available; Ctrl-C and SIGTERM stop cleanly."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loop_factory) as runner,
    ):
        runner.run(_until_signal(serve(settings)))


async def _until_signal(main: Coroutine[Any, Any, None]) -> None:
    # The process root: a cancel from SIGTERM (or Ctrl-C via the runner) means a clean stop.
    task = asyncio.create_task(main)
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
