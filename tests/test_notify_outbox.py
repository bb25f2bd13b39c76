"""The outbox: rows written in the transaction of the change that causes them, once per event."""

from __future__ import annotations

import pytest
from django.db import transaction

from runs.actions import cancel_run, create_run
from runs.engine.run_status import refresh_run_status
from runs.engine.states import TaskState
from runs.models import Notification, NotificationPreference, Run, Task
from runs.notify.outbox import enqueue

pytestmark = pytest.mark.django_db


def _prefs(user, **fields):
    defaults = {
        "on": "always",
        "email": "alice@example.org",
        "webhook_url": "https://hooks.slack.com/services/T/B/secret",
    }
    return NotificationPreference.objects.create(user=user, **(defaults | fields))


def _run(user, backend, n=2) -> Run:
    tasks = [{"id": f"t{i}", "name": f"T{i}", "command": "true"} for i in range(n)]
    return create_run(owner=user, backend=backend, payload=tasks, workflow_name="wf")


def _finish(run: Run, state: str) -> None:
    Task.objects.filter(run=run).update(state=state)
    refresh_run_status(run.pk)


def test_enqueue_writes_one_row_per_channel_and_the_same_key_twice_is_a_no_op(user):
    _prefs(user)
    for _ in range(2):
        enqueue(user=user, event="budget.crossed", subject="over budget", payload={"x": 1}, dedupe_key="budget:1")
    rows = {n.channel: n for n in Notification.objects.all()}
    assert set(rows) == {"email", "webhook"}
    assert rows["email"].target == "alice@example.org"
    assert rows["webhook"].slack  # a hooks.slack.com URL gets Slack's {"text": ...} body
    assert rows["email"].idempotency_key != rows["webhook"].idempotency_key


def test_enqueue_in_a_rolled_back_transaction_leaves_no_row(user):
    _prefs(user)
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue(user=user, event="budget.crossed", subject="s", payload={}, dedupe_key="budget:2")
        assert Notification.objects.count() == 2
        raise RuntimeError("the change that caused it failed")
    assert Notification.objects.count() == 0


def test_a_webhook_url_is_stored_encrypted(user):
    _prefs(user)
    enqueue(user=user, event="e", subject="s", payload={}, dedupe_key="k")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT target FROM runs_notification WHERE channel = 'webhook'")
        (stored,) = cursor.fetchone()
        cursor.execute("SELECT webhook_url FROM runs_notificationpreference")
        (pref_stored,) = cursor.fetchone()
    assert "secret" not in stored and "slack" not in stored
    assert "secret" not in pref_stored


def test_a_failed_run_is_notified_with_its_payload_in_the_status_update(user, local_backend):
    _prefs(user, on="failure", webhook_url="")
    run = _run(user, local_backend)
    _finish(run, TaskState.FAILED)
    (note,) = Notification.objects.all()
    assert note.event == "run.failed" and note.channel == "email" and note.run_id == run.pk
    assert note.payload["run_id"] == run.pk and note.payload["status"] == "failed"
    # Every state, zeros included: the API's counts (runs.shapes.counts_shape).
    assert note.payload["counts"] == dict.fromkeys(TaskState.values, 0) | {"failed": 2} and note.payload["total"] == 2
    assert note.payload["name"] == "wf" and note.payload["link"].endswith(f"/runs/{run.pk}")
    assert "cost" in note.payload
    refresh_run_status(run.pk)  # nothing changed: nothing more
    assert Notification.objects.count() == 1


def test_on_failure_skips_a_completed_run_and_always_does_not(user, bob, local_backend):
    _prefs(user, on="failure", webhook_url="")
    _prefs(bob, on="always", email="bob@example.org", webhook_url="")
    _finish(_run(user, local_backend), TaskState.COMPLETED)
    _finish(_run(bob, local_backend), TaskState.COMPLETED)
    assert list(Notification.objects.values_list("user__username", "event")) == [("bob", "run.completed")]


def test_never_writes_nothing(user, local_backend):
    _prefs(user, on="never")
    _finish(_run(user, local_backend), TaskState.FAILED)
    assert not Notification.objects.exists()


def test_first_task_started_is_opt_in_and_sent_once(user, bob, local_backend):
    _prefs(user, first_task_started=True, webhook_url="")
    _prefs(bob, email="bob@example.org", webhook_url="")
    for owner in (user, bob):
        run = _run(owner, local_backend)
        Task.objects.filter(run=run, task_id="t0").update(state=TaskState.RUNNING)
        refresh_run_status(run.pk)
    assert list(Notification.objects.values_list("user__username", "event")) == [("alice", "run.started")]


def test_the_status_update_and_its_notification_roll_back_together(user, local_backend):
    _prefs(user, webhook_url="")
    run = _run(user, local_backend)
    with pytest.raises(RuntimeError), transaction.atomic():
        _finish(run, TaskState.FAILED)
        assert Notification.objects.count() == 1
        raise RuntimeError("the tick died before committing")
    run.refresh_from_db()
    assert run.status == "pending" and not Notification.objects.exists()


def test_cancel_is_notified_under_always(user, local_backend):
    _prefs(user, webhook_url="")
    run = _run(user, local_backend)
    cancel_run(run, by=user)
    assert list(Notification.objects.values_list("event", flat=True)) == ["run.cancelled"]


def test_a_relaunched_run_that_fails_again_is_notified_again(user, local_backend):
    from runs.actions import relaunch_run

    _prefs(user, on="failure", webhook_url="")
    run = _run(user, local_backend)
    _finish(run, TaskState.FAILED)
    run.refresh_from_db()
    relaunch_run(run, by=user)
    _finish(run, TaskState.FAILED)
    assert list(Notification.objects.values_list("event", flat=True)) == ["run.failed", "run.failed"]
    assert len(set(Notification.objects.values_list("dedupe_key", flat=True))) == 2


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.org/x", "http:// or https://"),
        ("https:///path", "no host"),
        ("https://user:pw@example.org/", "user name or password"),
        ("https://" + "a" * 64 + ".example/", "invalid host name"),
        ("https://example.org:99999/", "invalid port"),
        ("https://hooks.slack.com/services/T/B/x", None),
    ],
)
def test_webhook_url_rules(url, problem):
    from runs.notify.webhook_url import url_problem

    found = url_problem(url)
    assert (found is None) if problem is None else (problem in (found or ""))
