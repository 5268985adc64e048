"""The settings page's pronunciation table in a real headless Chromium, on a 390 px phone screen,
against the real bridge and TTS server: add, edit, remove, save, reload; field errors."""

from __future__ import annotations

import re

from bridge.call.lexicon import MAX_WRITTEN_CHARS
from bridge.store import DEFAULT_USER_ID, PronunciationOverride
from tests.browser import artifact_path, browser_page
from tests.servers import DEFAULT_TOKEN, make_settings, running_bridge, running_tts

PHONE = 390


async def test_a_user_keeps_a_pronunciation_list_on_a_phone() -> None:
    settings = make_settings()
    errors: list[str] = []
    async with running_tts(settings) as tts, running_bridge(settings, tts_url=tts.url) as bridge, \
            browser_page(width=PHONE, height=844) as page:
        from playwright.async_api import expect  # after browser_page: it explains a missing package

        store = bridge.context.services.store
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{bridge.url}/login?next=/settings")
        await page.fill("#token", DEFAULT_TOKEN)
        await page.click("button[type=submit]")
        await expect(page).to_have_url(f"{bridge.url}/settings")
        await expect(page.get_by_role("heading", name="Pronunciation")).to_be_visible()
        await expect(page.locator("#overrides-empty")).to_be_visible()

        rows = page.locator("#overrides tbody tr")
        add = page.get_by_role("button", name="Add word")
        save = page.get_by_role("button", name="Update pronunciations")
        saved = page.locator("#pronunciation-status")
        entries = [("Qatar", "Katar"), ("SILMA", "Silma"), ("محمد", "مُحَمَّد"),
                   ("x" * (MAX_WRITTEN_CHARS + 1), "too long")]
        for number, (written, spoken) in enumerate(entries, start=1):
            await add.click()
            await expect(rows).to_have_count(number)
            await page.get_by_label(f"Written form, row {number}").fill(written)
            await page.get_by_label(f"Spoken form, row {number}").fill(spoken)
        await page.get_by_label("Match case, row 2").check()
        await expect(page.locator("#overrides-empty")).to_be_hidden()

        # Too long: the error shows under that very field, and nothing is stored.
        await save.click()
        await expect(saved).to_have_text("Not saved.")
        error = page.locator('[id="error-overrides.3.written"]')
        await expect(error).to_contain_text(f"at most {MAX_WRITTEN_CHARS} characters")
        assert await page.get_by_label("Written form, row 4").evaluate(
            "el => el.nextElementSibling.id") == "error-overrides.3.written"
        assert await store.pronunciation(DEFAULT_USER_ID) == []
        await page.screenshot(path=artifact_path("settings-pronunciation-error-390.png"),
                              full_page=True)

        # Remove it, edit another, save: stored as shown, the error gone.
        await rows.nth(3).get_by_role("button", name="Remove").click()
        await expect(rows).to_have_count(3)
        await page.get_by_label("Spoken form, row 1").fill("Kattar")
        await save.click()
        await expect(saved).to_have_text(re.compile("^Saved"))
        await expect(page.locator('[id="error-overrides.3.written"]')).to_have_count(0)
        assert await store.pronunciation(DEFAULT_USER_ID) == [
            PronunciationOverride("Qatar", "Kattar"), PronunciationOverride("SILMA", "Silma", True),
            PronunciationOverride("محمد", "مُحَمَّد")]

        # A reload shows the list as stored, rendered by the server.
        await page.reload()
        await expect(rows).to_have_count(3)
        for number, (written, spoken) in enumerate(
                [("Qatar", "Kattar"), ("SILMA", "Silma"), ("محمد", "مُحَمَّد")], start=1):
            await expect(page.get_by_label(f"Written form, row {number}")).to_have_value(written)
            await expect(page.get_by_label(f"Spoken form, row {number}")).to_have_value(spoken)
        await expect(page.get_by_label("Match case, row 2")).to_be_checked()
        await expect(page.get_by_label("Match case, row 1")).not_to_be_checked()

        # Usable at 390 px: nothing wider than the screen, every control on it.
        overflow = await page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than the screen"
        for control in [add, save, rows.nth(2).get_by_role("button", name="Remove"),
                        page.get_by_label("Spoken form, row 3")]:
            box = await control.bounding_box()
            assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= PHONE
        await page.screenshot(path=artifact_path("settings-pronunciation-390.png"),
                              full_page=True)
    assert errors == []
