#!/usr/bin/env python3
"""What routing costs in a fleet: control requests for a live call asked of the bridge that holds
it (local) and of another bridge (routed through Redis to the owner), side by side.

    .venv/bin/python scripts/bench_fleet.py [--requests 300] [--redis redis://127.0.0.1:6379/13]

Two bridges in this process on loopback, one Redis (its database is emptied first), one SQLite
store; our TTS server with Piper; one emulated Twilio call on the first bridge. Measured from
the client: `GET /calls/{id}/trace` (a read) and `POST /calls/{id}/say` (answered 202 once the
utterance is queued; the call's speech queue is let to drain between says).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

# The repo root: the benchmark's test helpers live in tests/, which is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from bridge.settings import FleetSettings, Settings
from bridge.store.crypto import generate_key
from tests.servers import DEFAULT_TOKEN, make_settings, running_bridge, running_tts

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
WARM_UP = 30  # requests per bridge before measuring


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(http: aiohttp.ClientSession, method: str, url: str,
                json: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    async with http.request(method, url, headers=AUTH, json=json) as answer:
        await answer.read()
        assert answer.status in (200, 202), answer.status
    return (time.perf_counter() - started) * 1000


async def main(requests: int, redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    secret = generate_key()
    settings = make_settings()
    with tempfile.TemporaryDirectory() as data:
        database = f"sqlite+aiosqlite:///{data}/bridge.db"

        def member(name: str) -> Settings:
            return settings.replace(redis_url=redis_url, secret_key=secret,
                                    fleet=dataclasses.replace(FleetSettings(), instance_id=name))

        async with running_tts(settings) as tts, \
                running_bridge(member("a"), tts_url=tts.url, database_url=database) as a, \
                running_bridge(member("b"), tts_url=tts.url, database_url=database) as b, \
                aiohttp.ClientSession() as http:
            stream_url, params = await fetch_twiml(http, f"{a.url}/twilio/voice",
                                                   {"CallSid": "CAbench"}, None)
            async with TwilioCallEmulator(http, stream_url, call_sid="CAbench",
                                          parameters=params) as call:
                await call.connect(greetings=1)
                results: dict[str, list[float]] = {}
                for base in (a.url, b.url):  # warm: connections, first-use code paths
                    for _ in range(WARM_UP):
                        await timed(http, "GET", f"{base}/calls/CAbench/trace")
                for name, base in (("local", a.url), ("routed", b.url)):
                    results[f"trace {name}"] = [
                        await timed(http, "GET", f"{base}/calls/CAbench/trace")
                        for _ in range(requests)]
                    print(f"\rtrace {name}: {requests} requests", end="", flush=True)
                for name, base in (("local", a.url), ("routed", b.url)):
                    says = []
                    for _ in range(max(5, requests // 30)):
                        marks = call.marks_settled
                        says.append(await timed(http, "POST", f"{base}/calls/CAbench/say",
                                                json={"text": "Yes."}))
                        await call.wait_for_marks(marks + 1)  # its speech played out
                    results[f"say {name}"] = says
                    print(f"\rsay {name}: {len(says)} requests   ", end="", flush=True)
                await call.stop()
    await client.flushdb()
    await client.aclose()
    print(f"\n{'request':<14} {'n':>4} {'p50':>8} {'p99':>8}")
    for name, values in results.items():
        print(f"{name:<14} {len(values):>4} {statistics.median(values):>6.2f}ms "
              f"{pct(values, 0.99):>6.2f}ms")
    for kind in ("trace", "say"):
        local, routed = results[f"{kind} local"], results[f"{kind} routed"]
        print(f"{kind}: routed adds {statistics.median(routed) - statistics.median(local):.2f} "
              f"ms at p50 ({statistics.median(routed) / statistics.median(local):.2f}x), "
              f"{pct(routed, 0.99) - pct(local, 0.99):.2f} ms at p99")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.redis))
