"""When to restart the local TTS server's child, decided with no I/O (the shell is
local_server.py, which starts the process, waits for it and sleeps until the time given here).

Pure and synchronous so every rule is a unit test with an injected clock:
- a child that dies (any exit, `kill -9`) or never becomes ready is started again after an
  exponentially growing, jittered delay, so a crash loop cannot spin the CPU or flood the log;
- a child that ran for `stable_s` before dying counts as a one-off: the delay starts over;
- after `max_failures` failures in a row the server is down, with the last failure as its
  reason; the owner (targets.py) starts a fresh server at the next need.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Callable
from typing import Any


class ChildState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    WAITING = "waiting"  # dead, a restart is due at retry_at
    DOWN = "down"  # given up after max_failures in a row
    STOPPED = "stopped"  # the owner stopped it


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    base_s: float = 0.2
    max_s: float = 10.0
    stable_s: float = 30.0
    max_failures: int = 6


class RestartCore:
    def __init__(self, policy: RestartPolicy, *,
                 rng: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self._rng = rng
        self.state = ChildState.STARTING
        self.failures_in_a_row = 0
        self.deaths = 0  # exits of a child that had been ready
        self.failed_starts = 0  # children that never became ready
        self.restarts = 0  # children ready again after a death or failed start
        self.ready_at: float | None = None
        self.retry_at: float | None = None
        self.last_failure: str | None = None
        self.reason: str | None = None  # why it is down

    def starting(self) -> None:
        self.state = ChildState.STARTING

    def ready(self, now: float) -> None:
        if self.deaths or self.failed_starts:
            self.restarts += 1
        self.state = ChildState.RUNNING
        self.ready_at = now
        self.retry_at = None

    def failed(self, now: float, reason: str) -> float | None:
        """The child exited or did not become ready. Returns when to start the next one, or
        None: down, `reason` kept."""
        if self.state is ChildState.STOPPED:
            return None
        if self.state is ChildState.RUNNING:
            self.deaths += 1
            assert self.ready_at is not None
            if now - self.ready_at >= self.policy.stable_s:
                self.failures_in_a_row = 0  # it ran well for a while: a one-off, not a loop
        else:
            self.failed_starts += 1
        self.failures_in_a_row += 1
        self.last_failure = reason
        if self.failures_in_a_row >= self.policy.max_failures:
            self.give_up(f"{self.failures_in_a_row} failures in a row, the last: {reason}")
            return None
        delay = min(self.policy.max_s, self.policy.base_s * 2 ** (self.failures_in_a_row - 1))
        self.state = ChildState.WAITING
        self.retry_at = now + delay * (0.5 + self._rng() / 2)  # jitter: 50-100% of the delay
        return self.retry_at

    def give_up(self, reason: str) -> None:
        """Down at once (the shell's keeper itself failed): no restart is coming."""
        self.state = ChildState.DOWN
        self.retry_at = None
        self.reason = reason

    def stopped(self) -> None:
        self.state = ChildState.STOPPED
        self.retry_at = None

    def stats(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "deaths": self.deaths,
            "failed_starts": self.failed_starts,
            "restarts": self.restarts,
            "failures_in_a_row": self.failures_in_a_row,
            "up_s": None if self.state is not ChildState.RUNNING or self.ready_at is None
            else round(now - self.ready_at, 1),
            "retry_in_s": None if self.retry_at is None
            else round(max(0.0, self.retry_at - now), 2),
            "last_failure": self.last_failure,
            "down_reason": self.reason,
        }
