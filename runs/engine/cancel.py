"""Tick phase 2: cancel the jobs of cancelled runs, and of tasks cancelled one by one, that
are still on the scheduler.

Cancelling a run (:func:`runs.actions.cancel_run`) stops its pending tasks at once, and so
does cancelling one pending task (:func:`runs.actions.cancel_task`); the jobs already handed
to the backend are cancelled here, in one call per tick. The tasks that needed a task
cancelled on its own become dep_failed.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from backends.base import BackendAdapter
from backends.models import Backend
from runs.costing import budgets
from runs.costing.estimate import COST_FIELDS
from runs.engine.finish import cost_tasks, mark_dep_failed
from runs.engine.states import LIVE, RunStatus, Step, TaskState, move
from runs.models import Run, Task


def cancel_requested(backend: Backend, adapter: BackendAdapter, changed: set[str], *, owner: int | None = None) -> None:
    """``owner``: only that user's runs (a per_user backend, ``adapter`` acting as them)."""
    asked = Q(run__status=RunStatus.CANCELLED) | ~Q(cancel_requested_by="")
    cancelled = Task.objects.on(backend, owner).filter(asked, state__in=LIVE)
    tasks = list(cancelled.exclude(job_id="").select_related("run"))
    if not tasks:
        return
    by_run = {run_id: cancel_reason(run_id, who) for run_id, who in cancelled_by(tasks).items()}
    alone = [t for t in tasks if t.run.status != RunStatus.CANCELLED]  # cancelled one by one
    reasons = {t.job_id: by_run[t.run_id] for t in tasks}
    reasons |= {t.job_id: f"task {t.task_id} of run {t.run_id} cancelled by {t.cancel_requested_by}" for t in alone}
    adapter.cancel_with_reasons(reasons)
    now = timezone.now()
    for task in tasks:
        task.state, task.reason, task.finished_at = TaskState.CANCELLED, "cancelled by user", now
    cost_tasks(tasks)  # a job that ran until cancelled was paid for
    with transaction.atomic():
        moved = move(tasks, Step.CANCEL, ["state", "reason", "finished_at", *COST_FIELDS], from_states=LIVE)
        budgets.check_tasks(moved)
        for task in moved:
            if task in alone:
                mark_dep_failed(task.run_id, [task.task_id])
    changed.update(t.run_id for t in tasks)


def cancelled_by(tasks: list[Task]) -> dict[str, str]:
    """Run id -> who cancelled it (stored on the run by :func:`runs.actions.cancel_run`)."""
    runs = Run.objects.filter(pk__in={t.run_id for t in tasks})
    return dict(runs.values_list("pk", "cancelled_by"))


def cancel_reason(run_id: str, who: str) -> str:
    """Who cancelled the run, for schedulers that keep a reason with the job."""
    return f"run {run_id} cancelled by {who}" if who else f"run {run_id} cancelled"
