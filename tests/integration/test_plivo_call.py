"""A whole Plivo call through the real bridge and the real TTS server on 127.0.0.1."""

from __future__ import annotations

import dataclasses

import aiohttp
import numpy as np

from bridge.audio.mulaw import ulaw2lin
from bridge.emulator.plivo_wire import signature_headers
from bridge.emulator.runner import run_call
from tests.servers import DEFAULT_TOKEN, make_settings, running_bridge, wait_ended
from tests.speech import assert_is_speech


async def test_plivo_call_hears_speech_and_checkpoints_come_back(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge:
        report = await run_call(bridge.url, provider="plivo", say=["Plivo works as well."],
                                max_seconds=40, control_token=DEFAULT_TOKEN)
        assert report.ok, (report.error, report.protocol_violations)
        assert report.marks_echoed == 2
        assert report.bytes_received % 160 == 0
        assert_is_speech(ulaw2lin(report.recording).astype(np.float32) / 32768, 8000)
        trace = await wait_ended(bridge, report.call_sid)
    assert trace["provider"] == "plivo"
    assert [u["outcome"] for u in trace["utterance_traces"]] == ["played", "played"]
    assert all("playout_finished" in u["steps_ms"] for u in trace["utterance_traces"])


async def test_plivo_answer_signature_enforced_when_token_configured(tts):
    token = "plivo-test-token-not-real"
    settings = make_settings()
    settings = settings.replace(plivo=dataclasses.replace(settings.plivo, auth_id="MA1",
                                                          auth_token=token))
    async with running_bridge(settings, tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        url = f"{bridge.url}/plivo/answer"
        form = {"CallUUID": "u-1"}
        async with http.post(url, data=form) as r:
            assert r.status == 403
        bad = signature_headers("wrong-token", "POST", url, form)
        async with http.post(url, data=form, headers=bad) as r:
            assert r.status == 403
        good = signature_headers(token, "POST", url, form)
        async with http.post(url, data=form, headers=good) as r:
            assert r.status == 200
            xml = await r.text()
        assert "/plivo/stream/default/" in xml  # the user, then the call's stream token
        assert 'keepCallAlive="true"' in xml and "audio/x-mulaw;rate=8000" in xml
        # The upgrade is not checked unless configured (Plivo does not document its signing).
        report = await run_call(bridge.url, provider="plivo", auth_token=token, max_seconds=30)
        assert report.ok, (report.error, report.protocol_violations)
