"""SILMA's public API v2 on our TTS server (127.0.0.1, real Piper speech): WebSocket and HTTP
streaming, several utterances a socket, auth, models, voices (predefined and registered over
our protocol), pronunciation hints, bad input, and a client that leaves mid-utterance."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from piper import PiperVoice
from structlog.testing import capture_logs

from bridge.audio.codec import decode_audio, encode_audio
from bridge.errors import ConfigError
from bridge.settings import TTSServerSettings
from bridge.silma import v2_protocol as v2
from bridge.tts_server.app import RunningServer, start
from bridge.tts_server.engines import Engine, Utterance
from bridge.tts_server.engines.piper import PiperEngine, default_voice
from bridge.tts_server.engines.sim import SimEngine
from bridge.tts_server.pronunciation import DIGITS, LETTERS
from bridge.tts_server.v2_api import MAX_BACKLOG, MAX_REQUEST_BYTES
from tests.recording_engine import RecordingEngine
from tests.servers import serving_tts
from tests.speech import assert_is_speech

WAIT_S = 20.0  # upper bound on any single wait; normal runs take a fraction of a second
ENGLISH = "silma-tts-v2-english"
SENTENCE = "Hello there, this is a test of the speech bridge."
STORY = "The first sentence is short. Here comes the second one. And a third one ends it."
LONG_STORY = " ".join(f"This is sentence number {n} of a long story." for n in range(1, 6))
KEY = "v2-s3cret-key"


@dataclasses.dataclass
class V2Client:
    server: RunningServer
    engine: RecordingEngine
    http: aiohttp.ClientSession

    def ws(self, **kwargs: Any) -> Any:
        return self.http.ws_connect(v2.ws_url(self.server.v2_url), **kwargs)

    def post(self, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.http.post(v2.stream_url(self.server.v2_url), data=data, headers=headers)

    async def health(self) -> dict[str, Any]:
        async with self.http.get(f"{self.server.url}/health") as response:
            health: dict[str, Any] = await response.json()
        return health


@contextlib.asynccontextmanager
async def serving(engine: Engine, **settings: Any) -> AsyncIterator[V2Client]:
    recording = RecordingEngine(engine)
    async with serving_tts(TTSServerSettings(**settings), recording) as server, \
            aiohttp.ClientSession() as http:
        yield V2Client(server, recording, http)


@pytest.fixture
async def piper(piper_engine: PiperEngine) -> AsyncIterator[V2Client]:
    async with serving(piper_engine) as client:
        yield client



def stalling_sim(cache: Path) -> SimEngine:
    """Its first chunk at once, the next one 50 s later: a request is mid-utterance meanwhile."""
    return SimEngine(cache, first_audio_s=0.01, rtf=100.0, piper_voice="/nonexistent.onnx")


def request(text: str = SENTENCE, **extra: Any) -> dict[str, Any]:
    return {"model_id": ENGLISH, "text": text, "voice_id": "default", **extra}


async def send(ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any]) -> None:
    await ws.send_str(orjson.dumps(message).decode())


async def event(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=WAIT_S)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    reply: dict[str, Any] = orjson.loads(message.data)
    return reply


async def utterance(ws: aiohttp.ClientWebSocketResponse) -> tuple[np.ndarray, int]:
    """One utterance's replies: started, streaming events, completed. (samples, events)"""
    assert await event(ws) == {"status": "started"}
    audio, events = b"", 0
    while (reply := await event(ws))["status"] == "streaming":
        audio += base64.b64decode(reply["audio"])
        events += 1
    assert reply == {"status": "completed"}
    return decode_audio(audio, "f32le", v2.SAMPLE_RATE)[0], events


async def failure(ws: aiohttp.ClientWebSocketResponse) -> str:
    reply = await event(ws)
    assert set(reply) == {"status", "code"} and reply["status"] == "failed", reply
    code: str = reply["code"]
    return code


# --- WebSocket ---------------------------------------------------------------------------------


async def test_ws_speaks_24k_float32_speech(piper: V2Client) -> None:
    async with piper.ws() as ws:
        await send(ws, request(LONG_STORY))
        samples, events = await utterance(ws)
    assert_is_speech(samples, v2.SAMPLE_RATE)
    assert samples.size / v2.SAMPLE_RATE > 5 * 1.0  # five sentences
    assert events >= 5  # Piper makes a chunk a sentence, each sent as its own event


