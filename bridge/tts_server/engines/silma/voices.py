"""Reference clips ("voices"): prepared once, cached by content hash.

Preparation: resample to the model rate, trim silent edges, cap the length (cutting at the
quietest moment near the cap, and the transcript in proportion, since there is no ASR here to
re-transcribe), lift quiet clips to a working loudness, and pad a little silence at the end so
the generated speech starts after a pause. Numbers from silma-tts 1.0.5 (infer/utils_infer.py):
references capped near 8 s, 1 s of silence appended, RMS lifted to 0.1 and the output scaled
back by the same factor.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

from bridge.audio.resample import StreamResampler

MAX_REFERENCE_S = 8.0
MIN_CUT_S = 6.0  # a clip over the cap is cut at its quietest 20 ms between here and the cap
TAIL_S = 1.0
TARGET_RMS = 0.1
TRIM_DB = 40.0  # below the loudest 20 ms frame by this much counts as silence
FRAME_S = 0.02
EDGE_S = 0.05  # kept around trimmed speech so onsets and decays are not clipped

V = TypeVar("V")


@dataclasses.dataclass(frozen=True, slots=True)
class PreparedClip:
    audio: np.ndarray  # float32 mono at the model rate, tail silence included
    text: str  # the transcript, shortened in proportion when the clip was cut
    gain: float  # what the clip was multiplied by; the output is divided by it
    speech_s: float  # seconds of speech before the padded tail


def content_key(audio: np.ndarray, rate: int, text: str) -> str:
    """Same samples, rate and transcript -> same key, whoever sends them and however encoded."""
    digest = hashlib.sha256()
    digest.update(f"{rate}:{text.strip()}:".encode())
    digest.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    return digest.hexdigest()


def prepare_clip(audio: np.ndarray, rate: int, text: str, model_rate: int) -> PreparedClip:
    samples = np.asarray(audio, dtype=np.float32)
    if rate != model_rate:
        resampler = StreamResampler(rate, model_rate)
        samples = np.concatenate([resampler.process(samples), resampler.flush()])
    samples = trim_silence(samples, model_rate, EDGE_S, EDGE_S)
    text = " ".join(text.split())
    limit = round(MAX_REFERENCE_S * model_rate)
    if samples.size > limit:
        cut = _quietest(samples, round(MIN_CUT_S * model_rate), limit, model_rate)
        text = _cut_text(text, cut / samples.size)
        samples = samples[:cut]
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    gain = TARGET_RMS / rms if 0.0 < rms < TARGET_RMS else 1.0
    tail = np.zeros(round(TAIL_S * model_rate), dtype=np.float32)
    return PreparedClip(
        np.concatenate([samples * np.float32(gain), tail]), text, gain, samples.size / model_rate
    )


def _frame_db(samples: np.ndarray, frame: int) -> np.ndarray:
    n = samples.size // frame
    frames = samples[: n * frame].reshape(n, frame).astype(np.float64)
    energy: np.ndarray = np.mean(np.square(frames), axis=1)  # Any to numpy's types (axis=)
    return 10.0 * np.log10(energy + 1e-12)


def trim_silence(samples: np.ndarray, rate: int, lead_s: float, tail_s: float) -> np.ndarray:
    """Cut silent edges (quieter than the loudest 20 ms by TRIM_DB), keeping a little of each."""
    frame = round(FRAME_S * rate)
    if samples.size < 2 * frame:
        return samples
    db = _frame_db(samples, frame)
    loud = np.flatnonzero(db > db.max() - TRIM_DB)
    start = max(0, int(loud[0]) * frame - round(lead_s * rate))
    end = min(samples.size, (int(loud[-1]) + 1) * frame + round(tail_s * rate))
    return samples[start:end]


def _quietest(samples: np.ndarray, lo: int, hi: int, rate: int) -> int:
    frame = round(FRAME_S * rate)
    db = _frame_db(samples[lo:hi], frame)
    if not db.size:
        return hi
    return lo + int(np.argmin(db)) * frame + frame // 2


def _cut_text(text: str, kept: float) -> str:
    """The words of the transcript that the kept fraction of the clip most likely holds."""
    words = text.split()
    if not words:
        return text
    target = kept * len(text)
    spoken, count = 0, 0
    for word in words:
        if spoken + len(word) / 2 > target:
            break
        spoken += len(word) + 1
        count += 1
    return " ".join(words[: max(1, count)])


class LruCache(Generic[V]):
    """A small thread-safe LRU map; `get_or_make` counts hits so tests and health can see them."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: collections.OrderedDict[str, V] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get_or_make(self, key: str, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = make()  # outside the lock: preparing a clip must not block lookups of others
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value
