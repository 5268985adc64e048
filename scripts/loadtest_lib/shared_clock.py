"""One timer for the media of every call in the generator: each tick reads what the bridge sent
on every socket that has data and sends every call's due caller frame.

Every call keeps its own random 20 ms phase, as real calls do: the bridge sees their frames
spread over the period, not in one burst every 20 ms. The period is cut into 2 ms slots; a
call joins the slot its phase falls in, and one timer callback per slot (`loop.call_at`, no
task, no future) sends the due frame of every call in that slot with a plain socket write.

The same tick reads the calls' sockets: they sit in an epoll set of their own, asked without
waiting (`poll(0)`) once per tick, not in the event loop's. On this machine a wake-up costs the
generator 30-50 µs (a virtual machine: every sleep and timer is an exit to the hypervisor), and
the bridge's 5,000 media messages a second at 500 calls, spread over the period, would each
wake it; here they wait for the next tick, at most 2 ms, and the generator wakes 500 times a
second whatever the number of calls. The cost to what is measured: a message from the bridge
is seen up to 2 ms after it arrived (TTFA reads up to 2 ms long, 1 ms on average); the bridge
keeps 100-200 ms of audio ahead of the caller, so no gap comes of it.

`SlotSchedule` is the pure part (which slot, which ticks are due); `SharedClock` runs it.
"""

from __future__ import annotations

import asyncio
import math
import select
from dataclasses import dataclass
from typing import Protocol

SLOT_S = 0.002
_EPS = 1e-6  # float sums of slot lengths drift by ~1e-15 s: a tick exactly on time is due


class MediaSource(Protocol):
    def send_due(self, now: float) -> None:
        """Send every caller frame due by `now` (loop time); never raises."""
        ...


class Readable(Protocol):
    def on_readable(self) -> None:
        """Read what the socket holds; never raises."""
        ...


@dataclass(frozen=True)
class SlotSchedule:
    """Ticks every `slot_s` from `base` (loop time of tick 0); `slots` of them per period."""

    base: float
    period_s: float = 0.020
    slot_s: float = SLOT_S

    @property
    def slots(self) -> int:
        return max(1, round(self.period_s / self.slot_s))

    def slot_of(self, first_due: float) -> int:
        """The slot of a source whose frames fall due from `first_due` on: the first tick at
        or after its phase, so that its frame is due when that tick comes."""
        phase = (first_due - self.base) % self.period_s
        return math.ceil(phase / self.slot_s - _EPS) % self.slots

    def tick_at(self, t: float) -> int:
        """The last tick at or before `t`."""
        return math.floor((t - self.base) / self.slot_s + _EPS)

    def due(self, tick: int) -> float:
        return self.base + tick * self.slot_s

    def ticks_to_serve(self, next_tick: int, now: float) -> tuple[range, int]:
        """(the ticks to serve at `now`, the next one to wait for) when `next_tick` is the
        first not yet served: every tick that has come, but after a stall at most one period's
        worth (each slot once: a source sends all its overdue frames when served)."""
        current = max(self.tick_at(now), next_tick)
        return range(next_tick, min(current, next_tick + self.slots - 1) + 1), current + 1


class SharedClock:
    """Reads the watched sockets and sends the caller audio of every joined source, tick by
    tick while there is either. Lateness (tick vs schedule) is the generator's own and goes
    into the load test's validity."""

    def __init__(self, frames_per_wakeup: int = 1, frame_s: float = 0.020) -> None:
        if frames_per_wakeup < 1:
            raise ValueError("frames_per_wakeup must be at least 1")
        self._period_s = frames_per_wakeup * frame_s
        self._schedule: SlotSchedule | None = None
        self._slots: list[list[MediaSource]] = []
        self._sources = 0
        self._epoll = select.epoll()
        self._readers: dict[int, Readable] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._next_tick = 0
        self.lateness_max_s = 0.0
        self.lateness_sum_s = 0.0
        self.ticks = 0

    def join(self, source: MediaSource, first_due: float) -> None:
        """Serve `source` from now on; its frames fall due from `first_due` (loop time) on."""
        schedule = self._start(first_due)
        self._slots[schedule.slot_of(first_due)].append(source)
        self._sources += 1

    def leave(self, source: MediaSource) -> None:
        for slot in self._slots:
            if source in slot:
                slot.remove(source)
                self._sources -= 1
        self._stop_if_idle()

    def watch(self, fd: int, reader: Readable) -> None:
        """Have `reader` read socket `fd` on the ticks when it has data (or has closed)."""
        self._start(asyncio.get_running_loop().time())
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        self._readers[fd] = reader

    def unwatch(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._epoll.unregister(fd)
        self._stop_if_idle()

    def close(self) -> None:
        """Once every call has left: the epoll set goes."""
        self._epoll.close()

    def reset_lateness(self) -> None:
        self.lateness_max_s = self.lateness_sum_s = 0.0
        self.ticks = 0

    def _start(self, first_due: float) -> SlotSchedule:
        if self._schedule is None:
            self._schedule = SlotSchedule(first_due, self._period_s)
            self._slots = [[] for _ in range(self._schedule.slots)]
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._next_tick = self._schedule.tick_at(loop.time()) + 1
            self._arm(loop)
        return self._schedule

    def _stop_if_idle(self) -> None:
        if self._timer is not None and not self._sources and not self._readers:
            self._timer.cancel()
            self._timer = None

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._schedule is not None
        self._timer = loop.call_at(self._schedule.due(self._next_tick), self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        schedule = self._schedule
        assert schedule is not None
        due = schedule.due(self._next_tick)
        now = max(loop.time(), due)  # timers may fire a hair early: the tick has come
        late = now - due
        self.lateness_max_s = max(self.lateness_max_s, late)
        self.lateness_sum_s += late
        self.ticks += 1
        slots, readers = self._slots, self._readers
        served, self._next_tick = schedule.ticks_to_serve(self._next_tick, now)
        try:
            for fd, _ in self._epoll.poll(0):
                if (reader := readers.get(fd)) is not None:
                    reader.on_readable()
            for k in served:
                # A copy: a source whose call broke leaves its slot while it is served.
                for source in tuple(slots[k % len(slots)]):
                    source.send_due(now)
        finally:
            if self._timer is not None:  # not left by its last source meanwhile
                self._arm(loop)
