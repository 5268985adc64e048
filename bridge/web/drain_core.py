"""When a draining bridge stops waiting: a pure plan on an injected clock (seconds, monotonic).

On SIGTERM (or SIGINT) the bridge drains instead of cutting its calls mid-sentence:

- WAITING: it is not ready (its readiness probe answers 503) and new calls are answered busy
  ("draining"); live calls go on until they end or `deadline_s` has passed.
- ENDING: every call still live hears the goodbye and is hung up ("drained"); this takes up to
  the goodbye's mark timeout (`goodbye_s`) and one close.
- CLOSING: every stream still open is closed, each bounded by `close_s` (a peer that stopped
  reading is cut off), and the calls get `close_s` to file their traces.
- DONE: the process may exit.

Each phase ends early when nothing is held any more (no stream open, no answered call whose
stream is still to come). A signal during the drain skips the wait it is in: a second one ends
the calls at once, a third closes the streams.
"""

from __future__ import annotations

import dataclasses
import enum

CLOSE_S = 2.0  # a close handshake takes a round trip: a peer silent this long is cut off


class Phase(enum.Enum):
    SERVING = "serving"
    WAITING = "waiting"
    ENDING = "ending"
    CLOSING = "closing"
    DONE = "done"


@dataclasses.dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do until `until`, a signal, or a stream's end."""

    until: float


@dataclasses.dataclass(frozen=True, slots=True)
class EndCalls:
    """Say goodbye to and hang up every call not yet ended by the drain, then wait as Wait."""

    until: float


@dataclasses.dataclass(frozen=True, slots=True)
class CloseStreams:
    """Close every open stream (each within close_s), wait for the calls to file their traces
    (close_s in all), then step again."""


@dataclasses.dataclass(frozen=True, slots=True)
class Exit:
    """The drain is over."""


Step = Wait | EndCalls | CloseStreams | Exit


class Drain:
    def __init__(self, *, deadline_s: float, goodbye_s: float, close_s: float = CLOSE_S) -> None:
        if deadline_s < 0 or goodbye_s < 0 or close_s <= 0:
            raise ValueError("need deadline_s >= 0, goodbye_s >= 0 and close_s > 0")
        self.deadline_s = deadline_s
        self.goodbye_s = goodbye_s
        self.close_s = close_s
        self.phase = Phase.SERVING
        self._until = 0.0  # when the current phase's wait ends

    @property
    def draining(self) -> bool:
        """From the first signal on: not ready, and new calls are refused."""
        return self.phase is not Phase.SERVING

    @property
    def longest_s(self) -> float:
        """The longest a drain can take, from the first signal to DONE: what the platform's
        grace period (Kubernetes' terminationGracePeriodSeconds) must exceed."""
        return self.deadline_s + self.goodbye_s + 3 * self.close_s

    def signalled(self, now: float) -> None:
        """SIGTERM or SIGINT: the first starts the drain, a later one ends its current wait."""
        if self.phase is Phase.SERVING:
            self.phase = Phase.WAITING
            self._until = now + self.deadline_s
        elif self.phase in (Phase.WAITING, Phase.ENDING):
            self._until = min(self._until, now)

    def step(self, now: float, held: int) -> Step:
        """What to do now, with `held` streams open or answered calls still to connect."""
        if self.phase is Phase.SERVING:
            raise RuntimeError("not draining: no signal yet")
        if self.phase is Phase.CLOSING or held <= 0:  # the closes are over, or nothing is left
            self.phase = Phase.DONE
        if self.phase is Phase.DONE:
            return Exit()
        if now < self._until:
            return Wait(self._until) if self.phase is Phase.WAITING else EndCalls(self._until)
        if self.phase is Phase.WAITING:
            self.phase = Phase.ENDING
            self._until = now + self.goodbye_s + self.close_s
            return EndCalls(self._until)
        self.phase = Phase.CLOSING
        return CloseStreams()
