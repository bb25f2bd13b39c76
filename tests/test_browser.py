"""End to end in a real browser: log in, start the demo workflow, watch it finish live."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from runs.demo import ensure_demo_setup
from runs.models import Run
from tests.browser import chromium_available, live_portal, login, screenshot

pytestmark = [
    pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing (apt-get install chromium)"),
    pytest.mark.browser,
]


def test_demo_run_updates_live_until_completed(
    live_server: Any, transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Playwright's sync API keeps an event loop on this thread; Django's ORM would
    # otherwise refuse to run here.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # The ticker thread must not keep its connection when it ends, or PostgreSQL
    # refuses to drop the test database ("being accessed by other users").
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    ensure_demo_setup()
    # Staff, like the embedded default's first user: the built-in local backend is staff only.
    User.objects.create_user("researcher", password="pw-researcher-1", is_staff=True)
    base = live_server.url

    with live_portal(base) as (context, watch):  # the whole way through, under the Content-Security-Policy
        page = context.new_page()

        login(page, base, "researcher", "pw-researcher-1")
        expect(page.locator("h1")).to_have_text("Jobs")
        screenshot(page, "01-dashboard")

        page.click("nav.mainnav >> text=Workflows")
        expect(page.locator("h1")).to_have_text("Workflows")
        screenshot(page, "02-workflows")

        page.click("button[data-dry-run='demo']")  # a POST: a dry run runs the workflow's command
        expect(page.locator("table.grid tbody tr")).to_have_count(6)
        screenshot(page, "03-dry-run")
        page.go_back()

        page.click("button[data-run='demo']")
        page.wait_for_url(re.compile(r"/runs/[0-9a-f]+$"))
        # No ORM calls in here: Playwright runs this block in a greenlet, which
        # would get a database connection of its own that nothing ever closes.
        run_id = page.url.rsplit("/", 1)[1]
        # Marks this document: it must survive until the end, i.e. no reload.
        page.evaluate("window.__noReload = true")

        # Tasks start without a reload: wait for two simulations running side by side.
        expect(page.locator("table.tasks .badge.st-running").nth(1)).to_be_visible(timeout=45_000)
        expect(page.locator("#run-status")).to_have_text("running")
        screenshot(page, "04-run-running")

        # Meanwhile, in a second tab: the jobs dashboard and the runs list show it live.
        other = context.new_page()
        other.goto(f"{base}/")
        expect(other.locator("#jobs table.grid").first.locator("tbody tr .badge").first).to_be_visible()
        screenshot(other, "01b-dashboard-running")
        other.goto(f"{base}/runs")
        expect(other.locator("table.runs .badge")).to_have_text("running")
        screenshot(other, "08b-runs-running")
        other.close()

        expect(page.locator("#run-status")).to_have_text("completed", timeout=90_000)
        expect(page.locator("#completed-count")).to_have_text("6")
        expect(page.locator("table.tasks .badge.st-completed")).to_have_count(6)
        expect(page.locator(".legend .chip-completed")).to_have_text("6 completed")
        assert page.evaluate("window.__noReload") is True, "the run page was reloaded"
        assert page.locator("#run-items[hx-trigger]").count() == 0, "polling should stop"
        screenshot(page, "05-run-completed")

        page.click(f"a[href='/runs/{run_id}/tasks/sim.3/script']")
        expect(page.locator("pre.code").first).to_contain_text("for i in 1 2 3 4")
        screenshot(page, "06-task-script")

        page.click("nav.tabs >> text=Output")
        expect(page.locator("pre.log")).to_contain_text("step 4")
        screenshot(page, "07-task-output")

        page.goto(f"{base}/runs/{run_id}/tasks/report.summary/logs/error")
        expect(page.locator("pre.log")).to_contain_text("a note on stderr")

        page.click("nav.mainnav >> text=Runs")
        expect(page.locator("table.runs tbody tr")).to_have_count(1)
        expect(page.locator("table.runs .badge")).to_have_text("completed")
        screenshot(page, "08-runs")

        page.click("nav.mainnav >> text=Jobs")
        expect(page.locator(".backend-card.bk-ok")).to_be_visible()
        screenshot(page, "09-dashboard-after")
    assert watch.problems == []
    run = Run.objects.get()
    assert run.pk == run_id and run.status == Run.Status.COMPLETED
    assert run.tasks.filter(state="completed").count() == 6
