"""The LLM agent against an OpenAI-compatible server double on loopback (tests/openai_double.py),
through a recording CallControl: the greeting, a reply spoken clause by clause as it streams,
interruptions and new turns fixing the history, the end_call and send_dtmf tools, the spoken
fallback when the provider fails, and the key sent only when there is one."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from bridge.agent.base import CallEnded, CallStarted, Interrupted, Transcript
from bridge.agent.llm import LlmAgent
from bridge.settings import AgentSettings
from tests.openai_double import ChatDouble, Reply, serving_chat

WAIT_S = 5.0
SYSTEM = "You are a test."
FALLBACK = "Sorry, something went wrong."


class Stream:
    def __init__(self, call: Call) -> None:
        self._call = call
        self.pieces: list[str] = []
        self.ended = False

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def push(self, text: str) -> None:
        assert not self.ended, "pushed after end"
        self.pieces.append(text)
        self._call.record("push", text)

    def end(self) -> None:
        assert not self.ended, "ended twice"
        self.ended = True
        self._call.record("end", "")


class Call:
    """The CallControl side, recording what the agent does, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.said: list[str] = []
        self.streams: list[Stream] = []
        self.dtmf: list[str] = []
        self.hangups: list[str | None] = []
        self._changed = asyncio.Event()

    @property
    def call_id(self) -> str:
        return "CA-llm"

    def record(self, kind: str, text: str) -> None:
        self.events.append((kind, text))
        self._changed.set()

    def say(self, text: str) -> object:
        self.said.append(text)
        self.record("say", text)
        return None

    def say_stream(self) -> Stream:
        stream = Stream(self)
        self.streams.append(stream)
        self.record("stream", "")
        return stream

    def clear(self) -> None:
        self.record("clear", "")

    async def hangup(self, goodbye: str | None = None) -> None:
        self.hangups.append(goodbye)
        self.record("hangup", goodbye or "")

    def send_dtmf(self, digits: str) -> None:
        self.dtmf.append(digits)
        self.record("dtmf", digits)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (bounded) until `condition` holds after what the agent did."""
        async with asyncio.timeout(WAIT_S):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@dataclasses.dataclass
class Rig:
    double: ChatDouble
    agent: LlmAgent
    call: Call

    async def start(self) -> None:
        await self.agent.handle(self.call, CallStarted("CA-llm", "twilio", {}))

    async def user(self, text: str) -> None:
        await self.agent.handle(self.call, Transcript(text, True, 0.0, 1.0, 0.2))

    async def reply_spoken(self, n: int) -> Stream:
        """The n-th (1-based) utterance streamed, once it ended."""
        await self.call.until(lambda: len(self.call.streams) >= n and self.call.streams[n - 1].ended)
        return self.call.streams[n - 1]

    def messages(self, request: int) -> list[dict[str, Any]]:
        return list(self.double.requests[request]["messages"])


def settings(url: str, **changes: Any) -> AgentSettings:
    base = AgentSettings(kind="llm", llm_base_url=url, llm_model="test-model",
                         llm_api_key="sk-secret-key", llm_system_prompt=SYSTEM,
                         fallback=FALLBACK, goodbye="Goodbye!", greeting="",
                         llm_first_token_timeout_s=2.0, llm_request_timeout_s=5.0)
    return dataclasses.replace(base, **changes)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def double() -> AsyncIterator[ChatDouble]:
    async with serving_chat(ChatDouble()) as served:
        yield served


@pytest.fixture
async def make_rig(http: aiohttp.ClientSession,
                   double: ChatDouble) -> AsyncIterator[Callable[..., Rig]]:
    """An agent on the double, its settings changed as the test says; closed after it."""
    agents: list[LlmAgent] = []

    def make(**changes: Any) -> Rig:
        agents.append(LlmAgent(http, settings(double.url, **changes)))
        return Rig(double, agents[-1], Call())

    yield make
    for agent in agents:
        await agent.close()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


async def test_greeting_then_a_turn_whose_request_carries_the_history(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(greeting="Hello, this is the clinic.")
    rig.double.script = [Reply("Sure, what day suits you?"), Reply("Tuesday works.")]
    await rig.start()
    assert rig.call.said == ["Hello, this is the clinic."]
    await rig.user("I need an appointment")
    first = await rig.reply_spoken(1)
    assert first.text == "Sure, what day suits you?"
    await rig.user("Tuesday")
    second = await rig.reply_spoken(2)
    assert second.text == "Tuesday works."
    assert rig.messages(0) == [
        {"role": "system", "content": SYSTEM},
        {"role": "assistant", "content": "Hello, this is the clinic."},
        {"role": "user", "content": "I need an appointment"},
    ]
    assert rig.messages(1) == [
        *rig.messages(0),
        {"role": "assistant", "content": "Sure, what day suits you?"},
        {"role": "user", "content": "Tuesday"},
    ]
    request = rig.double.requests[1]
    assert request["model"] == "test-model" and request["stream"] is True
    assert [t["function"]["name"] for t in request["tools"]] == ["end_call", "send_dtmf"]


async def test_partial_and_empty_transcripts_start_no_turn(rig: Rig) -> None:
    await rig.start()
    await rig.agent.handle(rig.call, Transcript("I need", False, 0.0, 0.5))
    await rig.agent.handle(rig.call, Transcript("   ", True, 0.0, 0.5))
    await rig.user("hello")  # the one real turn
    await rig.reply_spoken(1)
    assert len(rig.double.requests) == 1
    assert rig.messages(0)[-1] == {"role": "user", "content": "hello"}


async def test_the_first_clause_is_spoken_before_the_reply_ends(rig: Rig) -> None:
    rig.double.script = [Reply("Hello there, how are you today? I am fine.",
                               pause_after_words=2)]
    await rig.start()
    await rig.user("hi")
    await rig.call.until(lambda: ("push", "Hello there, ") in rig.call.events)
    # The double holds the rest of the reply back until `resume`: it was not sent yet.
    await asyncio.wait_for(rig.double.paused.wait(), WAIT_S)
    stream = rig.call.streams[0]
    assert stream.pieces == ["Hello there, "] and not stream.ended
    rig.double.resume.set()
    await rig.reply_spoken(1)
    assert stream.pieces == ["Hello there, ", "how are you today? ", "I am fine."]
    assert [kind for kind, _ in rig.call.events] == ["stream", "push", "push", "push", "end"]


async def test_an_interrupted_reply_is_remembered_as_heard(rig: Rig) -> None:
    rig.double.script = [Reply("The weather is sunny today. It will rain tomorrow."),
                         Reply("Yes.")]
    await rig.start()
    await rig.user("weather?")
    spoken = await rig.reply_spoken(1)
    await rig.agent.handle(rig.call, Interrupted(1, spoken.text, "The weather is sunny",
                                                 1.2, 3.0))
    await rig.user("really?")
    await rig.reply_spoken(2)
    assert rig.messages(1)[-2:] == [
        {"role": "assistant", "content": "The weather is sunny"},
        {"role": "user", "content": "really?"},
    ]


async def test_an_interruption_while_streaming_cancels_the_reply(rig: Rig) -> None:
    rig.double.script = [Reply("Let me think, the answer is long and it goes on.",
                               pause_after_words=3), Reply("Okay.")]
    await rig.start()
    await rig.user("question")
    await rig.call.until(lambda: bool(rig.call.streams and rig.call.streams[0].pieces))
    assert rig.call.streams[0].text == "Let me think, "
    await rig.agent.handle(rig.call, Interrupted(1, "Let me think, ", "Let me", 0.4, 1.0))
    assert rig.call.streams[0].ended  # the utterance is closed, not left open
    rig.double.resume.set()
    await asyncio.wait_for(rig.double.aborted.wait(), WAIT_S)  # the request was closed
    await rig.user("go on")
    await rig.reply_spoken(2)
    assert rig.call.streams[0].text == "Let me think, "  # nothing after the interruption
    assert rig.messages(1)[-2:] == [{"role": "assistant", "content": "Let me"},
                                    {"role": "user", "content": "go on"}]


async def test_a_new_user_turn_cancels_the_running_reply(rig: Rig) -> None:
    rig.double.script = [Reply("First of all, there is a lot to say here.",
                               pause_after_words=3), Reply("Fine, tell me more.")]
    await rig.start()
    await rig.user("long question")
    await rig.call.until(lambda: bool(rig.call.streams and rig.call.streams[0].pieces))
    await rig.user("actually, never mind")
    second = await rig.reply_spoken(2)
    first = rig.call.streams[0]
    assert first.ended and first.text == "First of all, "
    assert second.text == "Fine, tell me more."
    # What had been handed to speech is the cancelled turn's history; not the unsaid rest.
    assert rig.messages(1)[-3:] == [
        {"role": "user", "content": "long question"},
        {"role": "assistant", "content": "First of all,"},
        {"role": "user", "content": "actually, never mind"},
    ]
    rig.double.resume.set()
    await asyncio.wait_for(rig.double.aborted.wait(), WAIT_S)
    assert first.text == "First of all, "


async def test_end_call_says_the_goodbye_and_hangs_up(rig: Rig) -> None:
    rig.double.script = [Reply("Glad I could help.", tool_calls=[("end_call",
                                                                  {"goodbye": "Bye now!"})])]
    await rig.start()
    await rig.user("that's all, thanks")
    await rig.call.until(lambda: bool(rig.call.hangups))
    assert rig.call.hangups == ["Bye now!"]
    assert rig.call.streams[0].text == "Glad I could help."
    # The reply's words were closed before the hang-up (so they play before the goodbye).
    assert rig.call.events.index(("end", "")) < rig.call.events.index(("hangup", "Bye now!"))
    await rig.user("wait, one more thing")  # the call is ending: no new turn
    assert len(rig.double.requests) == 1


async def test_end_call_without_a_goodbye_says_the_configured_one(rig: Rig) -> None:
    rig.double.script = [Reply(tool_calls=[("end_call", {})])]
    await rig.start()
    await rig.user("bye")
    await rig.call.until(lambda: bool(rig.call.hangups))
    assert rig.call.hangups == ["Goodbye!"]
    assert rig.call.streams == []  # a tool-call-only reply opens no utterance


async def test_send_dtmf_presses_the_keys_and_the_model_goes_on(rig: Rig) -> None:
    rig.double.script = [Reply(tool_calls=[("send_dtmf", {"digits": "12#"})]),
                         Reply("I pressed them.")]
    await rig.start()
    await rig.user("press one two hash")
    spoken = await rig.reply_spoken(1)
    assert rig.call.dtmf == ["12#"]
    assert spoken.text == "I pressed them."
    assert rig.messages(1)[-2:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0abc", "type": "function",
             "function": {"name": "send_dtmf", "arguments": '{"digits":"12#"}'}}]},
        {"role": "tool", "content": "ok: pressed 12#", "tool_call_id": "call_0abc"},
    ]


async def test_bad_dtmf_digits_are_refused_back_to_the_model(rig: Rig) -> None:
    rig.double.script = [Reply(tool_calls=[("send_dtmf", {"digits": "12x"})]),
                         Reply("Sorry, I cannot press that.")]
    await rig.start()
    await rig.user("press x")
    await rig.reply_spoken(1)
    assert rig.call.dtmf == []
    result = rig.messages(1)[-1]
    assert result["role"] == "tool" and result["content"].startswith("error: digits must be")


@pytest.mark.parametrize(("reply", "reason"), [
    (Reply(status=500), "status"),
    (Reply(stall=True), "timeout"),
    (Reply(malformed=True), "malformed"),
])
async def test_a_failing_provider_gets_the_fallback_once_and_the_next_turn_works(
        make_rig: Callable[..., Rig], reply: Reply, reason: str) -> None:
    rig = make_rig(llm_first_token_timeout_s=0.3)
    rig.double.script = [reply, Reply("Back again.")]
    await rig.start()
    with capture_logs() as logs:
        await rig.user("hello?")
        await rig.call.until(lambda: bool(rig.call.said))
    assert rig.call.said == [FALLBACK]
    assert rig.agent.fallbacks == {reason: 1}
    fallback_logs = [entry for entry in logs if entry["event"] == "llm_fallback"]
    assert [entry["reason"] for entry in fallback_logs] == [reason]
    assert "sk-secret-key" not in repr(logs)  # the key is in no log
    await rig.user("are you there?")
    assert (await rig.reply_spoken(1)).text == "Back again."
    assert rig.call.said == [FALLBACK]  # once for the failed turn, not again


@pytest.mark.parametrize(("key", "authorization"), [("", None),
                                                    ("sk-secret-key", "Bearer sk-secret-key")])
async def test_the_key_is_sent_only_when_there_is_one(
        make_rig: Callable[..., Rig], key: str, authorization: str | None) -> None:
    rig = make_rig(llm_api_key=key)
    await rig.user("hi")
    await rig.reply_spoken(1)
    assert rig.double.authorizations == [authorization]


async def test_call_ended_and_close_cancel_the_running_reply(rig: Rig) -> None:
    rig.double.script = [Reply("This goes on, and on, and on.", pause_after_words=3)]
    await rig.start()
    await rig.user("talk")
    await rig.call.until(lambda: bool(rig.call.streams and rig.call.streams[0].pieces))
    await rig.agent.handle(rig.call, CallEnded("caller hung up"))
    assert rig.call.streams[0].ended
    await rig.agent.close()
    rig.double.resume.set()
    await asyncio.wait_for(rig.double.aborted.wait(), WAIT_S)


async def test_a_reply_cut_by_the_request_deadline_keeps_what_was_said(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(llm_request_timeout_s=0.5)
    rig.double.script = [Reply("Well, this reply never finishes.", pause_after_words=1),
                         Reply("Here I am.")]
    await rig.start()
    await rig.user("hello")
    await rig.call.until(lambda: bool(rig.call.said))  # the deadline passed mid-reply
    assert rig.call.streams[0].ended and rig.call.streams[0].text == "Well, "
    assert rig.call.said == [FALLBACK]
    assert rig.agent.fallbacks == {"timeout": 1}
    await rig.user("hello?")
    await rig.reply_spoken(2)
    assert {"role": "assistant", "content": "Well,"} in rig.messages(1)
