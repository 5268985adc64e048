"""A hostile TTS server on 127.0.0.1 against the real pool, connections, client and SSRF guard.

A tenant may point the bridge at any TTS server, so the server is untrusted and must never take
the shared process down. The server here speaks our protocol (hello, synthesize, audio_chunk,
synthesis_complete, error, cancelled) and answers each request with a seeded random mutation
(invalid JSON, wrong types, unknown types, missing/extra ids, out-of-range sample rates, unknown
formats, giant or invalid base64, half samples, binary frames, duplicate completes, stalls,
closes mid-reply) or a hostile health body. The fuzz prints its seed; set HOSTILE_TTS_SEED to
replay a run.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import gc
import json
import os
import random
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from bridge.audio.codec import decode_audio
from bridge.errors import (
    AudioFormatError,
    ConfigError,
    TTSError,
    TTSReplyError,
    TTSReplyTooLarge,
    TTSUnavailable,
)
from bridge.settings import PoolSettings
from bridge.silma import connection as connection_module
from bridge.silma import protocol as p
from bridge.silma.client import SilmaClient
from bridge.silma.connection import SilmaConnection
from bridge.silma.connections import TTSConnection
from bridge.silma.endpoint import parse_endpoint
from bridge.silma.pool import SilmaPool
from bridge.silma.pools import PoolRegistry, TTSTarget
from bridge.silma.retry_core import RetryBudget
from bridge.web.url_guard import guarded_session

RATE = 24000
TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2400) / RATE)).astype("<f4")  # 100 ms
TONE_B64 = base64.b64encode(TONE.tobytes()).decode()
HALF_B64 = base64.b64encode(TONE[:1200].tobytes()).decode()
# A message past the WebSocket's 8 MiB max_msg_size: refused from its frame header, unbuffered.
GIANT = '{"type":"audio_chunk","seq":0,"audio":"' + "A" * (p.MAX_REPLY_BYTES + 16) + '"}'
GIANT_BYTES = GIANT.encode()
# The same as a raw text frame (unmasked, 64-bit length), its first MiB written: the bound must
# hold from the header, and the server's own buffers stay out of the memory measurement.
GIANT_FRAME = bytes([0x81, 127]) + len(GIANT_BYTES).to_bytes(8, "big") + GIANT_BYTES[:1 << 20]
WIRE_CASES = 2000  # through the pool, the client and real sockets
HTTP_CASES = 500  # through the HTTP fallback
PARSER_CASES = 8000  # straight into the parser and the codec
MEMORY_BOUND_MIB = 32  # a legal 8 MiB HTTP reply read whole is ~16 MiB; a 1 Hz chunk cost 795 MiB


@dataclasses.dataclass
class Reply:
    """What the hostile server sends for one request, and what the bridge must make of it."""

    frames: list[str | bytes]
    expect: str  # ok | malformed | oversize | error | timeout | lost | bad_audio
    then: str = "done"  # done | close | stall
    ack_cancel: bool = True


def _chunk(rid: str | None, **fields: Any) -> str:
    body: dict[str, Any] = {"type": "audio_chunk", "seq": 0, "audio": HALF_B64,
                            "format": "f32le", "sample_rate": RATE}
    if rid is not None:
        body["id"] = rid
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not _DROP}).decode()


def _complete(rid: str | None, **fields: Any) -> str:
    body: dict[str, Any] = {"type": "synthesis_complete", "audio": HALF_B64, "format": "f32le",
                            "sample_rate": RATE}
    if rid is not None:
        body["id"] = rid
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not _DROP}).decode()


_DROP = object()  # a field left out


def normal(rid: str | None) -> Reply:
    return Reply([_chunk(rid), _complete(rid)], "ok")


def mutation(rng: random.Random, rid: str | None) -> Reply:
    """One seeded hostile reply to request `rid`."""
    kind = rng.choices(
        ["normal", "invalid_json", "non_object", "wrong_type", "unknown_type", "bad_rate",
         "bad_format", "bad_base64", "half_sample", "binary", "duplicate_complete",
         "missing_id", "foreign_id", "extra_fields", "zero_rate", "error_reply",
         "close_mid_reply", "stall", "giant", "ulaw_odd"],
        weights=[12, 8, 6, 10, 5, 10, 6, 6, 5, 5, 4, 3, 4, 4, 3, 4, 2, 0.4, 0.5, 2])[0]
    # Sometimes good audio came first.
    head: list[str | bytes] = [_chunk(rid)] if rng.random() < 0.5 else []
    if kind == "normal":
        return normal(rid)
    if kind == "invalid_json":
        bad = rng.choice(["{", "nope", '{"type": "audio_chunk",', "\u0000", "{'a': 1}", ""])
        return Reply([*head, bad], "malformed")
    if kind == "non_object":
        return Reply([*head, rng.choice(["[]", "[1, 2]", '"text"', "42", "null", "true"])],
                     "malformed")
    if kind == "wrong_type":
        field, value = rng.choice([("seq", "1"), ("seq", -3), ("seq", 1.5), ("audio", 12),
                                   ("audio", ["x"]), ("format", 3), ("sample_rate", "24000"),
                                   ("id", 7), ("id", {"x": 1}), ("id", ""), ("seq", None)])
        return Reply([*head, _chunk(rid, **{field: value})], "malformed")
    if kind == "unknown_type":
        # (No type at all is the seed's HTTP answer, a complete: not hostile.)
        return Reply([*head, orjson.dumps({"type": rng.choice(["mystery", "", 5, []]),
                                           "id": rid}).decode()], "malformed")
    if kind == "bad_rate":
        rate = rng.choice([1, 2, -8000, 7999, 48001, 10**9, 2**63, True, 24000.5, "x"])
        return Reply([*head, _chunk(rid, sample_rate=rate)], "malformed")
    if kind == "bad_format":
        return Reply([*head, _chunk(rid, format=rng.choice(["mp3", "F32LE", "opus", " "]))],
                     "malformed")
    if kind == "bad_base64":
        return Reply([*head, _chunk(rid, audio=rng.choice(["abc$", "====", "A", "AAA"]))],
                     "malformed")
    if kind == "half_sample":
        size = rng.choice([1, 2, 3, 5, 4097])
        return Reply([*head, _chunk(rid, audio=base64.b64encode(b"\x00" * size).decode())],
                     "malformed")
    if kind == "binary":
        return Reply([*head, TONE.tobytes()[: rng.randint(1, 512)]], "malformed")
    if kind == "duplicate_complete":
        return Reply([_chunk(rid), _complete(rid), _complete(rid)], "ok")
    if kind == "missing_id":
        return Reply([_chunk(None), _complete(None)], "ok")  # one request in flight: its own
    if kind == "foreign_id":
        return Reply([_chunk("not-ours"), _chunk(rid), _complete(rid)], "ok")
    if kind == "extra_fields":
        return Reply([_chunk(rid, extra=[1, 2], nested={"a": None}), _complete(rid, z=1)], "ok")
    if kind == "zero_rate":  # 0 means "not declared": the seed default applies
        return Reply([_chunk(rid, sample_rate=0), _complete(rid, sample_rate=_DROP)], "ok")
    if kind == "error_reply":
        message = {"type": "error", "error": "x" * rng.choice([1, 5000]), "code": "busy"}
        if rid is not None:
            message["id"] = rid
        return Reply([*head, orjson.dumps(message).decode()], "error")
    if kind == "close_mid_reply":
        return Reply(head or [_chunk(rid)], "lost", then="close")
    if kind == "stall":
        return Reply(head, "timeout", then="stall", ack_cancel=rng.random() < 0.5)
    if kind == "giant":
        return Reply([*head, GIANT_FRAME], "oversize")
    # mu-law at 8 kHz passes untouched: an odd length is fine for one-byte samples.
    return Reply([_chunk(rid, format="ulaw", sample_rate=8000,
                         audio=base64.b64encode(b"\xff" * rng.randint(1, 999)).decode()),
                  _complete(rid, audio="")], "ok")


HELLO_OK = orjson.dumps({"type": "hello", "capabilities": ["id", "stream", "cancel"],
                         "engine": "hostile", "sample_rate": RATE, "max_in_flight": 1}).decode()
BAD_HELLOS = [
    '{"type": "hello", "capabilities": "id"}',
    '{"type": "hello", "capabilities": ["id"], "max_in_flight": 1e300}',
    '{"type": "hello", "capabilities": ["id"], "sample_rate": 1}',
    "[]",
]


class Hostile:
    """The hostile server. Requests are matched to their scripted reply by their text."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.scripts: dict[str, Callable[[str | None], Reply]] = {}  # built with the request id
        self.health: Callable[[], web.StreamResponse] = lambda: web.json_response({"ready": True})
        self.http: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}
        self.api_key: str | None = None  # when set, the WebSocket upgrade needs it
        self.bad_hellos_left = 0  # the next connections' hellos are malformed
        self.internal_hits = 0
        self.health_hits = 0
        self.seen_paths: list[str] = []
        self._health_waiters: list[tuple[int, asyncio.Event]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self.ws)
        app.router.add_get("/health", self.health_route)
        app.router.add_post("/synthesize", self.synthesize)
        app.router.add_route("*", "/internal", self.internal)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def internal(self, _: web.Request) -> web.Response:
        self.internal_hits += 1  # an "internal service": reaching it is the SSRF
        return web.json_response({"ready": True, "secret": "internal"})

    async def health_route(self, request: web.Request) -> web.StreamResponse:
        self.health_hits += 1
        self.seen_paths.append(request.path_qs)
        for count, event in self._health_waiters:
            if self.health_hits >= count:
                event.set()
        return self.health()

    async def health_checks(self, more: int, timeout_s: float = 5.0) -> None:
        """Until `more` further health requests have come in."""
        event = asyncio.Event()
        self._health_waiters.append((self.health_hits + more, event))
        async with asyncio.timeout(timeout_s):
            await event.wait()

    async def synthesize(self, request: web.Request) -> web.StreamResponse:
        text = orjson.loads(await request.read()).get("text", "")
        handler = self.http.get(text)
        if handler is not None:
            return await handler(request)
        return web.Response(body=orjson.dumps({"audio": TONE_B64}),
                            content_type="application/json")

    async def ws(self, request: web.Request) -> web.StreamResponse:
        self.seen_paths.append(request.path_qs)
        if self.api_key is not None and \
                request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": "wrong API key"}, status=401)
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        stalled: set[str | None] = set()
        acks: dict[str | None, bool] = {}
        async for msg in ws:
            message = orjson.loads(msg.data)
            kind = message.get("type")
            if kind == "hello":
                if self.bad_hellos_left:
                    self.bad_hellos_left -= 1
                    await ws.send_str(BAD_HELLOS[self.bad_hellos_left % len(BAD_HELLOS)])
                else:
                    await ws.send_str(HELLO_OK)
                continue
            if kind == "cancel":
                if acks.get(message["id"], True):
                    await ws.send_str(orjson.dumps({"type": "cancelled",
                                                    "id": message["id"]}).decode())
                continue
            rid = message.get("id")
            text = message.get("text", "")
            script = self.scripts.get(text)
            reply = script(rid) if script else self.replies.get(text) or normal(rid)
            if reply.then == "stall":
                stalled.add(rid)
                acks[rid] = reply.ack_cancel
            try:
                for frame in reply.frames:
                    if frame is GIANT_FRAME:
                        assert request.transport is not None
                        request.transport.write(frame)
                    elif isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_str(frame)
            except ConnectionError:
                break  # the bridge hung up on a reply it refused, as it should
            if reply.then == "close":
                await ws.close()
                break
        return ws


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    server = Hostile()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The guarded session a tenant's endpoint gets; loopback allowed (the server is local)."""
    async with guarded_session(allow_private=True) as http:
        yield http


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What the event loop reports ("Task exception was never retrieved" and the like)."""
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    yield errors
    gc.collect()  # a task that died unobserved reports when it is collected
    loop.set_exception_handler(previous)


@pytest.fixture(autouse=True)
def quick_cancel_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stalled server that never acks a cancel costs this long per case; 2 s in production.
    monkeypatch.setattr(connection_module, "CANCEL_ACK_TIMEOUT_S", 0.2)


def make_pool(session: aiohttp.ClientSession, url: str, *, api_key: str = "",
              health_interval_s: float = 60.0, warm: int = 3) -> SilmaPool:
    return SilmaPool(session, parse_endpoint(url), api_key=api_key,
                     limits=PoolSettings(size=5, warm=warm, backoff_base_s=0.01,
                                         backoff_max_s=0.05, acquire_timeout_s=5.0,
                                         health_interval_s=health_interval_s),
                     connect_timeout_s=2.0)


def client_for(pool: SilmaPool, session: aiohttp.ClientSession, *,
               timeout_s: float = 2.0) -> SilmaClient:
    return SilmaClient(pool.endpoint, pool, session, api_key="",
                       voice=p.SynthesizeRequest(text=""), timeout_s=timeout_s,
                       want_ulaw=False, counters=pool.counters)


async def speak(client: SilmaClient, text: str) -> np.ndarray:
    """The utterance decoded as the call's speaker does it."""
    samples = [np.zeros(0, dtype=np.float32)]
    async for piece in client.synthesize(text):
        audio, _ = decode_audio(piece.data, piece.format or None, piece.sample_rate)
        samples.append(audio)
    return np.concatenate(samples)


