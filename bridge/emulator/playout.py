"""The provider's jitter buffer, emulated: when would the caller have heard each byte?

Pure: no asyncio, no clock. Every method takes `now` (seconds, any monotonic origin).

Audio is mu-law at 8000 bytes/s. Received audio plays back to back; audio that arrives
while the buffer is empty starts playing at once. A mark (Twilio) or checkpoint (Plivo)
is due when all audio received before it has finished playing.

Underruns: an utterance runs from the first media after an idle point (call start, a mark,
a clear) to the mark that closes it. If playout reaches the end of the received audio while
an utterance is still open, the caller hears a gap: it is counted, with its length, when the
next media arrives. Silence between utterances (after a mark) is not an underrun.
"""

from collections import deque

BYTES_PER_SECOND = 8000
# Float sums of frame durations drift by ~1e-15 s; media arriving exactly when the previous
# audio ends must not count as a gap.
_GAP_EPSILON = 1e-6


class PlayoutBuffer:
    """One call's outbound playout queue, with mark bookkeeping and underrun accounting."""

    def __init__(self, *, checkpoint_acks_cleared: bool = True) -> None:
        # Twilio echoes every pending mark on clear; Plivo never acks a cleared checkpoint.
        self.checkpoint_acks_cleared = checkpoint_acks_cleared
        self.underruns = 0
        self.underrun_seconds = 0.0
        self._play_end = float("-inf")  # when the audio received so far finishes playing
        self._marks: deque[tuple[float, str]] = deque()  # (due time, name), due times ascending
        self._utterance_open = False
        self._received_seconds = 0.0
        self._cleared_seconds = 0.0
        self._last_now = float("-inf")

    def __repr__(self) -> str:
        return (
            f"<PlayoutBuffer marks={len(self._marks)} open={self._utterance_open} "
            f"underruns={self.underruns}>"
        )

    def receive(self, now: float, payload_len_bytes: int) -> None:
        """Queue `payload_len_bytes` of audio that arrived at `now`."""
        self._touch(now)
        if self._utterance_open and now > self._play_end + _GAP_EPSILON:
            self.underruns += 1
            self.underrun_seconds += now - self._play_end
        self._utterance_open = True
        duration = payload_len_bytes / BYTES_PER_SECOND
        self._play_end = max(self._play_end, now) + duration
        self._received_seconds += duration

    def mark(self, now: float, name: str) -> None:
        """Queue a mark behind the audio received so far; it closes the open utterance."""
        self._touch(now)
        self._marks.append((max(now, self._play_end), name))
        self._utterance_open = False

    def clear(self, now: float) -> list[str]:
        """Drop the buffered audio; return the marks to acknowledge now, in order.

        Marks whose audio had already played are always returned. The pending ones are
        returned only when the provider acknowledges cleared marks (Twilio).
        """
        self._touch(now)
        acked = self.due_marks(now)
        if self.checkpoint_acks_cleared:
            acked.extend(name for _, name in self._marks)
        self._marks.clear()
        if self._play_end > now:
            self._cleared_seconds += self._play_end - now
            self._play_end = now
        self._utterance_open = False
        return acked

    def due_marks(self, now: float) -> list[str]:
        """Pop the marks whose audio has finished playing by `now`, in order."""
        self._touch(now)
        due: list[str] = []
        while self._marks and self._marks[0][0] <= now:
            due.append(self._marks.popleft()[1])
        return due

    def next_mark_due(self) -> float | None:
        """When the oldest pending mark falls due, or None with no mark pending."""
        return self._marks[0][0] if self._marks else None

    def buffered_seconds(self, now: float) -> float:
        """Audio received but not yet played at `now`."""
        return self._play_end - now if self._play_end > now else 0.0

    @property
    def pending_marks(self) -> int:
        return len(self._marks)

    @property
    def played_seconds(self) -> float:
        """Audio played by the latest `now` passed to any method (cleared audio excluded)."""
        return (
            self._received_seconds - self._cleared_seconds - self.buffered_seconds(self._last_now)
        )

    def _touch(self, now: float) -> None:
        self._last_now = max(self._last_now, now)
