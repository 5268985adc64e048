"""The settings page in a real headless Chromium against the real bridge and TTS server."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from playwright.async_api import FilePayload

from bridge.audio.codec import wav_bytes
from tests.browser import artifact_path, browser_page
from tests.servers import DEFAULT_TOKEN, make_settings, running_bridge, running_tts


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

        # Logging out ends the session: the page sends us back to the login form.
        await page.get_by_role("button", name="Log out").click()
        await expect(page).to_have_url(re.compile(r"/login$"))
        await page.goto(f"{bridge.url}/settings")
        await expect(page).to_have_url(re.compile(r"/login\?next="))
    assert errors == []