async def test_ws_sends_each_chunk_as_the_engine_makes_it(sim_cache: Path) -> None:
    async with serving(stalling_sim(sim_cache)) as client, client.ws() as ws:
        await send(ws, request(LONG_STORY))
        assert await event(ws) == {"status": "started"}
        first = await event(ws)  # the engine's next chunk is 50 s away
        assert first["status"] == "streaming"
        assert len(base64.b64decode(first["audio"])) == 0.5 * v2.SAMPLE_RATE * 4  # one chunk
        assert not client.engine.finished.is_set()


async def test_several_utterances_on_one_socket_are_answered_in_order(piper: V2Client) -> None:
    texts = ["The first request is a short one.", STORY, "Third."]
    async with piper.ws() as ws:
        for text in texts:  # all sent at once, as pipecat's client does
            await send(ws, request(text))
        results = [await utterance(ws) for _ in texts]
        await send(ws, request("And one more after a pause."))  # still usable
        last, _ = await utterance(ws)
    assert [u.text for u in piper.engine.utterances] == [*texts, "And one more after a pause."]
    for samples, _ in results[:2]:
        assert_is_speech(samples, v2.SAMPLE_RATE)
    assert_is_speech(last, v2.SAMPLE_RATE)
    assert results[1][1] >= 3  # Piper: an event per sentence at least
    assert results[1][0].size > results[2][0].size  # each answer is its own request's


async def test_a_request_past_the_pending_bound_is_refused_busy_in_its_turn(
        piper_engine: PiperEngine) -> None:
    async with serving(piper_engine, v2_max_pending=1) as client, client.ws() as ws:
        for text in (LONG_STORY, "Second.", "Third."):
            await send(ws, request(text))
        await utterance(ws)
        await utterance(ws)
        assert await failure(ws) == "busy"
        assert (await client.health())["v2_refused"] == {"busy": 1}
        await send(ws, request("Fourth."))  # the bound is per request waiting, not per socket
        samples, _ = await utterance(ws)
        assert samples.size
        assert [u.text for u in client.engine.utterances] == [LONG_STORY, "Second.", "Fourth."]


async def test_speed_reaches_the_engine_and_creativity_and_user_id_are_accepted(
        piper: V2Client) -> None:
    async with piper.ws() as ws:
        await send(ws, request(SENTENCE, speed=1.6, creativity=0.3, user_id="u-1"))
        fast, _ = await utterance(ws)
        await send(ws, request(SENTENCE))
        normal, _ = await utterance(ws)
    assert [u.speed for u in piper.engine.utterances] == [1.6, 1.0]
    assert fast.size < 0.8 * normal.size


@pytest.mark.parametrize(("message", "code"), [
    (request(model_id="silma-tts-v3-klingon"), "unknown_model"),
    (request(voice_id="nobody"), "unknown_voice"),
    (request(custom_audio_id="0" * 32, user_id="u-1"), "unknown_voice"),
    (request("x" * 251), "text_too_long"),
    (request(speed=3.0), "bad_request"),
    ({"text": SENTENCE, "voice_id": "default"}, "bad_request"),
    (request("   "), "bad_request"),
    (request("<STAG_PN></STAG_PN>"), "bad_request"),
])
async def test_ws_refusals_keep_the_socket_usable(piper: V2Client, message: dict[str, Any],
                                                  code: str) -> None:
    async with piper.ws() as ws:
        await send(ws, message)
        assert await failure(ws) == code
        await send(ws, request("Still here, and speaking."))
        samples, _ = await utterance(ws)
    assert_is_speech(samples, v2.SAMPLE_RATE)
    assert (await piper.health())["v2_refused"] == {code: 1}


async def test_ws_refuses_binary_frames_bad_json_and_oversized_messages(piper: V2Client) -> None:
    async with piper.ws() as ws:
        await ws.send_bytes(b"\x00\x01")
        assert await failure(ws) == "bad_request"
        await ws.send_str("{not json")
        assert await failure(ws) == "bad_request"
        await ws.send_str(orjson.dumps(request(user_id="u" * MAX_REQUEST_BYTES)).decode())
        assert await failure(ws) == "bad_request"
        await send(ws, request("Still here, and speaking."))
        samples, _ = await utterance(ws)
    assert_is_speech(samples, v2.SAMPLE_RATE)
    assert (await piper.health())["v2_refused"] == {"bad_request": 3}


