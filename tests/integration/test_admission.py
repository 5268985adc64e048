"""Admission at the answer webhooks, on the real bridge and TTS server: past capacity a call is
answered busy (counted, logged), never answered into silence; a freed place is taken again."""

from __future__ import annotations

import contextlib
import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from bridge.emulator.twilio_wire import TwilioCallEmulator, parse_twiml
from bridge.settings import Settings
from tests.servers import DEFAULT_TOKEN, RunningBridge, make_settings, running_bridge, wait_ended

OPERATOR = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}


def admitting(**admission: Any) -> Settings:
    settings = make_settings()
    return settings.replace(admission=dataclasses.replace(settings.admission, **admission))


async def twilio_answer(http: aiohttp.ClientSession, bridge: RunningBridge, call_sid: str
                        ) -> str:
    async with http.post(f"{bridge.url}/twilio/voice", data={"CallSid": call_sid}) as r:
        assert r.status == 200
        return await r.text()


async def plivo_answer(http: aiohttp.ClientSession, bridge: RunningBridge, call_uuid: str
                       ) -> str:
    async with http.post(f"{bridge.url}/plivo/answer", data={"CallUUID": call_uuid}) as r:
        assert r.status == 200
        return await r.text()


def verbs(document: str) -> list[tuple[str, dict[str, str]]]:
    return [(child.tag, dict(child.attrib)) for child in ET.fromstring(document)]


async def refused_count(http: aiohttp.ClientSession, bridge: RunningBridge, provider: str,
                        reason: str) -> float:
    async with http.get(f"{bridge.url}/metrics", headers=OPERATOR) as r:
        text = await r.text()
    needle = f'bridge_calls_refused_total{{provider="{provider}",reason="{reason}"}} '
    lines = [line for line in text.splitlines() if line.startswith(needle)]
    return float(lines[0].split()[-1]) if lines else 0.0


@contextlib.asynccontextmanager
async def live_call(http: aiohttp.ClientSession, twiml: str, call_sid: str
                    ) -> AsyncIterator[TwilioCallEmulator]:
    """The call `twiml` answered, connected and heard (so it is live on the bridge)."""
    stream_url, params = parse_twiml(twiml)
    async with TwilioCallEmulator(http, stream_url, call_sid=call_sid, parameters=params) as call:
        await call.connect()
        await call.wait_first_media()
        yield call


async def test_past_max_calls_twilio_and_plivo_get_busy_and_a_freed_place_is_taken(tts):
    async with running_bridge(admitting(max_calls=2), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        first = await twilio_answer(http, bridge, "CAadmit1")
        second = await twilio_answer(http, bridge, "CAadmit2")
        assert verbs(first)[0][0] == "Connect" and verbs(second)[0][0] == "Connect"
        # Both places are held from the webhook on, before either stream has come.
        assert verbs(await twilio_answer(http, bridge, "CAearly")) == [
            ("Reject", {"reason": "busy"})]
        async with live_call(http, first, "CAadmit1"), \
                live_call(http, second, "CAadmit2") as other:
            assert verbs(await twilio_answer(http, bridge, "CAadmit3")) == [
                ("Reject", {"reason": "busy"})]
            assert verbs(await plivo_answer(http, bridge, "plivo-admit-3")) == [
                ("Hangup", {"reason": "busy"})]
            assert await refused_count(http, bridge, "twilio", "max_calls") == 2
            assert await refused_count(http, bridge, "plivo", "max_calls") == 1
            # A carrier's retried webhook for a live call is answered as before.
            assert verbs(await twilio_answer(http, bridge, "CAadmit2"))[0][0] == "Connect"
            await other.stop()
            await wait_ended(bridge, "CAadmit2")
            assert verbs(await twilio_answer(http, bridge, "CAadmit4"))[0][0] == "Connect"
        assert bridge.context.registry.trace("CAadmit3") is None  # never answered at all


async def test_a_busy_message_is_spoken_then_the_call_hangs_up(tts):
    message = "All our lines are busy. Please call again in a few minutes."
    async with running_bridge(admitting(max_calls=1, busy_message=message),
                              tts_url=tts.url) as bridge, aiohttp.ClientSession() as http:
        assert verbs(await twilio_answer(http, bridge, "CAfirst"))[0][0] == "Connect"
        twiml = ET.fromstring(await twilio_answer(http, bridge, "CAsecond"))
        assert [c.tag for c in twiml] == ["Say", "Hangup"] and twiml[0].text == message
        plivo = ET.fromstring(await plivo_answer(http, bridge, "plivo-second"))
        assert [c.tag for c in plivo] == ["Speak", "Hangup"] and plivo[0].text == message


async def test_a_bound_the_tts_cannot_meet_refuses_new_calls_with_that_reason(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        twiml = await twilio_answer(http, bridge, "CAtimed")
        async with live_call(http, twiml, "CAtimed"):
            pass  # its greeting was an urgent piece: the server has timed one now
        services = bridge.context.services
        pool = await services.pools.pool_for(await services.targets.for_user("default"))
        measured = pool.capacity().first_audio_s
        assert measured is not None and 0 < measured < 3.0
    async with running_bridge(admitting(first_words_s=0.001), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        # What the server announces: 2 slots and what an urgent piece takes there, which no
        # call can start within 1 ms.
        services = bridge.context.services
        pool = await services.pools.pool_for(await services.targets.for_user("default"))
        await pool.check_health()
        announced = pool.capacity()
        assert announced.concurrency == tts.service.scheduler.concurrency
        assert announced.urgent_piece_s is not None and announced.urgent_piece_s > 0.001
        assert verbs(await twilio_answer(http, bridge, "CAbound")) == [
            ("Reject", {"reason": "busy"})]
        assert await refused_count(http, bridge, "twilio", "tts_capacity") == 1
