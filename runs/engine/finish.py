"""Ends of jobs: record them once, then release dependents or mark them dep_failed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from runs.costing import budgets, estimate
from runs.engine.fields import FINISH_FIELDS
from runs.engine.sql import chunks
from runs.engine.states import LIVE, UNSUCCESSFUL, Step, TaskState, move, requeue
from runs.models import Task

S = TaskState
Key = tuple[str, str]  # (run id, task id)


def finish_tasks(tasks: Sequence[Task], never_started: Collection[int] = ()) -> list[Task]:
    """Save the final states of these tasks (set by the caller), then follow through.

    ``never_started``: primary keys of tasks whose job the backend says ended without
    ever starting; for those held on native dependencies, see :func:`settle_held_jobs`.
    """
    again, undecided = settle_held_jobs(tasks, never_started)
    settled_apart = {t.pk for t, _ in again} | {t.pk for t in undecided}
    ending = cost_tasks([t for t in tasks if t.pk not in settled_apart])
    with transaction.atomic():
        requeued = requeue([t for t, _ in again], [why for _, why in again], Step.POLL)
        moved = move(ending, Step.POLL, FINISH_FIELDS, from_states=LIVE)
        budgets.check_tasks(moved)
        release_dependents([t.pk for t in moved if t.state == S.COMPLETED])
        failed: dict[str, list[str]] = {}
        for task in moved:
            if task.state != S.COMPLETED:
                failed.setdefault(task.run_id, []).append(task.task_id)
        for run_id, task_ids in failed.items():
            mark_dep_failed(run_id, task_ids)
    return moved + requeued


def cost_tasks(tasks: list[Task]) -> list[Task]:
    """Set the cost of tasks about to be saved as ended (saved with FINISH_FIELDS)."""
    return estimate.apply(tasks, estimate.price_book(update=True)) if tasks else tasks


def settle_held_jobs(
    tasks: Sequence[Task], never_started: Collection[int]
) -> tuple[list[tuple[Task, str]], list[Task]]:
    """Jobs held on native dependencies that the backend dropped before they ran.

    If a parent failed, the task is ``dep_failed``, not failed in its own right. If
    every parent completed, the parent had left the scheduler's memory before the
    dependency was matched: the task is queued again, to go without native
    dependencies. If a parent has not visibly ended yet, nothing is decided until it
    has. Returns the tasks to queue again (with why) and the undecided ones (left as
    they are); the others are updated in place.
    """
    held = [t for t in tasks if t.native_deps and t.pk in never_started and not t.started_at and t.state != S.COMPLETED]
    if not held:
        return [], []
    states = _known_states(tasks, held)
    again: list[tuple[Task, str]] = []
    undecided: list[Task] = []
    roots: dict[Key, str] = {}  # held tasks found dep_failed here -> the failure that caused it
    for task in _parents_first(held):
        key = (task.run_id, task.task_id)
        parent_states = {d: states.get((task.run_id, d)) for d in task.resolved_deps}
        failed_parent = next((d for d, st in parent_states.items() if st in UNSUCCESSFUL), None)
        if failed_parent:
            _held_dep_failed(task, failed_parent, roots)
        elif any(st != S.COMPLETED for st in parent_states.values()):
            undecided.append(task)
            states[key] = S.SUBMITTED  # as it stays in the database
            continue
        elif task.state == S.CANCELLED:
            again.append((task, f"dropped by the scheduler while held ({task.reason}); queued again"))
            states[key] = S.PENDING  # as it will be: its held children go again with it
            continue
        states[key] = task.state
    return again, undecided


def _held_dep_failed(task: Task, failed_parent: str, roots: dict[Key, str]) -> None:
    """A held task is dep_failed: named after the root failure when its parent was itself
    dep_failed here (``roots``: such tasks -> their root failure)."""
    parent = (task.run_id, failed_parent)
    via = failed_parent if parent in roots else None
    roots[(task.run_id, task.task_id)] = roots.get(parent, failed_parent)
    task.state, task.reason = S.DEP_FAILED, dep_failed_reason(roots[(task.run_id, task.task_id)], via)


def _known_states(tasks: Sequence[Task], held: Sequence[Task]) -> dict[Key, str]:
    """The states of the held tasks' parents: as just decided, else as stored."""
    states = {(t.run_id, t.task_id): t.state for t in tasks}
    for run_id in {t.run_id for t in held}:
        names = sorted({d for t in held if t.run_id == run_id for d in t.resolved_deps})
        for chunk in chunks(names):
            for task_id, state in Task.objects.filter(run_id=run_id, task_id__in=chunk).values_list("task_id", "state"):
                states.setdefault((run_id, task_id), state)
    return states


