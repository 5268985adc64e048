"""The paced sender and the speaker on a real loop: message sizes and order on the wire, marks,
clearing, and the speaker's lookahead of two pieces. Waits on events, never on time."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable

import orjson

from bridge.call.pacing import Pacer
from bridge.call.sender import PacedSender
from bridge.call.speaker import LOOKAHEAD, Speaker, Utterance
from bridge.silma.connection import AudioPiece
from bridge.telephony.twilio import TwilioCodec
from bridge.tracing.trace import CallTrace, UtteranceTrace

WAIT_S = 10.0


class Wire:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.changed = asyncio.Condition()

    async def send(self, text: str) -> None:
        async with self.changed:
            self.sent.append(orjson.loads(text))
            self.changed.notify_all()

    async def wait_for(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S), self.changed:
            await self.changed.wait_for(done)


def utterance(index: int = 0) -> UtteranceTrace:
    return UtteranceTrace(index, "", clock=lambda: 0)


def sender_on(wire: Wire, *, lead_s: float, max_frames: int = 5) -> PacedSender:
    loop = asyncio.get_running_loop()
    return PacedSender(wire.send, TwilioCodec("MZ1"), Pacer(lead_s), max_frames=max_frames,
                       clock=loop.time)


async def test_audio_leaves_in_messages_of_at_most_max_frames_then_the_mark():
    wire = Wire()
    sender = sender_on(wire, lead_s=10.0)  # a lead longer than the audio: nothing waits
    utt = utterance()
    sender.push_audio(utt, b"\x7f" * 160 * 12)  # 12 frames, 240 ms
    sender.push_mark(utt)
    task = asyncio.ensure_future(sender.run())
    try:
        await wire.wait_for(lambda: any(m["event"] == "mark" for m in wire.sent))
    finally:
        task.cancel()
    kinds = [m["event"] for m in wire.sent]
    assert kinds == ["media", "media", "media", "mark"]
    sizes = [len(base64.b64decode(m["media"]["payload"]))  # type: ignore[index]
             for m in wire.sent[:3]]
    assert sizes == [800, 800, 320]
    assert round(utt.sent_seconds, 3) == round(utt.audio_seconds, 3) == 0.24
    assert "first_frame_sent" in utt.steps and "last_frame_sent" in utt.steps
    assert sender.pending_marks == 1 and sender.speaking
    assert sender.mark_echoed("utt-9") is None
    assert sender.mark_echoed("utt-0") is utt
    assert not sender.speaking


async def test_the_lead_holds_audio_back_until_playout_makes_room():
    wire = Wire()
    sender = sender_on(wire, lead_s=0.1)
    utt = utterance()
    sender.push_audio(utt, b"\x7f" * 160 * 10)  # 200 ms: twice the lead
    task = asyncio.ensure_future(sender.run())
    try:
        await wire.wait_for(lambda: len(wire.sent) == 2)
        # The first 100 ms went at once; the rest only once that much had played.
        assert sender.unplayed_seconds() <= 0.1 + 1e-9
    finally:
        task.cancel()
    assert utt.max_lead_ms <= 100.0 + 1e-6


async def test_clear_drops_queued_audio_and_pending_marks():
    wire = Wire()
    sender = sender_on(wire, lead_s=0.02, max_frames=1)
    first, second = utterance(0), utterance(1)
    sender.push_audio(first, b"\x7f" * 160 * 50)
    sender.push_mark(first)
    sender.push_audio(second, b"\x7f" * 160)
    now = asyncio.get_running_loop().time()
    assert sender.audio_runs_out_at() - now >= 1.02 - 1e-9  # 51 frames queued, none sent yet
    cut = sender.clear()
    assert {u.index for u in cut} == {0, 1}
    assert not sender.speaking and sender.unplayed_seconds() == 0.0
    assert sender.audio_runs_out_at() <= asyncio.get_running_loop().time()  # quiet now


async def test_the_speaker_keeps_two_pieces_in_flight_and_plays_them_in_order():
    requested: list[str] = []
    gates: dict[str, asyncio.Event] = {}
    fetched: dict[str, asyncio.Event] = {}
    requested_changed = asyncio.Condition()

    urgency: list[bool] = []
    aheads: list[Callable[[], float]] = []

    async def synthesize(text: str, on_step: Callable[[str], None], *,
                         urgent: bool,
                         needed_at: Callable[[], float]) -> AsyncIterator[AudioPiece]:
        async with requested_changed:
            requested.append(text)
            urgency.append(urgent)
            aheads.append(needed_at)
            requested_changed.notify_all()
        gates[text], fetched[text] = asyncio.Event(), asyncio.Event()
        await gates[text].wait()
        yield AudioPiece(b"\x7f" * 160, "ulaw", 8000)
        fetched[text].set()

    async def wait_requested(count: int) -> None:
        async with asyncio.timeout(WAIT_S), requested_changed:
            await requested_changed.wait_for(lambda: len(requested) >= count)

    wire = Wire()
    sender = sender_on(wire, lead_s=10.0)
    speaker = Speaker(synthesize, sender, on_piece_failed=lambda *failure: failures.append(failure))
    failures: list[object] = []
    trace = CallTrace("CA1", "twilio", clock=lambda: 0)
    utt = Utterance(trace.utterance(""))
    utt.push("The first sentence is here. The second one follows. And a third. ")
    utt.end()
    tasks = [asyncio.ensure_future(speaker.run()), asyncio.ensure_future(sender.run())]
    try:
        speaker.say(utt)
        await wait_requested(LOOKAHEAD)
        assert requested == ["The first sentence is here.", "The second one follows."]
        gates[requested[1]].set()  # the second finishing first does not free a slot
        async with asyncio.timeout(WAIT_S):
            await fetched[requested[1]].wait()
        assert len(requested) == LOOKAHEAD  # nothing more until the first has played
        gates[requested[0]].set()
        await wait_requested(3)
        gates[requested[2]].set()
        await wire.wait_for(lambda: any(m["event"] == "mark" for m in wire.sent))
    finally:
        for task in tasks:
            task.cancel()
    assert utt.trace.outcome == "pending"  # heard only at the echo
    assert urgency == [True, False, False]  # only the first piece has a caller waiting on it
    # Each piece's retry deadline runs from when the call's audio ahead of it has played.
    assert aheads == [sender.audio_runs_out_at] * 3
    assert failures == []
    assert [m["event"] for m in wire.sent][-1] == "mark"
    assert round(utt.trace.audio_seconds, 3) == 0.06
