"""Plivo: the answer URL (Plivo XML) and the bidirectional audio stream."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from bridge.telephony import plivo
from bridge.telephony.events import OutboundCodec, StreamStarted
from bridge.telephony.urls import public_request_url, stream_url
from bridge.web.context import BridgeContext, context
from bridge.web.streams import serve_stream
from bridge.web.twilio_routes import DEFAULT_USER

log = structlog.get_logger("bridge.web")


def _signed(ctx: BridgeContext, request: web.Request, params: dict[str, str]) -> bool:
    token = ctx.settings.plivo.auth_token
    if not token:
        return True
    # Plivo signs the URL it requested; behind a proxy that is the public URL, not ours.
    url = public_request_url(ctx.settings.public_url, request.path_qs)
    return plivo.validate_signature(
        token, request.method, url, request.headers.get(plivo.NONCE_HEADER),
        request.headers.get(plivo.SIGNATURE_HEADER), params)


async def answer(request: web.Request) -> web.Response:
    ctx = context(request)
    params = ({k: str(v) for k, v in (await request.post()).items()}
              if request.method == "POST" else {})
    if not _signed(ctx, request, params):
        log.warning("plivo_signature_rejected", path=request.path)
        raise web.HTTPForbidden(text="invalid Plivo signature")
    call_uuid = params.get("CallUUID") or request.query.get("CallUUID", "")
    if call_uuid:
        ctx.registry.webhook_answered(call_uuid, time.monotonic_ns())
    user_id = request.match_info.get("user_id", DEFAULT_USER)
    xml = plivo.build_answer_xml(stream_url(ctx.settings.public_url, "/plivo/stream"),
                                 {"userid": user_id})
    return web.Response(text=xml, content_type="application/xml")


def _codec(start: StreamStarted) -> OutboundCodec:
    return plivo.PlivoCodec(start.stream_id)


async def media_stream(request: web.Request) -> web.WebSocketResponse:
    ctx = context(request)
    # How Plivo signs the upgrade is undocumented: enforced only when configured.
    if ctx.settings.plivo.validate_websocket and not _signed(ctx, request, {}):
        log.warning("plivo_signature_rejected", path=request.path)
        raise web.HTTPForbidden(text="invalid Plivo signature")
    return await serve_stream(request, provider="plivo", parse=plivo.parse_message,
                              codec_for=_codec)


def add_routes(app: web.Application) -> None:
    for path in ("/plivo/answer", "/plivo/answer/{user_id}"):
        app.router.add_get(path, answer)
        app.router.add_post(path, answer)
    app.router.add_get("/plivo/stream", media_stream)
