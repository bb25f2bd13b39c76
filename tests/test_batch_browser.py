"""The AWS Batch backend as a researcher sees it, in headless Chromium: the task page
with the locked-image warning, the CloudWatch log followed live, the error tab's note."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import close_all
from runs.actions import create_run
from runs.models import Task
from tests.aws import (
    MotoServer,
    batch_world,
    moto_server_fixture,  # noqa: F401  (fixture)
    moto_url_fixture,  # noqa: F401  (fixture)
    start_job,
    write_log,
)
from tests.browser import chromium_available, live_portal, login, screenshot

pytestmark = [
    pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium is missing"),
    pytest.mark.aws,
    pytest.mark.browser,
]


def test_batch_task_pages(
    live_server: Any, transactional_db: None, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from playwright.sync_api import expect

    close_all()
    world = batch_world(moto_server)
    settings = {
        "aws": {"region": "us-east-1", "job_queue": world.queue, "endpoint_url": moto_server.url},
        "job_definition": world.job_definition,
    }
    backend = Backend.objects.create(
        name="aws-batch", kind="batch", settings=validate_backend_settings("batch", settings), poll_interval=1
    )
    user = User.objects.create_user("researcher", password="pw-researcher-1")
    payload = [{"id": "train", "name": "Train model", "command": "python train.py", "image": "python:3.13"}]
    run = create_run(owner=user, backend=backend, payload=payload, workflow_name="batch-demo")
    base = live_server.url
    with live_portal(base) as (context, watch):
        page = context.new_page()
        login(page, base, "researcher", "pw-researcher-1")
        page.goto(f"{base}/runs/{run.pk}/tasks/train/script")
        expect(page.locator(".task-warning")).to_contain_text("'python:3.13' ignored")
        expect(page.locator(".task-warning")).to_contain_text("locked to")
        screenshot(page, "batch-01-task-warning")
        job_id = Task.objects.get(run=run, task_id="train").job_id
        stream = start_job(moto_server, job_id, ("epoch 1 loss 0.91", "epoch 2 loss 0.55"))
        page.goto(f"{base}/runs/{run.pk}/tasks/train/logs/output")
        expect(page.locator("pre.log")).to_contain_text("epoch 2 loss 0.55")
        write_log(moto_server, stream, ("epoch 3 loss 0.31",))
        expect(page.locator("pre.log")).to_contain_text("epoch 3 loss 0.31")  # followed, no reload
        expect(page.locator(".log-head")).to_contain_text(stream)
        screenshot(page, "batch-02-log-followed")
        page.goto(f"{base}/runs/{run.pk}/tasks/train/logs/error")
        expect(page.locator("#log")).to_contain_text("both are in the output tab")
        screenshot(page, "batch-03-error-tab")
        page.goto(f"{base}/runs/{run.pk}")
        expect(page.locator(".task-warn")).to_have_attribute("title", re.compile("'python:3.13' ignored"))
        screenshot(page, "batch-04-run")
        assert watch.problems == []
    close_all()
