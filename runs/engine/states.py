"""The task state machine: every state, every group of states, every allowed move.

A task is created ``pending``. A tick *claims* it (``submitting``, with a unique tag the
job will carry), *submits* it (``submitted``, with the scheduler's job id) and *polls*
it until it ends. Every move goes through :func:`move` (one conditional UPDATE per
batch), which refuses any move that is not in :data:`TRANSITIONS`::

  pending ─claim─▶ submitting ─submit/reconcile─▶ submitted ─poll─▶ running
     │                 │                              │                │
     │                 │                              └──────poll──────┴──▶ completed, failed, cancelled
     │                 ├─submit: rejected──────────────────────────────────▶ failed
     │                 └─submit/reconcile: not sent────────────────────────▶ pending
     ├─claim: its script cannot be rendered────────────────────────────────▶ failed
     ├─cancel──────────────────────────────────────────────────────────────▶ cancelled ◀─cancel─ submitted, running
     └─dependency──────────────────────────────────────────────────────────▶ dep_failed ◀─dependency/poll─ held jobs

  back to pending:  poll      from submitted/running (a retry; a held job dropped after its parents completed)
                    relaunch  from failed, cancelled, dep_failed (a finished run's unsuccessful tasks)
  stays pending:    claim     with a new reason it cannot be claimed (its owner has no cluster identity)

A run's status follows from its tasks' counts (:mod:`runs.engine.run_status`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from django.db import models, transaction
from django.db.models import Model, QuerySet

from runs.engine import events
from runs.engine.sql import chunks, update_rows


class TaskState(models.TextChoices):
    PENDING = "pending"  # waiting for its dependencies or for a free slot
    SUBMITTING = "submitting"  # claimed by a tick; handed to the backend, job id not known yet
    SUBMITTED = "submitted"  # on the scheduler (queued, or held on its dependencies)
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEP_FAILED = "dep_failed"  # a task it depends on failed: it will never run


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = TaskState

# -- groups of task states ---------------------------------------------------------------

# Hold a slot against max_concurrent (the run's and the backend's).
ACTIVE: tuple[str, ...] = (S.SUBMITTING, S.SUBMITTED, S.RUNNING)
# Have a job on the scheduler that a poll asks about.
LIVE: tuple[str, ...] = (S.SUBMITTED, S.RUNNING)
# Not finished yet: the run is still going while any task is in one of these.
UNFINISHED: tuple[str, ...] = (S.PENDING, *ACTIVE)
# Ended without completing: their dependents are dep_failed, and relaunch queues them again.
UNSUCCESSFUL: tuple[str, ...] = (S.FAILED, S.CANCELLED, S.DEP_FAILED)
FINISHED: tuple[str, ...] = (S.COMPLETED, *UNSUCCESSFUL)

RUN_FINISHED: tuple[str, ...] = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
RUN_UNFINISHED: tuple[str, ...] = (RunStatus.PENDING, RunStatus.RUNNING)


# -- the steps that move tasks, and the moves each may make --------------------------------


class Step(enum.StrEnum):
    CLAIM = "claim"  # a tick takes ready tasks for a submit batch
    SUBMIT = "submit"  # the backend answered the submit batch
    RECONCILE = "reconcile"  # a tick resolves tasks an interrupted submit left behind
    POLL = "poll"  # the scheduler says how a job is doing
    CANCEL = "cancel"  # a user cancelled the run
    RELAUNCH = "relaunch"  # a user queued a finished run's unsuccessful tasks again
    DEPENDENCY = "dependency"  # a task upstream failed for good


# (from, to) -> the steps allowed to make that move. A move to the same state only
# updates fields (a new pending reason, the unknown-since clock).
TRANSITIONS: dict[tuple[str, str], frozenset[Step]] = {
    (S.PENDING, S.PENDING): frozenset({Step.CLAIM}),  # not claimable yet: why (no cluster identity)
    (S.PENDING, S.SUBMITTING): frozenset({Step.CLAIM}),
    (S.PENDING, S.FAILED): frozenset({Step.CLAIM}),  # its script cannot be rendered
    (S.PENDING, S.CANCELLED): frozenset({Step.CANCEL}),
    (S.PENDING, S.DEP_FAILED): frozenset({Step.DEPENDENCY}),
    (S.SUBMITTING, S.SUBMITTED): frozenset({Step.SUBMIT, Step.RECONCILE}),
    (S.SUBMITTING, S.PENDING): frozenset({Step.SUBMIT, Step.RECONCILE}),  # not sent: try again
    (S.SUBMITTING, S.FAILED): frozenset({Step.SUBMIT}),  # rejected by the scheduler
    (S.SUBMITTED, S.SUBMITTED): frozenset({Step.POLL}),
    (S.SUBMITTED, S.RUNNING): frozenset({Step.POLL}),
    (S.SUBMITTED, S.COMPLETED): frozenset({Step.POLL}),
    (S.SUBMITTED, S.FAILED): frozenset({Step.POLL}),
    (S.SUBMITTED, S.CANCELLED): frozenset({Step.POLL, Step.CANCEL}),
    (S.SUBMITTED, S.DEP_FAILED): frozenset({Step.POLL, Step.DEPENDENCY}),  # held on a failed parent
    (S.SUBMITTED, S.PENDING): frozenset({Step.POLL}),  # retry, or a dropped held job goes again
    (S.RUNNING, S.RUNNING): frozenset({Step.POLL}),
    (S.RUNNING, S.COMPLETED): frozenset({Step.POLL}),
    (S.RUNNING, S.FAILED): frozenset({Step.POLL}),
    (S.RUNNING, S.CANCELLED): frozenset({Step.POLL, Step.CANCEL}),
    (S.RUNNING, S.PENDING): frozenset({Step.POLL}),  # retry
    (S.FAILED, S.PENDING): frozenset({Step.RELAUNCH}),
    (S.CANCELLED, S.PENDING): frozenset({Step.RELAUNCH}),
    (S.DEP_FAILED, S.PENDING): frozenset({Step.RELAUNCH}),
}


class IllegalTransition(RuntimeError):
    """A move that the state machine does not allow: a bug in the caller, never user input."""


def sources(target: str, step: Step) -> tuple[str, ...]:
    """The states from which ``step`` may move a task to ``target``; raises if none."""
    found = tuple(src for (src, dst), steps in TRANSITIONS.items() if dst == target and step in steps)
    if not found:
        raise IllegalTransition(f"{step} cannot move a task to {target}")
    return found


def allowed(source: str, target: str, step: Step) -> bool:
    return step in TRANSITIONS.get((source, target), frozenset())


# -- the one way a task's state changes ----------------------------------------------------


def _origins(target: str, step: Step, from_states: Sequence[str] | None) -> frozenset[str]:
    candidates = from_states if from_states is not None else [src for src, _ in TRANSITIONS]
    found = frozenset(src for src in candidates if allowed(src, target, step))
    if not found:
        raise IllegalTransition(f"{step} cannot move a task to {target} (from {', '.join(candidates)})")
    return found


def move(
    tasks: Sequence[Model], step: Step, fields: Sequence[str], *, from_states: Sequence[str] | None = None
) -> list[Any]:
    """Save ``fields`` of the tasks whose row is still in a state from which ``step`` may
    bring it to the task's new ``state`` (set on the instance by the caller); return them.

    The conditional UPDATE every state change goes through: the rows are locked
    (PostgreSQL) or the write lock is held (SQLite, IMMEDIATE), so a task moved by
    another actor meanwhile is left alone. ``from_states`` narrows the table's sources.
    A move the table does not allow raises :class:`IllegalTransition`. Call inside
    ``transaction.atomic()``; the change is announced once it commits.
    """
    if not tasks:
        return []
    model = type(tasks[0])
    origins = {state: _origins(state, step, from_states) for state in {t.state for t in tasks}}  # type: ignore[attr-defined]
    every_origin = sorted(set().union(*origins.values()))
    by_pk = {t.pk: t for t in tasks}
    moved: list[Any] = []
    for chunk in chunks(list(by_pk)):
        locked = model._default_manager.select_for_update().filter(pk__in=chunk, state__in=every_origin)
        for pk, state in locked.values_list("pk", "state"):
            if state in origins[by_pk[pk].state]:  # type: ignore[attr-defined]
                moved.append(by_pk[pk])
    update_rows(moved, fields)
    events.announce_tasks(moved)
    return moved


def move_all(tasks: QuerySet[Any], step: Step, target: str, from_states: Sequence[str], **values: Any) -> int:
    """Move every task of ``tasks`` that is in ``from_states`` to ``target``, in one UPDATE."""
    _origins(target, step, from_states)
    if any(not allowed(src, target, step) for src in from_states):
        raise IllegalTransition(f"{step} cannot move a task from one of {', '.join(from_states)} to {target}")
    with transaction.atomic():
        rows = list(tasks.select_for_update().filter(state__in=from_states).values_list("pk", "run_id"))
        for chunk in chunks(rows):
            tasks.model._default_manager.filter(pk__in=[pk for pk, _ in chunk]).update(state=target, **values)
        by_run: dict[str, set[int]] = {}
        for pk, run_id in rows:
            by_run.setdefault(run_id, set()).add(pk)
        events.announce(by_run, task_ids=by_run)
    return len(rows)
