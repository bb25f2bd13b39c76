"""What the engine's moves write: the fields a new attempt clears, and a job's end."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Field

from backends.base import JobStatus
from runs.models import Task

# Cleared when a task goes back to pending for another attempt.
RESET_FIELDS = [
    "state",
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
    # a new attempt is costed when it ends (runs.costing)
    "cost",
    "waste_cost",
    "priced_with",
]

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


# What those fields go back to: the model's defaults (pending, no job, nothing measured).
def _default(name: str) -> Any:
    field = Task._meta.get_field(name)
    assert isinstance(field, Field)  # a column, not a relation's reverse side
    return field.get_default()


RESET_VALUES = {name: _default(name) for name in RESET_FIELDS}


def reset_for_submission(task: Task) -> None:
    """Back to pending, as if never submitted (the attempt counter is the caller's)."""
    for name, value in RESET_VALUES.items():
        setattr(task, name, value)


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
