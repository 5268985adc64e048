"""Twilio: the voice webhook (TwiML) and the bidirectional media stream."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from bridge.telephony import twilio
from bridge.telephony.events import OutboundCodec, StreamStarted
from bridge.telephony.urls import public_request_url, stream_url, websocket_request_url
from bridge.web.context import BridgeContext, context
from bridge.web.streams import serve_stream

log = structlog.get_logger("bridge.web")
SIGNATURE_HEADER = "X-Twilio-Signature"
DEFAULT_USER = "default"


async def voice_webhook(request: web.Request) -> web.Response:
    ctx = context(request)
    form = {k: str(v) for k, v in (await request.post()).items()}
    token = ctx.settings.twilio.auth_token
    if token and not twilio.validate_signature(
        token, public_request_url(ctx.settings.public_url, request.path_qs), form,
        request.headers.get(SIGNATURE_HEADER),
    ):
        log.warning("twilio_signature_rejected", path=request.path)
        raise web.HTTPForbidden(text="invalid Twilio signature")
    call_sid = form.get("CallSid", "")
    if call_sid:
        ctx.registry.webhook_answered(call_sid, time.monotonic_ns())
    parameters = {"user_id": request.match_info.get("user_id", DEFAULT_USER)}
    twiml = twilio.build_twiml(stream_url(ctx.settings.public_url, "/twilio/stream"), parameters)
    return web.Response(text=twiml, content_type="application/xml")


def _signed_upgrade(ctx: BridgeContext, request: web.Request) -> bool:
    token = ctx.settings.twilio.auth_token
    if not token:
        return True
    url = websocket_request_url(ctx.settings.public_url, request.path_qs)
    return twilio.validate_signature(token, url, {}, request.headers.get(SIGNATURE_HEADER))


def _codec(start: StreamStarted) -> OutboundCodec:
    return twilio.TwilioCodec(start.stream_id)


async def media_stream(request: web.Request) -> web.WebSocketResponse:
    if not _signed_upgrade(context(request), request):
        log.warning("twilio_signature_rejected", path=request.path)
        raise web.HTTPForbidden(text="invalid Twilio signature")
    return await serve_stream(request, provider="twilio", parse=twilio.parse_message,
                              codec_for=_codec)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/twilio/voice", voice_webhook)
    app.router.add_post("/twilio/voice/{user_id}", voice_webhook)
    app.router.add_get("/twilio/stream", media_stream)
