"""The silma inference executor: one thread, earliest-deadline-first chunks, batches of chunks
that share a key, cancel drops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from bridge.tts_server.engines.silma.executor import (
    InferenceExecutor,
    Item,
    Job,
    RunBatch,
    pick,
)

RATE = 100  # samples per second: a chunk of 100 samples is 1 s of audio
WAIT_S = 10.0


def job(seq: int, *, submitted: float, first_ready: float | None = None, audio_s: float = 0.0) -> Job[str]:
    made = Job(f"job{seq}", 5, lambda _: None, submitted, seq=seq)
    made.first_ready, made.audio_s = first_ready, audio_s
    return made


def test_a_first_chunk_goes_before_a_reply_that_is_ahead_of_real_time() -> None:
    long_reply = job(0, submitted=0.0, first_ready=1.0, audio_s=6.0)  # due at 7.0
    newcomer = job(1, submitted=2.0)  # no audio yet: due now
    assert pick([long_reply, newcomer]) is newcomer


def test_a_reply_about_to_run_dry_goes_before_a_later_newcomer() -> None:
    running_dry = job(0, submitted=0.0, first_ready=1.0, audio_s=0.5)  # due at 1.5
    newcomer = job(1, submitted=2.0)
    assert pick([newcomer, running_dry]) is running_dry


def test_ties_go_to_the_oldest_request() -> None:
    first, second = job(0, submitted=1.0), job(1, submitted=1.0)
    assert pick([second, first]) is first


class Recorder:
    """A fake model: each chunk is 1 s of audio (or what `make` returns). The runner can be held
    at a gate, and says when it has taken a batch, so a test knows what is in progress."""

    def __init__(self, make: RunBatch[str] | None = None) -> None:
        self.make = make
        self.batches: list[list[tuple[str, int]]] = []
        self.entered = threading.Event()  # set once the thread is inside a pass
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: Sequence[tuple[str, int]]) -> Sequence[np.ndarray | BaseException]:
        self.entered.set()
        if not self.gate.wait(WAIT_S):
            raise TimeoutError("the test never opened the gate")
        self.batches.append(list(batch))
        if self.make is not None:
            return self.make(batch)
        return [np.full(RATE, index, dtype=np.float32) for _, index in batch]

    @property
    def ran(self) -> list[tuple[str, int]]:
        return [chunk for batch in self.batches for chunk in batch]

    async def in_a_pass(self) -> None:
        """Until the thread has taken its first batch (and, with the gate closed, waits there)."""
        assert await asyncio.to_thread(self.entered.wait, WAIT_S), "the thread took no batch"


async def drain(queue: asyncio.Queue[Item]) -> list[np.ndarray]:
    chunks = []
    while (item := await asyncio.wait_for(queue.get(), WAIT_S)) is not None:
        assert isinstance(item, np.ndarray)
        chunks.append(item)
    return chunks


async def test_chunks_of_concurrent_requests_interleave_first_chunks_first() -> None:
    model = Recorder()
    executor: InferenceExecutor[str] = InferenceExecutor(model, RATE)
    loop = asyncio.get_running_loop()
    try:
        model.gate.clear()  # hold the thread so that both requests are queued together
        _, long_queue = executor.submit("long", 4, loop)
        await model.in_a_pass()  # long[0] is in progress
        _, short_queue = executor.submit("short", 2, loop)
        model.gate.set()
        long_chunks, short_chunks = await asyncio.gather(drain(long_queue), drain(short_queue))
    finally:
        executor.close()
    assert [c[0] for c in long_chunks] == [0, 1, 2, 3]
    assert [c[0] for c in short_chunks] == [0, 1]
    # The newcomer's first chunk did not wait for the long reply: it ran right after long[0].
    assert model.ran[:2] == [("long", 0), ("short", 0)]


async def test_cancel_drops_the_queued_chunks() -> None:
    model = Recorder()
    executor: InferenceExecutor[str] = InferenceExecutor(model, RATE)
    loop = asyncio.get_running_loop()
    try:
        model.gate.clear()
        doomed, queue = executor.submit("doomed", 10, loop)
        await model.in_a_pass()  # chunk 0 is in progress
        executor.cancel(doomed)
        assert executor.dropped_chunks == 9  # all but the one in progress
        assert executor.queued_chunks == 0
        model.gate.set()
        _, other = executor.submit("other", 1, loop)
        assert len(await drain(other)) == 1
    finally:
        executor.close()
    assert model.ran == [("doomed", 0), ("other", 0)]
    # The thread finished doomed[0] before it took other[0], and delivers in order: had the
    # cancelled chunk been handed over, it would be in the queue by now.
    assert queue.empty()


async def test_chunks_with_the_same_key_share_a_pass_most_urgent_first() -> None:
    model = Recorder()
    # The key is the chunk index (as the engine's seed + index, with one seed for all).
    executor: InferenceExecutor[str] = InferenceExecutor(
        model, RATE, max_batch=2, batch_key=lambda work, index: index
    )
    loop = asyncio.get_running_loop()
    try:
        model.gate.clear()  # hold the thread: the next requests queue up together
        _, first = executor.submit("a", 2, loop)
        await model.in_a_pass()  # a[0] is in progress alone
        queues = [executor.submit(name, 2, loop)[1] for name in ("b", "c", "d")]
        model.gate.set()
        results = await asyncio.gather(drain(first), *(drain(q) for q in queues))
    finally:
        executor.close()
    assert [[c[0] for c in chunks] for chunks in results] == [[0, 1]] * 4
    # First chunks before second ones (a's second is not due: it has 1 s of audio in hand),
    # at most two to a pass, oldest first; a chunk only shares a pass with its own key.
    assert model.batches == [
        [("a", 0)], [("b", 0), ("c", 0)], [("d", 0)], [("a", 1), ("b", 1)], [("c", 1), ("d", 1)],
    ]


def _pass_fails(batch: Sequence[tuple[str, int]]) -> list[np.ndarray | BaseException]:
    """A model pass that raises whenever the bad request is in it."""
    if any(work == "bad" for work, _ in batch):
        raise ValueError("boom")
    return [np.zeros(RATE, dtype=np.float32) for _ in batch]


def _item_fails(batch: Sequence[tuple[str, int]]) -> list[np.ndarray | BaseException]:
    """A pass in which only the bad request's chunk fails (its text could not be prepared)."""
    return [ValueError("bad text") if work == "bad" else np.zeros(RATE, np.float32)
            for work, _ in batch]


