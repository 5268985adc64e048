"""Which backend the settings name, refused clearly where they cannot work; and the OpenAI
backend's pure parts (the WAV it sends, the reply it accepts)."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bridge.audio.mulaw import ulaw2lin
from bridge.errors import ConfigError
from bridge.settings import SttSettings
from bridge.stt.batch import SttError
from bridge.stt.deepgram_stt import DeepgramStt
from bridge.stt.factory import stt_backend
from bridge.stt.openai_stt import MAX_TEXT_CHARS, OpenAiStt, parse_reply, wav_bytes


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_none_is_no_backend(http: aiohttp.ClientSession) -> None:
    assert stt_backend(SttSettings(), http) is None


async def test_the_paid_backends_are_built(http: aiohttp.ClientSession) -> None:
    openai = stt_backend(SttSettings(backend="openai", api_key="sk-x"), http)
    local = stt_backend(SttSettings(backend="openai", url="http://127.0.0.1:9/v1"), http)
    deepgram = stt_backend(SttSettings(backend="deepgram", api_key="dg-x"), http)
    assert isinstance(openai, OpenAiStt) and isinstance(local, OpenAiStt)
    assert isinstance(deepgram, DeepgramStt)


@pytest.mark.parametrize(("settings", "match"), [
    (SttSettings(backend="whisperx"), "unknown stt.backend 'whisperx'.*pocketsphinx"),
    (SttSettings(backend="openai"), "needs stt.api_key"),
    (SttSettings(backend="deepgram"), "needs stt.api_key"),
    (SttSettings(backend="deepgram", api_key="k", url="ftp://x"), "stt.url"),
])
async def test_settings_that_cannot_work_are_refused(
        http: aiohttp.ClientSession, settings: SttSettings, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        stt_backend(settings, http)


def test_the_wav_is_the_callers_audio_as_16_bit_pcm() -> None:
    mulaw = bytes(range(256)) * 10
    with wave.open(io.BytesIO(wav_bytes(mulaw)), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        assert wav.readframes(wav.getnframes()) == ulaw2lin(mulaw).astype("<i2").tobytes()


def test_a_json_reply_gives_its_text() -> None:
    assert parse_reply(b'{"text": "Hello there.", "usage": {"seconds": 2}}') == "Hello there."


@pytest.mark.parametrize("body", [
    b"<html>", b'["text"]', b'{"text": null}', b'{"transcript": "x"}',
    b'{"text": "' + b"a" * (MAX_TEXT_CHARS + 1) + b'"}',
])
def test_other_replies_are_bad(body: bytes) -> None:
    with pytest.raises(SttError) as info:
        parse_reply(body)
    assert info.value.label == "bad_reply"
