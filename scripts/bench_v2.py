#!/usr/bin/env python3
"""Our protocol vs SILMA's public API (v2) through the bridge's own client, side by side: time
to first audio of a request on the warm pool, and of the request right after a barge-in (ours
cancels and keeps the socket; v2 has no cancel, so the socket closes and the pool replaces it).

    .venv/bin/python scripts/bench_v2.py [--requests 30] [--rtt-ms 0,50]

Against our TTS server on loopback (its /ws and its /tts/v2 routes, the same service behind
both), sim engine with a short fixed first-audio delay so the transport shows, behind an added
round-trip delay (tests/delay_proxy.py). "sockets/barge-in" counts the connections the pool
opened per barge-in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import aiohttp

# The repo root: the benchmark's test helpers live in tests/, which is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.settings import PoolSettings, load_settings
from bridge.silma import protocol as p
from bridge.silma import v2_protocol as v2
from bridge.silma.client import SilmaClient
from bridge.silma.endpoint import OURS, V2, parse_endpoint
from bridge.silma.pool import SilmaPool
from bridge.tts_server import app as tts_app
from tests.delay_proxy import DelayProxy

TEXT = "Thank you for calling, how can I help you today?"
LIMITS = PoolSettings(size=5, warm=3, health_interval_s=600.0)


@dataclasses.dataclass
class Result:
    turn_ms: list[float] = dataclasses.field(default_factory=list)
    after_barge_in_ms: list[float] = dataclasses.field(default_factory=list)
    sockets_opened: int = 0


async def first_audio_ms(client: SilmaClient, *, leave: bool = False) -> float:
    """From the ask to the first audio; `leave`: stop listening there (a barge-in)."""
    started = time.perf_counter()
    async with contextlib.aclosing(client.synthesize(TEXT, urgent=True)) as pieces:
        await anext(pieces)
        elapsed = (time.perf_counter() - started) * 1000
        if not leave:
            async for _ in pieces:
                pass
    return elapsed


async def measure(http: aiohttp.ClientSession, base_url: str, api: str, n: int) -> Result:
    url = f"{base_url}/tts/v2" if api == V2 else base_url
    pool = SilmaPool(http, parse_endpoint(url, api), api_key="", limits=LIMITS,
                     connect_timeout_s=5.0)
    await pool.start()
    await pool.wait_ready(LIMITS.warm, 10.0)
    client = SilmaClient(pool.endpoint, pool, http, api_key="", voice=p.SynthesizeRequest(""),
                         timeout_s=30.0, want_ulaw=True, v2_voice=v2.V2Voice(voice_id="default"))
    result = Result()
    for _ in range(n):
        result.turn_ms.append(await first_audio_ms(client))
    opened_before = max(c["id"] for c in pool.stats()["connections"])
    for i in range(n):
        await first_audio_ms(client, leave=True)  # the caller talks over it
        result.after_barge_in_ms.append(await first_audio_ms(client))
        print(f"\r{api:<5} barge-in {i + 1}/{n}", end="", flush=True)
    result.sockets_opened = max(c["id"] for c in pool.stats()["connections"]) - opened_before
    await pool.close()
    return result


async def main(n: int, rtts_ms: list[float]) -> None:
    base = load_settings(env={}).tts_server
    settings = dataclasses.replace(base, engine="sim", sim_first_audio_s=0.02, sim_rtf=0.12,
                                   concurrency=8, port=0)
    server = await tts_app.start(settings, host="127.0.0.1", port=0)
    await server.service.loaded()
    upstream = int(server.url.rsplit(":", 1)[1])
    rows = []
    async with aiohttp.ClientSession() as http:
        for rtt in rtts_ms:
            proxy = DelayProxy("127.0.0.1", upstream, one_way_s=rtt / 2000)
            url = f"http://127.0.0.1:{await proxy.start()}"
            results = {api: await measure(http, url, api, n) for api in (OURS, V2)}
            await proxy.close()
            rows.append((rtt, results))
    await server.close()
    print(f"\n{n} requests each; sim engine, first audio after 20 ms")
    print(f"{'added RTT':>9} {'api':<6} {'turn p50':>9} {'after barge-in p50':>19} "
          f"{'p95':>7} {'sockets/barge-in':>17}")
    for rtt, results in rows:
        for api, r in results.items():
            print(f"{rtt:>7.0f}ms {api:<6} {statistics.median(r.turn_ms):>7.1f}ms "
                  f"{statistics.median(r.after_barge_in_ms):>17.1f}ms "
                  f"{sorted(r.after_barge_in_ms)[int(0.95 * (n - 1))]:>5.1f}ms "
                  f"{r.sockets_opened / n:>17.2f}")
        ours, theirs = results[OURS], results[V2]
        turn = statistics.median(theirs.turn_ms) / statistics.median(ours.turn_ms)
        barge = (statistics.median(theirs.after_barge_in_ms)
                 / statistics.median(ours.after_barge_in_ms))
        print(f"{'':>9} v2/ours: turn {turn:.2f}x, after barge-in {barge:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--rtt-ms", default="0,50")
    args = parser.parse_args()
    asyncio.run(main(args.requests, [float(x) for x in args.rtt_ms.split(",")]))
