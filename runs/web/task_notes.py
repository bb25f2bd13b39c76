"""What a task's tabs say besides its files: how it ended, or why it never ran.

An empty error file of a task killed by its time limit, or a dep_failed task with no
script, tells a researcher nothing by itself: these sentences say what happened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backends.units import format_duration
from runs.engine.states import UNSUCCESSFUL, TaskState
from runs.models import Task

# How schedulers word a time-limit kill in a job's reason: local and Slurm ("time limit
# exceeded"), PBS ("walltime exceeded").
TIME_LIMIT_KILL = re.compile(r"time limit|walltime", re.IGNORECASE)


def killed_by_time_limit(task: Task) -> bool:
    return task.state == TaskState.FAILED and bool(TIME_LIMIT_KILL.search(task.reason))


def how_it_ended(task: Task) -> str:
    """A sentence on how an unsuccessful task ended (shown with its logs); "" otherwise."""
    if killed_by_time_limit(task):
        ran = format_duration(task.duration_seconds)
        after = f" after {ran}" if ran else ""
        return f"Killed by its time limit of {task.time_limit}{after} ({task.reason})."
    if task.state == TaskState.FAILED and task.job_id:
        return f"The task failed: {task.reason or 'no reason given'}."
    if task.state == TaskState.CANCELLED and task.job_id:
        return f"The task was cancelled while it was {'running' if task.started_at else 'queued'}."
    if task.state == TaskState.DEP_FAILED and task.job_id:  # held on its dependencies, then dropped
        return f"This task never ran: {why_it_never_ran(task)}."
    return ""


@dataclass(frozen=True)
class Blocker:
    """A dependency that ended without completing, so its dependent will never run."""

    task_id: str
    state: str
    reason: str


def blockers(task: Task) -> list[Blocker]:
    """The dependencies of ``task`` that ended unsuccessfully, in the order written."""
    if not task.resolved_deps:
        return []
    found = Task.objects.filter(run_id=task.run_id, task_id__in=task.resolved_deps, state__in=UNSUCCESSFUL)
    by_id = {t.task_id: Blocker(t.task_id, t.state, t.reason) for t in found.only("task_id", "state", "reason")}
    return [by_id[dep] for dep in task.resolved_deps if dep in by_id]


def why_it_never_ran(task: Task) -> str:
    """Why a finished task that never started will never run ("its dependency prepare
    (failed: exit code 3) did not complete"); "" for a task that ran or still may."""
    if task.state == TaskState.DEP_FAILED:  # also a job held on its dependencies, then dropped
        failed = blockers(task)
        if not failed:
            return task.reason or "a dependency failed"
        named = ", ".join(f"{b.task_id} ({b.state}: {b.reason})" if b.reason else b.task_id for b in failed)
        return f"its dependenc{'ies' if len(failed) > 1 else 'y'} {named} did not complete"
    if not task.is_finished or task.job_id or task.started_at:
        return ""
    if task.state == TaskState.CANCELLED:
        return "its run was cancelled before it was submitted"
    return task.reason or task.get_state_display()
