"""A task, a run and a run's counts as they leave the portal: the JSON API, the live push's
events (``/jobs/stream``) and the notification payloads build them here, so they cannot
disagree. ``runs.api.schemas`` documents the same fields for the OpenAPI schema.

Values are JSON-ready (times as the API writes them), so a shape can go through the
channel layer (msgpack on Redis) or into a JSONField as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from runs.costing.efficiency import efficiency_of
from runs.costing.summary import RunCost
from runs.engine.states import TaskState
from runs.engine.waiting import shown_reason
from runs.models import Run, Schedule, Task
from runs.schedules.edit import values_of

_ENCODER = DjangoJSONEncoder()


def wire_time(moment: datetime | None) -> str | None:
    """A time as the JSON API writes it (ISO 8601, milliseconds, ``Z`` for UTC)."""
    return None if moment is None else str(_ENCODER.default(moment))


def counts_shape(counts: Mapping[str, int]) -> dict[str, int]:
    """Tasks per state: every state, in the states' order, zeros included
    (``Task.objects.state_counts`` counts them)."""
    return {state: counts.get(state, 0) for state in TaskState.values}


def cost_shape(cost: RunCost | None) -> dict[str, Any] | None:
    """A run's estimated cost; None when pricing is off."""
    if cost is None:
        return None
    return {
        "total_usd": float(cost.total),
        "waste_usd": None if cost.waste is None else float(cost.waste),
        "costed_tasks": cost.costed,
        "tasks": cost.tasks,
        "price_type": cost.price_type,
        "region": cost.region,
        "prices_date": wire_time(cost.prices_date),
    }


def run_shape(run: Run, cost: RunCost | None) -> dict[str, Any]:
    """What every view of a run says about it (the API's lists and run pages add to it)."""
    return {
        "id": run.pk,
        "workflow_name": run.workflow_name,
        "status": run.status,
        "backend": run.backend.name,
        "owner": run.owner.get_username(),
        "created_at": wire_time(run.created_at),
        "started_at": wire_time(run.started_at),
        "finished_at": wire_time(run.finished_at),
        "cost": cost_shape(cost),
    }


def task_shape(task: Task, priced: bool) -> dict[str, Any]:
    """A task's row (the run page's columns, not its script); costs only when ``priced``
    (pricing is on), so a task never shows a cost its run does not."""
    return {
        "id": task.task_id,
        "name": task.name,
        "state": task.state,
        "job_id": task.job_id,
        "exit_code": task.exit_code,
        "reason": shown_reason(task),
        "warning": task.warning,
        "submitted_at": wire_time(task.submitted_at),
        "started_at": wire_time(task.started_at),
        "finished_at": wire_time(task.finished_at),
        "elapsed_seconds": task.duration_seconds,
        "deps": task.deps,
        "cost": float(task.cost) if priced and task.cost is not None else None,
        "waste_cost": float(task.waste_cost) if priced and task.waste_cost is not None else None,
    }


def task_detail_shape(task: Task, priced: bool) -> dict[str, Any]:
    """One task in full (the API's ``GET .../tasks/{task_id}``): its row, what it asked for,
    its tries, where it ran, how much of what it asked for it used, what it cost."""
    efficiency = efficiency_of(task)
    return task_shape(task, priced) | {
        "run_id": task.run_id,
        "command": task.command,
        "resolved_deps": task.resolved_deps,
        "generated_by": task.generated_by,
        "resources": {
            "partition": task.partition,
            "cpus": task.cpus,
            "memory": task.memory,
            "time_limit": task.time_limit,
            "gres": task.gres,
            "image": task.image,
            "working_dir": task.working_dir,
            "environment": task.environment,
        },
        "attempt": task.attempt + 1,
        "retries": task.retries,
        "run_attempt": task.run_attempt,
        "node": task.node,
        "queue_wait_seconds": task.queue_wait_seconds,
        "efficiency": None
        if efficiency is None
        else {
            "cpu": efficiency.cpu,
            "used_mb": efficiency.used_mb,
            "requested_mb": efficiency.requested_mb,
            "out_of_memory": efficiency.oom,
        },
        "priced_with": task.priced_with if priced else "",
        "instance_type": task.instance_type,
        "cancel_requested_by": task.cancel_requested_by,
    }


def schedule_shape(schedule: Schedule, last_run: Run | None) -> dict[str, Any]:
    """A schedule as the API gives it: its settings (as written to make it), when it fires
    next, what its last due time did, and its last run's id and status."""
    return values_of(schedule) | {
        "stopped_reason": schedule.stopped_reason,
        "next_fire_at": wire_time(schedule.next_fire_at if schedule.enabled else None),
        "last_fired_for": wire_time(schedule.last_fired_for),
        "last_fired_at": wire_time(schedule.last_fired_at),
        "last_outcome": schedule.last_outcome,
        "last_run": None if last_run is None else {"id": last_run.pk, "status": last_run.status},
    }
