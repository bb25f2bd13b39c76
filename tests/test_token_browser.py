"""The API tokens page in Chromium: make a token (shown once), see it listed, use it, revoke it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from tests.browser import chromium_available, live_portal, login, screenshot

pytestmark = [
    pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing (apt-get install chromium)"),
    pytest.mark.browser,
]


def test_make_use_and_revoke_a_token(live_server: Any, transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    User.objects.create_user("researcher", password="pw-researcher-1")
    base = live_server.url
    with live_portal(base) as (context, watch):
        page = context.new_page()
        login(page, base, "researcher", "pw-researcher-1")
        page.click("nav.mainnav >> text=API tokens")
        expect(page.locator("h1")).to_have_text("API tokens")
        expect(page.locator("input[name=days]")).to_have_value("90")

        page.fill("input[name=name]", "notebook")
        page.check("input[name=scope][value=read]")
        page.click("button:has-text('Make token')")
        key = page.locator("#new-token-key").inner_text().strip()
        assert len(key) == 43
        row = page.locator("table.tokens tbody tr", has_text="notebook")
        expect(row).to_contain_text("read")
        expect(row).to_contain_text("never")  # not used yet
        screenshot(page, "tokens-01-made")

        answer = context.request.get(f"{base}/api/me", headers={"Authorization": f"Token {key}"})
        assert answer.status == 200 and answer.json()["token_scope"] == "read"
        page.goto(f"{base}/settings/tokens")
        expect(page.locator("#new-token-key")).to_have_count(0)  # shown once
        expect(row).to_contain_text("from 127.0.0.1")

        row.locator("button:has-text('Revoke')").click()
        expect(page.locator(".messages")).to_contain_text("revoked")
        expect(row).to_contain_text("revoked")
        refused = context.request.get(f"{base}/api/me", headers={"Authorization": f"Token {key}"})
        assert refused.status == 401 and "was revoked" in refused.json()["error"]
        screenshot(page, "tokens-02-revoked")
    assert watch.problems == []
