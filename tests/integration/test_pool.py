"""The warm pool against the real TTS server on 127.0.0.1, with faults the tests cause."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import socket
import ssl

import aiohttp
import pytest
import trustme
from aiohttp import web

from bridge.errors import TTSError, TTSUnavailable
from bridge.settings import PoolSettings
from bridge.silma import protocol as p
from bridge.silma.client import SilmaClient
from bridge.silma.endpoint import parse_endpoint
from bridge.silma.pool import SilmaPool
from bridge.tts_server import app as tts_app
from tests.delay_proxy import DelayProxy
from tests.servers import make_settings

SENTENCE = "The pool keeps connections warm."


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def make_pool(http, url: str, *, size=5, warm=3, acquire_timeout_s=2.0, max_age_s=300.0,
              ssl_context: ssl.SSLContext | bool = True, backoff_base_s=0.05) -> SilmaPool:
    return SilmaPool(http, parse_endpoint(url), api_key="",
                     limits=PoolSettings(size=size, warm=warm, max_age_s=max_age_s,
                                         backoff_base_s=backoff_base_s, backoff_max_s=0.5,
                                         acquire_timeout_s=acquire_timeout_s,
                                         health_interval_s=60.0),
                     connect_timeout_s=2.0, ssl_context=ssl_context)


def client_for(pool: SilmaPool, http) -> SilmaClient:
    return SilmaClient(pool.endpoint, pool, http, api_key="",
                       voice=p.SynthesizeRequest(text=""), timeout_s=20.0, want_ulaw=True)


async def speak(client: SilmaClient, text: str = SENTENCE) -> tuple[int, list[str]]:
    steps: list[str] = []
    audio = 0
    async for piece in client.synthesize(text, steps.append):
        audio += len(piece.data)
    return audio, steps


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def started(pool: SilmaPool):
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def test_warm_up_and_requests_reuse_warm_connections(tts, http):
    async with started(make_pool(http, tts.url)) as pool:
        await pool.wait_ready(3, timeout_s=5)
        client = client_for(pool, http)
        for _ in range(3):
            audio, steps = await speak(client)
            assert audio > 8000  # over a second of 8 kHz mu-law
            assert "fallback" not in steps
        stats = pool.stats()
    assert stats["ready"] == 3 and stats["connecting"] == 0
    assert stats["requests_served"] == 3
    assert stats["connect_failures"] == 0
    assert stats["acquire_wait_ms"]["p99"] < 50  # handed out at once, no connect in the path
    assert stats["ready_ratio_ok"] is True


async def test_server_down_at_start_then_started_pool_fills_by_itself(http):
    port = free_port()
    async with started(make_pool(http, f"http://127.0.0.1:{port}")) as pool:
        with pytest.raises(TimeoutError):
            await pool.wait_ready(1, timeout_s=0.3)
        assert pool.stats()["connect_failures"] >= 1
        server = await tts_app.start(make_settings().tts_server, host="127.0.0.1", port=port)
        try:
            await server.service.loaded()
            await pool.wait_ready(3, timeout_s=10)
            audio, _ = await speak(client_for(pool, http))
            assert audio > 0
        finally:
            await server.close()


async def test_server_restarted_mid_call_next_request_reconnects(http):
    port = free_port()
    settings = make_settings().tts_server
    server = await tts_app.start(settings, host="127.0.0.1", port=port)
    await server.service.loaded()
    async with started(make_pool(http, f"http://127.0.0.1:{port}")) as pool:
        await pool.wait_ready(3, timeout_s=5)
        client = client_for(pool, http)
        await speak(client)
        await server.close()  # killed: every pooled socket goes
        with pytest.raises(TTSError):
            await speak(client)  # no WebSocket, and the HTTP fallback is down too
        server = await tts_app.start(settings, host="127.0.0.1", port=port)
        try:
            await server.service.loaded()
            await pool.wait_ready(3, timeout_s=10)
            audio, steps = await speak(client)
            assert audio > 0 and "fallback" not in steps
        finally:
            await server.close()


async def test_dropped_connections_are_replaced_and_a_cut_request_resumes_where_it_was(tts,
                                                                                       http):
    proxy = DelayProxy("127.0.0.1", int(tts.url.rsplit(":", 1)[1]))
    port = await proxy.start()
    try:
        async with started(make_pool(http, f"http://127.0.0.1:{port}")) as pool:
            await pool.wait_ready(3, timeout_s=5)
            client = client_for(pool, http)
            long_text = " ".join([SENTENCE] * 12)
            whole, _ = await speak(client, long_text)
            steps: list[str] = []
            stream = client.synthesize(long_text, steps.append)
            first = await anext(stream)  # the request is under way
            assert proxy.drop_all() >= 3
            # Tried again on a new connection, the part already passed on skipped: the caller
            # gets the rest, about as much audio as an uncut rendering (Piper's own timing
            # varies a little from one rendering to the next), nothing twice.
            rest = [piece async for piece in stream]
            total = len(first.data) + sum(len(piece.data) for piece in rest)
            assert abs(total - whole) < 0.1 * whole, (total, whole)
            assert "retry:lost" in steps
            await pool.wait_ready(3, timeout_s=10)
            audio, steps = await speak(client)
            assert audio > 0 and "fallback" not in steps
    finally:
        await proxy.close()


async def test_slow_handshake_falls_back_to_http_within_acquire_timeout(tts, http):
    proxy = DelayProxy("127.0.0.1", int(tts.url.rsplit(":", 1)[1]))
    proxy.accept_delay_s = 1.0
    port = await proxy.start()
    try:
        pool = make_pool(http, f"http://127.0.0.1:{port}", acquire_timeout_s=0.2)
        async with started(pool):
            audio, steps = await speak(client_for(pool, http))
            assert audio > 0
            assert "fallback" in steps
            assert pool.stats()["fallbacks"] == 1
    finally:
        await proxy.close()


async def test_full_pool_serves_waiters_first_come_first_served(tts, http):
    async with started(make_pool(http, tts.url, size=1, warm=1)) as pool:
        await pool.wait_ready(1, timeout_s=5)
        held = [await pool.acquire() for _ in range(pool.stats()["connections"][0]["capacity"])]
        order: list[int] = []

        async def wait_turn(n: int) -> None:
            conn = await pool.acquire()
            order.append(n)
            pool.release(conn)

        waiters = [asyncio.create_task(wait_turn(n)) for n in range(3)]
        await asyncio.sleep(0)  # let every waiter queue (no condition is awaited here)
        assert pool.stats()["waiting"] == 3
        pool.release(held.pop())
        async with asyncio.timeout(5):
            await asyncio.gather(*waiters)
        assert order == [0, 1, 2]
        for conn in held:
            pool.release(conn)


async def test_acquire_times_out_when_pool_is_exhausted(tts, http):
    async with started(make_pool(http, tts.url, size=1, warm=1, acquire_timeout_s=0.1)) as pool:
        await pool.wait_ready(1, timeout_s=5)
        held = [await pool.acquire() for _ in range(pool.stats()["connections"][0]["capacity"])]
        with pytest.raises(TTSUnavailable, match="no TTS connection within"):
            await pool.acquire()
        assert pool.stats()["waiting"] == 0
        for conn in held:
            pool.release(conn)


async def test_refused_websocket_route_uses_http_fallback(tts, http):
    """A server with no WebSocket route (404 on /ws) still speaks over HTTP."""

    async def forward(request: web.Request) -> web.Response:
        async with http.post(f"{tts.url}/synthesize", data=await request.read(),
                             headers={"Content-Type": "application/json"}) as upstream:
            return web.Response(body=await upstream.read(), status=upstream.status,
                                content_type="application/json")

    app = web.Application()
    app.router.add_post("/synthesize", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with started(make_pool(http, url)) as pool:
            audio, steps = await speak(client_for(pool, http))
            assert audio > 0 and "fallback" in steps
            stats = pool.stats()
            assert stats["websocket_refused"] is True
            assert stats["fallbacks"] == 1
    finally:
        await runner.cleanup()


async def test_cancelled_request_keeps_connection_when_server_acks(tts, http):
    async with started(make_pool(http, tts.url, size=1, warm=1)) as pool:
        await pool.wait_ready(1, timeout_s=5)
        client = client_for(pool, http)
        stream = client.synthesize(" ".join([SENTENCE] * 10))
        assert inspect.isasyncgen(stream)  # a generator, so the caller can close it
        await anext(stream)
        await stream.aclose()  # barge-in: the caller stops listening mid-synthesis
        stats = pool.stats()
        assert stats["connections"][0]["healthy"] is True
        assert stats["in_use"] == 0
        audio, _ = await speak(client)
        assert audio > 0
        assert len(pool.stats()["connections"]) == 1  # the same socket served again


async def test_wss_with_self_signed_certificate(tts, http):
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    proxy = DelayProxy("127.0.0.1", int(tts.url.rsplit(":", 1)[1]), tls=server_ctx)
    port = await proxy.start()
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    try:
        async with started(make_pool(http, f"https://127.0.0.1:{port}",
                                     ssl_context=trusting)) as pool:
            await pool.wait_ready(3, timeout_s=5)
            assert pool.endpoint.ws_url.startswith("wss://")
            audio, steps = await speak(client_for(pool, http))
            assert audio > 0 and "fallback" not in steps
        untrusting = make_pool(http, f"https://127.0.0.1:{port}", acquire_timeout_s=0.3)
        async with started(untrusting):
            with pytest.raises(TTSUnavailable):
                await speak(client_for(untrusting, http))
            assert "certificate" in (untrusting.stats()["last_error"] or "").lower()
    finally:
        await proxy.close()


async def test_expired_connections_are_replaced_in_background(tts, http):
    pool = make_pool(http, tts.url, warm=2, max_age_s=0.5)
    async with started(pool):
        await pool.wait_ready(2, timeout_s=5)
        first_ids = {c["id"] for c in pool.stats()["connections"]}
        async with asyncio.timeout(5):
            while {c["id"] for c in pool.stats()["connections"]
                   if c["state"] == "ready"} & first_ids:
                await pool._changed.wait()
        await pool.wait_ready(2, timeout_s=5)
        audio, steps = await speak(client_for(pool, http))
        assert audio > 0 and "fallback" not in steps


def test_pool_limits_validation():
    with pytest.raises(ValueError):
        make_pool(None, "http://127.0.0.1:1", size=2, warm=3)
    assert dataclasses.is_dataclass(PoolSettings)


async def test_server_that_accepts_the_websocket_but_never_answers_is_never_ready(http):
    """A loopback server that upgrades the socket and stays silent: no connection is handed out
    as ready, the connects fail into the backoff, and the stats say why."""
    accepted = asyncio.Event()

    async def silent(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        accepted.set()
        async for _ in ws:  # reads the hello, never answers
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", silent)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        pool = make_pool(http, f"http://127.0.0.1:{runner.addresses[0][1]}", warm=1)
        async with started(pool):
            async with asyncio.timeout(5):
                await accepted.wait()
                while pool.stats()["connect_failures"] < 1:
                    await pool._changed.wait()
            stats = pool.stats()
            assert stats["ready"] == 0
            assert stats["last_error"] == "TTS server did not answer the handshake"
    finally:
        await runner.cleanup()
