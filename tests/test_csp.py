"""The Content-Security-Policy (django-csp) in a real browser: every page, its htmx polling and
the admin work under it, with no violation reported and nothing fetched from elsewhere."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from backends.models import Backend
from runs.actions import create_run
from runs.demo import ensure_demo_setup
from tests.browser import chromium_available, live_portal, login

if TYPE_CHECKING:
    from playwright.sync_api import Dialog

pytestmark = pytest.mark.skipif(
    not chromium_available(), reason="/usr/bin/chromium is missing (apt-get install chromium)"
)


def gated_task(gate: Path) -> list[dict[str, str]]:
    """A task that runs until the test opens ``gate`` (a fixed sleep ended before a slow
    machine had loaded the page that cancels it)."""
    wait = f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.1; done"
    return [{"id": "hello", "name": "Hello", "command": f"echo hello; echo a note >&2; {wait}"}]


def test_every_page_has_a_strict_policy(client: Client, db: None) -> None:
    policy = client.get("/accounts/login/")["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # plus the nonce, on pages that use one
    assert "unsafe" not in policy


@pytest.mark.browser
def test_no_policy_violation_on_any_page(
    live_server: Any, transactional_db: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # see test_browser
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    ensure_demo_setup()
    root = User.objects.create_superuser("root", password="pw-root-12345")
    backend = Backend.objects.get(name="local")
    gate = tmp_path / "gate"
    run = create_run(owner=root, backend=backend, payload=gated_task(gate), workflow_name="hello")
    base = live_server.url
    with live_portal(base) as (context, watch):
        page = context.new_page()
        login(page, base, "root", "pw-root-12345")  # the login page, then the dashboard

        # While the task runs: the run page and the log page poll, the run can be cancelled.
        page.goto(f"{base}/runs/{run.pk}")
        with page.expect_response(re.compile(r"/items")):  # the run page's polling
            pass
        assert page.locator(".progress.lg .seg").first.evaluate("e => e.getBoundingClientRect().width") > 0
        asked: list[str] = []

        def decline(dialog: Dialog) -> None:
            asked.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", decline)
        page.click("button:has-text('Cancel run')")  # asks first (data-confirm): declined
        assert asked and asked[0].startswith(f"Cancel run {run.pk}?")

        page.goto(f"{base}/runs/{run.pk}/tasks/hello/logs/output")
        expect(page.locator("pre.log")).to_contain_text("hello")
        page.goto(f"{base}/")
        with page.expect_response(re.compile(r"/jobs")):  # the dashboard's polling
            pass
        page.select_option("#user-filter", "root")  # submits itself (data-autosubmit)
        page.wait_for_url(re.compile(r"\?user=root"))
        page.goto(f"{base}/runs")
        expect(page.locator("table.runs .badge")).to_have_count(1)

        gate.touch()  # the task may end now
        page.goto(f"{base}/runs/{run.pk}")
        expect(page.locator("#run-status")).to_have_text("completed", timeout=60_000)
        page.goto(f"{base}/runs/{run.pk}/tasks/hello/script")
        expect(page.locator("pre.code").first).to_contain_text("echo hello")
        page.goto(f"{base}/runs/{run.pk}/tasks/hello/logs/error")
        expect(page.locator("pre.log")).to_contain_text("a note")

        for path, heading in [("/workflows", "Workflows"), ("/sources", "Sources"), ("/audit", "Audit trail")]:
            page.goto(base + path)
            expect(page.locator("h1").first).to_have_text(heading)
        page.select_option("select[name=action]", "login")  # data-autosubmit
        page.wait_for_url(re.compile(r"\?action=login"))

        page.goto(f"{base}/admin/")
        expect(page.locator("#site-name")).to_be_visible()
        page.goto(f"{base}/admin/auth/user/{root.pk}/change/")  # the groups' two-box chooser
        expect(page.locator("#id_groups_from")).to_be_visible()
        page.goto(f"{base}/admin/backends/backend/{backend.pk}/change/")
        expect(page.locator("input[name=name]")).to_have_value("local")

        page.goto(f"{base}/api/docs")  # Swagger UI, from the portal's own static files
        expect(page.locator(".swagger-ui .info .title").first).to_contain_text("ScriptHut API")
    assert watch.problems == []
