"""One inference thread per model instance, scheduling text chunks earliest-deadline-first.

Every admitted request hands its chunks over at once; the thread runs one chunk at a time and
always picks the chunk whose listener will run out of audio soonest:
- a request with no audio yet is due at its arrival (first chunks go first, oldest first);
- later, a request is due when its caller would finish hearing what it already has, counted
  from the moment its first chunk was ready.
So a long reply, once it is ahead of real time, yields to the first chunk of a new call.
Cancelling a request drops its queued chunks; the chunk in progress finishes and is discarded.
Results go back to the request's asyncio queue through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

W = TypeVar("W")  # what a request carries for the chunk runner (voice, seed, texts)
Item = np.ndarray | BaseException | None  # a chunk, a failure, or the end
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
    """`run(work, index)` makes chunk `index` of a request; it runs on this executor's thread."""

    def __init__(
        self,
        run: Callable[[W, int], np.ndarray],
        sample_rate: int,
        *,
        on_chunk: Callable[[ChunkTiming], None] = lambda _: None,
        clock: Clock = time.monotonic,
        name: str = "silma-infer",
    ) -> None:
        self._run = run
        self._rate = sample_rate
        self._on_chunk = on_chunk
        self._clock = clock
        self._jobs: list[Job[W]] = []
        self._cv = threading.Condition()
        self._closed = False
        self._running: Job[W] | None = None
        self.dropped_chunks = 0  # queued chunks of cancelled requests, never run
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
                self.dropped_chunks += job.chunks - job.done - int(job is self._running)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for job in self._jobs:
                job.cancelled = True
            self._jobs.clear()
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job = pick(self._jobs)
                index = job.done
                self._running = job
            started = self._clock()
            try:
                audio = self._run(job.work, index)
            except Exception as exc:  # handed to the request's task, raised there
                with self._cv:
                    self._running = None
                    if job in self._jobs:
                        self._jobs.remove(job)
                job.deliver(exc)
                continue
            now = self._clock()
            with self._cv:
                self._running = None
                if job.cancelled:
                    continue
                job.done += 1
                first = None
                if job.first_ready is None:
                    job.first_ready = now
                    first = now - job.submitted
                job.audio_s += audio.size / self._rate
                last = job.done == job.chunks
                if last:
                    self._jobs.remove(job)
            self._on_chunk(ChunkTiming(now - started, audio.size / self._rate, first))
            job.deliver(audio)
            if last:
                job.deliver(None)
