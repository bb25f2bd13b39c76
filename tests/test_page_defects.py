"""The pages as a researcher reads them (issue #13): each defect found by hand, in Chromium.

Every test drives a live server with the embedded ticker and the real local backend,
and saves a screenshot (``SCRIPTHUT_SCREENSHOTS=1``, under ``screenshots/``).
"""

from __future__ import annotations

import re
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections

from backends.models import Backend
from backends.units import format_duration
from runs.actions import create_run
from runs.models import Run
from tests.browser import chromium_available, live_portal, login, screenshot

pytestmark = [
    pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing (apt-get install chromium)"),
    pytest.mark.browser,
]

PASSWORD = "pw-alice-123"
STATIC = Path(__file__).resolve().parent.parent / "runs" / "static" / "scripthut"


@pytest.fixture
def portal(
    live_server: Any, transactional_db: None, monkeypatch: pytest.MonkeyPatch, user: User, local_backend: Backend
) -> Iterator[tuple[Any, str]]:
    """A logged-in page on the live server (1,400 px wide) while the embedded ticker runs."""
    # Playwright's sync API keeps an event loop on this thread (see test_browser.py).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    with live_portal(live_server.url) as (context, watch):
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # "Cancel run ...?" asks first
        login(page, live_server.url, user.username, PASSWORD)
        yield page, live_server.url
        # The test's ORM calls ran in Playwright's greenlet, which has a connection of its
        # own: close it here, or PostgreSQL refuses to drop the test database.
        connections.close_all()
    assert watch.problems == []


def start(user: User, backend: Backend, tasks: list[dict[str, Any]], name: str = "defects") -> Run:
    return create_run(owner=user, backend=backend, payload={"tasks": tasks}, workflow_name=name)


def task_row(page: Any, task_id: str) -> Any:
    return page.locator("table.tasks tbody tr", has=page.locator(f"td:text-is('{task_id}')"))