@pytest.mark.parametrize(
    ("make", "max_batch", "batches"),
    [
        # The whole pass fails: with one chunk to a pass, only bad's.
        (_pass_fails, 1, [[("first", 0)], [("bad", 0)], [("good", 0)], [("good", 1)]]),
        # One chunk of a shared pass fails: its neighbour in that pass is delivered.
        (_item_fails, 4, [[("first", 0)], [("bad", 0), ("good", 0)], [("good", 1)]]),
    ],
)
async def test_a_failing_chunk_ends_its_request_with_the_error_only(
    make: RunBatch[str], max_batch: int, batches: list[list[tuple[str, int]]]
) -> None:
    model = Recorder(make)
    executor: InferenceExecutor[str] = InferenceExecutor(model, RATE, max_batch=max_batch)
    loop = asyncio.get_running_loop()
    try:
        model.gate.clear()  # bad and good queue up behind a first request, to start together
        _, first = executor.submit("first", 1, loop)
        await model.in_a_pass()
        _, bad = executor.submit("bad", 3, loop)
        _, good = executor.submit("good", 2, loop)
        model.gate.set()
        assert len(await drain(first)) == 1
        failure = await asyncio.wait_for(bad.get(), WAIT_S)
        assert isinstance(failure, ValueError)
        assert len(await drain(good)) == 2
    finally:
        executor.close()
    assert executor.queued_chunks == 0
    assert model.batches == batches
