"""Admission for synthesis work: bounded concurrency, a bounded FIFO queue, one deadline per job.

A job that finds every slot taken and the queue full is refused at once (Busy) rather than left
waiting without bound. Cancelling the task that awaits `run` cancels the job: a queued job
leaves the queue, a running one is interrupted at its next await (for an engine: between chunks).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Every slot is taken and the queue is full."""


class DeadlineExceeded(Exception):
    """The job did not finish within its deadline (queue wait included)."""


class Scheduler:
    def __init__(self, concurrency: int, max_queue: int, deadline_s: float) -> None:
        if concurrency < 1 or max_queue < 0 or deadline_s <= 0:
            raise ValueError("need concurrency >= 1, max_queue >= 0 and a positive deadline")
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.deadline_s = deadline_s
        self._running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def __repr__(self) -> str:
        return f"<Scheduler running={self._running}/{self.concurrency} queued={self.queued}>"

    async def run(self, job: Callable[[], Awaitable[T]]) -> T:
        """Wait for a slot, then run `job()`; the deadline covers both. Raises Busy at once."""
        self._check_admission()
        try:
            async with asyncio.timeout(self.deadline_s) as deadline:
                await self._acquire()
                try:
                    return await job()
                finally:
                    self._release()
        except TimeoutError:
            if deadline.expired():
                raise DeadlineExceeded(f"not done within {self.deadline_s:g} s") from None
            raise

    def _check_admission(self) -> None:
        free = self._running < self.concurrency and not self._waiters
        if not free and len(self._waiters) >= self.max_queue:
            raise Busy(f"{self._running} requests running and {self.queued} queued")

    async def _acquire(self) -> None:
        if self._running < self.concurrency and not self._waiters:
            self._running += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed over just as we were cancelled
            elif waiter in self._waiters:  # `_release` drops cancelled waiters itself
                self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        # Hand the slot straight to the oldest waiter, so `running` never dips and newcomers
        # cannot overtake the queue.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._running -= 1
