"""The streaming Deepgram backend against a double of Deepgram's live WebSocket on loopback:
partials and finals, Finalize at the detector's endpoint, KeepAlive, CloseStream, a refused
key, a dropped socket (one reconnect, clock kept), and a server that is not there."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bridge.settings import SttSettings
from bridge.stt.base import Transcriber, Transcript
from bridge.stt.deepgram_stt import DeepgramStt
from bridge.stt.factory import stt_backend
from tests.stt_doubles import DeepgramDouble, serving_deepgram

FRAME = b"\x10" * 160  # 20 ms of mu-law


@dataclasses.dataclass
class Heard:
    transcripts: asyncio.Queue[Transcript] = dataclasses.field(default_factory=asyncio.Queue)
    failures: asyncio.Queue[str] = dataclasses.field(default_factory=asyncio.Queue)

    async def final(self) -> tuple[list[Transcript], Transcript]:
        """The partials before the next final, and the final."""
        partials = []
        while not (t := await asyncio.wait_for(self.transcripts.get(), 5)).final:
            partials.append(t)
        return partials, t


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def settings(url: str, **changes: object) -> SttSettings:
    base = SttSettings(backend="deepgram", url=url, api_key="dg-test-key", model="nova-3",
                       language="en-US", request_timeout_s=2.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def speak(t: Transcriber, frames: int) -> None:
    t.speech_started(0.0)
    for _ in range(frames):
        t.audio(FRAME)
    t.speech_ended(0.0)


async def test_partials_then_a_final_at_the_endpoint(http: aiohttp.ClientSession) -> None:
    async with serving_deepgram(DeepgramDouble()) as double:
        backend = stt_backend(settings(double.url), http)
        assert isinstance(backend, DeepgramStt)
        heard = Heard()
        t = backend.open("call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
        speak(t, 60)  # 1.2 s, fed before the socket is even open: it waits for it
        partials, final = await heard.final()
        await t.aclose()
        await asyncio.wait_for(double.close_stream.wait(), 5)
    # One at every 0.5 s of audio the double has (the number depends on how the audio was cut
    # into messages: here it came in one chunk, once the socket was open).
    assert partials and {(p.text, p.final, p.start_s, p.latency_s) for p in partials} == {
        ("i would like", False, 0.0, 0.0)}
    assert final.text == "i would like a table for two"
    assert (final.start_s, final.end_s) == (0.0, pytest.approx(1.2))
    assert 0 <= final.latency_s < 5
    assert double.audio_bytes == [60 * 160]  # nothing lost while connecting
    assert double.texts == ["Finalize", "CloseStream"]
    [query] = double.queries
    assert query["model"] == "nova-3" and query["language"] == "en-US"
    assert heard.failures.empty()


async def test_keepalive_when_no_audio_flows(http: aiohttp.ClientSession) -> None:
    async with serving_deepgram(DeepgramDouble()) as double:
        heard = Heard()
        t = DeepgramStt(settings(double.url), http, keepalive_s=0.05).open(
            "call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
        await asyncio.wait_for(double.keepalive.wait(), 5)
        await t.aclose()
    assert heard.failures.empty() and double.audio_bytes == [0]


async def test_a_refused_key_fails_once_without_retrying(http: aiohttp.ClientSession) -> None:
    async with serving_deepgram(DeepgramDouble()) as double:
        heard = Heard()
        t = DeepgramStt(settings(double.url, api_key="dg-wrong"), http).open(
            "call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
        speak(t, 10)  # audio after the failure goes nowhere, and nothing raises
        assert await asyncio.wait_for(heard.failures.get(), 5) == "refused"
        await t.aclose()
    assert double.refused == 1 and double.connections == 0
    assert heard.failures.empty() and heard.transcripts.empty()


async def test_a_dropped_socket_is_reconnected_once_and_keeps_the_clock(
        http: aiohttp.ClientSession) -> None:
    async with serving_deepgram(DeepgramDouble(drop_after_s=0.4, drops=1)) as double:
        heard = Heard()
        t = DeepgramStt(settings(double.url), http).open(
            "call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
        for _ in range(25):  # 0.5 s: the first socket is cut at 0.4 s
            t.audio(FRAME)
        await asyncio.wait_for(_connections(double, 2), 5)
        speak(t, 50)
        _, final = await heard.final()
        await t.aclose()
    assert double.connections == 2
    # The second connection's audio starts where the first one's was cut (or later, for what
    # was on the wire when it went): Deepgram's 0 there is that second of the call.
    assert 0.4 <= final.start_s < 1.5 and final.end_s == pytest.approx(1.5)
    assert heard.failures.empty()


async def test_a_second_drop_in_a_row_ends_the_stream(http: aiohttp.ClientSession) -> None:
    async with serving_deepgram(DeepgramDouble(drop_after_s=0.2, drops=2)) as double:
        heard = Heard()
        t = DeepgramStt(settings(double.url), http).open(
            "call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
        for _ in range(60):
            t.audio(FRAME)
        await asyncio.wait_for(_connections(double, 2), 5)
        for _ in range(60):  # this cuts the second connection too
            t.audio(FRAME)
        assert await asyncio.wait_for(heard.failures.get(), 5) == "stream_lost"
        await t.aclose()
    assert double.connections == 2 and heard.failures.empty()


async def test_a_server_that_is_not_there_is_unreachable(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    heard = Heard()
    t = DeepgramStt(settings(f"ws://127.0.0.1:{port}"), http).open(
        "call-1", heard.transcripts.put_nowait, heard.failures.put_nowait)
    assert await asyncio.wait_for(heard.failures.get(), 5) == "unreachable"
    await t.aclose()


async def _connections(double: DeepgramDouble, n: int) -> None:
    while double.connections < n:
        await double.connected.wait()
        double.connected.clear()
