"""A run's status follows from its tasks' counts; only a cancel or a relaunch (runs.actions) sets it directly."""

from __future__ import annotations

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
    counts = Task.objects.state_counts([run_id])[run_id]
    run = Run.objects.get(pk=run_id)
    fields = derive_status(run, counts)
    if not any(getattr(run, k) != v for k, v in fields.items()):
        return
    runs = Run.objects.filter(pk=run_id)
    if "status" in fields:
        runs = runs.exclude(status=RunStatus.CANCELLED)  # never overwrite a cancellation made meanwhile
    with transaction.atomic():  # the outbox row commits with the status, or neither does
        if runs.update(**fields):
            events.announce([run_id], run_status=True)
            notify_status_update(run, fields)