def assert_real_audio(samples: np.ndarray) -> None:
    assert len(samples) == len(TONE)  # two half chunks of the tone, nothing lost or added
    np.testing.assert_allclose(samples, TONE, atol=1e-6)


def outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, TTSReplyTooLarge):
        return "oversize"
    if isinstance(exc, TTSReplyError):
        return "malformed"
    if isinstance(exc, TTSUnavailable):
        return "lost"
    if isinstance(exc, TTSError):
        return "timeout" if "timed out" in str(exc) else "error"
    if isinstance(exc, AudioFormatError):
        return "bad_audio"
    raise AssertionError(f"a raw {type(exc).__name__} reached the caller: {exc}")


@contextlib.asynccontextmanager
async def started(pool: SilmaPool) -> AsyncIterator[SilmaPool]:
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


# --- targeted ----------------------------------------------------------------------------------


async def test_sample_rate_1_is_refused_without_a_big_allocation(hostile, session, loop_errors):
    async with started(make_pool(session, hostile.url)) as pool:
        await pool.wait_ready(3, timeout_s=5)
        client = client_for(pool, session)
        sixteen_kb = base64.b64encode(b"\x00" * 16384).decode()
        # No id: routed to the one request in flight.
        hostile.replies["one hertz"] = Reply([_chunk(None, audio=sixteen_kb, sample_rate=1)],
                                             "malformed")
        tracemalloc.start()
        try:
            with pytest.raises(TTSReplyError, match="sample_rate 1 is outside 8000-48000 Hz"):
                await speak(client, "one hertz")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024  # the audit measured +795 MiB for this chunk
        assert pool.stats()["malformed_replies"] == 1
        assert_real_audio(await speak(client, "and then a normal sentence"))
    assert not loop_errors


