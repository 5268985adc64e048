"""A whole Twilio call through the real bridge and the real TTS server (piper) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3

import aiohttp
import numpy as np
import pytest

from bridge.audio.mulaw import ulaw2lin
from bridge.emulator.runner import run_call
from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from bridge.telephony.twilio import compute_signature
from tests.servers import DEFAULT_TOKEN, make_settings, running_bridge, wait_ended
from tests.speech import assert_is_speech

CALL_TASK_PREFIXES = ("sender-", "speaker-", "speak-")
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}


def call_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(CALL_TASK_PREFIXES)
            and not t.done()]


def assert_heard_speech(mulaw: bytes) -> None:
    pcm = ulaw2lin(mulaw).astype(np.float32) / 32768
    assert_is_speech(pcm, 8000)


@pytest.mark.parametrize("request_ulaw", [True, False], ids=["server-ulaw", "seed-f32-24k"])
async def test_call_hears_greeting_and_say_with_complete_trace(tts, request_ulaw):
    settings = make_settings()
    settings = settings.replace(silma=dataclasses.replace(settings.silma,
                                                          request_ulaw=request_ulaw))
    async with running_bridge(settings, tts_url=tts.url) as bridge:
        report = await run_call(bridge.url, say=["Thank you for calling. Goodbye for now."],
                                max_seconds=40, control_token=DEFAULT_TOKEN)
        assert report.ok, (report.error, report.protocol_violations)
        assert report.marks_echoed == 2
        assert report.bytes_received % 160 == 0
        assert report.audio_seconds > 3
        assert_heard_speech(report.recording)

        await wait_ended(bridge, report.call_sid)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{bridge.url}/calls/{report.call_sid}/trace",
                                headers=AUTH) as response:
                assert response.status == 200
                trace = await response.json()
    assert trace["live"] is False
    assert trace["end_reason"] == "stop"
    assert "webhook_answered" in trace["steps_ms"]
    assert len(trace["utterance_traces"]) == 2
    for utt in trace["utterance_traces"]:
        assert utt["outcome"] == "played"
        for step in ("text_received", "text_split", "pool_wait_done", "request_sent",
                     "first_audio", "synthesis_complete", "first_frame_sent",
                     "last_frame_sent", "playout_finished"):
            assert step in utt["steps_ms"], step
        assert 0 <= utt["bridge_overhead_ms"] < utt["time_to_first_audio_ms"]
        assert utt["max_lead_ms"] <= settings.call.lead_ms + 1


async def test_abrupt_close_leaves_no_task_behind(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                               {"CallSid": "CAabrupt"}, None)
        call = TwilioCallEmulator(http, stream_url, call_sid="CAabrupt", parameters=params)
        await call.connect(greetings=0)
        # Speaking is under way when the socket drops.
        await call.wait_first_media()
        assert call_tasks()
        await call.abort()
        trace = await wait_ended(bridge, "CAabrupt")
        assert "CAabrupt" not in bridge.context.registry.live
        assert call_tasks() == []
        assert trace["end_reason"] == "socket closed"


async def test_malformed_messages_are_counted_and_the_call_goes_on(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                               {"CallSid": "CAbad"}, None)
        async with TwilioCallEmulator(http, stream_url, call_sid="CAbad",
                                      parameters=params) as call:
            await call.connect(greetings=0)
            await call.send_raw("{not json")
            await call.send_raw('{"event":"media","streamSid":"MZ1","media":{"payload":"%%%"}}')
            await call.send_raw('{"event":"teleport"}')
            await call.wait_for_marks(1)  # the greeting still plays to the end
            await call.stop()
        trace = await wait_ended(bridge, "CAbad")
    assert trace["malformed_messages"] == 3
    assert trace["utterance_traces"][0]["outcome"] == "played"


async def test_dtmf_gets_the_scripted_reply(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                               {"CallSid": "CAdtmf"}, None)
        async with TwilioCallEmulator(http, stream_url, call_sid="CAdtmf",
                                      parameters=params) as call:
            await call.connect(greetings=1)
            await call.send_dtmf("2")
            await call.wait_for_marks(2)
            await call.stop()
        trace = await wait_ended(bridge, "CAdtmf")
    assert trace["dtmf"] == ["2"]
    assert trace["utterance_traces"][1]["text"].startswith("Why did the packet")


async def test_say_on_unknown_call_is_404_and_bad_body_400(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        async with http.post(f"{bridge.url}/calls/CAnope/say", json={"text": "hi"},
                             headers=AUTH) as r:
            assert r.status == 404
        async with http.get(f"{bridge.url}/calls", headers=AUTH) as r:
            assert (await r.json())["live"] == []


async def test_signed_webhook_and_upgrade_enforced_when_token_configured(tts):
    token = "test-auth-token-not-real"
    settings = make_settings()
    settings = settings.replace(twilio=dataclasses.replace(settings.twilio, auth_token=token))
    async with running_bridge(settings, tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        form = {"CallSid": "CAsigned", "AccountSid": "ACx"}
        async with http.post(f"{bridge.url}/twilio/voice", data=form) as r:
            assert r.status == 403
        bad = compute_signature("wrong-token", f"{bridge.url}/twilio/voice", form)
        async with http.post(f"{bridge.url}/twilio/voice", data=form,
                             headers={"X-Twilio-Signature": bad}) as r:
            assert r.status == 403
        ws_url = bridge.url.replace("http", "ws") + "/twilio/stream"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url)
        assert refused.value.status == 403
        assert bridge.context.registry.live == {}

        report = await run_call(bridge.url, auth_token=token, max_seconds=30)
        assert report.ok, (report.error, report.protocol_violations)
        assert report.marks_echoed == 1


async def test_dead_tts_server_degrades_the_call_without_crashing():
    settings = make_settings()
    settings = settings.replace(pool=dataclasses.replace(settings.pool, acquire_timeout_s=0.3))
    async with running_bridge(settings, tts_url="http://127.0.0.1:9") as bridge:
        report = await run_call(bridge.url, max_seconds=15)
        # The greeting failed, yet the call ran: its mark still closes the (silent) utterance.
        assert report.ok, (report.error, report.protocol_violations)
        assert report.marks_echoed == 1
        assert report.bytes_received == 0
        utt = (await wait_ended(bridge, report.call_sid))["utterance_traces"][0]
    assert utt["outcome"] == "failed"
    assert "unreachable" in utt["error"] or "connect" in utt["error"]
    assert utt["fallback"] is True


async def test_a_call_whose_tts_cannot_be_opened_ends_with_the_reason(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        # A broken store (here: a table gone) fails the lookup of the caller's TTS settings.
        path = bridge.context.settings.database_url.split("///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("DROP TABLE silma_credentials")
        report = await run_call(bridge.url, max_seconds=15)
        trace = await wait_ended(bridge, report.call_sid)
        async with http.get(f"{bridge.url}/health") as health:
            assert health.status == 200  # the bridge itself goes on
    assert trace["end_reason"] == "tts unavailable (OperationalError)"
    assert report.error is not None and "closed the media stream" in report.error
    assert report.bytes_received == 0


async def test_server_shutdown_ends_live_calls_cleanly(tts):
    async with aiohttp.ClientSession() as http:
        async with running_bridge(make_settings(), tts_url=tts.url) as bridge:
            stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                                   {"CallSid": "CAshut"}, None)
            call = TwilioCallEmulator(http, stream_url, call_sid="CAshut", parameters=params)
            await call.connect(greetings=0)
            await call.wait_first_media()
            registry = bridge.context.registry
        # The bridge has shut down around the live call.
        assert registry.live == {}
        trace = registry.trace("CAshut")
        assert trace is not None
        assert trace["end_reason"] in {"socket closed", "server shutdown"}
        assert call_tasks() == []
        await call.wait_closed()


async def test_metrics_and_health_targets_after_a_real_call(tts):
    from prometheus_client.parser import text_string_to_metric_families

    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        report = await run_call(bridge.url, max_seconds=30)
        assert report.ok
        await wait_ended(bridge, report.call_sid)
        async with http.get(f"{bridge.url}/metrics", headers=AUTH) as r:  # an operator's
            assert r.status == 200
            text = await r.text()
        async with http.get(f"{bridge.url}/api/health", headers=AUTH) as r:
            health = await r.json()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("bridge_time_to_first_audio_seconds_count", ())] == 1
    assert samples[("bridge_overhead_seconds_count", ())] == 1
    assert samples[("bridge_calls_total", (("provider", "twilio"), ("reason", "stop")))] == 1
    assert samples[("bridge_utterances_total", (("outcome", "played"),))] == 1
    assert samples[("bridge_live_calls", ())] == 0
    ready = [v for (name, labels), v in samples.items() if name == "bridge_pool_ready"]
    assert ready and ready[0] >= 1
    targets = {t["name"]: t for t in health["targets"]}
    assert targets["error_rate"]["value"] == 0 and targets["error_rate"]["ok"] is True
    assert targets["synthesis_latency_p95_s"]["ok"] is True
    assert targets["pool_ready_ratio"]["ok"] is True


async def test_a_call_part_that_dies_ends_the_call_with_its_reason(tts, monkeypatch):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge:
        def broken_tts(_user_id: str):
            @contextlib.asynccontextmanager
            async def open_tts():
                async def synthesize(text, on_step, *, urgent, needed_at):
                    raise RuntimeError("a bug in the TTS driver")
                    yield  # an async generator, as the real one

                yield synthesize
            return open_tts

        monkeypatch.setattr(bridge.context, "tts_opener", broken_tts)
        report = await run_call(bridge.url, max_seconds=15)
        trace = await wait_ended(bridge, report.call_sid)
    assert trace["end_reason"] == "speaker failed (RuntimeError)"  # not a silent call
    assert report.error is not None and "closed the media stream" in report.error
