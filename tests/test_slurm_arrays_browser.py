"""The run page of a Slurm array run in headless Chromium, on the real test cluster: one
row per task with its own array job id (``<array>_<index>``), one task cancelled alone on
the cluster (``scancel <array>_<index>``), then the run cancelled from the page."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import close_all
from runs.actions import create_run
from runs.models import Task
from tests.browser import chromium_available, live_portal, login, screenshot

if TYPE_CHECKING:
    from tests.cluster import Cluster

pytest_plugins = ["tests.cluster"]
pytestmark = [
    pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing"),
    pytest.mark.cluster,
    pytest.mark.browser,
]


def test_array_run_page_shows_each_tasks_job_and_cancels(
    live_server: Any, transactional_db: None, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    close_all()
    settings = validate_backend_settings("slurm", {"ssh": cluster.ssh_settings(), "account": cluster.account})
    backend = Backend.objects.create(name="slurm", kind="slurm", settings=settings, poll_interval=1)
    user = User.objects.create_user("researcher", password="pw-researcher-1")
    payload = [{"id": f"long{i}", "name": f"long {i}", "command": "sleep 120", "time_limit": "5:00"} for i in range(3)]
    run = create_run(owner=user, backend=backend, payload=payload, workflow_name="array-page")
    base = live_server.url
    with live_portal(base) as (context, watch):
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # "Cancel run ...?" asks first
        login(page, base, "researcher", "pw-researcher-1")
        page.goto(f"{base}/runs/{run.pk}")
        rows = {f"long{i}": page.locator(f"tr:has(td:text-is('long{i}'))") for i in range(3)}
        for row in rows.values():
            expect(row.locator(".badge").first).to_have_text(re.compile("running"), timeout=60_000)
            expect(row.locator("td.job-id")).to_have_text(re.compile(r"^\d+_[0-2]$"))
        job_ids = {t.task_id: t.job_id for t in Task.objects.filter(run=run)}
        assert len({j.partition("_")[0] for j in job_ids.values()}) == 1  # one array
        for task_id, row in rows.items():
            expect(row.locator("td.job-id")).to_have_text(job_ids[task_id])
        screenshot(page, "arrays-01-running")

        cluster.run_as_user(f"scancel {job_ids['long1']}")  # one task, by its own job id
        expect(rows["long1"].locator(".badge").first).to_have_text(re.compile("cancelled"), timeout=30_000)
        expect(rows["long0"].locator(".badge").first).to_have_text(re.compile("running"))
        expect(rows["long2"].locator(".badge").first).to_have_text(re.compile("running"))
        screenshot(page, "arrays-02-one-cancelled")

        page.click("button:has-text('Cancel run')")
        for task_id in ("long0", "long2"):
            expect(rows[task_id].locator(".badge").first).to_have_text(re.compile("cancelled"), timeout=30_000)
        assert watch.problems == []
    close_all()
    array_id = job_ids["long0"].partition("_")[0]
    assert not cluster.run_as_user(f"squeue --noheader --array --states=RUNNING --jobs={array_id} --format=%i").strip()
