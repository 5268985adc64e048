"""sim: a latency model of a GPU SILMA server that speaks real, cached speech (for load tests).

Speech is rendered once by Piper, resampled to SILMA's 24 kHz (or `sample_rate`) and cached on
disk; later starts only load the file. A load test may ask for 8 kHz speech, so that the
server's resampling (a GPU host's work, on another machine in production) does not load the
generator's core: the bridge receives the same 8 kHz mu-law either way.

A request gets a stretch of that speech, looped, about 65 ms per character, in 0.5 s chunks:
the first after `first_audio_s`, each further one when `rtf` times the audio already produced
has elapsed. Waiting is asyncio sleeps on absolute deadlines, so hundreds of concurrent requests
cost almost nothing and a load test measures the bridge, not this engine.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncGenerator
from pathlib import Path

import numpy as np

from bridge.audio.resample import StreamResampler
from bridge.errors import ConfigError, TTSError
from bridge.tts_server.engines.base import Utterance
from bridge.tts_server.engines.piper import PiperEngine

SIM_RATE = 24000  # what SILMA's vocoder produces
SECONDS_PER_CHAR = 0.065
CHUNK_SECONDS = 0.5
FADE_SECONDS = 0.01  # soften the cut into looped speech
PHRASES = (
    "Thank you for calling. How can I help you today?",
    "Your appointment is confirmed for Tuesday morning at ten thirty.",
    "I can look that up for you. Please hold on for just a moment.",
    "The weather tomorrow will be sunny, with a light breeze from the west.",
)
GAP_SECONDS = 0.2


class SimEngine:
    name = "sim"
    can_clone = False

    def __init__(
        self,
        cache_dir: Path,
        *,
        first_audio_s: float,
        rtf: float,
        piper_voice: str = "",
        piper: PiperEngine | None = None,
        sample_rate: int = SIM_RATE,
    ) -> None:
        if first_audio_s < 0 or rtf < 0:
            raise ConfigError("sim_first_audio_s and sim_rtf must not be negative")
        if not 8000 <= sample_rate <= 48000:
            raise ConfigError(f"sim_sample_rate {sample_rate}: expected 8000 to 48000 Hz")
        self.sample_rate = sample_rate
        self.first_audio_s = first_audio_s
        self.rtf = rtf
        self.cache_path = cache_dir / f"sim-speech-v1-{sample_rate}.npy"
        self._piper_voice = piper_voice
        self._piper = piper  # a loaded engine to render with; else one is made for the occasion
        self._speech: np.ndarray | None = None

    async def start(self) -> None:
        if self._speech is not None:
            return
        speech = await asyncio.to_thread(self._load_cache)
        if speech is None:
            speech = await self._render()
            await asyncio.to_thread(self._save_cache, speech)
        self._speech = speech

    async def close(self) -> None:
        """Nothing to release: the speech stays cached on disk."""

    def _load_cache(self) -> np.ndarray | None:
        if not self.cache_path.is_file():
            return None
        try:
            speech: np.ndarray = np.load(self.cache_path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged cache is rendered again
        if speech.dtype != np.float32 or speech.ndim != 1 or speech.size < self.sample_rate:
            return None
        return speech

    def _save_cache(self, speech: np.ndarray) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.cache_path.with_suffix(".partial.npy")
        np.save(partial, speech, allow_pickle=False)
        partial.replace(self.cache_path)  # atomic: a concurrent start never reads half a file

    async def _render(self) -> np.ndarray:
        piper = self._piper or PiperEngine(self._piper_voice, workers=1)
        try:
            await piper.start()
            resampler = StreamResampler(piper.sample_rate, self.sample_rate)
            gap = np.zeros(round(GAP_SECONDS * self.sample_rate), dtype=np.float32)
            parts: list[np.ndarray] = []
            for phrase in PHRASES:
                async for chunk in piper.synthesize(Utterance(phrase)):
                    parts.append(resampler.process(chunk))
                parts += [resampler.flush(), gap]
        finally:
            if piper is not self._piper:
                await piper.close()
        return np.concatenate(parts).astype(np.float32)

    async def synthesize(self, utterance: Utterance) -> AsyncGenerator[np.ndarray, None]:
        if self._speech is None:
            raise TTSError("the sim engine is not started yet", retryable=True)
        speech = self._speech
        rate = self.sample_rate
        total = max(1, round(len(utterance.text) * SECONDS_PER_CHAR / utterance.speed * rate))
        offset = zlib.crc32(utterance.text.encode()) % speech.size  # same text, same audio
        chunk = round(CHUNK_SECONDS * rate)
        loop = asyncio.get_running_loop()
        started = loop.time()
        produced = 0
        while produced < total:
            n = min(chunk, total - produced)
            ready = started + self.first_audio_s + self.rtf * produced / rate
            # Always yield, even when late: a fast model must not starve the other requests.
            await asyncio.sleep(max(0.0, ready - loop.time()))
            index = np.arange(offset + produced, offset + produced + n)
            audio = speech.take(index, mode="wrap")
            _fade(audio, rate, head=produced == 0, tail=produced + n == total)
            produced += n
            yield audio


def _fade(audio: np.ndarray, rate: int, *, head: bool, tail: bool) -> None:
    n = min(round(FADE_SECONDS * rate), audio.size)
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    if head:
        audio[:n] *= ramp
    if tail:
        audio[audio.size - n :] *= ramp[::-1]
