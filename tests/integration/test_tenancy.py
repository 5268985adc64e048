"""Tenants on one bridge: nobody controls, hears or exhausts what is not theirs.

Each test is one of the audit's probes (issue 14), run against the real bridge on 127.0.0.1 with
our TTS server speaking through Piper and the emulated carriers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import aiohttp
import pytest
from aiohttp import web

from bridge.call.session import MAX_PENDING_UTTERANCES
from bridge.emulator.plivo_wire import fetch_answer_xml
from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from bridge.errors import ProtocolError
from bridge.settings import Settings
from bridge.web.app import create_ops_app
from tests.servers import DEFAULT_TOKEN, RunningBridge, make_settings, running_bridge, wait_ended

OPERATOR = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}  # the default user is an operator


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def add_user(bridge: RunningBridge, name: str) -> tuple[str, str]:
    user, token = await bridge.context.services.store.create_user(name)
    return user.id, token


async def open_call(http: aiohttp.ClientSession, bridge: RunningBridge, call_sid: str,
                    path: str = "", parameters: dict[str, str] | None = None
                    ) -> TwilioCallEmulator:
    """A call as the carrier places it; `parameters` replace the TwiML's stream parameters."""
    stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice{path}",
                                           {"CallSid": call_sid}, None)
    call = TwilioCallEmulator(http, stream_url, call_sid=call_sid,
                              parameters=params if parameters is None else parameters)
    await call.connect(greetings=1)
    return call


