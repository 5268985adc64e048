"""The emulator's call runner with a talk of the caller's own, as the load test runs it."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import pytest

from bridge.emulator.call import CallEmulator
from bridge.emulator.clock import MediaClock
from bridge.emulator.runner import run_call
from bridge.emulator.wire import CallFailed
from tests.servers import make_settings, running_bridge


async def test_a_talk_of_its_own_runs_on_the_open_call_and_its_reason_ends_it() -> None:
    settings = make_settings()
    # No TTS: the greeting fails at once, its mark still closes it.
    settings = settings.replace(pool=dataclasses.replace(settings.pool, acquire_timeout_s=0.3))
    talked: list[CallEmulator] = []

    async def talk(emulator: CallEmulator) -> str | None:
        talked.append(emulator)
        await emulator.wait_for_marks(1)
        return "the caller had heard enough"

    clock = MediaClock()
    async with running_bridge(settings, tts_url="http://127.0.0.1:9") as bridge, \
            aiohttp.ClientSession() as http:
        report = await run_call(bridge.url, talk=talk, max_seconds=None, setup_seconds=15,
                                session=http, media_clock=clock, record=False)
        assert not http.closed  # a shared session stays the caller's
    assert [e.call_sid for e in talked] == [report.call_sid]
    assert report.marks_echoed == 1
    assert report.error == "the caller had heard enough"
    assert talked[0].closed  # hung up once the talk returned


async def test_setup_is_bounded_by_setup_seconds() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # holds the webhook request until the caller gives up

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(CallFailed, match=r"no call set up within 0\.2 s"):
            await run_call(f"http://127.0.0.1:{port}", max_seconds=None, setup_seconds=0.2)


async def test_say_and_talk_exclude_each_other() -> None:
    async def talk(emulator: CallEmulator) -> None:
        return None

    with pytest.raises(ValueError, match="not both"):
        await run_call("http://127.0.0.1:9", say=["hello"], talk=talk)
