#!/usr/bin/env python3
"""One voice-agent turn's mouth-to-ear latency in the emulator (issue 21): the caller stops
speaking -> the agent's first audio reaches the caller, split into its parts; and barge-in:
the caller starts speaking over the agent -> the agent's audio stops at the caller.

All real parts on loopback, in this process: the bridge, our TTS server (Piper), the offline
speech to text (pocketsphinx), the LLM agent pointed at tests/openai_double.py (a loopback
stand-in for the provider: its first token costs what the loopback costs, not a model's time
to first token), and an emulated Twilio call whose caller speaks Piper's speech through the
line's 8 kHz mu-law. One call per turn; the bridge, the TTS server and the warm pool are
shared by all of them.

The trace and the emulator read the same monotonic clock, so each turn splits exactly:
  endpointing   the caller's last voiced audio -> the voice detector's endpoint (its hangover)
  stt           endpoint -> final transcript (the utterance decoded)
  llm first     final transcript -> the reply's first text (request + first token)
  llm clause    -> the first clause complete (the segmenter's first piece to the TTS)
  tts first     -> the TTS's first audio for it
  bridge        -> that audio received by the caller (encode, pace, send, loopback)
Barge-in, from the caller's first voiced audio to the clear received by the caller (the line
goes quiet then: a carrier drops what it had buffered): with `voice` the detector's start
decides; with `words` (2 words) the transcript does, i.e. the end of the words plus
endpointing plus decoding.

    .venv/bin/python scripts/measure_turn_latency.py [--turns 5]

Results: scripts/results/turn_latency.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.audio.mulaw import ulaw2lin
from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from bridge.settings import Settings
from bridge.tracing.trace import CallTrace
from tests.openai_double import ChatDouble, Reply, serving_chat
from tests.servers import (
    RunningBridge,
    caller_speech,
    make_settings,
    running_bridge,
    running_tts,
    wait_ended,
)

RESULTS = Path(__file__).resolve().parent / "results" / "turn_latency.txt"
SENTENCES = [
    "I would like to book a table for two people tonight.",
    "Please call me back tomorrow morning.",
    "I want to cancel my order.",
    "Can you tell me the weather today?",
    "I need help with my credit card.",
]
ANSWER = "Sure, I can help with that. Tell me a little more, please."
GREETING = ("Thank you for calling. This greeting goes on for a while, so that you can talk "
            "over it whenever you like. There is more to say after this sentence, and then "
            "some more, until the caller has had plenty of time to speak.")
INTERRUPTION = "Stop, please wait a moment."
LEAD_S = 1.0  # line silence before the caller speaks: the detector learns its noise floor
BARGE_AT_S = 3.0  # into the greeting
# A 10 ms frame louder than this is audible speech: Piper's clips open on a quiet fricative
# (-49..-37 dBFS) and fade out through -50 before their digital silence.
VOICED_DBFS = -50.0
SPLIT = ("endpointing", "stt", "llm first", "llm clause", "tts first", "bridge")
COLUMNS = (*SPLIT, "mouth-to-ear")
WIDTH = 13


def voiced_span(mulaw: bytes) -> tuple[float, float]:
    """Seconds into `mulaw` of its first and last voiced 10 ms frames (start, end)."""
    samples = ulaw2lin(mulaw).astype(np.float64) / 32768
    frames = samples[: samples.size // 80 * 80].reshape(-1, 80)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    voiced = np.flatnonzero(level > VOICED_DBFS)
    return voiced[0] * 0.01, (voiced[-1] + 1) * 0.01


def silence(seconds: float) -> bytes:
    return b"\xff" * int(8000 * seconds)


def settings_for(chat_url: str, *, barge_in: str = "voice", greeting: str = "") -> Settings:
    base = make_settings()
    return base.replace(
        agent=dataclasses.replace(base.agent, kind="llm", llm_base_url=chat_url,
                                  llm_api_key="sk-not-real", greeting=greeting),
        stt=dataclasses.replace(base.stt, backend="pocketsphinx", barge_in=barge_in,
                                barge_in_min_words=2))


async def start_call(http: aiohttp.ClientSession, bridge: RunningBridge, sid: str,
                     audio: bytes, greetings: int) -> TwilioCallEmulator:
    stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                           {"CallSid": sid}, None)
    call = TwilioCallEmulator(http, stream_url, call_sid=sid, parameters=params,
                              caller_audio=audio, record=False)
    await call.connect(greetings=greetings)
    return call


async def end_call(bridge: RunningBridge, call: TwilioCallEmulator) -> CallTrace:
    """Hang up a call still live; its trace (the object: steps on the monotonic clock)."""
    trace = bridge.context.registry.live[call.call_sid].trace
    await call.stop()
    await wait_ended(bridge, call.call_sid)
    return trace


def s_of(ns: int | None) -> float:
    """A trace timestamp (monotonic ns) as loop time (monotonic s)."""
    assert ns is not None, "a step of the turn is missing"
    return ns / 1e9


async def one_turn(http: aiohttp.ClientSession, bridge: RunningBridge, sid: str,
                   speech: bytes) -> dict[str, float]:
    _, speech_end = voiced_span(speech)
    call = await start_call(http, bridge, sid, silence(LEAD_S) + speech + silence(6.0),
                            greetings=0)
    answer = call.expect_utterance("answer")
    loop = asyncio.get_running_loop()
    t0 = loop.time() - call.now()  # the caller's audio clock: frame k leaves at t0 + k * 20 ms
    async with asyncio.timeout(40):
        await call.wait_for_marks(1)
    [turn] = (await end_call(bridge, call)).turns
    reply = turn.reply
    assert reply is not None and answer.first_audio_s is not None
    stopped = t0 + LEAD_S + speech_end
    heard = t0 + answer.requested_at + answer.first_audio_s
    marks = [stopped, s_of(turn.at("speech_ended")), s_of(turn.at("transcript_final")),
             s_of(reply.at("first_text")), s_of(reply.at("text_split")),
             s_of(reply.at("first_audio")), heard]
    split = {name: (b - a) * 1000 for name, a, b in zip(SPLIT, marks[:-1], marks[1:], strict=True)}
    return {**split, "mouth-to-ear": (heard - stopped) * 1000}


async def one_barge_in(http: aiohttp.ClientSession, bridge: RunningBridge, sid: str,
                       speech: bytes) -> float:
    onset, _ = voiced_span(speech)
    call = await start_call(http, bridge, sid, silence(BARGE_AT_S) + speech + silence(6.0),
                            greetings=1)
    async with asyncio.timeout(30):
        await call.wait_cleared()
    trace = await end_call(bridge, call)
    assert trace.barge_ins == 1, "the greeting was not cut exactly once"
    return (call.clear_times[0] - (BARGE_AT_S + onset)) * 1000


def median_row(label: str, rows: list[dict[str, float]]) -> str:
    cells = [f"{statistics.median(r[name] for r in rows):{WIDTH}.0f}"
             for name in COLUMNS]
    return f"{label:14}" + "".join(cells)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=5, help="calls per measurement")
    args = parser.parse_args()
    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    async with running_tts(make_settings()) as tts, aiohttp.ClientSession() as http:
        speeches = [await caller_speech(tts, s) for s in SENTENCES]
        interruption = await caller_speech(tts, INTERRUPTION)
        replies = [Reply(ANSWER) for _ in range(args.turns)]
        async with serving_chat(ChatDouble(script=replies)) as double, \
                running_bridge(settings_for(double.url), tts_url=tts.url) as bridge:
            rows = [await one_turn(http, bridge, f"CAturn{i}", speeches[i % len(speeches)])
                    for i in range(args.turns)]
        barge: dict[str, list[float]] = {}
        for mode in ("voice", "words"):
            async with serving_chat(ChatDouble()) as double, running_bridge(
                    settings_for(double.url, barge_in=mode, greeting=GREETING),
                    tts_url=tts.url) as bridge:
                barge[mode] = [await one_barge_in(http, bridge, f"CA{mode}{i}", interruption)
                               for i in range(args.turns)]

    out(f"One turn, caller stops speaking -> first agent audio at the caller, ms ({args.turns} "
        "calls; Piper TTS, pocketsphinx STT, LLM double on loopback)")
    out(f"{'':14}" + "".join(f"{name:>{WIDTH}}" for name in COLUMNS))
    for i, row in enumerate(rows):
        out(f"{'turn ' + str(i + 1):14}" + "".join(f"{row[n]:{WIDTH}.0f}" for n in COLUMNS))
    out(median_row("median", rows))
    out("(llm first is the loopback double's: a real provider adds its time to first token; the "
        "emulator sends each 20 ms frame at its start, where a carrier sends it once captured, "
        "so a phone adds that 20 ms, and the network's delay both ways)")
    out()
    out("Barge-in, caller starts speaking over the agent -> the agent's audio stops at the "
        "caller (clear received), ms")
    for mode, values in barge.items():
        label = "voice" if mode == "voice" else "words (>= 2)"
        out(f"{label:14}median {statistics.median(values):6.0f}   all: "
            + ", ".join(f"{v:.0f}" for v in values))
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
