"""Plivo: the answer URL (Plivo XML) and the bidirectional audio stream, per user."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from bridge.settings import PlivoSettings
from bridge.telephony import plivo
from bridge.telephony.events import OutboundCodec, StreamStarted
from bridge.telephony.urls import public_request_url, stream_url
from bridge.web.context import USER_PARAMETER, context
from bridge.web.provider_hangup import hangup_for
from bridge.web.streams import serve_stream, user_of

log = structlog.get_logger("bridge.web")


def _signed(plivo_settings: PlivoSettings, request: web.Request, public_url: str,
            params: dict[str, str]) -> bool:
    token = plivo_settings.auth_token
    if not token:
        return True
    # Plivo signs the URL it requested; behind a proxy that is the public URL, not ours.
    url = public_request_url(public_url, request.path_qs)
    return plivo.validate_signature(
        token, request.method, url, request.headers.get(plivo.NONCE_HEADER),
        request.headers.get(plivo.SIGNATURE_HEADER), params)


async def answer(request: web.Request) -> web.Response:
    ctx = context(request)
    user_id = user_of(request)
    _, plivo_settings = await ctx.telephony_for_user(user_id)
    params = ({k: str(v) for k, v in (await request.post()).items()}
              if request.method == "POST" else {})
    if not _signed(plivo_settings, request, ctx.settings.public_url, params):
        log.warning("plivo_signature_rejected", path=request.path)
        raise web.HTTPForbidden(text="invalid Plivo signature")
    if call_uuid := params.get("CallUUID") or request.query.get("CallUUID", ""):
        ctx.registry.webhook_answered(call_uuid, time.monotonic_ns())
    xml = plivo.build_answer_xml(
        stream_url(ctx.settings.public_url, f"/plivo/stream/{user_id}"),
        {USER_PARAMETER: user_id})
    return web.Response(text=xml, content_type="application/xml")


def _codec(start: StreamStarted) -> OutboundCodec:
    return plivo.PlivoCodec(start.stream_id)


async def media_stream(request: web.Request) -> web.WebSocketResponse:
    ctx = context(request)
    twilio_settings, plivo_settings = await ctx.telephony_for_user(user_of(request))
    # How Plivo signs the upgrade is undocumented: enforced only when configured.
    if plivo_settings.validate_websocket and not _signed(plivo_settings, request,
                                                         ctx.settings.public_url, {}):
        log.warning("plivo_signature_rejected", path=request.path)
        raise web.HTTPForbidden(text="invalid Plivo signature")
    return await serve_stream(request, provider="plivo", parse=plivo.parse_message,
                              codec_for=_codec,
                              hangup=hangup_for("plivo", twilio_settings, plivo_settings))


def add_routes(app: web.Application) -> None:
    for suffix in ("", "/{user_id}"):
        app.router.add_get(f"/plivo/answer{suffix}", answer)
        app.router.add_post(f"/plivo/answer{suffix}", answer)
        app.router.add_get(f"/plivo/stream{suffix}", media_stream)
