"""The load test's TTS stand-in (scripts/loadtest_lib/tts_replies.py, tts_standin.py): its
messages are the real server's byte for byte, on the sim engine's schedule, and the bridge's
own client speaks to it. The sim's speech is a file written here (no Piper)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from loadtest_lib.tts_replies import IdSplice, build_reply, ready_offsets
from loadtest_lib.tts_standin import SAMPLE_RATE, Counts, Replies, create_app

from bridge.settings import TTSServerSettings
from bridge.silma import protocol as p
from bridge.silma.connection import SilmaConnection
from bridge.silma.endpoint import parse_endpoint
from bridge.tts_server.engines.sim import CHUNK_SECONDS, SimEngine
from bridge.tts_server.service import TTSService

TEXT = "Your table is booked for eight."  # 31 characters: ~2 s of sim speech, 5 chunks


def test_ready_offsets_are_the_sim_engines_latency_model() -> None:
    sizes = [4000, 4000, 4000, 120]
    assert ready_offsets(sizes, 8000, 0.15, 0.12) == pytest.approx([0.15, 0.21, 0.27, 0.33])
    assert ready_offsets([], 8000, 0.15, 0.12) == []


@pytest.mark.parametrize("request_id", [None, "r12", 'odd "id"'])
def test_id_splice_writes_what_the_protocol_builds(request_id: str | None) -> None:
    chunk = p.AudioChunk(None, 3, b"\x01\x02\x03", "ulaw", 8000)
    spliced = IdSplice(p.build_audio_chunk(chunk)).with_id(request_id)
    assert spliced == p.build_audio_chunk(p.AudioChunk(request_id, 3, b"\x01\x02\x03", "ulaw",
                                                       8000))


def test_a_streamed_reply_is_chunks_then_a_complete_with_their_count() -> None:
    reply = build_reply([(0.15, b"a" * 4), (0.21, b"b" * 2)], "ulaw", 8000)
    assert [at for at, _ in reply.chunks] == [0.15, 0.21] and reply.done_s == 0.21
    assert reply.chunks[1][1].with_id("r1") == p.build_audio_chunk(
        p.AudioChunk("r1", 1, b"bb", "ulaw", 8000))
    assert reply.complete.with_id("r1") == p.build_complete(
        p.SynthesisComplete("r1", b"", "ulaw", 8000, chunks=2))


def test_a_whole_reply_is_one_complete_with_all_the_audio() -> None:
    reply = build_reply([(0.15, b"a" * 4), (0.21, b"b" * 2)], "s16le", 8000, whole=b"ab")
    assert reply.chunks == () and reply.done_s == 0.21
    assert reply.complete.with_id(None) == p.build_complete(
        p.SynthesisComplete(None, b"ab", "s16le", 8000))


@pytest.fixture
def speech_dir(tmp_path: Path) -> Path:
    """A sim speech cache at 8 kHz: 3 s of noise stands in for Piper's rendering."""
    speech = np.random.default_rng(1).uniform(-0.5, 0.5, 3 * SAMPLE_RATE).astype(np.float32)
    np.save(tmp_path / "sim-speech-v1-8000.npy", speech, allow_pickle=False)
    return tmp_path


async def _sim(speech_dir: Path) -> SimEngine:
    engine = SimEngine(speech_dir, first_audio_s=0.0, rtf=0.0, sample_rate=SAMPLE_RATE)
    await engine.start()
    return engine


@pytest.mark.parametrize(
    ("fmt", "rate", "stream"),
    [("ulaw", 8000, True), ("f32le", 24000, True), ("wav", 16000, False)],
)
async def test_replies_are_the_sim_servers_byte_for_byte(
    speech_dir: Path, fmt: str, rate: int, stream: bool
) -> None:
    request = p.SynthesizeRequest(TEXT, id="r7", stream=stream, format=fmt, sample_rate=rate)
    service = TTSService(TTSServerSettings(), await _sim(speech_dir))
    service.start_loading()
    sent: list[bytes] = []

    async def on_chunk(chunk: p.AudioChunk) -> None:
        sent.append(p.build_audio_chunk(chunk))

    done = await service.synthesize(request, on_chunk if stream else None)
    reply = await Replies(await _sim(speech_dir), 0.15, 0.12).get(request)
    assert [m.with_id("r7") for _, m in reply.chunks] == sent
    assert reply.complete.with_id("r7") == p.build_complete(done)
    if stream:
        native = [min(CHUNK_SECONDS * SAMPLE_RATE, 2 * SAMPLE_RATE - k * 4000) for k in range(5)]
        assert len(sent) >= 4 and reply.chunks[0][0] == pytest.approx(0.15)
        assert [at for at, _ in reply.chunks][:4] == pytest.approx(
            ready_offsets([int(n) for n in native], SAMPLE_RATE, 0.15, 0.12)[:4])


async def test_the_bridges_client_speaks_to_the_standin(speech_dir: Path) -> None:
    counts = Counts(concurrency=10000, max_queue=10000)
    app = create_app(Replies(await _sim(speech_dir), 0.05, 0.1), counts)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        endpoint = parse_endpoint(str(server.make_url("/")))
        conn = await SilmaConnection.open(http, endpoint, api_key="", timeout_s=5)
        assert conn.hello is not None and conn.hello.capabilities == p.CAPABILITIES
        request = conn.prepare(p.SynthesizeRequest(TEXT, priority=p.URGENT, deadline_ms=5000),
                               want_stream=True, want_format="ulaw", want_rate=8000)
        started = time.perf_counter()
        arrivals, audio = [], b""
        async for piece in conn.synthesize(request, timeout_s=5):
            arrivals.append(time.perf_counter() - started)
            audio += piece.data
            assert (piece.format, piece.sample_rate) == ("ulaw", 8000)
        assert len(audio) == round(len(TEXT) * 0.065 * 8000)  # the sim's length
        assert arrivals[0] >= 0.05 and arrivals[-1] >= 0.05 + 0.1 * 1.5  # paced, not at once
        async with http.get(server.make_url("/health")) as resp:
            health = orjson.loads(await resp.read())
        assert health["concurrency"] == 10000 and health["urgent_job_s"] > 0.05
        await conn.close()


async def test_a_cancel_stops_the_reply_and_is_acknowledged(speech_dir: Path) -> None:
    app = create_app(Replies(await _sim(speech_dir), 0.05, 1.0), Counts(10, 10))
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/ws")) as ws:
            await ws.send_str(p.build_synthesize(p.SynthesizeRequest(
                TEXT, id="r1", stream=True, format="ulaw", sample_rate=8000)).decode())
            first = p.parse_server_message((await ws.receive()).data)
            assert isinstance(first, p.AudioChunk) and first.seq == 0
            await ws.send_str(p.build_cancel("r1").decode())
            assert p.parse_server_message((await ws.receive()).data) == p.Cancelled("r1")
            with pytest.raises(asyncio.TimeoutError):
                await ws.receive(timeout=0.7)  # the next chunk was due 0.5 s after the first
