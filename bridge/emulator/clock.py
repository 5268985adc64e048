"""One timer for the caller audio of every emulated call in a process.

A load test of 500 calls sends 25,000 media messages a second; a timer and a task wake-up per
call per frame would cost the generator more than the messages themselves. Here one task ticks
every 2 ms and, on each tick, sends the due frames of the calls whose 20 ms schedule falls in
that 2 ms slot: calls keep the random phases real calls have (the bridge sees their frames
spread over the period, not in one burst), and the process wakes 500 times a second whatever
the number of calls.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import Protocol

SLOT_S = 0.002


class MediaSource(Protocol):
    def send_due_media(self, now: float) -> Awaitable[None]:
        """Send every caller frame due by `now` (loop time)."""
        ...


class MediaClock:
    """`frames_per_wakeup` > 1 sends each call's frames in bursts of that many (fewer,
    larger wake-ups for the bridge). Lateness (tick vs schedule) is the generator's own."""

    def __init__(self, frames_per_wakeup: int = 1, frame_s: float = 0.020) -> None:
        if frames_per_wakeup < 1:
            raise ValueError("frames_per_wakeup must be at least 1")
        self.period_s = frames_per_wakeup * frame_s
        self._slots: list[list[MediaSource]] = [
            [] for _ in range(max(1, round(self.period_s / SLOT_S)))
        ]
        self._base: float | None = None  # loop time of tick 0
        self._task: asyncio.Task[None] | None = None
        self.lateness_max_s = 0.0
        self.lateness_sum_s = 0.0
        self.ticks = 0

    def join(self, source: MediaSource, first_due: float) -> None:
        """Serve `source` from now on; its frames fall due from `first_due` (loop time) on."""
        loop = asyncio.get_running_loop()
        if self._base is None:
            self._base = first_due
        # The first tick at or after the source's phase: its frames are due when it comes.
        phase = (first_due - self._base) % self.period_s
        self._slots[math.ceil(phase / SLOT_S - 1e-6) % len(self._slots)].append(source)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="media-clock")

    def leave(self, source: MediaSource) -> None:
        for slot in self._slots:
            if source in slot:
                slot.remove(source)
        if not any(self._slots) and self._task is not None:
            self._task.cancel()
            self._task = None

    def reset_lateness(self) -> None:
        self.lateness_max_s = self.lateness_sum_s = 0.0
        self.ticks = 0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._base is not None
        base, slots = self._base, self._slots
        tick = self._tick_at(loop.time()) + 1
        while True:
            due = base + tick * SLOT_S
            await asyncio.sleep(due - loop.time())
            now = max(loop.time(), due)  # timers may fire a hair early: the tick has come
            self.lateness_max_s = max(self.lateness_max_s, now - due)
            self.lateness_sum_s += now - due
            self.ticks += 1
            # Every tick that has come is served; after a stall, up to a whole period at once.
            current = self._tick_at(now)
            for k in range(tick, min(current, tick + len(slots) - 1) + 1):
                for source in list(slots[k % len(slots)]):
                    await source.send_due_media(now)
            tick = current + 1

    def _tick_at(self, t: float) -> int:
        """The last tick at or before loop time `t`."""
        assert self._base is not None
        return math.floor((t - self._base) / SLOT_S + 1e-6)
