"""What users do to runs: create, cancel, relaunch (and wake the ticker after each).

Pages, the API and the ``scripthut`` command all call these, so what happens next is
written once; who may do it is asked of ``runs.access``. The engine never calls back here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from backends.identity import needs_identity, refusal
from backends.models import Backend, Environment
from backends.registry import has_shell
from runs.access import AccessDenied, require_backend, require_run_operator, require_shared
from runs.audit import trail as audit
from runs.costing import budgets
from runs.engine import events
from runs.engine.insert import insert_tasks
from runs.engine.run_status import refresh_run_status
from runs.engine.states import ACTIVE, RUN_FINISHED, UNSUCCESSFUL, RunStatus, Step, TaskState, move_all, requeue
from runs.models import AuditEvent, Run, Task, Workflow
from runs.notify.run_events import notify_status_update
from runs.notify.spec import NotifySpec, refuse_untrusted_email, save_override
from runs.workers.ticker import request_tick
from runs.workflows.limits import PG_INT_MAX
from runs.workflows.parse import Problem, ResolvedTask, WorkflowError, validate
from sources.git import mask_credentials

log = logging.getLogger("runs.actions")
Action = AuditEvent.Action


class RunStateError(ValueError):
    """The run is not in a state that allows the operation."""


@dataclass
class GitCheckout:
    repo: str
    branch: str
    sha: str
    clone_dir: str


def create_run(
    *,
    owner: User,
    backend: Backend,
    payload: Any,
    workflow_name: str,
    max_concurrent: int | None = None,
    workflow: Any = None,
    git: GitCheckout | None = None,
    notify: NotifySpec | None = None,
) -> Run:
    """Validate a workflow and store it as a new run; nothing is stored if it is invalid."""
    if max_concurrent is not None and not 1 <= max_concurrent <= PG_INT_MAX:
        raise WorkflowError(Problem(f"max_concurrent must be from 1 to {PG_INT_MAX:,}", field="max_concurrent"))
    if not backend.enabled:
        raise WorkflowError(f"backend {backend.name!r} is disabled")
    _check_access(owner, backend, workflow)
    require_identity(backend, owner)
    refuse_untrusted_email(owner, notify)
    resolved = validate(payload)
    refuse_generators_without_files(backend, resolved)
    known_envs = set(Environment.objects.values_list("name", flat=True))
    warnings = sorted(
        {
            f"task {r.definition.id!r}: unknown environment {r.definition.environment!r}; "
            "its script has no environment setup"
            for r in resolved
            if r.definition.environment and r.definition.environment not in known_envs
        }
    )
    for warning in warnings:
        log.warning("run of %s: %s", workflow_name, warning)
    with transaction.atomic():
        run = Run.objects.create(
            owner=owner,
            backend=backend,
            workflow=workflow,
            workflow_name=workflow_name,
            max_concurrent=max_concurrent or getattr(workflow, "max_concurrent", None) or 10,
            warnings=warnings,
            git_repo=mask_credentials(git.repo) if git else "",  # shown on pages and in job scripts
            git_branch=git.branch if git else "",
            git_sha=git.sha if git else "",
            clone_dir=git.clone_dir if git else "",
        )
        insert_tasks(run, resolved, first_position=0, done=set())
        save_override(run, notify)
        events.announce([run.pk], run_status=True)
        audit.record(Action.RUN_CREATED, f"run {run.pk}", actor=owner, backend=backend.name, tasks=len(resolved))
        budgets.check_owners([owner.pk], run=run)  # started anyway, but the owner hears of a spent budget
    wake(backend)
    return run


def _check_access(user: User, backend: Backend, workflow: Any = None) -> None:
    """Refuse (403, with the reason) and record it, when ``user`` may not use these."""
    try:
        require_backend(user, backend)
        if isinstance(workflow, Workflow):
            require_shared(user, workflow)
    except AccessDenied as exc:
        audit.record(Action.SUBMISSION_REFUSED, f"backend {backend.name}", actor=user, reason=str(exc))
        raise


def refuse_generators_without_files(backend: Backend, resolved: list[ResolvedTask]) -> None:
    """A ``generates_source`` file is read back from the backend's filesystem: a backend
    without one (AWS Batch: every job in its own container) cannot run such tasks."""
    if has_shell(backend.kind):
        return
    problems = [
        Problem(
            f"task {r.definition.id!r}: generates_source is not supported on backend {backend.name!r} "
            f"({backend.kind}): its jobs run in separate containers with no shared filesystem, so the "
            "file a task writes cannot be read back",
            task=r.definition.id,
            field="generates_source",
            index=index,
        )
        for index, r in enumerate(resolved)
        if r.definition.generates_source
    ]
    if problems:
        raise WorkflowError(problems)


def require_identity(backend: Backend, owner: User) -> None:
    """Refuse a run that could never be submitted: a per_user backend, and no identity on it."""
    if needs_identity(backend, owner.pk):
        raise WorkflowError(refusal(backend, owner.pk))


def cancel_run(run: Run, by: User | None = None) -> None:
    """Cancel pending tasks now; the next tick cancels submitted and running jobs."""
    require_run_operator(by, run)
    with events.one_announcement():  # the cancel and the status it leads to: one push
        with transaction.atomic():
            cancelling = Run.objects.filter(pk=run.pk).exclude(status__in=RUN_FINISHED)
            # Who, on the run itself: the tick tells the schedulers that keep it (runs.engine.cancel).
            if not cancelling.update(status=RunStatus.CANCELLED, cancelled_by=by.get_username() if by else ""):
                raise RunStateError(f"run {run.pk} has already finished")
            events.announce([run.pk], run_status=True)
            notify_status_update(run, {"status": RunStatus.CANCELLED})
            move_all(
                Task.objects.filter(run=run),
                Step.CANCEL,
                TaskState.CANCELLED,
                (TaskState.PENDING,),
                reason="run cancelled",
                finished_at=timezone.now(),
            )
            audit.record(Action.RUN_CANCELLED, f"run {run.pk}", actor=by)
        refresh_run_status(run.pk)
    wake(run.backend)


def relaunch_run(run: Run, by: User | None = None) -> int:
    """Re-queue a finished run's failed, cancelled and dep_failed tasks; keep completed ones."""
    require_run_operator(by, run)
    _check_access(by or run.owner, run.backend)
    with events.one_announcement(), transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if not run.is_finished:
            raise RunStateError(f"run {run.pk} is still {run.status}; wait for it or cancel it first")
        if Task.objects.filter(run=run, state__in=ACTIVE).exists():
            raise RunStateError(f"run {run.pk} still has jobs being cancelled; try again shortly")
        done = set(Task.objects.filter(run=run, state=TaskState.COMPLETED).values_list("task_id", flat=True))
        again = list(Task.objects.filter(run=run, state__in=UNSUCCESSFUL))
        if not again:
            raise RunStateError(f"run {run.pk} has nothing to relaunch: every task completed")
        record_relaunch(run, by, len(again))
        for task in again:
            task.attempt = 0
            task.run_attempt = run.attempt
            task.waiting_on = sum(1 for dep in task.resolved_deps if dep not in done)
        requeue(again, "relaunched", Step.RELAUNCH, also=["attempt", "run_attempt", "waiting_on"])
        run.status = RunStatus.RUNNING if done else RunStatus.PENDING
        run.finished_at = None
        run.error = ""
        run.cancelled_by = ""
        run.save(update_fields=["status", "finished_at", "error", "cancelled_by", "relaunches"])
        events.announce([run.pk], run_status=True)
        audit.record(Action.RUN_RELAUNCHED, f"run {run.pk}", actor=by, tasks=len(again))
    wake(run.backend)
    return len(again)


def record_relaunch(run: Run, by: User | None, tasks: int) -> None:
    """Close the run's current attempt (its active time) and open the next one, on ``run``."""
    start, end = run.attempt_started_at, run.finished_at
    previous = (end - start).total_seconds() if start and end else 0.0
    entry = {"at": timezone.now().isoformat(), "by": by.get_username() if by else "", "tasks": tasks}
    run.relaunches = [*run.relaunches, {**entry, "previous_seconds": max(0.0, previous)}]


def wake(backend: Backend) -> None:
    """Ask for a tick of this backend as soon as possible."""
    request_tick(backend.pk)
