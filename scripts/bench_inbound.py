#!/usr/bin/env python3
"""What the bridge's media socket saves: server CPU per provider media message when each message
goes to the call's handler inside the socket read (MediaSocket, bridge/web/media_socket.py, what
the bridge does) vs through aiohttp's queue and an `async for` over the socket (aiohttp's public
WebSocket API, the usual way).

    .venv/bin/python scripts/bench_inbound.py [--calls 300] [--seconds 8] [--rounds 1]
    # needs [bench]

A server process pinned to one core serves both ways; this process plays `--calls` Twilio
callers, each sending one media message every 20 ms on the shared media clock, first to one
way, then to the other, `--rounds` times (on a busy machine, several rounds let the median
see past another process's burst). Each message gets the bridge's real work: the Twilio parser
and the voice activity detector. Printed: the server's CPU share and microseconds per message
of each round, the median, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable

import aiohttp
import uvloop
from aiohttp import web
from loadtest_lib.meters import CpuMeter

from bridge.audio.vad import VoiceDetector
from bridge.emulator.clock import MediaClock
from bridge.emulator.twilio_wire import media_message
from bridge.emulator.wire import FRAME_SECONDS
from bridge.telephony import events as ev
from bridge.telephony.twilio import parse_message
from bridge.web.media_socket import HandshakeRefused, MediaSocket

PAYLOAD = base64.b64encode(bytes(range(96, 256))).decode()  # 160 bytes of varied mu-law


def _handler() -> Callable[[str | bytes], None]:
    """What a call does with each message before anything else: parse it, feed the VAD."""
    vad = VoiceDetector()

    def handle(raw: str | bytes) -> None:
        event = parse_message(raw)
        if isinstance(event, ev.MediaReceived):
            vad.push(event.payload)

    return handle


async def queued(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    handle = _handler()
    async for msg in ws:
        handle(msg.data)
    return ws


async def media(request: web.Request) -> web.StreamResponse:
    socket = MediaSocket(_handler(), max_size=4 * 1024 * 1024)  # aiohttp's default max_msg_size
    try:
        socket.accept(request)
    except HandshakeRefused as refused:
        return refused.response
    await socket.wait_closed()
    return web.StreamResponse(status=101)


def serve(port: int, core: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {core})
    app = web.Application()
    app.router.add_get("/queued", queued)
    app.router.add_get("/media", media)
    web.run_app(app, host="127.0.0.1", port=port, print=None, loop=uvloop.new_event_loop())


class Caller:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, first_due: float) -> None:
        self.ws, self.first_due, self.sent = ws, first_due, 0

    async def send_due_media(self, now: float) -> None:
        while self.first_due + self.sent * FRAME_SECONDS <= now:
            self.sent += 1
            await self.ws.send_str(media_message(self.sent, self.sent, self.sent * 20, PAYLOAD,
                                                 "MZ00000000000000000000000000000000"))


async def measure(http: aiohttp.ClientSession, url: str, pid: int, calls: int,
                  seconds: float) -> tuple[float, float]:
    """(server CPU %, µs of server CPU per message) with `calls` callers on `url`."""
    loop = asyncio.get_running_loop()
    clock = MediaClock()
    sockets = [await http.ws_connect(url, compress=0) for _ in range(calls)]
    callers = []
    for i, ws in enumerate(sockets):
        callers.append(Caller(ws, loop.time() + 0.1 + i * FRAME_SECONDS / calls))
        clock.join(callers[-1], callers[-1].first_due)
    await asyncio.sleep(1.0)  # settle: every caller is sending
    meter, sent0, t0 = CpuMeter.process(pid), sum(c.sent for c in callers), time.monotonic()
    for step in range(int(seconds)):
        await asyncio.sleep(1.0)
        print(f"\r  {url.rsplit('/', 1)[1]}: {step + 1}/{int(seconds)} s", end="", flush=True)
    pct, sent = meter.percent() or 0.0, sum(c.sent for c in callers) - sent0
    cpu = pct / 100 * (time.monotonic() - t0)
    print()
    for caller in callers:
        clock.leave(caller)
    for ws in sockets:
        await ws.close()
    return pct, 1e6 * cpu / sent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    port = 18000 + os.getpid() % 1000
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(port, args.server_core), daemon=True)
    server.start()
    try:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - {args.server_core}
                                 or {args.server_core})
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for _ in range(100):  # wait for the server to listen
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/none"):
                        break
                await asyncio.sleep(0.1)
            rounds: dict[str, list[tuple[float, float]]] = {"queued": [], "media": []}
            for _ in range(args.rounds):
                for way, results in rounds.items():
                    assert server.pid is not None
                    results.append(await measure(http, f"http://127.0.0.1:{port}/{way}",
                                                 server.pid, args.calls, args.seconds))
    finally:
        server.terminate()
    print(f"{args.calls} callers, one Twilio media message each every 20 ms "
          f"({args.calls * 50:,} messages/s), parse + VAD per message, server on one core")
    print(f"{'path':<8} {'server CPU %':>13} {'µs / message':>13}   (each round)")
    median = {}
    for way, results in rounds.items():
        median[way] = statistics.median(us for _, us in results)
        print(f"{way:<8} {statistics.median(pct for pct, _ in results):>13.1f} "
              f"{median[way]:>13.1f}   ({', '.join(f'{us:.1f}' for _, us in results)})")
    print(f"media socket: {median['queued'] / median['media']:.2f}x less CPU a message")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
