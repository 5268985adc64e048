"""`RecordingEngine`: a real engine, and what it was asked (for the TTS server's tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import numpy as np

from bridge.tts_server.engines import Engine, Utterance


class RecordingEngine:
    """Speaks with the engine it wraps, keeping each utterance it was given; `finished` is set
    when the latest one's generator is done or closed (a cancel, a deadline)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.name, self.sample_rate, self.can_clone = engine.name, engine.sample_rate, False
        self.utterances: list[Utterance] = []
        self.finished = asyncio.Event()

    async def start(self) -> None:
        await self._engine.start()

    async def close(self) -> None:
        """The wrapped engine is shared between tests: its fixture closes it."""

    async def synthesize(self, utterance: Utterance) -> AsyncGenerator[np.ndarray, None]:
        self.utterances.append(utterance)
        self.finished.clear()
        try:
            async with contextlib.aclosing(self._engine.synthesize(utterance)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            self.finished.set()
