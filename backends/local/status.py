"""A local job's state, read from the files its runner writes (see backends/local/runner.py)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from backends.base import JobState, JobStatus
from backends.local.jobfiles import JobFiles

TIMEOUT_EXIT_CODES = (124, 137)


def job_status(work_root: Path, job_id: str, user: str) -> JobStatus:
    """What a local job's runner files say: its state, exit code and times."""
    with JobFiles(work_root, job_id) as files:
        return status_of(files, job_id, user)


def status_of(files: JobFiles, job_id: str, user: str) -> JobStatus:
    """The state, exit code and times of a job whose runner files are ``files``."""
    if not files.present:
        return JobStatus(job_id, JobState.UNKNOWN, reason="no such local job")
    status = JobStatus(job_id, JobState.QUEUED, name=files.read("name"), tag=job_id, user=user)
    _settle(status, files)
    # After the state: the runner writes its times before its exit code.
    status.started_at = _timestamp(files.timestamp("started"))
    status.finished_at = _timestamp(files.timestamp("finished"))
    if status.started_at and status.finished_at:
        status.elapsed_seconds = (status.finished_at - status.started_at).total_seconds()
    return status


def has_started(work_root: Path, job_id: str) -> bool:
    with JobFiles(work_root, job_id) as files:
        return files.exists("started")


def has_ended(work_root: Path, job_id: str) -> bool:
    with JobFiles(work_root, job_id) as files:
        return files.exists("exit_code")


def runner_pid(work_root: Path, job_id: str) -> int | None:
    with JobFiles(work_root, job_id) as files:
        return files.number("pid")


def _settle(status: JobStatus, files: JobFiles) -> None:
    """The state of a job from its runner's files."""
    code = files.number("exit_code")
    if code is None:
        pid = files.number("pid")
        if pid is None:
            return  # spawned, runner not started yet
        if _alive(pid):
            status.state, status.node = JobState.RUNNING, os.uname().nodename
            return
        # The runner writes the exit code and then exits: a job that ended between the
        # first read and the liveness check has its code by now.
        code = files.number("exit_code")
        if code is None:
            _lost(status, files)
            return
    _ended(status, files, code)


def _lost(status: JobStatus, files: JobFiles) -> None:
    """The runner is gone without an exit code: cancelled, or killed."""
    if files.exists("cancelled"):
        status.state, status.reason = JobState.CANCELLED, "cancelled"
    else:
        status.state, status.reason = JobState.FAILED, "process ended without an exit code (killed?)"


def _ended(status: JobStatus, files: JobFiles, code: int) -> None:
    status.exit_code = code
    if files.exists("cancelled"):
        status.state, status.reason = JobState.CANCELLED, "cancelled"
    elif code == 0:
        status.state = JobState.COMPLETED
    elif code in TIMEOUT_EXIT_CODES:
        status.state, status.reason = JobState.FAILED, "time limit exceeded"
    else:
        detail = files.read("reason")  # the runner could not open the task's files
        status.state, status.reason = JobState.FAILED, f"exit code {code}" + (f": {detail}" if detail else "")


def _timestamp(seconds: float | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC) if seconds is not None else None
    except (ValueError, OverflowError, OSError):  # a runner file written by something else
        return None


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
