"""/schedules in a real browser, under the portal's Content-Security-Policy: a schedule made
from the workflows page's button, listed with its next fire time; a bad cron named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from backends.models import Backend
from runs.models import Schedule, Workflow
from tests.browser import PolicyWatch, chromium_available, launch, login, playwright_api, screenshot
from tests.conftest import local_user

pytestmark = [pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing"), pytest.mark.browser]


def test_a_schedule_made_from_the_workflows_page(
    live_server: Any, transactional_db: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    local_user("alice", "pw-alice-123")
    backend = Backend.objects.create(name="local", kind=Backend.Kind.LOCAL, max_concurrent=4)
    backend.allowed_groups.add(*local_user("bob", "pw-bob-12345").groups.all())
    (tmp_path / "w.json").write_text(json.dumps({"tasks": [{"id": "t", "name": "t", "command": "true"}]}))
    Workflow.objects.create(name="refresh", backend=backend, command=f"cat {tmp_path / 'w.json'}")
    base = live_server.url
    with playwright_api() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(20_000)
        watch = PolicyWatch(context, base)
        page = context.new_page()
        login(page, base, "alice", "pw-alice-123")
        page.goto(f"{base}/workflows")
        page.click("table a.btn:has-text('Schedule')")
        expect(page.locator("#s-workflow")).to_have_value("refresh")
        page.fill("#s-name", "nightly")
        page.fill("#s-cron", "0 2 * * 9")  # no day 9 of the week
        page.fill("#s-timezone", "Europe/Paris")
        page.click("text=Make schedule")
        expect(page.locator(".alert.error")).to_contain_text("out of range")
        page.fill("#s-cron", "0 2 * * *")
        page.click("text=Make schedule")
        row = page.locator('tr[data-schedule="nightly"]')
        expect(row).to_contain_text("Europe/Paris")
        expect(row).to_contain_text("UTC")  # the next fire time
        expect(row).to_contain_text("never")  # not fired yet
        screenshot(page, "schedules")
        browser.close()
    assert Schedule.objects.get().owner.username == "alice"
    assert watch.problems == []
