"""The settings JSON API and login sessions on the real bridge and real TTS servers (127.0.0.1)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import re
import socket

import aiohttp
import numpy as np
import pytest

from bridge.audio.codec import decode_audio, wav_bytes
from bridge.emulator.runner import run_call
from bridge.silma import v2_protocol as v2
from bridge.store import DEFAULT_USER_ID
from bridge.tts_server.engines.piper import PiperEngine
from bridge.web.auth import COOKIE, FAILED_LOGIN_LIMIT
from tests.servers import DEFAULT_TOKEN, make_settings, running_bridge, running_tts
from tests.speech import assert_is_speech
from tests.v2_double import cloud_double, piper_speech

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens


def tone(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return wav_bytes((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)


def settings_with(*, allow_private: bool):
    settings = make_settings()
    return settings.replace(
        silma=dataclasses.replace(settings.silma, allow_private_endpoints=allow_private),
        # A short greeting: calls play in real time.
        agent=dataclasses.replace(settings.agent, greeting="Hello there."))


@contextlib.asynccontextmanager
async def bridge_and_client(tts_url: str, *, allow_private: bool = True):
    # unsafe=True: the client keeps cookies of an IP-address host (the bridge on 127.0.0.1).
    async with running_bridge(settings_with(allow_private=allow_private),
                              tts_url=tts_url) as bridge, \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield bridge, http


async def api(http, bridge, method, path, *, token=DEFAULT_TOKEN, user=DEFAULT_USER_ID,
              headers=None, **kwargs):
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, f"{bridge.url}/api/users/{user}/{path}",
                            headers={**auth, **(headers or {})}, **kwargs) as response:
        body = await (response.json() if response.content_type == "application/json"
                      else response.read())
        return response.status, body


async def log_in(http, bridge, token=DEFAULT_TOKEN) -> str:
    """Log in through the form; the CSRF token of the new session."""
    async with http.post(f"{bridge.url}/login", data={"token": token, "next": "/settings"}) as r:
        assert r.status == 200 and r.url.path == "/settings"
        page = await r.text()
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert found is not None, "the page carries no CSRF token"
    return found.group(1)


async def test_bearer_auth_missing_wrong_and_right(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        status, body = await api(http, bridge, "GET", "silma", token=None)
        assert status == 401 and "Bearer" in body["error"]
        status, _ = await api(http, bridge, "GET", "silma", token=None,
                              headers={"Authorization": f"Basic {DEFAULT_TOKEN}"})
        assert status == 401
        status, body = await api(http, bridge, "GET", "silma", token="not-the-token")
        assert (status, body["error"]) == (401, "invalid access token")
        status, body = await api(http, bridge, "GET", "silma")
        assert status == 200
        assert body["mode"] == "api" and body["effective_endpoint"] == tts.url


async def test_session_cookie_login_csrf_and_logout(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        async with http.get(f"{bridge.url}/settings", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "/login?next=/settings")
        async with http.post(f"{bridge.url}/login", data={"token": "wrong"}) as r:
            assert r.status == 401 and "not valid" in await r.text()
        async with http.post(f"{bridge.url}/login", data={"token": DEFAULT_TOKEN},
                             headers={"Origin": "https://evil.example"}) as r:
            assert r.status == 403
        async with http.post(f"{bridge.url}/login", allow_redirects=False,
                             data={"token": DEFAULT_TOKEN, "next": "//evil.example/x"}) as r:
            assert (r.status, r.headers["Location"]) == (303, "/settings")
            cookie = r.cookies[COOKIE]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            assert cookie["path"] == "/" and not cookie["secure"]  # the public URL is http
            assert DEFAULT_TOKEN not in cookie.value
        csrf = await log_in(http, bridge)

        status, _ = await api(http, bridge, "GET", "silma", token=None)  # reads need no CSRF
        assert status == 200
        change = {"speed": 1.5}
        status, body = await api(http, bridge, "PUT", "silma", token=None, json=change)
        assert status == 403 and "CSRF" in body["error"]
        status, _ = await api(http, bridge, "PUT", "silma", token=None, json=change,
                              headers={"X-CSRF-Token": csrf[:-2] + "xx"})
        assert status == 403
        status, body = await api(http, bridge, "PUT", "silma", token=None, json=change,
                                 headers={"X-CSRF-Token": csrf})
        assert (status, body["speed"]) == (200, 1.5)

        # A tampered cookie is no session.
        session = next(c for c in http.cookie_jar if c.key == COOKIE).value
        user_id, expiry, mac = session.split(".")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as bare:
            for value in (session, f"{user_id}.{int(expiry) + 999}.{mac}",
                          f"second.{expiry}.{mac}", f"{user_id}.1.{mac}"):
                status, _ = await api(bare, bridge, "GET", "silma", token=None,
                                      headers={"Cookie": f"{COOKIE}={value}"})
                assert status == (200 if value == session else 401), value

        async with http.post(f"{bridge.url}/logout", allow_redirects=False) as r:
            assert r.status == 403  # no CSRF token: nobody else can log us out
        async with http.post(f"{bridge.url}/logout", data={"csrf_token": csrf},
                             allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/login")
        status, _ = await api(http, bridge, "GET", "silma", token=None)
        assert status == 401


async def test_failed_logins_are_rate_limited_per_client(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        for _ in range(FAILED_LOGIN_LIMIT):
            status, _ = await api(http, bridge, "GET", "silma", token="guess")
            assert status == 401
        async with http.get(f"{bridge.url}/api/users/default/silma",
                            headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) > 0
        async with http.post(f"{bridge.url}/login", data={"token": DEFAULT_TOKEN}) as r:
            assert r.status == 429 and "Too many" in await r.text()


async def test_users_see_and_change_only_their_own_settings(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        second, token = await bridge.context.services.store.create_user("Second")
        await api(http, bridge, "PUT", "silma", json={"api_key": "default-user-secret-key"})

        for method, path, kwargs in [
            ("GET", "silma", {}), ("PUT", "silma", {"json": {"api_endpoint": UNREACHABLE}}),
            ("GET", "pool", {}), ("POST", "health-check", {}),
            ("PUT", "voice", {"json": {"clip": "", "transcript": "x"}}),
            ("POST", "preview", {"json": {"text": "hi"}}),
        ]:
            status, _ = await api(http, bridge, method, path, token=token, **kwargs)
            assert status == 403, (method, path)
        status, own = await api(http, bridge, "GET", "silma", token=token, user=second.id)
        assert status == 200 and own["user_id"] == second.id and own["api_key"] == ""
        status, default = await api(http, bridge, "GET", "silma")
        assert default["api_endpoint"] == "" and default["api_key"] == "****-key"


async def test_validation_errors_name_each_field(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        status, body = await api(http, bridge, "PUT", "silma", json={
            "mode": "remote", "api_endpoint": "ftp://tts.example.com", "api_key": "a\nb",
            "region": "mars", "colour": "blue"})
        assert status == 400
        assert set(body["errors"]) == {"mode", "api_endpoint", "api_key", "region", "colour"}
        assert "http://" in body["errors"]["api_endpoint"]
        status, body = await api(http, bridge, "PUT", "silma", data=b"{not json",
                                 headers={"Content-Type": "application/json"})
        assert (status, list(body["errors"])) == (400, ["body"])

        form = aiohttp.FormData()
        form.add_field("clip", b"this is not audio", filename="x.wav")
        form.add_field("transcript", "")
        status, body = await api(http, bridge, "PUT", "voice", data=form)
        assert status == 400 and "not a WAV" in body["errors"]["clip"]
        assert "transcript" in body["errors"]
        status, body = await api(http, bridge, "PUT", "voice", json={
            "clip": base64.b64encode(tone(31, rate=8000)).decode(), "transcript": "long"})
        assert status == 400 and "31.0 s" in body["errors"]["clip"]
        status, body = await api(http, bridge, "PUT", "voice", json={
            "clip": "%%%", "transcript": "x"})
        assert status == 400 and "base64" in body["errors"]["clip"]
        big = aiohttp.FormData()
        big.add_field("clip", b"RIFF" + bytes(11 * 1024 * 1024), filename="big.wav")
        status, body = await api(http, bridge, "PUT", "voice", data=big)
        assert status == 413 and "10 MB" in body["errors"]["clip"]
        status, body = await api(http, bridge, "PUT", "voice", data=b"0" * (15 * 1024 * 1024),
                                 headers={"Content-Type": "application/json"})
        assert status == 413 and "10 MB" in body["errors"]["clip"]

        status, body = await api(http, bridge, "POST", "preview", json={"text": "  "})
        assert status == 400 and list(body["errors"]) == ["text"]
        status, body = await api(http, bridge, "GET", "silma")
        assert body["api_endpoint"] == "" and body["region"] == "auto"  # nothing was stored


@pytest.mark.parametrize("url, reason", [
    ("http://169.254.169.254/latest/meta-data", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://100.100.100.200/", "metadata"),
    ("http://169.254.0.7:9000", "link-local"),
    ("https://[fe80::1]/", "link-local"),
    ("http://10.0.0.5:9000", "private"),
    ("http://127.0.0.1:9000", "private"),
    ("ws://localhost:9000/ws", "private"),
])
async def test_ssrf_targets_are_refused(tts, url, reason):
    async with bridge_and_client(tts.url, allow_private=False) as (bridge, http):
        status, body = await api(http, bridge, "PUT", "silma",
                                 json={"mode": "api", "api_endpoint": url})
        assert status == 400 and reason in body["errors"]["api_endpoint"]
        assert list(body["errors"]) == ["api_endpoint"]


async def test_metadata_refused_even_when_private_endpoints_are_allowed(tts):
    async with bridge_and_client(tts.url, allow_private=True) as (bridge, http):
        status, body = await api(http, bridge, "PUT", "silma",
                                 json={"api_endpoint": "http://169.254.169.254/"})
        assert status == 400 and "metadata" in body["errors"]["api_endpoint"]


async def test_new_endpoint_takes_effect_on_the_next_call(tts):
    async with contextlib.AsyncExitStack() as stack:
        first_server = contextlib.AsyncExitStack()
        stack.push_async_callback(first_server.aclose)
        first = await first_server.enter_async_context(running_tts(make_settings()))
        bridge, http = await stack.enter_async_context(bridge_and_client(first.url))
        status, pool = await api(http, bridge, "GET", "pool")
        assert status == 200 and pool["endpoint"] == f"{first.ws_url}"

        status, body = await api(http, bridge, "PUT", "silma",
                                 json={"mode": "api", "api_endpoint": tts.url + "/"})
        assert status == 200
        assert body["api_endpoint"] == body["effective_endpoint"] == tts.url
        # The pool nobody uses any more drains; the new one is warm before the call.
        assert [p["endpoint"] for p in bridge.context.services.pools.stats()] == [tts.ws_url]
        await first_server.aclose()  # the old server is gone: only the new one can speak

        report = await run_call(bridge.url, max_seconds=30)
        assert report.ok, (report.error, report.protocol_violations)
        assert report.audio_seconds > 0.3
        status, pool = await api(http, bridge, "GET", "pool")
        assert pool["endpoint"] == tts.ws_url and pool["requests_served"] >= 1
        assert pool["fallbacks"] == 0
        status, health = await api(http, bridge, "POST", "health-check")
        assert status == 200 and health["health"]["server"]["engine"] == "piper"


async def test_health_check_maps_unreachable_to_the_endpoint_field(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        status, body = await api(http, bridge, "POST", "health-check")
        assert status == 200 and body["health"]["status"] == "ok"
        await api(http, bridge, "PUT", "silma", json={"api_endpoint": UNREACHABLE})
        status, body = await api(http, bridge, "POST", "health-check")
        assert status == 502
        assert body["errors"]["api_endpoint"].startswith(
            "cannot reach the TTS server at http://127.0.0.1:9")
        assert body["health"]["status"].startswith("unreachable")


async def test_voice_upload_and_preview_through_the_users_target(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        form = aiohttp.FormData()
        form.add_field("clip", tone(1.5), filename="me.wav", content_type="audio/wav")
        form.add_field("transcript", "Hello, this is my voice.")
        status, body = await api(http, bridge, "PUT", "voice", data=form)
        assert status == 200 and body["reference_text"] == "Hello, this is my voice."
        assert body["reference_audio_bytes"] == 44 + 2 * 24000
        status, body = await api(http, bridge, "PUT", "voice", json={
            "clip": base64.b64encode(tone(2.0, rate=8000)).decode(), "transcript": "Again."})
        assert status == 200 and body["reference_audio_bytes"] == 44 + 2 * 16000
        target = await bridge.context.services.targets.for_user(DEFAULT_USER_ID)
        assert target.voice.reference_text == "Again." and target.voice.reference_audio

        status, wav = await api(http, bridge, "POST", "preview",
                                json={"text": "This is a preview."})
        assert status == 200
        samples, rate = decode_audio(wav)
        assert len(samples) / rate > 0.5 and np.abs(samples).max() > 0.05


async def test_an_endpoint_listing_two_servers_spreads_calls_and_shows_each_server(tts):
    async with running_tts(make_settings()) as second, \
            bridge_and_client(tts.url) as (bridge, http):
        listed = f"{tts.url}/,\n{second.url}"
        status, body = await api(http, bridge, "PUT", "silma",
                                 json={"mode": "api", "api_endpoint": listed})
        assert status == 200 and body["api_endpoint"] == f"{tts.url}, {second.url}"
        for _ in range(2):
            report = await run_call(bridge.url, max_seconds=30)
            assert report.ok, (report.error, report.protocol_violations)
        status, pool = await api(http, bridge, "GET", "pool")
        assert [s["endpoint"] for s in pool["servers"]] == [tts.ws_url, second.ws_url]
        assert pool["requests_served"] == sum(s["requests_served"] for s in pool["servers"])
        assert all(s["requests_served"] > 0 for s in pool["servers"])  # both spoke
        # The operator's view and the metrics are per server too.
        ops = [s["endpoint"] for s in bridge.context.services.pools.stats()]
        assert ops == [tts.ws_url, second.ws_url]
        status, body = await api(http, bridge, "PUT", "silma",
                                 json={"api_endpoint": f"{tts.url}, ftp://x"})
        assert status == 400 and body["errors"]["api_endpoint"].startswith("ftp://x: ")


# -- SILMA's public API (v2) as a user's target ------------------------------------------------
CLOUD_KEY = "sk-v2-tenant-secret-0042"


@pytest.fixture(scope="module")
async def cloud_speech(piper_engine: PiperEngine) -> bytes:
    return await piper_speech(piper_engine, "Hello from the public API.")


async def stored(bridge):
    row = await bridge.context.services.store.silma(DEFAULT_USER_ID)
    assert row is not None
    return row


# field, value sent, what is stored and shown (None: refused, naming the field, with `needle`)
V2_FIELD_CASES = [
    ("v2_model", "silma-tts-v2-english", "silma-tts-v2-english", ""),
    ("v2_model", "", "", ""),
    ("v2_model", "silma-tts-v3", None, "model must be one of silma-tts-v2-english"),
    ("v2_model", 7, None, "model must be one of"),
    ("v2_voice", "emma", "emma", ""),
    ("v2_voice", " my_voice-2 ", "my_voice-2", ""),
    ("v2_voice", "x" * 64, "x" * 64, ""),
    ("v2_voice", "", "", ""),
    ("v2_voice", "Emma", None, "lower-case letters, digits, _ or -"),
    ("v2_voice", "x" * 65, None, "at most 64"),
    ("v2_voice", "sarah!", None, "lower-case"),
    ("v2_voice", ["emma"], None, "lower-case"),
    ("v2_user_id", " acct-7 ", "acct-7", ""),
    ("v2_user_id", "u" * 128, "u" * 128, ""),
    ("v2_user_id", "u" * 129, None, "at most 128 characters"),
    ("v2_user_id", "acct\n7", None, "printable"),
    ("v2_user_id", None, None, "printable"),
    ("v2_custom_audio_id", "c" * 129, None, "custom voice id must be printable text of at most"),
    ("v2_custom_audio_id", "voice\x007", None, "printable"),
    ("speed", 0.5, 0.5, ""),
    ("speed", 2, 2.0, ""),
    ("speed", 1.25, 1.25, ""),
    ("speed", 0.49, None, "speed must be a number from 0.5 to 2"),
    ("speed", 2.01, None, "from 0.5 to 2"),
    ("speed", "1.0", None, "must be a number"),
    ("speed", True, None, "must be a number"),
    ("speed", 10 ** 400, None, "must be a number"),
]


async def test_each_v2_field_is_validated_and_stored(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        for field, value, shown, needle in V2_FIELD_CASES:
            case = (field, value)
            before = await stored(bridge)
            status, body = await api(http, bridge, "PUT", "silma", json={field: value})
            if shown is None:
                assert status == 400, case
                assert list(body["errors"]) == [field], case
                assert needle in body["errors"][field], (case, body)
                assert getattr(await stored(bridge), field) == getattr(before, field), case
            else:
                assert (status, body[field]) == (200, shown), (case, body)
                status, body = await api(http, bridge, "GET", "silma")
                assert body[field] == shown and getattr(await stored(bridge), field) == shown
        # NaN and Infinity are not JSON, but the bridge's parser reads them: no speed either.
        for raw in (b'{"speed": NaN}', b'{"speed": Infinity}'):
            status, body = await api(http, bridge, "PUT", "silma", data=raw,
                                     headers={"Content-Type": "application/json"})
            assert status == 400 and list(body["errors"]) == ["speed"], raw
        status, body = await api(http, bridge, "PUT", "silma",
                                 json={"v2_speed": 1.0, "mode": "cloud", "v2_voice": "emma"})
        assert status == 400
        assert body["errors"] == {"v2_speed": "unknown field",
                                  "mode": 'mode must be one of "local", "api", "v2"'}


async def test_speed_null_goes_back_to_the_bridges(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        targets = bridge.context.services.targets
        bridge_speed = bridge.context.settings.silma.speed
        status, body = await api(http, bridge, "PUT", "silma", json={"speed": 1.5})
        assert (status, body["speed"]) == (200, 1.5)
        assert (await targets.for_user(DEFAULT_USER_ID)).voice.speed == 1.5
        status, body = await api(http, bridge, "PUT", "silma", json={"speed": None})
        assert (status, body["speed"]) == (200, None)
        assert (await stored(bridge)).speed is None
        assert (await targets.for_user(DEFAULT_USER_ID)).voice.speed == bridge_speed != 1.5


async def test_a_custom_voice_needs_the_silma_user_id(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        needs = {"v2_user_id": "custom_audio_id needs user_id"}  # V2Voice.problems()' words
        status, body = await api(http, bridge, "PUT", "silma", json={"v2_custom_audio_id": "v_9"})
        assert (status, body["errors"]) == (400, needs)
        assert (await stored(bridge)).v2_custom_audio_id == ""
        status, body = await api(http, bridge, "PUT", "silma", json={
            "v2_custom_audio_id": "v_9", "v2_user_id": "acct-9"})
        assert status == 200
        assert (body["v2_custom_audio_id"], body["v2_user_id"]) == ("v_9", "acct-9")
        # The id that the stored custom voice needs cannot be taken away on its own...
        status, body = await api(http, bridge, "PUT", "silma", json={"v2_user_id": ""})
        assert (status, body["errors"]) == (400, needs)
        assert (await stored(bridge)).v2_user_id == "acct-9"
        # ...but both together can, and a save of other fields is not held up by them.
        status, _ = await api(http, bridge, "PUT", "silma", json={"region": "auto"})
        assert status == 200
        status, body = await api(http, bridge, "PUT", "silma", json={
            "v2_custom_audio_id": "", "v2_user_id": ""})
        assert (status, body["v2_custom_audio_id"], body["v2_user_id"]) == (200, "", "")


async def test_mode_round_trip_local_api_and_v2(tts, cloud_speech):
    async with cloud_double(cloud_speech, api_key=CLOUD_KEY) as cloud, \
            bridge_and_client(tts.url) as (bridge, http):
        targets = bridge.context.services.targets
        status, body = await api(http, bridge, "PUT", "silma", json={
            "mode": "v2", "api_endpoint": cloud.url + "/", "api_key": CLOUD_KEY,
            "v2_model": "silma-tts-v2-english", "v2_voice": "emma",
            "v2_custom_audio_id": "voice_7", "v2_user_id": "acct-7", "speed": 1.1})
        assert status == 200, body
        assert (body["mode"], body["api"], body["is_local"]) == ("v2", "v2", False)
        assert body["api_endpoint"] == body["effective_endpoint"] == cloud.url
        status, got = await api(http, bridge, "GET", "silma")
        assert got == body
        target = await targets.for_user(DEFAULT_USER_ID)
        assert (target.api, target.endpoint, target.api_key) == ("v2", cloud.url, CLOUD_KEY)
        assert target.v2_voice == v2.V2Voice("silma-tts-v2-english", "emma", "voice_7",
                                             "acct-7", speed=1.1)

        # Local keeps the API chosen, so that leaving local returns to it.
        status, body = await api(http, bridge, "PUT", "silma", json={"mode": "local"})
        assert (status, body["mode"], body["api"], body["effective_endpoint"]) == (
            200, "local", "v2", "local")
        status, body = await api(http, bridge, "PUT", "silma", json={"mode": "v2"})
        assert (body["mode"], body["effective_endpoint"]) == ("v2", cloud.url)

        status, body = await api(http, bridge, "PUT", "silma",
                                 json={"mode": "api", "api_endpoint": ""})
        assert (status, body["mode"], body["api"]) == (200, "api", "silma")
        assert body["effective_endpoint"] == tts.url  # the bridge's, on our protocol
        target = await targets.for_user(DEFAULT_USER_ID)
        assert (target.api, target.v2_voice) == ("silma", None)
        assert body["v2_voice"] == "emma"  # kept for a way back to v2

        # v2 with no endpoint of its own speaks to SILMA's cloud (set in the store: saving it
        # through the API would warm a pool there, and this test stays on this machine).
        await bridge.context.services.store.update_silma(DEFAULT_USER_ID, api="v2")
        status, body = await api(http, bridge, "GET", "silma")
        assert (body["mode"], body["effective_endpoint"]) == ("v2", v2.DEFAULT_BASE_URL)


async def test_a_v2_target_checks_health_and_previews_through_the_pool(tts, cloud_speech):
    async with contextlib.AsyncExitStack() as stack:
        cloud_server = contextlib.AsyncExitStack()
        stack.push_async_callback(cloud_server.aclose)
        # Refusing a wrong key at the upgrade (HTTP 401), which the health check can see.
        cloud = await cloud_server.enter_async_context(
            cloud_double(cloud_speech, api_key=CLOUD_KEY, key_refusal="upgrade"))
        bridge, http = await stack.enter_async_context(bridge_and_client(tts.url))
        status, _ = await api(http, bridge, "PUT", "silma", json={
            "mode": "v2", "api_endpoint": cloud.url, "api_key": CLOUD_KEY, "v2_voice": "salma",
            "v2_model": "silma-tts-v2-ksa", "speed": 0.9})
        assert status == 200
        status, body = await api(http, bridge, "POST", "health-check")
        assert status == 200 and body["health"]["status"] == "ok", body
        assert body["health"]["api_key"] == "accepted"

        status, wav = await api(http, bridge, "POST", "preview", json={"text": "Hello there."})
        assert status == 200, wav
        samples, rate = decode_audio(wav)
        assert_is_speech(samples, rate)
        assert cloud.requests[-1] == {"model_id": "silma-tts-v2-ksa", "text": "Hello there.",
                                      "voice_id": "salma", "speed": 0.9}
        assert set(cloud.keys_seen) == {CLOUD_KEY}  # in the apiKey header: the only place

        status, _ = await api(http, bridge, "PUT", "silma", json={"api_key": "sk-v2-wrong-key"})
        assert status == 200
        status, body = await api(http, bridge, "POST", "health-check")
        assert status == 502 and list(body["errors"]) == ["api_key"]
        assert body["errors"]["api_key"] == (
            f"the TTS server at {cloud.url} refused the API key (API key refused)")

        await cloud_server.aclose()  # SILMA's API gone: the endpoint is to blame
        status, body = await api(http, bridge, "POST", "health-check")
        assert status == 502 and list(body["errors"]) == ["api_endpoint"]
        assert body["errors"]["api_endpoint"].startswith(
            f"cannot reach the TTS server at {cloud.url} (unreachable: ")


async def test_the_api_key_is_never_shown_nor_logged(tts, cloud_speech, capfd):
    async with cloud_double(cloud_speech, api_key=CLOUD_KEY, key_refusal="upgrade") as cloud, \
            bridge_and_client(tts.url) as (bridge, http):
        answers = []
        for method, path, body in [
            ("PUT", "silma", {"mode": "v2", "api_endpoint": cloud.url, "api_key": CLOUD_KEY}),
            ("GET", "silma", None),
            ("PUT", "silma", {"api_key": CLOUD_KEY, "speed": 9}),  # refused: another field
            ("PUT", "silma", {"api_key": CLOUD_KEY + "\n"}),  # refused: the key itself
            ("GET", "pool", None),
            ("POST", "health-check", None),
            ("POST", "preview", {"text": "Hi."}),
        ]:
            status, answer = await api(http, bridge, method, path, json=body)
            answers.append((method, path, status, answer))
        assert [a[2] for a in answers] == [200, 200, 400, 400, 200, 200, 200], answers
        assert answers[0][3]["api_key"] == answers[1][3]["api_key"] == "****0042"
        await log_in(http, bridge)
        async with http.get(f"{bridge.url}/settings") as page:
            answers.append(("GET", "/settings", page.status, await page.text()))
        assert 'placeholder="****0042"' in answers[-1][3]
        await api(http, bridge, "PUT", "silma", json={"api_key": "sk-other-wrong"})
        status, refused = await api(http, bridge, "POST", "health-check")
        answers.append(("POST", "health-check", status, refused))
        assert status == 502 and "api_key" in refused["errors"]
        for answer in answers:
            shown = answer[3] if isinstance(answer[3], str | bytes) else json.dumps(answer[3])
            assert CLOUD_KEY not in str(shown), answer[:3]
        assert CLOUD_KEY in cloud.keys_seen  # it was used, in the apiKey header
        logged = capfd.readouterr()
        assert CLOUD_KEY not in logged.out + logged.err
        assert "sk-other-wrong" not in logged.out + logged.err


async def test_another_users_v2_settings_cannot_be_changed(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        second, token = await bridge.context.services.store.create_user("Second")
        before = await stored(bridge)
        change = {"mode": "v2", "api_endpoint": UNREACHABLE, "api_key": "sk-stolen",
                  "v2_voice": "emma", "v2_custom_audio_id": "v", "v2_user_id": "u", "speed": 2}
        status, body = await api(http, bridge, "PUT", "silma", token=token, json=change)
        assert status == 403 and "api_key" not in body
        after = await stored(bridge)
        assert after == before  # nothing at all changed, updated_at included
        status, own = await api(http, bridge, "PUT", "silma", token=token, user=second.id,
                                json=change)
        assert (status, own["user_id"], own["mode"], own["v2_voice"]) == (
            200, second.id, "v2", "emma")
        assert await stored(bridge) == before


async def test_a_v2_endpoint_goes_through_the_ssrf_guard(tts, monkeypatch):
    async with bridge_and_client(tts.url, allow_private=False) as (bridge, http):
        for url, reason in [("http://127.0.0.1:9000/tts/v2", "private"),
                            ("ws://localhost:9000/tts/v2/ws/stream", "private"),
                            ("https://169.254.169.254/tts/v2", "metadata")]:
            status, body = await api(http, bridge, "PUT", "silma",
                                     json={"mode": "v2", "api_endpoint": url})
            assert status == 400 and list(body["errors"]) == ["api_endpoint"], url
            assert reason in body["errors"]["api_endpoint"], url
        assert (await stored(bridge)).api == ""

        # SILMA's cloud passes. Its name is faked to a public address for the save's check
        # only; the pool warmed after the save then finds no such host (no DNS off this machine).
        loop = asyncio.get_running_loop()
        answers = [[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("34.36.133.15", 443))]]

        async def getaddrinfo(host, port, **_):
            if host == "api.silma.ai" and answers:
                return answers.pop()
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
        status, body = await api(http, bridge, "PUT", "silma", json={
            "mode": "v2", "api_endpoint": "HTTPS://api.silma.ai/tts/v2/"})
        assert status == 200, body
        assert body["api_endpoint"] == body["effective_endpoint"] == v2.DEFAULT_BASE_URL
        assert answers == []  # the name was looked up and checked


async def test_the_page_renders_stored_v2_values_escaped(tts):
    async with bridge_and_client(tts.url) as (bridge, http):
        hostile = '"><script>alert(1)</script>&'
        status, _ = await api(http, bridge, "PUT", "silma", json={
            "v2_custom_audio_id": hostile, "v2_user_id": "acct'&<b>", "speed": 1.75})
        assert status == 200  # printable text is a valid id: it must be escaped, not refused
        # The page in v2 mode (set in the store: no pool warms toward SILMA's cloud).
        await bridge.context.services.store.update_silma(DEFAULT_USER_ID, api="v2")
        await log_in(http, bridge)
        async with http.get(f"{bridge.url}/settings") as response:
            page = await response.text()
        assert "<script>alert" not in page and "<b>" not in page
        assert ('value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;"' in page)
        assert 'value="acct&#x27;&amp;&lt;b&gt;"' in page
        assert 'value="1.75"' in page
        assert '<body data-user-id="default" data-mode="v2">' in page
        assert 'data-mode="v2" aria-pressed="true">SILMA public API</button>' in page
