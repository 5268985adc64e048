"""`python -m bridge call` against a real bridge (sim TTS): key presses and the agent's replies
each in their own row, a greeting cut by the caller's speech, --duration, and the exit status
when no audio came."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from bridge.audio.mulaw import ulaw2lin
from bridge.audio.resample import StreamResampler, float_to_pcm16, pcm16_to_float
from bridge.emulator import cli, runner
from bridge.emulator.call import CallEmulator
from bridge.settings import Settings
from tests.servers import DEFAULT_TOKEN, caller_speech, make_settings, running_bridge, running_tts

TOKEN_ENV = "TEST_CALL_CONTROL_TOKEN"


def sim_settings(sim_cache: Path) -> Settings:
    return make_settings(engine="sim", sim_cache_dir=str(sim_cache), sim_first_audio_s=0.02)


@pytest.fixture
async def short_bridge(sim_cache: Path) -> AsyncIterator[str]:
    """A bridge whose scripted agent greets and answers key 1 in a few words."""
    settings = sim_settings(sim_cache)
    settings = settings.replace(agent=dataclasses.replace(
        settings.agent, greeting="Hello.", dtmf={"1": "You pressed one."}))
    async with running_tts(settings) as tts, running_bridge(settings, tts_url=tts.url) as bridge:
        yield bridge.url


async def call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The command, in a thread: it runs its own event loop, as from a shell. Its output, less
    the bridge's log lines (in this process they go to stdout too; each begins with its
    timestamp's year)."""
    code = await asyncio.to_thread(cli.main, argv)
    out, err = capsys.readouterr()
    report = "\n".join(line for line in out.splitlines() if not line.startswith("20"))
    return code, report, err


async def test_each_key_its_reply_and_each_say_get_rows_of_their_own(
        short_bridge: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, DEFAULT_TOKEN)
    monkeypatch.setattr(runner, "KEY_REPLY_WAIT_S", 1.0)  # key 3 has no reply: wait less for it
    code, out, err = await call(["--url", short_bridge, "--dtmf", "31", "--say", "Hello there.",
                                 "--control-token-env", TOKEN_ENV, "--json"], capsys)
    assert code == 0, out + err
    report = json.loads(out)
    rows = report["utterances"]
    assert [u["label"] for u in rows] == ["greeting", "agent reply to key 1", "Hello there."]
    reply = rows[1]
    assert reply["first_audio_s"] is not None and reply["playout_done_s"] is not None
    # The reply is timed from the press of 1, which came after key 3 got no reply in 1 s.
    assert reply["requested_at"] > rows[0]["requested_at"] + rows[0]["playout_done_s"] + 0.9
    assert report["marks_echoed"] == 3 and report["ok"]


async def test_the_agents_reply_keeps_its_row_when_a_say_is_asked_while_it_plays(
        short_bridge: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Before, the emulator gave each utterance the next label asked for: the text asked while
    the agent's reply played was shown with the reply's timings, and the call hung up early."""
    async def talk(emulator: CallEmulator) -> str | None:
        await emulator.wait_for_utterances(1)
        await emulator.send_dtmf("1")
        await emulator.wait_for_utterances(2, begun=True)  # the reply is playing
        emulator.expect_utterance("Said over it.")
        if problem := await runner.request_say(http, short_bridge, emulator.call_sid,
                                               "Said over it.", DEFAULT_TOKEN):
            return problem
        await emulator.wait_for_utterances(3)
        return None

    async with aiohttp.ClientSession() as http:
        report = await runner.run_call(short_bridge, talk=talk, session=http, max_seconds=20)
    assert report.ok, report.error
    assert [u.label for u in report.utterances] == ["greeting", "agent reply to key 1",
                                                    "Said over it."]
    assert all(u.playout_done_s is not None for u in report.utterances)


def write_wav_22050(path: Path, mulaw: bytes) -> Path:
    """The caller's speech as a 22.05 kHz stereo WAV, as a desktop recorder saves it."""
    resampler = StreamResampler(8000, 22050)
    mono = pcm16_to_float(ulaw2lin(mulaw))
    pcm = float_to_pcm16(np.concatenate([resampler.process(mono), resampler.flush()]))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(22050)
        out.writeframes(np.repeat(pcm, 2).astype("<i2").tobytes())
    return path


async def test_a_greeting_cut_by_the_callers_speech_ends_it_and_the_call_goes_on(
        sim_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, a greeting cleared before its mark was sent was waited for until the timeout."""
    settings = sim_settings(sim_cache)  # the default greeting: long enough to speak over
    monkeypatch.setenv(TOKEN_ENV, DEFAULT_TOKEN)
    async with running_tts(settings) as tts, \
            running_bridge(settings, tts_url=tts.url) as bridge:
        speech = b"\xff" * 8000 + await caller_speech(
            tts, "Hello, I would like to talk to someone about my account please.")
        wav = write_wav_22050(tmp_path / "caller.wav", speech)
        code, out, err = await call(["--url", bridge.url, "--audio", str(wav), "--say", "Sure.",
                                     "--control-token-env", TOKEN_ENV, "--timeout", "20",
                                     "--json"], capsys)
    assert code == 0, out + err
    report = json.loads(out)
    greeting, said = report["utterances"]
    assert greeting["cleared"] and greeting["playout_done_s"] is None
    assert said["label"] == "Sure." and said["playout_done_s"] is not None
    assert report["duration_s"] < 10


async def test_duration_hangs_up_then_and_not_before(
        short_bridge: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await call(["--url", short_bridge, "--duration", "2.5", "--json"], capsys)
    assert code == 0, out + err
    report = json.loads(out)
    assert 2.5 <= report["duration_s"] < 3.5  # the greeting ended long before: the line held
    assert report["utterances"][0]["playout_done_s"] is not None


async def test_no_audio_from_the_bridge_exits_non_zero_and_says_so(
        sim_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = sim_settings(sim_cache)
    # No TTS: the greeting fails at once, its mark still closes it, no audio ever comes.
    settings = settings.replace(pool=dataclasses.replace(settings.pool, acquire_timeout_s=0.3))
    async with running_bridge(settings, tts_url="http://127.0.0.1:9") as bridge:
        code, out, err = await call(["--url", bridge.url], capsys)
    assert code == 1
    assert "audio received: 0.00 s" in out
    assert f"error: no audio arrived from the bridge at {bridge.url}" in err
