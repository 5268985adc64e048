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

SECONDS = 2.0


def not_speech(name: str, rate: int) -> np.ndarray:
    t = np.arange(int(rate * SECONDS)) / rate
    noise = np.random.default_rng(7).standard_normal(t.size)
    tone = np.sin(2 * np.pi * 440 * t)
    syllables = np.sin(2 * np.pi * 4 * t)  # a 4 Hz, syllable-like rhythm
    signals = {
        "silence": np.zeros(t.size),
        "pure tone": 0.5 * tone,
        "white noise": 0.3 * noise,
        "tone pulsing at a syllable rate": 0.5 * tone * (0.5 + 0.5 * syllables),
        "noise bursts at a syllable rate": 0.3 * noise * (syllables > 0),
        "too short": 0.5 * tone[: rate // 10],
    }
    return signals[name].astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 24000])
@pytest.mark.parametrize(
    "name",
    [
        "silence",
        "pure tone",
        "white noise",
        "tone pulsing at a syllable rate",
        "noise bursts at a syllable rate",
        "too short",
    ],
)
def test_rejects_what_is_not_speech(name: str, rate: int) -> None:
    with pytest.raises(AssertionError, match="not speech"):
        assert_is_speech(not_speech(name, rate), rate)


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