async def test_invalid_json_fails_the_one_request_with_a_reason_and_the_next_succeeds(
        hostile, session, loop_errors):
    async with started(make_pool(session, hostile.url)) as pool:
        await pool.wait_ready(3, timeout_s=5)
        client = client_for(pool, session)
        hostile.replies["broken"] = Reply([_chunk(None), "{not json"], "malformed")
        with pytest.raises(TTSReplyError, match="invalid JSON"):
            await speak(client, "broken")
        stats = pool.stats()
        assert stats["malformed_replies"] == 1
        assert stats["last_refused_reply"] == "TTS server sent invalid JSON"
        for _ in range(3):  # the broken socket was replaced; every later request works
            assert_real_audio(await speak(client, "fine"))
        assert pool.maintainer_running
        assert pool.stats()["fallbacks"] == 0
    assert not loop_errors


async def test_a_failing_hook_or_reader_never_leaves_a_request_waiting(hostile, session,
                                                                       monkeypatch):
    """Any exception in the reader, not only a protocol error, fails the requests in flight."""
    async with started(make_pool(session, hostile.url, warm=1)) as pool:
        await pool.wait_ready(1, timeout_s=5)
        conn = await pool.acquire()
        assert isinstance(conn, SilmaConnection)

        def explode(_: p.ServerMessage) -> None:
            raise RuntimeError("a bug in routing")

        monkeypatch.setattr(conn, "_route", explode)
        request = conn.prepare(p.SynthesizeRequest(text="anything"), want_stream=True,
                               want_format=None, want_rate=None)
        with pytest.raises(TTSReplyError, match="RuntimeError: a bug in routing"):
            async for _ in conn.synthesize(request, timeout_s=5):
                pass
        pool.release(conn)
        assert pool.stats()["reader_failures"] == 1
        assert_real_audio(await speak(client_for(pool, session), "after the bug"))


