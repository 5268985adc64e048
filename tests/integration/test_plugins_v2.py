"""SILMA's own client plugins, as published on PyPI (livekit-plugins-silma, pipecat-silma),
against our TTS server's v2 API with only their base URL pointed at it.

The plugins and their frameworks live in a venv of their own (.venv-plugins, built by `make
plugins-venv` from tests/plugin_clients/requirements.txt): they are too heavy for ours. Each
plugin runs once, as a subprocess, in a small client script under tests/plugin_clients/ that
uses it as its users would and writes what it heard as 16-bit PCM. `make test` names that
venv's python in BRIDGE_TEST_PLUGINS_PYTHON, and then a missing venv fails these tests; run
without it, they use .venv-plugins when it is there and are skipped when it is not.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from bridge.audio.codec import decode_audio, encode_audio
from bridge.settings import TTSServerSettings
from bridge.silma import v2_protocol as v2
from bridge.tts_server.app import RunningServer, start
from bridge.tts_server.engines import Utterance
from bridge.tts_server.engines.piper import PiperEngine
from tests.recording_engine import RecordingEngine
from tests.speech import assert_is_speech

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "tests" / "plugin_clients"
PYTHON_VARIABLE = "BRIDGE_TEST_PLUGINS_PYTHON"
CLIENT_TIMEOUT_S = 120.0  # a client's whole run, its framework's import (a few seconds) included
KEY = "plugins-v2-key"
LIVEKIT_TEXT = "Hello from the LiveKit plugin. Call me at <STAG_PN>42</STAG_PN> today, please."
PIPECAT_TEXT = "Hello from the pipecat plugin, speaking through a real pipeline."
SARAH = "Hello, my name is Sarah, and this is my voice."
DURATION_TOLERANCE = 0.25  # the plugin's audio against the same text fetched here directly


def plugins_python() -> Path:
    named = os.environ.get(PYTHON_VARIABLE)
    if named:
        if not Path(named).is_file():
            pytest.fail(f"{PYTHON_VARIABLE}={named} does not exist: `make plugins-venv` builds it")
        return Path(named)
    found = ROOT / ".venv-plugins" / "bin" / "python"
    if not found.is_file():
        pytest.skip("SILMA's plugins are not installed (.venv-plugins): `make plugins-venv`, "
                    "or run `make test`")
    return found


@pytest.fixture(scope="module")
def python() -> Path:
    return plugins_python()


@pytest.fixture(scope="module")
async def server(piper_engine: PiperEngine, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[RunningServer]:
    """Our server with a key and the plugins' default voice, sarah, made by Piper itself."""
    voices = tmp_path_factory.mktemp("v2-voices")
    chunks = [chunk async for chunk in piper_engine.synthesize(Utterance(SARAH))]
    (voices / "sarah.wav").write_bytes(
        encode_audio(np.concatenate(chunks), piper_engine.sample_rate, "wav"))
    (voices / "sarah.txt").write_text(SARAH, encoding="utf-8")
    settings = TTSServerSettings(api_key=KEY, v2_voices_dir=str(voices))
    running = await start(settings, host="127.0.0.1", port=0,
                          engine=RecordingEngine(piper_engine))
    try:
        await asyncio.wait_for(running.service.loaded(), 20)
        yield running
    finally:
        await running.close()


def engine_of(server: RunningServer) -> RecordingEngine:
    engine = server.service.engine
    assert isinstance(engine, RecordingEngine)
    return engine


async def run_client(python: Path, script: str, server: RunningServer, text: str,
                     out: Path) -> dict[str, Any]:
    """One client script's run, bounded in time; its JSON report."""
    process = await asyncio.create_subprocess_exec(
        str(python), str(CLIENTS / script), server.v2_url, KEY, text, str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=out)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), CLIENT_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{script} did not finish within {CLIENT_TIMEOUT_S:g} s")
    assert process.returncode == 0, stderr.decode(errors="replace")[-4000:]
    report: dict[str, Any] = orjson.loads(stdout.decode().strip().splitlines()[-1])
    return report


async def direct_seconds(server: RunningServer, text: str, **voice: str) -> float:
    """How long our server's own answer to `text` lasts, fetched here without a plugin."""
    body = {"text": text, **voice}
    async with aiohttp.ClientSession() as http, http.post(
            v2.stream_url(server.v2_url), data=orjson.dumps(body),
            headers={v2.API_KEY_HEADER: KEY}) as response:
        assert response.status == 200
        return len(await response.read()) / 4 / v2.SAMPLE_RATE


def heard(path: Path) -> np.ndarray:
    samples, _ = decode_audio(path.read_bytes(), "s16le", v2.SAMPLE_RATE)
    return samples


def assert_plausible(samples: np.ndarray, expected_s: float) -> None:
    assert_is_speech(samples, v2.SAMPLE_RATE)
    seconds = samples.size / v2.SAMPLE_RATE
    assert abs(seconds - expected_s) <= DURATION_TOLERANCE * expected_s, (seconds, expected_s)


async def test_livekit_plugin_over_http_and_websocket(python: Path, server: RunningServer,
                                                      tmp_path: Path) -> None:
    engine = engine_of(server)
    engine.utterances.clear()
    report = await run_client(python, "livekit_client.py", server, LIVEKIT_TEXT, tmp_path)
    # Both transports: tts.synthesize is HTTP /stream, tts.stream() the WebSocket.
    spoken = [u.text for u in engine.utterances]
    assert len(spoken) >= 2 and not any("STAG" in text for text in spoken)
    assert "four two" in spoken[0]  # the hint, read by our server
    expected = await direct_seconds(server, LIVEKIT_TEXT, model_id="silma-tts-v2-english",
                                    voice_id="default")
    for transport in ("http", "ws"):
        assert report[transport]["rates"] == [v2.SAMPLE_RATE]
        assert_plausible(heard(tmp_path / f"{transport}.pcm"), expected)
    refused = {"error": "APIStatusError", "status": 401, "retryable": False}
    assert (report["wrong_key_http"], report["wrong_key_ws"]) == (refused, refused)


async def test_pipecat_plugin_in_a_pipeline(python: Path, server: RunningServer,
                                            tmp_path: Path) -> None:
    engine = engine_of(server)
    engine.utterances.clear()
    report = await run_client(python, "pipecat_client.py", server, PIPECAT_TEXT, tmp_path)
    assert report["pipecat"]["errors"] == []
    assert report["pipecat"]["rates"] == [v2.SAMPLE_RATE]
    (spoken,) = engine.utterances  # the plugin's defaults: the msa model, sarah's voice
    assert (spoken.text, spoken.reference_text) == (PIPECAT_TEXT, SARAH)
    expected = await direct_seconds(server, PIPECAT_TEXT, model_id="silma-tts-v2-msa",
                                    voice_id="sarah")
    assert_plausible(heard(tmp_path / "pipecat.pcm"), expected)
    refused = report["wrong_key"]
    assert refused["bytes"] == 0
    assert any("HTTP 401" in error for error in refused["errors"]), refused