def _parents_first(held: Sequence[Task]) -> list[Task]:
    """Held tasks in dependency order: a held child goes by what was decided for its
    held parent (dropped with it, not failed)."""
    by_key = {(t.run_id, t.task_id): t for t in held}
    waiting = {key: sum((key[0], d) in by_key for d in t.resolved_deps) for key, t in by_key.items()}
    children: dict[Key, list[Key]] = {}
    for key, task in by_key.items():
        for dep in task.resolved_deps:
            if (key[0], dep) in by_key:
                children.setdefault((key[0], dep), []).append(key)
    ready = [key for key, count in waiting.items() if count == 0]
    ordered = []
    while ready:
        key = ready.pop()
        ordered.append(by_key[key])
        for child in children.get(key, []):
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return ordered


def release_dependents(completed_pks: Sequence[int]) -> None:
    """Each completion takes one off its dependents' ``waiting_on``."""
    decrements: Counter[Key] = Counter()
    for chunk in chunks(completed_pks):
        # Fresh from the database: a generated batch may have added dependents.
        for run_id, dependents in Task.objects.filter(pk__in=chunk).values_list("run_id", "dependents"):
            decrements.update((run_id, child) for child in dependents)
    by_amount: dict[tuple[str, int], list[str]] = {}
    for (run_id, child), amount in decrements.items():
        by_amount.setdefault((run_id, amount), []).append(child)
    for (run_id, amount), children in by_amount.items():
        for chunk in chunks(children):
            Task.objects.filter(run_id=run_id, task_id__in=chunk, waiting_on__gte=amount).update(
                waiting_on=F("waiting_on") - amount
            )


def dep_failed_reason(root: str, via: str | None = None) -> str:
    """Why a task is dep_failed, naming the task that really failed: "dependency 'bad'
    failed", or "dependency 'bad' failed (via child.5)" when its own dependency
    ``child.5`` is dep_failed because of ``bad``."""
    return f"dependency {root!r} failed" + (f" (via {via})" if via else "")


def mark_dep_failed(run_id: str, failed_task_ids: Iterable[str]) -> int:
    """Mark every task downstream of these (final) failures that has not run as dep_failed."""
    # task id -> (the failure at the root, the dep_failed dependency it comes through, if any)
    frontier: dict[str, tuple[str, str | None]] = {}
    for task_id, dependents in Task.objects.filter(run_id=run_id, task_id__in=list(failed_task_ids)).values_list(
        "task_id", "dependents"
    ):
        frontier.update(dict.fromkeys(dependents, (task_id, None)))
    marked = 0
    now = timezone.now()
    while frontier:
        blocked: list[Task] = []
        for chunk in chunks(list(frontier)):
            # Jobs held on a dependency are dropped by the scheduler (kill-on-invalid-dep).
            blocked += Task.objects.filter(
                Q(state=S.PENDING) | Q(state=S.SUBMITTED, native_deps=True, started_at__isnull=True),
                run_id=run_id,
                task_id__in=chunk,
            ).only("pk", "run_id", "task_id", "dependents", "state")
        for task in blocked:
            task.state, task.reason, task.finished_at = (
                S.DEP_FAILED,
                dep_failed_reason(*frontier[task.task_id]),
                now,
            )
        moved = move(blocked, Step.DEPENDENCY, ["state", "reason", "finished_at"])
        marked += len(moved)
        frontier = {child: (frontier[task.task_id][0], task.task_id) for task in moved for child in task.dependents}
    return marked
