"""What the bridge's request handlers share, stored on the aiohttp application."""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from bridge.call.registry import CallRegistry
from bridge.call.speaker import Synthesize
from bridge.errors import ConfigError
from bridge.settings import Settings
from bridge.silma import protocol as p
from bridge.silma.pools import PoolRegistry, TTSTarget
from bridge.silma.regions import AUTO, RegionSelector


@dataclasses.dataclass
class BridgeContext:
    settings: Settings
    registry: CallRegistry
    voice: p.SynthesizeRequest
    http: aiohttp.ClientSession | None = None
    pools: PoolRegistry | None = None
    regions: RegionSelector | None = None
    sockets: weakref.WeakSet[web.WebSocketResponse] = dataclasses.field(
        default_factory=weakref.WeakSet)

    def pool_stats(self) -> list[dict[str, Any]]:
        return self.pools.stats() if self.pools is not None else []

    def target_for(self, parameters: dict[str, str]) -> TTSTarget:
        """Where this call's speech comes from: the endpoint, else the chosen region."""
        silma = self.settings.silma
        endpoint = silma.endpoint
        if not endpoint and self.regions is not None:
            region = self.regions.chosen if silma.region == AUTO else silma.region
            endpoint = self.regions.endpoints.get(region or "") or next(
                iter(self.regions.endpoints.values()), "")
        if not endpoint:
            raise ConfigError("no SILMA endpoint or region endpoint is configured")
        return TTSTarget(endpoint=endpoint, api_key=silma.api_key, voice=self.voice)

    @contextlib.asynccontextmanager
    async def tts_for_call(self, parameters: dict[str, str]) -> AsyncIterator[Synthesize]:
        if self.pools is None:
            raise ConfigError("the bridge is not started")
        async with self.pools.client(self.target_for(parameters)) as client:
            yield client.synthesize


CONTEXT = web.AppKey("bridge_context", BridgeContext)


def context(request: web.Request) -> BridgeContext:
    return request.app[CONTEXT]
