"""Pure pacing core: how much audio may leave now so the provider's buffer stays a bounded lead
ahead of real-time playout.

The provider plays what it receives back to back at 8000 samples/s. We model the moment its buffer
runs dry (`play_end`): sending d seconds of audio moves it to max(play_end, now) + d. Audio may be
sent while play_end - now stays within `lead_s`. Because play_end advances by exactly the audio
sent, there is no drift however late the sender wakes; a wake-up later than play_end is an
underrun (the caller heard a gap) unless the utterance had nothing more to send.
"""

from __future__ import annotations

FRAME_SECONDS = 0.020


class Pacer:
    def __init__(self, lead_s: float, frame_s: float = FRAME_SECONDS) -> None:
        if lead_s < frame_s:
            raise ValueError("lead must be at least one frame")
        self.lead_s = lead_s
        self.frame_s = frame_s
        self.play_end = 0.0

    def buffered(self, now: float) -> float:
        """Seconds of sent audio the provider has not played yet."""
        return max(0.0, self.play_end - now)

    def budget(self, now: float) -> int:
        """Whole frames that may be sent at `now` without exceeding the lead."""
        # A small epsilon so float rounding never withholds a frame that exactly fits.
        return max(0, int((self.lead_s - self.buffered(now)) / self.frame_s + 1e-9))

    def sent(self, now: float, frames: int) -> bool:
        """Account for frames sent at `now`. Returns True if the buffer had run dry (a gap)."""
        gap = self.play_end < now
        self.play_end = max(self.play_end, now) + frames * self.frame_s
        return gap

    def wake_at(self, frames_wanted: int) -> float:
        """When `frames_wanted` frames will fit in the lead again."""
        return self.play_end - self.lead_s + frames_wanted * self.frame_s

    def reset(self, now: float) -> None:
        """After a clear: the provider dropped its buffer."""
        self.play_end = now
