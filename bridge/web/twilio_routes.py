"""Twilio: the voice webhook (TwiML) and the bidirectional media stream, per user."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from bridge.settings import TwilioSettings
from bridge.telephony import twilio
from bridge.telephony.events import OutboundCodec, StreamStarted
from bridge.telephony.urls import public_request_url, websocket_request_url
from bridge.web.admission import refusal
from bridge.web.context import context
from bridge.web.provider_hangup import hangup_for
from bridge.web.streams import admit, answer_stream_url, serve_stream, user_of

log = structlog.get_logger("bridge.web")
SIGNATURE_HEADER = "X-Twilio-Signature"


def _signed(twilio_settings: TwilioSettings, url: str, params: dict[str, str],
            request: web.Request) -> bool:
    """Signed with the user's (else the bridge's) Twilio token; with no token set, only when
    BRIDGE_ALLOW_UNSIGNED_WEBHOOKS says so (local trials)."""
    token = twilio_settings.auth_token
    if not token:
        return context(request).settings.allow_unsigned_webhooks
    return twilio.validate_signature(token, url, params, request.headers.get(SIGNATURE_HEADER))


async def voice_webhook(request: web.Request) -> web.Response:
    ctx = context(request)
    user_id = user_of(request)
    twilio_settings, _ = await ctx.telephony_for_user(user_id)
    form = {k: str(v) for k, v in (await request.post()).items()}
    url = public_request_url(ctx.settings.public_url, request.path_qs)
    if not _signed(twilio_settings, url, form, request):
        log.warning("twilio_signature_rejected", path=request.path)
        raise web.HTTPForbidden(text="invalid Twilio signature")
    call_sid = form.get("CallSid", "")
    if await refusal(ctx, "twilio", user_id, call_sid) is not None:
        return web.Response(text=twilio.build_busy_twiml(ctx.settings.admission.busy_message),
                            content_type="application/xml")
    # The user and a single-use token bound to this call ride in the stream's path (Twilio
    # drops query strings); the upgrade is signed with the user's Twilio token as well.
    url = answer_stream_url(request, "twilio", user_id, call_sid)
    ctx.registry.webhook_answered(call_sid, time.monotonic_ns())
    return web.Response(text=twilio.build_twiml(url, {}), content_type="application/xml")


def _codec(start: StreamStarted) -> OutboundCodec:
    return twilio.TwilioCodec(start.stream_id)


async def media_stream(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    twilio_settings, plivo_settings = await ctx.telephony_for_user(user_of(request))
    url = websocket_request_url(ctx.settings.public_url, request.path_qs)
    if not _signed(twilio_settings, url, {}, request):
        log.warning("twilio_signature_rejected", path=request.path)
        raise web.HTTPForbidden(text="invalid Twilio signature")
    claims = admit(request, "twilio")  # spent only once the signature has passed
    return await serve_stream(request, claims, provider="twilio", parse=twilio.parse_message,
                              codec_for=_codec,
                              hangup=hangup_for("twilio", twilio_settings, plivo_settings))
