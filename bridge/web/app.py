"""The bridge's aiohttp application: routes, and the shared TTS client's lifetime."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import aiohttp
import structlog
from aiohttp import WSCloseCode, web
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.call.registry import CallRegistry
from bridge.errors import BridgeError, ConfigError
from bridge.settings import Settings, SilmaSettings
from bridge.silma import protocol as p
from bridge.silma.pools import PoolRegistry
from bridge.silma.regions import AUTO, REGIONS, RegionSelector
from bridge.store import DEFAULT_USER_ID, Store
from bridge.tracing.metrics import BridgeMetrics
from bridge.tracing.targets import monitoring_targets
from bridge.tracing.trace import CallTrace
from bridge.web import (
    auth,
    calls_routes,
    plivo_routes,
    settings_routes,
    streams,
    twilio_routes,
)
from bridge.web.access import (
    OPS_LISTENER,
    Handler,
    Principal,
    add,
    add_static,
    check_declared,
    enforce,
)
from bridge.web.context import CONTEXT, BridgeContext
from bridge.web.forwarded import parse_networks
from bridge.web.stream_tokens import StreamTokens
from bridge.web.url_guard import guarded_session

POOL_SWEEP_S = 60.0
log = structlog.get_logger("bridge.web")


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


async def _services(app: web.Application) -> AsyncIterator[None]:
    """The store, the shared HTTP session, the TTS pools and region probing, for the app's
    lifetime."""
    ctx = app[CONTEXT]
    settings = ctx.settings
    silma = settings.silma
    unknown = set(silma.regions) - set(REGIONS)
    if unknown or (silma.region not in (AUTO, *REGIONS)):
        raise ConfigError(f"unknown SILMA region(s): {sorted(unknown) or silma.region}; "
                          f"known: {', '.join(REGIONS)}")
    ctx.store = await Store.open(settings.database_url, settings.secret_key,
                                 default_user_token=settings.default_user_token)
    tls = ssl.create_default_context(cafile=silma.ca_file) if silma.ca_file else True
    ctx.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls, limit=0))
    ctx.guarded_http = guarded_session(allow_private=silma.allow_private_endpoints, ssl=tls)
    ctx.pools = PoolRegistry(ctx.http, settings.pool,
                             connect_timeout_s=silma.connect_timeout_s,
                             request_timeout_s=silma.request_timeout_s,
                             want_ulaw=silma.request_ulaw, ssl_context=tls,
                             guarded_session=ctx.guarded_http)
    background: list[asyncio.Task[None]] = []
    if not silma.endpoint and any(silma.regions.values()):
        ctx.regions = RegionSelector(ctx.http, silma.regions, ssl_context=tls)
        await ctx.regions.measure()
        background.append(asyncio.create_task(
            _every(silma.region_probe_interval_s, ctx.regions.measure)))
    background.append(asyncio.create_task(_every(POOL_SWEEP_S, ctx.retire_unused_pools)))
    # Warm the default user's pool now, so the first call does not pay for connecting.
    await ctx.pools.pool_for(await ctx.target_for_user(DEFAULT_USER_ID))
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        await ctx.pools.close()
        await ctx.http.close()
        await ctx.guarded_http.close()
        if ctx.local_tts is not None:
            await ctx.local_tts.stop()
        await ctx.store.close()


async def _every(interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except BridgeError as exc:  # a failed sweep or probe is retried at the next interval
            log.warning("background_job_failed", job=getattr(job, "__name__", "?"),
                        error=str(exc))


async def _close_streams(app: web.Application) -> None:
    for ws in list(app[CONTEXT].sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


async def health(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response({"status": "ok", "live_calls": len(ctx.registry.live)})


async def api_health(request: web.Request) -> web.Response:
    """Liveness plus the specification's monitoring targets against live values."""
    ctx = request.app[CONTEXT]
    targets = monitoring_targets(ctx.registry.metrics, ctx.pool_stats(),
                                 ctx.settings.pool.max_age_s)
    return web.json_response({
        "status": "ok" if all(t["ok"] is not False for t in targets) else "degraded",
        "live_calls": len(ctx.registry.live),
        "targets": targets,
    })


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
    pool = await _pools(ctx).pool_for(await ctx.target_for_user(DEFAULT_USER_ID))
    return web.json_response(await pool.check_health())


# The operator's endpoints: every tenant's pools and endpoints, health bodies, metrics.
OPS_ROUTES: tuple[tuple[str, str, Handler, Principal], ...] = (
    ("GET", "/metrics", metrics, Principal.OPERATOR),
    ("GET", "/api/health", api_health, Principal.OPERATOR),
    ("GET", "/api/pool", pool_stats, Principal.OPERATOR),
    ("POST", "/api/pool/health-check", pool_health_check, Principal.OPERATOR),
)


