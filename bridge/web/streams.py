"""A provider's media stream on a WebSocket, served by one CallSession: the shared part of the
Twilio and Plivo routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

from bridge.agent.base import Agent
from bridge.agent.remote import RemoteAgent
from bridge.agent.scripted import ScriptedAgent
from bridge.call.session import CallSession, CodecFactory, Parse
from bridge.web.context import BridgeContext, context
from bridge.web.provider_hangup import hangup_for

MAX_PROVIDER_MESSAGE = 1024 * 1024


async def _texts(ws: web.WebSocketResponse) -> AsyncIterator[str | bytes]:
    async for msg in ws:
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            yield msg.data


def _agent(ctx: BridgeContext) -> Agent:
    agent = ctx.settings.agent
    if agent.kind == "remote" and ctx.http is not None:
        return RemoteAgent(ctx.http, agent.remote_url,
                           connect_timeout_s=agent.remote_connect_timeout_s)
    return ScriptedAgent(agent.greeting, agent.dtmf)


async def serve_stream(request: web.Request, *, provider: str, parse: Parse,
                       codec_for: CodecFactory) -> web.WebSocketResponse:
    """Accept the upgrade (signature already checked) and run the call until the stream ends."""
    ctx = context(request)
    ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_PROVIDER_MESSAGE)
    await ws.prepare(request)
    ctx.sockets.add(ws)
    settings = ctx.settings
    session = CallSession(
        provider=provider, parse=parse, codec_for=codec_for,
        send=ws.send_str, close=ws.close, open_tts=ctx.tts_for_call, agent=_agent(ctx),
        settings=settings.call, hooks=ctx.registry,
        provider_hangup=hangup_for(provider, settings.twilio, settings.plivo),
    )
    await session.run(_texts(ws))
    if not ws.closed:
        await ws.close()
    return ws
