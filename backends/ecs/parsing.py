"""ECS task descriptions (``describe_tasks`` items) read as JobStatus.

``lastStatus`` PROVISIONING, PENDING and ACTIVATING are queued (the ECS status is the
reason shown); RUNNING up to DEPROVISIONING are running (the container may have ended,
the task not yet); STOPPED is completed when the container exited 0, else failed with
``stoppedReason`` (and the container's reason: OOM, image pull, capacity) as the reason.
A task ScriptHut stopped carries our reason: it reads as cancelled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backends.base import JobState, JobStatus
from backends.status import settle_flags

QUEUED_STATES = ("PROVISIONING", "PENDING", "ACTIVATING")
RUNNING_STATES = ("RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING")
CANCEL_REASON_PREFIX = "Cancelled in ScriptHut"


def tag_of(task: dict[str, Any]) -> str:
    tags = {t.get("key"): t.get("value") for t in task.get("tags") or []}
    return str(tags.get("scripthut:tag") or task.get("startedBy") or "")


def task_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _when(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _container(task: dict[str, Any], name: str) -> dict[str, Any]:
    containers = task.get("containers") or [{}]
    return next((c for c in containers if c.get("name") == name), containers[0])


def _state(task: dict[str, Any], container: dict[str, Any]) -> tuple[JobState, str]:
    """The engine's state of an ECS task, and the reason shown."""
    ecs_state = str(task.get("lastStatus", ""))
    reason = str(task.get("stoppedReason") or "")
    if ecs_state in QUEUED_STATES:
        return JobState.QUEUED, ecs_state
    if ecs_state in RUNNING_STATES:
        return JobState.RUNNING, reason
    if ecs_state != "STOPPED":
        return JobState.UNKNOWN, reason
    if reason.startswith(CANCEL_REASON_PREFIX):
        state = JobState.CANCELLED
    elif container.get("exitCode") == 0:
        state = JobState.COMPLETED
    else:
        state = JobState.FAILED
    return state, "; ".join(r for r in (reason, str(container.get("reason") or "")) if r)


def task_status(task: dict[str, Any], container_name: str) -> JobStatus:
    container = _container(task, container_name)
    exit_code = container.get("exitCode")
    state, reason = _state(task, container)
    started, stopped = _when(task.get("startedAt")), _when(task.get("stoppedAt"))
    cpu = str(task.get("cpu") or "")
    status = JobStatus(
        job_id=str(task.get("taskArn", "")),
        state=state,
        exit_code=int(exit_code) if isinstance(exit_code, int) and state.is_final else None,
        reason=reason,
        name=task_id(str(task.get("taskArn", ""))),
        partition=str(task.get("clusterArn", "")).rsplit("/", 1)[-1],
        cpus=max(int(cpu) // 1024, 1) if cpu.isdigit() else None,
        tag=tag_of(task),
        submitted_at=_when(task.get("createdAt")),
        started_at=started,
        finished_at=stopped if state.is_final else None,
        elapsed_seconds=(stopped - started).total_seconds() if started and stopped else None,
    )
    return settle_flags(status)