def _span_exporter(settings: Settings) -> Callable[[CallTrace], None] | None:
    """OpenTelemetry spans per call and utterance, only when an OTLP endpoint is set."""
    if not settings.otlp_endpoint:
        return None
    try:
        from bridge.tracing.otel import CallSpanExporter
    except ImportError:
        raise ConfigError("BRIDGE_OTLP_ENDPOINT needs the [otel] extra: "
                          "pip install 'silma-bridge[otel]'") from None
    return CallSpanExporter.for_endpoint(settings.otlp_endpoint).export


STATIC_DIR = Path(__file__).resolve().parent / "static"
PUBLIC, CARRIER, USER, PAGE, OWNER = (Principal.PUBLIC, Principal.CARRIER, Principal.USER,
                                      Principal.PAGE, Principal.OWNER)
_USER_API = "/api/users/{user_id}"

# Every route of the bridge and who may call it (bridge/web/access.py enforces it).
ROUTES: tuple[tuple[str, str, Handler, Principal], ...] = (
    ("GET", "/health", health, PUBLIC),
    ("GET", "/login", auth.login_form, PUBLIC),
    ("POST", "/login", auth.login, PUBLIC),
    ("POST", "/logout", auth.logout, USER),
    *((method, f"/twilio/voice{suffix}", twilio_routes.voice_webhook, CARRIER)
      for method in ("POST",) for suffix in ("", "/{user_id}")),
    ("GET", "/twilio/stream/{user_id}/{token}", twilio_routes.media_stream, CARRIER),
    *((method, f"/plivo/answer{suffix}", plivo_routes.answer, CARRIER)
      for method in ("GET", "POST") for suffix in ("", "/{user_id}")),
    ("GET", "/plivo/stream/{user_id}/{token}", plivo_routes.media_stream, CARRIER),
    # The stream paths before tokens: refused with a reason (a stream needs its token).
    *(("GET", f"/{provider}/stream{suffix}", streams.tokenless_stream, CARRIER)
      for provider in ("twilio", "plivo") for suffix in ("", "/{user_id}")),
    ("GET", "/calls", calls_routes.list_calls, USER),
    ("POST", "/calls/{call_id}/say", calls_routes.say, USER),
    ("GET", "/calls/{call_id}/trace", calls_routes.trace, USER),
    ("POST", "/calls/{call_id}/hangup", calls_routes.hangup, USER),
    ("GET", "/settings", settings_routes.settings_page, PAGE),
    ("GET", f"{_USER_API}/silma", settings_routes.get_silma, OWNER),
    ("PUT", f"{_USER_API}/silma", settings_routes.put_silma, OWNER),
    ("GET", f"{_USER_API}/pool", settings_routes.get_pool, OWNER),
    ("POST", f"{_USER_API}/health-check", settings_routes.health_check, OWNER),
    ("PUT", f"{_USER_API}/voice", settings_routes.put_voice, OWNER),
    ("POST", f"{_USER_API}/preview", settings_routes.preview, OWNER),
    *OPS_ROUTES,
)


def _add_routes(app: web.Application, routes: Iterable[tuple[str, str, Handler, Principal]]
                ) -> None:
    for method, path, handler, who in routes:
        add(app, method, path, handler, who)
    check_declared(app)


def create_app(settings: Settings) -> web.Application:
    try:
        trusted_proxies = parse_networks(settings.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"BRIDGE_TRUSTED_PROXIES: {exc}") from None
    app = web.Application(middlewares=[enforce])
    ctx = BridgeContext(settings=settings, voice=voice_of(settings.silma),
                        stream_tokens=StreamTokens.for_secret(settings.secret_key),
                        registry=CallRegistry(BridgeMetrics(lambda: ctx.pool_stats()),
                                              on_call_ended=_span_exporter(settings)))
    app[CONTEXT] = ctx
    auth.install(app, trusted_proxies)
    app.cleanup_ctx.append(_services)
    app.on_shutdown.append(_close_streams)
    add_static(app, "/static", STATIC_DIR)
    _add_routes(app, ROUTES)
    return app


def create_ops_app(ctx: BridgeContext) -> web.Application:
    """The ops endpoints alone, without a credential, for the ops listener (BRIDGE_OPS_PORT):
    the same handlers on the same context as the main app, which owns the services."""
    app = web.Application(middlewares=[enforce])
    app[CONTEXT] = ctx
    app[OPS_LISTENER] = True
    _add_routes(app, OPS_ROUTES)
    return app
