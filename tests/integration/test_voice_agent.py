"""The whole voice loop with real parts: the bridge on loopback speaking through our TTS server
(Piper), the offline speech to text (pocketsphinx), the LLM agent pointed at an OpenAI-compatible
double, and an emulated Twilio call whose caller speaks real speech (Piper's, as a phone line
carries it). The caller's words must reach the model, its answer must be heard as speech, and
the trace must split the turn; with barge-in by words, a cough does not cut the agent off and
words do."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp
import numpy as np

from bridge.audio.mulaw import ulaw2lin
from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from bridge.settings import Settings
from tests.openai_double import ChatDouble, Reply, serving_chat
from tests.servers import caller_speech, make_settings, running_bridge, wait_ended
from tests.speech import assert_is_speech

SAID = "I would like to book a table for two people tonight."
ANSWER = "Of course, a table for two tonight. What time would you like to come?"
LEAD_S = 1.0  # silence before the caller speaks (the voice detector learns the line's floor)


def voice_agent_settings(chat_url: str, **stt: Any) -> Settings:
    base = make_settings()
    return base.replace(
        agent=dataclasses.replace(base.agent, kind="llm", llm_base_url=chat_url,
                                  llm_api_key="sk-test-not-real", greeting=""),
        stt=dataclasses.replace(base.stt, backend="pocketsphinx", **stt))


def silence(seconds: float) -> bytes:
    return b"\xff" * int(8000 * seconds)


def user_texts(double: ChatDouble) -> list[str]:
    return [m["content"] for r in double.requests for m in r["messages"]
            if m["role"] == "user"]


async def place_call(http: aiohttp.ClientSession, bridge_url: str, sid: str,
                     audio: bytes) -> TwilioCallEmulator:
    stream_url, params = await fetch_twiml(http, f"{bridge_url}/twilio/voice",
                                           {"CallSid": sid}, None)
    return TwilioCallEmulator(http, stream_url, call_sid=sid, parameters=params,
                              caller_audio=audio)


async def test_the_caller_speaks_the_model_hears_the_words_and_its_answer_is_heard(tts):
    speech = await caller_speech(tts, SAID)
    async with serving_chat(ChatDouble(script=[Reply(ANSWER)])) as double, \
            running_bridge(voice_agent_settings(double.url), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        call = await place_call(http, bridge.url, "CAvoice",
                                silence(LEAD_S) + speech + silence(8.0))
        async with call:
            await call.connect(greetings=0)
            call.expect_utterance("answer")
            async with asyncio.timeout(40):
                await call.wait_for_marks(1)  # the whole answer played
        trace = await wait_ended(bridge, call.call_sid)

    [heard] = user_texts(double)  # one request, carrying what the caller said
    words = {w.strip(".,?!").lower() for w in heard.split()}
    assert len(words & {"book", "table", "two", "people", "tonight"}) >= 4, heard
    answer = trace["utterance_traces"][0]
    assert answer["text"] == ANSWER and answer["outcome"] == "played"
    assert_is_speech(ulaw2lin(call.recording).astype(np.float32) / 32768, 8000)
    assert call.bytes_received == round(answer["audio_seconds"] * 8000)

    [turn] = trace["turn_traces"]
    assert turn["reply_utterance"] == answer["index"] and turn["words"] >= 6
    split = ("stt_ms", "agent_ms", "first_piece_ms", "tts_first_audio_ms", "bridge_ms")
    assert all(turn[name] is not None and turn[name] >= 0 for name in split), turn
    assert abs(turn["turn_ms"] - sum(turn[name] for name in split)) < 0.01  # the whole turn
    print("turn:", {name: turn[name] for name in (*split, "turn_ms")})


async def test_barge_in_by_words_ignores_a_cough_and_stops_for_words(tts):
    greeting = ("Thank you for calling. This greeting goes on for a while, so that you can "
                "talk over it. There is more to say after this sentence. And then some more, "
                "until the caller has had time to speak.")
    words = await caller_speech(tts, "Stop, please wait a moment.")
    rng = np.random.default_rng(3)
    cough = (rng.integers(0, 256, 2400, dtype=np.uint8)).tobytes()  # 0.3 s of a loud noise
    cough_at, words_at = 1.5, 4.0
    audio = (silence(cough_at) + cough + silence(words_at - cough_at - 0.3) + words
             + silence(8.0))
    async with serving_chat(ChatDouble(script=[Reply("Sure, I will wait.")])) as double:
        settings = voice_agent_settings(double.url, barge_in="words", barge_in_min_words=2)
        settings = settings.replace(agent=dataclasses.replace(settings.agent, greeting=greeting))
        async with running_bridge(settings, tts_url=tts.url) as bridge, \
                aiohttp.ClientSession() as http:
            call = await place_call(http, bridge.url, "CAwords", audio)
            async with call:
                await call.connect(greetings=1)
                async with asyncio.timeout(30):
                    await call.wait_cleared()
                clear_at = call.clear_times[0]
                call.expect_utterance("answer")
                async with asyncio.timeout(30):
                    await call.wait_for_marks(call.marks_settled + 1)  # the answer played
            trace = await wait_ended(bridge, call.call_sid)

    print(f"words at {words_at:.2f} s, clear at {clear_at:.2f} s")
    assert clear_at > words_at  # the cough at 1.5 s did not cut the greeting
    first = trace["utterance_traces"][0]
    assert first["text"] == greeting and first["outcome"] == "interrupted"
    assert trace["barge_ins"] == 1
    assert any("wait" in text.lower() for text in user_texts(double))
    assert trace["utterance_traces"][1]["outcome"] == "played"
