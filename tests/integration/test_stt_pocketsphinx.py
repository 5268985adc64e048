"""The offline backend on real speech: sentences spoken by Piper, brought to 8 kHz mu-law as a
phone line carries them, fed frame by frame with the bridge's own voice detector marking the
speech, must come back as most of their words."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np
import pytest

from bridge.audio.mulaw import ULAW_SILENCE, lin2ulaw
from bridge.audio.resample import StreamResampler, float_to_pcm16
from bridge.audio.vad import VoiceDetector
from bridge.settings import SttSettings
from bridge.stt.base import Transcript
from bridge.stt.batch import SttError
from bridge.stt.factory import stt_backend
from bridge.stt.pocketsphinx_stt import PocketsphinxStt
from bridge.stt.utterance_core import Utterance as Speech
from bridge.tts_server.engines import Utterance
from bridge.tts_server.engines.piper import PiperEngine

# Sentences a caller might say that PocketSphinx's general English model gets right on Piper's
# voice: 163 of their 168 words over three runs when this test was written (Piper renders a
# sentence a little differently each run, and now and then one is misheard), decoding in
# 0.17-0.27 s per second of audio on 2 busy cores.
SENTENCES = [
    "I would like to book a table for two people tonight.",
    "Please call me back tomorrow morning.",
    "I want to cancel my order.",
    "Can you tell me the weather today?",
    "Thank you very much, goodbye.",
    "I need help with my credit card.",
    "I would like to speak to a person.",
    "No, I do not want that.",
]
MIN_OVERALL = 0.8  # of all the sentences' words, recognized
# Of each sentence's words, for all sentences but one: now and then (1 run in 8 or so) Piper
# renders one sentence in a way the model mishears most of.
MIN_EACH = 0.6
FRAME = 160


def words(text: str) -> list[str]:
    return [w.strip(".,?!").lower() for w in text.split()]


async def phone_audio(engine: PiperEngine, text: str) -> bytes:
    """`text` spoken by Piper as the caller's side of a call would carry it: 8 kHz mu-law."""
    resampler = StreamResampler(engine.sample_rate, 8000)
    parts = [resampler.process(chunk) async for chunk in engine.synthesize(Utterance(text))]
    parts.append(resampler.flush())
    return lin2ulaw(float_to_pcm16(np.concatenate(parts)))


async def test_piper_speech_comes_back_as_its_words(piper_engine: PiperEngine) -> None:
    async with aiohttp.ClientSession() as http:  # the factory's; this backend needs none
        backend = stt_backend(SttSettings(backend="pocketsphinx"), http)
    assert isinstance(backend, PocketsphinxStt)
    transcripts: asyncio.Queue[Transcript] = asyncio.Queue()
    failures: list[str] = []
    detector = VoiceDetector()
    t = backend.open("call-1", transcripts.put_nowait, failures.append)
    quiet = bytes([ULAW_SILENCE]) * 8000  # 1 s of an idle line between the sentences
    results: list[tuple[str, str, Transcript]] = []
    try:
        for sentence in SENTENCES:
            audio = quiet + await phone_audio(piper_engine, sentence) + quiet
            for i in range(0, len(audio), FRAME):
                frame = audio[i:i + FRAME]
                t.audio(frame)  # the session feeds the frame, then reports what it found
                for event in detector.push(frame):
                    if event.kind == "speech_start":
                        t.speech_started(event.at_s)
                    else:
                        t.speech_ended(event.at_s)
            got = await asyncio.wait_for(transcripts.get(), 30)
            results.append((sentence, got.text, got))
    finally:
        await t.aclose()
        await backend.aclose()
    assert not failures
    hits = total = poor = 0
    report = []
    for sentence, text, got in results:
        ref, heard = words(sentence), set(words(text))
        found = sum(w in heard for w in ref)
        hits, total = hits + found, total + len(ref)
        poor += found / len(ref) < MIN_EACH
        report.append(f"{sentence!r} -> {text!r} ({found}/{len(ref)})")
        assert got.final and got.start_s < got.end_s and got.latency_s >= 0
    assert poor <= 1 and hits / total >= MIN_OVERALL, "\n".join(report)
    # One sentence at a time, in order, each between its own start and end in the call.
    starts = [got.start_s for _, _, got in results]
    assert starts == sorted(starts)


async def test_decoding_is_faster_than_real_time(piper_engine: PiperEngine) -> None:
    backend = PocketsphinxStt()
    audio = await phone_audio(piper_engine, SENTENCES[0])
    try:
        await backend.recognize(Speech(b"", 0.0, 0.0))  # the model is loaded
        began = time.perf_counter()
        text = await backend.recognize(Speech(audio, 0.0, len(audio) / 8000))
        spent = time.perf_counter() - began
    finally:
        await backend.aclose()
    seconds = len(audio) / 8000
    assert "table" in words(text)
    # Not a benchmark: a bound that only a decoder gone wrong (or a machine far too slow for
    # this backend) crosses.
    assert spent < seconds, f"{spent:.2f} s to decode {seconds:.2f} s"


async def test_no_audio_is_no_words() -> None:
    backend = PocketsphinxStt()
    try:
        assert await backend.recognize(Speech(b"", 0.0, 0.0)) == ""
    finally:
        await backend.aclose()


async def test_decodes_past_the_bound_are_refused_as_overloaded() -> None:
    backend = PocketsphinxStt(workers=1, max_waiting=1)
    speech = Speech(b"\x10" * 8000, 0.0, 1.0)
    try:
        first = asyncio.ensure_future(backend.recognize(speech))
        await asyncio.sleep(0)  # it has taken the one place
        with pytest.raises(SttError) as refused:
            await backend.recognize(speech)
        assert refused.value.label == "overloaded"
        assert isinstance(await first, str)
        assert isinstance(await backend.recognize(speech), str)  # the place is free again
    finally:
        await backend.aclose()
