"""The calls dashboard over one real call (real bridge, real TTS server on 127.0.0.1): the page in
headless Chromium behind the login, and the JSON it draws from behind the API token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from bridge.emulator.runner import run_call
from tests.browser import artifact_path, browser_page
from tests.servers import (
    DEFAULT_TOKEN,
    RunningBridge,
    make_settings,
    running_bridge,
    running_tts,
    wait_ended,
)

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
SAY = "Your table for two is booked for eight tonight. Anything else?"
BAR_STEPS = ("pool", "tts", "bridge", "send", "playout")


@pytest.fixture(scope="module")
async def called() -> AsyncIterator[tuple[RunningBridge, str]]:
    """A bridge that has handled one ended call: the greeting plus one said text."""
    settings = make_settings()
    async with running_tts(settings) as tts, running_bridge(settings, tts_url=tts.url) as bridge:
        report = await run_call(bridge.url, say=[SAY], max_seconds=40,
                                control_token=DEFAULT_TOKEN)
        assert report.ok, (report.error, report.protocol_violations)
        await wait_ended(bridge, report.call_sid)
        yield bridge, report.call_sid


async def test_trace_and_list_need_the_token_and_carry_the_whole_call(called):
    bridge, call_sid = called
    async with aiohttp.ClientSession() as http:
        for path in ("/calls", f"/calls/{call_sid}/trace"):
            async with http.get(f"{bridge.url}{path}") as r:
                assert r.status == 401, path
        async with http.get(f"{bridge.url}/calls/{call_sid}/trace", headers=AUTH) as r:
            assert r.status == 200
            trace = await r.json()
        async with http.get(f"{bridge.url}/calls", headers=AUTH) as r:
            assert r.status == 200
            listed = await r.json()
        async with http.get(f"{bridge.url}/calls", headers={"Accept": "text/html"},
                            allow_redirects=False) as r:
            assert r.status == 302
            assert "/login" in r.headers["Location"]

    assert trace["live"] is False and trace["call_id"] == call_sid
    assert trace["started_at"] > 0 and trace["duration_ms"] > 0
    for step in ("webhook_answered", "stream_connected", "start_received", "ended"):
        assert step in trace["steps_ms"], step
    assert [u["text"] for u in trace["utterance_traces"]][1] == SAY
    for utt in trace["utterance_traces"]:
        assert utt["outcome"] == "played"
        assert set(utt["steps_ms"]) >= {"text_received", "text_split", "pool_wait_done",
                                        "request_sent", "first_audio", "synthesis_complete",
                                        "first_frame_sent", "last_frame_sent",
                                        "playout_finished"}
        assert utt["time_to_first_audio_ms"] > 0
    assert listed["live"] == []
    (summary,) = [c for c in listed["recent"] if c["call_id"] == call_sid]
    assert summary["utterances"] == 2 and summary["first_ttfa_ms"] > 0


async def test_dashboard_lists_the_call_and_draws_its_waterfall(called):
    bridge, call_sid = called
    async with browser_page(width=1400) as page:
        from playwright.async_api import expect  # present once browser_page did not skip

        await page.goto(f"{bridge.url}/calls")
        await page.wait_for_url("**/login**")
        await page.fill("input[name=token]", DEFAULT_TOKEN)
        await page.press("input[name=token]", "Enter")
        await page.wait_for_url("**/calls")

        row = page.locator(f'#calls tr[data-call-id="{call_sid}"]')
        await expect(row).to_be_visible()
        await expect(row.locator("td").nth(1)).to_have_text("twilio")
        await expect(row.locator("td").nth(4)).to_have_text("2")
        await expect(row.locator("td").nth(7)).to_have_text("stop")
        await row.click()

        waterfall = page.locator("#waterfall svg")
        await expect(waterfall.locator("g.utt")).to_have_count(2)
        for step in BAR_STEPS:
            await expect(waterfall.locator(f'rect.bar[data-step="{step}"]')).to_have_count(2)
        await expect(waterfall.locator("g.call-step path.marker")).to_have_count(4)
        await expect(waterfall.locator("g.utt").nth(1)).to_contain_text("#1 Your table")
        await expect(waterfall.locator("text.axis-title")).to_have_text("ms from call start")
        await expect(page.locator("#legend li")).to_have_count(len(BAR_STEPS) + 4)
        await expect(page.locator("#derived tbody tr")).to_have_count(2)

        await waterfall.locator('rect.bar[data-step="send"]').first.hover()
        await expect(page.locator("#tooltip")).to_contain_text("time to first audio")
        await page.mouse.move(0, 0)  # the tooltip would hide part of the screenshot
        await expect(page.locator("#tooltip")).to_be_hidden()
        await page.screenshot(path=artifact_path("calls-dashboard.png"), full_page=True)
