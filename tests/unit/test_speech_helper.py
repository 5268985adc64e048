"""assert_is_speech accepts real speech and rejects what is not speech."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bridge.audio.codec import decode_audio, encode_audio
from bridge.audio.resample import StreamResampler
from bridge.tts_server.engines.base import Utterance
from bridge.tts_server.engines.piper import PiperEngine
from tests.speech import assert_is_speech

RATE = 8000
SECONDS = 2.0
_t = np.arange(int(RATE * SECONDS)) / RATE
_rng = np.random.default_rng(7)

NOT_SPEECH = {
    "silence": np.zeros(_t.size),
    "pure tone": 0.5 * np.sin(2 * np.pi * 440 * _t),
    "white noise": 0.3 * _rng.standard_normal(_t.size),
    "tone pulsing at a syllable rate": (
        0.5 * np.sin(2 * np.pi * 440 * _t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * _t))
    ),
    "noise bursts at a syllable rate": (
        0.3 * _rng.standard_normal(_t.size) * (np.sin(2 * np.pi * 4 * _t) > 0)
    ),
    "too short": 0.5 * np.sin(2 * np.pi * 440 * _t[: RATE // 10]),
}


@pytest.mark.parametrize("name", NOT_SPEECH)
def test_rejects_what_is_not_speech(name: str) -> None:
    with pytest.raises(AssertionError, match="not speech"):
        assert_is_speech(NOT_SPEECH[name].astype(np.float32), RATE)


@pytest.fixture(scope="module")
def sentence(piper_engine: PiperEngine) -> np.ndarray:
    async def speak() -> list[np.ndarray]:
        return [c async for c in piper_engine.synthesize(Utterance("Hello there, this is a test."))]

    return np.concatenate(asyncio.run(speak()))


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_accepts_piper_speech_at_common_rates(
    sentence: np.ndarray, piper_engine: PiperEngine, rate: int
) -> None:
    resampler = StreamResampler(piper_engine.sample_rate, rate)
    audio = np.concatenate([resampler.process(sentence), resampler.flush()])
    assert_is_speech(audio, rate)


def test_accepts_speech_after_mulaw_round_trip(
    sentence: np.ndarray, piper_engine: PiperEngine
) -> None:
    resampler = StreamResampler(piper_engine.sample_rate, 8000)
    audio = np.concatenate([resampler.process(sentence), resampler.flush()])
    decoded, rate = decode_audio(encode_audio(audio, 8000, "ulaw"), "ulaw", 8000)
    assert_is_speech(decoded, rate)
