"""One inference thread per model instance, scheduling text chunks earliest-deadline-first.

Every admitted request hands its chunks over at once; the thread always starts with the chunk
whose listener will run out of audio soonest:
- a request with no audio yet is due at its arrival (first chunks go first, oldest first);
- later, a request is due when its caller would finish hearing what it already has, counted
  from the moment its first chunk was ready.
So a long reply, once it is ahead of real time, yields to the first chunk of a new call. The
next chunks of other requests that can share its forward pass (same batch key: the model's noise
seed) join it, most urgent first, up to `max_batch`: on a GPU a batch costs little more than one
chunk, so throughput grows with the calls in flight.
Cancelling a request drops its queued chunks; the chunk in progress finishes and is discarded.
Results go back to the request's asyncio queue through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

import numpy as np

W = TypeVar("W")  # what a request carries for the chunk runner (voice, seed, texts)
Item = np.ndarray | BaseException | None  # a chunk, a failure, or the end
# Makes the given chunks (work, index) in one pass: a chunk or that chunk's failure, in order.
RunBatch = Callable[[Sequence[tuple[W, int]]], Sequence[np.ndarray | BaseException]]
Clock = Callable[[], float]
_ids = itertools.count()


@dataclasses.dataclass(eq=False)
class Job(Generic[W]):
    work: W
    chunks: int
    deliver: Callable[[Item], None]
    submitted: float
    seq: int = dataclasses.field(default_factory=lambda: next(_ids))
    done: int = 0  # chunks delivered
    first_ready: float | None = None
    audio_s: float = 0.0  # audio delivered so far
    cancelled: bool = False

    @property
    def due(self) -> float:
        if self.first_ready is None:
            return self.submitted
        return self.first_ready + self.audio_s


def pick(jobs: list[Job[W]]) -> Job[W]:
    """Earliest deadline first; ties by arrival."""
    return min(jobs, key=lambda job: (job.due, job.seq))


@dataclasses.dataclass
class ChunkTiming:
    """What one chunk cost: for the real-time factor and time-to-first-chunk statistics."""

    compute_s: float
    audio_s: float
    first_chunk_s: float | None  # submit -> first chunk ready, on a request's first chunk


class InferenceExecutor(Generic[W]):
    """`run` makes a batch of chunks (work, index) on this executor's thread; chunks batch
    together only when `batch_key(work, index)` agrees."""

    def __init__(
        self,
        run: RunBatch[W],
        sample_rate: int,
        *,
        max_batch: int = 1,
        batch_key: Callable[[W, int], Hashable] = lambda work, index: None,
        on_chunk: Callable[[ChunkTiming], None] = lambda _: None,
        clock: Clock = time.monotonic,
        name: str = "silma-infer",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self._run = run
        self._key = batch_key
        self._rate = sample_rate
        self._on_chunk = on_chunk
        self._clock = clock
        self._jobs: list[Job[W]] = []
        self._cv = threading.Condition()
        self._closed = False
        self._running: list[Job[W]] = []
        self.dropped_chunks = 0  # queued chunks of cancelled requests, never run
        self.passes = 0  # calls of `run`: chunks made / passes is the mean batch
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def queued_chunks(self) -> int:
        with self._cv:
            return sum(job.chunks - job.done for job in self._jobs)

    def submit(
        self, work: W, chunks: int, loop: asyncio.AbstractEventLoop
    ) -> tuple[Job[W], asyncio.Queue[Item]]:
        queue: asyncio.Queue[Item] = asyncio.Queue()

        def deliver(item: Item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self.cancel(job)

        job = Job(work, chunks, deliver, self._clock())
        with self._cv:
            if self._closed:
                raise RuntimeError("the inference executor is closed")
            if chunks > 0:
                self._jobs.append(job)
                self._cv.notify()
        if chunks == 0:
            deliver(None)
        return job, queue

    def cancel(self, job: Job[W]) -> None:
        with self._cv:
            job.cancelled = True
            if job in self._jobs:
                self._jobs.remove(job)
                # The chunk in progress (if any) is not queued: it is counted when it ends.
                self.dropped_chunks += job.chunks - job.done - int(job in self._running)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for job in self._jobs:
                job.cancelled = True
            self._jobs.clear()
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def _next_batch(self) -> list[Job[W]]:
        """The most urgent chunk, and the next chunks of other requests that can share its pass."""
        first = pick(self._jobs)
        key = self._key(first.work, first.done)
        others = sorted(
            (job for job in self._jobs
             if job is not first and self._key(job.work, job.done) == key),
            key=lambda job: (job.due, job.seq),
        )
        return [first, *others[: self.max_batch - 1]]

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                batch = self._running = self._next_batch()
            started = self._clock()
            try:
                results = list(self._run([(job.work, job.done) for job in batch]))
            except Exception as exc:  # the whole pass failed: every request in it hears why
                results = [exc] * len(batch)
            now = self._clock()
            with self._cv:
                self._running = []
                self.passes += 1
            for job, result in zip(batch, results, strict=True):
                self._finish(job, result, now, (now - started) / len(batch))

    def _finish(self, job: Job[W], result: np.ndarray | BaseException, now: float,
                compute_s: float) -> None:
        if isinstance(result, BaseException):  # handed to the request's task, raised there
            with self._cv:
                if job in self._jobs:
                    self._jobs.remove(job)
            job.deliver(result)
            return
        with self._cv:
            if job.cancelled:
                return
            job.done += 1
            first = None
            if job.first_ready is None:
                job.first_ready = now
                first = now - job.submitted
            job.audio_s += result.size / self._rate
            last = job.done == job.chunks
            if last:
                self._jobs.remove(job)
        self._on_chunk(ChunkTiming(compute_s, result.size / self._rate, first))
        job.deliver(result)
        if last:
            job.deliver(None)