async def test_a_server_streaming_without_end_fails_its_request(hostile, session, monkeypatch):
    monkeypatch.setattr(connection_module, "MAX_REQUEST_AUDIO_BYTES", 20_000)
    async with started(make_pool(session, hostile.url, warm=1)) as pool:
        await pool.wait_ready(1, timeout_s=5)
        client = client_for(pool, session)
        hostile.replies["endless"] = Reply([_chunk(None)] * 10, "oversize", then="stall")
        with pytest.raises(TTSReplyTooLarge, match="for one request"):
            await speak(client, "endless")
        assert pool.stats()["oversize_replies"] == 1
        assert_real_audio(await speak(client, "short"))


async def test_message_over_the_websocket_bound_is_refused(hostile, session, loop_errors):
    async with started(make_pool(session, hostile.url, warm=1)) as pool:
        await pool.wait_ready(1, timeout_s=5)
        client = client_for(pool, session)
        hostile.replies["giant"] = Reply([GIANT], "oversize")  # really sent, 8 MiB and more
        with pytest.raises(TTSReplyTooLarge, match="over the bound of 8388608 bytes"):
            await speak(client, "giant")
        assert pool.stats()["oversize_replies"] == 1
        assert_real_audio(await speak(client, "small again"))
    assert not loop_errors


