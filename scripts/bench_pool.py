#!/usr/bin/env python3
"""What the warm pool saves: a request on a pooled connection vs one that opens its own, over ws
and wss, on loopback and behind an added round-trip delay.

    .venv/bin/pip install -e '.[bench]'    # trustme: the wss server's throwaway certificate
    .venv/bin/python scripts/bench_pool.py [--requests 30] [--rtt-ms 0,50,100]

For each transport and delay, in one run, with warm and cold requests taking turns:
- connection: how long the client's `acquire` took: from the warm pool (an idle socket handed
  out) vs opening a new one (TCP, TLS for wss, the WebSocket upgrade and the hello exchange);
- first audio: the whole request through the bridge's client (SilmaClient), from the ask to
  its first audio, acquire included;
- saved: cold minus warm first audio at p50, in ms, beside cold/warm, the ratio.

The TTS server runs the sim engine with no synthesis delay, so what is measured is the transport.
The added delay does not slow the TCP handshake (the local kernel answers it), so a real
network's cold connections cost one round trip more than shown: the savings are lower bounds.
The table is printed and written to scripts/results/pool.txt (--out).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import os
import platform
import ssl
import statistics
import sys
import time
from collections.abc import Collection
from pathlib import Path

import aiohttp
import trustme

# The repo root: the benchmark's test helpers live in tests/, which is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.settings import PoolSettings, load_settings
from bridge.silma import protocol as p
from bridge.silma.client import SilmaClient
from bridge.silma.connections import TTSConnection, open_connection
from bridge.silma.endpoint import Endpoint, parse_endpoint
from bridge.silma.pool import SilmaPool
from bridge.silma.retry_core import RetryBudget, RetryPolicy
from bridge.tracing.logs import configure_logging
from bridge.tts_server import app as tts_app
from tests.delay_proxy import DelayProxy

TEXT = "Warm connections answer at once."
NO_CLIP = p.SynthesizeRequest(text="")  # the server's default voice: no clip to register
# Two idle sockets, so a warm request never waits for the pool to open its spare.
LIMITS = PoolSettings(size=2, warm=2, acquire_timeout_s=10.0, health_interval_s=600.0)
TIMEOUT_S = 10.0
# Requests per side before measuring: a new proxy's and TLS context's first use is neither
# side's steady cost.
WARM_UP = 2
RESULTS = Path(__file__).resolve().parent / "results" / "pool.txt"


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


@dataclasses.dataclass(frozen=True)
class Spread:
    p50: float
    p95: float

    @classmethod
    def of(cls, ms: list[float]) -> Spread:
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        return cls(cuts[49], cuts[94])

    def cell(self, decimals: int) -> str:
        return f"{self.p50:.{decimals}f}/{self.p95:.{decimals}f}"


class TimedSource(abc.ABC):
    """A ConnectionSource (bridge/silma/client.py) that times its acquire, so a request's
    connection overhead is measured inside that request."""

    def __init__(self) -> None:
        policy = RetryPolicy()
        self.retry_budget = RetryBudget(policy.budget_tokens, policy.budget_ratio)
        self.last_acquire_ms = 0.0

    async def acquire(self, avoid: Collection[str] = ()) -> TTSConnection:
        started = time.perf_counter()
        conn = await self._connection()
        self.last_acquire_ms = elapsed_ms(started)
        return conn

    @abc.abstractmethod
    async def _connection(self) -> TTSConnection: ...

    @abc.abstractmethod
    def release(self, conn: TTSConnection, failure: str | None = None) -> None: ...

    @abc.abstractmethod
    async def settle(self) -> None:
        """Between requests, untimed: whatever a request left to clean up."""

    def note_fallback(self) -> None:
        raise RuntimeError("a request fell back to HTTP; its timing would mislead")

    def note_first_audio(self, seconds: float) -> None:
        return None  # the bridge's admission reads this; the benchmark times first audio itself


class Warm(TimedSource):
    """The warm pool, as the bridge uses it."""

    def __init__(self, pool: SilmaPool) -> None:
        super().__init__()
        self._pool = pool

    async def _connection(self) -> TTSConnection:
        return await self._pool.acquire()

    def release(self, conn: TTSConnection, failure: str | None = None) -> None:
        self._pool.release(conn, failure)

    async def settle(self) -> None:
        return None  # the connection is back in the pool, open


class Cold(TimedSource):
    """No pool: each request opens a connection the way the pool opens one, and it is closed
    after the request (untimed, in settle)."""

    def __init__(self, http: aiohttp.ClientSession, endpoint: Endpoint,
                 tls: ssl.SSLContext | bool) -> None:
        super().__init__()
        self._http = http
        self._endpoint = endpoint
        self._tls = tls
        self._used: list[TTSConnection] = []

    async def _connection(self) -> TTSConnection:
        return await open_connection(self._http, self._endpoint, api_key="",
                                     timeout_s=TIMEOUT_S, ssl=self._tls)

    def release(self, conn: TTSConnection, failure: str | None = None) -> None:
        self._used.append(conn)

    async def settle(self) -> None:
        while self._used:
            await self._used.pop().close()


def refuse_retries(step: str) -> None:
    """A request that was tried again measures two attempts: stop the run."""
    if step.startswith("retry:"):
        raise RuntimeError(f"a request was tried again ({step}); its timing would mislead")


@dataclasses.dataclass
class Side:
    """One way to get a connection, the client that requests through it, what it measured."""

    source: TimedSource
    client: SilmaClient
    connect_ms: list[float] = dataclasses.field(default_factory=list)
    first_audio_ms: list[float] = dataclasses.field(default_factory=list)

    @classmethod
    def over(cls, source: TimedSource, http: aiohttp.ClientSession, endpoint: Endpoint) -> Side:
        client = SilmaClient(endpoint, source, http, api_key="", voice=NO_CLIP,
                             timeout_s=TIMEOUT_S, want_ulaw=True)
        return cls(source, client)

    async def request(self, *, record: bool) -> None:
        started = time.perf_counter()
        # urgent: an utterance's first piece, the one a caller waits on.
        pieces = self.client.synthesize(TEXT, refuse_retries, urgent=True)
        async with contextlib.aclosing(pieces):
            await anext(pieces)
            first_audio = elapsed_ms(started)
            async for _ in pieces:  # the request ends (and its connection is given back)
                pass
        await self.source.settle()
        if record:
            self.connect_ms.append(self.source.last_acquire_ms)
            self.first_audio_ms.append(first_audio)


@dataclasses.dataclass(frozen=True)
class Row:
    transport: str
    rtt_ms: float
    acquire: Spread
    open: Spread
    warm: Spread
    cold: Spread

    @classmethod
    def of(cls, transport: str, rtt_ms: float, warm: Side, cold: Side) -> Row:
        return cls(transport, rtt_ms, Spread.of(warm.connect_ms), Spread.of(cold.connect_ms),
                   Spread.of(warm.first_audio_ms), Spread.of(cold.first_audio_ms))

    def line(self) -> str:
        saved = self.cold.p50 - self.warm.p50
        return (f"{self.transport:<9} {self.rtt_ms:>7.0f}ms  {self.acquire.cell(2):>15} "
                f"{self.open.cell(2):>15}  {self.warm.cell(1):>13} {self.cold.cell(1):>13}  "
                f"{saved:>7.1f}ms {self.cold.p50 / self.warm.p50:>8.1f}x")


HEADER = (
    f"{'':<19}  {'connection: acquire vs open':^31}  {'first audio: warm vs cold':^27}".rstrip(),
    f"{'transport':<9} {'added RTT':>9}  {'acquire p50/p95':>15} {'open p50/p95':>15}  "
    f"{'warm p50/p95':>13} {'cold p50/p95':>13}  {'saved p50':>9} {'cold/warm':>9}",
)


def progress(text: str) -> None:
    """On stderr, rewritten in place: the table on stdout stays clean."""
    print(f"\r{text:<40}\r", end="", file=sys.stderr, flush=True)


async def started_quiet(pool: SilmaPool) -> None:
    """Starts the pool and waits until its sockets are open and its start-up health check (an
    HTTP request and a WebSocket upgrade of its own) is done: neither may run during a
    measurement."""
    checked = asyncio.Event()
    pool.on_health = lambda ok: checked.set()
    await pool.start()
    await pool.wait_ready(LIMITS.warm, TIMEOUT_S)
    async with asyncio.timeout(TIMEOUT_S):
        await checked.wait()


async def measure(http: aiohttp.ClientSession, url: str, tls: ssl.SSLContext | bool, n: int,
                  label: str) -> tuple[Side, Side]:
    endpoint = parse_endpoint(url)
    pool = SilmaPool(http, endpoint, api_key="", limits=LIMITS, connect_timeout_s=TIMEOUT_S,
                     ssl_context=tls)
    try:
        await started_quiet(pool)
        warm = Side.over(Warm(pool), http, endpoint)
        cold = Side.over(Cold(http, endpoint, tls), http, endpoint)
        # Taking turns, so a load change on this shared machine falls on both sides alike.
        for i in range(WARM_UP + n):
            for side in (warm, cold):
                await side.request(record=i >= WARM_UP)
            done = i + 1 - WARM_UP
            progress(f"{label}: {done}/{n}" if done > 0 else f"{label}: warming up")
    finally:
        await pool.close()
    return warm, cold


def certificates() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The wss server's context and a client context that trusts it, from a throwaway CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def run(n: int, rtts_ms: list[float]) -> list[str]:
    """Measures every setting; prints each row as it is done and returns the table's lines."""
    base = load_settings(env={}).tts_server
    settings = dataclasses.replace(base, engine="sim", sim_first_audio_s=0.0, sim_rtf=0.001,
                                   port=0)
    server = await tts_app.start(settings, host="127.0.0.1", port=0)
    await server.service.loaded()
    upstream = int(server.url.rsplit(":", 1)[1])
    server_tls, client_tls = certificates()
    lines = [f"{n} requests per side, warm and cold taking turns; ms; sim engine, no synthesis "
             "delay", *HEADER]
    print(*lines, sep="\n", flush=True)
    async with aiohttp.ClientSession() as http:
        for rtt in rtts_ms:
            for transport, tls in (("ws", None), ("wss", server_tls)):
                # The delay sits in front of TLS, so the TLS handshake pays the round trips too.
                terminator = DelayProxy("127.0.0.1", upstream, tls=tls)
                delay = DelayProxy("127.0.0.1", await terminator.start(), one_way_s=rtt / 2000)
                url = f"{'https' if tls else 'http'}://127.0.0.1:{await delay.start()}"
                try:
                    warm, cold = await measure(http, url, client_tls if tls else True, n,
                                               f"{transport} +{rtt:g} ms")
                finally:
                    await delay.close()
                    await terminator.close()
                lines.append(Row.of(transport, rtt, warm, cold).line())
                progress("")
                print(lines[-1], flush=True)
    await server.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="per side and setting (>= 2)")
    parser.add_argument("--rtt-ms", default="0,50,100", help="added round trips, comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the table is written")
    args = parser.parse_args()
    if args.requests < 2:
        parser.error("--requests must be at least 2 (p50 and p95 need two samples)")
    # The server logs every request at info; a warning (a failed connect, a refused reply)
    # still shows, on stderr.
    configure_logging(level="warning")
    lines = asyncio.run(run(args.requests, [float(x) for x in args.rtt_ms.split(",")]))
    command = " ".join(["scripts/bench_pool.py", *sys.argv[1:]])
    stamp = (f"# .venv/bin/python {command}   ({datetime.date.today()}, "
             f"{os.cpu_count()} cores, Python {platform.python_version()})")
    args.out.write_text("\n".join([stamp, *lines]) + "\n")
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
