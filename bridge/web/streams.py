"""A provider's media stream on a WebSocket, served by one CallSession: the shared part of the
Twilio and Plivo routes, including the stream token that admits it (bridge/web/stream_tokens.py).

A call belongs to the user of the signed webhook and stream path it came in on: that user's TTS
target speaks it and only that user (or an operator) sees and controls it. Nothing the stream
itself says (customParameters, extra headers) chooses the user.
"""

from __future__ import annotations

import functools
import re
import time

import structlog
from aiohttp import web

from bridge.call.session import CallSession, CodecFactory, Parse, ProviderHangup
from bridge.store import DEFAULT_USER_ID
from bridge.telephony.jsonfields import is_identifier
from bridge.telephony.urls import stream_url
from bridge.web.context import context
from bridge.web.media_socket import HandshakeRefused, MediaSocket
from bridge.web.stream_tokens import StreamClaims, StreamTokenError, token_fingerprint

MAX_PROVIDER_MESSAGE = 1024 * 1024
log = structlog.get_logger("bridge.web")
USER_ID = re.compile(r"[A-Za-z0-9]{1,64}")  # Plivo extra headers allow nothing else


def user_of(request: web.Request) -> str:
    """The user a webhook or stream path names; the default user when it names none."""
    user_id = request.match_info.get("user_id", DEFAULT_USER_ID)
    if not USER_ID.fullmatch(user_id):
        raise web.HTTPNotFound(text="no such user")
    return user_id


def answer_stream_url(request: web.Request, provider: str, user_id: str, call_id: str) -> str:
    """The stream URL a signed answer webhook hands the carrier: it carries a fresh single-use
    token bound to this call and user."""
    # The rule the stream's start message is held to: a token for any other id admits nothing.
    if not is_identifier(call_id):
        raise web.HTTPBadRequest(text="the webhook carries no valid call id")
    ctx = context(request)
    token = ctx.stream_tokens.issue(user_id, call_id, time.time())
    return stream_url(ctx.settings.public_url, f"/{provider}/stream/{user_id}/{token}")


def admit(request: web.Request, provider: str) -> StreamClaims:
    """The stream token's claims, spent now; 403 before the upgrade is accepted otherwise."""
    user_id, token = user_of(request), request.match_info.get("token", "")
    try:
        return context(request).stream_tokens.use(token, user_id, time.time())
    except StreamTokenError as exc:
        context(request).registry.metrics.refuse("stream_token")
        log.warning("stream_refused", provider=provider, reason=str(exc), user_id=user_id,
                    token=token_fingerprint(token))
        raise web.HTTPForbidden(text=f"{exc}: open the stream from the answer webhook's URL")\
            from None


async def tokenless_stream(request: web.Request) -> web.StreamResponse:
    """The old stream paths: a stream with no token is never accepted."""
    raise web.HTTPForbidden(text="a media stream needs the token of its answer webhook: point "
                                 "the carrier at the voice webhook, not at the stream")


async def serve_stream(request: web.Request, claims: StreamClaims, *, provider: str,
                       parse: Parse, codec_for: CodecFactory, hangup: ProviderHangup | None
                       ) -> web.StreamResponse:
    """Accept the upgrade (token and signature already checked) and run the call until the
    stream ends. The socket leaves aiohttp at the 101 (bridge/web/media_socket.py)."""
    ctx = context(request)
    socket = MediaSocket(lambda _: None, max_size=MAX_PROVIDER_MESSAGE,  # the session's, below
                         inactivity_timeout_s=ctx.settings.call.inactivity_timeout_s,
                         coalescing=ctx.read_coalescing)
    session = CallSession(
        provider=provider, parse=parse, codec_for=codec_for,
        send=socket.send, close=socket.close, open_tts=ctx.tts_opener(claims.user_id),
        agent=ctx.services.agents(), settings=ctx.settings.call, hooks=ctx.registry,
        provider_hangup=hangup, owner=claims.user_id, expected_call_id=claims.call_id,
        # The owner's own overrides, like their TTS target: never a stream field's user's.
        load_lexicon=functools.partial(ctx.services.lexicons.for_user, claims.user_id),
        stt=ctx.services.stt, barge_in_words=ctx.services.barge_in_words,
    )
    socket.on_message, socket.on_inactive = session.receive, session.inactive
    try:
        socket.accept(request)
    except HandshakeRefused as refused:
        return refused.response
    except ConnectionError:
        log.info("stream_gone_before_upgrade", provider=provider)  # the provider hung up first
        return web.StreamResponse(status=101)
    ctx.sockets.add(socket)
    await session.run(socket.wait_closed())
    await socket.close()
    # The connection is gone by now: aiohttp fails to write this, as for any client gone, and
    # logs the request with the status it had.
    return web.StreamResponse(status=101)
