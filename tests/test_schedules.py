"""Runs on a schedule (runs.schedules): fired once per due time, on a controllable clock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection

from backends.models import Backend
from runs.actions import cancel_run
from runs.models import AuditEvent, Run, Schedule, Workflow
from runs.schedules.fire import fire_due
from runs.schedules.timing import cron_problem, timezone_problem
from sources.models import Source
from tests.conftest import LOCAL_USERS
from tests.threads import db_thread

DOCUMENT = {"tasks": [{"id": "t", "name": "t", "command": "true"}]}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def workflow(local_backend: Backend, tmp_path: Path) -> Workflow:
    (tmp_path / "w.json").write_text(json.dumps(DOCUMENT))
    return Workflow.objects.create(name="nightly", backend=local_backend, command=f"cat {tmp_path / 'w.json'}")


def schedule(workflow: Workflow, owner: User, **fields: Any) -> Schedule:
    values = {"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Paris"} | fields
    return Schedule.objects.create(workflow=workflow, owner=owner, **values)


def fires(when: str) -> list[str]:
    return fire_due(at(when))


def test_a_due_time_fires_once_as_the_owner(workflow: Workflow, user: User, time_machine: Any) -> None:
    time_machine.move_to(at("2026-06-01T10:00:00"), tick=False)
    nightly = schedule(workflow, user)
    assert nightly.next_fire_at == at("2026-06-02T00:00:00")  # 02:00 in Paris (summer time)
    assert fires("2026-06-01T23:59:59") == []
    [outcome] = fires("2026-06-02T00:00:20")
    run = Run.objects.get()
    assert outcome == f"started run {run.pk}"
    assert (run.schedule, run.owner, run.workflow, run.warnings) == (nightly, user, workflow, [])
    assert fires("2026-06-02T00:00:40") == []  # the same due time: nothing more
    nightly.refresh_from_db()
    assert nightly.last_fired_for == at("2026-06-02T00:00:00")
    assert nightly.next_fire_at == at("2026-06-03T00:00:00")
    assert nightly.last_outcome == outcome
    assert Run.objects.count() == 1


def test_a_source_file_on_a_schedule(local_backend: Backend, user: User, tmp_path: Path, time_machine: Any) -> None:
    time_machine.move_to(at("2026-06-01T10:00:00"), tick=False)
    (tmp_path / "w.json").write_text(json.dumps(DOCUMENT))
    files = Source.objects.create(
        name="files", kind="path", path=str(tmp_path), backend=local_backend, workflow_files=["w.json"]
    )
    Schedule.objects.create(name="hourly", source=files, file="w.json", owner=user, cron="@hourly", timezone="UTC")
    [outcome] = fires("2026-06-01T11:00:05")
    assert outcome.startswith("started run") and Run.objects.get().workflow_name == "files/w.json"


def test_a_portal_that_was_down_fires_a_missed_time_once_and_says_so(
    workflow: Workflow, user: User, time_machine: Any
) -> None:
    time_machine.move_to(at("2026-06-01T10:00:00"), tick=False)
    nightly = schedule(workflow, user, cron="0 * * * *")  # hourly; the portal is down from 01:30 to 07:14 UTC
    nightly.next_fire_at = at("2026-06-02T02:00:00")
    nightly.save()
    assert len(fires("2026-06-02T07:14:00")) == 1
    [run] = Run.objects.all()
    assert run.warnings == [
        "scheduled for 2026-06-02 09:00, started at 2026-06-02 09:14 (Europe/Paris) after the portal was down; "
        "5 earlier scheduled time(s) were not run"
    ]
    assert fires("2026-06-02T07:15:00") == []
    nightly.refresh_from_db()
    assert nightly.next_fire_at == at("2026-06-02T08:00:00")


def test_a_daily_time_missed_says_when_it_was_due(workflow: Workflow, user: User, time_machine: Any) -> None:
    time_machine.move_to(at("2026-06-01T10:00:00"), tick=False)
    schedule(workflow, user)
    assert len(fires("2026-06-02T07:14:00")) == 1  # 09:14 in Paris
    assert Run.objects.get().warnings == [
        "scheduled for 2026-06-02 02:00, started at 2026-06-02 09:14 (Europe/Paris) after the portal was down"
    ]


def fired_over(start: str, hours: int, step_minutes: int = 15) -> list[datetime | None]:
    """Call the dispatcher every ``step_minutes`` for ``hours``; the due times it fired."""
    fired = []
    now = at(start)
    for _ in range(hours * 60 // step_minutes):
        if fire_due(now):
            fired.append(Schedule.objects.get().last_fired_for)
        now += timedelta(minutes=step_minutes)
    return fired


def test_dst_spring_forward_fires_the_missing_time_once(workflow: Workflow, user: User, time_machine: Any) -> None:
    time_machine.move_to(at("2026-03-28T12:00:00"), tick=False)
    schedule(workflow, user, cron="30 2 * * *", overlap="allow")  # 02:30 does not exist on 29 March in Paris
    fired = fired_over("2026-03-28T12:00:00", 48)
    # 29 March: 03:30 CEST (01:30 UTC), an hour later by the clock; 30 March: 02:30 CEST.
    assert fired == [at("2026-03-29T01:30:00"), at("2026-03-30T00:30:00")]


def test_dst_fall_back_fires_the_doubled_time_once(workflow: Workflow, user: User, time_machine: Any) -> None:
    time_machine.move_to(at("2026-10-24T12:00:00"), tick=False)
    schedule(workflow, user, cron="30 2 * * *", overlap="allow")  # 02:30 happens twice on 25 October in Paris
    fired = fired_over("2026-10-24T12:00:00", 48)
    # 25 October: the first 02:30 (CEST, 00:30 UTC), not the second; 26 October: 02:30 CET.
    assert fired == [at("2026-10-25T00:30:00"), at("2026-10-26T01:30:00")]


def test_overlap_skip_is_the_default(workflow: Workflow, user: User, time_machine: Any) -> None:
    time_machine.move_to(at("2026-06-01T10:00:00"), tick=False)
    nightly = schedule(workflow, user)
    assert nightly.overlap == Schedule.Overlap.SKIP
    [first] = fires("2026-06-02T00:00:10")
    run = Run.objects.get()  # no tick: it stays pending
    assert fires("2026-06-03T00:00:10") == [f"skipped: run {run.pk} was still pending"]
    assert Run.objects.count() == 1
    cancel_run(run, user)
    assert len(fires("2026-06-04T00:00:10")) == 1 and Run.objects.count() == 2


def test_overlap_queue_starts_once_the_last_run_has_finished(workflow: Workflow, user: User, time_machine: Any) -> None:
    time_machine.move_to(at("2026-06-01T10:00:00"), tick=False)
    schedule(workflow, user, overlap="queue")
    fires("2026-06-02T00:00:10")
    first = Run.objects.get()
    assert fires("2026-06-03T00:00:10") == []  # waits
    assert fires("2026-06-03T03:00:00") == []
    assert Schedule.objects.get().last_outcome == f"queued: run {first.pk} is still pending"
    cancel_run(first, user)
    [outcome] = fires("2026-06-03T04:00:00")  # 06:00 in Paris
    second = Run.objects.exclude(pk=first.pk).get()
    assert outcome == f"started run {second.pk}"
    assert second.warnings == [
        "scheduled for 2026-06-03 02:00, started at 2026-06-03 06:00 (Europe/Paris) after the previous run finished"
    ]


def test_overlap_allow_starts_anyway(workflow: Workflow, user: User, time_machine: Any) -> None:
    time_machine.move_to(at("2026-06-01T10:00:00"), tick=False)
    schedule(workflow, user, overlap="allow")
    fires("2026-06-02T00:00:10")
    fires("2026-06-03T00:00:10")
    assert Run.objects.count() == 2


def test_a_schedule_whose_owner_lost_access_stops_with_the_reason(
    workflow: Workflow, user: User, time_machine: Any
) -> None:
    time_machine.move_to(at("2026-06-01T10:00:00"), tick=False)
    nightly = schedule(workflow, user)
    user.groups.remove(Group.objects.get(name=LOCAL_USERS))
    [outcome] = fires("2026-06-02T00:00:10")
    nightly.refresh_from_db()
    assert not nightly.enabled and not Run.objects.exists()
    assert nightly.stopped_reason == outcome
    assert outcome == (
        "stopped: its owner alice may not run it: backend 'local' is shared with the groups local-users, "
        "and you are in none of them"
    )
    assert AuditEvent.objects.filter(action="schedule_changed", target="schedule nightly", detail__change="stopped")
    assert fires("2026-06-03T00:00:10") == []


def test_schedule_changes_are_audited(workflow: Workflow, user: User) -> None:
    nightly = schedule(workflow, user)
    nightly.cron = "0 3 * * *"
    nightly.save()
    events = AuditEvent.objects.filter(action="schedule_changed", target="schedule nightly").order_by("id")
    assert [e.detail["change"] for e in events] == ["created", "changed"]
    assert events.last().detail["values"] == {"cron": ["0 2 * * *", "0 3 * * *"]}  # type: ignore[union-attr]
    fire_due(nightly.next_fire_at)  # firing is runtime state, not a change
    assert events.count() == 2


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("", "cron is empty"),
        ("* * *", "has 3 fields; give 5"),
        ("61 2 * * *", "'61 2 * * *'"),
        ("@fortnightly", "unknown nickname"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_a_bad_cron_is_named(cron: str, problem: str) -> None:
    assert problem in cron_problem(cron)


def test_good_crons_and_zones_pass() -> None:
    assert [cron_problem(c) for c in ("0 2 * * *", "@daily", "*/15 8-18 * * mon-fri")] == ["", "", ""]
    assert timezone_problem("Europe/Paris") == ""
    assert "not a known time zone" in timezone_problem("Mars/Olympus")
    assert "not a known time zone" in timezone_problem("../../etc/passwd")


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_fire_once(workflow: Workflow, user: User) -> None:
    nightly = schedule(workflow, user)
    due = nightly.next_fire_at
    assert due is not None
    start = threading.Barrier(2)
    outcomes: list[list[str]] = []

    def dispatcher() -> None:
        start.wait()
        outcomes.append(fire_due(due + timedelta(seconds=5)))

    threads = [db_thread(dispatcher) for _ in range(2)]
    for thread in threads:
        thread.join(60)
    assert sorted(len(o) for o in outcomes) == [0, 1]
    assert Run.objects.count() == 1


def database_url() -> str:
    """The test database, for a child process (SQLite or PostgreSQL)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


