"""A provider's media stream on a WebSocket, served by one CallSession: the shared part of the
Twilio and Plivo routes."""

from __future__ import annotations

import re

import structlog
from aiohttp import ClientConnectionResetError, web

from bridge.agent.base import Agent
from bridge.agent.remote import RemoteAgent
from bridge.agent.scripted import ScriptedAgent
from bridge.call.session import CallSession, CodecFactory, Parse, ProviderHangup
from bridge.store import DEFAULT_USER_ID
from bridge.web.context import BridgeContext, context
from bridge.web.direct_ws import DirectWebSocketResponse

MAX_PROVIDER_MESSAGE = 1024 * 1024
log = structlog.get_logger("bridge.web")
USER_ID = re.compile(r"[A-Za-z0-9]{1,64}")  # Plivo extra headers allow nothing else


async def _until_closed(ws: web.WebSocketResponse) -> None:
    """Runs aiohttp's handling of pings and the close handshake; data goes to on_message."""
    async for _ in ws:
        pass


def _agent(ctx: BridgeContext) -> Agent:
    agent = ctx.settings.agent
    if agent.kind == "remote" and ctx.http is not None:
        return RemoteAgent(ctx.http, agent.remote_url,
                           connect_timeout_s=agent.remote_connect_timeout_s)
    return ScriptedAgent(agent.greeting, agent.dtmf)


def user_of(request: web.Request) -> str:
    """The user a webhook or stream path names; the default user when it names none."""
    user_id = request.match_info.get("user_id", DEFAULT_USER_ID)
    if not USER_ID.fullmatch(user_id):
        raise web.HTTPNotFound(text="no such user")
    return user_id


async def serve_stream(request: web.Request, *, provider: str, parse: Parse,
                       codec_for: CodecFactory, hangup: ProviderHangup | None
                       ) -> web.WebSocketResponse:
    """Accept the upgrade (signature already checked) and run the call until the stream ends."""
    ctx = context(request)
    ws = DirectWebSocketResponse(compress=False, max_msg_size=MAX_PROVIDER_MESSAGE)
    session = CallSession(
        provider=provider, parse=parse, codec_for=codec_for,
        send=ws.send_str, close=ws.close, open_tts=ctx.tts_for_call, agent=_agent(ctx),
        settings=ctx.settings.call, hooks=ctx.registry,
        provider_hangup=hangup,
    )
    ws.on_message = session.receive
    try:
        await ws.prepare(request)
    except (ConnectionError, ClientConnectionResetError):
        log.info("stream_gone_before_upgrade", provider=provider)  # the provider hung up first
        return ws
    ctx.sockets.add(ws)
    await session.run(_until_closed(ws))
    if not ws.closed:
        await ws.close()
    return ws
