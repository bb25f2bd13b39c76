"""The run timeline: bars where the time went, the running-tasks line, folding for big runs."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse

from backends.models import Backend
from runs.actions import create_run
from runs.models import Run, Task
from runs.web import timeline
from tests.asgi_server import asgi_server
from tests.browser import SCREENSHOT_DIR, chromium_available, live_portal, login, screenshot
from tests.workloads import simulations

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def finished_run(owner: User, backend: Backend, count: int = 4, width: int = 2) -> Run:
    """A run of ``count`` tasks (`prepare` + simulations) that ran ``width`` at a time: each
    simulation waited 10 s in the queue and ran 20 s; the last one failed."""
    run = create_run(owner=owner, backend=backend, payload=simulations(count), workflow_name="sims")
    tasks = list(Task.objects.filter(run=run).order_by("position"))
    for index, task in enumerate(tasks):
        wave = index // width
        task.submitted_at, task.started_at, task.finished_at = at(wave * 30), at(wave * 30 + 10), at(wave * 30 + 30)
        task.state = "failed" if index == len(tasks) - 1 else "completed"
    Task.objects.bulk_update(tasks, ["submitted_at", "started_at", "finished_at", "state"])
    end = at(((len(tasks) - 1) // width) * 30 + 30)
    Run.objects.filter(pk=run.pk).update(status="failed", started_at=T0, finished_at=end)
    run.refresh_from_db()
    return run


def test_bars_show_queue_wait_then_run_time_on_the_runs_axis(user: User, local_backend: Backend) -> None:
    run = finished_run(user, local_backend, count=4, width=2)

    picture = timeline.build_timeline(run, now=at(999))

    assert picture.span is not None and picture.total_seconds == 60  # two waves of 30 s
    bars = [bar for group in picture.groups for bar in group.bars]
    assert [b.task_id for b in bars] == ["prepare", "sim.000001", "sim.000002", "sim.000003"]
    first, last = bars[0], bars[-1]
    # Waited 10 of the 60 s (0–16.7 %), then ran 20 s (16.7–50 %).
    assert (round(first.wait_x, 1), round(first.wait_w, 1)) == (0.0, 16.7)
    assert (round(first.run_x, 1), round(first.run_w, 1)) == (16.7, 33.3)
    assert last.state == "failed" and round(last.run_x, 1) == 66.7
    assert "waited 10s" in first.title and "ran 20s" in first.title
    assert picture.line.peak == 2  # two at a time
    assert not picture.live


def test_the_running_line_follows_concurrency(user: User, local_backend: Backend) -> None:
    run = finished_run(user, local_backend, count=12, width=4)
    picture = timeline.build_timeline(run, now=at(999))
    assert picture.line.peak == 4
    # Every slice of the run's span had 4 running or 0 (queue waits): never anything else.
    heights = {point.split(",")[1] for point in picture.line.points.split()}
    assert heights <= {"0.0", "100.0"} and "0.0" in heights


def test_a_running_task_runs_until_now(user: User, local_backend: Backend) -> None:
    run = create_run(owner=user, backend=local_backend, payload=simulations(2), workflow_name="sims")
    Task.objects.filter(run=run, task_id="prepare").update(state="running", submitted_at=at(0), started_at=at(30))
    picture = timeline.build_timeline(run, now=at(60))
    (bar,) = [bar for group in picture.groups for bar in group.bars]
    assert (bar.wait_w, bar.run_x, bar.run_w) == (50.0, 50.0, 50.0)
    assert picture.live and picture.line.peak == 1


def test_a_big_run_folds_its_groups_and_loads_bars_per_group(
    user: User, local_backend: Backend, client: Client
) -> None:
    run = finished_run(user, local_backend, count=1000, width=50)
    client.force_login(user)

    page = client.get(reverse("run_timeline", args=[run.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count("<rect") == 0  # every group folded: only group lines
    assert 'hx-trigger="toggle once"' in html and "?group=sim" in html
    assert len(page.content) < 60_000

    bars = client.get(reverse("run_timeline", args=[run.pk]), {"group": "sim"})
    assert bars.status_code == 200
    body = bars.content.decode()
    assert body.count('class="r"') == timeline.BARS_PER_GROUP
    assert f"Tasks 1–{timeline.BARS_PER_GROUP} of 999." in body and "Next tasks" in body

    rest = client.get(reverse("run_timeline", args=[run.pk]), {"group": "sim", "start": "500"}).content.decode()
    assert rest.count('class="r"') == 499 and "Tasks 501–999 of 999." in rest
    assert "Previous tasks" in rest and "Next tasks" not in rest
    assert 'y="0"' in rest  # each page is drawn from the top

    assert client.get(reverse("run_timeline", args=[run.pk]), {"group": "nope"}).status_code == 404


def test_another_users_timeline_is_not_found(user: User, bob: User, local_backend: Backend, client: Client) -> None:
    run = finished_run(user, local_backend)
    client.force_login(bob)
    assert client.get(reverse("run_timeline", args=[run.pk])).status_code == 404
    assert client.get(reverse("run_timeline", args=[run.pk]), {"group": "sim"}).status_code == 404


def test_a_run_with_nothing_submitted_says_so(user: User, local_backend: Backend, client: Client) -> None:
    run = create_run(owner=user, backend=local_backend, payload=simulations(3), workflow_name="sims")
    client.force_login(user)
    html = client.get(reverse("run_timeline", args=[run.pk])).content.decode()
    assert "Nothing has been submitted yet" in html
    assert "timeline-refresh" in html  # a live run redraws when it changes


def test_the_run_page_loads_the_timeline_after_itself(user: User, local_backend: Backend, client: Client) -> None:
    run = finished_run(user, local_backend)
    client.force_login(user)
    html = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert re.search(r'hx-get="/runs/[0-9a-f]+/timeline" hx-trigger="load"', html)


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing")
def test_timeline_of_a_thousand_task_run_in_chromium(
    live_server: Any, transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from django.contrib.auth.models import Group
    from playwright.sync_api import expect

    from tests.conftest import LOCAL_USERS, local_user

    owner = local_user("alice", "pw-alice-123")
    backend = Backend.objects.create(name="local", kind=Backend.Kind.LOCAL, max_concurrent=50, poll_interval=1)
    backend.allowed_groups.add(Group.objects.get(name=LOCAL_USERS))
    run = finished_run(owner, backend, count=1000, width=50)
    Task.objects.filter(run=run, task_id="sim.000001").update(cpus=8, cpu_efficiency=0.1, max_rss_mb=300, job_id="1")
    base = live_server.url
    with live_portal(base) as (context, watch):
        page = context.new_page()
        login(page, base, "alice", "pw-alice-123")
        page.goto(f"{base}/runs/{run.pk}")
        expect(page.locator("#timeline h2")).to_have_text("Timeline")
        expect(page.locator("#timeline .tl-line polyline")).to_have_count(1)
        expect(page.locator("details.tl-group")).to_have_count(2)
        if os.environ.get("SCRIPTHUT_SCREENSHOTS"):
            page.locator("#timeline").screenshot(path=str(SCREENSHOT_DIR / "timeline-1000-tasks-folded.png"))
        page.locator("details.tl-group summary", has_text="sim").click()
        expect(page.locator("details.tl-group .tl-bar")).to_have_count(timeline.BARS_PER_GROUP)
        page.locator("a", has_text="Next tasks").click()
        expect(page.locator("details.tl-group .tl-bar")).to_have_count(999 - timeline.BARS_PER_GROUP)
        page.locator("a", has_text="Previous tasks").click()
        expect(page.locator("details.tl-group .tl-bar")).to_have_count(timeline.BARS_PER_GROUP)
        # The axis labels are placed by the portal's script (no inline style under the CSP).
        left = page.locator(".tl-tick").last.evaluate("e => e.style.left")
        assert left == "100%"
        screenshot(page, "timeline-1000-tasks")

        if os.environ.get("SCRIPTHUT_SCREENSHOTS"):
            page.locator("#timeline").screenshot(path=str(SCREENSHOT_DIR / "timeline-1000-tasks-picture.png"))

        page.goto(f"{base}/runs/{run.pk}/tasks/sim.000001/script")
        expect(page.locator(".exec .meter span").first).to_have_attribute("style", "width: 10%;")
        if os.environ.get("SCRIPTHUT_SCREENSHOTS"):
            page.locator(".exec").screenshot(path=str(SCREENSHOT_DIR / "task-resources.png"))
        assert watch.problems == []


def test_task_page_shows_use_against_request_with_concrete_advice(
    user: User, local_backend: Backend, client: Client
) -> None:
    run = finished_run(user, local_backend)
    # Asked for 8 CPUs and 4 GB; used 10 % of the CPUs and 300 MB at peak.
    Task.objects.filter(run=run, task_id="sim.000001").update(
        cpus=8, memory="4G", cpu_efficiency=0.1, max_rss_mb=300, job_id="1"
    )
    client.force_login(user)
    html = client.get(reverse("task_script", args=[run.pk, "sim.000001"])).content.decode()
    assert 'class="meter"><span data-width="10.0">' in html  # CPU used, of the request
    assert 'data-width="7.3"' in html  # 300 of 4096 MB
    assert "request fewer (1 CPU would do)" in html
    assert "request less (about 375 MB would do)" in html


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing")
def test_the_timeline_follows_a_live_run_without_a_reload(
    live_server: Any, transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from django.contrib.auth.models import Group
    from playwright.sync_api import expect

    from tests.conftest import LOCAL_USERS, local_user

    owner = local_user("alice", "pw-alice-123")
    backend = Backend.objects.create(name="local", kind=Backend.Kind.LOCAL, max_concurrent=2, poll_interval=1)
    backend.allowed_groups.add(Group.objects.get(name=LOCAL_USERS))
    steps = [{"id": f"step.{i}", "name": f"Step {i}", "command": "sleep 1"} for i in range(4)]
    run = create_run(owner=owner, backend=backend, payload=steps, workflow_name="steps")
    with asgi_server() as base, live_portal(base) as (context, watch):  # uvicorn: websockets; a ticker drives the run
        page = context.new_page()
        login(page, base, "alice", "pw-alice-123")
        page.goto(f"{base}/runs/{run.pk}")
        page.evaluate("window.__noReload = true")
        expect(page.locator("#timeline h2")).to_have_text("Timeline")
        # The timeline redraws as pushed changes arrive: all four bars, completed, no reload.
        expect(page.locator("#timeline .tl-bar.st-c-completed")).to_have_count(
            4, timeout=20_000
        )  # before the 30 s fallback
        assert page.evaluate("window.__noReload") is True
        assert watch.problems == []


@pytest.mark.parametrize("start", ["9" * 5000, "2147483648", "-1", "abc", "1.5", "²", ""])
def test_a_bad_start_is_a_400_naming_it(
    start: str, user: User, local_backend: Backend, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # 5,000 digits were a 500 (Python refuses int() of so long a string); words were read as 0.
    run = finished_run(user, local_backend, count=4)
    client.force_login(user)
    response = client.get(reverse("run_timeline", args=[run.pk]), {"group": "sim", "start": start})
    assert response.status_code == 400
    assert "start must be a whole number from 0 to 2,147,483,647" in response.content.decode()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    good = client.get(reverse("run_timeline", args=[run.pk]), {"group": "sim", "start": "2147483647"})
    assert good.status_code == 200  # the largest start is the last page
