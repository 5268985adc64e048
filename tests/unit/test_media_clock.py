"""The load generator's shared media clock: never early, every call in its own phase slot, and
a call that leaves is never served again."""

from __future__ import annotations

import asyncio

from bridge.emulator.clock import SLOT_S, MediaClock

PERIOD_S = 0.020


class Source:
    def __init__(self, clock: MediaClock, first_due: float, wanted: int) -> None:
        self.clock = clock
        self.first_due = first_due
        self.sent = 0
        self.served_at: list[tuple[int, float]] = []  # (clock tick count, now)
        self.early: list[float] = []
        self.wanted = wanted
        self.done = asyncio.Event()

    async def send_due_media(self, now: float) -> None:
        self.served_at.append((self.clock.ticks, now))
        if self.first_due + self.sent * PERIOD_S > now:
            self.early.append(now)  # served with no frame due: a wrong slot, or too soon
        while self.first_due + self.sent * PERIOD_S <= now:
            self.sent += 1
        if self.sent >= self.wanted:
            self.done.set()


async def test_calls_are_served_on_time_in_their_own_slots() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock()
    start = loop.time() + 0.005
    sources = [Source(clock, start + i * 0.007, wanted=8) for i in range(3)]
    for source in sources:
        clock.join(source, source.first_due)
    async with asyncio.timeout(10):
        for source in sources:
            await source.done.wait()
    for source in sources:
        assert source.early == []
        assert source.sent >= len(source.served_at) >= 1
    # Different phases, different slots: no two sources served by the same tick.
    ticks = [{tick for tick, _ in s.served_at} for s in sources]
    assert not (ticks[0] & ticks[1]) and not (ticks[1] & ticks[2])
    for source in sources:
        clock.leave(source)


async def test_a_call_that_leaves_is_not_served_again() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(frames_per_wakeup=2)
    assert round(clock.period_s / SLOT_S) == 20
    leaving = Source(clock, loop.time(), wanted=1)
    staying = Source(clock, loop.time() + 0.003, wanted=1000)
    clock.join(leaving, leaving.first_due)
    clock.join(staying, staying.first_due)
    async with asyncio.timeout(10):
        await leaving.done.wait()
    clock.leave(leaving)
    served = len(leaving.served_at)
    staying.wanted = staying.sent + 6
    staying.done.clear()
    async with asyncio.timeout(10):
        await staying.done.wait()
    assert len(leaving.served_at) == served
    clock.leave(staying)
