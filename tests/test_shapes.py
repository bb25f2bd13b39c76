"""One shape per thing shown (runs.shapes): the JSON API, the live push's events and the
notification payload say the same about the same task, its run and the run's counts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer
from django.contrib.auth.models import User
from django.test import Client

from runs.engine.events import announce_tasks
from runs.live import push
from runs.models import ApiToken, Run
from runs.notify.email import text
from runs.notify.models import Notification
from runs.notify.payload import run_payload
from runs.notify.webhook import slack_text
from tests.test_cost_pages import priced, ten  # noqa: F401  (fixtures: a priced run of ten tasks)

# The push renders on its own thread and connection: the data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


async def _receive(layer: BaseChannelLayer, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), timeout=30)


def _pushed(user: User, run: Run, task_id: str, capture: Any) -> dict[str, Any]:
    """What the push sends the owner's pages when ``task_id`` changes (the real path: announce,
    commit, the in-memory channel layer)."""
    layer = get_channel_layer()
    assert layer is not None
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(f"user-{user.pk}", channel)
    try:
        with capture(execute=True):
            announce_tasks([run.tasks.get(task_id=task_id)])
        assert push.flush()  # rendered on the pusher's thread and sent
        return async_to_sync(_receive)(layer, channel)
    finally:
        async_to_sync(layer.group_discard)(f"user-{user.pk}", channel)


def test_the_api_the_push_and_the_payload_agree_on_a_task_its_run_and_its_counts(
    ten: Run,  # noqa: F811
    user: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    events = _pushed(user, ten, "sim.0", django_capture_on_commit_callbacks)["events"]
    (event,) = [e for e in events if e.get("task") == "sim.0"]  # the fixture's own changes may share the push
    api = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    detail = api.get(f"/api/runs/{ten.pk}").json()
    (listed,) = api.get("/api/runs").json()["items"]
    (task,) = [t for t in detail["tasks"] if t["id"] == "sim.0"]
    ten.refresh_from_db()
    payload = run_payload(ten, "run.completed")

    # The task: every field the API gives, the same in the push (times to the same millisecond).
    assert task["started_at"] and task["finished_at"] and task["cost"] == 0.17  # filled in, so compared
    assert {field: event[field] for field in task} == task
    assert event["task"] == task["id"]
    # The run: the same facts under the names each has always had.
    assert (event["run"], event["owner"], event["run_status"]) == (listed["id"], listed["owner"], listed["status"])
    assert (payload["run_id"], payload["name"], payload["owner"], payload["status"]) == (
        listed["id"],
        listed["workflow_name"],
        listed["owner"],
        listed["status"],
    )
    assert {k: v for k, v in detail.items() if k in listed} == {k: listed[k] for k in detail if k in listed}
    assert payload["cost"] == listed["cost"]["total_usd"] == 1.36
    # The counts: every state, zeros included, everywhere.
    assert event["counts"] == listed["counts"] == payload["counts"]
    assert listed["counts"]["completed"] == 9 and listed["counts"]["failed"] == 0
    assert payload["total"] == sum(listed["counts"].values()) == 10


def test_notification_texts_name_only_the_states_that_have_tasks(ten: Run) -> None:  # noqa: F811
    note = Notification(subject="ScriptHut: run ten completed", payload=run_payload(ten, "run.completed"))
    assert "1 pending, 9 completed" in slack_text(note) and "0 " not in slack_text(note)
    lines = text(note).splitlines()
    assert "  completed: 9" in lines and "  pending: 1" in lines
    assert not [line for line in lines if line.endswith(": 0")]