async def test_a_flooding_client_is_closed(sim_cache: Path) -> None:
    async with serving(stalling_sim(sim_cache), v2_max_pending=0) as client, client.ws() as ws:
        await send(ws, request(LONG_STORY))
        for _ in range(MAX_BACKLOG + 1):  # each refused busy, owed after the first's replies
            await send(ws, request())
        while (message := await ws.receive(timeout=WAIT_S)).type == aiohttp.WSMsgType.TEXT:
            assert orjson.loads(message.data)["status"] in ("started", "streaming")
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        await asyncio.wait_for(client.engine.finished.wait(), WAIT_S)  # its request cancelled
        assert client.server.service.scheduler.running == 0


async def test_closing_the_socket_mid_utterance_frees_the_slot(sim_cache: Path) -> None:
    async with serving(stalling_sim(sim_cache), concurrency=1, max_queue=0) as client:
        scheduler = client.server.service.scheduler
        async with client.ws() as ws:
            await send(ws, request(LONG_STORY))
            assert await event(ws) == {"status": "started"}
            assert (await event(ws))["status"] == "streaming"
            assert scheduler.running == 1 and not client.engine.finished.is_set()
        await asyncio.wait_for(client.engine.finished.wait(), WAIT_S)
        assert (scheduler.running, scheduler.queued) == (0, 0)
        client.engine.finished.clear()
        async with client.ws() as ws:  # the only slot is free again
            await send(ws, request("Free."))
            assert await event(ws) == {"status": "started"}
            assert (await event(ws))["status"] == "streaming"


async def test_a_deadline_mid_utterance_fails_it_and_the_socket_goes_on(sim_cache: Path) -> None:
    async with serving(stalling_sim(sim_cache), request_deadline_s=1.0) as client, \
            client.ws() as ws:
        await send(ws, request(LONG_STORY))
        assert await event(ws) == {"status": "started"}
        assert (await event(ws))["status"] == "streaming"
        assert await failure(ws) == "timeout"
        await send(ws, request("Ok."))  # a short text: one chunk, at once
        samples, _ = await utterance(ws)
    assert samples.size > 0


async def test_server_shutdown_closes_v2_sockets(piper_engine: PiperEngine) -> None:
    async with serving(piper_engine) as client:
        ws = await client.ws()
        await client.server.close()
        message = await ws.receive(timeout=WAIT_S)
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1001)


# --- HTTP --------------------------------------------------------------------------------------


