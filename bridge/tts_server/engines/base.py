"""The interface every TTS engine implements: float32 chunks at the engine's native rate."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from typing import Protocol

import numpy as np


@dataclasses.dataclass(frozen=True, slots=True)
class Utterance:
    """What to say, and (for engines that clone) whose voice to say it in."""

    text: str
    reference_audio: np.ndarray | None = None  # float32 mono, already decoded and validated
    reference_rate: int = 0
    reference_text: str = ""
    speed: float = 1.0
    seed: int | None = None


class Engine(Protocol):
    """A speech synthesizer.

    `synthesize` yields float32 mono chunks at `sample_rate`, each as soon as the engine has it.
    Closing the generator early (cancel, deadline) stops the work at the next chunk boundary.
    """

    name: str
    sample_rate: int
    can_clone: bool

    async def start(self) -> None:
        """Load models; awaited before the first request. Idempotent."""
        ...

    async def close(self) -> None:
        """Release models and worker threads."""
        ...

    def synthesize(self, utterance: Utterance) -> AsyncGenerator[np.ndarray, None]: ...
