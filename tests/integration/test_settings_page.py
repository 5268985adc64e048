"""The settings page in a real headless Chromium against the real bridge and TTS server."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from playwright.async_api import FilePayload, Page

from bridge.audio.codec import wav_bytes
from bridge.store import DEFAULT_USER_ID, SilmaCredentials
from bridge.tts_server.engines.piper import PiperEngine
from tests.browser import artifact_path, browser_page
from tests.servers import DEFAULT_TOKEN, RunningBridge, make_settings, running_bridge, running_tts
from tests.v2_double import cloud_double, piper_speech


def clip_wav() -> bytes:
    t = np.arange(24000) / 16000
    return wav_bytes((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16000)


@pytest.fixture(scope="module")
async def bridge_and_tts():
    settings = make_settings()
    settings = settings.replace(silma=dataclasses.replace(settings.silma,
                                                          allow_private_endpoints=True))
    async with running_tts(settings) as tts, running_bridge(settings, tts_url=tts.url) as running:
        yield running, tts.url


async def test_settings_page_end_to_end(bridge_and_tts):
    bridge, tts_url = bridge_and_tts
    errors: list[str] = []
    async with browser_page() as page:
        from playwright.async_api import expect  # after browser_page: it explains a missing package

        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # Not logged in: the login form, which refuses a wrong token and accepts the right one.
        await page.goto(f"{bridge.url}/settings")
        await expect(page).to_have_url(re.compile(r"/login\?next=/settings$"))
        await page.fill("#token", "not-my-token")
        await page.click("button[type=submit]")
        await expect(page.locator("#error-token")).to_contain_text("not valid")
        await page.fill("#token", DEFAULT_TOKEN)
        await page.click("button[type=submit]")
        await expect(page).to_have_url(f"{bridge.url}/settings")
        await expect(page.get_by_role("heading", name="SILMA TTS")).to_be_visible()
        for title in ("Server Configuration", "API Server Region",
                      "Connection pool statistics", "Voice"):
            await expect(page.get_by_role("heading", name=title)).to_be_visible()

        # Local hides the endpoint; API Server (Fast) shows it, highlighted.
        local = page.get_by_role("button", name="Local", exact=True)
        api_server = page.get_by_role("button", name="API Server (Fast)")
        endpoint = page.locator("#api_endpoint")
        await local.click()
        await expect(local).to_have_class(re.compile(r"\bselected\b"))
        await expect(endpoint).to_be_hidden()
        await api_server.click()
        await expect(api_server).to_have_attribute("aria-pressed", "true")
        await expect(endpoint).to_be_visible()
        await endpoint.fill(tts_url + "/")
        await page.fill("#api_key", "my-tts-api-key-0001")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#server-status")).to_have_text(re.compile("^Saved"))
        await expect(page.locator("#effective-endpoint")).to_have_text(tts_url)
        await expect(page.locator("#effective-summary")).to_have_text("your endpoint")
        await expect(page.locator("#api_key")).to_have_attribute("placeholder", "****0001")
        await expect(page.locator("#api_key")).to_have_value("")

        # Regions: none configured on this bridge, and it says so.
        await expect(page.locator("#region-select")).to_have_value("auto")
        await expect(page.locator("#region-measurements")).to_contain_text("No API server regions")

        # Pool statistics fill in from the JSON API.
        await expect(page.locator("#stat-ready")).to_have_text(re.compile(r"^\d+$"))
        await expect(page.locator("#stat-ratio")).to_have_text(re.compile(r"^\d+ %$"))
        await expect(page.locator("#stat-ratio-target")).to_have_text("target 80 %")
        await expect(page.locator("#connections tbody tr").first).to_be_visible()
        # One row per TTS server (this target has one): its endpoint, counts, state.
        server = page.locator("#servers tbody tr")
        await expect(server).to_have_count(1)
        await expect(server.first.locator("td").first).to_have_text(
            tts_url.replace("http", "ws") + "/ws")
        await expect(page.locator("#pool-endpoint")).to_have_text(
            tts_url.replace("http", "ws") + "/ws")

        await page.get_by_role("button", name="Check health now").click()
        await expect(page.locator("#health-result")).to_contain_text("Healthy")
        await expect(page.locator("#stat-health")).to_have_text("ok")

        # Voice: upload a clip with its transcript, then hear a preview.
        clip: FilePayload = {"name": "me.wav", "mimeType": "audio/wav", "buffer": clip_wav()}
        await page.set_input_files("#clip", files=[clip])
        await page.fill("#transcript", "This is my voice.")
        await page.get_by_role("button", name="Upload voice").click()
        await expect(page.locator("#voice-status")).to_have_text("Voice saved.")
        await expect(page.locator("#voice-summary")).to_contain_text("This is my voice.")
        await page.get_by_role("button", name="Preview").click()
        await page.wait_for_function(
            "() => { const a = document.getElementById('preview-audio');"
            " return a.src.startsWith('blob:') && a.duration > 0 && isFinite(a.duration); }")

        # A bad URL: the error appears right under the endpoint field, and nothing is saved.
        await endpoint.fill("ftp://tts.example.com")
        await page.get_by_role("button", name="Save").click()
        error = page.locator("#error-api_endpoint")
        await expect(error).to_contain_text("http://, https://, ws:// or wss://")
        assert await endpoint.evaluate("el => el.nextElementSibling.id") == "error-api_endpoint"
        await expect(page.locator("#server-status")).to_have_text("Not saved.")
        await page.screenshot(path=artifact_path("settings-page.png"), full_page=True)

        # An unreachable server: the health check blames the endpoint field.
        await endpoint.fill("http://127.0.0.1:9")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#server-status")).to_have_text(re.compile("^Saved"))
        await expect(error).to_be_empty()
        await page.get_by_role("button", name="Check health now").click()
        await expect(error).to_contain_text("cannot reach the TTS server at http://127.0.0.1:9")
        await expect(page.locator("#health-result")).to_contain_text("Unhealthy")
        await expect(page.locator("#effective-health")).to_contain_text("Unreachable")

        # Logging out ends the session: the page sends us back to the login form.
        await page.get_by_role("button", name="Log out").click()
        await expect(page).to_have_url(re.compile(r"/login$"))
        await page.goto(f"{bridge.url}/settings")
        await expect(page).to_have_url(re.compile(r"/login\?next="))
    assert errors == []


CLOUD_KEY = "sk-cloud-page-key-0007"


@pytest.fixture(scope="module")
async def cloud(piper_engine: PiperEngine):
    """SILMA's public API (a double on 127.0.0.1), refusing a wrong key at the upgrade."""
    speech = await piper_speech(piper_engine, "Hello from the public API.")
    async with cloud_double(speech, api_key=CLOUD_KEY, key_refusal="upgrade") as double:
        yield double


