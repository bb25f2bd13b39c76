"""The event hook: each committed change of a run or its tasks is announced once,
after the commit, with the run, its owner and the tasks that moved."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction

from backends.models import Backend
from runs.actions import cancel_run, create_run
from runs.engine.events import RunChange, run_changed
from runs.engine.states import Step, TaskState, move
from runs.engine.tick import tick
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
    assert heard == [RunChange(run.pk, user.pk, frozenset(), run_status=True)]
    heard.clear()
    tasks = list(run.tasks.all())
    for task in tasks:
        task.state = TaskState.SUBMITTING
    with transaction.atomic():
        move(tasks[:2], Step.CLAIM, ["state"])
        assert heard == []  # not before the commit
    assert heard == [RunChange(run.pk, user.pk, frozenset(t.pk for t in tasks[:2]))]
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
    assert {c.run_id for c in heard} == {run.pk} and {c.owner_id for c in heard} == {user.pk}
    moved: dict[int, int] = {}
    for change in heard:
        for pk in change.task_ids:
            moved[pk] = moved.get(pk, 0) + 1
    # claimed, submitted, (running,) completed: each change once, none left out
    assert set(moved) == set(run.tasks.values_list("pk", flat=True))
    assert all(3 <= count <= 4 for count in moved.values()), moved
    assert heard[-1].run_status  # the run's own completion comes last


def test_cancel_announces_the_run_and_its_pending_tasks(
    heard: list[RunChange], user: User, local_backend: Backend
) -> None:
    run = create_run(owner=user, backend=local_backend, workflow_name="ev", payload=_tasks(2))
    heard.clear()
    cancel_run(run)
    assert {(c.run_id, c.owner_id) for c in heard} == {(run.pk, user.pk)}
    assert any(c.run_status for c in heard)  # the run's cancellation
    moved = Counter(pk for c in heard for pk in c.task_ids)
    assert moved == Counter(run.tasks.values_list("pk", flat=True))  # each pending task, once
    assert set(run.tasks.values_list("state", flat=True)) == {TaskState.CANCELLED}
    announced = list(heard)
    tick(force=True)  # nothing left to announce twice
    assert heard == announced
