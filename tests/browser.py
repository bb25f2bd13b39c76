"""Shared Playwright helpers: the system Chromium, logging in, optional screenshots.

The browser is Debian's /usr/bin/chromium: ``playwright install`` is never run.
Screenshots are written only when ``SCRIPTHUT_SCREENSHOTS`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

from tests.markers import require

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, Request, Response

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
    require("browser", "Chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)


def login(page: Page, base_url: str, username: str, password: str) -> None:
    """Log in through the real login form and wait for the dashboard."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


# Runs in every page before its own scripts: reports each violation of the page's policy.
VIOLATION_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => window.reportPolicyViolation(
  `${e.effectiveDirective} refused ${e.blockedURI || "inline code"}` +
  ` (${e.sourceFile || location.href}:${e.lineNumber})`));
"""


class PolicyWatch:
    """What a browser context saw against the portal's Content-Security-Policy, in ``problems``:
    violations (the DOM event and the console's messages), pages served without a strict
    policy, and anything fetched from elsewhere than the portal."""

    def __init__(self, context: BrowserContext, base_url: str):
        self.base_url = base_url
        self.problems: list[str] = []
        context.expose_function("reportPolicyViolation", lambda text: self.problems.append(f"violation: {text}"))
        context.add_init_script(VIOLATION_LISTENER)
        context.on("console", self._console)
        context.on("request", self._request)
        context.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.problems.append(f"console: {message.text}")

    def _request(self, request: Request) -> None:
        if not request.url.startswith((self.base_url + "/", "data:")):
            self.problems.append(f"fetched from elsewhere: {request.url}")

    def _response(self, response: Response) -> None:
        if response.request.resource_type != "document" or not response.url.startswith(self.base_url):
            return
        policy = response.headers.get("content-security-policy", "")
        if "default-src 'self'" not in policy or "unsafe-" in policy:
            self.problems.append(f"no strict policy on {response.url}: {policy!r}")


@contextmanager
def playwright_api() -> Iterator[Playwright]:
    """Playwright's synchronous API, open for the block. Its event loop runs on this thread, so
    the test's database calls inside the block get connections of their own (Django keeps a
    thread's connections per asyncio context while a loop runs); they are closed on the way
    out, or they would stay open and PostgreSQL could not drop the test database."""
    from django.db import connections
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            yield playwright
        finally:
            with mock.patch.dict(os.environ, {"DJANGO_ALLOW_ASYNC_UNSAFE": "true"}):  # the loop is Playwright's
                connections.close_all()


@contextmanager
def live_portal(base_url: str) -> Iterator[tuple[BrowserContext, PolicyWatch]]:
    """A browser context on the live server (20 s timeouts), watched by a :class:`PolicyWatch`,
    while an embedded ticker drives the runs."""
    from runs.workers.ticker import EmbeddedTicker

    ticker = EmbeddedTicker(interval=0.3)
    ticker.start()
    try:
        with playwright_api() as playwright:
            browser = launch(playwright)
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(20_000)
            yield context, PolicyWatch(context, base_url)
            browser.close()
    finally:
        ticker.stop()
        ticker.join()


def screenshot(page: Page, name: str) -> Path | None:
    """Save a full-page PNG as screenshots/<name>.png when SCRIPTHUT_SCREENSHOTS is set."""
    if not os.environ.get("SCRIPTHUT_SCREENSHOTS"):
        return None
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
