"""What the bridge's request handlers share, stored on the aiohttp application, and how a call
finds its user's TTS target and telephony credentials (read at every call: a change in the
database, even by plain SQL, takes effect on the next call)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from bridge.call.registry import CallRegistry
from bridge.call.speaker import Synthesize
from bridge.errors import ConfigError
from bridge.settings import PlivoSettings, Settings, TwilioSettings
from bridge.silma import protocol as p
from bridge.silma.local_server import LocalTTSServer
from bridge.silma.pools import PoolRegistry, TTSTarget
from bridge.silma.regions import AUTO, RegionSelector
from bridge.store import DEFAULT_USER_ID, SilmaCredentials, Store
from bridge.web.stream_tokens import StreamTokens


@dataclasses.dataclass
class BridgeContext:
    settings: Settings
    registry: CallRegistry
    voice: p.SynthesizeRequest
    stream_tokens: StreamTokens
    http: aiohttp.ClientSession | None = None
    # For endpoints a tenant typed in: refuses forbidden addresses on every connection.
    guarded_http: aiohttp.ClientSession | None = None
    store: Store | None = None
    pools: PoolRegistry | None = None
    regions: RegionSelector | None = None
    local_tts: LocalTTSServer | None = None
    _local_lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    sockets: weakref.WeakSet[web.WebSocketResponse] = dataclasses.field(
        default_factory=weakref.WeakSet)

    def pool_stats(self) -> list[dict[str, Any]]:
        return self.pools.stats() if self.pools is not None else []

    async def local_endpoint(self) -> str:
        """Local mode: our TTS server in a child process on loopback, started on first need."""
        async with self._local_lock:
            if self.local_tts is None:
                server = LocalTTSServer()
                await server.start()
                self.local_tts = server
        return self.local_tts.url

    def _region_endpoint(self, region: str) -> str:
        if self.regions is None:
            return ""
        chosen = self.regions.chosen if region == AUTO else region
        return self.regions.endpoints.get(chosen or "") or next(
            iter(self.regions.endpoints.values()), "")

    async def _silma_row(self, user_id: str) -> SilmaCredentials | None:
        if self.store is None:
            return None
        return await self.store.silma(user_id) or await self.store.silma(DEFAULT_USER_ID)

    async def target_for_user(self, user_id: str) -> TTSTarget:
        """Where a user's speech comes from (their row read now: a change applies next call)."""
        return await self._target(await self._silma_row(user_id))

    async def _target(self, row: SilmaCredentials | None) -> TTSTarget:
        """Local mode, the row's endpoint, its region, else the bridge's configured endpoint or
        region, else local mode."""
        silma = self.settings.silma
        voice = self.voice
        if row is not None and row.reference_audio:
            voice = dataclasses.replace(voice, reference_audio=row.reference_audio,
                                        reference_text=row.reference_text)
        api_key = (row.api_key if row is not None and row.api_key else silma.api_key)
        if row is not None and row.is_local:
            return TTSTarget(await self.local_endpoint(), "", voice)
        endpoint = (
            (row.api_endpoint if row is not None else "")
            or (self._region_endpoint(row.region) if row is not None and row.region != AUTO
                else "")
            or silma.endpoint
            or self._region_endpoint(silma.region)
        )
        if not endpoint:
            return TTSTarget(await self.local_endpoint(), "", voice)
        # Only an endpoint the tenant typed in is untrusted; regions and the bridge's own are
        # the operator's choice.
        user_chosen = row is not None and bool(row.api_endpoint)
        return TTSTarget(endpoint, api_key, voice, user_chosen=user_chosen)

    def tts_opener(self, user_id: str) -> Callable[
            [], contextlib.AbstractAsyncContextManager[Synthesize]]:
        """How a call of `user_id` opens its TTS: that user's target, read when the call starts.
        The user is the call's owner (its signed path), never a field of the stream."""

        @contextlib.asynccontextmanager
        async def open_tts() -> AsyncIterator[Synthesize]:
            if self.pools is None:
                raise ConfigError("the bridge is not started")
            async with self.pools.client(await self.target_for_user(user_id)) as client:
                yield client.synthesize

        return open_tts

    async def telephony_for_user(self, user_id: str) -> tuple[TwilioSettings, PlivoSettings]:
        """The user's own provider credentials where stored, else the bridge's."""
        twilio, plivo = self.settings.twilio, self.settings.plivo
        row = await self.store.telephony(user_id) if self.store is not None else None
        if row is not None and row.twilio_auth_token:
            twilio = dataclasses.replace(twilio, account_sid=row.twilio_account_sid,
                                         auth_token=row.twilio_auth_token)
        if row is not None and row.plivo_auth_token:
            plivo = dataclasses.replace(plivo, auth_id=row.plivo_auth_id,
                                        auth_token=row.plivo_auth_token)
        return twilio, plivo

    async def retire_unused_pools(self) -> None:
        """Close pools that no live call uses and no user's settings point at any more."""
        if self.pools is None or self.store is None:
            return
        # One read of every row, not a read per user: this runs every minute.
        keep = {(await self._target(row)).pool_key for row in await self.store.silma_users()}
        self.pools.retire_unused(keep)


CONTEXT = web.AppKey("bridge_context", BridgeContext)


def context(request: web.Request) -> BridgeContext:
    return request.app[CONTEXT]
