"""API server regions, and `auto`: measure the handshake round trip to each, use the fastest.

The handshake (TCP, TLS, WebSocket upgrade) is what a cold request pays, so it is what is
measured: the best of a few fresh connections per region, at start and then periodically.
A selector with no endpoints is how a bridge without regions is modelled: every region then
resolves to no endpoint, and there is nothing to probe or show.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from bridge.silma.endpoint import parse_endpoints

# The regions of the product specification, in its order: id -> label.
REGIONS: dict[str, str] = {
    "us-east": "US East (Virginia)",
    "us-west": "US West (Oregon)",
    "eu-central": "EU Central (Frankfurt)",
    "eu-west": "EU West (London)",
    "ap-southeast": "Asia Pacific (Singapore)",
    "me-south": "Middle East (Bahrain)",
}
AUTO = "auto"
log = structlog.get_logger("bridge.regions")


@dataclasses.dataclass(frozen=True)
class RegionChoice:
    """What probing has found so far: each configured region's endpoint, and the fastest
    (None until one answered)."""

    endpoints: Mapping[str, str]
    chosen: str | None = None


class RegionSelector:
    def __init__(self, session: aiohttp.ClientSession, endpoints: Mapping[str, str], *,
                 probes: int = 3, timeout_s: float = 3.0,
                 ssl_context: ssl.SSLContext | bool = True) -> None:
        self.endpoints = {r: url for r, url in endpoints.items() if url}
        self._session = session
        self._probes = probes
        self._timeout_s = timeout_s
        self._ssl = ssl_context
        self.round_trips_ms: dict[str, float | None] = {}
        self.chosen: str | None = None
        self.measured_at: float | None = None

    async def _handshake_ms(self, url: str) -> float | None:
        best: float | None = None
        ws_url = parse_endpoints(url)[0].ws_url  # a region's first server speaks for it
        for _ in range(self._probes):
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self._timeout_s):
                    ws = await self._session.ws_connect(ws_url, compress=0, ssl=self._ssl)
            except (aiohttp.ClientError, OSError, TimeoutError):
                continue  # refused or slow: this probe counts for nothing
            elapsed = (time.perf_counter() - started) * 1000
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await ws.close()
            best = elapsed if best is None else min(best, elapsed)
        return None if best is None else round(best, 2)

    async def measure(self) -> str | None:
        """Probe every region at once; choose the fastest that answered (keep the old choice
        if none did)."""
        regions = list(self.endpoints)
        results = await asyncio.gather(*(self._handshake_ms(self.endpoints[r]) for r in regions))
        self.round_trips_ms = dict(zip(regions, results, strict=True))
        self.measured_at = time.time()
        answered = {r: ms for r, ms in self.round_trips_ms.items() if ms is not None}
        if answered:
            self.chosen = min(answered, key=answered.__getitem__)
        log.info("regions_measured", round_trips_ms=self.round_trips_ms, chosen=self.chosen)
        return self.chosen

    def choice(self) -> RegionChoice:
        return RegionChoice(self.endpoints, self.chosen)

    def view(self) -> dict[str, Any] | None:
        """The measurements for the ops API and the settings page; None with no regions."""
        if not self.endpoints:
            return None
        return {
            "chosen": self.chosen,
            "measured_at": self.measured_at,
            "regions": [
                {"id": r, "label": REGIONS.get(r, r), "endpoint": self.endpoints.get(r),
                 "round_trip_ms": self.round_trips_ms.get(r)}
                for r in REGIONS if r in self.endpoints
            ],
        }
