"""When a failed TTS request is tried again, with no I/O: the retry loop (client.py) asks, then
sleeps or gives up as told.

Pure and synchronous so every rule is a unit test with an injected rng:
- a failure of the server or the connection (busy, timeout, a stall past the first-audio
  deadline, a connection lost or not to be had) is retried; a reply we refuse is never. A piece
  cut after some of its audio was passed on is tried again and resumed where the caller is
  (Delivered: the new rendering's first seconds, as long as what was passed on, are skipped;
  seamless for a seeded engine, whose rendering is the same), never replayed from its start;
- the delay is exponential with full jitter (so calls that failed together do not retry
  together), and never shorter than the server's retry-after hint (itself jittered upwards);
- a retry that would start past the piece's deadline is not made: the caller is told. The
  deadline runs from when the caller starts waiting on the piece: at once for an utterance's
  first, or when the audio ahead of it will have played out (a reply's later sentences are
  asked for early, and may wait their turn behind other callers' first words);
- retries spend a budget shared by every call on one server: a token bucket that each success
  refills by `budget_ratio`, so while a server fails, retries stay a bounded share of the
  requests that succeed and cannot grow into a storm. A busy reply that says when to come back
  (retry-after) spends none: the server paces those retries itself, its hint grows with its
  queue, and a burst of new callers is exactly what it is asking to be retried later.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

from bridge.errors import TTSError, TTSReplyError, TTSUnavailable


class Kind(enum.StrEnum):
    """Why one attempt failed; the set is a metrics label (never free text)."""

    BUSY = "busy"  # the server's queue is full
    TIMEOUT = "timeout"  # the server's deadline or ours passed
    STALL = "stall"  # accepted, but no audio within the first-audio deadline
    LOST = "lost"  # the connection was lost, or none could be had, before any audio
    REFUSED = "refused"  # a reply we refuse, or an error the server says is not retryable
    MID_STREAM = "mid_stream"  # cut after audio reached the caller, and cannot be resumed


RETRYABLE = frozenset({Kind.BUSY, Kind.TIMEOUT, Kind.STALL, Kind.LOST})
OTHER = "other"  # a failure that is not a TTS request's (undecodable audio)
FAILURE_REASONS = (*(k.value for k in Kind), OTHER)


def failure_reason(error: str | None) -> str:
    """The label of a failed utterance's error: the client's give-up message begins with its
    Kind ("busy: ..."); anything else is OTHER."""
    head = (error or "").split(":", 1)[0]
    return head if head in FAILURE_REASONS else OTHER


def classify(error: TTSError) -> Kind:
    """Why one attempt failed, from its error (MID_STREAM is the client's call: it knows
    whether the piece's audio passed on so far can be resumed)."""
    if isinstance(error, TTSReplyError):
        return Kind.REFUSED
    if isinstance(error, TTSUnavailable):
        return Kind.LOST
    if error.code == "stall":
        return Kind.STALL
    if error.code == "busy":
        return Kind.BUSY
    if error.code == "timeout" or (error.retryable and not error.code):
        return Kind.TIMEOUT  # the server's deadline, or ours (no code: a local timeout)
    return Kind.REFUSED


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    deadline_s: float = 8.0  # from a piece's first attempt: no retry starts later
    first_audio_timeout_s: float = 4.0  # a request with no audio by then is a stall
    base_delay_s: float = 0.1  # the first retry's jitter range; doubles per attempt
    max_delay_s: float = 2.0
    max_retry_after_s: float = 5.0  # a server's hint past this is taken as this
    budget_tokens: float = 20.0  # retries that may be made at once before successes refill
    budget_ratio: float = 0.5  # tokens one success earns: retries <= half the successes

    def __post_init__(self) -> None:
        if self.first_audio_timeout_s <= 0 or self.deadline_s <= 0:
            raise ValueError("the deadline and the first-audio timeout must be positive")
        if not 0 < self.base_delay_s <= self.max_delay_s:
            raise ValueError("need 0 < base_delay_s <= max_delay_s")
        if self.budget_tokens < 0 or self.budget_ratio < 0:
            raise ValueError("the retry budget cannot be negative")


class RetryBudget:
    """A token bucket: a retry spends one token, a success earns `ratio`, at most `capacity`
    are held. Starts full, so a burst after a quiet spell is served."""

    def __init__(self, capacity: float, ratio: float) -> None:
        self.capacity = capacity
        self.ratio = ratio
        self.tokens = capacity
        self.spent = 0  # retries made
        self.refused = 0  # retries not made for want of a token

    def earn(self) -> None:
        self.tokens = min(self.capacity, self.tokens + self.ratio)

    def spend(self) -> bool:
        if self.tokens < 1:
            self.refused += 1
            return False
        self.tokens -= 1
        self.spent += 1
        return True


class Delivered:
    """How much of one piece's audio was passed on to the caller over its attempts, so that an
    attempt after a cut skips that much of its own audio. Audio whose byte rate is unknown (a
    WAV body) cannot be cut at a time: once some was passed on, the piece is not resumable."""

    # Bytes skipped are a multiple of this, the largest sample size (f32le), so a cut never
    # falls inside a sample of any raw format.
    _ALIGN = 4

    def __init__(self) -> None:
        self.seconds = 0.0
        self.resumable = True
        self._skip_s = 0.0

    def new_attempt(self) -> None:
        self._skip_s = self.seconds

    def take(self, data: bytes, bytes_per_s: int | None) -> bytes:
        """What of `data` (the attempt's next audio) is new to the caller; counts it."""
        if bytes_per_s is None:
            self.resumable = False
            return data  # nothing is skipped in what cannot be measured
        if self._skip_s > 0:
            skip = min(len(data), int(self._skip_s * bytes_per_s) // self._ALIGN * self._ALIGN)
            self._skip_s = max(0.0, self._skip_s - skip / bytes_per_s) if skip else 0.0
            data = data[skip:]
        self.seconds += len(data) / bytes_per_s
        return data


class Patience:
    """How long a piece may still be tried: `deadline_s` from when its caller starts waiting on
    it, which is when the audio ahead of it runs out (`needed_at`, as last told: only moves
    later, as more audio ahead arrives) and never before it was asked for."""

    def __init__(self, asked_at: float, deadline_s: float) -> None:
        self._waiting_from = asked_at
        self._deadline_s = deadline_s

    def time_left(self, now: float, needed_at: float) -> float:
        self._waiting_from = max(self._waiting_from, needed_at)
        return self._waiting_from + self._deadline_s - now


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    delay_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class GiveUp:
    why: str  # for people: the log line and the agent's playback_failed reason


def decide(policy: RetryPolicy, budget: RetryBudget, *, attempt: int, kind: Kind,
           retry_after_s: float | None, time_left_s: float,
           rng: Callable[[], float]) -> Retry | GiveUp:
    """After failed attempt number `attempt` (1 = the first) of kind `kind`, with `time_left_s`
    before the deadline: retry after a delay, or give up (and why). A retry spends budget
    unless the server paced it (busy with retry-after)."""
    if kind not in RETRYABLE:
        return GiveUp("not retryable")
    ceiling = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    delay = rng() * ceiling
    if retry_after_s is not None and retry_after_s > 0:
        hint = min(retry_after_s, policy.max_retry_after_s)
        # Up to a quarter later than asked: callers told the same hint spread out.
        delay = max(delay, hint * (1 + 0.25 * rng()))
    if delay >= time_left_s:
        return GiveUp(f"deadline of {policy.deadline_s:g} s reached after {attempt} "
                      f"attempt{'s' if attempt > 1 else ''}")
    paced_by_server = kind is Kind.BUSY and retry_after_s is not None and retry_after_s > 0
    if not paced_by_server and not budget.spend():
        return GiveUp("retry budget spent (the server is failing most requests)")
    return Retry(delay)
