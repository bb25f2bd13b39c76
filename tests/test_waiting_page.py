"""The run page says why a ready task waits for a slot (real Chromium, real local backend)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from backends.models import Backend
from runs.actions import cancel_run, create_run
from runs.engine.tick import tick_due_backends
from tests.browser import chromium_available, launch, login, playwright_api, screenshot

pytestmark = [pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing"), pytest.mark.browser]


def test_run_page_shows_why_tasks_wait(live_server: Any, transactional_db: None, monkeypatch: Any) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import expect

    owner = User.objects.create_user("researcher", password="pw-researcher-1", is_staff=True)
    other = User.objects.create_user("colleague", password="pw-colleague-1", is_staff=True)
    backend = Backend.objects.create(name="local", kind=Backend.Kind.LOCAL, max_concurrent=2, poll_interval=1)
    sleepy = [{"id": f"long.{n}", "name": "Long", "command": "sleep 60"} for n in range(3)]
    big = create_run(owner=other, backend=backend, payload=sleepy, workflow_name="big")
    mine = create_run(
        owner=owner,
        backend=backend,
        payload=[{"id": f"mine.{n}", "name": "Mine", "command": "sleep 60"} for n in range(3)],
        workflow_name="mine",
        max_concurrent=1,
    )
    tick_due_backends(force=True)  # one slot each; my run at its own limit, the other's at the backend's
    try:
        with playwright_api() as playwright:
            browser = launch(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            login(page, live_server.url, "researcher", "pw-researcher-1")
            page.goto(f"{live_server.url}/runs/{mine.pk}")
            expect(page.locator("table.tasks")).to_contain_text("waiting: run limit, 1 of 1 running")
            screenshot(page, "workers-run-limit")
            page.goto(f"{live_server.url}/runs/{big.pk}")  # staff may see every run
            expect(page.locator("table.tasks")).to_contain_text("waiting: backend full, 2 of 2 slots in use by 2 users")
            cell = page.locator("table.tasks td.reason", has_text="waiting: backend full").first
            # Read in full, not cut off with an ellipsis by the column's width.
            assert cell.evaluate("td => td.scrollWidth <= td.clientWidth"), "the waiting reason is cut off"
            screenshot(page, "workers-backend-full")
            browser.close()
    finally:
        cancel_run(big)
        cancel_run(mine)
        tick_due_backends(force=True)
