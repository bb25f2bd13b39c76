"""Claiming ready tasks for a submit batch: each moves to ``submitting`` with a unique
tag (stored before the backend sees the job) and its rendered script."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from backends.base import BackendAdapter, JobSpec
from backends.models import Environment
from runs.engine.finish import mark_dep_failed
from runs.engine.jobspec import build_job_spec
from runs.engine.sql import chunks
from runs.engine.states import LIVE, Step, TaskState, move
from runs.models import Run, Task

Claimed = tuple[Task, JobSpec, str]  # the task, its job, the job's script


def claim_ready(run: Run, limit: int, adapter: BackendAdapter, environments: dict[str, Environment]) -> list[Claimed]:
    """Move up to ``limit`` ready tasks of ``run`` to ``submitting``, each with its tag and script."""
    return claim_ready_of([run], {run.pk: limit}, adapter, environments)


def claim_ready_of(
    runs: Sequence[Run], shares: dict[str, int], adapter: BackendAdapter, environments: dict[str, Environment]
) -> list[Claimed]:
    """Up to ``shares[run id]`` ready tasks of each run, first in position order, moved to
    ``submitting``: one SELECT and one UPDATE for all the runs, however many they are."""
    shares = {run_id: n for run_id, n in shares.items() if n > 0}
    if not shares:
        return []
    # No savepoint: inside the submit step's one transaction for every run's claims.
    with transaction.atomic(savepoint=False):
        ready = list(Task.objects.select_for_update(skip_locked=True).filter(pk__in=_first_ready(shares)))
        by_run = {run.pk: run for run in runs}
        ready.sort(key=lambda t: (t.run_id, t.position))
        return claim_tasks(by_run, ready, adapter, environments, {})


def _first_ready(shares: dict[str, int]) -> RawSQL:
    """The keys of each run's first ``shares[run id]`` ready tasks, in one statement: a UNION
    ALL of each run's ready tasks in position order, LIMITed to its share. Each part reads
    the index on (run, state, waiting_on, position) up to its limit, so the claim reads as
    many tasks as the shares, however many tasks the runs have waiting."""
    ready = Task.objects.filter(state=TaskState.PENDING, waiting_on=0).order_by("position").values("pk")
    parts: list[str] = []
    params: list[Any] = []
    for run_id, n in shares.items():
        sql, run_params = ready.filter(run_id=run_id)[:n].query.sql_with_params()
        parts.append(f"SELECT * FROM ({sql}) AS ready_{len(parts)}")  # noqa: S608  (Django's own compiled query)
        params += run_params
    return RawSQL(" UNION ALL ".join(parts), params)  # noqa: S611  (compiled by Django, every value a parameter)


def claim_tasks(
    runs: dict[str, Run],
    tasks: Sequence[Task],
    adapter: BackendAdapter,
    environments: dict[str, Environment],
    parents: dict[str, list[tuple[str, str]]],
) -> list[Claimed]:
    """Render and move these pending tasks (of ``runs``, by id) to ``submitting``;
    ``parents`` maps a task id to the (job id, batch tag) pairs it waits on inside the scheduler."""
    claimed: list[Claimed] = []
    unrenderable: list[Task] = []
    now = timezone.now()
    for task in tasks:
        run = runs[task.run_id]
        # Unique per submission (relaunch restarts attempts), stored before the backend sees it.
        tag = f"sh-{run.pk}-{task.pk}-{secrets.token_hex(3)}"
        try:
            spec = build_job_spec(task, run, environments, adapter, tag)
            held_on = parents.get(task.task_id, [])
            spec.after_job_ids = [job_id for job_id, _ in held_on if job_id]
            spec.after_tags = [batch_tag for _, batch_tag in held_on if batch_tag]
            script = adapter.render_script(spec)
        except ValueError as exc:
            task.state, task.reason, task.finished_at = (TaskState.FAILED, f"cannot render the job script: {exc}", now)
            unrenderable.append(task)
            continue
        task.state, task.submit_tag, task.claimed_at, task.script, task.reason = (
            TaskState.SUBMITTING,
            tag,
            now,
            script,
            "",
        )
        task.output_file, task.error_file = spec.output_file, spec.error_file
        task.native_deps = bool(spec.after_job_ids or spec.after_tags)
        claimed.append((task, spec, script))
    with transaction.atomic(savepoint=False):
        fields = ["state", "submit_tag", "claimed_at", "script", "output_file", "error_file", "reason", "native_deps"]
        moved = {t.pk for t in move([c[0] for c in claimed], Step.CLAIM, fields)}
        for task in move(unrenderable, Step.CLAIM, ["state", "reason", "finished_at"]):
            mark_dep_failed(task.run_id, [task.task_id])
    return [c for c in claimed if c[0].pk in moved]


def claim_held(
    run: Run,
    limit: int,
    adapter: BackendAdapter,
    environments: dict[str, Environment],
    claimed_now: Sequence[Claimed],
) -> list[Claimed]:
    """Claim tasks whose unfinished dependencies are all on the scheduler already (or in
    this batch): they are submitted with afterok and start the moment their parents end.

    Walks from the run's live jobs and this batch's jobs to their pending dependents,
    level by level, so the cost follows the jobs in flight, not the size of the run.
    """
    live = _possible_parents(run, claimed_now)
    frontier = set(
        child
        for deps in Task.objects.filter(run=run, task_id__in=list(live)).values_list("dependents", flat=True)
        for child in deps
    )
    result: list[Claimed] = []
    while frontier and len(result) < limit:
        ready = _ready_if_held(run, frontier, live)[: limit - len(result)]
        held_on = {t.task_id: [live[d] for d in t.resolved_deps if d in live] for t in ready}
        newly = claim_tasks({run.pk: run}, ready, adapter, environments, held_on)
        result += newly
        live.update(_parents_in(newly))
        frontier = {child for t, _, _ in newly for child in t.dependents}
    return result


def _parents_in(claimed: Sequence[Claimed]) -> dict[str, tuple[str, str]]:
    # A generator's dependents wait for its file, and a task with retries may run again:
    # neither can be waited on inside the scheduler.
    return {t.task_id: ("", spec.tag) for t, spec, _ in claimed if not t.generates_source and not t.retries}


def _possible_parents(run: Run, claimed_now: Sequence[Claimed]) -> dict[str, tuple[str, str]]:
    """Task id -> (job id on the scheduler, or tag in this batch) of the tasks a held job may wait on."""
    on_scheduler = (
        Task.objects.filter(run=run, state__in=LIVE, generates_source="", retries=0)
        .exclude(job_id="")
        .values_list("task_id", "job_id")
    )
    live = {task_id: (job_id, "") for task_id, job_id in on_scheduler}
    live.update(_parents_in(claimed_now))
    return live


def _ready_if_held(run: Run, frontier: set[str], live: dict[str, tuple[str, str]]) -> list[Task]:
    """Pending tasks of ``frontier`` whose every dependency is completed or live, in order."""
    candidates: list[Task] = []
    for chunk in chunks(sorted(frontier)):
        candidates += Task.objects.filter(run=run, task_id__in=chunk, state=TaskState.PENDING, waiting_on__gt=0)
    candidates.sort(key=lambda t: t.position)
    dep_ids = {d for t in candidates for d in t.resolved_deps if d not in live}
    completed: set[str] = set()
    for chunk in chunks(sorted(dep_ids)):
        done = Task.objects.filter(run=run, task_id__in=chunk, state=TaskState.COMPLETED)
        completed.update(done.values_list("task_id", flat=True))
    return [t for t in candidates if all(d in live or d in completed for d in t.resolved_deps)]
