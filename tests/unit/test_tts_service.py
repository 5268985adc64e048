"""TTSService with an in-process fake engine: conversion, streaming, reference checks, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import numpy as np
import pytest
from structlog.testing import capture_logs

from bridge.audio.codec import decode_audio, encode_audio
from bridge.errors import TTSError
from bridge.settings import TTSServerSettings
from bridge.silma.protocol import AudioChunk, RequestError, SynthesizeRequest
from bridge.tts_server.engines.base import Utterance
from bridge.tts_server.scheduler import Busy, DeadlineExceeded
from bridge.tts_server.service import TTSService, error_reply
from bridge.tts_server.voices import StoredVoice

NATIVE_RATE = 22050
CHUNK = 2205  # 100 ms


class FakeEngine:
    """Five 100 ms chunks of a 440 Hz tone; can be told to hang before a chunk."""

    name = "fake"
    sample_rate = NATIVE_RATE
    can_clone = False

    def __init__(self, hang_at: int | None = None) -> None:
        self.hang_at = hang_at
        self.started_chunks = 0
        self.closed = asyncio.Event()
        self.hanging = asyncio.Event()
        self.last: Utterance | None = None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def synthesize(self, utterance: Utterance) -> AsyncGenerator[np.ndarray, None]:
        self.last = utterance
        t = np.arange(5 * CHUNK) / NATIVE_RATE
        tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        try:
            for i in range(5):
                if i == self.hang_at:
                    self.hanging.set()
                    await asyncio.Event().wait()
                self.started_chunks += 1
                yield tone[i * CHUNK : (i + 1) * CHUNK]
        finally:
            self.closed.set()


async def make_service(engine: FakeEngine, **settings: object) -> TTSService:
    service = TTSService(TTSServerSettings(**settings), engine)  # type: ignore[arg-type]
    service.start_loading()
    await service.loaded()
    return service


async def test_non_stream_answers_whole_audio_at_the_seed_format() -> None:
    service = await make_service(FakeEngine())
    done = await service.synthesize(SynthesizeRequest(text="hi"))
    assert (done.format, done.sample_rate, done.chunks) == ("f32le", 24000, 0)
    audio, rate = decode_audio(done.audio)
    assert rate == 24000
    assert abs(audio.size - 0.5 * 24000) <= 2  # 0.5 s, resampled 22050 -> 24000


async def test_stream_chunks_join_to_the_same_audio_as_one_block() -> None:
    service = await make_service(FakeEngine())
    whole = await service.synthesize(SynthesizeRequest(text="hi", format="s16le", sample_rate=8000))
    chunks: list[AudioChunk] = []

    async def sink(chunk: AudioChunk) -> None:
        chunks.append(chunk)

    request = SynthesizeRequest(text="hi", id="s", stream=True, format="s16le", sample_rate=8000)
    done = await service.synthesize(request, sink)
    assert done.audio == b""
    assert done.chunks == len(chunks) >= 2
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert {(c.id, c.format, c.sample_rate) for c in chunks} == {("s", "s16le", 8000)}
    # One resampler per request: the chunked stream is bit-identical to the one-block answer.
    assert b"".join(c.audio for c in chunks) == whole.audio


async def test_reference_clip_is_decoded_for_the_engine() -> None:
    engine = FakeEngine()
    service = await make_service(engine)
    clip = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    request = SynthesizeRequest(text="hi", reference_audio=encode_audio(clip, 16000, "wav"))
    await service.synthesize(request)
    assert engine.last is not None
    assert engine.last.reference_rate == 16000
    assert engine.last.reference_audio is not None
    assert engine.last.reference_audio.size == 1600


@pytest.mark.parametrize(
    "blob",
    [b"this is not audio at all", b"RIFF\x00\x00\x00\x00WAVEjunk", b"\x01\x02\x03"],
)
async def test_a_reference_that_is_not_audio_is_a_bad_request(blob: bytes) -> None:
    engine = FakeEngine()
    service = await make_service(engine)
    with pytest.raises(RequestError, match="audio") as raised:
        await service.synthesize(SynthesizeRequest(text="hi", reference_audio=blob, id="r"))
    assert raised.value.request_id == "r"
    assert engine.last is None  # refused before taking a slot


async def test_a_voice_the_caller_found_is_spoken_instead_of_the_requests() -> None:
    engine = FakeEngine()
    service = await make_service(engine)
    voice = StoredVoice(np.full(800, 0.1, dtype=np.float32), 8000, "Its transcript.")
    await service.synthesize(SynthesizeRequest(text="hi", reference_text="ignored"), voice=voice)
    assert engine.last is not None
    assert engine.last.reference_audio is voice.audio
    assert (engine.last.reference_rate, engine.last.reference_text) == (8000, "Its transcript.")


async def test_a_client_gone_mid_stream_stops_the_engine_and_frees_the_slot() -> None:
    engine = FakeEngine()
    service = await make_service(engine)

    async def gone(chunk: AudioChunk) -> None:
        raise ConnectionResetError("the client left")

    with capture_logs() as logs, pytest.raises(ConnectionResetError):
        await service.synthesize(SynthesizeRequest(text="hi", stream=True), gone,
                                 labels={"api": "v2"})
    assert engine.closed.is_set() and engine.started_chunks < 5
    assert service.scheduler.running == 0
    (line,) = [entry for entry in logs if entry["event"] == "tts_request"]
    assert (line["outcome"], line["api"]) == ("client_gone", "v2")


async def test_cancel_stops_the_engine_between_chunks() -> None:
    engine = FakeEngine(hang_at=2)
    service = await make_service(engine)
    task = asyncio.create_task(service.synthesize(SynthesizeRequest(text="hi")))
    await asyncio.wait_for(engine.hanging.wait(), 5)
    task.cancel()
    await asyncio.wait_for(engine.closed.wait(), 5)
    assert engine.started_chunks == 2
    assert service.scheduler.running == 0


async def test_deadline_closes_the_engine_too() -> None:
    engine = FakeEngine(hang_at=0)
    service = await make_service(engine, request_deadline_s=0.05)
    with pytest.raises(DeadlineExceeded):
        await service.synthesize(SynthesizeRequest(text="hi"))
    assert engine.closed.is_set()


def test_error_replies_map_to_codes() -> None:
    cases = {
        RequestError("bad", "x"): ("bad_request", "x"),
        Busy("full", 1.0): ("busy", "r"),
        DeadlineExceeded("late"): ("timeout", "r"),
        TTSError("loading", retryable=True): ("busy", "r"),
        TTSError("broken"): ("internal", "r"),
    }
    for exc, (code, request_id) in cases.items():
        reply = error_reply(exc, "r")
        assert (reply.code, reply.id) == (code, request_id)


def test_unexpected_errors_hide_their_details() -> None:
    try:
        raise KeyError("secret internals")
    except KeyError as exc:
        reply = error_reply(exc, "r")
    assert (reply.code, reply.error) == ("internal", "internal server error")


async def test_health_and_hello_describe_the_engine() -> None:
    service = await make_service(FakeEngine(), concurrency=3, max_queue=5)
    health = service.health()
    assert health["ready"] is True
    assert (health["engine"], health["sample_rate"], health["can_clone"]) == ("fake", 22050, False)
    assert (health["max_in_flight"], health["in_flight"], health["queued"]) == (8, 0, 0)
    hello = service.hello()
    assert (hello.engine, hello.sample_rate, hello.max_in_flight) == ("fake", 22050, 8)
