"""Retries against real loopback servers: our own TTS server (sim engine) saying busy under a
burst, and a server that accepts requests and never answers (a stall)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from bridge.errors import TTSError
from bridge.settings import PoolSettings, TTSServerSettings
from bridge.silma import protocol as p
from bridge.silma.client import SilmaClient
from bridge.silma.endpoint import parse_endpoint
from bridge.silma.pool import SilmaPool
from bridge.silma.retry_core import RetryPolicy, failure_reason
from bridge.tts_server.app import start
from bridge.tts_server.engines.piper import PiperEngine
from bridge.tts_server.engines.sim import SimEngine
from tests.servers import silent_tts_server

WAIT_S = 30.0  # bound on the whole burst; a normal run takes a second or two



def make_pool(http: aiohttp.ClientSession, url: str) -> SilmaPool:
    return SilmaPool(http, parse_endpoint(url), api_key="",
                     limits=PoolSettings(size=4, warm=2, max_age_s=300.0, backoff_base_s=0.05,
                                         backoff_max_s=0.5, acquire_timeout_s=2.0,
                                         health_interval_s=60.0),
                     connect_timeout_s=2.0)


def client_for(pool: SilmaPool, http: aiohttp.ClientSession,
               policy: RetryPolicy) -> SilmaClient:
    return SilmaClient(pool.endpoint, pool, http, api_key="", voice=p.SynthesizeRequest(text=""),
                       timeout_s=20.0, want_ulaw=True, policy=policy)


async def speak(client: SilmaClient, text: str, *, urgent: bool) -> tuple[int, list[str]]:
    steps: list[str] = []
    audio = 0
    async for piece in client.synthesize(text, steps.append, urgent=urgent):
        audio += len(piece.data)
    return audio, steps


async def test_a_burst_beyond_the_servers_queue_is_served_in_full_by_retries(
        sim_cache: Path, piper_engine: PiperEngine) -> None:
    settings = TTSServerSettings(engine="sim", concurrency=1, max_queue=1,
                                 sim_first_audio_s=0.02, sim_rtf=0.01,
                                 sim_cache_dir=str(sim_cache))
    engine = SimEngine(sim_cache, first_audio_s=0.02, rtf=0.01, piper=piper_engine)
    server = await start(settings, host="127.0.0.1", port=0, engine=engine)
    try:
        await asyncio.wait_for(server.service.loaded(), WAIT_S)
        async with aiohttp.ClientSession() as http:
            pool = make_pool(http, server.ws_url)
            await pool.start()
            try:
                client = client_for(pool, http, RetryPolicy(deadline_s=20.0,
                                                            budget_tokens=100.0))
                results = await asyncio.wait_for(asyncio.gather(*(
                    speak(client, f"Hello caller number {n}.", urgent=n % 2 == 0)
                    for n in range(8))), WAIT_S)
            finally:
                await pool.close()
    finally:
        await server.close()
    assert all(audio > 0 for audio, _ in results)  # none dropped
    retries = [s for _, steps in results for s in steps if s.startswith("retry:")]
    assert retries and set(retries) == {"retry:busy"}  # 8 at once on 1 + 1 queued: busy


async def test_a_stalled_server_moves_the_piece_on_and_it_is_given_up_as_a_stall() -> None:
    async with silent_tts_server() as url, aiohttp.ClientSession() as http:
        pool = make_pool(http, url)
        await pool.start()
        try:
            client = client_for(pool, http, RetryPolicy(deadline_s=1.0,
                                                        first_audio_timeout_s=0.2))
            with pytest.raises(TTSError) as failed:
                await asyncio.wait_for(speak(client, "Are you there?", urgent=True), WAIT_S)
        finally:
            await pool.close()
    assert failure_reason(str(failed.value)) == "stall"
    # Moved on at least once before the deadline: "after N attempts", N > 1.
    assert "deadline of 1 s reached after" in str(failed.value)
    assert "attempts" in str(failed.value)
