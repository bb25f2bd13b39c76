"""The task state machine: every move in the table is made, every other one refused."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from itertools import product
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backends.base import BackendAdapter, BackendUnavailable, JobState, JobStatus, PollResult, SubmitResult
from backends.models import Backend
from backends.registry import get_adapter
from runs.actions import create_run, relaunch_run
from runs.engine import claim, poll, reconcile, submit
from runs.engine.states import (
    ACTIVE,
    FINISHED,
    LIVE,
    TRANSITIONS,
    UNFINISHED,
    UNSUCCESSFUL,
    IllegalTransition,
    Step,
    TaskState,
    move,
    move_all,
    sources,
)
from runs.models import Run, Task

pytestmark = pytest.mark.django_db

ALLOWED = sorted((src, dst, step) for (src, dst), steps in TRANSITIONS.items() for step in steps)
FORBIDDEN = sorted(
    (src, dst, step)
    for src, dst, step in product(TaskState.values, TaskState.values, Step)
    if step not in TRANSITIONS.get((src, dst), ())
)


@pytest.fixture
def task(user: User, local_backend: Backend) -> Task:
    run = create_run(
        owner=user, backend=local_backend, workflow_name="sm", payload=[{"id": "a", "name": "a", "command": "true"}]
    )
    return run.tasks.get()


def _try(task: Task, src: str, dst: str, step: Step) -> list[Task]:
    Task.objects.filter(pk=task.pk).update(state=src)
    task.refresh_from_db()
    task.state = dst
    with transaction.atomic():
        return move([task], step, ["state"])


def test_groups_are_made_of_states() -> None:
    assert set(FINISHED) | set(UNFINISHED) == set(TaskState.values)
    assert not set(FINISHED) & set(UNFINISHED)
    assert set(LIVE) < set(ACTIVE) < set(UNFINISHED) and set(UNSUCCESSFUL) < set(FINISHED)
    assert all(src in TaskState.values and dst in TaskState.values for src, dst in TRANSITIONS)


@pytest.mark.parametrize(("src", "dst", "step"), ALLOWED, ids=lambda v: str(v))
def test_every_allowed_move_is_made(task: Task, src: str, dst: str, step: Step) -> None:
    assert _try(task, src, dst, step) == [task]
    assert Task.objects.get(pk=task.pk).state == dst


@pytest.mark.parametrize(("src", "dst", "step"), FORBIDDEN, ids=lambda v: str(v))
def test_every_other_move_is_refused(task: Task, src: str, dst: str, step: Step) -> None:
    try:
        sources(dst, step)
    except IllegalTransition:
        # No state at all may go there by this step: the caller's bug is raised.
        with pytest.raises(IllegalTransition):
            _try(task, src, dst, step)
    else:
        # The step may reach dst from elsewhere, but this row is not there: left alone.
        assert _try(task, src, dst, step) == []
    assert Task.objects.get(pk=task.pk).state == src


def test_narrowing_to_forbidden_sources_is_refused(task: Task) -> None:
    task.state = TaskState.COMPLETED
    with pytest.raises(IllegalTransition), transaction.atomic():
        move([task], Step.POLL, ["state"], from_states=(TaskState.PENDING,))
    with pytest.raises(IllegalTransition):
        move_all(Task.objects.all(), Step.CANCEL, TaskState.CANCELLED, (TaskState.COMPLETED,))


def test_a_row_moved_meanwhile_is_left_alone(task: Task) -> None:
    # The tick read the task as submitted; a cancel made it cancelled before the poll's UPDATE.
    stale = Task.objects.get(pk=task.pk)
    Task.objects.filter(pk=task.pk).update(state=TaskState.CANCELLED)
    stale.state = TaskState.COMPLETED
    with transaction.atomic():
        assert move([stale], Step.POLL, ["state"]) == []
    assert Task.objects.get(pk=task.pk).state == TaskState.CANCELLED


def test_move_all_moves_only_rows_in_its_sources(task: Task) -> None:
    assert move_all(Task.objects.all(), Step.CANCEL, TaskState.CANCELLED, (TaskState.PENDING,), reason="x") == 1
    assert move_all(Task.objects.all(), Step.CANCEL, TaskState.CANCELLED, (TaskState.PENDING,), reason="y") == 0
    assert Task.objects.get(pk=task.pk).reason == "x"


# -- one conditional UPDATE per move --------------------------------------------------------


def _statements(queries: CaptureQueriesContext) -> list[str]:
    """The statements that read or write rows (not BEGIN, SAVEPOINT, RELEASE)."""
    return [q["sql"] for q in queries.captured_queries if q["sql"].split()[0].upper() in ("SELECT", "UPDATE", "WITH")]


def _tasks(user: User, backend: Backend, n: int) -> list[Task]:
    payload = [{"id": f"t{i}", "name": f"t{i}", "command": "true"} for i in range(n)]
    return list(create_run(owner=user, backend=backend, workflow_name="sm", payload=payload).tasks.all())


def test_a_move_is_one_conditional_update_and_returns_what_it_moved(
    user: User, local_backend: Backend, django_capture_on_commit_callbacks: Any
) -> None:
    tasks = _tasks(user, local_backend, 3)
    Task.objects.filter(pk=tasks[1].pk).update(state=TaskState.CANCELLED)  # moved by someone else meanwhile
    for n, task in enumerate(tasks):
        task.state, task.job_id = TaskState.SUBMITTING, f"job-{n}"
    with django_capture_on_commit_callbacks(execute=True) as announced:
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            moved = move(tasks, Step.CLAIM, ["state", "job_id"])
    assert moved == [tasks[0], tasks[2]]
    [update] = _statements(queries)  # no SELECT ... FOR UPDATE before it
    assert update.startswith("WITH") and "UPDATE" in update and "RETURNING" in update
    rows = dict(Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list("pk", "job_id"))
    assert rows == {tasks[0].pk: "job-0", tasks[1].pk: "", tasks[2].pk: "job-2"}
    assert len(announced) == 1


def test_move_all_is_one_conditional_update(user: User, local_backend: Backend) -> None:
    tasks = _tasks(user, local_backend, 3)
    Task.objects.filter(pk=tasks[0].pk).update(state=TaskState.SUBMITTED)
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        moved = move_all(Task.objects.all(), Step.CANCEL, TaskState.CANCELLED, (TaskState.PENDING,), reason="x")
    assert moved == 2
    [update] = _statements(queries)
    assert update.startswith("UPDATE") and "RETURNING" in update


# -- one way back to pending ------------------------------------------------------------------

# What a new attempt must not inherit from the last one (as runs.engine.states.requeue clears it).
LEFT_BEHIND = {
    "job_id": "j-old",
    "submit_tag": "sh-old",
    "claimed_at": datetime(2026, 1, 1, tzinfo=UTC),
    "submitted_at": datetime(2026, 1, 1, tzinfo=UTC),
    "started_at": datetime(2026, 1, 1, tzinfo=UTC),
    "finished_at": datetime(2026, 1, 1, tzinfo=UTC),
    "exit_code": 3,
    "elapsed_seconds": 5.0,
    "node": "n1",
    "queue_wait_seconds": 2.0,
    "cpu_efficiency": 0.5,
    "max_rss_mb": 10.0,
    "out_of_memory": True,
    "native_deps": True,
    "unknown_since": datetime(2026, 1, 1, tzinfo=UTC),
    "warning": "image ignored",
    "cost": Decimal("1.5"),
    "waste_cost": Decimal("0.5"),
    "priced_with": "m5.large on-demand",
}


def _scripted(adapter: BackendAdapter, monkeypatch: pytest.MonkeyPatch, **answers: JobStatus) -> None:
    monkeypatch.setattr(adapter, "poll", lambda ids: PollResult({a.job_id: a for a in answers.values()}))


def _submit_unreachable(task: Task, adapter: BackendAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(jobs: Any) -> Any:
        raise BackendUnavailable("controller down")

    monkeypatch.setattr(adapter, "submit", unreachable)
    Task.objects.filter(pk=task.pk).update(**LEFT_BEHIND)
    with pytest.raises(BackendUnavailable):
        submit.submit_ready(task.run.backend, adapter, set())


def _submit_deferred(task: Task, adapter: BackendAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    claimed = claim.claim_ready(task.run, 1, adapter, {})
    Task.objects.filter(pk=task.pk).update(**LEFT_BEHIND)
    submit.apply_results(claimed, [SubmitResult(claimed[0][1].tag, error="busy", retry=True)], timezone.now())


def _reconciled(task: Task, adapter: BackendAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    Task.objects.filter(pk=task.pk).update(**LEFT_BEHIND, state=TaskState.SUBMITTING)
    reconcile.reconcile_submitting(task.run.backend, adapter, set())  # its tag is unknown: never sent


def _retried(task: Task, adapter: BackendAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    Task.objects.filter(pk=task.pk).update(**LEFT_BEHIND, state=TaskState.RUNNING, retries=1)
    _scripted(adapter, monkeypatch, job=JobStatus("j-old", JobState.FAILED, exit_code=1))
    poll.poll_jobs(task.run.backend, adapter, set())


def _held_job_dropped(task: Task, adapter: BackendAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job held on a parent that completed, dropped before it started (poll, finish)."""
    dirt = {**LEFT_BEHIND, "started_at": None}  # it never started
    Task.objects.filter(pk=task.pk).update(**dirt, state=TaskState.SUBMITTED)
    dropped = JobStatus("j-old", JobState.CANCELLED, never_started=True)
    _scripted(adapter, monkeypatch, job=dropped)
    poll.poll_jobs(task.run.backend, adapter, set())


def _relaunched(task: Task, adapter: BackendAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    Task.objects.filter(pk=task.pk).update(**LEFT_BEHIND, state=TaskState.FAILED)
    Run.objects.filter(pk=task.run_id).update(status=Run.Status.FAILED)
    relaunch_run(Run.objects.get(pk=task.run_id))


@pytest.mark.parametrize(
    "path", [_submit_unreachable, _submit_deferred, _reconciled, _retried, _held_job_dropped, _relaunched]
)
def test_every_way_back_to_pending_clears_the_same_fields(
    task: Task, path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path(task, get_adapter(task.run.backend), monkeypatch)
    task.refresh_from_db()
    assert task.state == TaskState.PENDING and task.reason
    left = {name: getattr(task, name) for name in LEFT_BEHIND}
    defaults = {field.name: field.get_default() for field in Task._meta.concrete_fields}
    assert left == {name: defaults[name] for name in LEFT_BEHIND}
