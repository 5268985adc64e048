#!/usr/bin/env python3
"""How long a stalled TTS server costs a caller (issue 16): a server that accepts the socket and
the hello, then never answers a request.

Our TTS server (Piper, in-process) and a stalled one are listed together in one endpoint, with
the client's default retry policy (first-audio deadline `BRIDGE_SILMA_FIRST_AUDIO_TIMEOUT_S`):
the first request goes to the stalled server (its turn), moves on at the deadline and is spoken
by the other; the stalled server is ejected, and the requests after it go straight to the one
that answers. Side by side: the same requests with the answering server alone. A stalled server
alone ends in the piece given up as a stall at the retry deadline.

    .venv/bin/python scripts/measure_stall.py [--requests 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.errors import TTSError
from bridge.settings import PoolSettings
from bridge.silma import protocol as p
from bridge.silma.client import SilmaClient
from bridge.silma.endpoint import parse_endpoints
from bridge.silma.fleet import Fleet
from bridge.silma.pool import SilmaPool
from tests.servers import make_settings, running_tts, silent_tts_server

TEXT = "Thank you for calling, how can I help?"


async def first_audio_s(http: aiohttp.ClientSession, endpoints: str, requests: int
                        ) -> list[float | str]:
    """Per request: seconds until its first audio, or how it failed."""
    limits = PoolSettings(size=2, warm=1, health_interval_s=60.0)
    fleet = Fleet([SilmaPool(http, e, api_key="", limits=limits, connect_timeout_s=2.0)
                   for e in parse_endpoints(endpoints)])
    await fleet.start()
    try:
        await fleet.wait_ready(1, timeout_s=10)
        client = SilmaClient(fleet.endpoint, fleet, http, api_key="",
                             voice=p.SynthesizeRequest(text=""), timeout_s=20.0, want_ulaw=True)
        results: list[float | str] = []
        for _ in range(requests):
            started = time.perf_counter()
            try:
                async for _piece in client.synthesize(TEXT, urgent=True):
                    results.append(time.perf_counter() - started)
                    break
            except TTSError as exc:
                results.append(f"given up after {time.perf_counter() - started:.1f} s: "
                               f"{str(exc)[:60]}")
        return results
    finally:
        await fleet.close()


def show(label: str, results: list[float | str]) -> None:
    cells = [f"{r:6.2f}" if isinstance(r, float) else r for r in results]
    print(f"{label:34} " + "  ".join(cells), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args()
    async with running_tts(make_settings()) as tts, silent_tts_server() as stalled, \
            aiohttp.ClientSession() as http:
        print(f"first audio per request, s (one after the other, {args.requests} each)")
        show("answering server alone", await first_audio_s(http, tts.url, args.requests))
        show("stalled + answering server",
             await first_audio_s(http, f"{stalled}, {tts.url}", args.requests))
        show("stalled server alone", await first_audio_s(http, stalled, 1))


if __name__ == "__main__":
    asyncio.run(main())
