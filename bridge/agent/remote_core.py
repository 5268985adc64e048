"""The remote agent's link decisions, with no I/O: after a lost connection or a failed connect,
try again (after how long) or give up; and what happens to the events that arrive meanwhile.
The async shell (remote.py) asks, then sleeps, connects, or says the fallback.

Pure and synchronous so every rule is a unit test with an injected clock and random source:
- a lost connection is retried at most `attempts` times, each after a jittered, exponentially
  growing delay bounded by `cap_s`: the caller hears silence while the agent is away, so the
  delays stay short; the jitter keeps every call of a bridge from reconnecting in the same
  instant after the agent restarts;
- the count of attempts starts again only after a connection stayed up `stable_s`: an agent
  that accepts the upgrade and drops it at once would otherwise be retried forever;
- events during the gap wait in a bounded backlog; past its bound the oldest are dropped and
  counted, and the resumed agent is told how many it missed.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from collections.abc import Callable

MAX_ATTEMPTS = 20  # as settings allow: ~40 s of retries at the default cap, then the fallback
GAP_EVENTS = 64  # a gap of seconds holds a handful of events; a flood is not worth replaying


@dataclasses.dataclass(frozen=True)
class Backoff:
    base_s: float = 0.25
    cap_s: float = 2.0
    stable_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s or self.stable_s < 0:
            raise ValueError("backoff needs 0 < base_s <= cap_s and stable_s >= 0")


DEFAULT_BACKOFF = Backoff()


@dataclasses.dataclass(frozen=True)
class Retry:
    attempt: int  # 1-based
    delay_s: float


@dataclasses.dataclass(frozen=True)
class GiveUp:
    reason: str


class Reconnects:
    """How a call's link to its agent is retried."""

    def __init__(self, attempts: int, backoff: Backoff = DEFAULT_BACKOFF, *,
                 rng: Callable[[], float] = random.random) -> None:
        if not 0 <= attempts <= MAX_ATTEMPTS:
            raise ValueError(f"reconnect attempts must be 0 to {MAX_ATTEMPTS}, got {attempts}")
        self.attempts = attempts
        self.backoff = backoff
        self._rng = rng
        self.used = 0  # attempts made since the last connection that proved stable
        self._up_since: float | None = None

    def connected(self, now: float) -> None:
        self._up_since = now

    def lost(self, now: float, reason: str) -> Retry | GiveUp:
        """The open connection dropped."""
        if self._up_since is not None and now - self._up_since >= self.backoff.stable_s:
            self.used = 0
        self._up_since = None
        return self._next(reason)

    def failed(self, reason: str) -> Retry | GiveUp:
        """A reconnect attempt failed."""
        return self._next(reason)

    def _next(self, reason: str) -> Retry | GiveUp:
        if self.used >= self.attempts:
            return GiveUp(f"{reason} ({self.attempts} reconnect attempts spent)")
        self.used += 1
        ceiling = min(self.backoff.cap_s, self.backoff.base_s * 2 ** (self.used - 1))
        # Half fixed, half random: never a tight loop, never all calls at once.
        return Retry(self.used, ceiling * (0.5 + 0.5 * self._rng()))


class Backlog:
    """Events waiting for the agent to come back; the oldest go first past `limit`."""

    def __init__(self, limit: int = GAP_EVENTS) -> None:
        self._items: collections.deque[str] = collections.deque()
        self._limit = limit
        self.dropped = 0  # over the whole call

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: str) -> None:
        if len(self._items) >= self._limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)

    def put_back(self, item: str) -> None:
        """An item taken but not delivered: first again (it was the oldest)."""
        self._items.appendleft(item)

    def take(self) -> str:
        return self._items.popleft()
