"""The settings JSON API and login sessions on the real bridge and real TTS servers (127.0.0.1)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import re

import aiohttp
import numpy as np
import pytest

from bridge.audio.codec import decode_audio, wav_bytes
from bridge.emulator.runner import run_call
from bridge.store import DEFAULT_USER_ID
from bridge.web.auth import COOKIE, FAILED_LOGIN_LIMIT
from tests.servers import DEFAULT_TOKEN, make_settings, running_bridge, running_tts

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
        change = {"region": "eu-west"}
        status, body = await api(http, bridge, "PUT", "silma", token=None, json=change)
        assert status == 403 and "CSRF" in body["error"]
        status, _ = await api(http, bridge, "PUT", "silma", token=None, json=change,
                              headers={"X-CSRF-Token": csrf[:-2] + "xx"})
        assert status == 403
        status, body = await api(http, bridge, "PUT", "silma", token=None, json=change,
                                 headers={"X-CSRF-Token": csrf})
        assert (status, body["region"]) == (200, "eu-west")

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