async def test_only_the_calls_owner_or_an_operator_lists_controls_and_traces_it(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        bob, bob_token = await add_user(bridge, "Bob")
        _, eve_token = await add_user(bridge, "Eve")
        call = await open_call(http, bridge, "CAbob", f"/{bob}")
        say = f"{bridge.url}/calls/CAbob/say"
        async with http.post(say, json={"text": "hi"}) as r:
            assert r.status == 401  # no credential at all
        for method, url in (("POST", say), ("GET", f"{bridge.url}/calls/CAbob/trace"),
                            ("POST", f"{bridge.url}/calls/CAbob/hangup")):
            async with http.request(method, url, json={"text": "hi"},
                                    headers=bearer(eve_token)) as r:
                assert r.status == 404, (method, url)  # another tenant's call does not exist
        async with http.get(f"{bridge.url}/calls", headers=bearer(eve_token)) as r:
            assert (await r.json())["live"] == []
        async with http.post(say, data='{"text": "hi"}',
                             headers={**bearer(bob_token), "Content-Type": "text/plain"}) as r:
            assert r.status == 415  # a cross-site form cannot post JSON
        async with http.get(f"{bridge.url}/calls", headers=bearer(bob_token)) as r:
            assert [c["call_id"] for c in (await r.json())["live"]] == ["CAbob"]
        async with http.get(f"{bridge.url}/calls", headers=OPERATOR) as r:
            assert [c["owner"] for c in (await r.json())["live"]] == [bob]
        async with http.post(say, json={"text": "Only Bob may say this."},
                             headers=bearer(bob_token)) as r:
            assert r.status == 202
        await call.wait_for_marks(2)
        await call.stop()
        trace = await wait_ended(bridge, "CAbob")
    assert trace["owner"] == bob
    assert [u["text"] for u in trace["utterance_traces"]][1] == "Only Bob may say this."


async def test_ops_endpoints_need_an_operator_or_the_ops_listener(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        _, user_token = await add_user(bridge, "Tenant")
        for path in ("/metrics", "/api/pool", "/api/health"):
            async with http.get(f"{bridge.url}{path}") as r:
                assert r.status == 401, path
            async with http.get(f"{bridge.url}{path}", headers=bearer(user_token)) as r:
                assert r.status == 403, path
            async with http.get(f"{bridge.url}{path}", headers=OPERATOR) as r:
                assert r.status == 200, path
        async with http.post(f"{bridge.url}/api/pool/health-check",
                             headers=bearer(user_token)) as r:
            assert r.status == 403
        ops = web.AppRunner(create_ops_app(bridge.context), access_log=None)
        await ops.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(ops, sock).start()
        ops_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        try:
            async with http.get(f"{ops_url}/metrics") as r:
                assert r.status == 200 and "bridge_live_calls" in await r.text()
            async with http.get(f"{ops_url}/calls", headers=OPERATOR) as r:
                assert r.status == 404  # the ops listener serves the ops endpoints only
        finally:
            await ops.cleanup()


async def test_a_calls_tts_is_its_paths_users_never_a_stream_parameter(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        bob, _ = await add_user(bridge, "Bob")
        # Bob's own TTS target is a dead port: a call that used it would hear nothing.
        await bridge.context.services.store.update_silma(bob, api_endpoint="http://127.0.0.1:9")
        call = await open_call(http, bridge, "CAspoof", parameters={"userid": bob})
        await call.wait_for_marks(1)
        await call.stop()
        trace = await wait_ended(bridge, "CAspoof")
        assert call.report().bytes_received > 0  # served by the default user's target
        assert trace["owner"] == "default"


async def test_a_stream_needs_a_fresh_token_of_its_own_call(tts):
    settings = make_settings()
    settings = settings.replace(plivo=dataclasses.replace(settings.plivo, auth_id="MAx",
                                                          auth_token="plivo-token-not-real"))
    async with running_bridge(settings, tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        ws = bridge.url.replace("http", "ws")
        for path in ("/twilio/stream", "/twilio/stream/default", "/plivo/stream",
                     "/plivo/stream/default", "/twilio/stream/default/not-a-token"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws + path)
            assert refused.value.status == 403, path

        stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                               {"CallSid": "CAonce"}, None)
        bob, _ = await add_user(bridge, "Bob")
        moved = stream_url.replace("/twilio/stream/default/", f"/twilio/stream/{bob}/")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(moved)  # a token is for its own user's path only
        assert refused.value.status == 403
        async with TwilioCallEmulator(http, stream_url, call_sid="CAonce",
                                      parameters=params) as call:
            await call.connect(greetings=1)
            with pytest.raises(aiohttp.WSServerHandshakeError) as replayed:
                await http.ws_connect(stream_url)  # captured and replayed
            assert replayed.value.status == 403
            await call.stop()
        await wait_ended(bridge, "CAonce")

        # A token admits the call it was issued for: a start naming another call is refused.
        stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                               {"CallSid": "CAissued"}, None)
        async with TwilioCallEmulator(http, stream_url, call_sid="CAother",
                                      parameters=params) as other:
            await other.connect(greetings=1)
            async with asyncio.timeout(10):
                await other.wait_closed()  # the bridge closes it
            assert other.report().bytes_received == 0
        assert bridge.context.registry.trace("CAother") is None
        assert bridge.context.registry.live == {}


async def test_unsigned_webhooks_are_refused_unless_allowed(tts):
    settings = make_settings().replace(allow_unsigned_webhooks=False)
    async with running_bridge(settings, tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        async with http.post(f"{bridge.url}/twilio/voice", data={"CallSid": "CA1"}) as r:
            assert r.status == 403
        with pytest.raises(ProtocolError, match="403"):
            await fetch_answer_xml(http, f"{bridge.url}/plivo/answer",
                                   {"CallUUID": "u-1"}, None)


async def _login_statuses(bridge: RunningBridge, http: aiohttp.ClientSession,
                          client: str, token: str, times: int) -> list[int]:
    statuses = []
    for _ in range(times):
        async with http.get(f"{bridge.url}/calls",
                            headers={**bearer(token), "X-Forwarded-For": client}) as r:
            statuses.append(r.status)
    return statuses


@pytest.mark.parametrize("trusted", ["127.0.0.1", ""], ids=["behind-trusted-proxy", "direct"])
async def test_failed_logins_lock_out_the_client_that_failed(tts, trusted):
    settings: Settings = make_settings().replace(trusted_proxies=trusted)
    async with running_bridge(settings, tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        bad = await _login_statuses(bridge, http, "203.0.113.1", "wrong-token", 11)
        assert bad[:10] == [401] * 10 and bad[10] == 429
        [other] = await _login_statuses(bridge, http, "203.0.113.2", DEFAULT_TOKEN, 1)
        # Behind a trusted proxy the other client goes on; without one the header is not
        # believed (anyone could send it), so everyone shares the socket peer's count.
        assert other == (200 if trusted else 429)


async def test_a_caller_pressing_keys_cannot_queue_unbounded_replies(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        call = await open_call(http, bridge, "CAkeys")
        async with asyncio.timeout(20):
            await call.wait_for_marks(1)  # the greeting
            for _ in range(30):
                await call.send_dtmf("2")
            # While the first reply plays, the agent has answered (or been refused) every key.
            await call.wait_for_marks(2)
        await call.stop()
        trace = await wait_ended(bridge, "CAkeys")
        metrics = bridge.context.registry.metrics.exposition().decode()
    assert len(trace["dtmf"]) == 30
    assert len(trace["utterance_traces"]) <= MAX_PENDING_UTTERANCES + 1
    assert 'bridge_refused_inputs_total{kind="utterance_queue"}' in metrics


async def test_ended_call_history_stays_bounded_under_long_dtmf_floods(tts):
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        call = await open_call(http, bridge, "CAflood")
        dtmf = ('{{"event":"dtmf","streamSid":"{}","sequenceNumber":"9","dtmf":'
                '{{"track":"inbound_track","digit":"{}"}}}}')
        for _ in range(20):
            await call.send_raw(dtmf.format(call.stream_sid, "9" * 1_000_000))
        await call.stop()
        trace = await wait_ended(bridge, "CAflood")
    assert trace["malformed_messages"] == 20
    assert trace["dtmf"] == []
    assert len(str(trace)) < 100_000


async def test_a_stream_that_never_sends_a_valid_start_is_closed(tts, monkeypatch):
    monkeypatch.setattr("bridge.call.session.START_TIMEOUT_S", 0.5)
    async with running_bridge(make_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        stream_url, _ = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                          {"CallSid": "CAmute"}, None)
        ws = await http.ws_connect(stream_url)
        await ws.send_str('{"event":"start","start":{"callSid":"\\u001b[2J"}}')
        async with asyncio.timeout(10):
            message = await ws.receive()
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        metrics = bridge.context.registry.metrics.exposition().decode()
    assert 'bridge_refused_inputs_total{kind="no_start"} 1.0' in metrics
