"""Pronunciation on the real bridge and our real TTS server (Piper, its requests recorded):
a tenant's overrides through the settings API reach the TTS text of that tenant's calls and no
one else's, and <STAG_*> hints on our own protocol are read in words, never aloud as tags."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.call.lexicon import MAX_WRITTEN_CHARS
from bridge.emulator.runner import run_call
from bridge.settings import TTSServerSettings
from bridge.tts_server.app import RunningServer
from bridge.tts_server.engines.piper import PiperEngine
from tests.recording_engine import RecordingEngine
from tests.servers import DEFAULT_TOKEN, RunningBridge, make_settings, running_bridge, serving_tts

WAIT_S = 20.0
OVERRIDES = [{"written": "SILMA", "spoken": "Silma"},
             {"written": "Qatar", "spoken": "Katar"},
             {"written": "New York", "spoken": "Noo York"}]


@pytest.fixture
async def recorded(piper_engine: PiperEngine) -> AsyncIterator[tuple[RunningServer, RecordingEngine]]:
    engine = RecordingEngine(piper_engine)
    async with serving_tts(TTSServerSettings(), engine) as server:
        yield server, engine


def json_text(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def api(http: aiohttp.ClientSession, bridge: RunningBridge, method: str, user: str,
              token: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, f"{bridge.url}/api/users/{user}/pronunciation",
                            json=body, headers=bearer(token)) as response:
        return response.status, await response.json()


async def test_each_tenant_reads_and_saves_only_its_own_list(recorded) -> None:
    server, _ = recorded
    async with running_bridge(make_settings(), tts_url=server.url) as bridge, \
            aiohttp.ClientSession() as http:
        store = bridge.context.services.store
        ann, ann_token = await store.create_user("Ann")
        bob, bob_token = await store.create_user("Bob")
        status, body = await api(http, bridge, "PUT", ann.id, ann_token, {"overrides": [
            {"written": " New   York ", "spoken": "Noo York"},
            {"written": "US", "spoken": "you ess", "match_case": True}]})
        assert status == 200, body
        assert body["overrides"] == [  # as stored: white space collapsed
            {"written": "New York", "spoken": "Noo York", "match_case": False},
            {"written": "US", "spoken": "you ess", "match_case": True}]
        assert body["limits"]["max_written_chars"] == MAX_WRITTEN_CHARS

        # Bob can neither read nor change Ann's list; his own is empty.
        for method, payload in (("GET", None), ("PUT", {"overrides": []})):
            status, body = await api(http, bridge, method, ann.id, bob_token, payload)
            assert status == 403, (method, body)
        status, body = await api(http, bridge, "GET", bob.id, bob_token)
        assert (status, body["overrides"]) == (200, [])
        status, body = await api(http, bridge, "GET", ann.id, ann_token)
        assert [o["written"] for o in body["overrides"]] == ["New York", "US"]

        # A bad list names each field at fault and changes nothing.
        status, body = await api(http, bridge, "PUT", ann.id, ann_token, {"overrides": [
            {"written": "x" * (MAX_WRITTEN_CHARS + 1), "spoken": "y"},
            {"written": "Qatar", "spoken": ""}], "extra": 1})
        assert status == 400
        assert set(body["errors"]) == {"overrides.0.written", "overrides.1.spoken", "extra"}
        assert f"at most {MAX_WRITTEN_CHARS} characters" in body["errors"]["overrides.0.written"]
        status, body = await api(http, bridge, "PUT", ann.id, ann_token, {})
        assert status == 400 and "overrides" in body["errors"]
        async with http.put(f"{bridge.url}/api/users/{ann.id}/pronunciation",
                            data=b"not json", headers={**bearer(ann_token),
                                                       "Content-Type": "application/json"}) as r:
            assert r.status == 400 and "body" in (await r.json())["errors"]
        assert [o.written for o in await store.pronunciation(ann.id)] == ["New York", "US"]
        async with http.get(f"{bridge.url}/api/users/{ann.id}/pronunciation") as r:
            assert r.status == 401  # no credential at all


async def test_a_tenants_overrides_reach_the_tts_text_of_its_calls_only(recorded) -> None:
    server, engine = recorded
    base = make_settings()
    settings = base.replace(agent=dataclasses.replace(base.agent, greeting="Welcome to SILMA."))
    said = "Our office in Qatar opens at nine, call <STAG_PN>12</STAG_PN> for New York."
    async with running_bridge(settings, tts_url=server.url) as bridge, \
            aiohttp.ClientSession() as http:
        store = bridge.context.services.store
        alice, alice_token = await store.create_user("Alice")
        bob, bob_token = await store.create_user("Bob")
        status, body = await api(http, bridge, "PUT", alice.id, alice_token,
                                 {"overrides": OVERRIDES})
        assert status == 200, body

        texts: dict[str, list[str]] = {}
        for user, token in ((alice.id, alice_token), (bob.id, bob_token)):
            before = len(engine.utterances)
            report = await run_call(bridge.url, say=[said], user_path=f"/{user}",
                                    control_token=token, max_seconds=60)
            assert report.ok, (report.error, report.protocol_violations)
            texts[user] = [u.text for u in engine.utterances[before:]]

        lexicons = bridge.context.services.lexicons
        assert lexicons.compiles == 1  # Alice's list, once; Bob has none
        await lexicons.for_user(alice.id)
        assert lexicons.compiles == 1  # unchanged: not compiled again
        await api(http, bridge, "PUT", alice.id, alice_token, {"overrides": OVERRIDES[:1]})
        assert (await lexicons.for_user(alice.id)).rewrite("Qatar SILMA") == "Qatar Silma"
        assert lexicons.compiles == 2

    spoken = {user: " ".join(text) for user, text in texts.items()}
    # What the engine was asked: Alice's words said her way, the hint read as digits (our
    # protocol reads hints too), and nothing of it in Bob's call.
    assert spoken[alice.id].startswith("Welcome to Silma.")
    assert "Our office in Katar opens at nine, call one two for Noo York." in spoken[alice.id]
    assert spoken[bob.id].startswith("Welcome to SILMA.")
    assert "Our office in Qatar opens at nine, call one two for New York." in spoken[bob.id]
    for text in spoken.values():
        assert "STAG" not in text and "<" not in text


async def test_hints_on_our_protocol_reach_the_engine_in_words(recorded) -> None:
    server, engine = recorded
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.ws_url) as ws:
            await ws.send_str(json_text({"type": "synthesize", "id": "a", "stream": True,
                                              "text": "Call <STAG_PN>12</STAG_PN> now."}))
            while (reply := orjson.loads((await ws.receive(timeout=WAIT_S)).data))[
                    "type"] == "audio_chunk":
                pass
            assert reply["type"] == "synthesis_complete", reply
            await ws.send_str(json_text({"type": "synthesize", "id": "b",
                                              "text": "<STAG_PN></STAG_PN>"}))
            refused = orjson.loads((await ws.receive(timeout=WAIT_S)).data)
        async with http.post(f"{server.url}/synthesize", json={
                "type": "synthesize", "text": "اتصل على <STAG_PN>12</STAG_PN>"}) as response:
            assert response.status == 200, await response.text()
        async with http.post(f"{server.url}/synthesize", json={
                "type": "synthesize", "text": "Plain  text <b> stays."}) as response:
            assert response.status == 200
    assert (refused["type"], refused["id"], refused["code"]) == ("error", "b", "bad_request")
    assert "says nothing" in refused["error"]
    assert [u.text for u in engine.utterances] == [
        "Call one two now.",  # English text: English digit words
        "اتصل على واحد اثنان",  # an Arabic letter in the text: Arabic digit words
        "Plain  text <b> stays.",  # no hint: the text is left exactly as sent
    ]


async def test_the_preview_says_the_users_overrides(recorded) -> None:
    server, engine = recorded
    async with running_bridge(make_settings(), tts_url=server.url) as bridge, \
            aiohttp.ClientSession() as http:
        status, _ = await api(http, bridge, "PUT", "default", DEFAULT_TOKEN,
                              {"overrides": OVERRIDES})
        assert status == 200
        async with http.post(f"{bridge.url}/api/users/default/preview",
                             json={"text": "Hello from SILMA in Qatar."},
                             headers=bearer(DEFAULT_TOKEN)) as response:
            assert response.status == 200 and response.content_type == "audio/wav"
    assert engine.utterances[-1].text == "Hello from Silma in Katar."
