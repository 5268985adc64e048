"""Reference clips for the silma engine: preparation, content keys, the LRU cache; the mel bank."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.tts_server.engines.silma.model import MelConfig, mel_filterbank
from bridge.tts_server.engines.silma.voices import (
    TARGET_RMS,
    LruCache,
    _cut_text,
    _pcm_segment,
    _speech_ms,
    content_key,
    prepare_clip,
)
from bridge.tts_server.voices import StoredVoice, UnknownVoice, VoiceStore

RATE = 24000


def tone(seconds: float, rate: int = RATE, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.float32)


def test_a_silent_lead_is_cut_and_1_s_of_silence_appended() -> None:
    clip = prepare_clip(np.concatenate([silence(0.5), tone(1.0), silence(0.7)]), RATE, "Hi.", RATE)
    # the lead goes (to the 10 ms step), a tail under 1 s stays, then the 1 s pad
    assert clip.audio.size / RATE == pytest.approx(1.0 + 0.7 + 1.0, abs=0.011)
    assert np.abs(clip.audio[: round(0.01 * RATE)]).max() > 0
    assert not clip.audio[-round(1.69 * RATE) :].any()


def test_a_trailing_silence_over_1_s_is_cut() -> None:
    clip = prepare_clip(np.concatenate([tone(1.0), silence(1.5)]), RATE, "Hi.", RATE)
    assert clip.audio.size / RATE == pytest.approx(1.0 + 1.0, abs=0.002)


def test_a_quiet_clip_at_another_rate_is_lifted_and_resampled() -> None:
    quiet = np.concatenate([tone(2.0, 16000, amplitude=0.03), silence(0.4, 16000)])
    clip = prepare_clip(quiet, 16000, "  A quiet   voice. ", RATE)
    assert clip.text == "A quiet   voice."  # as upstream reads it: inner spaces are kept
    assert clip.audio.size / RATE == pytest.approx(2.4 + 1.0, abs=0.002)
    padded_rms = float(np.sqrt(np.mean(np.concatenate([quiet, silence(1.0, 16000)]) ** 2)))
    assert clip.gain == pytest.approx(TARGET_RMS / padded_rms, rel=0.01)
    assert np.sqrt(np.mean(clip.audio**2)) == pytest.approx(TARGET_RMS, rel=0.02)


def test_a_long_clip_is_cut_at_a_pause_and_its_transcript_in_proportion() -> None:
    # 6.5 s of sound, a 1.2 s pause, then 5 s more: cut in the pause, under the cap.
    parts = [tone(6.5), silence(1.2), tone(5.0)]
    text = " ".join(f"word{n}" for n in range(40))
    clip = prepare_clip(np.concatenate(parts), RATE, text, RATE)
    kept_s = clip.audio.size / RATE - 1.0  # without the pad
    assert 6.5 <= kept_s <= 6.5 + 1.2
    assert not clip.audio[round(6.51 * RATE) :].any()  # what follows the pause is gone
    kept = clip.text.split()
    assert kept == text.split()[: len(kept)]
    assert 0.3 < len(kept) / 40 < 0.7


def test_a_cut_transcript_follows_the_speech_kept_not_the_time() -> None:
    # 6.5 s of sound, a 3 s pause, 3 s more: the cut keeps 7.5 s (the sound and 1 s of the
    # pause), 60% of the time but 6.5 s of the 9.5 s of speech, 68%.
    parts = [tone(6.5), silence(3.0), tone(3.0)]
    text = " ".join(f"w{n:02d}" for n in range(20))  # 79 characters
    clip = prepare_clip(np.concatenate(parts), RATE, text, RATE)
    # 0.684 * 79 = 54.1 characters, 4 a word with its space: 14 words (the time share: 12)
    assert clip.text == " ".join(f"w{n:02d}" for n in range(14))


def test_speech_time_leaves_out_pauses_of_100_ms_under_minus_50_dbfs() -> None:
    def speech_ms(*parts: np.ndarray) -> int:
        return _speech_ms(_pcm_segment(np.concatenate(parts), RATE))

    assert speech_ms(tone(1.0), silence(0.3), tone(1.0)) == 2000
    assert speech_ms(tone(1.0), silence(0.05), tone(1.0)) == 2050  # too short to be a pause
    # a soft sound (about -47 dBFS) is speech, though under the cut's -40 dBFS
    assert speech_ms(tone(1.0), tone(0.5, amplitude=0.006), tone(1.0)) == 2500


def test_cut_text_keeps_the_words_over_half_inside_the_kept_share() -> None:
    text = "one two three four"  # 18 characters
    # half the speech, 9 characters: "three" spans 8 to 13, its middle (10.5) is past 9
    assert _cut_text(text, 1, 2) == "one two"
    assert _cut_text(text, 11, 18) == "one two three"  # 11: over half of "three" fits
    assert _cut_text(text, 10, 18) == "one two"
    assert _cut_text(text, 18, 18) == text
    assert _cut_text(text, 0, 18) == "one"  # a transcript is never cut to nothing
    assert _cut_text(text, 0, 0) == text  # no speech measured: nothing to go by
    assert _cut_text("", 1, 2) == ""


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
