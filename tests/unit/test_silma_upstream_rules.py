"""The silma engine's pure rules against silma-tts 1.0.5's own functions, on tables and fuzz.

Upstream's functions run as shipped (tests/upstream_silma.py imports them offline). Each rule
here is one that decides what the model hears: chunk boundaries, the final sukun and end mark,
the "is Arabic" test that gives the 1.3x speed, the transcript's ending, the reference clip's
trimming and padding, and each chunk's length in frames.
"""

from __future__ import annotations

import importlib.util
import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("silma_tts") is None or importlib.util.find_spec("torch") is None:
    if os.environ.get("CI"):  # CI installs the extra: a skip there would hide a broken install
        raise RuntimeError("the [silma] extra is not installed (see pyproject.toml)")
    pytest.skip("the [silma] extra is not installed", allow_module_level=True)

from bridge.tts_server.engines.silma.frontend import (
    ARABIC_SPAN,
    chunk_frames,
    is_arabic,
    plan_reply,
    reference_transcript,
    sukun_last,
    trim_generated,
)
from bridge.tts_server.engines.silma.text import upstream_chunks
from bridge.tts_server.engines.silma.voices import prepare_clip, remove_silence_edges
from tests.upstream_silma import upstream_infer, write_wav

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Couldn't find ffmpeg", RuntimeWarning)
    from pydub import AudioSegment

TEXTS = [
    "Hi, thanks for calling. Your appointment is confirmed for Tuesday morning. Goodbye.",
    "مرحبا بكم، كيف يمكنني مساعدتك اليوم؟ نحن هنا لخدمتك.",
    "One; two: three, four. Five! Six? Seven،ثمانية",
    "A" * 300,
    "word " * 70,
    "Short.",
    "你好\uff0c世界。再见\uff01",
    "It costs 3.5 dollars, or 4.25 with tax; e.g. more. " * 4,
]
WORDS = ["a", "I", "hello", "there,", "friend.", "كيف", "حالك؟", "يا", "صديقي،", "3.5", "ok!",
         "longerwordhere", "x;", "y:"]


def fuzz_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 80))) for _ in range(count)]


@pytest.mark.parametrize("text", TEXTS + fuzz_texts(200))
def test_chunks_are_upstreams(text: str) -> None:
    theirs = [c for c in upstream_infer().infer.chunk_text(text, max_chars=120) if c]
    assert upstream_chunks(text) == theirs


@pytest.mark.parametrize("text", [
    "مرحبا بكمُ", "مرحبا بكمُ.", "مرحبا بكمِ ،", "Hello.", "Hello", "بكمْ؟", "نعمٌ!",
])
def test_the_last_word_is_upstreams(text: str) -> None:
    assert sukun_last(text) == upstream_infer().infer.normalize_last_word(text)


@pytest.mark.parametrize("text", ["Hello", "Hello there", "مرحبا", "x y", "", "٣"])
def test_is_arabic_is_upstreams_space_included(text: str) -> None:
    assert is_arabic(text) == upstream_infer().infer.text_is_arabic(text)


