"""OpenID Connect sign-in in a real browser against a real provider (tests/oidc_server.py).

Headless Chromium opens the portal, clicks "Sign in with Test IdP", signs in on the provider's
own page and comes back signed in; the groups claim has become the user's Django groups, and a
second sign-in after the provider changed them replaces them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User

from tests.browser import chromium_available, launch, playwright_api, screenshot
from tests.sso import configure

if TYPE_CHECKING:
    from pytest_django.fixtures import Settings

    from tests.oidc_server import OIDCProvider

pytest_plugins = ["tests.oidc_server"]
pytestmark = [
    pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing (apt-get install chromium)"),
    pytest.mark.browser,
    pytest.mark.services,
]


def sign_in(base: str, provider: OIDCProvider, username: str, start: str, shots: str = "") -> None:
    """Open ``start`` signed out, sign in through the provider, and land on ``start`` signed in.

    Runs its own Playwright session: the ORM must not be used while one is open (see
    tests/test_browser.py), and the tests check the database between sign-ins.
    """
    from playwright.sync_api import expect

    with playwright_api() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.set_default_timeout(20_000)
        page.goto(f"{base}{start}")
        page.wait_for_url(f"{base}/accounts/login/**")
        expect(page.locator("a.sso-button")).to_have_text("Sign in with Test IdP")
        if shots:
            screenshot(page, f"{shots}-1-login")

        page.click("a.sso-button")
        page.wait_for_url(f"{provider.issuer}/interaction/**")
        page.fill("#login", username)
        page.fill("#password", "not-the-password")
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_have_text("Wrong username or password.")
        page.fill("#login", username)
        page.fill("#password", provider.password(username))
        if shots:
            screenshot(page, f"{shots}-2-provider")

        page.click("button[type=submit]")
        page.wait_for_url(f"{base}{start}")
        expect(page.locator(".who .username")).to_have_text(username)
        if shots:
            screenshot(page, f"{shots}-3-signed-in")
        browser.close()


def test_login_page_without_sso_has_no_button(live_server: Any, transactional_db: None) -> None:
    from playwright.sync_api import expect

    with playwright_api() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(f"{live_server.url}/accounts/login/")
        expect(page.locator("button[type=submit]")).to_have_text("Log in")
        expect(page.locator(".sso-button")).to_have_count(0)
        screenshot(page, "sso-0-login-without-sso")
        browser.close()


def groups(username: str) -> list[str]:
    return sorted(User.objects.get(username=username).groups.values_list("name", flat=True))


def test_sign_in_with_the_provider_maps_its_groups(
    live_server: Any,
    transactional_db: None,
    oidc_provider: OIDCProvider,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Playwright's sync API keeps an event loop on this thread; Django's ORM would otherwise refuse to run here.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    configure(settings, oidc_provider.env())

    sign_in(live_server.url, oidc_provider, "carol", "/", shots="sso")
    carol = User.objects.get(username="carol")
    assert (carol.first_name, carol.last_name, carol.email) == ("Carol", "Chen", "carol@scripthut.test")
    assert groups("carol") == ["hut-admins", "physics"]
    assert carol.is_staff  # SCRIPTHUT_OIDC_STAFF_GROUP=hut-admins
    assert not carol.has_usable_password()

    # The provider moves her: the next sign-in replaces her groups (and staff flag), and
    # brings her back to the page she asked for.
    oidc_provider.set_groups("carol", ["chemistry"])
    sign_in(live_server.url, oidc_provider, "carol", "/runs")
    carol.refresh_from_db()
    assert groups("carol") == ["chemistry"]
    assert not carol.is_staff
    assert User.objects.filter(username="carol").count() == 1
