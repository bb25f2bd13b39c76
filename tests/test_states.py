"""The task state machine: every move in the table is made, every other one refused."""

from __future__ import annotations

from itertools import product

import pytest
from django.contrib.auth.models import User
from django.db import transaction

from backends.models import Backend
from runs.actions import create_run
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
from runs.models import Task

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
