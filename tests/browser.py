"""Shared Playwright helpers: the system Chromium, logging in, optional screenshots.

The browser is Debian's /usr/bin/chromium: ``playwright install`` is never run.
Screenshots are written only when ``SCRIPTHUT_SCREENSHOTS`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_DIR = Path(__file__).resolve().parent.parent / "screenshots"


def chromium_available() -> bool:
    if os.environ.get("CI") and not Path(CHROMIUM).exists():
        # CI installs Chromium (tests/setup/services.sh): a skip there would hide a broken setup.
        raise RuntimeError(f"{CHROMIUM} is missing in CI")
    return Path(CHROMIUM).exists()


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)


def login(page: Page, base_url: str, username: str, password: str) -> None:
    """Log in through the real login form and wait for the dashboard."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def screenshot(page: Page, name: str) -> Path | None:
    """Save a full-page PNG as screenshots/<name>.png when SCRIPTHUT_SCREENSHOTS is set."""
    if not os.environ.get("SCRIPTHUT_SCREENSHOTS"):
        return None
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
