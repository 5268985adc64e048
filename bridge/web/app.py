"""The bridge's aiohttp application on services already open: its routes and who may call
each, the ops endpoints, and the context its handlers share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.call.admission_core import Admission
from bridge.call.registry import CallRegistry
from bridge.errors import ConfigError
from bridge.settings import Settings
from bridge.store import DEFAULT_USER_ID
from bridge.tracing.metrics import BridgeMetrics
from bridge.tracing.targets import monitoring_targets
from bridge.tracing.trace import CallTrace
from bridge.web import (
    auth,
    calls_routes,
    dashboard_routes,
    drain,
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
from bridge.web.disconnects import client_gone
from bridge.web.drain_core import CLOSE_S, Drain
from bridge.web.forwarded import Network, parse_networks
from bridge.web.read_coalescing import ReadCoalescing
from bridge.web.services import Services
from bridge.web.stream_tokens import StreamTokens


async def _close_streams(app: web.Application) -> None:
    await drain.close_streams(app[CONTEXT], CLOSE_S)  # what the drain left, if it ran


async def health(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response({"status": "ok", "live_calls": len(ctx.registry.live)})


async def api_health(request: web.Request) -> web.Response:
    """Liveness plus the specification's monitoring targets against live values."""
    ctx = request.app[CONTEXT]
    targets = monitoring_targets(ctx.registry.metrics, ctx.services.pools.stats(),
                                 ctx.settings.pool.max_age_s)
    return web.json_response({
        "status": "ok" if all(t["ok"] is not False for t in targets) else "degraded",
        "live_calls": len(ctx.registry.live),
        "targets": targets,
    })


async def metrics(request: web.Request) -> web.Response:
    body = request.app[CONTEXT].registry.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def pool_stats(request: web.Request) -> web.Response:
    services = request.app[CONTEXT].services
    return web.json_response({"pools": services.pools.stats(),
                              "regions": services.regions.view()})


async def pool_health_check(request: web.Request) -> web.Response:
    services = request.app[CONTEXT].services
    pool = await services.pools.pool_for(await services.targets.for_user(DEFAULT_USER_ID))
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
    ("GET", "/", dashboard_routes.home, PAGE),  # the calls page, or the login page first
    ("GET", "/health", health, PUBLIC),
    ("GET", "/api/ready", drain.readiness, PUBLIC),
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
    ("GET", f"{_USER_API}/pronunciation", settings_routes.get_pronunciation, OWNER),
    ("PUT", f"{_USER_API}/pronunciation", settings_routes.put_pronunciation, OWNER),
    ("POST", f"{_USER_API}/preview", settings_routes.preview, OWNER),
    *OPS_ROUTES,
)


def _add_routes(app: web.Application, routes: Iterable[tuple[str, str, Handler, Principal]]
                ) -> None:
    for method, path, handler, who in routes:
        add(app, method, path, handler, who)
    check_declared(app)


@dataclasses.dataclass(frozen=True)
class AppConfig:
    """What the app takes from settings beyond the services, checked before anything opens:
    a bad value fails the start before the store or a TTS child is touched."""

    trusted_proxies: tuple[Network, ...]
    on_call_ended: Callable[[CallTrace], None] | None

    @classmethod
    def check(cls, settings: Settings) -> AppConfig:
        try:
            trusted_proxies = parse_networks(settings.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"BRIDGE_TRUSTED_PROXIES: {exc}") from None
        return cls(trusted_proxies, _span_exporter(settings))


def create_app(services: Services, config: AppConfig | None = None) -> web.Application:
    """The bridge's app on `services` (open_services), which outlive it: they close after it.
    `config` is AppConfig.check(services.settings) unless the caller checked it earlier."""
    settings = services.settings
    config = config or AppConfig.check(settings)
    app = web.Application(middlewares=[client_gone, enforce])
    admission = Admission(max_calls=settings.admission.max_calls,
                          first_words_s=settings.admission.first_words_s)
    app[CONTEXT] = BridgeContext(
        services=services, stream_tokens=StreamTokens.for_secret(settings.secret_key),
        admission=admission,
        drain=Drain(deadline_s=settings.call.drain_deadline_s,
                    goodbye_s=settings.call.mark_timeout_s),
        read_coalescing=ReadCoalescing(settings.call.coalesce_reads),
        registry=CallRegistry(BridgeMetrics(services.pools.stats),
                              on_call_ended=config.on_call_ended,
                              on_call_started=admission.started, fleet=services.fleet))
    if services.fleet is not None:
        services.fleet.waiting_now = app[CONTEXT].registry.waiting_for_audio
    auth.install(app, config.trusted_proxies)
    app.on_shutdown.append(_close_streams)
    add_static(app, "/static", STATIC_DIR)
    _add_routes(app, ROUTES)
    return app


def create_ops_app(ctx: BridgeContext) -> web.Application:
    """The ops endpoints alone, without a credential, for the ops listener (BRIDGE_OPS_PORT):
    the same handlers on the same context as the main app."""
    app = web.Application(middlewares=[client_gone, enforce])
    app[CONTEXT] = ctx
    app[OPS_LISTENER] = True
    _add_routes(app, OPS_ROUTES)
    return app
