#!/usr/bin/env python3
"""Two bridge processes as one fleet under load: calls split over both, every control request
asked of the bridge that does NOT hold the call (so each is routed through Redis to the owner),
underruns counted from the calls' own traces.

    .venv/bin/python scripts/loadtest_fleet.py [--calls 60] [--duration 20] \
        [--redis redis://127.0.0.1:6379/13]

Started here: the sim TTS server (a GPU latency model) and two `python -m bridge serve` sharing
one Redis (its database is emptied first) and one SQLite store; the emulated callers run in
this process. Each caller, after its greeting, asks for a 3-sentence reply through the other
bridge and waits until it has played, again until the end. This 2-core machine runs both
bridges, the TTS server and the callers: the numbers are the fleet's behaviour, not capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from loadtest_lib import servers

from bridge.emulator.call import CallEmulator
from bridge.emulator.runner import run_call
from bridge.fleet.forward import ROUTED_TO

REPLY = ("Your order is on its way. It should arrive on Thursday. "
         "Is there anything else I can help you with?")
GREETING = "Hello, this is the fleet load test."


async def _routed_say(http: aiohttp.ClientSession, control: str, owner: str, call_sid: str,
                      token: str, tally: collections.Counter[str]) -> bool:
    """A say asked of `control` for a call `owner` holds: True when it was taken there."""
    async with http.post(f"{control}/calls/{call_sid}/say", json={"text": REPLY},
                         headers={"Authorization": f"Bearer {token}"}) as answer:
        if answer.status == 202 and answer.headers.get(ROUTED_TO) == owner:
            tally["routed"] += 1
            return True
        tally[f"HTTP {answer.status}"] += 1
        return False


async def _talk(http: aiohttp.ClientSession, control: str, owner: str, token: str,
                end_at: float, tally: collections.Counter[str], em: CallEmulator) -> None:
    async with asyncio.timeout(30):
        await em.wait_for_marks(1)  # the greeting
    try:
        async with asyncio.timeout_at(end_at):
            while await _routed_say(http, control, owner, em.call_sid, token, tally):
                await em.wait_for_marks(em.marks_settled + 1)
    except TimeoutError:
        pass  # the run is over


async def one_call(index: int, bridges: list[str], token: str, end_at: float,
                   http: aiohttp.ClientSession, tally: collections.Counter[str],
                   traces: dict[str, dict[str, Any]]) -> None:
    owner, control = bridges[index % 2], bridges[(index + 1) % 2]

    async def talk(em: CallEmulator) -> str | None:
        await _talk(http, control, owner, token, end_at, tally, em)
        return None

    report = await run_call(owner, talk=talk, record=False, max_seconds=None,
                            setup_seconds=30, session=http)
    if report.error:
        tally["call errors"] += 1
    # The trace, as the other bridge answers for it (from the fleet's shared store).
    async with asyncio.timeout(10):
        while True:
            async with http.get(f"{control}/calls/{report.call_sid}/trace",
                                headers={"Authorization": f"Bearer {token}"}) as answer:
                found = await answer.json() if answer.status == 200 else {}
            if found.get("live") is False:
                traces[owner + " " + report.call_sid] = found
                return
            await asyncio.sleep(0.2)  # the owner files the ended call a moment after hang-up


async def main(calls: int, duration: float, redis_url: str) -> int:
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    token = secrets.token_urlsafe(24)
    run_dir = Path(tempfile.mkdtemp(prefix="loadtest-fleet-"))
    tts = servers.start_tts(run_dir, None, first_audio_s=0.15, rtf=0.12, engine="sim")
    children = [tts]
    try:
        tts.wait_healthy("/health", 120)
        for name in ("a", "b"):
            port = servers.free_port()
            url = f"http://127.0.0.1:{port}"
            (run_dir / name).mkdir()
            children.append(servers.start_bridge(
                run_dir / name, None, db_dir=run_dir, tts_url=tts.url, token=token,
                greeting=GREETING, port=port, extra_env={
                    "BRIDGE_REDIS_URL": redis_url, "BRIDGE_FLEET_INSTANCE_ID": name,
                    "BRIDGE_FLEET_INTERNAL_URL": url}))
        for child in children[1:]:
            child.wait_healthy("/health", 60)
        bridges = [child.url for child in children[1:]]
        print(f"bridges {bridges}, TTS {tts.url}; {calls} calls for {duration:.0f} s", flush=True)
        tally: collections.Counter[str] = collections.Counter()
        traces: dict[str, dict[str, Any]] = {}
        started = time.monotonic()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            end_at = asyncio.get_running_loop().time() + duration
            jobs = [one_call(i, bridges, token, end_at, http, tally, traces)
                    for i in range(calls)]
            await asyncio.gather(*jobs)
        per_bridge = collections.Counter(key.split(" ")[0] for key in traces)
        underruns = sum(t.get("underruns", 0) or 0 for t in traces.values())
        reasons = collections.Counter(t.get("end_reason") for t in traces.values())
        print(f"\n{calls} calls in {time.monotonic() - started:.1f} s; traces {len(traces)}, "
              f"calls per bridge {dict(per_bridge)}")
        print(f"control requests: {dict(tally)}")
        print(f"end reasons: {dict(reasons)}; underruns in all: {underruns}")
        await client.flushdb()
        return 0 if underruns == 0 and tally["routed"] and not tally["call errors"] else 1
    finally:
        for child in reversed(children):
            child.stop()
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.calls, args.duration, args.redis)))
