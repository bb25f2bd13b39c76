"""Tick phase 1: resolve tasks left ``submitting`` by a tick that died mid-submit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from django.utils import timezone

from backends.base import BackendAdapter
from backends.models import Backend
from runs.engine.states import Step, TaskState, move, requeue
from runs.models import Task

log = logging.getLogger("runs.engine")


def reconcile_submitting(
    backend: Backend, adapter: BackendAdapter, changed: set[str], *, owner: int | None = None
) -> None:
    """We hold the backend's lease, so no other tick is submitting right now: a task
    found here was either handed to the scheduler (its tag is there) or not.
    ``owner``: only that user's runs (a per_user backend, ``adapter`` acting as them)."""
    stuck = list(Task.objects.on(backend, owner).filter(state=TaskState.SUBMITTING))
    if not stuck:
        return
    found = adapter.find_submitted([t.submit_tag for t in stuck])
    now = timezone.now()
    mark_submitted([(t, found[t.submit_tag]) for t in stuck if t.submit_tag in found], now, Step.RECONCILE)
    requeue([t for t in stuck if t.submit_tag not in found], "submission interrupted; queued again", Step.RECONCILE)
    changed.update(t.run_id for t in stuck)
    if found:
        log.info("reconciled %d interrupted submissions on %s", len(found), backend.name)


def mark_submitted(pairs: Sequence[tuple[Task, str]], now: datetime, step: Step) -> None:
    """Store job ids (and what the backend said about each job, ``warning``) in the same
    UPDATE that marks the tasks submitted."""
    for task, job_id in pairs:
        task.state, task.job_id, task.submitted_at, task.reason = TaskState.SUBMITTED, job_id, now, ""
    # Only the lease holder moves `submitting` tasks, so the state check suffices.
    move([task for task, _ in pairs], step, ["state", "job_id", "submitted_at", "reason", "warning"])
