"""The load test's shared media clock (scripts/loadtest_lib/shared_clock.py): which slot a call
joins, which ticks are served, that each call's frames go out on its own schedule, and that
the watched sockets are read on the ticks."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from loadtest_lib.shared_clock import SLOT_S, SharedClock, SlotSchedule


def test_a_period_has_ten_slots_of_2_ms() -> None:
    assert SlotSchedule(0.0).slots == 10
    assert SlotSchedule(0.0, period_s=0.060).slots == 30  # 3 frames per wake-up


@pytest.mark.parametrize(
    ("first_due", "slot"),
    [(100.0, 0), (100.0005, 1), (100.002, 1), (100.0021, 2), (100.019, 0), (100.0405, 1)],
)
def test_a_source_joins_the_first_tick_at_or_after_its_phase(first_due: float, slot: int) -> None:
    assert SlotSchedule(100.0).slot_of(first_due) == slot


def test_ticks_count_from_the_base() -> None:
    s = SlotSchedule(10.0)
    assert s.tick_at(10.0) == 0 and s.tick_at(10.0039) == 1 and s.tick_at(10.004) == 2
    assert s.due(5) == pytest.approx(10.010)


def test_on_time_one_tick_is_served() -> None:
    served, following = SlotSchedule(0.0).ticks_to_serve(7, 7 * SLOT_S)
    assert list(served) == [7] and following == 8


def test_after_a_short_stall_every_missed_tick_is_served() -> None:
    served, following = SlotSchedule(0.0).ticks_to_serve(7, 10.5 * SLOT_S)
    assert list(served) == [7, 8, 9, 10] and following == 11


def test_after_a_long_stall_each_slot_is_served_once_and_the_clock_moves_on() -> None:
    served, following = SlotSchedule(0.0).ticks_to_serve(7, 50 * SLOT_S)
    assert list(served) == list(range(7, 17)) and following == 51


class Source:
    def __init__(self, first_due: float) -> None:
        self.first_due = first_due
        self.sent: list[float] = []  # when each frame went, loop time

    def send_due(self, now: float) -> None:
        while self.first_due + len(self.sent) * 0.020 <= now:
            self.sent.append(now)


async def test_every_source_gets_its_frames_in_its_own_slot() -> None:
    loop = asyncio.get_running_loop()
    clock = SharedClock()
    t0 = loop.time() + 0.005
    sources = [Source(t0 + i * 0.0031) for i in range(5)]
    for source in sources:
        clock.join(source, source.first_due)
    await asyncio.sleep(0.25)
    for source in sources:
        clock.leave(source)
    for source in sources:
        assert len(source.sent) >= 10  # ~12 frames due in 0.245 s, less whatever came late
        # each frame leaves at or after its due time, within a slot plus timer slack
        for k, at in enumerate(source.sent):
            assert at >= source.first_due + k * 0.020 - 1e-9
    assert clock.ticks > 50 and clock.lateness_max_s < 0.2


async def test_the_timer_stops_when_the_last_source_leaves() -> None:
    clock = SharedClock()
    source = Source(asyncio.get_running_loop().time())
    clock.join(source, source.first_due)
    await asyncio.sleep(0.05)
    clock.leave(source)
    ticks = clock.ticks
    await asyncio.sleep(0.03)
    assert clock.ticks == ticks


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.got, self.at = sock, b"", []  # type: ignore[var-annotated]

    def on_readable(self) -> None:
        self.got += self.sock.recv(100)
        self.at.append(asyncio.get_running_loop().time())


async def test_watched_sockets_are_read_on_the_ticks_only_when_they_have_data() -> None:
    loop = asyncio.get_running_loop()
    clock = SharedClock()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    reader = Reader(ours)
    clock.watch(ours.fileno(), reader)
    await asyncio.sleep(0.02)
    assert reader.at == []  # nothing sent: never called
    sent_at = loop.time()
    theirs.send(b"hello")
    await asyncio.sleep(0.02)
    clock.unwatch(ours.fileno())
    assert reader.got == b"hello" and len(reader.at) == 1
    assert 0 <= reader.at[0] - sent_at < SLOT_S + 0.01  # the next tick, give or take a timer
    theirs.send(b"more")
    await asyncio.sleep(0.01)
    assert reader.got == b"hello"  # not watched any more
    clock.close()
    ours.close()
    theirs.close()
