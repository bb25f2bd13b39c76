"""AWS Batch job descriptions (``describe_jobs`` / ``list_jobs`` items) read as JobStatus.

Batch's states map onto the engine's: SUBMITTED, PENDING, RUNNABLE and STARTING are
queued (the Batch status is the reason shown), RUNNING, SUCCEEDED and FAILED are what
they say. A job ScriptHut cancelled is FAILED in Batch with our reason: it reads as
cancelled. The exit code is the container's, or the last attempt's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from backends.base import JobState, JobStatus
from backends.status import settle_flags

QUEUED_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING")
ACTIVE_STATES = (*QUEUED_STATES, "RUNNING")
NOT_STARTED_STATES = ("SUBMITTED", "PENDING", "RUNNABLE")  # cancel_job works; later, terminate_job
STATES = {
    **dict.fromkeys(QUEUED_STATES, JobState.QUEUED),
    "RUNNING": JobState.RUNNING,
    "SUCCEEDED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
}
# Starts the reason of every cancel/terminate ScriptHut sends.
CANCEL_REASON_PREFIX = "Cancelled in ScriptHut"


def millis(value: Any) -> datetime | None:
    """Batch's epoch milliseconds as an aware datetime (absent or 0: None)."""
    if not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def queue_name(arn_or_name: str) -> str:
    return arn_or_name.rsplit("/", 1)[-1]


def container_detail(job: dict[str, Any], key: str) -> Any:
    """A container field of the job, else of its last attempt (where Batch keeps it too)."""
    value = (job.get("container") or {}).get(key)
    if value is None and job.get("attempts"):
        value = (job["attempts"][-1].get("container") or {}).get(key)
    return value


def tag_of(job: dict[str, Any]) -> str:
    """The ScriptHut tag a job carries: its tag, or the start of its name (``<tag>_<name>``)."""
    tag = (job.get("tags") or {}).get("scripthut:tag")
    if tag:
        return str(tag)
    name = str(job.get("jobName", ""))
    return name.split("_", 1)[0] if name.startswith("sh-") and "_" in name else ""


def job_status(job: dict[str, Any]) -> JobStatus:
    batch_state = str(job.get("status", ""))
    state = STATES.get(batch_state, JobState.UNKNOWN)
    reason = str(job.get("statusReason") or "")
    exit_code = container_detail(job, "exitCode")
    if state == JobState.QUEUED:
        reason = f"{batch_state}: {reason}" if reason else batch_state
    elif state == JobState.FAILED:
        if reason.startswith(CANCEL_REASON_PREFIX):
            state = JobState.CANCELLED
        container_reason = container_detail(job, "reason")
        reason = "; ".join(r for r in (reason, container_reason) if r)
    elif state == JobState.COMPLETED and exit_code is None:
        exit_code = 0
    started, stopped = millis(job.get("startedAt")), millis(job.get("stoppedAt"))
    status = JobStatus(
        job_id=str(job.get("jobId", "")),
        state=state,
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        reason=reason,
        name=str(job.get("jobName", "")),
        partition=queue_name(str(job.get("jobQueue", ""))),
        cpus=_vcpus(job),
        tag=tag_of(job),
        submitted_at=millis(job.get("createdAt")),
        started_at=started,
        finished_at=stopped if state.is_final else None,
        elapsed_seconds=(stopped - started).total_seconds() if started and stopped else None,
    )
    return settle_flags(status)


def _vcpus(job: dict[str, Any]) -> int | None:
    for requirement in (job.get("container") or {}).get("resourceRequirements") or []:
        if requirement.get("type") == "VCPU":
            try:
                return int(float(requirement["value"]))
            except (KeyError, ValueError):
                return None
    return None
