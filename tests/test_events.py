"""The event hook: each committed change of a run or its tasks is announced once,
after the commit, with the run and the tasks that changed; a tick or a user action is
one announcement per run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from backends.base import SubmitResult
from backends.models import Backend
from backends.registry import get_adapter
from runs.actions import cancel_run, create_run
from runs.engine.claim import claim_ready
from runs.engine.events import RunChange, run_changed
from runs.engine.owners import hold_pending
from runs.engine.states import Step, TaskState, move
from runs.engine.submit import apply_results
from runs.engine.tick import tick_due_backends
from runs.engine.waiting import shown_reason
from runs.models import Run, Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def heard() -> Iterator[list[RunChange]]:
    changes: list[RunChange] = []

    def receiver(sender: Any, change: RunChange, **kwargs: Any) -> None:
        # Sent after the commit: what it announces is already visible outside the transaction.
        assert not transaction.get_connection().in_atomic_block
        changes.append(change)

    run_changed.connect(receiver, weak=False)
    yield changes
    run_changed.disconnect(receiver)


def _tasks(n: int) -> list[dict[str, Any]]:
    return [{"id": f"t{i}", "name": f"t{i}", "command": "true"} for i in range(n)]


def test_moves_are_announced_after_commit_and_not_on_rollback(
    heard: list[RunChange], user: User, local_backend: Backend
) -> None:
    run = create_run(owner=user, backend=local_backend, workflow_name="ev", payload=_tasks(3))
    assert heard == [RunChange(run.pk, frozenset(), run_status=True)]
    heard.clear()
    tasks = list(run.tasks.all())
    for task in tasks:
        task.state = TaskState.SUBMITTING
    with transaction.atomic():
        move(tasks[:2], Step.CLAIM, ["state"])
        assert heard == []  # not before the commit
    assert heard == [RunChange(run.pk, frozenset(t.pk for t in tasks[:2]))]
    heard.clear()
    with pytest.raises(RuntimeError), transaction.atomic():
        move(tasks[2:], Step.CLAIM, ["state"])
        raise RuntimeError("rolled back")
    assert heard == [] and Task.objects.get(pk=tasks[2].pk).state == TaskState.PENDING


def test_a_run_through_the_engine_announces_every_task_change(
    heard: list[RunChange], user: User, local_backend: Backend, run_to_end: Callable[..., Run]
) -> None:
    run = run_to_end(create_run(owner=user, backend=local_backend, workflow_name="ev", payload=_tasks(3)))
    assert run.status == Run.Status.COMPLETED
    assert {c.run_id for c in heard} == {run.pk}
    assert set().union(*(c.task_pks for c in heard)) == set(run.tasks.values_list("pk", flat=True))
    assert heard[-1].run_status  # the run's own completion comes last


def test_a_runs_first_tick_is_one_announcement_of_all_its_tasks(
    heard: list[RunChange], user: User, local_backend: Backend
) -> None:
    """Claimed, submitted, polled (a local job starts at once), the run started: one change."""
    run = create_run(owner=user, backend=local_backend, workflow_name="ev", payload=_tasks(3))
    heard.clear()
    tick_due_backends(force=True)
    assert heard == [RunChange(run.pk, frozenset(run.tasks.values_list("pk", flat=True)), run_status=True)]


def test_waiting_reasons_are_announced_with_their_run(
    heard: list[RunChange], user: User, local_backend: Backend, tmp_path: Path
) -> None:
    """A run's waiting reason is the run's (runs.engine.waiting): its change is announced as
    the run's, whose page then fetches its rows again, not task by task."""
    local_backend.max_concurrent = 1
    local_backend.save()
    # The one slot stays taken until the test opens the gate: a tick submits again while
    # slots free up, so instant tasks could all run in this one tick.
    gate = tmp_path / "gate"
    tasks = [
        {"id": f"t{i}", "name": f"t{i}", "command": f"while [ ! -e {gate} ]; do sleep 0.1; done"} for i in range(3)
    ]
    run = create_run(owner=user, backend=local_backend, workflow_name="ev", payload=tasks)
    heard.clear()
    tick_due_backends(force=True)
    gate.touch()
    run.refresh_from_db()
    assert {shown_reason(task) for task in run.tasks.filter(state=TaskState.PENDING)} == {
        "waiting: backend full, 1 of 1 slots in use by 1 user"
    }
    sent = frozenset(run.tasks.exclude(state=TaskState.PENDING).values_list("pk", flat=True))
    assert heard == [RunChange(run.pk, sent, run_status=True)]
    heard.clear()
    hold_pending(local_backend, user.pk, "waiting for an identity")  # a per_user backend's owner without one
    assert heard == [RunChange(run.pk, frozenset(), run_status=True)]
    run.refresh_from_db()
    assert {shown_reason(task) for task in run.tasks.filter(state=TaskState.PENDING)} == {"waiting for an identity"}


def test_a_submit_warning_is_committed_with_the_announced_submission(
    heard: list[RunChange], user: User, local_backend: Backend
) -> None:
    run = create_run(owner=user, backend=local_backend, workflow_name="ev", payload=_tasks(2))
    claimed = claim_ready(run, 2, get_adapter(local_backend), {})
    seen: dict[int, str] = {}

    def warnings_when_heard(sender: Any, change: RunChange, **kwargs: Any) -> None:
        seen.update(Task.objects.filter(pk__in=change.task_pks).values_list("pk", "warning"))

    run_changed.connect(warnings_when_heard, weak=False)
    try:
        heard.clear()
        results = [
            SubmitResult(spec.tag, job_id=f"j{n}", warning=f"image {n} ignored")
            for n, (_, spec, _) in enumerate(claimed)
        ]
        apply_results(claimed, results, timezone.now())
    finally:
        run_changed.disconnect(warnings_when_heard)
    assert heard == [RunChange(run.pk, frozenset(task.pk for task, _, _ in claimed))]
    assert seen == {task.pk: f"image {n} ignored" for n, (task, _, _) in enumerate(claimed)}


def test_cancel_is_one_announcement_of_the_run_and_its_pending_tasks(
    heard: list[RunChange], user: User, local_backend: Backend
) -> None:
    run = create_run(owner=user, backend=local_backend, workflow_name="ev", payload=_tasks(2))
    heard.clear()
    cancel_run(run)
    assert heard == [RunChange(run.pk, frozenset(run.tasks.values_list("pk", flat=True)), run_status=True)]
    assert set(run.tasks.values_list("state", flat=True)) == {TaskState.CANCELLED}
    heard.clear()
    tick_due_backends(force=True)
    assert heard == []  # nothing left to announce twice
