"""Plivo: the answer URL (Plivo XML) and the bidirectional audio stream, per user."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from bridge.settings import PlivoSettings
from bridge.telephony import plivo
from bridge.telephony.events import OutboundCodec, StreamStarted
from bridge.telephony.urls import public_request_url
from bridge.web.admission import refusal
from bridge.web.context import context
from bridge.web.provider_hangup import hangup_for
from bridge.web.streams import admit, answer_stream_url, serve_stream, user_of

log = structlog.get_logger("bridge.web")


def _signed(plivo_settings: PlivoSettings, request: web.Request, public_url: str,
            params: dict[str, str]) -> bool:
    token = plivo_settings.auth_token
    if not token:  # nothing can check it: only for local trials, when asked for
        return context(request).settings.allow_unsigned_webhooks
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
    call_uuid = params.get("CallUUID") or request.query.get("CallUUID", "")
    if await refusal(ctx, "plivo", user_id, call_uuid) is not None:
        return web.Response(text=plivo.build_busy_xml(ctx.settings.admission.busy_message),
                            content_type="application/xml")
    # The user and a single-use token bound to this call ride in the stream's path.
    url = answer_stream_url(request, "plivo", user_id, call_uuid)
    ctx.registry.webhook_answered(call_uuid, time.monotonic_ns())
    return web.Response(text=plivo.build_answer_xml(url, {}), content_type="application/xml")


def _codec(start: StreamStarted) -> OutboundCodec:
    return plivo.PlivoCodec(start.stream_id)


async def media_stream(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    twilio_settings, plivo_settings = await ctx.telephony_for_user(user_of(request))
    # How Plivo signs the upgrade is undocumented: checked only when configured. The stream
    # token (issued by the signed answer webhook) is checked always.
    if plivo_settings.validate_websocket and not _signed(plivo_settings, request,
                                                         ctx.settings.public_url, {}):
        log.warning("plivo_signature_rejected", path=request.path)
        raise web.HTTPForbidden(text="invalid Plivo signature")
    claims = admit(request, "plivo")
    return await serve_stream(request, claims, provider="plivo", parse=plivo.parse_message,
                              codec_for=_codec,
                              hangup=hangup_for("plivo", twilio_settings, plivo_settings))
