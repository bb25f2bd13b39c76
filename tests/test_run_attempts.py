"""A relaunched run's attempts and duration (the run page shows them; see test_page_defects)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from runs.actions import record_relaunch
from runs.models import Run
from runs.web.attempts import attempts


def test_attempts_add_up_active_time_and_skip_the_gaps() -> None:
    alice = User(username="alice")
    first_start = timezone.now() - timedelta(days=2)
    run = Run(started_at=first_start, finished_at=first_start + timedelta(seconds=10))
    assert run.attempt == 1 and run.active_seconds == 10 and attempts(run) == []

    record_relaunch(run, alice, tasks=3)  # two days later
    second_start = datetime.fromisoformat(run.relaunches[0]["at"])
    run.finished_at = second_start + timedelta(seconds=5)
    assert run.attempt == 2 and run.active_seconds == pytest.approx(15)

    record_relaunch(run, None, tasks=1)  # from the CLI, say: nobody named
    third_start = datetime.fromisoformat(run.relaunches[1]["at"])
    run.finished_at = third_start + timedelta(seconds=2)
    assert run.attempt == 3 and run.active_seconds == pytest.approx(17)

    rows = attempts(run)
    assert [(a.number, a.seconds, a.by, a.tasks, a.current) for a in rows] == [
        (1, 10, "", None, False),
        (2, 5, "alice", 3, False),
        (3, pytest.approx(2), "", 1, True),
    ]
    assert rows[0].started_at == first_start and rows[1].started_at == second_start


def test_a_running_attempt_counts_until_now() -> None:
    start = timezone.now() - timedelta(hours=1)
    run = Run(started_at=start, finished_at=start + timedelta(seconds=30))
    record_relaunch(run, None, tasks=1)
    run.finished_at = None
    assert 30 <= (run.active_seconds or 0) < 32
