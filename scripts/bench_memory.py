#!/usr/bin/env python3
"""Does the bridge leak? Its resident size after many calls against its size after a few.

    .venv/bin/python scripts/bench_memory.py [--calls 1000] [--wave 50]

Starts the sim TTS server and a bridge (as the load test does), places `--calls` emulated calls
in waves of `--wave` at once (each hears a short greeting and hangs up), and prints the bridge's
RSS along the way and after all of them against after the first 10 (target: within 10%). The
bridge keeps the traces of its last 200 calls for the dashboard, so it grows until then.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadtest_lib.servers import start_bridge, start_tts

from bridge.emulator.runner import run_call

TOKEN = "bench-memory-token"


async def place(url: str, count: int, wave: int) -> int:
    failed = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        for start in range(0, count, wave):
            size = min(wave, count - start)
            reports = await asyncio.gather(
                *(run_call(url, max_seconds=30, session=http) for _ in range(size)),
                return_exceptions=True)
            failed += sum(isinstance(r, BaseException) or not r.ok for r in reports)
            print(f"\r{start + size}/{count} calls, {failed} failed", end="", flush=True)
    print()
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--wave", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        tts = start_tts(run_dir, None, first_audio_s=0.05, rtf=0.05, engine="sim")
        tts.wait_healthy("/health", 120)
        bridge = start_bridge(run_dir, None, db_dir=run_dir, tts_url=tts.url, token=TOKEN,
                              greeting="Hi, welcome.", extra_env={})
        try:
            bridge.wait_healthy("/health", 60)
            process = psutil.Process(bridge.pid)
            done, failed, sizes = 0, 0, {}
            for checkpoint in sorted({10, 100, 250, 500, args.calls}):
                if checkpoint > args.calls:
                    continue
                failed += asyncio.run(place(bridge.url, checkpoint - done, args.wave))
                done = checkpoint
                sizes[done] = process.memory_info().rss
                print(f"RSS after {done} calls: {sizes[done] / 2**20:.1f} MiB", flush=True)
            after_few, after_many = sizes[10], sizes[args.calls]
        finally:
            bridge.stop()
            tts.stop()
    print(f"RSS after 10 calls: {after_few / 2**20:.1f} MiB; after {args.calls}: "
          f"{after_many / 2**20:.1f} MiB; ratio {after_many / after_few:.3f} "
          f"(target <= 1.10); failed calls: {failed}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
