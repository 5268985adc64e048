"""Reference clips for the silma engine: preparation, content keys, the LRU cache; the mel bank."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.tts_server.engines.silma.model import MelConfig, mel_filterbank
from bridge.tts_server.engines.silma.voices import (
    MAX_REFERENCE_S,
    TAIL_S,
    TARGET_RMS,
    LruCache,
    content_key,
    prepare_clip,
    trim_silence,
)
from bridge.tts_server.voices import StoredVoice, UnknownVoice, VoiceStore

RATE = 24000


def tone(seconds: float, rate: int = RATE, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.float32)


def test_silent_edges_are_trimmed_to_a_small_margin() -> None:
    clip = np.concatenate([silence(0.5), tone(1.0), silence(0.7)])
    trimmed = trim_silence(clip, RATE, 0.02, 0.06)
    assert 1.0 <= trimmed.size / RATE <= 1.0 + 0.02 + 0.06 + 0.04  # + up to one 20 ms frame each side
    assert np.abs(trimmed[-round(0.1 * RATE):]).max() > 0  # the tail ends right after the sound


def test_a_clip_is_resampled_trimmed_lifted_and_padded() -> None:
    quiet = np.concatenate([silence(0.4, 16000), tone(2.0, 16000, amplitude=0.01), silence(0.4, 16000)])
    clip = prepare_clip(quiet, 16000, "  A quiet   voice. ", RATE)
    assert clip.text == "A quiet voice."
    assert 2.0 <= clip.speech_s < 2.2
    assert clip.audio.size == pytest.approx((clip.speech_s + TAIL_S) * RATE, abs=2)
    speech = clip.audio[: round(clip.speech_s * RATE)]
    assert np.sqrt(np.mean(speech**2)) == pytest.approx(TARGET_RMS, rel=0.05)
    assert clip.gain == pytest.approx(TARGET_RMS / (0.01 / np.sqrt(2)), rel=0.05)  # sine RMS
    assert not clip.audio[-round(TAIL_S * RATE):].any()


def test_a_long_clip_is_cut_at_a_pause_and_its_transcript_in_proportion() -> None:
    # 4 s of sound, a pause at 7 s, then more sound: cut inside the pause, under the cap.
    parts = [tone(4.0), tone(2.95, amplitude=0.2), silence(0.1), tone(5.0)]
    text = " ".join(f"word{n}" for n in range(40))
    clip = prepare_clip(np.concatenate(parts), RATE, text, RATE)
    assert 6.9 <= clip.speech_s <= 7.05
    assert clip.speech_s <= MAX_REFERENCE_S
    kept = clip.text.split()
    assert kept == text.split()[: len(kept)]
    assert abs(len(kept) / 40 - clip.speech_s / 12.05) < 0.06


def test_content_keys_follow_samples_rate_and_transcript() -> None:
    a = tone(0.5)
    assert content_key(a, RATE, "hi") == content_key(a.copy(), RATE, " hi ")
    assert content_key(a, RATE, "hi") != content_key(a, 16000, "hi")
    assert content_key(a, RATE, "hi") != content_key(a, RATE, "hello")
    assert content_key(a, RATE, "hi") != content_key(a * 0.5, RATE, "hi")


def test_the_lru_cache_makes_each_value_once_and_forgets_the_oldest() -> None:
    cache: LruCache[int] = LruCache(2)
    made: list[str] = []

    def maker(key: str) -> int:
        made.append(key)
        return len(made)

    assert cache.get_or_make("a", lambda: maker("a")) == 1
    assert cache.get_or_make("a", lambda: maker("a")) == 1
    cache.get_or_make("b", lambda: maker("b"))
    cache.get_or_make("c", lambda: maker("c"))  # evicts "a"
    cache.get_or_make("a", lambda: maker("a"))
    assert made == ["a", "b", "c", "a"]
    assert (cache.hits, cache.misses, len(cache)) == (1, 4, 2)


def test_registered_voices_are_named_by_content_and_forgotten_lru() -> None:
    store = VoiceStore(capacity=2)
    ids = [VoiceStore.voice_id(bytes([n]) * 10, "text") for n in range(3)]
    assert VoiceStore.voice_id(b"\0" * 10, "text") == ids[0]
    assert VoiceStore.voice_id(b"\0" * 10, "other text") != ids[0]
    for voice_id in ids:
        store.add(voice_id, StoredVoice(tone(0.1), RATE, "text"))
    assert len(store) == 2
    with pytest.raises(UnknownVoice, match="register it again"):
        store.get(ids[0], "req-1")
    assert store.get(ids[2]).rate == RATE


def test_mel_filterbank_is_the_htk_triangle_bank() -> None:
    config = MelConfig()
    bank = mel_filterbank(config)
    assert bank.shape == (config.n_mels, config.n_fft // 2 + 1)
    assert bank.min() >= 0 and bank.max() <= 1
    peaks = bank.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)  # filters climb the spectrum in order
    assert bank[:, 0].max() == 0  # DC is the lower edge of the first filter
    # HTK: the 50th centre sits at mel 2595*log10(1 + 12000/700) * 50/101.
    top = 2595 * np.log10(1 + 12000 / 700)
    centre_hz = 700 * (10 ** (top * 50 / 101 / 2595) - 1)
    assert abs(peaks[49] * 24000 / 1024 - centre_hz) <= 24000 / 1024
