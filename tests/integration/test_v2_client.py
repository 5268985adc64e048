"""The bridge on SILMA's public API (v2), against a double of SILMA's cloud on 127.0.0.1 that
speaks the documented wire format with real speech: the warm pool, the client's retries, the
streamed HTTP fallback, barge-in (the socket closes), refused keys, and hostile replies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.audio.codec import decode_audio
from bridge.errors import TTSError, TTSReplyError
from bridge.settings import PoolSettings
from bridge.silma import protocol as p
from bridge.silma import v2_protocol as v2
from bridge.silma.client import SilmaClient
from bridge.silma.endpoint import V2, parse_endpoint
from bridge.silma.pool import KEY_REFUSED, SilmaPool
from bridge.silma.retry_core import RetryPolicy
from bridge.silma.v2_connection import stream_over_http
from bridge.tts_server import app as tts_app
from bridge.tts_server.engines.piper import PiperEngine
from tests.recording_engine import RecordingEngine
from tests.servers import make_settings, serving_tts
from tests.speech import assert_is_speech
from tests.v2_double import CloudDouble, cloud_double, piper_speech

WAIT_S = 10.0
VOICE = v2.V2Voice("silma-tts-v2-english", "emma", custom_audio_id="voice_7", user_id="acct",
                   speed=1.1)
FAST_RETRIES = RetryPolicy(base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture(scope="module")
async def speech(piper_engine: PiperEngine) -> bytes:
    return await piper_speech(piper_engine, "Thank you for calling, how can I help you today?")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@contextlib.asynccontextmanager
async def on_v2(double: CloudDouble, http: aiohttp.ClientSession, *, api_key: str = "sk-cloud",
                warm: int = 1) -> AsyncIterator[tuple[SilmaPool, SilmaClient]]:
    pool = SilmaPool(http, parse_endpoint(double.url, V2), api_key=api_key,
                     limits=PoolSettings(size=2, warm=warm, health_interval_s=60.0,
                                         backoff_base_s=0.05, backoff_max_s=0.2),
                     connect_timeout_s=2.0)
    await pool.start()
    client = SilmaClient(pool.endpoint, pool, http, api_key=api_key,
                         voice=p.SynthesizeRequest(text=""), timeout_s=WAIT_S, want_ulaw=True,
                         counters=pool.counters, policy=FAST_RETRIES, v2_voice=VOICE)
    try:
        yield pool, client
    finally:
        await pool.close()


async def spoken(client: SilmaClient, text: str = "Hello.") -> bytes:
    pieces = [piece async for piece in client.synthesize(text)]
    assert {(piece.format, piece.sample_rate) for piece in pieces} == {("f32le", 24000)}
    return b"".join(piece.data for piece in pieces)


@pytest.mark.parametrize("binary", [False, True], ids=["json events", "binary frames"])
async def test_speech_streams_through_the_warm_pool_byte_for_byte(
        http: aiohttp.ClientSession, speech: bytes, binary: bool) -> None:
    async with cloud_double(speech, binary=binary) as double, on_v2(double, http) as (pool, c):
        await pool.wait_ready(1, WAIT_S)
        for _ in range(3):
            assert await spoken(c, "Thank you for calling.") == speech
        # Utterances follow one another on warm sockets: none that served one was closed.
        assert not double.dropped.is_set()
        assert pool.stats()["requests_served"] == 3
    samples, rate = decode_audio(speech, "f32le", 24000)
    assert_is_speech(samples, rate)
    assert set(double.keys_seen) == {"sk-cloud"}  # on every upgrade, health checks' too
    assert double.requests[0] == {"model_id": "silma-tts-v2-english",
                                  "text": "Thank you for calling.", "voice_id": "emma",
                                  "speed": 1.1, "user_id": "acct", "custom_audio_id": "voice_7"}


async def test_a_busy_failure_is_retried_and_a_final_one_is_not(
        http: aiohttp.ClientSession, speech: bytes) -> None:
    async with cloud_double(speech, script=["busy"]) as double, on_v2(double, http) as (_, c):
        assert await spoken(c) == speech
        assert len(double.requests) == 2
    async with cloud_double(speech, script=["invalid_voice"]) as double, \
            on_v2(double, http) as (_, c):
        with pytest.raises(TTSError, match="invalid_voice") as refused:
            await spoken(c)
        assert not refused.value.retryable and len(double.requests) == 1


async def test_leaving_mid_utterance_closes_the_socket_and_the_next_request_gets_a_fresh_one(
        http: aiohttp.ClientSession, speech: bytes) -> None:
    async with cloud_double(speech) as double, on_v2(double, http) as (pool, c):
        async with contextlib.aclosing(c.synthesize("A long answer.")) as pieces:
            first = await anext(pieces)
        assert first.data  # heard the start, then the caller spoke (barge-in)
        # The protocol has no cancel: closing the socket is how the server learns to stop.
        async with asyncio.timeout(WAIT_S):
            await double.dropped.wait()
        assert await spoken(c) == speech
        assert pool.stats()["ready"] >= 1


async def test_a_stalled_request_is_abandoned_and_retried_on_another_socket(
        http: aiohttp.ClientSession, speech: bytes) -> None:
    stall_fast = RetryPolicy(base_delay_s=0.01, max_delay_s=0.05, first_audio_timeout_s=0.3)
    async with cloud_double(speech, script=["stall"]) as double, \
            on_v2(double, http) as (pool, _):
        client = SilmaClient(pool.endpoint, pool, http, api_key="sk-cloud",
                             voice=p.SynthesizeRequest(text=""), timeout_s=WAIT_S,
                             want_ulaw=True, policy=stall_fast, v2_voice=VOICE)
        assert await spoken(client) == speech
        assert len(double.requests) == 2
        async with asyncio.timeout(WAIT_S):
            await double.dropped.wait()  # the stalled socket was given up


async def test_a_refused_key_is_final_and_never_retried(
        http: aiohttp.ClientSession, speech: bytes) -> None:
    # The cloud refuses with close code 4001 after the upgrade (PROTOCOLS.md).
    async with cloud_double(speech) as double, on_v2(double, http, api_key="sk-wrong",
                                                     warm=0) as (_, c):
        with pytest.raises(TTSError, match="refused the API key") as refused:
            await spoken(c)
        assert not refused.value.retryable and double.requests == []


async def test_the_streamed_http_fallback_when_websocket_is_refused(
        http: aiohttp.ClientSession, speech: bytes) -> None:
    async with cloud_double(speech, accept_websocket=False, script=["busy"]) as double, \
            on_v2(double, http) as (pool, c):
        pieces = [piece async for piece in c.synthesize("Over HTTP.")]
        # Streamed: the body arrives in several reads, each passed on as it comes.
        assert len(pieces) > 1 and b"".join(piece.data for piece in pieces) == speech
        assert pool.refused and pool.stats()["fallbacks"] == 2  # busy, then the retry
        assert double.requests[-1]["text"] == "Over HTTP."
        assert double.keys_seen[-1] == "sk-cloud"
    async with cloud_double(speech, accept_websocket=False) as double, \
            on_v2(double, http, api_key="sk-wrong") as (pool, c):
        with pytest.raises(TTSError, match="refused the API key") as refused:
            await spoken(c)
        assert not refused.value.retryable and double.requests == []


async def test_health_is_the_upgrade_that_carries_the_key(
        http: aiohttp.ClientSession, speech: bytes) -> None:
    async with cloud_double(speech) as double, on_v2(double, http, warm=0) as (pool, _):
        health = await pool.check_health()
        assert (health["status"], health["api_key"]) == ("ok", "accepted")
    for refusal in ("upgrade", "close"):  # HTTP 401, or close code 4001 after the upgrade
        async with cloud_double(speech, key_refusal=refusal) as double, \
                on_v2(double, http, api_key="sk-wrong", warm=0) as (pool, _):
            health = await pool.check_health()
            assert (health["status"], health["api_key"]) == (KEY_REFUSED, "refused"), refusal
    async with cloud_double(speech) as double:
        url = double.url
    async with on_v2(CloudDouble(speech, url=url), http, warm=0) as (pool, _):
        assert (await pool.check_health())["status"].startswith("unreachable")


async def test_a_non_json_frame_fails_the_request_is_counted_and_the_socket_replaced(
        http: aiohttp.ClientSession, speech: bytes) -> None:
    async with cloud_double(speech, script=["garbage"]) as double, \
            on_v2(double, http) as (pool, c):
        with pytest.raises(TTSReplyError, match="not valid JSON"):
            await spoken(c)
        assert pool.stats()["malformed_replies"] == 1
        async with asyncio.timeout(WAIT_S):
            await double.dropped.wait()  # the socket it came on is retired
        assert await spoken(c) == speech  # and a fresh one serves the next request


# -- against our own server's v2 routes (Piper speaking) ----------------------------------------
@contextlib.asynccontextmanager
async def our_v2(engine: RecordingEngine, **tts_server: Any
                 ) -> AsyncIterator[tuple[tts_app.RunningServer, CloudDouble]]:
    """Our TTS server, and a stand-in naming its v2 base for `on_v2` (no double runs)."""
    async with serving_tts(make_settings(**tts_server).tts_server, engine) as server:
        yield server, CloudDouble(b"", url=f"{server.url}/tts/v2")


async def test_our_server_over_websocket_and_streamed_http(
        http: aiohttp.ClientSession, piper_engine: PiperEngine) -> None:
    engine = RecordingEngine(piper_engine)
    async with our_v2(engine, api_key="sk-ours") as (_, base), \
            on_v2(base, http, api_key="sk-ours") as (pool, _):
        client = SilmaClient(pool.endpoint, pool, http, api_key="sk-ours",
                             voice=p.SynthesizeRequest(text=""), timeout_s=WAIT_S,
                             want_ulaw=True, v2_voice=v2.V2Voice("silma-tts-v2-english",
                                                                 "default"))
        over_ws = await spoken(client, "Hello from the web socket.")
        assert pool.stats()["requests_served"] == 1
        pieces = [piece async for piece in stream_over_http(
            http, pool.endpoint, "sk-ours", v2.V2Request("Hello over HTTP.", v2.V2Voice(
                "silma-tts-v2-english", "default")), WAIT_S)]
    assert len(pieces) > 1  # streamed as the engine made it
    for audio in (over_ws, b"".join(piece.data for piece in pieces)):
        assert_is_speech(*decode_audio(audio, "f32le", 24000))
    assert [u.text for u in engine.utterances] == ["Hello from the web socket.",
                                                   "Hello over HTTP."]


async def test_barge_in_frees_our_servers_slot(http: aiohttp.ClientSession,
                                               piper_engine: PiperEngine) -> None:
    engine = RecordingEngine(piper_engine)
    async with our_v2(engine, concurrency=1, max_queue=0) as (server, base), \
            on_v2(base, http) as (pool, _):
        client = SilmaClient(pool.endpoint, pool, http, api_key="",
                             voice=p.SynthesizeRequest(text=""), timeout_s=WAIT_S,
                             want_ulaw=True, v2_voice=v2.V2Voice(voice_id="default"))
        story = " ".join(f"This is sentence number {n} of a long story." for n in range(5))
        async with contextlib.aclosing(client.synthesize(story)) as pieces:
            await anext(pieces)
        # The socket closed, so the server cancelled the render and freed its only slot.
        async with asyncio.timeout(WAIT_S):
            await engine.finished.wait()
        assert server.service.scheduler.running == 0
        assert len(await spoken(client, "Next.")) > 0
