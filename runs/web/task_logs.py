"""A task's logs as pages and the API show them: where each one is, and its tail (or why
there is none to show)."""

from __future__ import annotations

from dataclasses import dataclass

from backends.base import BackendError, BackendUnavailable, FileRefused
from backends.registry import get_adapter
from runs.engine.jobspec import task_log
from runs.engine.states import TaskState
from runs.models import Task
from runs.web.task_notes import why_it_never_ran

LOG_TAIL_BYTES = 256 * 1024


def log_location(task: Task, stream: str) -> str:
    try:
        return get_adapter(task.run.backend).log_location(task_log(task, stream))
    except BackendUnavailable:
        return task.output_file if stream == "output" else task.error_file


@dataclass(frozen=True)
class LogRead:
    text: str = ""
    problem: str = ""  # why there is no text to show
    level: str = "info"  # of the problem: "error" when something is broken


def read_log(task: Task, stream: str, path: str, max_bytes: int = LOG_TAIL_BYTES) -> LogRead:
    """The tail of a task's log, or why it cannot be shown."""
    if task.state == TaskState.PENDING or not task.job_id:
        if task.is_finished:
            return LogRead(problem=f"This task never ran, so it has no log: {why_it_never_ran(task)}.")
        return LogRead(problem="This task has not been submitted yet, so it has no log.")
    if not path:
        return LogRead(problem="No log file is recorded for this task.")
    backend = task.run.backend
    try:
        return LogRead(text=get_adapter(backend).read_log(task_log(task, stream), max_bytes))
    except FileRefused as exc:
        return LogRead(problem=f"ScriptHut will not show this file: {exc}", level="error")
    except FileNotFoundError:
        if task.is_finished:
            return LogRead(problem=f"{path} does not exist on backend {backend.name}.")
        return LogRead(problem=f"{path} has not been written yet.")
    except BackendUnavailable as exc:
        return LogRead(problem=f"Backend {backend.name} is unreachable: {exc}", level="error")
    except OSError as exc:
        return LogRead(problem=f"Cannot read {path}: {exc.strerror or exc}", level="error")
    except BackendError as exc:
        return LogRead(problem=f"Cannot read {path}: {exc}", level="error")