@pytest.mark.parametrize("body, status", [
    (lambda: web.json_response([1, 2, 3]), "bad health reply: a JSON list, not an object"),
    (lambda: web.json_response("ok"), "bad health reply: a JSON str, not an object"),
    (lambda: web.Response(text="<html>"), "bad health reply: not JSON"),
    (lambda: web.json_response({"ready": "yes"}), "bad health reply: ready is not true or false"),
    (lambda: web.json_response({"ready": False}), "not ready"),
    (lambda: web.json_response({"pad": "x" * 100_000}), "bad health reply: the health reply"),
    (lambda: web.Response(status=500), "HTTP 500"),
])
async def test_hostile_health_bodies_keep_the_maintainer_alive(hostile, session, loop_errors,
                                                               body, status):
    hostile.health = body
    async with started(make_pool(session, hostile.url, health_interval_s=0.02)) as pool:
        await hostile.health_checks(3)  # the maintainer kept checking after each bad body
        assert pool.maintainer_running
        health = await pool.check_health()
        assert health["status"].startswith(status)
        assert health["server"] == {} or status == "not ready"
        stats = pool.stats()
        assert stats["health_failures"] >= 3 and stats["maintainer_failures"] == 0
        await pool.wait_ready(3, timeout_s=5)  # its connections are unaffected
    assert not loop_errors


async def test_a_302_from_health_is_not_followed(hostile, session):
    hostile.health = lambda: web.Response(status=302, headers={"Location": "/internal"})
    async with started(make_pool(session, hostile.url)) as pool:
        health = await pool.check_health()
        assert health["status"] == "redirect refused (HTTP 302)"
        assert hostile.internal_hits == 0


