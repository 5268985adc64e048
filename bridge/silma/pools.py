"""One warm pool per TTS endpoint and credential, shared by every call that uses that pair.

Calls ask for a client by (endpoint, api key); the first ask starts the pool. An endpoint that
lists several servers gets a Fleet: a warm pool per server, requests spread over them (a single
server is a fleet of one). A pool no call uses any more (its user moved to another endpoint, or
the region changed) drains and closes.

A target a tenant chose (`user_chosen`) is untrusted: its pool and client use the guarded
session (bridge.web.url_guard.guarded_session: the SSRF guard on every connection, redirects
refused) for the WebSocket, the health check and the HTTP fallback. Operator-configured
targets (the bridge's endpoint, regions, the local-mode child) use the normal session.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from bridge.errors import ConfigError
from bridge.settings import PoolSettings
from bridge.silma import protocol as p
from bridge.silma import v2_protocol as v2
from bridge.silma.client import SilmaClient
from bridge.silma.endpoint import OURS, V2, Endpoint, parse_endpoints
from bridge.silma.fleet import Fleet
from bridge.silma.pool import SilmaPool
from bridge.silma.retry_core import RetryPolicy

PoolKey = tuple[str, str, bool]  # (WebSocket URLs, hash of the API key, user_chosen)


@dataclasses.dataclass(frozen=True)
class TTSTarget:
    """Everything that decides which pool a call uses and what each request carries."""

    endpoint: str
    api_key: str = dataclasses.field(default="", repr=False)
    voice: p.SynthesizeRequest = dataclasses.field(
        default_factory=lambda: p.SynthesizeRequest(text=""), repr=False)
    # True when a tenant entered the endpoint: connect only through the guarded session. Part
    # of the key, so a tenant's pool is never shared with an operator's pool on the same URL.
    user_chosen: bool = False
    # Set: the endpoint is SILMA's public API (v2), spoken in this voice (`voice` is unused).
    v2_voice: v2.V2Voice | None = None

    @property
    def api(self) -> str:
        return OURS if self.v2_voice is None else V2

    def endpoints(self) -> tuple[Endpoint, ...]:
        return parse_endpoints(self.endpoint, self.api)

    @property
    def pool_key(self) -> PoolKey:
        # The key is hashed so pool listings never show a credential. The URLs tell the APIs
        # apart (a v2 socket ends in /ws/stream); the voice is per request, not per pool.
        return (" ".join(e.ws_url for e in self.endpoints()),
                hashlib.sha256(self.api_key.encode()).hexdigest()[:12], self.user_chosen)


@dataclasses.dataclass
class _Entry:
    pool: Fleet
    users: int = 0


class PoolRegistry:
    def __init__(self, session: aiohttp.ClientSession, settings: PoolSettings, *,
                 connect_timeout_s: float, request_timeout_s: float, want_ulaw: bool,
                 ssl_context: ssl.SSLContext | bool = True,
                 guarded_session: aiohttp.ClientSession | None = None,
                 retry_policy: RetryPolicy | None = None) -> None:
        self._session = session
        self._retry_policy = retry_policy if retry_policy is not None else RetryPolicy()
        self._guarded = guarded_session
        self._settings = settings
        self._connect_timeout_s = connect_timeout_s
        self._request_timeout_s = request_timeout_s
        self._want_ulaw = want_ulaw
        self._ssl = ssl_context
        self._pools: dict[PoolKey, _Entry] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def session_for(self, target: TTSTarget) -> aiohttp.ClientSession:
        """The guarded session for a tenant's endpoint, the normal one for trusted targets.
        Fails closed: a user-chosen target with no guarded session is refused."""
        if not target.user_chosen:
            return self._session
        if self._guarded is None:
            raise ConfigError("a user-chosen TTS endpoint needs PoolRegistry(guarded_session=...)")
        return self._guarded

    async def pool_for(self, target: TTSTarget) -> Fleet:
        key = target.pool_key
        entry = self._pools.get(key)
        if entry is None:
            session = self.session_for(target)
            fleet = Fleet([SilmaPool(session, endpoint, api_key=target.api_key,
                                     limits=self._settings,
                                     connect_timeout_s=self._connect_timeout_s,
                                     ssl_context=self._ssl)
                           for endpoint in target.endpoints()])
            entry = self._pools[key] = _Entry(fleet)
            await fleet.start()
        return entry.pool

    @contextlib.asynccontextmanager
    async def client(self, target: TTSTarget) -> AsyncIterator[SilmaClient]:
        """A client on `target`'s pool for the length of one call."""
        pool = await self.pool_for(target)
        entry = self._pools[target.pool_key]
        entry.users += 1
        client = SilmaClient(pool.endpoint, pool, self.session_for(target),
                             api_key=target.api_key, voice=target.voice,
                             timeout_s=self._request_timeout_s, want_ulaw=self._want_ulaw,
                             counters=pool.counters, policy=self._retry_policy,
                             v2_voice=target.v2_voice)
        try:
            yield client
        finally:
            entry.users -= 1

    def retire_unused(self, keep: set[PoolKey]) -> list[PoolKey]:
        """Drain and close pools no live call uses and no configuration points at."""
        gone = [k for k, e in self._pools.items() if e.users == 0 and k not in keep]
        for key in gone:
            task = asyncio.get_running_loop().create_task(self._pools.pop(key).pool.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return gone

    def stats(self) -> list[dict[str, Any]]:
        """Per server (a fleet's servers one by one), with the calls on its target."""
        return [{**server, "calls": e.users}
                for e in self._pools.values() for server in e.pool.server_stats()]

    async def close(self) -> None:
        pools = [e.pool for e in self._pools.values()]
        self._pools.clear()
        await asyncio.gather(*(pool.close() for pool in pools), *self._closing,
                             return_exceptions=True)
