"""What the scheduler's accounting adds to tasks whose end was read from their end marker.

A task ended by its marker (:meth:`~backends.base.BackendAdapter.read_ends`) has its exit
code and times, but not what only the scheduler measures (CPU efficiency, peak memory).
The scheduler's own poll, every ``poll_interval``, asks about those jobs too (in the same
call as the live ones) and fills these fields in: no state changes here.
"""

from __future__ import annotations

from datetime import timedelta

from backends.base import BackendAdapter, JobState, JobStatus
from backends.models import Backend
from runs.engine import events
from runs.engine.states import TaskState
from runs.models import PortalSettings, Task

MEASURED = ["cpu_efficiency", "max_rss_mb"]


def unmeasured(backend: Backend, adapter: BackendAdapter, owner: int | None) -> list[Task]:
    """Tasks without the scheduler's measurements (ended by a marker) that ended since the
    scheduler's poll before last (two polls to find them: accounting may lag an end)."""
    if not adapter.read_ends_every or backend.last_polled_at is None:
        return []
    interval = backend.poll_interval or PortalSettings.load().poll_interval
    ended = Task.objects.on(backend, owner).filter(
        state__in=(TaskState.COMPLETED, TaskState.FAILED),
        finished_at__gte=backend.last_polled_at - timedelta(seconds=interval),
        cpu_efficiency__isnull=True,
        max_rss_mb__isnull=True,
    )
    return list(ended.exclude(job_id="").only("pk", "run_id", "job_id", *MEASURED))


def fill_measurements(tasks: list[Task], statuses: dict[str, JobStatus]) -> None:
    """Save what the scheduler measured of these ended jobs, one UPDATE for all."""
    measured: list[Task] = []
    for task in tasks:
        status = statuses.get(task.job_id)
        if status is None or status.state not in (JobState.COMPLETED, JobState.FAILED):
            continue
        if status.cpu_efficiency is None and status.max_rss_mb is None:
            continue
        task.cpu_efficiency, task.max_rss_mb = status.cpu_efficiency, status.max_rss_mb
        measured.append(task)
    if measured:
        Task.objects.bulk_update(measured, MEASURED, batch_size=500)
        events.announce_tasks(measured)
