"""What the engine's moves write when a job ends (what a new attempt clears: runs.engine.states.requeue)."""

from __future__ import annotations

from datetime import datetime

from backends.base import JobStatus
from runs.models import Task

# Written when a job ends.
FINISH_FIELDS = [
    "state",
    "reason",
    "exit_code",
    "started_at",
    "finished_at",
    "elapsed_seconds",
    "node",
    "queue_wait_seconds",
    "cpu_efficiency",
    "max_rss_mb",
    "out_of_memory",
    "cost",
    "waste_cost",
    "priced_with",
]


def record_end(task: Task, state: str, status: JobStatus, now: datetime, reason: str) -> Task:
    """Set the task's final state and what the scheduler said about the job's end."""
    task.state = state
    task.reason = reason
    task.exit_code = status.exit_code
    task.started_at = task.started_at or status.started_at
    task.finished_at = status.finished_at or now
    task.elapsed_seconds = status.elapsed_seconds
    task.node = status.node or task.node
    task.queue_wait_seconds = status.queue_wait_seconds or task.queue_wait_seconds
    task.cpu_efficiency = status.cpu_efficiency
    task.max_rss_mb = status.max_rss_mb
    task.out_of_memory = status.out_of_memory
    return keep_times_in_order(task)


def keep_times_in_order(task: Task) -> Task:
    """``submitted_at <= started_at <= finished_at`` on every backend, and the queue wait
    known wherever both ends are.

    The portal stamps the submission; the start and end come from the scheduler's clock,
    which may be coarser (Slurm's whole seconds: a job that starts in the second it was
    sent seems to start before it) or a little behind. A time before the one it follows
    is taken as that one; a backend that gives no queue wait (local) gets the portal's.
    """
    if task.submitted_at and task.started_at and task.started_at < task.submitted_at:
        task.started_at = task.submitted_at
    floor = task.started_at or task.submitted_at
    if floor and task.finished_at and task.finished_at < floor:
        task.finished_at = floor
    if task.queue_wait_seconds is None and task.submitted_at and task.started_at:
        task.queue_wait_seconds = (task.started_at - task.submitted_at).total_seconds()
    return task
