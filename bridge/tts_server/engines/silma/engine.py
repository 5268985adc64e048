"""The `silma` engine: the real SILMA model behind the server's Engine interface.

A request's text is split into chunks (a short first clause, then sentences); all chunks go to
the one inference executor, which interleaves the chunks of every request in flight by deadline
and streams each as it is ready. Reference clips are prepared once and cached by content hash.
Silence is trimmed off each chunk; the pause a listener expects between chunks is put in front
of the next chunk, so nothing trails the last one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import secrets
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from bridge.audio.codec import decode_audio
from bridge.errors import AudioFormatError, ConfigError, TTSError
from bridge.silma.protocol import RequestError
from bridge.tts_server.engines.base import Utterance
from bridge.tts_server.engines.silma.executor import ChunkTiming, InferenceExecutor
from bridge.tts_server.engines.silma.model import (
    ModelFiles,
    SamplingConfig,
    SilmaModel,
    SpeechItem,
    load_model,
)
from bridge.tts_server.engines.silma.normalizer import TextNormalizer
from bridge.tts_server.engines.silma.text import SENTENCE_END, pause_after, split_for_speech
from bridge.tts_server.engines.silma.voices import (
    LruCache,
    PreparedClip,
    content_key,
    prepare_clip,
    trim_silence,
)

log = structlog.get_logger("bridge.tts_server")

LEAD_S = 0.02  # kept before a chunk's first sound
TAIL_S = 0.06  # kept after its last: the decay of the final phoneme, no dead air
STATS_WINDOW = 256  # recent chunks / first chunks behind the health figures
WARM_UP_TEXT = "Ready."


@dataclasses.dataclass(frozen=True)
class SilmaConfig:
    files: ModelFiles
    device: str = "auto"
    dtype: str = "auto"
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    normalizer_cache_dir: Path | None = None
    voice_cache_size: int = 64
    max_batch: int = 8  # chunks of concurrent requests made in one pass of the model
    default_voice: Path | None = None  # a WAV used when a request sends no reference clip
    default_voice_text: str = ""


@dataclasses.dataclass(frozen=True)
class Voice:
    mel: Any  # (1, frames, n_mels) on the model's device
    clip: PreparedClip


@dataclasses.dataclass
class _Work:
    """One request as the executor sees it."""

    reference: np.ndarray
    reference_rate: int
    reference_text: str
    chunks: list[str]
    seed: int
    speed: float
    voice: Voice | None = None


class _Stats:
    """Real-time factor and time to first chunk over recent chunks; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: collections.deque[ChunkTiming] = collections.deque(maxlen=STATS_WINDOW)
        self._first: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW)
        self.total_chunks = 0
        self.total_compute_s = 0.0
        self.total_audio_s = 0.0

    def add(self, timing: ChunkTiming) -> None:
        with self._lock:
            self._chunks.append(timing)
            self.total_chunks += 1
            self.total_compute_s += timing.compute_s
            self.total_audio_s += timing.audio_s
            if timing.first_chunk_s is not None:
                self._first.append(timing.first_chunk_s)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            compute = sum(c.compute_s for c in self._chunks)
            audio = sum(c.audio_s for c in self._chunks)
            first = np.array(self._first, dtype=np.float64)
            return {
                "chunks": self.total_chunks,
                "audio_s": round(self.total_audio_s, 3),
                "compute_s": round(self.total_compute_s, 3),
                # compute time / audio time of the recent chunks: < 1 is faster than real time
                "rtf": round(compute / audio, 4) if audio else None,
                "first_chunk_ms_p50": _ms(np.percentile(first, 50)) if first.size else None,
                "first_chunk_ms_p95": _ms(np.percentile(first, 95)) if first.size else None,
                "first_chunk_ms_last": _ms(first[-1]) if first.size else None,
            }


def _read_voice(path: Path, text: str) -> tuple[np.ndarray, int, str]:
    if not text.strip():
        raise ConfigError("silma_default_voice_text must be the transcript of silma_default_voice")
    try:
        audio, rate = decode_audio(path.read_bytes())
    except (OSError, AudioFormatError) as exc:
        raise ConfigError(f"silma_default_voice {path}: {exc}") from exc
    return audio, rate, text


def _ms(seconds: float) -> float:
    return round(float(seconds) * 1000, 1)


