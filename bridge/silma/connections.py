"""Either kind of pooled TTS connection, and opening the one an endpoint's API speaks."""

from __future__ import annotations

import ssl

import aiohttp

from bridge.silma.connection import ReplyCounters, SilmaConnection
from bridge.silma.endpoint import V2, Endpoint
from bridge.silma.v2_connection import V2Connection

TTSConnection = SilmaConnection | V2Connection


async def open_connection(session: aiohttp.ClientSession, endpoint: Endpoint, *, api_key: str,
                          timeout_s: float, heartbeat_s: float | None = None,
                          ssl: ssl.SSLContext | bool = True,
                          counters: ReplyCounters | None = None) -> TTSConnection:
    """A connection to `endpoint` in its API; raises TTSUnavailable (TTSRefused) like both."""
    opener = V2Connection.open if endpoint.api == V2 else SilmaConnection.open
    return await opener(session, endpoint, api_key=api_key, timeout_s=timeout_s,
                        heartbeat_s=heartbeat_s, ssl=ssl, counters=counters)
