"""What the warm pool saves: request latency through a warm connection vs connect-then-request,
over ws and wss, on loopback and behind an added round-trip delay. Printed side by side, as ratios.

    .venv/bin/python scripts/bench_pool.py [--requests 20] [--rtt-ms 0,50]

The TTS server runs the sim engine with no synthesis delay, so what is measured is the transport:
TLS and WebSocket handshakes, the hello exchange, and the request's own round trip. The added
delay does not slow the TCP handshake (the local kernel answers it), so a real network's cold
connections cost one round trip more than shown: the ratios are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ssl
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import trustme

# The repo root: the benchmark's test helpers live in tests/, which is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.settings import PoolSettings, load_settings
from bridge.silma import protocol as p
from bridge.silma.client import SilmaClient
from bridge.silma.connection import SilmaConnection
from bridge.silma.endpoint import parse_endpoint
from bridge.silma.pool import SilmaPool
from bridge.tts_server import app as tts_app
from tests.delay_proxy import DelayProxy

TEXT = "Warm connections answer at once."
VOICE = p.SynthesizeRequest(text="")


async def _consume(stream) -> None:
    async for _ in stream:
        pass


async def warm_ms(http, url: str, tls: ssl.SSLContext | bool, n: int) -> list[float]:
    pool = SilmaPool(
        http,
        parse_endpoint(url),
        api_key="",
        limits=PoolSettings(size=2, warm=1, acquire_timeout_s=10, health_interval_s=600),
        connect_timeout_s=10,
        ssl_context=tls,
    )
    await pool.start()
    await pool.wait_ready(1, timeout_s=10)
    client = SilmaClient(
        pool.endpoint, pool, http, api_key="", voice=VOICE, timeout_s=30, want_ulaw=True
    )
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await _consume(client.synthesize(TEXT))
        times.append((time.perf_counter() - started) * 1000)
    await pool.close()
    return times


async def cold_ms(http, url: str, tls: ssl.SSLContext | bool, n: int) -> list[float]:
    endpoint = parse_endpoint(url)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        conn = await SilmaConnection.open(http, endpoint, api_key="", timeout_s=10, ssl=tls)
        request = conn.prepare(
            dataclasses.replace(VOICE, text=TEXT),
            want_stream=True,
            want_format="ulaw",
            want_rate=8000,
        )
        await _consume(conn.synthesize(request, 30))
        times.append((time.perf_counter() - started) * 1000)
        await conn.close()
    return times


async def main(requests: int, rtts_ms: list[float]) -> None:
    base = load_settings(env={}).tts_server
    settings = dataclasses.replace(base, engine="sim", sim_first_audio_s=0.0, sim_rtf=0.001, port=0)
    server = await tts_app.start(settings, host="127.0.0.1", port=0)
    await server.service.loaded()
    upstream_port = int(server.url.rsplit(":", 1)[1])
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    print(
        f"{'transport':<10} {'added RTT':>9} {'warm p50':>9} {'cold p50':>9} {'cold/warm':>9}",
        flush=True,
    )
    async with aiohttp.ClientSession() as http:
        for rtt in rtts_ms:
            for scheme, tls in (("ws", None), ("wss", server_tls)):
                # The delay sits in front of TLS, so the TLS handshake pays the round trips too.
                terminator = DelayProxy("127.0.0.1", upstream_port, tls=tls)
                delay = DelayProxy("127.0.0.1", await terminator.start(), one_way_s=rtt / 2000)
                port = await delay.start()
                url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
                trust: ssl.SSLContext | bool = client_tls if tls else True
                warm = statistics.median(await warm_ms(http, url, trust, requests))
                cold = statistics.median(await cold_ms(http, url, trust, requests))
                await delay.close()
                await terminator.close()
                print(
                    f"{scheme:<10} {rtt:>7.0f}ms {warm:>7.1f}ms {cold:>7.1f}ms "
                    f"{cold / warm:>8.1f}x",
                    flush=True,
                )
    await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rtt-ms", default="0,50")
    args = parser.parse_args()
    asyncio.run(main(args.requests, [float(x) for x in args.rtt_ms.split(",")]))
    sys.exit(0)
