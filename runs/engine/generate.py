"""``generates_source`` tasks: when one completes, its file's tasks join the run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from django.db import transaction

from backends.base import BackendAdapter, JobStatus, ShellAccess, resolve_in
from runs.costing import budgets
from runs.engine import events
from runs.engine.fields import FINISH_FIELDS, record_end
from runs.engine.finish import cost_tasks, finish_tasks, mark_dep_failed, release_dependents
from runs.engine.insert import insert_tasks
from runs.engine.jobspec import resolve_working_dir
from runs.engine.states import LIVE, UNSUCCESSFUL, Step, TaskState, move
from runs.models import Run, Task
from runs.workflows.parse import ResolvedTask, WorkflowError, validate

log = logging.getLogger("runs.engine")


def generated_file(task: Task) -> str:
    """Where a generator's task file is: relative paths are in its working directory."""
    return resolve_in(task.generates_source, resolve_working_dir(task.working_dir, task.run.clone_dir))


def complete_generator(task: Task, status: JobStatus, adapter: BackendAdapter, now: datetime) -> bool:
    """A ``generates_source`` task finished: append its tasks, or fail it saying why."""
    path = generated_file(task)
    try:
        if not isinstance(adapter, ShellAccess):
            raise WorkflowError(f"backend {adapter.name!r} cannot read files back")
        text = adapter.read_task_file(task.run_id, path)
        existing = Task.objects.filter(run_id=task.run_id).values_list("task_id", flat=True)
        generated = validate(text, existing_ids=existing)
    except (OSError, WorkflowError) as exc:  # OSError: missing, unreadable or refused (FileRefused)
        problem = "file not found" if isinstance(exc, FileNotFoundError) else str(exc)
        message = f"generated tasks from {path} rejected: {problem}"
        Run.objects.filter(pk=task.run_id).update(error=message)
        log.warning("run %s: %s", task.run_id, message)
        return bool(finish_tasks([record_end(task, TaskState.FAILED, status, now, message)]))
    with transaction.atomic():
        done = cost_tasks([record_end(task, TaskState.COMPLETED, status, now, f"generated {len(generated)} tasks")])[0]
        if not move([done], Step.POLL, FINISH_FIELDS, from_states=LIVE):
            return False
        append_generated(task, generated)
        release_dependents([task.pk])
        budgets.check_tasks([done])
    return True


def append_generated(generator: Task, generated: Sequence[ResolvedTask]) -> None:
    run_id = generator.run_id
    new_ids = {g.definition.id for g in generated}
    children: dict[str, list[str]] = {}  # existing task id -> new tasks that depend on it
    for g in generated:
        for dep in g.resolved_deps:
            if dep not in new_ids:
                children.setdefault(dep, []).append(g.definition.id)
    states = dict(Task.objects.filter(run_id=run_id, task_id__in=list(children)).values_list("task_id", "state"))
    # The generator's own completion is released by the caller like any other.
    done = {tid for tid, st in states.items() if st == TaskState.COMPLETED and tid != generator.task_id}
    last = Task.objects.filter(run_id=run_id).order_by("-position").values_list("position", flat=True).first()
    insert_tasks(Run(pk=run_id), generated, first_position=(last or 0) + 1, done=done, generated_by=generator.task_id)
    # New tasks: the run's total and maybe its groups changed, so run_status too (pages fetch their live part once).
    added = set(Task.objects.filter(run_id=run_id, task_id__in=list(new_ids)).values_list("pk", flat=True))
    events.announce([run_id], task_pks={run_id: added}, run_status=True)
    # Existing tasks learn their new dependents, so that their completion releases them.
    parents = list(Task.objects.filter(run_id=run_id, task_id__in=list(children)).only("pk", "task_id", "dependents"))
    for parent in parents:
        parent.dependents = list(parent.dependents) + children[parent.task_id]
    Task.objects.bulk_update(parents, ["dependents"])
    failed = [tid for tid, st in states.items() if st in UNSUCCESSFUL]
    if failed:
        mark_dep_failed(run_id, failed)
