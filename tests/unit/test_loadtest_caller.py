"""The load test's caller (scripts/loadtest_lib/caller.py) against a websockets server playing
the bridge on loopback: the handshake and frames are RFC 6455's, caller audio flows every
20 ms, marks are echoed when their audio has played, gaps count as underruns, clears settle
marks as the provider does."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from loadtest_lib.caller import Caller
from loadtest_lib.media_frames import caller_payloads
from loadtest_lib.shared_clock import SharedClock

from bridge.emulator.plivo_wire import PlivoWire
from bridge.emulator.twilio_wire import TwilioWire
from bridge.emulator.wire import Wire
from bridge.telephony.plivo import PlivoCodec
from bridge.telephony.twilio import TwilioCodec

Script = Callable[[ServerConnection, TwilioCodec | PlivoCodec, list[dict]], Awaitable[None]]
HALF_SECOND = b"\x10" * 4000


async def _start(ws: ServerConnection, provider: str) -> tuple[TwilioCodec | PlivoCodec,
                                                                list[dict]]:
    """Read up to the start message; the codec the bridge would answer with."""
    seen: list[dict] = []
    while not seen or seen[-1].get("event") != "start":
        seen.append(orjson.loads(await ws.recv()))
    start = seen[-1]
    if provider == "twilio":
        return TwilioCodec(start["streamSid"]), seen
    return PlivoCodec(start["start"]["streamId"]), seen


async def _inbound(ws: ServerConnection, into: list[dict]) -> None:
    async for text in ws:
        into.append(orjson.loads(text))


@pytest.fixture
async def bridge_double() -> AsyncIterator[Callable[[str, Script], Awaitable[tuple[Caller,
                                                                                  list[dict]]]]]:
    servers = []

    async def place(provider: str, script: Script) -> tuple[Caller, list[dict]]:
        received: list[dict] = []

        async def handler(ws: ServerConnection) -> None:
            codec, seen = await _start(ws, provider)
            received.extend(seen)
            reader = asyncio.create_task(_inbound(ws, received))
            try:
                await script(ws, codec, received)
            finally:
                reader.cancel()

        server = await serve(handler, "127.0.0.1", 0, compression=None)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        wire: Wire = TwilioWire(None, None, None) if provider == "twilio" else PlivoWire(
            None, None, {"userid": "u1"})
        caller = Caller(wire, caller_payloads(b"\x7f" * 1600), SharedClock())
        await caller.connect(f"ws://127.0.0.1:{port}/{provider}/stream/u1/token")
        return caller, received

    yield place
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
async def test_audio_then_a_mark_is_played_out_and_echoed(bridge_double, provider: str) -> None:
    async def script(ws: ServerConnection, codec, received) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.1)
        for _ in range(2):
            await ws.send(codec.media(HALF_SECOND))  # 1 s in all
        await ws.send(codec.mark("greeting-1"))
        await asyncio.sleep(1.5)

    caller, received = await bridge_double(provider, script)
    started = time.perf_counter()
    async with asyncio.timeout(3):
        await caller.wait_for_marks(1)
    waited = time.perf_counter() - started
    await caller.stop()
    report = caller.report()
    greeting = report.utterances[0]
    assert 0.09 < greeting.first_audio_s < 0.3  # type: ignore[operator]
    assert 1.0 < greeting.playout_done_s < 1.3 and 1.0 < waited < 1.35  # type: ignore[operator]
    assert report.underruns == 0 and report.protocol_violations == [] and report.error is None
    assert (report.frames_received, report.bytes_received, report.marks_echoed) == (2, 8000, 1)
    media = [m for m in received if m["event"] == "media"]
    assert 40 <= len(media) <= 80  # ~50 a second for the ~1.1 s the call lasted
    assert [int(m["sequenceNumber"]) for m in media] == list(
        range(int(media[0]["sequenceNumber"]), int(media[0]["sequenceNumber"]) + len(media)))
    echoed = [m for m in received if m["event"] in ("mark", "playedStream")]
    assert len(echoed) == 1 and "greeting-1" in orjson.dumps(echoed[0]).decode()


async def test_a_gap_inside_an_utterance_is_an_underrun(bridge_double) -> None:
    async def script(ws: ServerConnection, codec, received) -> None:  # type: ignore[no-untyped-def]
        await ws.send(codec.media(b"\x10" * 800))  # 0.1 s, then 0.3 s of nothing
        await asyncio.sleep(0.4)
        await ws.send(codec.media(b"\x10" * 800))
        await ws.send(codec.mark("m"))
        await asyncio.sleep(0.5)

    caller, _ = await bridge_double("twilio", script)
    async with asyncio.timeout(3):
        await caller.wait_for_marks(1)
    await caller.stop()
    assert caller.report().underruns == 1
    assert 0.25 < caller.report().underrun_seconds < 0.4


@pytest.mark.parametrize(("provider", "echoes"), [("twilio", 1), ("plivo", 0)])
async def test_a_clear_settles_the_pending_mark_as_the_provider_does(
    bridge_double, provider: str, echoes: int
) -> None:
    async def script(ws: ServerConnection, codec, received) -> None:  # type: ignore[no-untyped-def]
        await ws.send(codec.media(HALF_SECOND))
        await ws.send(codec.mark("m"))
        await asyncio.sleep(0.1)
        await ws.send(codec.clear())
        await asyncio.sleep(0.5)

    caller, received = await bridge_double(provider, script)
    async with asyncio.timeout(2):
        await caller.wait_for_marks(1)
    await asyncio.sleep(0.05)
    await caller.stop()
    report = caller.report()
    assert report.marks_echoed == echoes and report.utterances[0].cleared
    assert len(caller.clear_times) == 1
    if provider == "plivo":
        assert any(m["event"] == "clearedAudio" for m in received)


async def test_the_bridge_closing_the_stream_is_the_calls_end(bridge_double) -> None:
    async def script(ws: ServerConnection, codec, received) -> None:  # type: ignore[no-untyped-def]
        await ws.close(1011, "gone")

    caller, _ = await bridge_double("twilio", script)
    with pytest.raises(Exception, match="code 1011"):
        async with asyncio.timeout(2):
            await caller.wait_for_marks(1)
    await asyncio.sleep(0.1)  # the close handshake's end: the connection is gone
    assert caller.closed
