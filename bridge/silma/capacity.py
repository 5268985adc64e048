"""What a TTS server can do, as far as the bridge knows: what it announces in /health and what
the bridge measures of it. Pure (the clock is injected, seconds)."""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

# Bounds on announced figures: a hostile or broken /health cannot make admission believe in a
# server of a million slots or pieces that take no time.
MAX_ANNOUNCED_CONCURRENCY = 4096
MAX_ANNOUNCED_SECONDS = 3600.0
FIRST_AUDIO_WINDOW_S = 10.0  # how long a measured first audio counts
EARLY_HEALTH_INTERVAL_S = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class Capacity:
    concurrency: int | None = None  # requests the server renders at once (announced)
    urgent_piece_s: float | None = None  # seconds an urgent piece takes on it (announced)
    first_audio_s: float | None = None  # recent urgent first audio, as waited for (measured)


def announced(health: Mapping[str, Any]) -> tuple[int | None, float | None]:
    """(concurrency, urgent piece seconds) from a health body; None for what is missing or not
    a sane number (third-party servers announce neither)."""
    concurrency = health.get("concurrency")
    if type(concurrency) is not int or not 1 <= concurrency <= MAX_ANNOUNCED_CONCURRENCY:
        concurrency = None
    raw = health.get("urgent_job_s")
    piece: float | None = None
    # bool is an int subclass: exact types only, so `true` is not one second.
    if (type(raw) is int or type(raw) is float) and math.isfinite(raw) \
            and 0 < raw <= MAX_ANNOUNCED_SECONDS:
        piece = float(raw)
    return concurrency, piece


def health_interval_s(health: Mapping[str, Any], interval_s: float) -> float:
    """When to check a server's health again: the configured interval, sooner while it
    announces its slots but has not timed an urgent piece yet (it just started), so admission
    knows its capacity within seconds of its first calls rather than after a minute."""
    concurrency, piece_s = announced(health)
    if concurrency is not None and piece_s is None:
        return min(interval_s, EARLY_HEALTH_INTERVAL_S)
    return interval_s


class RecentMean:
    """The mean of the samples seen within the last `window_s` (None when there are none), so
    that a slow spell is forgotten once it is over instead of refusing calls forever."""

    def __init__(self, window_s: float = FIRST_AUDIO_WINDOW_S, max_samples: int = 256) -> None:
        self._window_s = window_s
        self._samples: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=max_samples)

    def add(self, now: float, value: float) -> None:
        self._samples.append((now, value))

    def mean(self, now: float) -> float | None:
        while self._samples and self._samples[0][0] <= now - self._window_s:
            self._samples.popleft()
        if not self._samples:
            return None
        return sum(v for _, v in self._samples) / len(self._samples)
