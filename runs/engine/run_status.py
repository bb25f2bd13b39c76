"""A run's status follows from its tasks' counts; only a cancel or a relaunch (runs.actions) sets it directly."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from runs.engine import events
from runs.engine.states import UNFINISHED, RunStatus, TaskState
from runs.models import Run, Task
from runs.notify.run_events import notify_status_update


def derive_status(run: Run, counts: dict[str, int]) -> dict[str, Any]:
    """The run fields that the task counts imply (status, finished_at)."""
    total = sum(counts.values())
    unfinished = sum(counts.get(s, 0) for s in UNFINISHED)
    if run.status == RunStatus.CANCELLED:
        # A cancelled run is finished once its last job has been cancelled.
        return {"finished_at": timezone.now()} if unfinished == 0 and not run.finished_at else {}
    if unfinished == 0 and total:
        completed = counts.get(TaskState.COMPLETED, 0) == total
        return {
            "status": RunStatus.COMPLETED if completed else RunStatus.FAILED,
            "finished_at": run.finished_at or timezone.now(),
        }
    started = total - counts.get(TaskState.PENDING, 0)
    return {"status": RunStatus.RUNNING if started else RunStatus.PENDING}


def refresh_run_status(run_id: str) -> None:
    """Derive a run's status from its task counts and save it if it changed."""
    refresh_runs_status([run_id])


def refresh_runs_status(run_ids: Iterable[str]) -> None:
    """:func:`refresh_run_status` of many runs: two queries for all of them (their counts,
    the runs), then one UPDATE per run whose status changed."""
    ids = list(run_ids)
    if not ids:
        return
    counts = Task.objects.state_counts(ids)
    for run in Run.objects.filter(pk__in=ids).order_by():
        fields = derive_status(run, counts[run.pk])
        if any(getattr(run, k) != v for k, v in fields.items()):
            _save_status(run, fields)


def _save_status(run: Run, fields: dict[str, Any]) -> None:
    run_id = run.pk
    runs = Run.objects.filter(pk=run_id)
    if "status" in fields:
        runs = runs.exclude(status=RunStatus.CANCELLED)  # never overwrite a cancellation made meanwhile
    with transaction.atomic():  # the outbox row commits with the status, or neither does
        if runs.update(**fields):
            events.announce([run_id], run_status=True)
            notify_status_update(run, fields)
