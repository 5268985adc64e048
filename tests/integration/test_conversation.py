"""A conversation, not a playlist: barge-in, DTMF, remote agents and hang-up, on real servers."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from bridge.emulator.plivo_wire import PlivoCallEmulator, fetch_answer_xml
from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from tests.servers import (
    DEFAULT_TOKEN,
    caller_speech,
    make_settings,
    running_bridge,
    wait_ended,
)

LEAD_MS = 200
SPEECH_AT_S = 1.0  # the caller starts talking this far into the call


def long_greeting_settings():
    settings = make_settings()
    greeting = ("Thank you for calling the bridge. This greeting is long on purpose, so that "
                "you can interrupt it. It goes on for several sentences. And then some more.")
    return settings.replace(agent=dataclasses.replace(settings.agent, greeting=greeting),
                            call=dataclasses.replace(settings.call, lead_ms=LEAD_MS))


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
async def test_barge_in_clears_at_once_and_tells_what_was_heard(tts, provider):
    # One word: a clip with a pause inside would barge in twice (on the reply too).
    speech = await caller_speech(tts, "Stop.")
    silence = b"\xff" * int(8000 * SPEECH_AT_S)
    async with running_bridge(long_greeting_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        call: TwilioCallEmulator | PlivoCallEmulator
        if provider == "twilio":
            stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                                   {"CallSid": "CAbarge"}, None)
            call = TwilioCallEmulator(http, stream_url, call_sid="CAbarge", parameters=params,
                                      caller_audio=silence + speech)
        else:
            stream_url, headers = await fetch_answer_xml(http, f"{bridge.url}/plivo/answer",
                                                         {"CallUUID": "barge-uuid"}, None)
            call = PlivoCallEmulator(http, stream_url, call_sid="barge-uuid",
                                     parameters=headers, caller_audio=silence + speech)
        async with call:
            await call.connect(greetings=1)
            async with asyncio.timeout(10):
                await call.wait_cleared()
            clear_at = call.clear_times[0]
            bytes_at_clear = call.bytes_received
            # The caller presses 1 and hears the reply: everything after the clear is the reply.
            await call.send_dtmf("1")
            async with asyncio.timeout(20):
                await call.wait_for_marks(call.marks_settled + 1)
            await call.stop()
        trace = await wait_ended(bridge, call.call_sid)
    reply = trace["utterance_traces"][1]
    assert reply["outcome"] == "played"
    assert call.bytes_received - bytes_at_clear == round(reply["audio_seconds"] * 8000)

    latency_ms = (clear_at - SPEECH_AT_S) * 1000
    window_ms = 30  # the detector's own decision window (VoiceDetector.window_s)
    print(f"{provider}: speech onset -> clear received: {latency_ms:.0f} ms")
    assert 0 < latency_ms < 100 + window_ms + 60  # + the speech clip's own lead-in silence
    greeting = trace["utterance_traces"][0]
    assert greeting["outcome"] == "interrupted"
    assert "interrupted" in greeting["steps_ms"]
    assert 0 < greeting["played_seconds"] < greeting["audio_seconds"]
    assert trace["barge_ins"] == 1


async def test_remote_agent_round_trip_with_streamed_say_dtmf_and_hangup(tts):
    events: list[dict] = []
    got_dtmf = asyncio.Event()
    got_audio = asyncio.Event()

    async def agent(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                assert len(msg.data) == 320  # 20 ms of 16-bit PCM at 8 kHz
                got_audio.set()
                continue
            event = json.loads(msg.data)
            events.append(event)
            if event["type"] == "call_started":
                await ws.send_json({"type": "audio", "enabled": True})
                await ws.send_json({"type": "say", "text": "Hello from the", "partial": True})
                await ws.send_json({"type": "say", "text": " remote agent, ", "partial": True})
                await ws.send_json({"type": "say", "text": "welcome.", "partial": False})
                await ws.send_json({"type": "nonsense"})  # logged and skipped
            elif event["type"] == "dtmf":
                got_dtmf.set()
                await ws.send_json({"type": "hangup", "goodbye": "Bye now, friend."})
        return ws

    app = web.Application()
    app.router.add_get("/agent", agent)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    agent_url = f"ws://127.0.0.1:{runner.addresses[0][1]}/agent"
    settings = make_settings()
    settings = settings.replace(agent=dataclasses.replace(settings.agent, kind="remote",
                                                          remote_url=agent_url))
    try:
        async with running_bridge(settings, tts_url=tts.url) as bridge, \
                aiohttp.ClientSession() as http:
            stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                                   {"CallSid": "CAremote"}, None)
            call = TwilioCallEmulator(http, stream_url, call_sid="CAremote", parameters=params)
            await call.connect(greetings=1)
            async with asyncio.timeout(20):
                await call.wait_for_marks(1)
                await got_audio.wait()
                await call.send_dtmf("5")
                await got_dtmf.wait()
                await call.wait_closed()  # the agent hung up after its goodbye played
            trace = await wait_ended(bridge, "CAremote")
    finally:
        await runner.cleanup()

    kinds = [e["type"] for e in events]
    assert kinds[0] == "call_started" and "dtmf" in kinds
    assert "playback_finished" in kinds
    texts = [u["text"] for u in trace["utterance_traces"]]
    assert texts == ["Hello from the remote agent, welcome.", "Bye now, friend."]
    assert [u["outcome"] for u in trace["utterance_traces"]] == ["played", "played"]
    assert trace["end_reason"] == "hangup"
    assert kinds[-1] == "call_ended"


OWNER = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}  # the calls' owner: the default user


async def test_hangup_endpoint_with_provider_rest_stand_in(tts):
    """POST /calls/{id}/hangup says goodbye, waits for its mark, then ends the call through the
    Twilio SDK (pointed at a local stand-in for Twilio's REST API); a second hang-up is a no-op."""
    rest_calls: list[tuple[str, str, dict]] = []

    async def twilio_calls(request: web.Request) -> web.Response:
        form = dict(await request.post())
        rest_calls.append((request.method, request.path, form))
        return web.json_response({"sid": request.match_info["sid"], "status": "completed"})

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{sid}.json", twilio_calls)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    settings = make_settings()
    settings = settings.replace(twilio=dataclasses.replace(
        settings.twilio, account_sid="ACtest", auth_token="tok-not-real",
        api_base_url=f"http://127.0.0.1:{runner.addresses[0][1]}"))
    try:
        async with running_bridge(settings, tts_url=tts.url) as bridge, \
                aiohttp.ClientSession() as http:
            stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                                   {"CallSid": "CAhangup"}, "tok-not-real")
            call = TwilioCallEmulator(http, stream_url, call_sid="CAhangup", parameters=params,
                                      auth_token="tok-not-real")
            await call.connect(greetings=1)
            async with asyncio.timeout(20):
                await call.wait_for_marks(1)
                async with http.post(f"{bridge.url}/calls/CAhangup/hangup",
                                     json={"goodbye": "Goodbye."}, headers=OWNER) as r:
                    assert r.status == 200
                await call.wait_closed()
            async with http.post(f"{bridge.url}/calls/CAhangup/hangup", headers=OWNER) as r:
                assert r.status == 200 and (await r.json())["status"] == "ended"
            trace = await wait_ended(bridge, "CAhangup")
    finally:
        await runner.cleanup()
    call_id = "CAhangup"
    assert call.marks_echoed == 2  # the goodbye was heard before the line closed
    assert rest_calls == [("POST", f"/2010-04-01/Accounts/ACtest/Calls/{call_id}.json",
                           {"Status": "completed"})]
    assert trace["end_reason"] == "hangup"
    assert trace["utterance_traces"][-1]["text"] == "Goodbye."
