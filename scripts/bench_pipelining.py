#!/usr/bin/env python3
"""Time to first audio of a three-sentence reply, with and without pipelining, side by side.

    .venv/bin/python scripts/bench_pipelining.py [--runs 10] [--first-audio 0.15] [--rtf 0.12]

Against our TTS server (--engine sim: a GPU SILMA server's latency model, first audio after a
fixed delay whatever the text, then real-time factor 0.12; --engine piper: real CPU speech, whose
first chunk is a whole sentence), through a warm connection, three ways:
  whole      the reply as one request, audio used when synthesis is complete (what a seed
             client does);
  streamed   the reply as one request with streamed chunks;
  pipelined  what the bridge does: the reply cut into pieces (a short first clause, then
             sentences), each streamed, the next requested while the first plays.
Time to first audio is from the text to the first audio the bridge could send.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time

import aiohttp

from bridge.call.segment import split_for_tts
from bridge.settings import load_settings
from bridge.silma import protocol as p
from bridge.silma.connection import SilmaConnection
from bridge.silma.endpoint import parse_endpoint
from bridge.tts_server import app as tts_app

REPLY = ("Your table for two is booked for eight tonight, by the window as you asked. "
         "We will send a confirmation by text message in a minute. "
         "Is there anything else I can help you with today?")


async def first_audio_s(conn: SilmaConnection, text: str, *, stream: bool) -> float:
    request = conn.prepare(p.SynthesizeRequest(text=text), want_stream=stream,
                           want_format="ulaw", want_rate=8000)
    started = time.perf_counter()
    first = None
    async for _ in conn.synthesize(request, 60):
        first = first or time.perf_counter() - started
    assert first is not None
    return first


async def main(runs: int, engine: str, first_audio: float, rtf: float) -> None:
    base = load_settings(env={}).tts_server
    settings = dataclasses.replace(base, engine=engine, sim_first_audio_s=first_audio,
                                   sim_rtf=rtf, port=0)
    server = await tts_app.start(settings, host="127.0.0.1", port=0)
    await server.service.loaded()
    first_piece = split_for_tts(REPLY)[0]
    results: dict[str, list[float]] = {"whole": [], "streamed": [], "pipelined": []}
    async with aiohttp.ClientSession() as http:
        conn = await SilmaConnection.open(http, parse_endpoint(server.url), api_key="",
                                          timeout_s=10)
        for run in range(runs):
            results["whole"].append(await first_audio_s(conn, REPLY, stream=False))
            results["streamed"].append(await first_audio_s(conn, REPLY, stream=True))
            results["pipelined"].append(await first_audio_s(conn, first_piece, stream=True))
            print(f"\rrun {run + 1}/{runs}", end="", flush=True)
        await conn.close()
    await server.close()
    print(f"\nreply: {len(REPLY)} characters; first piece: {first_piece!r}")
    whole = statistics.median(results["whole"])
    for name, values in results.items():
        ttfa = statistics.median(values)
        print(f"{name:<10} time to first audio p50 {ttfa * 1000:7.1f} ms   "
              f"{whole / ttfa:5.1f}x faster than whole")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--engine", choices=("sim", "piper"), default="sim")
    parser.add_argument("--first-audio", type=float, default=0.15)
    parser.add_argument("--rtf", type=float, default=0.12)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.engine, args.first_audio, args.rtf))