class SilmaEngine:
    name = "silma"
    can_clone = True

    def __init__(
        self, config: SilmaConfig, *, loader: Callable[..., SilmaModel] = load_model
    ) -> None:
        if config.voice_cache_size < 1:
            raise ConfigError("silma_voice_cache_size must be at least 1")
        if config.max_batch < 1:
            raise ConfigError("silma_max_batch must be at least 1")
        self.config = config
        self.sample_rate = 24000  # the released model's rate; checked against the files on load
        self._loader = loader
        self._model: SilmaModel | None = None
        self._executor: InferenceExecutor[_Work] | None = None
        self._normalizer = TextNormalizer(config.normalizer_cache_dir)
        self.voices: LruCache[Voice] = LruCache(config.voice_cache_size)
        self.stats = _Stats()
        self._default: tuple[np.ndarray, int, str] | None = None
        self._start_lock = asyncio.Lock()

    @property
    def executor(self) -> InferenceExecutor[_Work]:
        if self._executor is None:
            raise TTSError("the silma engine is not started yet", retryable=True)
        return self._executor

    async def start(self) -> None:
        async with self._start_lock:
            if self._executor is not None:
                return
            await asyncio.to_thread(self._load)
            # The first call pays for kernel selection and allocator growth: not a caller's.
            rng = np.random.default_rng(0)
            noise = (rng.standard_normal(self.sample_rate) * 0.05).astype(np.float32)
            warm_up = Utterance(WARM_UP_TEXT, noise, self.sample_rate, "Warm up.", seed=0)
            await self._collect(warm_up)
            self.stats = _Stats()  # health reports callers' chunks, not the cold warm-up

    def _load(self) -> None:
        config = self.config
        model = self._loader(
            config.files, device=config.device, dtype=config.dtype, sampling=config.sampling
        )
        self.sample_rate = model.sample_rate
        if config.default_voice is not None:
            self._default = _read_voice(config.default_voice, config.default_voice_text)
        self._normalizer.load()
        self._model = model
        self._executor = InferenceExecutor(
            self._run, model.sample_rate, max_batch=config.max_batch, batch_key=_seed,
            on_chunk=lambda timing: self.stats.add(timing),
        )
        log.info(
            "silma_loaded", device=str(model.device), dtype=str(model.dtype).removeprefix("torch."),
            steps=config.sampling.steps, normalizer=self._normalizer.active,
        )

    async def close(self) -> None:
        if self._executor is not None:
            await asyncio.to_thread(self._executor.close)

    def health(self) -> dict[str, Any]:
        model = self._model
        return {
            "device": str(model.device) if model else None,
            "dtype": str(model.dtype).removeprefix("torch.") if model else None,
            "steps": self.config.sampling.steps,
            "max_batch": self._executor.max_batch if self._executor else self.config.max_batch,
            "normalizer": self._normalizer.active,
            "queued_chunks": self._executor.queued_chunks if self._executor else 0,
            "dropped_chunks": self._executor.dropped_chunks if self._executor else 0,
            "passes": self._executor.passes if self._executor else 0,
            "voice_cache": {
                "size": len(self.voices), "hits": self.voices.hits, "misses": self.voices.misses,
            },
            **self.stats.snapshot(),
        }

    async def synthesize(self, utterance: Utterance) -> AsyncGenerator[np.ndarray, None]:
        work = self._work(utterance)
        job, queue = self.executor.submit(work, len(work.chunks), asyncio.get_running_loop())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    if isinstance(item, RequestError | ConfigError):
                        raise item
                    raise TTSError(f"SILMA synthesis failed: {item}") from item
                yield item
        finally:
            self.executor.cancel(job)  # a no-op when done; else drops what is still queued

    async def _collect(self, utterance: Utterance) -> np.ndarray:
        parts = []
        async with contextlib.aclosing(self.synthesize(utterance)) as chunks:
            async for chunk in chunks:
                parts.append(chunk)
        return np.concatenate(parts)

    def _work(self, utterance: Utterance) -> _Work:
        if utterance.reference_audio is not None and utterance.reference_audio.size:
            if not utterance.reference_text.strip():
                raise RequestError(
                    "reference_text (the transcript of the reference clip) is required by the "
                    "silma engine"
                )
            reference = (
                utterance.reference_audio, utterance.reference_rate, utterance.reference_text
            )
        elif self._default is not None:
            reference = self._default
        else:
            raise RequestError(
                "the silma engine needs a reference clip (audio + reference_text): none was sent "
                "and no silma_default_voice is configured"
            )
        chunks = split_for_speech(utterance.text)
        if not chunks:
            raise RequestError("text is empty")
        if chunks[-1][-1] not in SENTENCE_END:
            chunks[-1] += "."  # the model ends an utterance best on a sentence mark
        seed = utterance.seed if utterance.seed is not None else secrets.randbits(31)
        return _Work(*reference, chunks, seed, utterance.speed)

    def _voice(self, work: _Work) -> Voice:
        model = self._model
        assert model is not None

        def make() -> Voice:
            clip = prepare_clip(
                work.reference, work.reference_rate, work.reference_text, model.sample_rate
            )
            return Voice(model.mel_frames(clip.audio), clip)

        key = content_key(work.reference, work.reference_rate, work.reference_text)
        return self.voices.get_or_make(key, make)

    def _run(self, batch: Sequence[tuple[_Work, int]]) -> list[np.ndarray | BaseException]:
        """Chunks of requests that share a seed, in one pass, on the executor thread. A request
        whose voice or text cannot be prepared fails alone."""
        model = self._model
        assert model is not None
        results: dict[int, np.ndarray | BaseException] = {}  # by slot in the batch
        items: dict[int, SpeechItem] = {}
        for slot, (work, index) in enumerate(batch):
            try:
                if work.voice is None:
                    work.voice = self._voice(work)
                text = self._normalizer(work.chunks[index])
            except Exception as exc:
                results[slot] = exc
                continue
            clip = work.voice.clip
            items[slot] = SpeechItem(work.voice.mel, clip.text, clip.speech_s, text, work.speed)
        if items:
            audio = model.generate(list(items.values()), seed=_seed(*batch[0]))
            for slot, made in zip(items, audio, strict=True):
                results[slot] = self._shape(*batch[slot], made)
        return [results[slot] for slot in range(len(batch))]

    def _shape(self, work: _Work, index: int, audio: np.ndarray) -> np.ndarray:
        """Level, trim, and lead with the pause the previous chunk's end asks for."""
        assert work.voice is not None and self._model is not None
        rate = self._model.sample_rate
        audio = trim_silence(audio / np.float32(work.voice.clip.gain), rate, LEAD_S, TAIL_S)
        if index:
            pause = pause_after(work.chunks[index - 1]) / work.speed
            audio = np.concatenate([np.zeros(round(pause * rate), np.float32), audio])
        return audio


def _seed(work: _Work, index: int) -> int:
    """Chunk `index`'s noise seed: chunks batch together only when theirs agree."""
    return (work.seed + index) % 2**31
