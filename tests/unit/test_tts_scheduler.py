"""Scheduler: bounded slots and queue, busy at once when full, cancel, deadlines, FIFO order."""

from __future__ import annotations

import asyncio

import pytest

from bridge.tts_server.scheduler import Busy, DeadlineExceeded, Scheduler

WAIT_S = 5.0  # generous bound on waits that should end at once


class Gate:
    """A job that reports when it starts and finishes only when released."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> str:
        self.log.append(self.name)
        self.started.set()
        await self.release.wait()
        return self.name


async def started(gate: Gate) -> None:
    await asyncio.wait_for(gate.started.wait(), WAIT_S)


async def test_runs_up_to_concurrency_and_queues_the_rest_in_order() -> None:
    scheduler = Scheduler(concurrency=2, max_queue=2, deadline_s=60)
    log: list[str] = []
    gates = [Gate(name, log) for name in "abcd"]
    tasks = [asyncio.create_task(scheduler.run(gate)) for gate in gates]
    await started(gates[0])
    await started(gates[1])
    assert (scheduler.running, scheduler.queued) == (2, 2)
    gates[1].release.set()
    await started(gates[2])
    gates[0].release.set()
    await started(gates[3])
    for gate in gates:
        gate.release.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S) == ["a", "b", "c", "d"]
    assert log == ["a", "b", "c", "d"]
    assert (scheduler.running, scheduler.queued) == (0, 0)


async def test_full_queue_answers_busy_at_once() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=1, deadline_s=60)
    log: list[str] = []
    running, queued = Gate("running", log), Gate("queued", log)
    tasks = [
        asyncio.create_task(scheduler.run(running)),
        asyncio.create_task(scheduler.run(queued)),
    ]
    await started(running)
    with pytest.raises(Busy):
        await scheduler.run(Gate("refused", log))
    assert "refused" not in log
    running.release.set()
    queued.release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)


async def test_no_queue_means_busy_while_every_slot_is_taken() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=0, deadline_s=60)
    gate = Gate("a", [])
    task = asyncio.create_task(scheduler.run(gate))
    await started(gate)
    with pytest.raises(Busy):
        await scheduler.run(Gate("b", []))
    gate.release.set()
    await asyncio.wait_for(task, WAIT_S)
    assert await scheduler.run(_done) == "done"


async def test_cancel_drops_queued_work_without_running_it() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=2, deadline_s=60)
    log: list[str] = []
    first, dropped, last = Gate("first", log), Gate("dropped", log), Gate("last", log)
    t_first = asyncio.create_task(scheduler.run(first))
    t_dropped = asyncio.create_task(scheduler.run(dropped))
    t_last = asyncio.create_task(scheduler.run(last))
    await started(first)
    assert scheduler.queued == 2
    t_dropped.cancel()
    await asyncio.wait({t_dropped}, timeout=WAIT_S)
    assert t_dropped.cancelled()
    assert scheduler.queued == 1
    first.release.set()
    last.release.set()
    await asyncio.wait_for(asyncio.gather(t_first, t_last), WAIT_S)
    assert log == ["first", "last"]
    assert (scheduler.running, scheduler.queued) == (0, 0)


async def test_cancel_stops_running_work_and_frees_its_slot() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=1, deadline_s=60)
    log: list[str] = []
    running, waiting = Gate("running", log), Gate("waiting", log)
    t_running = asyncio.create_task(scheduler.run(running))
    t_waiting = asyncio.create_task(scheduler.run(waiting))
    await started(running)
    t_running.cancel()
    await started(waiting)  # the slot went to the queue
    assert t_running.cancelled()
    waiting.release.set()
    assert await asyncio.wait_for(t_waiting, WAIT_S) == "waiting"


async def test_cancel_racing_the_slot_handover_releases_the_slot() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=1, deadline_s=60)
    first = Gate("first", [])
    second_task: list[asyncio.Task[str]] = []

    async def first_job() -> str:
        await first()
        # Queued before the handover's wake-up: `second` is cancelled after it got the slot.
        asyncio.get_running_loop().call_soon(second_task[0].cancel)
        return "first"

    t_first = asyncio.create_task(scheduler.run(first_job))
    second_task.append(asyncio.create_task(scheduler.run(_done)))
    await started(first)
    assert scheduler.queued == 1
    first.release.set()
    await asyncio.wait([t_first, second_task[0]], timeout=WAIT_S)
    assert second_task[0].cancelled()
    assert (scheduler.running, scheduler.queued) == (0, 0)
    assert await scheduler.run(_done) == "done"


async def test_deadline_covers_queue_wait_and_work() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=1, deadline_s=0.05)
    blocker = Gate("blocker", [])
    t_blocker = asyncio.create_task(scheduler.run(blocker))
    await started(blocker)
    with pytest.raises(DeadlineExceeded):  # waited in the queue past the deadline
        await scheduler.run(Gate("queued", []))
    with pytest.raises(DeadlineExceeded):  # and the blocker ran past it
        await asyncio.wait_for(t_blocker, WAIT_S)
    assert (scheduler.running, scheduler.queued) == (0, 0)


async def test_a_failing_job_frees_its_slot() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=0, deadline_s=60)

    async def boom() -> None:
        raise RuntimeError("engine broke")

    with pytest.raises(RuntimeError):
        await scheduler.run(boom)
    assert scheduler.running == 0
    assert await scheduler.run(_done) == "done"


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        Scheduler(concurrency=0, max_queue=1, deadline_s=1)
    with pytest.raises(ValueError):
        Scheduler(concurrency=1, max_queue=-1, deadline_s=1)
    with pytest.raises(ValueError):
        Scheduler(concurrency=1, max_queue=1, deadline_s=0)


async def _done() -> str:
    return "done"


async def _queued(scheduler: Scheduler, count: int) -> None:
    """Until `count` jobs wait in the queue (they enqueue on their first step)."""
    for _ in range(100):
        if scheduler.queued >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{scheduler.queued} queued, expected {count}")


async def test_urgent_jobs_overtake_normal_ones_in_the_queue() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=3, deadline_s=60)
    log: list[str] = []
    running = Gate("running", log)
    gates = {name: Gate(name, log) for name in ("normal-1", "normal-2", "urgent")}
    tasks = [asyncio.create_task(scheduler.run(running))]
    await started(running)
    for name, priority in (("normal-1", 1), ("normal-2", 1), ("urgent", 0)):
        tasks.append(asyncio.create_task(scheduler.run(gates[name], priority=priority)))
        await _queued(scheduler, len(tasks) - 1)
    for gate in (running, *gates.values()):
        gate.release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
    assert log == ["running", "urgent", "normal-1", "normal-2"]


async def test_an_urgent_job_at_a_full_queue_displaces_the_newest_normal_one() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=2, deadline_s=60)
    log: list[str] = []
    running, old, new, urgent = (Gate(n, log) for n in ("running", "old", "new", "urgent"))
    first = asyncio.create_task(scheduler.run(running))
    await started(running)
    kept = asyncio.create_task(scheduler.run(old, priority=1))
    await _queued(scheduler, 1)
    displaced = asyncio.create_task(scheduler.run(new, priority=1))
    await _queued(scheduler, 2)
    chosen = asyncio.create_task(scheduler.run(urgent, priority=0))
    with pytest.raises(Busy) as refused:
        await asyncio.wait_for(displaced, WAIT_S)
    assert refused.value.retry_after_s > 0
    assert scheduler.displaced == 1
    second = Gate("urgent-2", log)
    second_task = asyncio.create_task(scheduler.run(second, priority=0))
    with pytest.raises(Busy):  # the older normal job goes too
        await asyncio.wait_for(kept, WAIT_S)
    with pytest.raises(Busy):  # a third urgent job finds no normal one left to displace
        await scheduler.run(Gate("late", log), priority=0)
    assert scheduler.displaced == 2
    for gate in (running, urgent, second):
        gate.release.set()
    await asyncio.wait_for(asyncio.gather(first, chosen, second_task), WAIT_S)
    assert log == ["running", "urgent", "urgent-2"]


async def test_a_request_deadline_shorter_than_the_servers_applies_to_queue_wait() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=1, deadline_s=60)
    running = Gate("running", [])
    task = asyncio.create_task(scheduler.run(running))
    await started(running)
    with pytest.raises(DeadlineExceeded, match=r"0\.05 s"):
        await scheduler.run(Gate("late", []), deadline_s=0.05)
    assert scheduler.queued == 0
    running.release.set()
    await asyncio.wait_for(task, WAIT_S)


async def test_retry_after_grows_with_the_queue_and_stays_bounded() -> None:
    scheduler = Scheduler(concurrency=2, max_queue=50, deadline_s=60)
    empty = scheduler.retry_after_s()
    running = [Gate(f"r{i}", []) for i in range(2)]
    waiting = [Gate(f"w{i}", []) for i in range(40)]
    tasks = [asyncio.create_task(scheduler.run(g)) for g in running + waiting]
    await _queued(scheduler, 40)
    assert empty < scheduler.retry_after_s() <= 10.0
    for gate in running + waiting:
        gate.release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)


async def test_the_urgent_job_time_is_known_once_an_urgent_job_ran_and_only_from_those() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=1, deadline_s=60)
    normal = Gate("normal", [])
    normal.release.set()
    await asyncio.wait_for(scheduler.run(normal, priority=1), WAIT_S)
    assert scheduler.mean_urgent_job_s is None
    urgent = Gate("urgent", [])
    urgent.release.set()
    await asyncio.wait_for(scheduler.run(urgent, priority=0), WAIT_S)
    first = scheduler.mean_urgent_job_s
    assert first is not None and 0 <= first < WAIT_S


async def test_an_urgent_job_is_told_to_come_back_sooner_than_a_normal_one() -> None:
    scheduler = Scheduler(concurrency=1, max_queue=4, deadline_s=60)
    quick = Gate("quick urgent", [])
    quick.release.set()
    await asyncio.wait_for(scheduler.run(quick, priority=0), WAIT_S)  # urgent jobs are short
    gates = [Gate(f"normal-{i}", []) for i in range(3)]
    tasks = [asyncio.create_task(scheduler.run(g, priority=1)) for g in gates]
    await _queued(scheduler, 2)
    # Two normal jobs queued: an urgent one would go before them, and urgent jobs are quick.
    assert scheduler.retry_after_s(0) < scheduler.retry_after_s(1)
    assert scheduler.retry_after_s(1) == scheduler.retry_after_s()
    for gate in gates:
        gate.release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
