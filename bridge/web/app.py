"""The bridge's aiohttp application: routes, and the shared TTS client's lifetime."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import WSCloseCode, web
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.call.registry import CallRegistry
from bridge.errors import ConfigError
from bridge.settings import Settings, SilmaSettings
from bridge.silma import protocol as p
from bridge.silma.pools import PoolRegistry
from bridge.silma.regions import AUTO, REGIONS, RegionSelector
from bridge.tracing.metrics import BridgeMetrics
from bridge.web import calls_routes, plivo_routes, twilio_routes
from bridge.web.context import CONTEXT, BridgeContext


def voice_of(silma: SilmaSettings) -> p.SynthesizeRequest:
    """The voice every request carries: reference clip and transcript, speed, seed."""
    reference = b""
    if silma.reference_audio:
        try:
            reference = Path(silma.reference_audio).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read BRIDGE_SILMA_REFERENCE_AUDIO: {exc}") from exc
    return p.SynthesizeRequest(text="", reference_audio=reference,
                               reference_text=silma.reference_text, speed=silma.speed,
                               seed=silma.seed)


async def _tts(app: web.Application) -> AsyncIterator[None]:
    """The shared HTTP session, the TTS pools, and region probing, for the app's lifetime."""
    ctx = app[CONTEXT]
    silma = ctx.settings.silma
    unknown = set(silma.regions) - set(REGIONS)
    if unknown or (silma.region not in (AUTO, *REGIONS)):
        raise ConfigError(f"unknown SILMA region(s): {sorted(unknown) or silma.region}; "
                          f"known: {', '.join(REGIONS)}")
    tls = ssl.create_default_context(cafile=silma.ca_file) if silma.ca_file else True
    ctx.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls))
    ctx.pools = PoolRegistry(ctx.http, ctx.settings.pool,
                             connect_timeout_s=silma.connect_timeout_s,
                             request_timeout_s=silma.request_timeout_s,
                             want_ulaw=silma.request_ulaw, ssl_context=tls)
    probing: asyncio.Task[None] | None = None
    if not silma.endpoint and any(silma.regions.values()):
        ctx.regions = RegionSelector(ctx.http, silma.regions, ssl_context=tls)
        await ctx.regions.measure()
        probing = asyncio.create_task(_reprobe(ctx.regions, silma.region_probe_interval_s))
    # Warm the default pool now, so the first call does not pay for connecting.
    await ctx.pools.pool_for(ctx.target_for({}))
    yield
    if probing is not None:
        probing.cancel()
    await ctx.pools.close()
    await ctx.http.close()


async def _reprobe(regions: RegionSelector, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await regions.measure()


async def _close_streams(app: web.Application) -> None:
    for ws in list(app[CONTEXT].sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


async def health(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response({"status": "ok", "live_calls": len(ctx.registry.live)})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[CONTEXT].registry.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _pools(ctx: BridgeContext) -> PoolRegistry:
    if ctx.pools is None:
        raise web.HTTPServiceUnavailable(text="TTS pools not started")
    return ctx.pools


async def pool_stats(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response({"pools": _pools(ctx).stats(),
                              "regions": ctx.regions.view() if ctx.regions else None})


async def pool_health_check(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    pool = await _pools(ctx).pool_for(ctx.target_for({}))
    return web.json_response(await pool.check_health())


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    ctx = BridgeContext(settings=settings, voice=voice_of(settings.silma),
                        registry=CallRegistry(BridgeMetrics(lambda: ctx.pool_stats())))
    app[CONTEXT] = ctx
    app.cleanup_ctx.append(_tts)
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/pool", pool_stats)
    app.router.add_post("/api/pool/health-check", pool_health_check)
    twilio_routes.add_routes(app)
    plivo_routes.add_routes(app)
    calls_routes.add_routes(app)
    return app
