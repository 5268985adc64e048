"""Our SILMA TTS server on 127.0.0.1: real Piper speech over WebSocket and HTTP, every extension,
every bad input, busy/timeout under load, auth, and the sim engine's latency model."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import importlib.util
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from bridge.audio.codec import decode_audio, encode_audio
from bridge.errors import ConfigError
from bridge.settings import TTSServerSettings
from bridge.silma.protocol import CAPABILITIES
from bridge.tts_server.app import RunningServer, start
from bridge.tts_server.engines import Engine, Utterance, get_engine
from bridge.tts_server.engines.piper import PiperEngine
from bridge.tts_server.engines.sim import CHUNK_SECONDS, SECONDS_PER_CHAR, SimEngine
from tests.servers import serving_tts
from tests.speech import assert_is_speech

WAIT_S = 20.0  # upper bound on any single wait; normal runs take a fraction of a second
SENTENCE = "Hello there, this is a test of the speech bridge."
STORY = "The first sentence is short. Here comes the second one. And a third one ends it."
LONG_STORY = " ".join(f"This is sentence number {n} of a long story." for n in range(1, 13))
REFERENCE_WAV = encode_audio(np.zeros(1600, dtype=np.float32), 16000, "wav")


@dataclasses.dataclass
class Client:
    server: RunningServer
    http: aiohttp.ClientSession

    def ws(self, **kwargs: Any) -> Any:
        return self.http.ws_connect(self.server.ws_url, autoping=True, **kwargs)

    async def post(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.post(
            f"{self.server.url}/synthesize", data=body, headers=headers
        ) as response:
            return response.status, (orjson.loads(await response.read()), response.headers)


@contextlib.asynccontextmanager
async def serving(engine: Engine, **settings: Any) -> AsyncIterator[Client]:
    async with serving_tts(TTSServerSettings(**settings), engine) as server, \
            aiohttp.ClientSession() as http:
        yield Client(server, http)


@pytest.fixture
async def piper(piper_engine: PiperEngine) -> AsyncIterator[Client]:
    async with serving(piper_engine, max_text_chars=1000, max_message_bytes=64 * 1024) as client:
        yield client



def sim(cache: Path, *, first_audio_s: float, rtf: float) -> SimEngine:
    # A voice path that does not exist: the engine must load the cache, never render again.
    return SimEngine(cache, first_audio_s=first_audio_s, rtf=rtf, piper_voice="/nonexistent.onnx")


async def recv(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=WAIT_S)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    reply: dict[str, Any] = orjson.loads(message.data)
    return reply


async def send(ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any]) -> None:
    await ws.send_str(orjson.dumps(message).decode())


async def assert_usable(ws: aiohttp.ClientWebSocketResponse) -> None:
    await send(ws, {"type": "hello"})
    assert (await recv(ws))["type"] == "hello"


def seed_request(text: str = SENTENCE, **extra: Any) -> dict[str, Any]:
    return {
        "type": "synthesize",
        "audio": base64.b64encode(REFERENCE_WAV).decode(),
        "text": text,
        "reference_text": "Silence.",
        "speed": 1.0,
        "seed": 42,
        **extra,
    }


def audio_of(reply: dict[str, Any]) -> tuple[np.ndarray, int]:
    return decode_audio(base64.b64decode(reply["audio"]), reply["format"], reply["sample_rate"])


# --- seed protocol -----------------------------------------------------------------------------


async def test_seed_client_over_websocket_gets_float32_speech_at_24k(piper: Client) -> None:
    async with piper.ws() as ws:
        await send(ws, seed_request())
        reply = await recv(ws)
    assert reply["type"] == "synthesis_complete"
    assert "id" not in reply and "chunks" not in reply
    assert (reply["format"], reply["sample_rate"]) == ("f32le", 24000)
    raw = base64.b64decode(reply["audio"])
    samples = np.frombuffer(raw, dtype="<f4")  # what a seed client does: no header, 24 kHz
    assert 1.5 < samples.size / 24000 < 6
    assert_is_speech(samples, 24000)


async def test_seed_client_over_http(piper: Client) -> None:
    status, (reply, _) = await piper.post(orjson.dumps(seed_request()))
    assert status == 200
    assert reply["type"] == "synthesis_complete"
    assert (reply["format"], reply["sample_rate"]) == ("f32le", 24000)
    assert_is_speech(*audio_of(reply))


async def test_hello_announces_the_extensions(piper: Client) -> None:
    async with piper.ws() as ws:
        await send(ws, {"type": "hello"})
        hello = await recv(ws)
    assert hello == {
        "type": "hello",
        "capabilities": list(CAPABILITIES),
        "engine": "piper",
        "sample_rate": 22050,
        "max_in_flight": 2 + 16,
        "can_clone": False,
    }


async def test_health(piper: Client) -> None:
    async with piper.http.get(f"{piper.server.url}/health") as response:
        assert response.status == 200
        health = await response.json()
    assert health["ready"] is True
    assert (health["engine"], health["sample_rate"], health["can_clone"]) == ("piper", 22050, False)
    assert health["capabilities"] == list(CAPABILITIES)
    assert (health["max_in_flight"], health["queued"], health["in_flight"]) == (18, 0, 0)


# --- extensions --------------------------------------------------------------------------------


async def test_request_id_is_echoed(piper: Client) -> None:
    async with piper.ws() as ws:
        await send(ws, seed_request(id="req-1"))
        reply = await recv(ws)
    assert (reply["type"], reply["id"]) == ("synthesis_complete", "req-1")


async def test_stream_sends_ordered_chunks_before_complete(piper: Client) -> None:
    async with piper.ws() as ws:
        await send(ws, seed_request(STORY, id="s1", stream=True))
        chunks: list[dict[str, Any]] = []
        while (reply := await recv(ws))["type"] == "audio_chunk":
            chunks.append(reply)
    assert reply["type"] == "synthesis_complete"
    assert reply["id"] == "s1"
    assert reply["audio"] == ""
    assert reply["chunks"] == len(chunks) >= 3  # Piper: a chunk per sentence
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert {c["id"] for c in chunks} == {"s1"}
    audio = np.concatenate([audio_of(c)[0] for c in chunks])
    assert_is_speech(audio, 24000)


async def test_cancel_stops_a_running_request_and_the_socket_stays_usable(piper: Client) -> None:
    async with piper.ws() as ws:
        await send(ws, seed_request(LONG_STORY, id="long", stream=True))
        first = await recv(ws)
        assert (first["type"], first["seq"]) == ("audio_chunk", 0)
        await send(ws, {"type": "cancel", "id": "long"})
        while (reply := await recv(ws))["type"] != "cancelled":
            assert reply["type"] == "audio_chunk"  # chunks already on the way
        assert reply == {"type": "cancelled", "id": "long"}
        await send(ws, seed_request(id="next"))
        reply = await recv(ws)  # nothing of "long" follows its ack
        assert (reply["type"], reply["id"]) == ("synthesis_complete", "next")
        assert_is_speech(*audio_of(reply))


async def test_cancel_of_a_finished_request_is_still_acked(piper: Client) -> None:
    async with piper.ws() as ws:
        await send(ws, {"type": "cancel", "id": "gone"})
        assert await recv(ws) == {"type": "cancelled", "id": "gone"}


async def test_two_requests_in_flight_on_one_socket(piper: Client) -> None:
    async with piper.ws() as ws:
        await send(ws, seed_request("The first request speaks this sentence.", id="a"))
        await send(ws, seed_request("And the second request says something else.", id="b"))
        replies = {(r := await recv(ws))["id"]: r for _ in range(2)}
    assert set(replies) == {"a", "b"}
    for reply in replies.values():
        assert reply["type"] == "synthesis_complete"
        assert_is_speech(*audio_of(reply))


async def test_a_duplicate_id_in_flight_is_refused(piper: Client) -> None:
    async with piper.ws() as ws:
        await send(ws, seed_request(LONG_STORY, id="dup", stream=True))
        await send(ws, seed_request(id="dup"))
        replies = [await recv(ws) for _ in range(2)]
        errors = [r for r in replies if r["type"] == "error"]
        assert len(errors) == 1
        assert "already in flight" in errors[0]["error"]
        await send(ws, {"type": "cancel", "id": "dup"})
        while (await recv(ws))["type"] != "cancelled":
            pass
        await assert_usable(ws)


@pytest.mark.parametrize(
    ("fmt", "rate"), [("ulaw", 8000), ("s16le", 16000), ("wav", 8000), ("f32le", 22050)]
)
async def test_output_format_and_rate(piper: Client, fmt: str, rate: int) -> None:
    async with piper.ws() as ws:
        await send(ws, seed_request(id="f", format=fmt, sample_rate=rate))
        reply = await recv(ws)
    assert (reply["format"], reply["sample_rate"]) == (fmt, rate)
    raw = base64.b64decode(reply["audio"])
    assert raw.startswith(b"RIFF") == (fmt == "wav")
    samples, decoded_rate = decode_audio(raw, fmt, rate)
    assert decoded_rate == rate
    assert_is_speech(samples, rate)


async def test_streamed_ulaw_at_8k(piper: Client) -> None:
    async with piper.ws() as ws:
        await send(ws, seed_request(STORY, id="u", stream=True, format="ulaw", sample_rate=8000))
        payload = b""
        while (reply := await recv(ws))["type"] == "audio_chunk":
            assert (reply["format"], reply["sample_rate"]) == ("ulaw", 8000)
            payload += base64.b64decode(reply["audio"])
    assert reply["type"] == "synthesis_complete"
    assert_is_speech(*decode_audio(payload, "ulaw", 8000))


# --- bad input ---------------------------------------------------------------------------------

BAD_MESSAGES: dict[str, tuple[bytes, str, str | None]] = {
    "invalid json": (b"{not json", "not valid JSON", None),
    "not an object": (b"[1, 2]", "JSON object", None),
    "missing text": (orjson.dumps({"type": "synthesize", "id": "m"}), "text is missing", "m"),
    "empty text": (orjson.dumps(seed_request("  ", id="e")), "text is missing", "e"),
    "text too long": (orjson.dumps(seed_request("a" * 1001, id="t")), "over the limit", "t"),
    "bad base64": (orjson.dumps(seed_request(id="b", audio="**not base64**")), "base64", "b"),
    "reference not audio": (
        orjson.dumps(seed_request(id="n", audio=base64.b64encode(b"not audio, text!").decode())),
        "audio",
        "n",
    ),
    "speed out of range": (orjson.dumps(seed_request(id="s", speed=9)), "out of range", "s"),
    "unknown format": (orjson.dumps(seed_request(id="f", format="mp3")), "format", "f"),
    "unknown type": (b'{"type": "sing"}', "unknown message type", None),
    "cancel without id": (b'{"type": "cancel"}', "cancel needs the id", None),
    "over max_message_bytes": (
        orjson.dumps(seed_request(id="big", padding="x" * 70_000)),
        "over the limit of 65536 bytes",
        "big",
    ),
}


@pytest.mark.parametrize("case", BAD_MESSAGES)
async def test_bad_websocket_input_gets_an_error_and_the_socket_stays_usable(
    piper: Client, case: str
) -> None:
    frame, error, request_id = BAD_MESSAGES[case]
    async with piper.ws() as ws:
        await ws.send_str(frame.decode())
        reply = await recv(ws)
        assert reply["type"] == "error"
        assert error in reply["error"]
        assert reply["code"] == "bad_request"
        assert reply.get("id") == request_id
        await assert_usable(ws)


async def test_binary_frame_gets_an_error_and_the_socket_stays_usable(piper: Client) -> None:
    async with piper.ws() as ws:
        await ws.send_bytes(orjson.dumps(seed_request()))
        reply = await recv(ws)
        assert reply["type"] == "error"
        assert "binary frames are not supported" in reply["error"]
        await assert_usable(ws)


async def test_unreadably_large_frame_closes_with_1009(piper: Client) -> None:
    async with piper.ws() as ws:
        await ws.send_str("x" * (3 * 64 * 1024))
        message = await ws.receive(timeout=WAIT_S)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    status, _ = await piper.post(orjson.dumps(seed_request("Still alive.")))
    assert status == 200  # the server carries on


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "not valid JSON"),
        (orjson.dumps(seed_request("")), 400, "text is missing"),
        (orjson.dumps(seed_request(speed=0.1)), 400, "out of range"),
        (orjson.dumps(seed_request(audio="@@@")), 400, "base64"),
        (b'{"type": "hello"}', 400, "only a synthesize request"),
        (orjson.dumps(seed_request(padding="x" * 70_000)), 413, "over the limit"),
    ],
)
async def test_bad_http_input(piper: Client, body: bytes, status: int, error: str) -> None:
    got, (reply, _) = await piper.post(body)
    assert got == status
    assert reply["type"] == "error"
    assert error in reply["error"]


# --- load: busy and deadlines ------------------------------------------------------------------


async def test_busy_at_once_when_the_queue_is_full(sim_cache: Path) -> None:
    # First chunk quickly, the next one far away: the request holds the only slot meanwhile.
    engine = sim(sim_cache, first_audio_s=0.01, rtf=100.0)
    async with serving(engine, concurrency=1, max_queue=0) as client, client.ws() as ws:
        await send(ws, {"type": "synthesize", "text": SENTENCE, "id": "hog", "stream": True})
        assert (await recv(ws))["type"] == "audio_chunk"

        status, (reply, headers) = await client.post(orjson.dumps(seed_request()))
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert (reply["code"], reply["retryable"]) == ("busy", True)

        async with client.ws() as other:
            await send(other, seed_request(id="late"))
            reply = await recv(other)
            assert (reply["type"], reply["code"], reply["id"]) == ("error", "busy", "late")

        async with client.http.get(f"{client.server.url}/health") as response:
            health = await response.json()
        assert (health["in_flight"], health["queued"]) == (1, 0)

        await send(ws, {"type": "cancel", "id": "hog"})
        while (await recv(ws))["type"] != "cancelled":
            pass
        await send(ws, seed_request("Free.", id="after"))  # one chunk
        while (reply := await recv(ws))["type"] == "audio_chunk":
            pass
        assert (reply["type"], reply["id"]) == ("synthesis_complete", "after")


async def test_per_socket_in_flight_limit_answers_busy(sim_cache: Path) -> None:
    engine = sim(sim_cache, first_audio_s=30.0, rtf=0.1)
    async with serving(engine, concurrency=1, max_queue=1) as client, client.ws() as ws:
        for request_id in ("a", "b", "c"):
            await send(ws, seed_request(id=request_id))
        reply = await recv(ws)
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "busy", "c")


async def test_deadline_answers_timeout(sim_cache: Path) -> None:
    engine = sim(sim_cache, first_audio_s=30.0, rtf=0.1)
    async with serving(engine, request_deadline_s=0.2) as client:
        async with client.ws() as ws:
            await send(ws, seed_request(id="slow"))
            reply = await recv(ws)
            assert (reply["type"], reply["code"], reply["retryable"]) == ("error", "timeout", True)
            assert reply["id"] == "slow"
            await assert_usable(ws)
        status, (reply, _) = await client.post(orjson.dumps(seed_request()))
        assert (status, reply["code"]) == (504, "timeout")


async def test_shutdown_closes_open_sockets_at_once(sim_cache: Path) -> None:
    engine = sim(sim_cache, first_audio_s=30.0, rtf=0.1)
    server = await start(TTSServerSettings(), host="127.0.0.1", port=0, engine=engine)
    await asyncio.wait_for(server.service.loaded(), WAIT_S)
    async with aiohttp.ClientSession() as http:
        busy = await http.ws_connect(server.ws_url)
        idle = await http.ws_connect(server.ws_url)
        await send(busy, seed_request(id="pending"))
        await assert_usable(busy)  # the request is in flight
        await asyncio.wait_for(server.close(), 5.0)  # not held open by pooled sockets
        for ws in (busy, idle):
            message = await ws.receive(timeout=WAIT_S)
            assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1001)


# --- auth --------------------------------------------------------------------------------------


async def test_api_key_on_http_and_websocket(piper_engine: PiperEngine) -> None:
    key = "s3cret-key"
    async with serving(piper_engine, api_key=key, base_path="/tts/v1/") as client:
        assert client.server.url.endswith("/tts/v1")
        body = orjson.dumps(seed_request("Hi there."))
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            status, (reply, response_headers) = await client.post(body, headers)
            assert (status, reply["code"]) == (401, "unauthorized")
            assert key not in orjson.dumps(reply).decode()
            assert response_headers["WWW-Authenticate"] == "Bearer"
        status, _ = await client.post(body, {"Authorization": f"Bearer {key}"})
        assert status == 200

        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with client.ws(headers=headers):
                    pass
            assert refused.value.status == 401
        async with client.ws(headers={"Authorization": f"Bearer {key}"}) as ws:
            await assert_usable(ws)

        async with client.http.get(f"{client.server.url}/health") as response:
            assert response.status == 200  # probes need no key


# --- engines -----------------------------------------------------------------------------------


async def test_sim_engine_latency_model(sim_cache: Path) -> None:
    first_audio, rtf = 0.1, 0.4
    text = "x" * 31  # about 2 s of audio: four 0.5 s chunks
    engine = sim(sim_cache, first_audio_s=first_audio, rtf=rtf)
    async with serving(engine) as client, client.ws() as ws:
        sent = time.perf_counter()
        await send(ws, {"type": "synthesize", "text": text, "id": "t", "stream": True})
        arrivals, chunks = [], []
        while (reply := await recv(ws))["type"] == "audio_chunk":
            arrivals.append(time.perf_counter() - sent)
            chunks.append(audio_of(reply)[0])
    total_s = len(text) * SECONDS_PER_CHAR
    assert len(chunks) == int(np.ceil(total_s / CHUNK_SECONDS))
    expected = [first_audio + rtf * CHUNK_SECONDS * k for k in range(len(chunks))]
    for got, want in zip(arrivals, expected, strict=True):
        assert want - 0.01 <= got <= want + 0.15, (arrivals, expected)
    audio = np.concatenate(chunks)
    assert abs(audio.size / 24000 - total_s) < 0.01
    assert_is_speech(audio, 24000)


async def test_sim_engine_renders_its_cache_once(sim_cache: Path) -> None:
    engine = sim(sim_cache, first_audio_s=0, rtf=0)
    assert engine.cache_path.is_file()
    await engine.start()  # loads the cache: rendering would fail with the bogus voice path
    chunks = [c async for c in engine.synthesize(Utterance("Speed makes it shorter.", speed=2.0))]
    seconds = sum(c.size for c in chunks) / engine.sample_rate
    assert abs(seconds - 23 * SECONDS_PER_CHAR / 2.0) < 0.01


async def test_sim_engine_at_8_khz_speaks_at_that_rate(
    tmp_path: Path, piper_engine: PiperEngine
) -> None:
    engine = SimEngine(tmp_path, first_audio_s=0, rtf=0, piper=piper_engine, sample_rate=8000)
    await engine.start()
    assert engine.cache_path.is_file() and "8000" in engine.cache_path.name
    text = "Eight kilohertz speech for the load test."
    chunks = [c async for c in engine.synthesize(Utterance(text))]
    assert max(c.size for c in chunks) == round(CHUNK_SECONDS * 8000)
    audio = np.concatenate(chunks)
    assert abs(audio.size / 8000 - len(text) * SECONDS_PER_CHAR) < 0.01
    assert_is_speech(audio, 8000)
    with pytest.raises(ConfigError, match="sim_sample_rate 4000"):
        SimEngine(tmp_path, first_audio_s=0, rtf=0, sample_rate=4000)


def test_silma_engine_without_its_extra_is_a_clear_config_error() -> None:
    if importlib.util.find_spec("silma_tts") is not None:
        pytest.skip("silma_tts is installed here")
    with pytest.raises(ConfigError, match=r"engine 'silma' needs the \[silma\] extra: pip install"):
        get_engine(TTSServerSettings(engine="silma"))


def test_piper_voice_path_that_does_not_exist_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Piper voice"):
        get_engine(TTSServerSettings(engine="piper", piper_voice="/nowhere/voice.onnx"))
