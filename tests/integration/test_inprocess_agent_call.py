"""An in-process agent through the whole bridge: BRIDGE_AGENT_KIND names the example module,
imported at the start; the caller hears its streamed greeting, its DTMF tones and its goodbye,
after which it hangs up."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp

from bridge.audio.dtmf import dtmf_tones
from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from tests.servers import make_settings, running_bridge, wait_ended


async def test_the_echo_example_greets_plays_tones_and_hangs_up(tts):
    base = make_settings()
    settings = base.replace(agent=dataclasses.replace(
        base.agent, kind="python:bridge.agent.examples.echo:create"))
    async with running_bridge(settings, tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                               {"CallSid": "CAecho"}, None)
        call = TwilioCallEmulator(http, stream_url, call_sid="CAecho", parameters=params)
        await call.connect(greetings=1)
        async with asyncio.timeout(30):
            await call.wait_for_marks(1)
            await call.send_dtmf("#")
            await call.wait_for_marks(2)
            await call.send_dtmf("9")
            await call.wait_closed()  # the agent hung up once its goodbye was heard
        trace = await wait_ended(bridge, "CAecho")
    texts = [u["text"] for u in trace["utterance_traces"]]
    assert texts == ["Hello, this is an agent in the bridge. Press a key, or say something.",
                     "", "Goodbye from the echo agent."]
    assert [u["outcome"] for u in trace["utterance_traces"]] == ["played"] * 3
    assert dtmf_tones("123") in bytes(call.recording)
    assert trace["end_reason"] == "hangup"
