"""The task state machine: every state, every group of states, every allowed move.

A task is created ``pending``. A tick *claims* it (``submitting``, with a unique tag the
job will carry), *submits* it (``submitted``, with the scheduler's job id) and *polls*
it until it ends. Every move goes through :func:`move` or :func:`move_all` (one
conditional UPDATE per batch), which refuse any move that is not in :data:`TRANSITIONS`;
:func:`requeue` is the one way back to pending (why a ready task waits for a slot is
kept per run, :mod:`runs.engine.waiting`)::

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

A run's status follows from its tasks' counts (:mod:`runs.engine.run_status`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from django.db import models
from django.db.models import Model, QuerySet

from runs.engine import events
from runs.engine.sql import update_each, update_matching


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


def _origins(target: str, step: Step, from_states: Sequence[str] | None) -> list[str]:
    candidates = from_states if from_states is not None else [src for src, _ in TRANSITIONS]
    found = sorted({src for src in candidates if allowed(src, target, step)})
    if not found:
        raise IllegalTransition(f"{step} cannot move a task to {target} (from {', '.join(candidates)})")
    return found


def move(
    tasks: Sequence[Model], step: Step, fields: Sequence[str], *, from_states: Sequence[str] | None = None
) -> list[Any]:
    """Save ``fields`` of the tasks whose row is still in a state from which ``step`` may
    bring it to the task's new ``state`` (set on the instance by the caller); return them.

    One conditional UPDATE per new state (and chunk of 500 tasks,
    :func:`runs.engine.sql.update_each`): ``WHERE id IN (...) AND state IN (<the states
    allowed to go there>)``, whose returned ids are what really moved, so a task moved by
    another actor meanwhile is left alone and left out. ``from_states`` narrows
    the table's sources. A move the table does not allow raises :class:`IllegalTransition`.
    The tasks that moved are announced once the transaction commits.
    """
    by_target: dict[str, dict[Any, Any]] = {}
    for task in tasks:
        by_target.setdefault(task.state, {})[task.pk] = task  # type: ignore[attr-defined]
    moved: list[Any] = []
    for target, by_pk in by_target.items():
        changed = update_each(list(by_pk.values()), fields, _origins(target, step, from_states))
        moved += [task for pk, task in by_pk.items() if pk in changed]
    events.announce_tasks(moved)
    return moved


def move_all(tasks: QuerySet[Any], step: Step, target: str, from_states: Sequence[str], **values: Any) -> int:
    """Move every task of ``tasks`` that is in ``from_states`` to ``target``, setting
    ``values`` too: one conditional UPDATE (:func:`runs.engine.sql.update_matching`).
    Returns how many moved; they are announced once the transaction commits."""
    if any(not allowed(src, target, step) for src in from_states) or not from_states:
        raise IllegalTransition(f"{step} cannot move a task from one of {', '.join(from_states)} to {target}")
    by_run: dict[str, set[int]] = {}
    # The subquery filters on the state too, so that it can use the indexes on it.
    matching = tasks.filter(state__in=from_states)
    for pk, run_id in update_matching(matching, {"state": target, **values}, from_states):
        by_run.setdefault(run_id, set()).add(pk)
    events.announce(by_run, task_pks=by_run)
    return sum(len(pks) for pks in by_run.values())


# What a task's last attempt left behind: cleared whenever it goes back to pending.
CLEARED_ON_REQUEUE = (
    "job_id",
    "submit_tag",
    "claimed_at",
    "submitted_at",
    "started_at",
    "finished_at",
    "exit_code",
    "elapsed_seconds",
    "node",
    "queue_wait_seconds",
    "cpu_efficiency",
    "max_rss_mb",
    "out_of_memory",
    "native_deps",
    "unknown_since",
    "warning",
    # a new attempt is costed when it ends (runs.costing)
    "cost",
    "waste_cost",
    "priced_with",
)


def requeue(tasks: Sequence[Model], reason: str | Sequence[str], step: Step, *, also: Sequence[str] = ()) -> list[Any]:
    """Put tasks back to pending, as if never submitted, saying why (one ``reason`` for
    all, or one per task): the only way a task goes back to pending. Clears
    :data:`CLEARED_ON_REQUEUE` and writes the reason, and ``also`` the fields the caller
    set (the attempt counter, a relaunch's dependencies). Returns the tasks that moved."""
    if not tasks:
        return []
    reasons = [reason] * len(tasks) if isinstance(reason, str) else reason
    fields = {field.name: field for field in tasks[0]._meta.concrete_fields}
    cleared = {name: fields[name].get_default() for name in CLEARED_ON_REQUEUE}
    for task, why in zip(tasks, reasons, strict=True):
        for name, value in cleared.items():
            setattr(task, name, value)
        task.state, task.reason = TaskState.PENDING, why  # type: ignore[attr-defined]
    return move(tasks, step, ["state", *CLEARED_ON_REQUEUE, "reason", *also])
