"""The OpenAI-compatible transcription backend against a double of the endpoint on loopback:
the documented request, the transcript, and each way a request fails (the call goes on)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest
import structlog.testing

from bridge.settings import SttSettings
from bridge.stt.base import Transcriber, Transcript
from bridge.stt.batch import MAX_FAILURES_IN_A_ROW
from bridge.stt.factory import stt_backend
from bridge.stt.openai_stt import OpenAiStt
from tests.stt_doubles import TranscriptionDouble, serving_transcriptions

FRAME = b"\x10" * 160  # 20 ms of mu-law: the content does not matter to the double


@dataclasses.dataclass
class Heard:
    transcripts: asyncio.Queue[Transcript] = dataclasses.field(default_factory=asyncio.Queue)
    failures: asyncio.Queue[str] = dataclasses.field(default_factory=asyncio.Queue)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def settings(double: TranscriptionDouble, **changes: object) -> SttSettings:
    base = SttSettings(backend="openai", url=double.url, api_key=double.api_key,
                       model="whisper-large-v3-turbo", language="en-US", request_timeout_s=5.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def speak(t: Transcriber, *, frames: int, start_at: float = 0.0) -> None:
    """`frames` of speech between a start and an end, as the call session reports them."""
    t.speech_started(start_at)
    for _ in range(frames):
        t.audio(FRAME)
    t.speech_ended(start_at + frames * 0.02)


async def test_transcribes_an_utterance_with_the_documented_request(
        http: aiohttp.ClientSession) -> None:
    async with serving_transcriptions(TranscriptionDouble()) as double:
        backend = stt_backend(settings(double), http)
        assert isinstance(backend, OpenAiStt)
        heard = Heard()
        t = backend.open("call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
        for _ in range(50):  # 1 s before the speech: 0.4 s of it is the pre-roll
            t.audio(FRAME)
        speak(t, frames=75, start_at=1.0)
        got = await asyncio.wait_for(heard.transcripts.get(), 5)
        await t.aclose()
    assert got.text == "hello from the caller" and got.final
    assert got.start_s == pytest.approx(0.6) and got.end_s == pytest.approx(2.5)
    assert 0 <= got.latency_s < 5
    assert heard.failures.empty()
    [request] = double.requests
    assert request["model"] == "whisper-large-v3-turbo"
    assert request["language"] == "en"  # ISO-639-1, as the API wants
    assert request["response_format"] == "json"
    assert request["filename"].endswith(".wav") and request["content_type"] == "audio/wav"
    assert request["wav"] == {"rate": 8000, "channels": 1, "width": 2, "seconds": 1.9}


async def one_request(double: TranscriptionDouble, t: Transcriber, n: int) -> None:
    """One utterance, and the wait until the double has it (one at a time: no queue fills)."""
    double.request_seen.clear()
    speak(t, frames=10, start_at=n)
    await asyncio.wait_for(double.request_seen.wait(), 5)


@pytest.mark.parametrize(("action", "label"), [
    ("500", "http_status"), ("garbage", "bad_reply"), ("no_text", "bad_reply"),
])
async def test_a_failed_request_loses_that_utterance_only(
        http: aiohttp.ClientSession, action: str, label: str) -> None:
    async with serving_transcriptions(TranscriptionDouble(script=[action])) as double:
        backend = OpenAiStt(settings(double), http)
        heard = Heard()
        with structlog.testing.capture_logs() as logs:
            t = backend.open("call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
            speak(t, frames=25)
            for _ in range(50):
                t.audio(FRAME)
            speak(t, frames=25, start_at=1.5)  # the next utterance is tried as usual
            got = await asyncio.wait_for(heard.transcripts.get(), 5)
            await t.aclose()
    assert [e["reason"] for e in logs if e["event"] == "stt_failed"] == [label]
    assert got.text == "hello from the caller" and heard.failures.empty()
    # 0.5 s of the first utterance and 1 s of quiet; the pre-roll is the 0.4 s before the start.
    assert got.start_s == pytest.approx(1.1) and got.end_s == pytest.approx(2.0)
    assert len(double.requests) == 2


async def test_a_server_that_keeps_failing_is_given_up_once(http: aiohttp.ClientSession) -> None:
    script = ["500"] * MAX_FAILURES_IN_A_ROW
    async with serving_transcriptions(TranscriptionDouble(script=script)) as double:
        backend = OpenAiStt(settings(double), http)
        heard = Heard()
        t = backend.open("call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
        for n in range(MAX_FAILURES_IN_A_ROW):
            await one_request(double, t, n)
        assert await asyncio.wait_for(heard.failures.get(), 5) == "http_status"
        speak(t, frames=10, start_at=9)  # given up: not sent
        await t.aclose()
    assert len(double.requests) == MAX_FAILURES_IN_A_ROW
    assert heard.failures.empty() and heard.transcripts.empty()


async def test_a_slow_server_times_out(http: aiohttp.ClientSession) -> None:
    async with serving_transcriptions(TranscriptionDouble(script=["slow"])) as double:
        backend = OpenAiStt(settings(double, request_timeout_s=0.3), http)
        heard = Heard()
        with structlog.testing.capture_logs() as logs:
            t = backend.open("call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
            speak(t, frames=25)
            speak(t, frames=25, start_at=1.0)
            got = await asyncio.wait_for(heard.transcripts.get(), 5)  # the second one
            await t.aclose()
    assert [e["reason"] for e in logs if e["event"] == "stt_failed"] == ["timeout"]
    assert got.start_s == pytest.approx(0.5)


async def test_a_wrong_key_is_given_up_and_never_logged(http: aiohttp.ClientSession) -> None:
    async with serving_transcriptions(TranscriptionDouble()) as double:
        backend = OpenAiStt(settings(double, api_key="sk-wrong-secret"), http)
        heard = Heard()
        with structlog.testing.capture_logs() as logs:
            t = backend.open("call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
            for n in range(MAX_FAILURES_IN_A_ROW):
                await one_request(double, t, n)
            assert await asyncio.wait_for(heard.failures.get(), 5) == "http_status"
            await t.aclose()
    failed = [e for e in logs if e["event"] == "stt_failed"]
    assert len(failed) == MAX_FAILURES_IN_A_ROW and "HTTP 401" in failed[0]["error"]
    assert "sk-wrong-secret" not in repr(logs)


async def test_utterances_past_the_queue_are_dropped_not_queued(
        http: aiohttp.ClientSession) -> None:
    # One request in flight (slow) and two waiting fill the call's queue: the fourth is dropped.
    async with serving_transcriptions(TranscriptionDouble(script=["slow"])) as double:
        backend = OpenAiStt(settings(double, request_timeout_s=1.0), http)
        heard = Heard()
        with structlog.testing.capture_logs() as logs:
            t = backend.open("call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
            speak(t, frames=10)
            await asyncio.wait_for(double.request_seen.wait(), 5)
            for n in range(3):
                speak(t, frames=10, start_at=1.0 + n)
            texts = [await asyncio.wait_for(heard.transcripts.get(), 5) for _ in range(2)]
            await t.aclose()
    assert [e["reason"] for e in logs if e["event"] == "stt_failed"] == ["overloaded", "timeout"]
    assert [x.text for x in texts] == ["hello from the caller"] * 2
    assert len(double.requests) == 3 and heard.failures.empty()
