"""In headless Chromium against a real uvicorn: the run page follows a run by push, falls
back to polling when its socket is cut, and takes the socket again when it is back.

The socket is cut with Playwright's websocket routing, which sits between the page and
the server: the page sees a dropped connection, the server a closed one.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from backends.models import Backend
from runs.actions import create_run
from runs.engine.states import Step, TaskState, move
from runs.models import Run, Task
from tests.asgi_server import asgi_server
from tests.browser import chromium_available, live_portal, login, screenshot
from tests.threads import db_thread

pytestmark = [
    pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
]

# Counts the socket's openings and the page's own loads, before any of the page's scripts.
SOCKET_WATCH = """
window.__wsOpens = 0;
document.addEventListener("htmx:wsOpen", () => { window.__wsOpens += 1; });
"""


class SocketCutter:
    """Routes the run page's socket through Playwright; ``cut()`` drops it and refuses new
    ones until ``restore()``."""

    def __init__(self) -> None:
        self.allowed = threading.Event()
        self.allowed.set()
        self.routes: list[Any] = []

    def handle(self, route: Any) -> None:
        if not self.allowed.is_set():
            route.close(code=1011)  # "try again later": the page keeps trying
            return
        route.connect_to_server()
        self.routes.append(route)

    def cut(self) -> None:
        self.allowed.clear()
        for route in self.routes:
            route.close(code=1011)
        self.routes.clear()

    def restore(self) -> None:
        self.allowed.set()


def _console_errors(page: Any) -> list[str]:
    """The page's console errors from now on (htmx reports a pushed element it cannot place)."""
    errors: list[str] = []

    def note(message: Any) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", note)
    return errors


def _note_fetch(polls: list[str], refreshes: list[str], request: Any) -> None:
    # Only the fallback's fetches (scripthut.js marks them); a change of the run's status asks
    # for one fetch of the live part ("refresh") even with the socket up.
    fetch = request.headers.get("x-scripthut-fetch")
    if fetch == "poll":
        polls.append(request.url)
    elif fetch == "refresh":
        refreshes.append(request.url)


def _states(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("table.tasks .badge", "els => els.map(e => e.textContent.trim())"))


