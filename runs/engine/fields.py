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
    return task
