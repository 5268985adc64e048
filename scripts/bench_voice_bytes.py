#!/usr/bin/env python3
"""Bytes the bridge sends per TTS request with a cloned voice, before and after registration.

Our TTS server (Piper; it takes the clip like SILMA does, without cloning) runs in-process behind
a counting loopback proxy. One pooled connection speaks the same `--requests` sentences with a
`--clip-s` reference clip twice, side by side: as the client did before registration (the clip
inline in every request: the connection is told the server has no `voice` capability) and as
it does now (registered once per connection, then named by id).

    .venv/bin/python scripts/bench_voice_bytes.py [--clip-s 7] [--requests 20]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.tts_server.app import RunningServer
from tests.clips import cloning_client, reference_clip
from tests.servers import make_settings, running_tts

SENTENCES = ("Thank you for calling.", "Your order shipped this morning.",
             "Is there anything else I can help you with today?")


async def bytes_per_request(tts: RunningServer, clip: bytes, requests: int, *, register: bool
                            ) -> tuple[float, float]:
    """(bytes sent on the first request, mean bytes sent per request after it)."""
    async with aiohttp.ClientSession() as http, \
            cloning_client(tts, http, clip) as (client, proxy, pool):
        if not register:  # the client before registration: every request carries the clip
            conn = await pool.acquire()
            assert conn.hello is not None
            conn.hello = dataclasses.replace(conn.hello, capabilities=tuple(
                c for c in conn.hello.capabilities if c != "voice"))
            pool.release(conn)
        sent: list[int] = []
        for i in range(requests):
            before = proxy.bytes_up
            async for _ in client.synthesize(SENTENCES[i % len(SENTENCES)]):
                pass
            sent.append(proxy.bytes_up - before)
    rest = sent[1:] or sent
    return sent[0], sum(rest) / len(rest)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip-s", type=float, default=7.0)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    clip = reference_clip(args.clip_s)
    async with running_tts(make_settings()) as tts:
        print(f"clip: {args.clip_s:g} s, {len(clip):,} bytes of WAV; {args.requests} requests",
              flush=True)
        inline = await bytes_per_request(tts, clip, args.requests, register=False)
        registered = await bytes_per_request(tts, clip, args.requests, register=True)
    print(f"{'':28} {'first request':>14} {'each after':>12}")
    print(f"{'clip inline (before)':28} {inline[0]:>14,.0f} {inline[1]:>12,.0f}")
    print(f"{'registered once (after)':28} {registered[0]:>14,.0f} {registered[1]:>12,.0f}")
    print(f"bytes per request after the first: {inline[1] / registered[1]:,.0f}x fewer")


if __name__ == "__main__":
    asyncio.run(main())
