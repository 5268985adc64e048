"""A real headless browser for page tests: Playwright driving the system's Chromium.

    async with browser_page() as page:
        await page.goto(url)

Without Chromium (or the playwright package) a test using this is skipped, or fails with a clear
message when CI=true: CI must not pass by silently skipping the browser tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
TIMEOUT_MS = 15_000
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def _chromium_installed() -> bool:
    return Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is not None


def _unavailable(reason: str) -> None:
    message = f"browser tests need {reason} (set CHROMIUM_PATH to another Chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextlib.asynccontextmanager
async def browser_page(*, width: int = 1280, height: int = 900) -> AsyncIterator[Page]:
    """A fresh page in a fresh headless Chromium (its own cookies), closed afterwards."""
    if not _chromium_installed():
        _unavailable(f"Chromium at {CHROMIUM}")
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        _unavailable("the playwright package (pip install -e '.[test]')")
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            await browser.close()


def artifact_path(name: str) -> Path:
    """Where a test saves a screenshot or other output (artifacts/ is git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