# A dispatcher that stops between creating the run and committing: SIGKILLed there.
KILLED_MID_FIRE = """
import sys, time, django
django.setup()
from pathlib import Path
from django.db.models.signals import post_save
from runs.models import Run
from runs.schedules.fire import fire_due

def hold(sender, instance, created, **kwargs):
    Path(sys.argv[1]).write_text(instance.pk)  # the run exists, uncommitted
    time.sleep(600)

post_save.connect(hold, sender=Run)
fire_due()
"""


@pytest.mark.django_db(transaction=True)
def test_a_dispatcher_killed_mid_fire_leaves_the_time_to_the_next_one(
    workflow: Workflow, user: User, tmp_path: Path
) -> None:
    nightly = schedule(workflow, user, cron="* * * * *", timezone="UTC")
    nightly.next_fire_at = at("2026-01-01T00:00:00")  # due now (the child's clock is the real one)
    nightly.save()
    marker = tmp_path / "created"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env["DATABASE_URL"] = database_url()
    child = subprocess.Popen([sys.executable, "-c", KILLED_MID_FIRE, str(marker)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the child never created the run"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert not Run.objects.filter(pk=marker.read_text()).exists()  # rolled back with the fire
    nightly.refresh_from_db()
    assert nightly.next_fire_at == at("2026-01-01T00:00:00") and nightly.last_fired_for is None
    [outcome] = fire_due()
    assert outcome.startswith("started run") and Run.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_embedded_ticker_fires_a_schedule_and_the_owners_notifications_apply(
    workflow: Workflow, user: User
) -> None:
    from runs.models import Notification, NotificationPreference
    from runs.workers.ticker import EmbeddedTicker

    dead_hook = "http://127.0.0.1:9/hook"  # loopback, nobody listens: the row is what is checked
    NotificationPreference.objects.create(user=user, on="always", webhook_url=dead_hook)
    nightly = schedule(workflow, user, cron="* * * * *", timezone="UTC")
    Schedule.objects.filter(pk=nightly.pk).update(next_fire_at=at("2026-01-01T00:00:00"))  # due
    ticker = EmbeddedTicker(interval=0.2, also=[fire_due])
    ticker.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not Run.objects.filter(schedule=nightly, status="completed").exists():
            time.sleep(0.1)
    finally:
        ticker.stop()
        ticker.join(30)
    run = Run.objects.get(schedule=nightly)  # fired once, and ran to the end
    assert run.status == "completed" and run.owner == user
    assert Notification.objects.filter(user=user, run=run).exists()


def test_beat_fires_schedules_as_often_as_it_dispatches_ticks() -> None:
    from django.conf import settings

    from scripthut_site.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["scripthut-schedules"]
    assert entry["schedule"] == settings.SCRIPTHUT_DISPATCH_SECONDS
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks
