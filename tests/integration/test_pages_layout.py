"""The pages as a newcomer meets them, in headless Chromium against the real bridge and TTS
server: `/` leads to the calls page (through the login page), the pages link to each other, and
each fits a 390 px phone and a 1280 px screen, the calls page with its whole waterfall in view.
The settings page says what calls use, resolved as calls resolve it, and how its last health
check went. Screenshots go to artifacts/."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Page

from bridge.emulator.runner import run_call
from bridge.settings import Settings
from bridge.store import DEFAULT_USER_ID
from tests.browser import artifact_path, browser_page
from tests.servers import (
    DEFAULT_TOKEN,
    RunningBridge,
    make_settings,
    running_bridge,
    running_tts,
    wait_ended,
)

WIDTHS = (390, 1280)
SAY = "Your table for two is booked for eight tonight. Anything else?"
DOCUMENT_OVERFLOW = ("() => document.documentElement.scrollWidth"
                     " - document.documentElement.clientWidth")


@pytest.fixture(scope="module")
def settings() -> Settings:
    base = make_settings()
    return base.replace(silma=dataclasses.replace(base.silma, allow_private_endpoints=True))


@pytest.fixture(scope="module")
async def tts(settings: Settings):
    async with running_tts(settings) as server:
        yield server


@pytest.fixture(scope="module")
async def called(settings: Settings, tts) -> AsyncIterator[tuple[RunningBridge, str]]:
    """A bridge on the TTS server that has handled one ended call."""
    async with running_bridge(settings, tts_url=tts.url) as bridge:
        report = await run_call(bridge.url, say=[SAY], max_seconds=40,
                                control_token=DEFAULT_TOKEN)
        assert report.ok, (report.error, report.protocol_violations)
        await wait_ended(bridge, report.call_sid)
        yield bridge, report.call_sid


async def log_in(page: Page, bridge_url: str, path: str) -> None:
    """From `path`, through the login form, back to `path`'s page."""
    from playwright.async_api import expect

    await page.goto(f"{bridge_url}{path}")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await page.fill("#token", DEFAULT_TOKEN)
    await page.press("#token", "Enter")


async def assert_fits(page: Page, what: str) -> None:
    overflow = await page.evaluate(DOCUMENT_OVERFLOW)
    assert overflow <= 0, f"{what}: the page is {overflow} px wider than the screen"


async def test_the_root_leads_to_the_calls_page_through_the_login(called):
    bridge, _ = called
    # unsafe: the jar keeps cookies for an IP address (the bridge on 127.0.0.1).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{bridge.url}/", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "/login?next=/")
        async with http.post(f"{bridge.url}/login", allow_redirects=False,
                             data={"token": DEFAULT_TOKEN, "next": "/"}) as r:
            assert (r.status, r.headers["Location"]) == (303, "/")
        async with http.get(f"{bridge.url}/", allow_redirects=False) as r:  # now signed in
            assert (r.status, r.headers["Location"]) == (302, "/calls")
    async with browser_page() as page:
        from playwright.async_api import expect

        await log_in(page, bridge.url, "/")
        await expect(page).to_have_url(f"{bridge.url}/calls")
        await expect(page.get_by_role("heading", name="Live and recent calls")).to_be_visible()


@pytest.mark.parametrize("width", WIDTHS)
async def test_both_pages_fit_the_screen_and_link_to_each_other(called, width: int):
    bridge, call_sid = called
    errors: list[str] = []
    async with browser_page(width=width, height=844) as page:
        from playwright.async_api import expect

        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{bridge.url}/login")
        await assert_fits(page, "login")
        await log_in(page, bridge.url, "/calls")
        await expect(page).to_have_url(f"{bridge.url}/calls")
        nav = page.get_by_role("navigation", name="Pages")
        await expect(nav.get_by_role("link", name="Calls")).to_have_attribute(
            "aria-current", "page")

        await page.locator(f'#calls tr[data-call-id="{call_sid}"]').click()
        waterfall = page.locator("#waterfall")
        ended = waterfall.locator('g.call-step[data-step="ended"] path.marker')
        await expect(ended).to_be_visible()
        await expect(page.locator("#derived tbody tr")).to_have_count(2)
        await assert_fits(page, "calls")
        # The whole call is drawn inside its box: its end, not only the first seconds.
        box, end = await waterfall.bounding_box(), await ended.bounding_box()
        assert box is not None and end is not None
        assert box["x"] <= end["x"] and end["x"] + end["width"] <= box["x"] + box["width"]
        svg_width = await waterfall.locator("svg").evaluate("svg => svg.width.baseVal.value")
        assert svg_width <= await waterfall.evaluate("el => el.clientWidth")
        await page.screenshot(path=artifact_path(f"calls-{width}.png"), full_page=True)

        await nav.get_by_role("link", name="Settings").click()
        await expect(page).to_have_url(f"{bridge.url}/settings")
        await expect(page.get_by_role("navigation", name="Pages").get_by_role(
            "link", name="Settings")).to_have_attribute("aria-current", "page")
        await expect(page.locator("#effective-health")).to_contain_text("Reachable")
        await expect(page.locator("#connections tbody tr").first).to_be_visible()
        await assert_fits(page, "settings")
        await page.screenshot(path=artifact_path(f"settings-{width}.png"), full_page=True)

        await page.get_by_role("navigation", name="Pages").get_by_role(
            "link", name="Calls").click()
        await expect(page).to_have_url(f"{bridge.url}/calls")
    assert errors == []


async def test_with_nothing_configured_the_page_names_the_local_server(settings: Settings, tts):
    """`make run`'s case: no endpoint anywhere, so calls speak through the bridge's local TTS
    server (here the one a `serve --workers` parent would run: our TTS server, named in
    BRIDGE_SILMA_LOCAL_SERVER_URL), while "API Server (Fast)" is the mode chosen."""
    local = settings.replace(silma=dataclasses.replace(settings.silma,
                                                       local_server_url=tts.url))
    async with running_bridge(local, tts_url="") as bridge, browser_page() as page:
        from playwright.async_api import expect

        await log_in(page, bridge.url, "/settings")
        await expect(page.get_by_role("button", name="API Server (Fast)")).to_have_attribute(
            "aria-pressed", "true")
        await expect(page.locator("#effective-summary")).to_have_text(
            "the bridge's local TTS server")
        await expect(page.locator("#effective-endpoint")).to_have_text(tts.url)
        await expect(page.locator("#effective-note")).to_contain_text(
            "No endpoint is set here and the bridge has none")
        await expect(page.locator("#effective-health")).to_contain_text("Reachable")

        # Local mode says the same server, without the fallback's explanation.
        await page.get_by_role("button", name="Local", exact=True).click()
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#server-status")).to_have_text(re.compile("^Saved"))
        await expect(page.locator("#effective-summary")).to_have_text(
            "the bridge's local TTS server")
        await expect(page.locator("#effective-note")).to_be_hidden()
        await page.screenshot(path=artifact_path("settings-local-1280.png"), full_page=True)


async def test_an_unreachable_endpoint_is_reported_from_the_pools_last_check(called):
    bridge, _ = called
    services = bridge.context.services
    async with browser_page(width=390, height=844) as page:
        from playwright.async_api import expect

        await log_in(page, bridge.url, "/settings")
        await page.fill("#api_endpoint", "http://127.0.0.1:9")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#server-status")).to_have_text(re.compile("^Saved"))
        await expect(page.locator("#effective-summary")).to_have_text("your endpoint")
        await expect(page.locator("#effective-endpoint")).to_have_text("http://127.0.0.1:9")
        health = page.locator("#effective-health")
        await expect(health).to_contain_text("Unreachable")
        await expect(health).to_contain_text("Calls hear silence")
        await expect(health).to_have_class("bad")
        await expect(page.locator("#stat-health")).to_contain_text("unreachable")
        await assert_fits(page, "settings, unreachable")

        # Page views read the pool's last check; they do not make one (a user could otherwise
        # probe any address by reloading).
        pool = await services.pools.pool_for(await services.targets.for_user(DEFAULT_USER_ID))
        checked_at = pool.stats()["server_health"]["checked_at"]
        for _ in range(2):
            await page.reload()
            await expect(health).to_contain_text("Unreachable")
        assert pool.stats()["server_health"]["checked_at"] == checked_at
        await page.screenshot(path=artifact_path("settings-unreachable-390.png"), full_page=True)

        await page.fill("#api_endpoint", "")  # back to the bridge's endpoint
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#effective-summary")).to_have_text("the bridge's endpoint")
        await expect(health).to_contain_text("Reachable")


async def test_a_region_without_a_server_is_refused_by_name(called):
    bridge, _ = called
    store = bridge.context.services.store
    async with browser_page() as page:
        from playwright.async_api import expect

        await log_in(page, bridge.url, "/settings")
        select = page.locator("#region-select")
        await expect(select.locator('option[value="us-east"]')).to_have_text(
            "US East (Virginia) (no server on this bridge)")
        await select.select_option("us-east")
        await expect(page.locator("#region-status")).to_have_text("Not saved.")
        await expect(page.locator("#error-region")).to_have_text(
            "this bridge has no server in US East (Virginia): it has no API server regions, "
            "so keep Auto-detect")
        await expect(select).to_have_value("auto")  # what is stored, and what calls use
    row = await store.silma(DEFAULT_USER_ID)
    assert row is not None and row.region == "auto"


async def test_a_configured_region_is_accepted_and_named_as_what_calls_use(
        settings: Settings, tts):
    regional = settings.replace(silma=dataclasses.replace(
        settings.silma, regions={"eu-west": tts.url}))
    async with running_bridge(regional, tts_url="") as bridge, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
        url = f"{bridge.url}/api/users/{DEFAULT_USER_ID}/silma"
        async with http.put(url, json={"region": "us-east"}, headers=auth) as r:
            assert r.status == 400
            assert (await r.json())["errors"] == {"region": (
                "this bridge has no server in US East (Virginia): choose Auto-detect or one "
                "of EU West (London)")}
        async with http.put(url, json={"region": "eu-west"}, headers=auth) as r:
            assert r.status == 200
            view = await r.json()
    assert view["region"] == "eu-west"
    assert view["effective"] == {"kind": "region", "endpoint": tts.url, "note": "",
                                 "summary": "the EU West (London) region's server"}
