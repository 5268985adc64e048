"""The `silma` engine: the real SILMA model behind the server's Engine interface.

A reply is prepared as silma-tts 1.0.5 prepares it (frontend.py: normalization, the speed
factor, diacritization, chunks, durations, pauses) on a text thread of its own, then all its
chunks go to the one inference executor, which interleaves the chunks of every request in
flight by deadline and streams each as it is ready. Reference clips are prepared once (as
upstream does) and cached by content hash. Each chunk is trimmed as upstream trims it and
carries the pause upstream puts after it, so the chunks of a reply, joined, are upstream's
whole reply; `silma_pauses = "between"` moves each pause in front of the next chunk instead,
so nothing trails the last one.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
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
from bridge.tts_server.engines.silma.diacritizer import Diacritizer, load_diacritizer
from bridge.tts_server.engines.silma.executor import ChunkTiming, InferenceExecutor
from bridge.tts_server.engines.silma.frontend import (
    Pauses,
    Plan,
    chunk_frames,
    pause_samples,
    plan_reply,
    reference_transcript,
    trim_generated,
)
from bridge.tts_server.engines.silma.model import (
    ModelFiles,
    SamplingConfig,
    SilmaModel,
    SpeechItem,
    load_model,
)
from bridge.tts_server.engines.silma.normalizer import TextNormalizer
from bridge.tts_server.engines.silma.text import Chunking
from bridge.tts_server.engines.silma.voices import (
    LruCache,
    PreparedClip,
    content_key,
    prepare_clip,
)

log = structlog.get_logger("bridge.tts_server")

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
    chunking: Chunking = "latency"  # "upstream": silma-tts's chunks, a longer first one
    pauses: Pauses = "upstream"  # "between": each pause before the next chunk, none at the end
    diacritizer: str = "text2tashkeel"  # or "catt" (from catt_model_dir) or "off"
    catt_model_dir: Path | None = None


@dataclasses.dataclass(frozen=True)
class Voice:
    mel: Any  # (1, frames, n_mels) on the model's device
    clip: PreparedClip
    frames: int  # upstream's reference length: the padded clip's samples // hop
    transcript: str  # as the model reads it before the reply (frontend.reference_transcript)


@dataclasses.dataclass
class _Work:
    """One request as the executor sees it."""

    reference: np.ndarray
    reference_rate: int
    reference_text: str
    plan: Plan
    seed: int
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
        self._diacritizer: Diacritizer | None = None
        # One thread prepares texts: NeMo's grammars are not known to be thread-safe, and a
        # reply's text must not wait behind the model's passes on the inference thread.
        self._text_thread = concurrent.futures.ThreadPoolExecutor(1, "silma-text")
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
        self._diacritizer = load_diacritizer(config.diacritizer, config.catt_model_dir)
        self._model = model
        self._executor = InferenceExecutor(
            self._run, model.sample_rate, max_batch=config.max_batch,
            batch_key=_any_chunk if model.exact_batching else _own_chunk,
            on_chunk=lambda timing: self.stats.add(timing),
        )
        log.info(
            "silma_loaded", device=str(model.device), dtype=str(model.dtype).removeprefix("torch."),
            steps=config.sampling.steps, normalizer=self._normalizer.active,
            diacritizer=config.diacritizer, chunking=config.chunking, pauses=config.pauses,
            exact_batching=model.exact_batching,
        )

    async def close(self) -> None:
        if self._executor is not None:
            await asyncio.to_thread(self._executor.close)
        self._text_thread.shutdown(wait=False, cancel_futures=True)

    def health(self) -> dict[str, Any]:
        model = self._model
        return {
            "device": str(model.device) if model else None,
            "dtype": str(model.dtype).removeprefix("torch.") if model else None,
            "steps": self.config.sampling.steps,
            "max_batch": self._executor.max_batch if self._executor else self.config.max_batch,
            "exact_batching": model.exact_batching if model else None,
            "normalizer": self._normalizer.active,
            "diacritizer": self.config.diacritizer,
            "chunking": self.config.chunking,
            "pauses": self.config.pauses,
            "queued_chunks": self._executor.queued_chunks if self._executor else 0,
            "dropped_chunks": self._executor.dropped_chunks if self._executor else 0,
            "passes": self._executor.passes if self._executor else 0,
            "voice_cache": {
                "size": len(self.voices), "hits": self.voices.hits, "misses": self.voices.misses,
            },
            **self.stats.snapshot(),
        }

    async def synthesize(self, utterance: Utterance) -> AsyncGenerator[np.ndarray, None]:
        loop = asyncio.get_running_loop()
        work = await loop.run_in_executor(self._text_thread, self._work, utterance)
        job, queue = self.executor.submit(work, len(work.plan.chunks), loop)
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
        """On the text thread: the reply's plan (normalizer and diacritizer run here)."""
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
        if not utterance.text.strip():
            raise RequestError("text is empty")
        plan = plan_reply(
            utterance.text, speed=utterance.speed, normalize=self._normalizer,
            diacritize=self._diacritizer, chunking=self.config.chunking,
        )
        if not plan.chunks:
            raise RequestError("text has nothing to say")
        seed = utterance.seed if utterance.seed is not None else secrets.randbits(31)
        return _Work(*reference, plan, seed)

    def _voice(self, work: _Work) -> Voice:
        model = self._model
        assert model is not None

        def make() -> Voice:
            clip = prepare_clip(
                work.reference, work.reference_rate, work.reference_text, model.sample_rate
            )
            frames = clip.audio.size // model.mel.hop_length
            transcript = reference_transcript(clip.text)
            return Voice(model.mel_frames(clip.audio), clip, frames, transcript)

        key = content_key(work.reference, work.reference_rate, work.reference_text)
        return self.voices.get_or_make(key, make)

    def _run(self, batch: Sequence[tuple[_Work, int]]) -> list[np.ndarray | BaseException]:
        """Chunks of requests in one pass, on the executor thread. A request whose voice cannot
        be prepared fails alone."""
        model = self._model
        assert model is not None
        results: dict[int, np.ndarray | BaseException] = {}  # by slot in the batch
        items: dict[int, SpeechItem] = {}
        for slot, (work, index) in enumerate(batch):
            try:
                if work.voice is None:
                    work.voice = self._voice(work)
            except Exception as exc:
                results[slot] = exc
                continue
            voice = work.voice
            text = work.plan.chunks[index].text
            items[slot] = SpeechItem(
                reference=voice.mel,
                prompt=voice.transcript + text,
                frames=chunk_frames(voice.frames, voice.transcript, text, work.plan.speed),
                skip=voice.frames,
                seed=_seed(work, index),
            )
        if items:
            audio = model.generate(list(items.values()))
            for slot, made in zip(items, audio, strict=True):
                results[slot] = self._shape(*batch[slot], made)
        return [results[slot] for slot in range(len(batch))]

    def _shape(self, work: _Work, index: int, audio: np.ndarray) -> np.ndarray:
        """Scale back, trim as upstream does, and place the pause."""
        assert work.voice is not None and self._model is not None
        rate = self._model.sample_rate
        chunks = work.plan.chunks
        last = index == len(chunks) - 1
        audio = trim_generated(audio / np.float32(work.voice.clip.gain), keep_end=last)
        if self.config.pauses == "upstream":
            pause = np.zeros(pause_samples(chunks[index].pause_s, rate), np.float32)
            return np.concatenate([audio, pause])
        if index:
            pause = np.zeros(pause_samples(chunks[index - 1].pause_s, rate), np.float32)
            return np.concatenate([pause, audio])
        return audio


def _seed(work: _Work, index: int) -> int:
    """Chunk `index`'s noise seed: the request's seed for its first chunk, as upstream."""
    return (work.seed + index) % 2**31


def _any_chunk(work: _Work, index: int) -> int:
    """Batch key when batching is exact: any chunks share a pass."""
    return 0


def _own_chunk(work: _Work, index: int) -> tuple[int, int]:
    """Batch key when it is not: every chunk has a pass of its own."""
    return id(work), index
