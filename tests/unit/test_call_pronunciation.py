"""A call's pronunciation overrides on the say path: utterances rewritten before they are cut
into TTS pieces (whole or streamed), bounded, and the call shell reading its owner's lexicon
(a failing read leaves the call speaking). Real loop, in-memory wire; waits on events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import orjson

from bridge.agent.scripted import ScriptedAgent
from bridge.call.lexicon import Lexicon
from bridge.call.registry import CallRegistry
from bridge.call.session import CallSession
from bridge.call.speaker import MAX_UTTERANCE_SPOKEN_CHARS, Synthesize, Utterance
from bridge.emulator.twilio_wire import mark_message, start_message
from bridge.settings import CallSettings
from bridge.silma.connection import AudioPiece
from bridge.store import PronunciationOverride as Entry
from bridge.telephony import twilio
from bridge.tracing.metrics import BridgeMetrics
from bridge.tracing.trace import UtteranceTrace

WAIT_S = 10.0
LEXICON = Lexicon([Entry("Dr. Smith", "Doctor Smith"), Entry("SILMA", "Silma"),
                   Entry("x", "y" * 100)])


def drained(utt: Utterance) -> list[str | None]:
    pieces: list[str | None] = []
    while not utt.pieces.empty():
        pieces.append(utt.pieces.get_nowait())
    return pieces


def new_utterance(refused: Callable[[str], None] | None = None) -> Utterance:
    return Utterance(UtteranceTrace(0, "", clock=lambda: 0), refused=refused)


def test_text_said_before_the_lexicon_is_known_waits_then_is_rewritten() -> None:
    utt = new_utterance()
    utt.push("Welcome to SILMA support, how can we help you today? ")
    utt.end()
    assert drained(utt) == []  # no piece before the lexicon: it could not be rewritten
    utt.bind(LEXICON)
    assert drained(utt) == ["Welcome to Silma support, how can we help you today?", None]
    assert utt.trace.text.startswith("Welcome to SILMA")  # the trace keeps the agent's words


def test_a_written_form_streamed_over_pushes_is_never_cut_between_pieces() -> None:
    # Unrewritten, "Dr. " ends a sentence: the segmenter would send "...Dr." alone.
    utt = new_utterance()
    utt.bind(LEXICON)
    for part in ("Your appointment is with Dr", ". Smi", "th on Monday. SIL", "MA will call."):
        utt.push(part)
    utt.end()
    assert drained(utt) == ["Your appointment is with Doctor Smith on Monday.",
                            "Silma will call.", None]


def test_overrides_cannot_make_an_utterance_speak_without_bound() -> None:
    refused: list[str] = []
    utt = new_utterance(refused.append)
    utt.bind(LEXICON)
    for _ in range(150):
        utt.push("x " * 20)  # 40 characters said as 2,020
    utt.end()
    pieces = [p for p in drained(utt) if p is not None]
    assert MAX_UTTERANCE_SPOKEN_CHARS - 100 <= sum(len(p) for p in pieces) \
        <= MAX_UTTERANCE_SPOKEN_CHARS
    assert refused == ["utterance_spoken_truncated"]  # counted once, the call goes on


# -- the call shell ---------------------------------------------------------------------------
class Wire:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.closed = asyncio.get_running_loop().create_future()

    async def send(self, text: str) -> None:
        self.sent.append(orjson.loads(text))

    async def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def recording_tts(said: list[str], heard: asyncio.Event):
    async def synthesize(text: str, on_step: Callable[[str], None], *, urgent: bool,
                         needed_at: Callable[[], float]) -> AsyncIterator[AudioPiece]:
        said.append(text)
        heard.set()
        yield AudioPiece(b"\x7f" * 160, "ulaw", 8000)

    @contextlib.asynccontextmanager
    async def open_tts() -> AsyncIterator[Synthesize]:
        yield synthesize

    return open_tts


async def run_greeting(load_lexicon) -> list[str]:
    """A call greeting "Hello from SILMA." with `load_lexicon`: the texts its TTS was asked."""
    said: list[str] = []
    heard = asyncio.Event()
    wire = Wire()
    session = CallSession(
        provider="twilio", parse=twilio.parse_message,
        codec_for=lambda start: twilio.TwilioCodec(start.stream_id),
        send=wire.send, close=wire.close, open_tts=recording_tts(said, heard),
        agent=ScriptedAgent("Hello from SILMA.", {}), settings=CallSettings(),
        hooks=CallRegistry(BridgeMetrics(lambda: [])), owner="alice", expected_call_id="CA1",
        load_lexicon=load_lexicon)
    run = asyncio.ensure_future(session.run(wire.closed))
    session.receive(start_message(1, "MZ1", "CA1", "AC1", {}))
    async with asyncio.timeout(WAIT_S):
        await heard.wait()
    session.receive(mark_message(2, "MZ1", "none"))
    await wire.close()
    async with asyncio.timeout(WAIT_S):
        await run
    return said


async def test_a_call_speaks_its_owners_lexicon() -> None:
    owners: list[str] = []

    async def load() -> Lexicon:
        owners.append("alice")
        return LEXICON

    assert await run_greeting(load) == ["Hello from Silma."]
    assert owners == ["alice"]  # read once, when the call's TTS opened


async def test_a_lexicon_that_cannot_be_read_leaves_the_call_speaking_as_written() -> None:
    async def broken() -> Lexicon:
        raise OSError("the store is down")

    assert await run_greeting(broken) == ["Hello from SILMA."]
