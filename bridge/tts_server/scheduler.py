"""Admission for synthesis work: bounded concurrency, a bounded queue ordered by priority, one
deadline per job.

A job that finds every slot taken and the queue full is refused at once (Busy, with an estimate
of when a slot frees) rather than left waiting without bound. The queue serves urgent jobs (a
caller is waiting on them now: an utterance's first clause) before normal ones, first come first
served within a priority; an urgent job that finds the queue full takes the place of the newest
normal job, which is refused Busy (its client retries it while it still has time). Cancelling
the task that awaits `run` cancels the job: a queued job leaves the queue, a running one is
interrupted at its next await (for an engine: between chunks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bridge.silma.protocol import NORMAL, URGENT

T = TypeVar("T")
# Retry-after hints are bounded: a first estimate before any job finished, and a range that
# neither invites a retry storm (too short) nor parks a caller for long (too long).
FIRST_JOB_ESTIMATE_S = 1.0
RETRY_AFTER_RANGE_S = (0.05, 10.0)
_EWMA = 0.2  # weight of the newest job in the mean job duration


class Busy(Exception):
    """Every slot is taken and the queue is full (or this job's place went to an urgent one)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(Exception):
    """The job did not finish within its deadline (queue wait included)."""


@dataclasses.dataclass(eq=False)
class _Waiter:
    priority: int
    order: int
    future: asyncio.Future[None]

    def key(self) -> tuple[int, int]:
        return self.priority, self.order


class Scheduler:
    def __init__(self, concurrency: int, max_queue: int, deadline_s: float) -> None:
        if concurrency < 1 or max_queue < 0 or deadline_s <= 0:
            raise ValueError("need concurrency >= 1, max_queue >= 0 and a positive deadline")
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.deadline_s = deadline_s
        self.displaced = 0  # normal jobs refused to make room for urgent ones
        self._running = 0
        self._waiters: list[_Waiter] = []  # kept short (max_queue): a sorted list, not a heap
        self._order = itertools.count()
        self._mean_job_s = FIRST_JOB_ESTIMATE_S
        # What an urgent job (a first clause) takes, announced so that a bridge can tell how
        # many new callers it can bring to their first words in time; None until one ran.
        self.mean_urgent_job_s: float | None = None

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def __repr__(self) -> str:
        return f"<Scheduler running={self._running}/{self.concurrency} queued={self.queued}>"

    def retry_after_s(self, priority: int = NORMAL) -> float:
        """When a job of `priority` refused now is likely to find room: once the jobs queued
        at its priority or above have started. Urgent jobs are timed by what urgent jobs take
        (first clauses are short): a caller refused in a burst of new calls is told to come
        back in a second, not after the long replies queued behind it."""
        ahead = sum(1 for w in self._waiters if w.priority <= priority)
        job_s = self._mean_job_s
        if priority <= URGENT and self.mean_urgent_job_s is not None:
            job_s = self.mean_urgent_job_s
        estimate = job_s * (ahead + 1) / self.concurrency
        return min(RETRY_AFTER_RANGE_S[1], max(RETRY_AFTER_RANGE_S[0], estimate))

    async def run(self, job: Callable[[], Awaitable[T]], *, priority: int = NORMAL,
                  deadline_s: float | None = None) -> T:
        """Wait for a slot, then run `job()`; the deadline (the server's, or the request's when
        shorter) covers both. Raises Busy at once when there is no room."""
        deadline_s = self.deadline_s if deadline_s is None else min(deadline_s, self.deadline_s)
        self._admit(priority)
        try:
            async with asyncio.timeout(deadline_s) as deadline:
                await self._acquire(priority)
                started = time.perf_counter()
                try:
                    return await job()
                finally:
                    self._release()
                    took = time.perf_counter() - started
                    self._mean_job_s += _EWMA * (took - self._mean_job_s)
                    if priority <= URGENT:
                        last = self.mean_urgent_job_s
                        self.mean_urgent_job_s = took if last is None else (
                            last + _EWMA * (took - last))
        except TimeoutError:
            if deadline.expired():
                raise DeadlineExceeded(f"not done within {deadline_s:g} s") from None
            raise

    def _admit(self, priority: int) -> None:
        free = self._running < self.concurrency and not self._waiters
        if free or len(self._waiters) < self.max_queue:
            return
        newest_lower = max((w for w in self._waiters if w.priority > priority),
                           key=lambda w: (w.priority, w.order), default=None)
        if newest_lower is None:
            raise Busy(f"{self._running} requests running and {self.queued} queued",
                       self.retry_after_s(priority))
        self._waiters.remove(newest_lower)
        self.displaced += 1
        newest_lower.future.set_exception(
            Busy("queued request gave its place to an urgent one",
                 self.retry_after_s(newest_lower.priority)))

    async def _acquire(self, priority: int) -> None:
        if self._running < self.concurrency and not self._waiters:
            self._running += 1
            return
        waiter = _Waiter(priority, next(self._order), asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._waiters.sort(key=_Waiter.key)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled() \
                    and waiter.future.exception() is None:
                self._release()  # the slot was handed over just as we were cancelled
            elif waiter in self._waiters:  # `_release` drops cancelled waiters itself
                self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        # Hand the slot straight to the first waiter, so `running` never dips and newcomers
        # cannot overtake the queue.
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.future.done():
                waiter.future.set_result(None)
                return
        self._running -= 1
