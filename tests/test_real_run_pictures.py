"""A real 1,000-task run on the local backend, then its pictures in Chromium.

The timeline must show where the time went: a queue that backs up behind
``max_concurrent``, the long tasks, the failures. Screenshots are saved with
``SCRIPTHUT_SCREENSHOTS=1`` (look at them when the pages change).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection

from backends.models import Backend
from runs.actions import create_run
from runs.models import Run
from runs.web import timeline
from tests.browser import SCREENSHOT_DIR, chromium_available, live_portal, login
from tests.conftest import LOCAL_USERS, local_user

pytestmark = pytest.mark.browser

TASKS = 1000
SLOTS = 100


def workflow() -> list[dict[str, Any]]:
    """Prepare, then 998 simulations of 0–0.7 s (every 97th fails), then a summary."""
    tasks: list[dict[str, Any]] = [{"id": "prepare", "name": "Prepare", "command": "sleep 1"}]
    for i in range(1, TASKS - 1):
        command = "sleep 0.2; exit 3" if i % 97 == 0 else f"sleep 0.{i % 8}"
        tasks.append({"id": f"sim.{i:04d}", "name": f"Simulation {i}", "command": command, "deps": ["prepare"]})
    tasks.append({"id": "summary", "name": "Summary", "command": "true", "deps": ["sim.*"]})
    return tasks


@pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing")
def test_a_real_thousand_task_run_reads_at_a_glance(
    live_server: Any, transactional_db: None, monkeypatch: pytest.MonkeyPatch, run_to_end: Callable[..., Run]
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    owner = local_user("alice", "pw-alice-123")
    backend = Backend.objects.create(name="local", kind=Backend.Kind.LOCAL, max_concurrent=SLOTS, poll_interval=1)
    backend.allowed_groups.add(Group.objects.get(name=LOCAL_USERS))
    run = create_run(owner=owner, backend=backend, payload=workflow(), workflow_name="sweep")
    run = run_to_end(run, timeout=240)
    assert run.status == Run.Status.FAILED  # 10 simulations failed, so the summary never ran

    picture = timeline.build_timeline(run)
    assert 1 < picture.line.peak <= SLOTS
    assert [g.label for g in picture.groups] == ["(no group)", "sim"]
    assert all(g.folded for g in picture.groups)  # a 1,000-task run folds its groups

    base = live_server.url
    with live_portal(base) as (context, watch):
        page = context.new_page()
        login(page, base, "alice", "pw-alice-123")
        page.goto(f"{base}/runs/{run.pk}")
        expect(page.locator("#timeline .tl-line polyline")).to_have_count(1)
        save = os.environ.get("SCRIPTHUT_SCREENSHOTS")
        if save:
            page.locator("#timeline").screenshot(path=str(SCREENSHOT_DIR / "real-run-timeline.png"))
        page.locator("details.tl-group summary", has_text="sim").click()
        expect(page.locator("details.tl-group .tl-bar")).to_have_count(timeline.BARS_PER_GROUP)
        # The failed simulations stand out in red among the green.
        expect(page.locator("details.tl-group .tl-bar.st-c-failed")).to_have_count(5)
        if save:
            page.locator("#timeline").screenshot(path=str(SCREENSHOT_DIR / "real-run-timeline-open.png"))
        page.locator("a", has_text="Next tasks").click()
        expect(page.locator("details.tl-group .tl-bar")).to_have_count(TASKS - 2 - timeline.BARS_PER_GROUP)
        assert watch.problems == []