def test_run_page_follows_the_run_by_push_then_by_polling_when_the_socket_is_cut(
    user: User, local_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop lives on this thread
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    tasks = [{"id": f"step.{i}", "name": f"step {i}", "command": "sleep 3"} for i in range(12)]
    run = create_run(owner=user, backend=local_backend, workflow_name="live", payload=tasks, max_concurrent=2)
    polls: list[str] = []
    refreshes: list[str] = []
    cutter = SocketCutter()

    with asgi_server() as base, live_portal(base) as (context, watch):
        context.add_init_script(SOCKET_WATCH)
        page = context.new_page()
        page.on("request", lambda request: _note_fetch(polls, refreshes, request))
        page.route_web_socket(re.compile(r"/runs/[0-9a-f]+/live$"), cutter.handle)
        login(page, base, "alice", "pw-alice-123")
        page.goto(f"{base}/runs/{run.pk}")
        page.evaluate("window.__noReload = true")
        page.wait_for_function("() => window.__wsOpens === 1")
        expect(page.locator("#run-status")).to_have_text("running")

        # Pushed: rows change state while the page fetches nothing.
        expect(page.locator("table.tasks .badge.st-completed").first).to_be_visible(timeout=30_000)
        expect(page.locator("#run-status")).to_have_text("running")
        assert polls == [], "the page polled while its socket was up"
        screenshot(page, "live-01-run-pushed")

        # Cut: the page polls its live part, and keeps advancing.
        cutter.cut()
        done_at_cut = _states(page).count("completed")
        expect(page.locator("table.tasks .badge.st-completed")).not_to_have_count(done_at_cut, timeout=30_000)
        assert polls, "the page did not fall back to polling"
        expect(page.locator("body")).to_have_attribute("data-socket", "down")  # the "live" label says reconnecting
        screenshot(page, "live-02-run-polling")

        # Back: the page takes the socket again and stops polling.
        refreshed = len(refreshes)
        cutter.restore()
        page.wait_for_function("() => window.__wsOpens >= 2", timeout=30_000)
        # Back, the page stops polling and fetches once more: that fetch comes after any poll
        # it had started, so from then on every poll counted is one too many.
        deadline = time.monotonic() + 30
        while len(refreshes) == refreshed:
            assert time.monotonic() < deadline, "no fetch of the live part once the socket was back"
            page.wait_for_timeout(50)
        polled = len(polls)
        expect(page.locator("body")).to_have_attribute("data-socket", "up")
        expect(page.locator("#run-status")).to_have_text("running")  # what is left arrives by push
        expect(page.locator("#run-status")).to_have_text("completed", timeout=60_000)
        expect(page.locator("table.tasks .badge.st-completed")).to_have_count(12)
        expect(page.locator("#completed-count")).to_have_text("12")
        # A finished run's page has no more to follow: the cancel button went with the refresh.
        expect(page.locator("button:has-text('Cancel run')")).to_have_count(0)
        assert len(polls) == polled, f"still polling with the socket up: {polls[polled:]}"
        assert page.evaluate("window.__noReload") is True, "the run page was reloaded"
        screenshot(page, "live-03-run-completed")
        assert watch.problems == []


def _in_thread(action: Any) -> None:
    """Run ``action`` in another thread (the ORM has no place in Playwright's greenlet)."""
    db_thread(action).join(30)


def _move(task_pk: int, step: Step, **values: Any) -> None:
    task = Task.objects.get(pk=task_pk)
    for name, value in values.items():
        setattr(task, name, value)
    with transaction.atomic():
        move([task], step, list(values))


def _claim_in_thread(task_pk: int) -> None:
    """Claim a task as a tick would, from another thread."""
    _in_thread(lambda: _move(task_pk, Step.CLAIM, state=TaskState.SUBMITTING))


def test_big_run_page_opens_a_group_a_page_at_a_time_and_its_rows_are_pushed(
    user: User, local_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    tasks = [{"id": f"{g}.{i}", "name": f"{g} {i}", "command": "true"} for g in "abc" for i in range(150)]
    run = create_run(owner=user, backend=local_backend, workflow_name="big", payload=tasks)
    Backend.objects.filter(pk=local_backend.pk).update(enabled=False)  # the test moves the tasks itself
    moved = run.tasks.get(task_id="b.120").pk

    with asgi_server() as base, live_portal(base) as (context, watch):
        context.add_init_script(SOCKET_WATCH)
        page = context.new_page()
        errors = _console_errors(page)
        login(page, base, "alice", "pw-alice-123")
        page.goto(f"{base}/runs/{run.pk}")
        page.wait_for_function("() => window.__wsOpens === 1")
        groups = page.locator("details.group")
        expect(groups).to_have_count(3)
        expect(page.locator("details.group[open]")).to_have_count(0)
        expect(page.locator("table.tasks tr[id^=task-]")).to_have_count(0)  # 450 tasks: no row until asked
        screenshot(page, "live-04-big-run-collapsed")

        group_b = groups.nth(1)
        group_b.locator("summary").click()
        rows = group_b.locator("tbody tr")
        expect(rows).to_have_count(100)
        expect(group_b.locator(".pager")).to_contain_text("rows 1–100 of 150")
        group_b.locator(".pager a", has_text="next").click()
        expect(group_b.locator(".pager")).to_contain_text("rows 101–150 of 150")
        expect(rows).to_have_count(50)
        row = page.locator(f"#task-{moved}")
        expect(row.locator(".badge")).to_have_text("pending")

        _claim_in_thread(moved)
        expect(row.locator(".badge")).to_have_text("submitting")  # pushed into the opened page of the group
        expect(group_b.locator("summary .chip-submitting")).to_have_text("1 submitting")
        expect(page.locator("#run-legend .chip-submitting")).to_have_text("1 submitting")
        expect(groups.nth(0).locator("summary .chip-pending")).to_have_text("150 pending")
        _claim_in_thread(run.tasks.get(task_id="c.5").pk)  # a row of a closed group: only counts change
        expect(groups.nth(2).locator("summary .chip-submitting")).to_have_text("1 submitting")
        expect(page.locator("#run-legend .chip-submitting")).to_have_text("2 submitting")
        screenshot(page, "live-05-big-run-group-open")
        assert watch.problems == [] and errors == []


def test_runs_list_and_dashboard_add_change_and_drop_rows_by_push(
    user: User, local_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    Backend.objects.filter(pk=local_backend.pk).update(enabled=False)  # the test moves the tasks itself
    first = create_run(
        owner=user, backend=local_backend, workflow_name="first", payload=[{"id": "a", "name": "a", "command": "true"}]
    )
    task = first.tasks.get().pk
    fetched: list[str] = []
    created: list[Run] = []

    with asgi_server() as base, live_portal(base) as (context, watch):
        context.add_init_script(SOCKET_WATCH)
        runs_page, jobs_page = context.new_page(), context.new_page()
        login(runs_page, base, "alice", "pw-alice-123")
        runs_page.goto(f"{base}/runs")
        jobs_page.goto(f"{base}/")
        errors = [_console_errors(runs_page), _console_errors(jobs_page)]
        for page in (runs_page, jobs_page):
            page.wait_for_function("() => window.__wsOpens === 1")
            page.on("request", lambda request: fetched.append(request.url))
        expect(runs_page.locator("#runs tr")).to_have_count(1)
        expect(jobs_page.locator("#our-jobs td.empty")).to_have_count(1)

        # A new run: its row is added at the top of the runs list.
        payload = [{"id": f"b{i}", "name": "b", "command": "true"} for i in range(3)]
        _in_thread(
            lambda: created.append(
                create_run(owner=user, backend=local_backend, workflow_name="second", payload=payload)
            )
        )
        expect(runs_page.locator("#runs tr").first).to_contain_text("second")
        expect(runs_page.locator("#runs tr")).to_have_count(2)

        # Its task on a scheduler: a row on the dashboard, the runs list's counts change.
        _in_thread(lambda: _move(task, Step.CLAIM, state=TaskState.SUBMITTING))
        queued_since = timezone.now() - timedelta(seconds=65)
        _in_thread(lambda: _move(task, Step.SUBMIT, state=TaskState.SUBMITTED, job_id="777", submitted_at=queued_since))
        expect(jobs_page.locator(f"#job-{task}")).to_contain_text("777")
        # Between pushes the queue wait counts on in the page.
        wait = jobs_page.locator(f"#job-{task} [data-elapsed]")
        expect(wait).to_have_text(re.compile(r"^1m 0[5-9]s$"))
        expect(wait).to_have_text(re.compile(r"^1m 0[7-9]s$|^1m 1\ds$"), timeout=5_000)
        expect(jobs_page.locator("#our-jobs td.empty")).to_have_count(0)
        expect(jobs_page.locator('.pill[data-counts-of="#our-jobs"]')).to_have_text("1")
        expect(jobs_page.locator('.h-counts[data-counts-of="#our-jobs"] .chip-submitted')).to_have_text("1 submitted")
        expect(runs_page.locator(f"#run-{first.pk} .chip-submitted")).to_have_text("1 submitted")
        screenshot(jobs_page, "live-06-dashboard-pushed-row")
        _in_thread(lambda: _move(task, Step.POLL, state=TaskState.COMPLETED, exit_code=0))
        expect(jobs_page.locator(f"#job-{task}")).to_have_count(0)  # off the scheduler: off the table
        expect(jobs_page.locator('.pill[data-counts-of="#our-jobs"]')).to_have_text("0")
        expect(runs_page.locator(f"#run-{first.pk} .chip-completed")).to_have_text("1 completed")
        screenshot(runs_page, "live-07-runs-pushed")
        # The dashboard's timer (15 s) never ran, and the runs list fetched nothing: all of it was pushed.
        assert not [url for url in fetched if "/jobs" in url or url.endswith("/runs")], fetched
        assert watch.problems == [] and errors == [[], []]
