"""Twilio: the voice webhook (TwiML) and the bidirectional media stream, per user."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from bridge.settings import TwilioSettings
from bridge.telephony import twilio
from bridge.telephony.events import OutboundCodec, StreamStarted
from bridge.telephony.urls import public_request_url, stream_url, websocket_request_url
from bridge.web.context import USER_PARAMETER, context
from bridge.web.provider_hangup import hangup_for
from bridge.web.streams import serve_stream, user_of

log = structlog.get_logger("bridge.web")
SIGNATURE_HEADER = "X-Twilio-Signature"


def _signed(twilio_settings: TwilioSettings, url: str, params: dict[str, str],
            request: web.Request) -> bool:
    token = twilio_settings.auth_token
    return not token or twilio.validate_signature(token, url, params,
                                                  request.headers.get(SIGNATURE_HEADER))


async def voice_webhook(request: web.Request) -> web.Response:
    ctx = context(request)
    user_id = user_of(request)
    twilio_settings, _ = await ctx.telephony_for_user(user_id)
    form = {k: str(v) for k, v in (await request.post()).items()}
    url = public_request_url(ctx.settings.public_url, request.path_qs)
    if not _signed(twilio_settings, url, form, request):
        log.warning("twilio_signature_rejected", path=request.path)
        raise web.HTTPForbidden(text="invalid Twilio signature")
    if call_sid := form.get("CallSid", ""):
        ctx.registry.webhook_answered(call_sid, time.monotonic_ns())
    # The user rides in the stream's path (its upgrade is signed with their token) and in a
    # Parameter; never in a query string, which Twilio drops.
    twiml = twilio.build_twiml(
        stream_url(ctx.settings.public_url, f"/twilio/stream/{user_id}"),
        {USER_PARAMETER: user_id})
    return web.Response(text=twiml, content_type="application/xml")


def _codec(start: StreamStarted) -> OutboundCodec:
    return twilio.TwilioCodec(start.stream_id)


async def media_stream(request: web.Request) -> web.WebSocketResponse:
    ctx = context(request)
    user_id = user_of(request)
    twilio_settings, plivo_settings = await ctx.telephony_for_user(user_id)
    url = websocket_request_url(ctx.settings.public_url, request.path_qs)
    if not _signed(twilio_settings, url, {}, request):
        log.warning("twilio_signature_rejected", path=request.path)
        raise web.HTTPForbidden(text="invalid Twilio signature")
    return await serve_stream(request, provider="twilio", parse=twilio.parse_message,
                              codec_for=_codec,
                              hangup=hangup_for("twilio", twilio_settings, plivo_settings))


def add_routes(app: web.Application) -> None:
    for suffix in ("", "/{user_id}"):
        app.router.add_post(f"/twilio/voice{suffix}", voice_webhook)
        app.router.add_get(f"/twilio/stream{suffix}", media_stream)