async def test_http_streams_raw_float32_speech(piper: V2Client) -> None:
    async with piper.post(request(LONG_STORY)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert "Content-Length" not in response.headers  # chunked: written as made
        body = await response.read()
    samples, _ = decode_audio(body, "f32le", v2.SAMPLE_RATE)
    assert_is_speech(samples, v2.SAMPLE_RATE)
    assert samples.size / v2.SAMPLE_RATE > 5 * 1.0


async def test_http_writes_each_chunk_as_the_engine_makes_it(sim_cache: Path) -> None:
    # The deadline ends the request soon after: a handler notices its client gone only when it
    # writes, and the server's shutdown would wait for it.
    async with serving(stalling_sim(sim_cache), request_deadline_s=2.0) as client, \
            client.post(request(LONG_STORY)) as response:
        assert response.status == 200
        first = await asyncio.wait_for(response.content.readexactly(4), WAIT_S)
        assert first and not client.engine.finished.is_set()  # the next chunk is 50 s away


@pytest.mark.parametrize(("body", "status", "code"), [
    (request(model_id="nope"), 400, "unknown_model"),
    (request(voice_id="nobody"), 400, "unknown_voice"),
    (request("x" * 251), 400, "text_too_long"),
    (b"[1, 2]", 400, "bad_request"),
    (orjson.dumps(request(user_id="u" * MAX_REQUEST_BYTES)), 413, "bad_request"),
])
async def test_http_errors_are_a_status_and_a_detail(piper: V2Client, body: Any, status: int,
                                                     code: str) -> None:
    async with piper.post(body) as response:
        assert (response.status, await response.json()) == (status, {"detail": code})
    assert piper.engine.utterances == []


async def test_http_busy_answers_503_with_retry_after(sim_cache: Path) -> None:
    async with serving(stalling_sim(sim_cache), concurrency=1, max_queue=0) as client, \
            client.ws() as ws:
        await send(ws, request(LONG_STORY))  # holds the only slot
        assert await event(ws) == {"status": "started"}
        assert (await event(ws))["status"] == "streaming"
        async with client.post(request()) as response:
            assert (response.status, await response.json()) == (503, {"detail": "busy"})
            assert int(response.headers["Retry-After"]) >= 1


async def test_http_failure_after_audio_cuts_the_body_short(sim_cache: Path) -> None:
    async with serving(stalling_sim(sim_cache), request_deadline_s=1.0) as client, \
            client.post(request(LONG_STORY)) as response:
        assert response.status == 200
        assert await response.content.readany()  # audio has gone out
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_an_http_client_leaving_mid_stream_frees_the_slot(piper_engine: PiperEngine
                                                               ) -> None:
    async with serving(piper_engine, concurrency=1, max_queue=0) as client:
        async with client.post(request(LONG_STORY)) as response:
            assert await response.content.readany()
            response.close()  # drop the connection with most of the audio unread
        await asyncio.wait_for(client.engine.finished.wait(), WAIT_S)
        scheduler = client.server.service.scheduler
        assert (scheduler.running, scheduler.queued) == (0, 0)
        async with client.post(request("Free.")) as response:
            assert response.status == 200
            assert await response.read()


# --- auth --------------------------------------------------------------------------------------


async def test_api_key_on_both_transports(piper_engine: PiperEngine) -> None:
    async with serving(piper_engine, api_key=KEY) as client:
        for headers in ({}, {"apiKey": "wrong"}, {"Authorization": f"Bearer {KEY}x"}):
            async with client.post(request(), headers) as response:
                assert (response.status, await response.json()) == (
                    401, {"detail": "invalid_api_key"})
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws(headers=headers)
            assert refused.value.status == 401  # before the upgrade
        assert client.engine.utterances == []
        for headers in ({"apiKey": KEY}, {"apikey": KEY}, {"Authorization": f"Bearer {KEY}"}):
            async with client.post(request("Yes."), headers) as response:
                assert response.status == 200 and await response.read()
            async with client.ws(headers=headers) as ws:
                await send(ws, request("Yes."))
                samples, _ = await utterance(ws)
                assert samples.size
        assert (await client.health())["v2_refused"] == {"invalid_api_key": 6}


async def test_one_log_line_per_request_without_key_or_text(piper_engine: PiperEngine) -> None:
    async with serving(piper_engine, api_key=KEY) as client:
        with capture_logs() as logs:
            async with client.ws(headers={"apiKey": KEY}) as ws:
                await send(ws, request("A secret sentence nobody logs.", voice_id="default"))
                await utterance(ws)
            async with client.post(request(model_id="nope"), {"apiKey": KEY}) as response:
                assert response.status == 400
    lines = [entry for entry in logs if entry["event"] == "tts_request"]
    assert len(lines) == 1
    line = lines[0]
    assert (line["api"], line["transport"], line["model"], line["voice"], line["outcome"]) == (
        "v2", "ws", ENGLISH, "default", "ok")
    assert line["sample_rate"] == v2.SAMPLE_RATE and line["format"] == "f32le"
    refused = [entry for entry in logs if entry["event"] == "tts_v2_refused"]
    assert [entry["code"] for entry in refused] == ["unknown_model"]
    everything = repr(logs)
    assert KEY not in everything and "secret sentence" not in everything


# --- models, voices, hints ---------------------------------------------------------------------


async def test_the_model_table_decides_which_models_are_served(piper_engine: PiperEngine,
                                                              ) -> None:
    async with serving(piper_engine, v2_models={ENGLISH: "piper"}) as client:
        async with client.post(request(model_id="silma-tts-v2-msa")) as response:
            assert (response.status, await response.json()) == (400, {"detail": "unknown_model"})
        async with client.post(request()) as response:
            assert response.status == 200 and await response.read()
        async with client.http.get(f"{client.server.url}/metrics") as response:
            metrics = await response.text()
        assert 'tts_server_v2_refused_total{code="unknown_model"} 1.0' in metrics


async def test_a_model_table_naming_another_engine_stops_the_start(piper_engine: PiperEngine,
                                                                  ) -> None:
    with pytest.raises(ConfigError, match="silma-tts-v2-ksa is to be spoken by 'silma'"):
        await start(TTSServerSettings(v2_models={"silma-tts-v2-ksa": "silma"}),
                    host="127.0.0.1", port=0, engine=piper_engine)


async def spoken_wav(engine: PiperEngine, text: str) -> tuple[bytes, np.ndarray]:
    chunks = [chunk async for chunk in engine.synthesize(Utterance(text))]
    samples = np.concatenate(chunks)
    return encode_audio(samples, engine.sample_rate, "wav"), samples


async def test_a_predefined_voice_from_the_voices_folder(piper_engine: PiperEngine,
                                                         tmp_path: Path) -> None:
    transcript = "This is the voice of Anna."
    wav, samples = await spoken_wav(piper_engine, transcript)
    (tmp_path / "anna.wav").write_bytes(wav)
    (tmp_path / "anna.txt").write_text(transcript + "\n", encoding="utf-8")
    async with serving(piper_engine, v2_voices_dir=str(tmp_path)) as client:
        async with client.ws() as ws:
            await send(ws, request(voice_id="anna"))
            samples_heard, _ = await utterance(ws)
            assert_is_speech(samples_heard, v2.SAMPLE_RATE)
            await send(ws, request(voice_id="default"))
            await utterance(ws)
            await send(ws, request(voice_id="bob"))
            assert await failure(ws) == "unknown_voice"
    anna, default = client.engine.utterances
    assert (anna.reference_rate, anna.reference_text) == (piper_engine.sample_rate, transcript)
    assert anna.reference_audio is not None
    np.testing.assert_allclose(anna.reference_audio, samples, atol=1 / 32767)
    assert default.reference_audio is None


@pytest.mark.parametrize(("files", "needle"), [
    ({"anna.wav": b"RIFF not really", "anna.txt": b"Hi."}, "anna.wav"),
    ({"anna.wav": None}, "anna.txt is missing"),
    ({"anna.wav": None, "anna.txt": b"  "}, "anna.txt must hold"),
    ({"default.wav": None, "default.txt": b"Hi."}, "default.wav"),
])
async def test_a_broken_voices_folder_stops_the_start(piper_engine: PiperEngine, tmp_path: Path,
                                                      files: dict[str, bytes | None],
                                                      needle: str) -> None:
    silence = encode_audio(np.full(1600, 0.1, dtype=np.float32), 16000, "wav")
    for name, data in files.items():
        (tmp_path / name).write_bytes(silence if data is None else data)
    with pytest.raises(ConfigError, match=needle):
        await start(TTSServerSettings(v2_voices_dir=str(tmp_path)), host="127.0.0.1", port=0,
                    engine=piper_engine)


async def test_custom_audio_id_is_a_voice_registered_over_our_protocol(piper: V2Client) -> None:
    clip = encode_audio(np.sin(np.linspace(0, 900, 16000)).astype(np.float32) * 0.3, 16000,
                        "wav")
    async with piper.http.ws_connect(piper.server.ws_url) as ours:
        await ours.send_str(orjson.dumps({"type": "register_voice", "reference_text": "Hi.",
                                          "audio": base64.b64encode(clip).decode()}).decode())
        registered = orjson.loads((await ours.receive(timeout=WAIT_S)).data)
    assert registered["type"] == "voice_registered"
    async with piper.post(request(voice_id="sarah", custom_audio_id=registered["voice_id"],
                                  user_id="u-1")) as response:
        assert response.status == 200
        assert_is_speech(decode_audio(await response.read(), "f32le")[0], v2.SAMPLE_RATE)
    (spoken,) = piper.engine.utterances
    assert (spoken.reference_rate, spoken.reference_text) == (16000, "Hi.")
    assert spoken.reference_audio is not None and spoken.reference_audio.size == 16000


async def test_pronunciation_hints_reach_the_engine_expanded(piper: V2Client) -> None:
    text = "Call <STAG_PN>92005455</STAG_PN> or write to <STAG_EMAIL>a.b@c.com</STAG_EMAIL>."
    async with piper.ws() as ws:
        await send(ws, request(text))
        samples, _ = await utterance(ws)
        await send(ws, request("<STAG_PN>12</STAG_PN>", model_id="silma-tts-v2-ksa"))
        await utterance(ws)
    english, arabic = (u.text for u in piper.engine.utterances)
    assert english == ("Call nine two zero zero five four five five or write to "
                       "eigh dot bee at see dot see oh em.")
    assert arabic == "واحد اثنان"
    assert_is_speech(samples, v2.SAMPLE_RATE)


def test_piper_says_each_english_name_as_it_says_the_letter_or_digit() -> None:
    model, config = default_voice()
    voice = PiperVoice.load(model, config)

    def sounds(text: str) -> str:
        return "".join("".join(part) for part in voice.phonemize(text)).translate(
            str.maketrans("", "", "ˈˌ "))

    for index, name in enumerate(LETTERS["en"]):
        assert sounds(name) == sounds(chr(ord("A") + index)), name
    for value, word in enumerate(DIGITS["en"]):
        assert sounds(word) == sounds(str(value)), word
