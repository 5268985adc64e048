"""When a media stream's peer counts as gone: pure, on an injected clock (seconds, monotonic).

Twilio and Plivo send a media message every 20 ms for the whole call, so a stream on which
nothing arrives for `timeout_s` has lost its peer (a carrier that crashed, a network that
dropped the path without a FIN). The check must cost nothing per message: the socket only sets
a flag on each read, and a timer every `interval_s` hands that flag here, which turns it into
the time the peer was last heard of (known to within one interval). A stream is never called
gone early: at least `timeout_s` of silence, noticed at most `interval_s` late.
"""

from __future__ import annotations

CHECKS_PER_TIMEOUT = 4


class Inactivity:
    def __init__(self, timeout_s: float, now: float) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.timeout_s = timeout_s
        self.interval_s = timeout_s / CHECKS_PER_TIMEOUT
        self._heard_at = now  # the check that last saw a read (the read itself came before)

    def gone(self, read_since_last_check: bool, now: float) -> bool:
        """One periodic check: True once nothing has been read for `timeout_s`."""
        if read_since_last_check:
            self._heard_at = now
            return False
        return now - self._heard_at >= self.timeout_s
