"""Reference clips ("voices"): prepared once as silma-tts 1.0.5 prepares them, cached by content.

Upstream (`preprocess_ref_audio_text` and `infer_batch_process` in infer/utils_infer.py) works
on pydub segments of the uploaded file, and so do we, with pydub's own functions, so a 24 kHz
clip reaches the model as upstream's to the sample (another rate is resampled with soxr, where
upstream uses torchaudio's windowed sinc):
- a clip over 8.05 s is cut at a long pause (1 s under -50 dBFS), else at a short one (0.1 s
  under -40 dBFS), else at 8.05 s: whole pieces are kept while they fit, at least 6 s of them.
  Upstream then re-transcribes the cut clip with Whisper, downloaded at run time; nothing is
  downloaded here, so the transcript is shortened in proportion to the speech kept instead,
  pauses left out (scripts/measure_reference_cut.py measures how close that comes);
- silence under -42 dBFS is cut from the start, and from the end only when it lasts over 1 s;
- 1 s of silence is appended (so the reply starts after a pause), in pydub's way: the silence
  is made at 11025 Hz and the two are joined at the higher rate, which lifts an 8 kHz clip to
  11025 Hz before it is resampled to the model rate;
- a clip quieter than RMS 0.1 (measured with its padding) is lifted to it, and the reply is
  scaled back down by the same factor.
The clip is 16-bit PCM for pydub, as the WAV upstream writes and reads back is.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import threading
import warnings
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from bridge.audio.resample import StreamResampler

with warnings.catch_warnings():
    # pydub looks for ffmpeg on import; it is only needed for compressed formats, never here.
    warnings.filterwarnings("ignore", "Couldn't find ffmpeg", RuntimeWarning)
    from pydub import AudioSegment, silence

MAX_REFERENCE_S = 8.05
MIN_KEPT_MS = 6000  # a long clip keeps whole pieces while it has less than this, or they fit
# (min_silence_len ms, silence_thresh dBFS) of upstream's two tries at a pause to cut at
CUT_PAUSES = ((1000, -50), (100, -40))
KEEP_SILENCE_MS = 1000
SEEK_STEP_MS = 10
EDGE_DBFS = -42  # quieter edges are cut
# (ms, dBFS): a gap this long and this quiet is a pause, not speech, when the transcript is cut:
# the short pause at the long pause's level, as at -40 dBFS soft sounds count as pauses too
# (and the measured transcript error was larger).
SPEECH_GAP = (100, -50)
TRAILING_KEPT_S = 1.0  # trailing silence is cut only when it is longer than this
PAD_MS = 1000
TARGET_RMS = 0.1
PCM_SCALE = 32768.0

V = TypeVar("V")


@dataclasses.dataclass(frozen=True, slots=True)
class PreparedClip:
    audio: np.ndarray  # float32 mono at the model rate, lifted, its 1 s pad included
    text: str  # the transcript, shortened in proportion when the clip was cut
    gain: float  # what the clip was multiplied by; the output is divided by it


def content_key(audio: np.ndarray, rate: int, text: str) -> str:
    """Same samples, rate and transcript -> same key, whoever sends them and however encoded."""
    digest = hashlib.sha256()
    digest.update(f"{rate}:{text.strip()}:".encode())
    digest.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    return digest.hexdigest()


def prepare_clip(audio: np.ndarray, rate: int, text: str, model_rate: int) -> PreparedClip:
    segment = _pcm_segment(audio, rate)
    text = text.strip()
    if segment.duration_seconds > MAX_REFERENCE_S:
        whole_speech_ms = _speech_ms(segment)
        segment = _cut_long(segment)
        text = _cut_text(text, _speech_ms(segment), whole_speech_ms)
    segment = remove_silence_edges(segment) + AudioSegment.silent(duration=PAD_MS)
    samples = np.asarray(segment.get_array_of_samples(), dtype=np.float32) / np.float32(PCM_SCALE)
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    gain = TARGET_RMS / rms if 0.0 < rms < TARGET_RMS else 1.0
    samples = samples * np.float32(gain)
    if segment.frame_rate != model_rate:
        resampler = StreamResampler(segment.frame_rate, model_rate)
        samples = np.concatenate([resampler.process(samples), resampler.flush()])
    return PreparedClip(samples.astype(np.float32, copy=False), text, gain)


def _pcm_segment(audio: np.ndarray, rate: int) -> Any:
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * PCM_SCALE), -32768, 32767)
    return AudioSegment(
        pcm.astype("<i2").tobytes(), sample_width=2, frame_rate=rate, channels=1
    )


def _cut_long(segment: Any) -> Any:
    limit_ms = MAX_REFERENCE_S * 1000
    kept = AudioSegment.silent(duration=0)
    for min_silence_ms, threshold in CUT_PAUSES:
        kept = AudioSegment.silent(duration=0)
        pieces = silence.split_on_silence(
            segment, min_silence_len=min_silence_ms, silence_thresh=threshold,
            keep_silence=KEEP_SILENCE_MS, seek_step=SEEK_STEP_MS,
        )
        for piece in pieces:
            if len(kept) > MIN_KEPT_MS and len(kept + piece) > limit_ms:
                break
            kept += piece
        if len(kept) <= limit_ms:
            break
    if len(kept) > limit_ms:
        kept = kept[:limit_ms]
    return kept


def remove_silence_edges(segment: Any) -> Any:
    """Upstream's edge trim, float arithmetic included: the end is scanned 1 ms at a time."""
    segment = segment[silence.detect_leading_silence(segment, silence_threshold=EDGE_DBFS):]
    end_s = segment.duration_seconds
    for millisecond in reversed(segment):
        if millisecond.dBFS > EDGE_DBFS:
            break
        end_s -= 0.001
    if segment.duration_seconds - end_s > TRAILING_KEPT_S:
        return segment[: int(end_s * 1000)]
    return segment


def _speech_ms(segment: Any) -> int:
    min_gap_ms, threshold = SPEECH_GAP
    spans = silence.detect_nonsilent(
        segment, min_silence_len=min_gap_ms, silence_thresh=threshold, seek_step=SEEK_STEP_MS
    )
    return sum(end - start for start, end in spans)


def _cut_text(text: str, kept_speech_ms: int, whole_speech_ms: int) -> str:
    """The words of the transcript that the kept share of the clip's speech most likely holds.

    Speech, not time: pauses carry no words, and they are spread unevenly (the cut keeps up to
    1 s of the one it ends in), so a share of the time is off by how much of the pausing falls
    on each side. Characters stand for speech time; a word is kept when over half of it fits.
    """
    words = text.split()
    if not words:
        return text
    # a clip with no sound above the pause level says nothing of where its words are
    kept = kept_speech_ms / whole_speech_ms if whole_speech_ms > 0 else 1.0
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
