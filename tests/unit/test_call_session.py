"""The call shell (CallSession with its sender, speaker and agent loop) and the registry, on a
real event loop with Twilio's real parser and codec: the provider's socket is an in-memory
wire, the TTS a generator of 8 kHz mu-law pieces. Everything waits on events, never on time."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import orjson
import pytest

from bridge.agent.base import (
    AgentEvent,
    CallControl,
    CallEnded,
    Dtmf,
    Interrupted,
    PlaybackFailed,
    PlaybackFinished,
    Transcript,
)
from bridge.agent.scripted import ScriptedAgent
from bridge.audio.dtmf import dtmf_tones
from bridge.call.registry import CallRegistry
from bridge.call.session import CallSession
from bridge.call.speaker import Synthesize
from bridge.emulator.twilio_wire import (
    dtmf_message,
    mark_message,
    media_message,
    start_message,
    stop_message,
)
from bridge.errors import TTSError
from bridge.settings import CallSettings
from bridge.silma.connection import AudioPiece
from bridge.store import User
from bridge.stt.base import OnFailure, OnTranscript
from bridge.telephony import twilio
from bridge.tracing.metrics import BridgeMetrics

STREAM, CALL = "MZ1", "CA1"
OPERATOR = User(id="ops", display_name="ops", role="operator")
WAIT_S = 10.0


class Wire:
    """What the bridge sends the provider, and the provider's side of closing."""

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self._changed = asyncio.Condition()
        self.closed = asyncio.get_running_loop().create_future()

    async def send(self, text: str) -> None:
        async with self._changed:
            self.sent.append(orjson.loads(text))
            self._changed.notify_all()

    async def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def marks(self) -> list[str]:
        return [str(m["mark"]["name"]) for m in self.sent if m["event"] == "mark"]  # type: ignore[index]

    async def wait_for(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(done)


def speech(seconds: float = 0.2) -> Synthesize:
    async def synthesize(text: str, on_step: Callable[[str], None], *,
                          urgent: bool,
                         needed_at: Callable[[], float]) -> AsyncIterator[AudioPiece]:
        on_step("request_sent")
        yield AudioPiece(b"\x7f" * int(8000 * seconds), "ulaw", 8000)

    return synthesize


def tts(synthesize: Synthesize):
    @contextlib.asynccontextmanager
    async def open_tts() -> AsyncIterator[Synthesize]:
        yield synthesize

    return open_tts


class Recorder(ScriptedAgent):
    """The scripted agent, keeping every event it was told."""

    def __init__(self, greeting: str = "Hello there.") -> None:
        super().__init__(greeting, {"1": "You pressed one."})
        self.events: list[AgentEvent] = []
        self.got = asyncio.Event()

    async def handle(self, call: CallControl, event: AgentEvent) -> None:
        self.events.append(event)
        self.got.set()
        await super().handle(call, event)


class Transcribing:
    """A speech to text backend whose transcripts and failures the test makes."""

    name = "test"

    def __init__(self, *, fail_open: bool = False) -> None:
        self.frames = 0
        self.vad: list[tuple[str, float]] = []
        self.closed = False
        self.opened: list[str] = []
        self._fail_open = fail_open
        self.on_transcript: OnTranscript | None = None
        self.on_failure: OnFailure | None = None

    def open(self, call_id: str, on_transcript: OnTranscript,
             on_failure: OnFailure) -> Transcribing:
        if self._fail_open:
            raise RuntimeError("no model")
        self.opened.append(call_id)
        self.on_transcript, self.on_failure = on_transcript, on_failure
        return self

    def audio(self, mulaw: bytes) -> None:
        self.frames += 1

    def speech_started(self, at_s: float) -> None:
        self.vad.append(("start", at_s))

    def speech_ended(self, at_s: float) -> None:
        self.vad.append(("end", at_s))

    async def aclose(self) -> None:
        self.closed = True


class Call:
    def __init__(self, *, agent: Recorder, open_tts=None, provider_hangup=None,
                 stt: Transcribing | None = None, barge_in_words: int = 0) -> None:
        self.wire = Wire()
        self.agent = agent
        self.hung_up_at_provider: list[str] = []

        async def hangup(call_id: str) -> None:
            self.hung_up_at_provider.append(call_id)

        self.registry = CallRegistry(BridgeMetrics(lambda: []))
        self.session = CallSession(
            provider="twilio", parse=twilio.parse_message,
            codec_for=lambda start: twilio.TwilioCodec(start.stream_id),
            send=self.wire.send, close=self.wire.close,
            open_tts=open_tts or tts(speech()), agent=agent, settings=CallSettings(),
            hooks=self.registry, provider_hangup=provider_hangup or hangup, owner="alice",
            expected_call_id=CALL, stt=stt, barge_in_words=barge_in_words)
        self.run = asyncio.ensure_future(self.session.run(self.wire.closed))
        self.seq = 0

    def feed(self, message: str | bytes) -> None:
        self.session.receive(message)

    def start(self) -> None:
        self.feed(start_message(1, STREAM, CALL, "AC1", {}))

    def speak(self, audio: bytes) -> None:
        """The caller's audio, in 20 ms media messages."""
        for i in range(0, len(audio), 160):
            self.seq += 1
            self.feed(media_message(self.seq, self.seq, 20 * self.seq,
                                    base64.b64encode(audio[i:i + 160]).decode(), STREAM))

    def echo_marks(self) -> None:
        for name in self.wire.marks():
            self.feed(mark_message(2, STREAM, name))

    async def ended(self) -> dict[str, object]:
        async with asyncio.timeout(WAIT_S):
            await self.run
        trace = self.registry.trace_for(OPERATOR, CALL)
        assert trace is not None
        return trace


async def test_greeting_is_sent_paced_marked_and_heard_then_stop_ends_the_call():
    call = Call(agent=Recorder())
    call.start()
    await call.wire.wait_for(lambda: call.wire.marks() == ["utt-0"])
    media = [m for m in call.wire.sent if m["event"] == "media"]
    assert media and all(m["streamSid"] == STREAM for m in media)
    assert call.registry.session_for(OPERATOR, CALL) is call.session
    call.echo_marks()
    async with asyncio.timeout(WAIT_S):
        while PlaybackFinished(0, "Hello there.") not in call.agent.events:
            call.agent.got.clear()
            await call.agent.got.wait()
    call.feed(stop_message(3, STREAM, CALL, "AC1"))
    trace = await call.ended()
    assert trace["end_reason"] == "stop" and trace["owner"] == "alice"
    assert trace["utterance_traces"][0]["outcome"] == "played"  # type: ignore[index]
    assert isinstance(call.agent.events[-1], CallEnded)
    assert call.registry.session_for(OPERATOR, CALL) is None


async def test_dtmf_reaches_the_agent_and_its_reply_is_spoken():
    call = Call(agent=Recorder(greeting=""))
    call.start()
    call.feed(dtmf_message(2, STREAM, "1"))
    await call.wire.wait_for(lambda: call.wire.marks() == ["utt-0"])
    assert Dtmf("1") in call.agent.events
    assert call.session.trace.dtmf == ["1"]
    await call.wire.close()
    trace = await call.ended()
    assert trace["end_reason"] == "socket closed"
    assert trace["utterance_traces"][0]["outcome"] == "abandoned"  # type: ignore[index]


async def test_malformed_messages_are_counted_and_the_call_goes_on():
    call = Call(agent=Recorder())
    call.start()
    call.feed("{not json")
    call.feed(b"\x00\x01")
    await call.wire.wait_for(lambda: bool(call.wire.marks()))
    await call.wire.close()
    trace = await call.ended()
    assert trace["malformed_messages"] == 2


async def test_hangup_waits_for_the_goodbye_then_ends_at_the_provider_and_closes():
    call = Call(agent=Recorder(greeting=""))
    call.start()
    hangup = asyncio.ensure_future(call.session.hangup("Goodbye now."))
    await call.wire.wait_for(lambda: call.wire.marks() == ["utt-0"])
    assert not hangup.done() and not call.wire.closed.done()
    call.echo_marks()
    async with asyncio.timeout(WAIT_S):
        await hangup
    assert call.hung_up_at_provider == [CALL]
    assert call.wire.closed.done()
    trace = await call.ended()
    assert trace["end_reason"] == "hangup"
    assert trace["utterance_traces"][0]["outcome"] == "played"  # type: ignore[index]
    await call.session.hangup("again")  # idempotent: returns at once, says nothing more
    assert call.hung_up_at_provider == [CALL]


async def test_a_tts_that_cannot_open_ends_the_call_with_the_reason():
    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[Synthesize]:
        raise ConnectionRefusedError("no TTS here")
        yield speech()  # pragma: no cover - makes this an async generator

    call = Call(agent=Recorder(), open_tts=broken)
    call.start()
    trace = await call.ended()
    assert trace["end_reason"] == "tts unavailable (ConnectionRefusedError)"


async def test_a_speaker_bug_ends_the_call_with_the_part_and_error_named():
    async def buggy(text: str, on_step: Callable[[str], None], *,
                          urgent: bool,
                         needed_at: Callable[[], float]) -> AsyncIterator[AudioPiece]:
        yield AudioPiece(b"\x7f" * 160, "ulaw", 8000)
        raise ZeroDivisionError("a bug, not a TTS failure")

    call = Call(agent=Recorder(), open_tts=tts(buggy))
    call.start()
    trace = await call.ended()
    assert trace["end_reason"] == "speaker failed (ZeroDivisionError)"


async def test_a_tts_failure_fails_the_utterance_not_the_call_and_the_agent_is_told():
    async def refusing(text: str, on_step: Callable[[str], None], *,
                          urgent: bool,
                         needed_at: Callable[[], float]) -> AsyncIterator[AudioPiece]:
        raise TTSError("busy", retryable=True)
        yield AudioPiece(b"", "ulaw", 8000)  # pragma: no cover - an async generator

    call = Call(agent=Recorder(), open_tts=tts(refusing))
    call.start()
    await call.wire.wait_for(lambda: bool(call.wire.marks()))  # the failed one's mark follows
    assert not call.run.done()
    await call.wire.close()
    trace = await call.ended()
    assert trace["utterance_traces"][0]["outcome"] == "failed"  # type: ignore[index]
    assert trace["end_reason"] == "socket closed"
    failed = [e for e in call.agent.events if isinstance(e, PlaybackFailed)]
    assert [(e.utterance, e.reason, e.detail) for e in failed] == [(0, "busy", "busy")]
    assert not any(isinstance(e, PlaybackFinished) for e in call.agent.events)


async def test_a_stream_for_another_call_is_ended_and_never_registered():
    call = Call(agent=Recorder())
    call.feed(start_message(1, STREAM, "CA-other", "AC1", {}))
    async with asyncio.timeout(WAIT_S):
        await call.run
    assert call.session.trace.end_reason == "stream token names another call"
    assert call.registry.trace_for(OPERATOR, "CA-other") is None
    assert call.agent.events == []  # never started: the agent heard nothing


@pytest.mark.parametrize("viewer_id", ["alice", "bob"])
async def test_the_registry_shows_a_call_to_its_owner_only(viewer_id):
    call = Call(agent=Recorder())
    call.start()
    await call.wire.wait_for(lambda: bool(call.wire.marks()))
    viewer = User(id=viewer_id, display_name=viewer_id)
    mine = viewer_id == "alice"
    assert (call.registry.session_for(viewer, CALL) is not None) is mine
    assert len(call.registry.live_calls(viewer)) == (1 if mine else 0)
    await call.wire.close()
    await call.ended()
    assert len(call.registry.recent(viewer)) == (1 if mine else 0)
    assert (call.registry.trace_for(viewer, CALL) is not None) is mine


async def test_a_drain_hang_up_cuts_what_plays_says_its_goodbye_and_ends_drained():
    long_greeting, short_goodbye = speech(seconds=5.0), speech()

    def synthesize(text: str, on_step: Callable[[str], None], *, urgent: bool,
                   needed_at: Callable[[], float]) -> AsyncIterator[AudioPiece]:
        said = long_greeting if text.startswith("Hello") else short_goodbye
        return said(text, on_step, urgent=urgent, needed_at=needed_at)

    call = Call(agent=Recorder(), open_tts=tts(synthesize))
    call.start()
    await call.wire.wait_for(lambda: any(m["event"] == "media" for m in call.wire.sent))
    hangup = asyncio.ensure_future(call.session.hangup("Sorry, goodbye.", reason="drained",
                                                       interrupt=True))
    await call.wire.wait_for(lambda: call.wire.marks() == ["utt-1"])  # the goodbye's alone
    events = [m["event"] for m in call.wire.sent]
    assert events.index("clear") < events.index("mark")  # the greeting cut, then the goodbye
    assert not hangup.done()  # the goodbye has not been heard yet
    call.echo_marks()
    async with asyncio.timeout(WAIT_S):
        await hangup
    trace = await call.ended()
    assert trace["end_reason"] == "drained"
    outcomes = [u["outcome"] for u in trace["utterance_traces"]]  # type: ignore[attr-defined]
    assert outcomes == ["interrupted", "played"]
    assert call.hung_up_at_provider == [CALL]


async def test_a_drain_does_not_cut_an_agent_goodbye_under_way():
    call = Call(agent=Recorder(greeting=""))
    call.start()
    agents = asyncio.ensure_future(call.session.hangup("Goodbye now."))
    await call.wire.wait_for(lambda: call.wire.marks() == ["utt-0"])
    drains = asyncio.ensure_future(call.session.hangup("Sorry, goodbye.", reason="drained",
                                                       interrupt=True))
    call.echo_marks()
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(agents, drains)
    trace = await call.ended()
    assert trace["end_reason"] == "hangup"
    texts = [u["text"] for u in trace["utterance_traces"]]  # type: ignore[attr-defined]
    assert texts == ["Goodbye now."]
    assert all(m["event"] != "clear" for m in call.wire.sent)


async def test_a_silent_stream_ends_the_call_inactive():
    call = Call(agent=Recorder())
    call.start()
    await call.wire.wait_for(lambda: bool(call.wire.marks()))
    call.session.inactive()
    trace = await call.ended()
    assert trace["end_reason"] == "inactive"


# -- speech to text, barge-in by words, DTMF out ----------------------------------------------
SILENCE = b"\xff" * 160
E = TypeVar("E")


def voice(seconds: float) -> bytes:
    """Loud wideband sound: what the voice detector takes for speech."""
    rng = random.Random(7)
    return bytes(rng.randrange(256) for _ in range(int(8000 * seconds)))


async def events_of(agent: Recorder, kind: type[E], count: int = 1) -> list[E]:
    async with asyncio.timeout(WAIT_S):
        while True:
            found: list[E] = [e for e in agent.events if isinstance(e, kind)]
            if len(found) >= count:
                return found
            agent.got.clear()
            await agent.got.wait()


async def test_the_transcriber_hears_the_call_and_its_transcripts_reach_the_agent():
    stt = Transcribing()
    call = Call(agent=Recorder(greeting=""), stt=stt)
    call.start()
    assert stt.opened == [CALL]
    call.speak(SILENCE * 20 + voice(0.4) + SILENCE * 40)
    assert stt.frames == 20 + 20 + 40
    assert [kind for kind, _ in stt.vad] == ["start", "end"]
    assert stt.on_transcript is not None
    said = Transcript("hello there", True, stt.vad[0][1], stt.vad[1][1], 0.1)
    stt.on_transcript(said)
    assert (await events_of(call.agent, Transcript)) == [said]
    await call.wire.close()
    trace = await call.ended()
    assert stt.closed  # in the call's one teardown
    turns = trace["turn_traces"]
    assert isinstance(turns, list) and len(turns) == 1
    assert turns[0]["words"] == 2 and turns[0]["stt_ms"] is not None


async def test_a_failing_speech_to_text_is_counted_and_the_call_goes_on():
    stt = Transcribing()
    call = Call(agent=Recorder(), stt=stt)
    call.start()
    assert stt.on_failure is not None
    stt.on_failure("unreachable")
    call.speak(SILENCE * 5)
    assert stt.frames == 0  # no longer fed
    await call.wire.wait_for(lambda: bool(call.wire.marks()))  # the greeting still plays
    await call.wire.close()
    trace = await call.ended()
    assert trace["stt_failure"] == "unreachable" and stt.closed
    assert call.registry.metrics.refused.labels("stt_failed")._value.get() == 1


async def test_a_speech_to_text_that_cannot_open_costs_the_call_only_its_transcripts():
    call = Call(agent=Recorder(), stt=Transcribing(fail_open=True))
    call.start()
    await call.wire.wait_for(lambda: bool(call.wire.marks()))
    await call.wire.close()
    trace = await call.ended()
    assert trace["stt_failure"] == "open_failed" and trace["end_reason"] == "socket closed"


async def test_with_words_barge_in_voice_does_not_clear_and_words_do():
    stt = Transcribing()
    call = Call(agent=Recorder(), open_tts=tts(speech(seconds=5.0)), stt=stt,
                barge_in_words=2)
    call.start()
    await call.wire.wait_for(lambda: any(m["event"] == "media" for m in call.wire.sent))
    call.speak(SILENCE * 20 + voice(0.3))  # a cough over the greeting
    assert [kind for kind, _ in stt.vad] == ["start"]
    assert all(m["event"] != "clear" for m in call.wire.sent)
    assert stt.on_transcript is not None
    stt.on_transcript(Transcript("uh", False, stt.vad[0][1], stt.vad[0][1] + 0.3))
    assert all(m["event"] != "clear" for m in call.wire.sent)
    stt.on_transcript(Transcript("wait please", False, stt.vad[0][1], stt.vad[0][1] + 0.3))
    await call.wire.wait_for(lambda: any(m["event"] == "clear" for m in call.wire.sent))
    [cut] = await events_of(call.agent, Interrupted)
    assert cut.utterance == 0
    await call.wire.close()
    trace = await call.ended()
    assert trace["barge_ins"] == 1


async def test_send_dtmf_plays_the_tones_after_what_is_queued_and_marks_them():
    call = Call(agent=Recorder())
    call.start()
    await call.wire.wait_for(lambda: any(m["event"] == "media" for m in call.wire.sent))
    call.session.send_dtmf("12#")  # while the greeting plays: after it
    with pytest.raises(ValueError):
        call.session.send_dtmf("12x")
    await call.wire.wait_for(lambda: call.wire.marks() == ["utt-0", "utt-1"])
    media = b"".join(base64.b64decode(str(m["media"]["payload"]))  # type: ignore[index]
                     for m in call.wire.sent if m["event"] == "media")
    assert media.endswith(dtmf_tones("12#"))
    call.echo_marks()
    finished = await events_of(call.agent, PlaybackFinished, count=2)
    assert [e.utterance for e in finished] == [0, 1]
    await call.wire.close()
    trace = await call.ended()
    assert len(trace["utterance_traces"]) == 2  # type: ignore[arg-type]
