"""The batch shell with a recognizer of the test's own (no sockets, no threads): what it is
given, latency from the endpoint on an injected clock, a full queue, a failure that loses one
utterance, failures in a row that end transcripts, a bug, and silence after close."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import structlog.testing

from bridge.stt.base import Transcript
from bridge.stt.batch import MAX_FAILURES_IN_A_ROW, BatchTranscriber, SttError
from bridge.stt.utterance_core import Utterance

FRAME = b"\x10" * 160


@dataclasses.dataclass
class Recognizer:
    """Answers each utterance from `replies` once the test releases it."""

    replies: list[str | BaseException]
    seen: list[Utterance] = dataclasses.field(default_factory=list)
    release: asyncio.Queue[None] = dataclasses.field(default_factory=asyncio.Queue)
    called: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    answered: asyncio.Queue[None] = dataclasses.field(default_factory=asyncio.Queue)

    async def __call__(self, utterance: Utterance) -> str:
        self.seen.append(utterance)
        self.called.set()
        await self.release.get()
        reply = self.replies.pop(0)
        self.answered.put_nowait(None)
        if isinstance(reply, BaseException):
            raise reply
        return reply


@dataclasses.dataclass
class Heard:
    transcripts: asyncio.Queue[Transcript] = dataclasses.field(default_factory=asyncio.Queue)
    failures: asyncio.Queue[str] = dataclasses.field(default_factory=asyncio.Queue)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(recognizer: Recognizer, clock: Clock | None = None,
         max_pending: int = 2) -> tuple[BatchTranscriber, Heard]:
    heard = Heard()
    t = BatchTranscriber("call-1", "test", recognizer, heard.transcripts.put_nowait,
                         heard.failures.put_nowait, max_pending=max_pending, preroll_s=0.2,
                         max_s=5.0, clock=clock or Clock())
    return t, heard


def say(t: BatchTranscriber, frames: int) -> None:
    t.speech_started(0.0)
    for _ in range(frames):
        t.audio(FRAME)
    t.speech_ended(0.0)


async def test_a_final_transcript_with_latency_from_the_endpoint() -> None:
    clock = Clock()
    recognizer = Recognizer([" two tickets please "])
    t, heard = make(recognizer, clock)
    for _ in range(20):
        t.audio(FRAME)
    say(t, 30)
    await asyncio.wait_for(recognizer.called.wait(), 5)
    clock.now += 0.75  # the recognizer took this long
    recognizer.release.put_nowait(None)
    got = await asyncio.wait_for(heard.transcripts.get(), 5)
    await t.aclose()
    assert got == Transcript("two tickets please", True, pytest.approx(0.2),  # type: ignore[arg-type]
                             pytest.approx(1.0), pytest.approx(0.75))  # type: ignore[arg-type]
    [utterance] = recognizer.seen
    assert len(utterance.mulaw) == 0.8 * 8000  # pre-roll 0.2 s + 0.6 s of speech


async def test_no_words_is_no_transcript() -> None:
    recognizer = Recognizer(["  ", "yes"])
    t, heard = make(recognizer)
    say(t, 5)
    say(t, 5)
    recognizer.release.put_nowait(None)
    recognizer.release.put_nowait(None)
    got = await asyncio.wait_for(heard.transcripts.get(), 5)
    await t.aclose()
    assert got.text == "yes" and heard.transcripts.empty() and heard.failures.empty()


async def test_a_failure_loses_one_utterance_and_the_next_is_tried() -> None:
    recognizer = Recognizer([SttError("timeout", "no reply within 1 s"), "hello"])
    t, heard = make(recognizer)
    with structlog.testing.capture_logs() as logs:
        say(t, 5)
        say(t, 5)
        recognizer.release.put_nowait(None)
        recognizer.release.put_nowait(None)
        got = await asyncio.wait_for(heard.transcripts.get(), 5)
    await t.aclose()
    assert got.text == "hello" and heard.failures.empty()
    assert [(e["event"], e["reason"]) for e in logs] == [("stt_failed", "timeout")]


async def test_failures_in_a_row_give_up_once_and_stay_quiet() -> None:
    recognizer = Recognizer([SttError("http_status", "HTTP 500"), "ok",
                             *[SttError("http_status", "HTTP 500")] * MAX_FAILURES_IN_A_ROW,
                             "never asked"])
    t, heard = make(recognizer)
    for _ in range(2 + MAX_FAILURES_IN_A_ROW):  # a success between resets the count
        say(t, 5)
        recognizer.release.put_nowait(None)
        await asyncio.wait_for(recognizer.answered.get(), 5)
    assert (await asyncio.wait_for(heard.transcripts.get(), 5)).text == "ok"
    assert await asyncio.wait_for(heard.failures.get(), 5) == "http_status"
    say(t, 5)  # nobody is asked any more, and nothing raises
    await t.aclose()
    assert heard.failures.empty() and len(recognizer.seen) == 2 + MAX_FAILURES_IN_A_ROW


async def test_a_full_queue_drops_the_utterance_at_once() -> None:
    recognizer = Recognizer(["one", "two"])
    t, heard = make(recognizer, max_pending=1)
    with structlog.testing.capture_logs() as logs:
        say(t, 5)
        await asyncio.wait_for(recognizer.called.wait(), 5)  # the first is being recognized
        say(t, 5)  # waits in the queue
        say(t, 5)  # finds it full
    assert [(e["event"], e["reason"]) for e in logs] == [("stt_failed", "overloaded")]
    recognizer.release.put_nowait(None)
    recognizer.release.put_nowait(None)
    texts = [(await asyncio.wait_for(heard.transcripts.get(), 5)).text for _ in range(2)]
    await t.aclose()
    assert texts == ["one", "two"] and len(recognizer.seen) == 2 and heard.failures.empty()


async def test_a_bug_in_the_recognizer_is_told_once_and_ends_transcripts() -> None:
    recognizer = Recognizer([ValueError("a bug")])
    t, heard = make(recognizer)
    say(t, 5)
    recognizer.release.put_nowait(None)
    assert await asyncio.wait_for(heard.failures.get(), 5) == "internal"
    say(t, 5)  # nobody is there to take it, and nothing raises
    await t.aclose()
    assert heard.failures.empty() and heard.transcripts.empty()


async def test_nothing_is_told_after_close() -> None:
    recognizer = Recognizer(["late"])
    t, heard = make(recognizer)
    say(t, 5)
    await asyncio.wait_for(recognizer.called.wait(), 5)
    await t.aclose()  # cancels the recognition in flight
    say(t, 5)
    assert heard.transcripts.empty() and heard.failures.empty()
