"""Whole calls on SILMA's public API (v2): the bridge configured for it (bridge-wide, and per
tenant through the settings API), an emulated Twilio call, real speech heard by the caller."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import numpy as np
import pytest

from bridge.audio.mulaw import ulaw2lin
from bridge.emulator.runner import run_call
from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from bridge.tts_server.engines.piper import PiperEngine
from tests.servers import (
    DEFAULT_TOKEN,
    caller_speech,
    make_settings,
    running_bridge,
    wait_ended,
)
from tests.speech import assert_is_speech
from tests.v2_double import cloud_double, piper_speech

LONG = ("Your order has shipped and it should arrive within three to five business days, "
        "although deliveries to remote areas can take a little longer than that, and if you "
        "need to change the address you can call us at <STAG_PN>92005455</STAG_PN> or reply "
        "to the confirmation email we sent you this morning with the new details included.")


@pytest.fixture(scope="module")
async def speech(piper_engine: PiperEngine) -> bytes:
    return await piper_speech(piper_engine, "Thank you for calling, how can I help you today?")


def heard(mulaw: bytes) -> None:
    assert_is_speech(ulaw2lin(mulaw).astype(np.float32) / 32768, 8000)


async def test_a_call_speaks_through_silma_cloud_configured_bridge_wide(speech: bytes) -> None:
    base = make_settings()
    settings = base.replace(silma=dataclasses.replace(
        base.silma, api="v2", api_key="sk-cloud", v2_model="silma-tts-v2-english",
        v2_voice="james", speed=1.0))
    async with cloud_double(speech) as double, \
            running_bridge(settings, tts_url=double.url) as bridge:
        report = await run_call(bridge.url, say=[LONG], max_seconds=60,
                                control_token=DEFAULT_TOKEN)
        assert report.ok, (report.error, report.protocol_violations)
        trace = await wait_ended(bridge, report.call_sid)
    heard(report.recording)
    texts = [r["text"] for r in double.requests]
    # Every request fits the API's limit, the hint reached the API whole, nothing was lost.
    assert all(len(text) <= 250 for text in texts)
    assert any("<STAG_PN>92005455</STAG_PN>" in text for text in texts)
    assert " ".join(texts).endswith(LONG)  # after the greeting, every word, in order
    assert {(r["model_id"], r["voice_id"], r["speed"]) for r in double.requests} == {
        ("silma-tts-v2-english", "james", 1.0)}
    assert set(double.keys_seen) == {"sk-cloud"}
    said = trace["utterance_traces"][-1]
    assert said["outcome"] == "played"
    for step in ("pool_wait_done", "request_sent", "first_audio", "synthesis_complete"):
        assert step in said["steps_ms"], step


async def test_a_tenant_chooses_silma_cloud_in_the_settings_api(speech: bytes) -> None:
    # The bridge itself speaks our protocol to a server that does not exist: only the tenant's
    # choice of the public API can make this call speak.
    base = make_settings()
    settings = base.replace(silma=dataclasses.replace(base.silma, allow_private_endpoints=True))
    async with cloud_double(speech, api_key="sk-tenant") as double, \
            running_bridge(settings, tts_url="http://127.0.0.1:9") as bridge:
        async with aiohttp.ClientSession() as http:
            async with http.put(
                f"{bridge.url}/api/users/default/silma",
                json={"mode": "v2", "api_endpoint": double.url, "api_key": "sk-tenant",
                      "v2_model": "silma-tts-v2-ksa", "v2_voice": "salman"},
                headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}) as response:
                body = await response.json()
                assert response.status == 200, body
                assert body["api_key"] != "sk-tenant" and "sk-tenant" not in str(body)
        report = await run_call(bridge.url, say=["Welcome back."], max_seconds=60,
                                control_token=DEFAULT_TOKEN)
        assert report.ok, (report.error, report.protocol_violations)
    heard(report.recording)
    assert {(r["model_id"], r["voice_id"]) for r in double.requests} == {
        ("silma-tts-v2-ksa", "salman")}
    assert set(double.keys_seen) == {"sk-tenant"}


async def test_barge_in_closes_the_v2_socket_mid_utterance(tts, speech: bytes) -> None:
    # The v2 protocol has no cancel: the bridge stops a reply the caller talked over by closing
    # its socket, so the server stops rendering it.
    stop = await caller_speech(tts, "Stop.")
    base = make_settings()
    settings = base.replace(
        silma=dataclasses.replace(base.silma, api="v2", api_key="sk-cloud"),
        agent=dataclasses.replace(base.agent, greeting="Thank you for calling the bridge. " * 4))
    async with cloud_double(speech, pace_s=0.2) as double, \
            running_bridge(settings, tts_url=double.url) as bridge, \
            aiohttp.ClientSession() as http:
        stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                               {"CallSid": "CAv2barge"}, None)
        call = TwilioCallEmulator(http, stream_url, call_sid="CAv2barge", parameters=params,
                                  caller_audio=b"\xff" * 8000 + stop)
        async with call:
            await call.connect(greetings=1)
            async with asyncio.timeout(15):
                await call.wait_cleared()
                await double.dropped.wait()  # the request being rendered was abandoned
            await call.stop()
        trace = await wait_ended(bridge, call.call_sid)
    assert trace["utterance_traces"][0]["outcome"] == "interrupted"


async def test_a_call_speaks_through_our_own_servers_v2_routes(tts) -> None:
    # The bridge's v2 client against our server's v2 (not a double): Piper speaking English.
    base = make_settings()
    settings = base.replace(silma=dataclasses.replace(
        base.silma, api="v2", v2_model="silma-tts-v2-english", v2_voice="default"))
    async with running_bridge(settings, tts_url=f"{tts.url}/tts/v2") as bridge:
        report = await run_call(bridge.url, say=["Call us at <STAG_PN>920</STAG_PN>, thanks."],
                                max_seconds=60, control_token=DEFAULT_TOKEN)
        assert report.ok, (report.error, report.protocol_violations)
        trace = await wait_ended(bridge, report.call_sid)
        stats = bridge.context.services.pools.stats()
    heard(report.recording)
    said = trace["utterance_traces"][-1]
    assert said["outcome"] == "played" and said["audio_seconds"] > 1.0
    assert [s["endpoint"] for s in stats] == [f"ws{tts.url.removeprefix('http')}/tts/v2/ws/stream"]
    assert stats[0]["requests_served"] >= 2 and stats[0]["server_health"]["status"] == "ok"