async def log_in(page: Page, bridge_url: str) -> None:
    from playwright.async_api import expect

    await page.goto(f"{bridge_url}/login?next=/settings")
    await page.fill("#token", DEFAULT_TOKEN)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{bridge_url}/settings")


async def stored(bridge: RunningBridge) -> SilmaCredentials:
    row = await bridge.context.services.store.silma(DEFAULT_USER_ID)
    assert row is not None
    return row


async def test_silma_public_api_mode_shows_its_fields_and_saves_them(bridge_and_tts, cloud):
    bridge, tts_url = bridge_and_tts
    errors: list[str] = []
    async with browser_page() as page:
        from playwright.async_api import expect

        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await log_in(page, bridge.url)
        buttons = {name: page.get_by_role("button", name=name, exact=True)
                   for name in ("Local", "API Server (Fast)", "SILMA public API")}
        endpoint = page.locator("#api_endpoint")
        v2_fields = [page.locator(f"#{f}") for f in
                     ("v2_model", "v2_voice", "v2_custom_audio_id", "v2_user_id")]
        ours = [page.locator("#region"), page.locator("#clip"), page.locator("#voice-summary")]

        await buttons["API Server (Fast)"].click()
        await expect(endpoint).to_have_attribute("placeholder", "https://tts.example.com")
        for field in v2_fields:
            await expect(field).to_be_hidden()
        for field in ours:
            await expect(field).to_be_visible()

        # The third choice, in the same control: pressed alone, its fields shown, ours hidden.
        await buttons["SILMA public API"].click()
        for name, button in buttons.items():
            pressed = name == "SILMA public API"
            await expect(button).to_have_attribute("aria-pressed", str(pressed).lower())
            await expect(button).to_have_class(
                re.compile(r"\bselected\b") if pressed else re.compile(r"^(?!.*\bselected\b)"))
        for field in [endpoint, page.locator("#api_key"), *v2_fields, page.locator("#speed")]:
            await expect(field).to_be_visible()
        for field in ours:
            await expect(field).to_be_hidden()
        await expect(endpoint).to_have_attribute("placeholder", "https://api.silma.ai/tts/v2")
        await expect(page.locator("#endpoint-hint")).to_have_text(  # the v2 half alone shows
            "Empty = SILMA's cloud (https://api.silma.ai/tts/v2).", use_inner_text=True)
        await expect(page.locator("#api_key")).to_have_attribute("type", "password")
        await expect(page.locator("#voice-v2-note")).to_contain_text("does not apply")
        await expect(page.locator("#preview-text")).to_be_visible()  # previews speak v2 too
        await expect(page.locator("#v2_model option")).to_have_text([
            re.compile(r"^Bridge default \(silma-tts-v2-msa\)$"),
            re.compile(r"\(silma-tts-v2-english\)$"), re.compile(r"\(silma-tts-v2-msa\)$"),
            re.compile(r"\(silma-tts-v2-ksa\)$")])
        voices = page.locator("#v2-voices option")
        assert await voices.evaluate_all("os => os.map(o => o.value)") == [
            "james", "emma", "sarah", "salma", "salwa", "saja", "sultan", "salman", "sulaiman",
            "salim"]

        # Errors from the API show under their own fields; nothing is stored.
        await endpoint.fill(cloud.url)
        await page.fill("#api_key", CLOUD_KEY)
        await page.select_option("#v2_model", "silma-tts-v2-english")
        await page.fill("#v2_voice", "Emma!")
        await page.fill("#v2_custom_audio_id", "voice_7")
        await page.fill("#speed", "3")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#server-status")).to_have_text("Not saved.")
        for name, message in [("v2_voice", "lower-case letters"), ("speed", "from 0.5 to 2")]:
            await expect(page.locator(f"#error-{name}")).to_contain_text(message)
            assert await page.locator(f"#{name}").evaluate(
                "el => el.nextElementSibling.id") == f"error-{name}"
        assert (await stored(bridge)).api != "v2"
        await page.fill("#v2_voice", "emma")
        await page.fill("#speed", "fast")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#error-speed")).to_contain_text("must be a number")
        await expect(page.locator("#error-v2_voice")).to_be_empty()
        await page.fill("#speed", "1.2")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#error-v2_user_id")).to_have_text(
            "custom_audio_id needs user_id")
        await expect(page.locator("#error-speed")).to_be_empty()

        await page.fill("#v2_user_id", " acct-7 ")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#server-status")).to_have_text(re.compile("^Saved"))
        await expect(page.locator("#error-v2_user_id")).to_be_empty()
        await expect(page.locator("#effective-endpoint")).to_have_text(cloud.url)
        await expect(page.locator("#v2_user_id")).to_have_value("acct-7")  # as stored
        await expect(page.locator("#api_key")).to_have_value("")
        await expect(page.locator("#api_key")).to_have_attribute("placeholder", "****0007")
        row = await stored(bridge)
        assert (row.is_local, row.api, row.api_endpoint, row.api_key) == (
            False, "v2", cloud.url, CLOUD_KEY)
        assert (row.v2_model, row.v2_voice, row.v2_custom_audio_id, row.v2_user_id,
                row.speed) == ("silma-tts-v2-english", "emma", "voice_7", "acct-7", 1.2)

        # The pool and the health check are the v2 server's; the preview speaks through it.
        await page.get_by_role("button", name="Check health now").click()
        await expect(page.locator("#health-result")).to_contain_text("Healthy")
        await expect(page.locator("#pool-endpoint")).to_have_text(
            cloud.url.replace("http", "ws") + "/ws/stream")
        await page.get_by_role("button", name="Preview").click()
        await page.wait_for_function(
            "() => { const a = document.getElementById('preview-audio');"
            " return a.src.startsWith('blob:') && a.duration > 0 && isFinite(a.duration); }")
        assert cloud.requests[-1]["voice_id"] == "emma"
        assert cloud.requests[-1]["custom_audio_id"] == "voice_7"

        # A reload shows what is stored, rendered by the server.
        await page.reload()
        await expect(buttons["SILMA public API"]).to_have_attribute("aria-pressed", "true")
        await expect(page.locator("#v2_model")).to_have_value("silma-tts-v2-english")
        await expect(page.locator("#v2_voice")).to_have_value("emma")
        await expect(page.locator("#speed")).to_have_value("1.2")
        await expect(page.locator("#region")).to_be_hidden()
        await page.screenshot(path=artifact_path("settings-page-v2.png"), full_page=True)

        # Saving another mode sends only its fields: the hidden v2 edit is not stored, and an
        # empty speed goes back to the bridge's.
        await page.fill("#v2_voice", "james")
        await buttons["API Server (Fast)"].click()
        await expect(page.locator("#v2_voice")).to_be_hidden()
        await expect(page.locator("#region")).to_be_visible()
        await endpoint.fill(tts_url)
        await page.fill("#speed", "")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#server-status")).to_have_text(re.compile("^Saved"))
        await expect(page.locator("#effective-endpoint")).to_have_text(tts_url)
        row = await stored(bridge)
        assert (row.api, row.api_endpoint, row.v2_voice, row.speed) == (
            "silma", tts_url, "emma", None)
    assert errors == []


async def test_every_mode_fits_a_390_px_phone(bridge_and_tts):
    bridge, _ = bridge_and_tts
    async with browser_page(width=390, height=844) as page:
        from playwright.async_api import expect

        await log_in(page, bridge.url)
        await expect(page.locator("#stat-ready")).to_have_text(re.compile(r"^\d+$"))  # filled
        for name in ("Local", "API Server (Fast)", "SILMA public API"):
            button = page.get_by_role("button", name=name, exact=True)
            await button.click()
            await expect(button).to_have_attribute("aria-pressed", "true")
            overflow = await page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{name}: the page is {overflow} px wider than the screen"
            box = await button.bounding_box()
            assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= 390, name
        await page.screenshot(path=artifact_path("settings-page-390.png"), full_page=True)