async def test_a_redirecting_http_fallback_and_websocket_are_not_followed(hostile, session):
    hostile.http["moved"] = static(lambda: web.Response(status=307,
                                                        headers={"Location": "/internal"}))
    client = SilmaClient(parse_endpoint(hostile.url), _NoSockets(), session, api_key="",
                         voice=p.SynthesizeRequest(text=""), timeout_s=2.0, want_ulaw=False)
    with pytest.raises(TTSError, match="HTTP 307 \\(a redirect\\), which is not followed"):
        await speak(client, "moved")
    # ws_connect follows redirects with no option: the guarded session refuses them itself.
    async def moved(_: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": f"{hostile.url}/internal"})

    app = web.Application()
    app.router.add_get("/ws", moved)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        with pytest.raises(TTSUnavailable, match="a redirect\\): not followed"):
            await SilmaConnection.open(session, parse_endpoint(url), api_key="", timeout_s=2)
    finally:
        await runner.cleanup()
    assert hostile.internal_hits == 0


async def test_health_says_whether_the_api_key_is_accepted(hostile, session):
    hostile.api_key = "right-key"
    async with started(make_pool(session, hostile.url, api_key="wrong-key", warm=0)) as pool:
        health = await pool.check_health()
        assert (health["status"], health["api_key"]) == ("API key refused", "refused")
        assert "wrong-key" not in str(pool.stats())
    async with started(make_pool(session, hostile.url, api_key="right-key", warm=0)) as pool:
        health = await pool.check_health()
        assert (health["status"], health["api_key"]) == ("ok", "accepted")
    assert not any("key" in path for path in hostile.seen_paths)  # never in a URL


async def test_a_supervised_maintainer_survives_its_own_failure(hostile, session, loop_errors):
    async with started(make_pool(session, hostile.url, health_interval_s=0.02)) as pool:
        await hostile.health_checks(1)
        failures = iter([True])
        real = pool._core.next_deadline

        def failing_once(now: float) -> float | None:
            if next(failures, False):
                raise KeyError("a bug in planning")
            return real(now)

        pool._core.next_deadline = failing_once  # type: ignore[method-assign]
        await hostile.health_checks(3)  # it went on checking after the failure
        stats = pool.stats()
        assert stats["maintainer_failures"] == 1 and stats["maintainer_running"] is True
        assert "KeyError" in (stats["last_maintainer_error"] or "")
    assert not loop_errors


class _StaticResolver(AbstractResolver):
    def __init__(self, table: dict[str, str]) -> None:
        self.table = table

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{"hostname": host, "host": self.table[host], "port": port,
                 "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        return None


async def test_a_name_resolving_to_a_forbidden_address_is_refused_at_connect_time(hostile):
    port = hostile.url.rsplit(":", 1)[1]
    names = _StaticResolver({"tts.example.test": "127.0.0.1"})  # saved public, now loopback
    async with guarded_session(allow_private=False, resolver=names) as rebound, \
            guarded_session(allow_private=False) as system:
        for http, url in ((rebound, f"http://tts.example.test:{port}"),
                          (system, f"http://localhost:{port}"),  # the system resolver
                          (system, hostile.url)):  # an IP literal: no resolver involved
            pool = make_pool(http, url, warm=1)
            with pytest.raises(TTSUnavailable, match="loopback or private"):
                await SilmaConnection.open(http, pool.endpoint, api_key="", timeout_s=2)
            health = await pool.check_health()
            assert health["status"].startswith("unreachable: ClientConnector"), health
        assert hostile.health_hits == 0 and not hostile.seen_paths  # nothing got through
    async with guarded_session(allow_private=True, resolver=names) as lenient:
        conn = await SilmaConnection.open(
            lenient, parse_endpoint(f"http://tts.example.test:{port}"), api_key="", timeout_s=2)
        assert conn.usable and conn.supports("stream")
        await conn.close()


async def test_user_chosen_targets_use_the_guarded_session(hostile, session):
    async with aiohttp.ClientSession() as trusted:
        registry = PoolRegistry(trusted, PoolSettings(warm=0), connect_timeout_s=2,
                                request_timeout_s=2, want_ulaw=False, guarded_session=session)
        tenant = TTSTarget(hostile.url, "k", user_chosen=True)
        operator = TTSTarget(hostile.url, "k")
        assert tenant.pool_key != operator.pool_key
        assert registry.session_for(tenant) is session
        assert registry.session_for(operator) is trusted
        async with registry.client(tenant) as client:
            assert_real_audio(await speak(client, "through the guard"))
            assert client._session is session
        assert {s["endpoint"] for s in registry.stats()} == {parse_endpoint(hostile.url).ws_url}
        await registry.close()
        unguarded = PoolRegistry(trusted, PoolSettings(warm=0), connect_timeout_s=2,
                                 request_timeout_s=2, want_ulaw=False)
        with pytest.raises(ConfigError, match="guarded_session"):
            await unguarded.pool_for(tenant)  # fails closed, never the unguarded session
        await unguarded.close()


class _NoSockets:
    """A ConnectionSource with no WebSocket: every request takes the HTTP fallback."""

    fallbacks = 0
    retry_budget = RetryBudget(1.0, 0.5)

    async def acquire(self, avoid: Collection[str] = ()) -> TTSConnection:
        raise TTSUnavailable("no WebSocket here")

    def release(self, conn: TTSConnection, failure: str | None = None) -> None:
        raise AssertionError("nothing was acquired")

    def note_fallback(self) -> None:
        self.fallbacks += 1

    def note_first_audio(self, seconds: float) -> None:
        pass


async def test_malformed_hellos_are_counted_and_the_connection_speaks_seed(hostile, session):
    hostile.bad_hellos_left = len(BAD_HELLOS)
    async with started(make_pool(session, hostile.url, warm=len(BAD_HELLOS))) as pool:
        await pool.wait_ready(len(BAD_HELLOS), timeout_s=5)
        assert pool.stats()["malformed_replies"] == len(BAD_HELLOS)
        conn = await pool.acquire()
        assert conn.hello is None and conn.max_in_flight == 1  # seed: no extension is used
        pool.release(conn)
        assert_real_audio(await speak(client_for(pool, session), "seed server"))


# --- the fuzz ----------------------------------------------------------------------------------

HOSTILE_VALUES: list[Any] = [None, True, False, 0, 1, -1, 7999, 48001, 2**70, 1e308, 0.5, "",
                             "x", "f32le", "ulaw", "24000", "====", [], [1], {}, {"a": [None]},
                             "A" * 9, "\u0000", -(2**63)]
TEMPLATES: list[dict[str, Any]] = [
    {"type": "audio_chunk", "id": "r1", "seq": 0, "audio": HALF_B64, "format": "f32le",
     "sample_rate": RATE},
    {"type": "synthesis_complete", "id": "r1", "audio": HALF_B64, "format": "s16le",
     "sample_rate": 8000, "chunks": 2},
    {"audio": TONE_B64},
    {"type": "error", "error": "busy", "code": "busy", "id": "r1"},
    {"type": "hello", "capabilities": ["id", "stream"], "engine": "e", "sample_rate": 22050,
     "max_in_flight": 4, "can_clone": True},
    {"type": "cancelled", "id": "r1"},
    {"type": "voice_registered", "voice_id": "v1", "duration_s": 3.5},
]


def parser_case(rng: random.Random) -> bytes:
    message = dict(rng.choice(TEMPLATES))
    for _ in range(rng.randint(0, 3)):
        action = rng.random()
        key = rng.choice([*message, "type", "id", "audio", "sample_rate", "format", "extra"])
        if action < 0.6:
            message[key] = rng.choice(HOSTILE_VALUES)
        elif action < 0.8:
            message.pop(key, None)
        else:
            message["audio"] = base64.b64encode(rng.randbytes(rng.randint(0, 64))).decode()
    raw = json.dumps(message).encode()  # stdlib: orjson cannot write the 2**70 it must read
    if rng.random() < 0.15:  # corrupt the text itself
        cut = rng.randint(0, len(raw))
        raw = raw[:cut] + bytes([rng.randint(0, 255)]) + raw[cut + 1:]
    return raw


def fuzz_parser(rng: random.Random, cases: int) -> int:
    """Every outcome is a bounded message or a TTSReplyError; decoding what passed is bounded.
    Returns how many replies were refused."""
    refused = 0
    for _ in range(cases):
        raw = parser_case(rng)
        try:
            reply = p.parse_server_message(raw)
        except TTSReplyError:
            refused += 1
            continue
        if isinstance(reply, p.AudioChunk | p.SynthesisComplete):
            assert reply.format in (*p.FORMATS, ""), raw
            assert reply.sample_rate == 0 or 8000 <= reply.sample_rate <= 48000, raw
            assert len(reply.audio) <= p.MAX_CHUNK_AUDIO_BYTES, raw
            try:
                samples, rate = decode_audio(reply.audio, reply.format or None,
                                             reply.sample_rate or None)
            except AudioFormatError:
                continue  # a WAV header the parser let through; the speaker handles this
            assert len(samples) <= len(reply.audio) and 8000 <= rate <= 192_000, raw
        elif isinstance(reply, p.ServerHello):
            assert all(isinstance(c, str) for c in reply.capabilities)
            assert 1 <= reply.max_in_flight and 8000 <= reply.sample_rate <= 48000
        assert getattr(reply, "id", None) is None or isinstance(reply.id, str)  # type: ignore[union-attr]
    return refused


def static(make: Callable[[], web.StreamResponse]
           ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(_: web.Request) -> web.StreamResponse:
        return make()

    return handler


async def endless_body(request: web.Request) -> web.StreamResponse:
    """Chunked, no length declared, written until the bridge stops reading."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    view = memoryview(GIANT_BYTES)
    try:
        for start in range(0, len(view), 64 * 1024):
            await response.write(view[start:start + 64 * 1024])
    except ConnectionError:
        pass  # the bridge hung up past its cap, as it should
    return response


def http_mutation(rng: random.Random
                  ) -> tuple[Callable[[web.Request], Awaitable[web.StreamResponse]], str]:
    def json_reply(body: Any, status: int = 200, **headers: str
                   ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        return static(lambda: web.Response(body=orjson.dumps(body), status=status,
                                           content_type="application/json", headers=headers))

    kind = rng.choices(["ok", "json", "array", "rate", "redirect", "giant", "endless", "gzip",
                        "error", "html", "empty"],
                       weights=[20, 10, 10, 10, 8, 1, 1, 5, 8, 8, 5])[0]
    if kind == "ok":
        return json_reply({"audio": TONE_B64, "format": "f32le", "sample_rate": RATE}), "ok"
    if kind == "json":
        return static(lambda: web.Response(text="{oops", content_type="application/json")), \
            "malformed"
    if kind == "array":
        return json_reply([{"audio": TONE_B64}]), "malformed"
    if kind == "rate":
        return json_reply({"audio": TONE_B64, "sample_rate": rng.choice([1, 100, 10**9])}), \
            "malformed"
    if kind == "redirect":
        status = rng.choice([301, 302, 303, 307, 308])
        return static(lambda: web.Response(status=status, headers={"Location": "/internal"})), \
            "error"
    if kind == "giant":  # declared: refused from its Content-Length, nothing read
        return static(lambda: web.Response(body=GIANT_BYTES, content_type="application/json")), \
            "oversize"
    if kind == "endless":
        return endless_body, "oversize"
    if kind == "gzip":
        return json_reply({"audio": TONE_B64}, 200, **{"Content-Encoding": "gzip"}), "malformed"
    if kind == "error":
        return json_reply({"error": "later", "code": "busy"}, 503), "error"
    if kind == "html":
        return static(lambda: web.Response(text="<h1>oops</h1>", status=500)), "malformed"
    return static(lambda: web.Response(body=b"", content_type="application/json")), "malformed"


async def fuzz_http(hostile: Hostile, session: aiohttp.ClientSession, rng: random.Random,
                    cases: int) -> tuple[collections.Counter[str], int, int]:
    client = SilmaClient(parse_endpoint(hostile.url), _NoSockets(), session, api_key="",
                         voice=p.SynthesizeRequest(text=""), timeout_s=5.0, want_ulaw=False)
    outcomes: collections.Counter[str] = collections.Counter()
    for i in range(cases):
        text = f"http case {i}"
        hostile.http[text], expect = http_mutation(rng)
        got = await run_case(client, text)
        assert got == expect, (text, expect, got)
        outcomes[got] += 1
    return outcomes, client.counters.malformed, client.counters.oversize


async def run_case(client: SilmaClient, text: str) -> str:
    try:
        samples = await speak(client, text)
    except Exception as exc:  # classified: a raw ValueError/KeyError here fails the test
        return outcome(exc)
    assert len(samples) > 0, text
    return "ok"


async def test_fuzzed_replies_never_take_the_shared_process_down(hostile, session, loop_errors,
                                                                 capsys):
    seed = int(os.environ.get("HOSTILE_TTS_SEED") or time.time_ns() % 2**32)
    with capsys.disabled():
        print(f"\nhostile TTS fuzz seed {seed} (HOSTILE_TTS_SEED={seed} replays it)")
    rng = random.Random(seed)
    started_at = time.perf_counter()
    refused_by_parser = fuzz_parser(rng, PARSER_CASES)
    assert 0 < refused_by_parser < PARSER_CASES  # the mutations reach both outcomes

    health_rng = random.Random(rng.random())
    health_bodies: list[Callable[[], web.StreamResponse]] = [
        lambda: web.json_response([1]), lambda: web.json_response("up"),
        lambda: web.Response(text="x" * 100_000), lambda: web.Response(status=302, headers={
            "Location": "/internal"}), lambda: web.json_response({"ready": True}),
        lambda: web.json_response({"ready": 1}), lambda: web.Response(text="{", status=200)]
    hostile.health = lambda: health_rng.choice(health_bodies)()
    expected: collections.Counter[str] = collections.Counter()
    cases = []
    for i in range(WIRE_CASES):
        case_seed = rng.getrandbits(64)
        text = f"case {i}"
        hostile.scripts[text] = lambda rid, s=case_seed: mutation(random.Random(s), rid)
        cases.append((text, mutation(random.Random(case_seed), "probe").expect))
        expected[cases[-1][1]] += 1

    tracemalloc.start()
    try:
        pool = make_pool(session, hostile.url, health_interval_s=0.05)
        async with started(pool):
            await pool.wait_ready(3, timeout_s=5)
            client = client_for(pool, session, timeout_s=0.5)
            health_before = hostile.health_hits
            queue = iter(cases)
            got: collections.Counter[str] = collections.Counter()

            async def worker() -> None:
                for text, expect in queue:
                    result = await run_case(client, text)
                    assert result == expect, (seed, text, expect, result)
                    got[result] += 1

            await asyncio.gather(*(worker() for _ in range(3)))
            assert got == expected
            stats = pool.stats()
            # Every refused reply counted, and only those.
            assert stats["malformed_replies"] == expected["malformed"], stats
            assert stats["oversize_replies"] == expected["oversize"], stats
            assert stats["reader_failures"] == 0 and stats["fallbacks"] == 0
            # The maintainer lived through every hostile health body.
            assert pool.maintainer_running and stats["maintainer_failures"] == 0
            assert hostile.health_hits > health_before and stats["health_failures"] > 0
            assert hostile.internal_hits == 0
            # And the same pool still speaks.
            assert_real_audio(await speak(client, "a normal sentence at the end"))
        _, wire_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        http_outcomes, http_malformed, http_oversize = await fuzz_http(
            hostile, session, rng, HTTP_CASES)
        assert http_malformed == http_outcomes["malformed"]
        assert http_oversize == http_outcomes["oversize"]
        _, http_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak = max(wire_peak, http_peak)
    elapsed = time.perf_counter() - started_at
    total = PARSER_CASES + WIRE_CASES + HTTP_CASES
    with capsys.disabled():
        print(f"hostile TTS fuzz: {total} cases ({PARSER_CASES} parser, {WIRE_CASES} wire "
              f"{dict(got)}, {HTTP_CASES} HTTP {dict(http_outcomes)}) in {elapsed:.1f} s, "
              f"tracemalloc peak {wire_peak / 2**20:.1f} MiB (wire), {http_peak / 2**20:.1f} MiB "
              "(HTTP), the hostile server's own buffers included")
    assert total >= 10_000
    assert peak < MEMORY_BOUND_MIB * 2**20
    assert hostile.internal_hits == 0
    assert not loop_errors
