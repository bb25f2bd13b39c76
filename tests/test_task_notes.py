"""What a task's tabs say besides its files (the browser side is in test_page_defects)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from backends.models import Backend
from runs.actions import create_run
from runs.models import Task
from runs.web.task_notes import how_it_ended, why_it_never_ran


@pytest.mark.parametrize(
    "reason", ["time limit exceeded", "time limit exceeded (TIMEOUT)", "walltime exceeded"]
)  # local, Slurm, PBS
def test_a_time_limit_kill_is_named_on_every_backend(reason: str) -> None:
    start = timezone.now() - timedelta(minutes=5)
    task = Task(state="failed", reason=reason, job_id="42", time_limit="0:05:00", started_at=start, elapsed_seconds=300)
    assert how_it_ended(task) == f"Killed by its time limit of 0:05:00 after 5m 00s ({reason})."


def test_other_ends_and_tasks_that_never_ran(user: User, local_backend: Backend) -> None:
    payload = [
        {"id": "a", "name": "a", "command": "true"},
        {"id": "b", "name": "b", "command": "true", "deps": ["a"]},
        {"id": "c", "name": "c", "command": "true", "deps": ["b"]},
        {"id": "d", "name": "d", "command": "true"},
    ]
    run = create_run(owner=user, backend=local_backend, payload=payload, workflow_name="w")
    Task.objects.filter(run=run, task_id="a").update(state="failed", reason="exit code 3", job_id="j-a")
    Task.objects.filter(run=run, task_id="b").update(state="dep_failed", reason="dependency 'a' failed")
    # c: a job held on b in the scheduler (afterok), dropped when b could never run
    Task.objects.filter(run=run, task_id="c").update(state="dep_failed", reason="dependency 'b' failed", job_id="j-c")
    Task.objects.filter(run=run, task_id="d").update(state="cancelled", reason="run cancelled")
    a, b, c, d = (Task.objects.get(run=run, task_id=t) for t in "abcd")

    assert how_it_ended(a) == "The task failed: exit code 3."
    assert why_it_never_ran(a) == ""  # it ran
    assert why_it_never_ran(b) == "its dependency a (failed: exit code 3) did not complete"
    assert how_it_ended(b) == ""  # no job: its tabs say it never ran instead
    assert (
        how_it_ended(c) == "This task never ran: its dependency b (dep_failed: dependency 'a' failed) did not complete."
    )
    assert why_it_never_ran(d) == "its run was cancelled before it was submitted"