@pytest.mark.parametrize("text", ["Hello", "Hello.", "Hello. ", "مرحبا.", "مرحبا", "Hi!"])
def test_the_transcript_ends_as_upstreams(text: str, tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    write_wav(path, np.full(24000, 3000, dtype=np.int16), 24000)
    _, ended = upstream_infer().infer.preprocess_ref_audio_text(
        str(path), text, show_info=lambda *_: None)
    if len(ended[-1].encode()) == 1:  # infer_batch_process's own addition
        ended += " "
    assert reference_transcript(text) == ended


@pytest.mark.parametrize("text", TEXTS + fuzz_texts(50, seed=1))
def test_arabic_spans_are_upstreams(text: str) -> None:
    theirs = upstream_infer().infer.arabic_sentence_with_punct.findall(text)
    assert ARABIC_SPAN.findall(text) == theirs


def test_the_speed_factor_is_upstreams() -> None:
    def diacritize(span: str) -> str:
        return "\u064e".join(span)

    def plan(text: str, diacritizer: bool = True) -> float:
        return plan_reply(text, speed=1.0, normalize=None,
                          diacritize=diacritize if diacritizer else None,
                          chunking="upstream").speed

    assert plan("Hello there friend") == pytest.approx(1.3)  # the space makes it "Arabic"
    assert plan("Hello") == 1.0
    assert plan("Hello there friend", diacritizer=False) == 1.0
    assert plan("مَرْحَبًا بِكُمْ") == pytest.approx(1.3)  # over 20% harakat
    assert plan("مَرحبا بكم في خدمة العملاء اليوم يا صديقي") == pytest.approx(1.3)  # diacritized
    assert plan("مَرْحَبًا بكم في خدمة العملاء اليوم يا صديقي العزيز") == 1.0  # 3 marks, < 20%


def test_chunk_frames_are_upstreams_duration() -> None:
    # infer_batch_process: ref_audio_len + int(ref_audio_len / len(ref_text) * len(gen) / speed)
    for ref_frames, transcript, chunk, speed in [
        (281, "This is the voice I would like you to use.  ", "Hi, thanks for calling.", 1.3),
        (400, "هذا هو الصوت.  ", "مرحبا بكم في خدمة العملاء، كيف يمكنني مساعدتك اليوم؟", 1.3),
        (300, "Some words.  ", "Hello. ", 1.0),
        (300, "Some words.  ", "Hi. ", 0.35),
    ]:
        local = speed / 1.3 if len(chunk) < 25 else speed
        local = max(local, 0.3) if len(chunk) < 25 else local
        expected = ref_frames + int(ref_frames / len(transcript) * len(chunk) / local)
        assert chunk_frames(ref_frames, transcript, chunk, speed) == expected


def test_generated_chunks_are_trimmed_as_upstream_trims_them() -> None:
    infer = upstream_infer().infer
    rng = np.random.default_rng(3)
    wave = np.concatenate([np.zeros(500), rng.standard_normal(3000) * 0.3, rng.standard_normal(
        800) * 0.001, np.zeros(400)]).astype(np.float32)
    for keep_end in (False, True):
        ours = trim_generated(wave, keep_end=keep_end)
        theirs = infer.fast_trim(wave, top_db=40, dont_trim_end=keep_end)
        assert np.array_equal(ours, theirs)


def pcm_segment(seconds: float, rate: int, seed: int, *, lead_s: float, tail_s: float,
                level: float = 0.1) -> AudioSegment:
    rng = np.random.default_rng(seed)
    sound = rng.standard_normal(round(seconds * rate)) * level
    clip = np.concatenate([np.zeros(round(lead_s * rate)), sound, np.zeros(round(tail_s * rate))])
    pcm = np.clip(np.round(clip * 32768), -32768, 32767).astype("<i2")
    return AudioSegment(pcm.tobytes(), sample_width=2, frame_rate=rate, channels=1)


@pytest.mark.parametrize(("tail_s", "rate"), [(0.5, 24000), (1.6, 24000), (0.2, 16000)])
def test_reference_edges_are_trimmed_as_upstream_trims_them(tail_s: float, rate: int) -> None:
    segment = pcm_segment(2.0, rate, 1, lead_s=0.37, tail_s=tail_s)
    ours = remove_silence_edges(segment)
    theirs = upstream_infer().infer.remove_silence_edges(segment)
    assert ours.raw_data == theirs.raw_data
    assert len(ours) < len(segment)  # the lead was cut


def test_a_quiet_clip_is_lifted_measured_with_its_pad_as_upstream() -> None:
    segment = pcm_segment(2.0, 24000, 2, lead_s=0.0, tail_s=0.0, level=0.02)
    samples = np.asarray(segment.get_array_of_samples(), dtype=np.float32) / 32768
    clip = prepare_clip(samples, 24000, "Some words.", 24000)
    padded = np.concatenate([samples, np.zeros(24000, np.float32)])
    rms = float(np.sqrt(np.mean(padded.astype(np.float64) ** 2)))
    # the pad is made at 11025 Hz and resampled by pydub: within a few samples of 1 s
    assert clip.gain == pytest.approx(0.1 / rms, rel=1e-4)
    assert abs(clip.audio.size - padded.size) <= 4
    assert not clip.audio[-23990:].any()