def wait_until_settled(run: Run, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not Run.objects.get(pk=run.pk).is_settled:
        assert time.monotonic() < deadline, f"run {run.pk} did not settle in {timeout}s"
        time.sleep(0.2)


# Whether a cell's text is wider than the cell (so it runs into, or hides under, the next one).
OVERFLOWS = "cell => cell.scrollWidth > cell.clientWidth + 1"
# How many lines a cell's text takes.
LINES = "cell => { const r = document.createRange(); r.selectNodeContents(cell); return r.getClientRects().length; }"


def test_job_id_and_reason_are_readable_at_1400_px(portal: tuple[Any, str], user: User, local_backend: Backend) -> None:
    page, base = portal
    run = start(
        user,
        local_backend,
        [
            {"id": "exits", "name": "Exits with 3", "command": "exit 3"},
            {"id": "too.slow", "name": "Over its limit", "command": "sleep 30", "time_limit": "0:01"},
            {"id": "waits", "name": "Cancelled", "command": "sleep 30"},
        ],
    )
    page.goto(f"{base}/runs/{run.pk}")
    from playwright.sync_api import expect

    expect(task_row(page, "waits").locator(".badge.st-running")).to_be_visible(timeout=30_000)
    expect(task_row(page, "too.slow").locator("td.reason")).to_have_text("time limit exceeded", timeout=30_000)
    page.click("button:has-text('Cancel run')")
    wait_until_settled(run)
    page.reload()  # (whether the page follows a cancel on its own is the next test's)
    expect(task_row(page, "waits").locator("td.reason")).to_have_text("cancelled by user")
    expect(task_row(page, "exits").locator("td.reason")).to_have_text("exit code 3")
    screenshot(page, "defect-1-job-id-and-reason")
    for task_id in ("exits", "too.slow", "waits"):
        row = task_row(page, task_id)
        for column in ("td:nth-child(4)", "td.reason"):
            cell = row.locator(column)
            assert not cell.evaluate(OVERFLOWS), f"{task_id}: {column} {cell.inner_text()!r} is wider than its cell"
        assert row.locator("td:nth-child(4)").evaluate(LINES) == 1, f"{task_id}: the local job id wraps"
        job, reason = (row.locator(c).bounding_box() for c in ("td:nth-child(4)", "td.reason"))
        assert job and reason and job["x"] + job["width"] <= reason["x"] + 0.5
    # A mature database's task pks have 7 digits: such a local job id still fits on one line.
    cell = task_row(page, "exits").locator("td:nth-child(4)")
    cell.evaluate("cell => { cell.textContent = 'sh-0123abcd-1234567-abcdef'; }")
    assert cell.evaluate(LINES) == 1 and not cell.evaluate(OVERFLOWS)


def finished_time(page: Any) -> Any:
    return page.locator(".times div:has(dt:text-is('Finished')) dd")


def test_cancelled_run_page_updates_until_its_finish_time(
    portal: tuple[Any, str], user: User, local_backend: Backend
) -> None:
    from playwright.sync_api import expect

    page, base = portal
    run = start(user, local_backend, [{"id": "long", "name": "Long", "command": "sleep 60"}])
    page.goto(f"{base}/runs/{run.pk}")
    expect(task_row(page, "long").locator(".badge.st-running")).to_be_visible(timeout=30_000)
    page.click("button:has-text('Cancel run')")
    expect(page.locator("#run-status")).to_have_text("cancelled")
    page.evaluate("window.__noReload = true")
    # The job is cancelled by the next tick: the page must keep updating until then.
    expect(task_row(page, "long").locator(".badge.st-cancelled")).to_be_visible(timeout=20_000)
    expect(finished_time(page)).to_have_text(re.compile(r"\d\d:\d\d:\d\d"))
    expect(page.locator("#run-items[hx-trigger]")).to_have_count(0)  # and then stop
    assert page.evaluate("window.__noReload") is True
    screenshot(page, "defect-6-cancelled-run")


def test_local_task_shows_running_once_it_runs(portal: tuple[Any, str], user: User, local_backend: Backend) -> None:
    """A local job runs as soon as it is submitted: the page must not say "submitted /
    queued" until the next poll (30 s here)."""
    from playwright.sync_api import expect

    page, base = portal
    Backend.objects.filter(pk=local_backend.pk).update(poll_interval=30)
    run = start(user, local_backend, [{"id": "works", "name": "Works", "command": "echo working; sleep 30"}])
    page.goto(f"{base}/runs/{run.pk}")
    row = task_row(page, "works")
    expect(row.locator(".badge.st-running")).to_be_visible(timeout=8_000)
    expect(row.locator("td.reason")).to_have_text("")
    expect(row.locator("td:nth-child(8)")).to_have_text(re.compile(r"^\d+s$"))  # its duration so far
    expect(page.locator("#run-status")).to_have_text("running")
    screenshot(page, "defect-3-local-running")
    task = run.tasks.get()
    assert task.started_at is not None and task.node


def test_time_limit_and_dep_failed_tabs_say_what_happened(
    portal: tuple[Any, str], user: User, local_backend: Backend
) -> None:
    from playwright.sync_api import expect

    page, base = portal
    run = start(
        user,
        local_backend,
        [
            {"id": "slow", "name": "Over its limit", "command": "echo started; sleep 30", "time_limit": "0:01"},
            {"id": "report", "name": "Report", "command": "echo report", "deps": ["slow"]},
        ],
    )
    page.goto(f"{base}/runs/{run.pk}")
    expect(page.locator("#run-status")).to_have_text("failed", timeout=30_000)

    page.goto(f"{base}/runs/{run.pk}/tasks/slow/logs/error")
    log = page.locator("#log")
    expect(log.locator(".alert.ending")).to_have_text(re.compile(r"Killed by its time limit of 0:01 after \ds"))
    expect(log).to_contain_text("The error file is empty.")
    screenshot(page, "defect-4a-time-limit-error-tab")

    page.goto(f"{base}/runs/{run.pk}/tasks/report/script")
    note = page.locator(".never-ran")
    expect(note).to_have_text(
        "This task will never run: its dependency slow (failed: time limit exceeded) did not complete."
    )
    expect(page.locator("body")).not_to_contain_text("No script yet")
    screenshot(page, "defect-4b-dep-failed-script-tab")
    page.click("nav.tabs >> text=Output")
    expect(page.locator("#log")).to_contain_text(
        "This task never ran, so it has no log: its dependency slow (failed: time limit exceeded) did not complete."
    )


def test_relaunch_is_visible_and_its_idle_time_not_counted(
    portal: tuple[Any, str], user: User, local_backend: Backend, tmp_path: Any
) -> None:
    """A run fails, sits idle, is relaunched and completes: its duration adds up the two
    attempts' active time only, and the page says who relaunched it and when."""
    from playwright.sync_api import expect

    page, base = portal
    flag = tmp_path / "fixed"
    run = start(
        user,
        local_backend,
        [
            {"id": "prepare", "name": "Prepare", "command": "sleep 1"},
            {"id": "flaky", "name": "Flaky", "command": f"sleep 1; test -e {flag}", "deps": ["prepare"]},
        ],
    )
    page.goto(f"{base}/runs/{run.pk}")
    expect(page.locator("#run-status")).to_have_text("failed", timeout=30_000)
    run.refresh_from_db()
    assert run.started_at and run.finished_at
    first = (run.finished_at - run.started_at).total_seconds()
    # The researcher fixes the problem: meanwhile the run sits idle.
    Run.objects.filter(pk=run.pk).update(
        started_at=run.started_at - timedelta(hours=1), finished_at=run.finished_at - timedelta(hours=1)
    )
    flag.write_text("")
    page.reload()
    page.click("button:has-text('Relaunch unsuccessful tasks')")
    expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
    run.refresh_from_db()
    second = (run.finished_at - datetime.fromisoformat(run.relaunches[0]["at"])).total_seconds()
    active = run.active_seconds
    assert active == pytest.approx(first + second, abs=0.01)
    assert active is not None and active < 60  # the hour between the attempts does not count

    expect(page.locator("#run-duration")).to_have_text(format_duration(run.active_seconds))
    expect(page.locator("#run-attempt")).to_have_text("2")
    attempts = page.locator("ol.attempts li")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("attempt 1 — started at")
    expect(attempts.nth(1)).to_contain_text(re.compile(r"attempt 2 — relaunched by alice at \d\d:\d\d \(1 task\), ran"))
    expect(task_row(page, "flaky").locator(".task-attempt")).to_have_text("attempt 2")
    assert not task_row(page, "flaky").locator("td:nth-child(3)").evaluate(OVERFLOWS)
    expect(task_row(page, "prepare").locator(".task-attempt")).to_have_count(0)
    screenshot(page, "defect-5-relaunched-run")
    page.click("nav.mainnav >> text=Runs")
    expect(page.locator("table.runs tbody tr td.num").first).to_have_text(format_duration(run.active_seconds))
    screenshot(page, "defect-5b-runs-list")


def test_dashboard_keeps_recent_runs_with_their_outcome(
    portal: tuple[Any, str], user: User, local_backend: Backend
) -> None:
    from playwright.sync_api import expect

    page, base = portal
    done = start(user, local_backend, [{"id": "ok", "name": "Fine", "command": "true"}], name="fine")
    page.goto(f"{base}/")
    recent = page.locator(".recent-runs table tbody tr")
    expect(recent.filter(has_text=done.pk).locator(".badge")).to_have_text("completed", timeout=30_000)
    failing = start(user, local_backend, [{"id": "bad", "name": "Bad", "command": "sleep 2; exit 3"}], name="broken")
    page.evaluate("window.__noReload = true")
    row = recent.filter(has_text=failing.pk)
    expect(row.locator(".badge")).to_have_text("running", timeout=30_000)  # while it runs: in both tables
    expect(page.locator("#jobs table.grid").nth(1).locator("tbody tr .badge.st-running")).to_be_visible()
    expect(row.locator(".badge")).to_have_text("failed", timeout=30_000)  # and once it failed: still here
    expect(row).to_contain_text("1 failed")
    expect(row).to_contain_text("broken")
    expect(recent.first).to_contain_text(failing.pk)  # the latest first
    expect(recent).to_have_count(2)
    assert page.evaluate("window.__noReload") is True
    screenshot(page, "defect-2-dashboard-recent-runs")


@contextmanager
def uvicorn_portal() -> Iterator[str]:
    """The portal's ASGI application under a real uvicorn, on a free loopback port, in this
    process (so it shares the test database); stopped on the way out."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = "scripthut_site.asgi:application"
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_log_follower_under_asgi_streams_without_sync_iterator_warnings(
    transactional_db: None, monkeypatch: pytest.MonkeyPatch, user: User, local_backend: Backend, tmp_path: Any
) -> None:
    """Under uvicorn, following a growing log (and loading its page's assets) must not make
    Django warn that a StreamingHttpResponse consumed a synchronous iterator."""
    from playwright.sync_api import expect

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    command = "for i in $(seq 1 40); do echo line $i; sleep 0.25; done"
    run = start(user, local_backend, [{"id": "grows", "name": "Grows", "command": command}])
    with warnings.catch_warnings(record=True) as seen, uvicorn_portal() as base:
        warnings.simplefilter("always")
        with live_portal(base) as (context, watch):
            page = context.new_page()
            assets: list[str] = []
            page.on("response", lambda r: assets.append(f"{r.status} {r.url}") if "/static/" in r.url else None)
            login(page, base, user.username, PASSWORD)
            page.goto(f"{base}/runs/{run.pk}/tasks/grows/logs/output")
            log = page.locator("pre.log")
            expect(log).to_contain_text("line 3", timeout=20_000)
            page.evaluate("window.__noReload = true")
            expect(log).to_contain_text("line 15", timeout=20_000)  # followed, not reloaded
            assert page.evaluate("window.__noReload") is True
            expect(page.locator("#log .live")).to_be_visible()
            screenshot(page, "defect-7-log-follower-asgi")
            page.goto(f"{base}/runs/{run.pk}")
            page.goto(f"{base}/")
            css = page.request.get(f"{base}/static/scripthut/style.css")  # served whole, chunk by chunk
            assert css.body() == (STATIC / "style.css").read_bytes()
        assert watch.problems == []
    streaming = [str(w.message) for w in seen if "StreamingHttpResponse" in str(w.message)]
    assert streaming == [], [(w.filename, w.lineno) for w in seen]
    assert assets and all(a.startswith(("200 ", "304 ")) for a in assets), assets
