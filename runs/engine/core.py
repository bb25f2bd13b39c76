"""The run engine: create runs, and the tick that reconciles, polls, submits and finishes.

No scheduler knowledge lives here: backends are reached only through the batch-shaped
``BackendAdapter`` interface. Every task state change is a conditional UPDATE
(``WHERE state IN (...)``), so two actors can never both move the same task, and a
task is submitted by exactly one tick: it is first recorded as ``submitting`` with a
unique tag that the job carries, and only then handed to the backend.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from backends.base import BackendAdapter, BackendUnavailable, JobSpec, JobState, JobStatus
from backends.models import Backend, Environment
from backends.registry import get_adapter
from runs.models import ObservedJob, PortalSettings, Run, Task
from runs.workflow_json import ResolvedTask, WorkflowError, validate

log = logging.getLogger("runs.engine")

State = Task.State
from runs.engine.states import ACTIVE, RUN_FINISHED  # noqa: E402

CHUNK = 500  # ids per IN (...) clause, well under SQLite's variable limit


class RunStateError(ValueError):
    """The run is not in a state that allows the operation."""


@dataclass
class GitCheckout:
    repo: str
    branch: str
    sha: str
    clone_dir: str


# -- creating runs ---------------------------------------------------------------------


def create_run(
    *,
    owner: User,
    backend: Backend,
    payload: Any,
    workflow_name: str,
    max_concurrent: int | None = None,
    workflow: Any = None,
    git: GitCheckout | None = None,
) -> Run:
    """Validate a workflow and store it as a new run; nothing is stored if it is invalid."""
    if max_concurrent is not None and max_concurrent < 1:
        raise WorkflowError("max_concurrent must be at least 1")
    if not backend.enabled:
        raise WorkflowError(f"backend {backend.name!r} is disabled")
    resolved = validate(payload)
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
            git_repo=git.repo if git else "",
            git_branch=git.branch if git else "",
            git_sha=git.sha if git else "",
            clone_dir=git.clone_dir if git else "",
        )
        insert_tasks(run, resolved, first_position=0, done=set())
    wake(backend)
    return run


# Columns a workflow sets per task; every other column takes its model default.
TASK_COLUMNS = (
    "run_id",
    "position",
    "task_id",
    "name",
    "command",
    "deps",
    "resolved_deps",
    "dependents",
    "waiting_on",
    "partition",
    "cpus",
    "memory",
    "time_limit",
    "working_dir",
    "environment",
    "env_vars",
    "output_file",
    "error_file",
    "generates_source",
    "gres",
    "image",
    "retries",
    "generated_by",
)
JSON_COLUMNS = frozenset({"deps", "resolved_deps", "dependents", "env_vars"})


def insert_tasks(
    run: Run, resolved: Sequence[ResolvedTask], *, first_position: int, done: set[str], generated_by: str = ""
) -> None:
    """Insert a workflow's tasks with one executemany.

    ``bulk_create`` spends ~0.2 ms per row preparing values for 36 columns; a
    10,000-task workflow must be stored in well under a second, so the values are
    prepared here once per column instead.
    """
    fields = {f.column: f for f in Task._meta.concrete_fields if not f.primary_key}
    defaults = {
        column: field.get_db_prep_save(field.get_default(), connection)
        for column, field in fields.items()
        if column not in TASK_COLUMNS
    }
    columns = [*TASK_COLUMNS, *defaults]
    default_values = tuple(defaults.values())
    as_json = connection.ops.adapt_json_value

    def row(offset: int, item: ResolvedTask) -> tuple[Any, ...]:
        d = item.definition
        values = (
            run.pk,
            first_position + offset,
            d.id,
            d.name,
            d.command,
            d.deps,
            item.resolved_deps,
            item.dependents,
            sum(1 for dep in item.resolved_deps if dep not in done),
            d.partition,
            d.cpus,
            d.memory,
            d.time_limit,
            d.working_dir,
            d.environment,
            d.env_vars,
            d.output_file,
            d.error_file,
            d.generates_source,
            d.gres,
            d.image,
            d.retries,
            generated_by,
        )
        prepared = tuple(
            as_json(v, None) if column in JSON_COLUMNS else v for column, v in zip(TASK_COLUMNS, values, strict=True)
        )
        return prepared + default_values

    rows = [row(offset, item) for offset, item in enumerate(resolved)]
    quote = connection.ops.quote_name
    table, column_list = quote(Task._meta.db_table), ", ".join(quote(c) for c in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY is the fast path on PostgreSQL; executemany would send 10,000 statements.
            with cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                for values in rows:
                    copy.write_row(values)
        else:
            placeholders = ", ".join(["%s"] * len(columns))
            # Only model metadata goes into the SQL text; every value is a parameter.
            cursor.executemany(f"INSERT INTO {table} ({column_list}) VALUES ({placeholders})", rows)  # noqa: S608


# -- user actions ----------------------------------------------------------------------


def cancel_run(run: Run) -> None:
    """Cancel pending tasks now; the next tick cancels submitted and running jobs."""
    with transaction.atomic():
        updated = Run.objects.filter(pk=run.pk).exclude(status__in=RUN_FINISHED).update(status=Run.Status.CANCELLED)
        if not updated:
            raise RunStateError(f"run {run.pk} has already finished")
        Task.objects.filter(run=run, state=State.PENDING).update(
            state=State.CANCELLED, reason="run cancelled", finished_at=timezone.now()
        )
    refresh_run_status(run.pk)
    wake(run.backend)


def relaunch_run(run: Run) -> int:
    """Re-queue a finished run's failed, cancelled and dep_failed tasks; keep completed ones."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if not run.is_finished:
            raise RunStateError(f"run {run.pk} is still {run.status}; wait for it or cancel it first")
        if Task.objects.filter(run=run, state__in=ACTIVE).exists():
            raise RunStateError(f"run {run.pk} still has jobs being cancelled; try again shortly")
        done = set(Task.objects.filter(run=run, state=State.COMPLETED).values_list("task_id", flat=True))
        again = list(Task.objects.filter(run=run, state__in=(State.FAILED, State.CANCELLED, State.DEP_FAILED)))
        if not again:
            raise RunStateError(f"run {run.pk} has nothing to relaunch: every task completed")
        for task in again:
            _reset_for_submission(task)
            task.attempt = 0
            task.reason = "relaunched"
            task.waiting_on = sum(1 for dep in task.resolved_deps if dep not in done)
        _update_rows(again, [*RESET_FIELDS, "attempt", "reason", "waiting_on"])
        run.status = Run.Status.RUNNING if done else Run.Status.PENDING
        run.finished_at = None
        run.error = ""
        run.save(update_fields=["status", "finished_at", "error"])
    wake(run.backend)
    return len(again)


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
    "native_deps",
    "unknown_since",
]


def _reset_for_submission(task: Task) -> None:
    task.state = State.PENDING
    task.job_id = ""
    task.submit_tag = ""
    task.claimed_at = None
    task.submitted_at = None
    task.started_at = None
    task.finished_at = None
    task.exit_code = None
    task.elapsed_seconds = None
    task.node = ""
    task.queue_wait_seconds = None
    task.cpu_efficiency = None
    task.max_rss_mb = None
    task.native_deps = False
    task.unknown_since = None


def wake(backend: Backend) -> None:
    """Ask for a tick of this backend as soon as possible."""
    Backend.objects.filter(pk=backend.pk).update(next_poll_at=timezone.now())
    from runs.ticker import request_tick

    request_tick()


# -- the tick --------------------------------------------------------------------------


def tick(*, force: bool = False) -> None:
    """One cycle over every enabled backend that is due (or all, with ``force``)."""
    now = timezone.now()
    for backend in Backend.objects.filter(enabled=True):
        if not force and backend.next_poll_at and backend.next_poll_at > now:
            continue
        lease = _take_lease(backend)
        if lease is None:
            continue  # another worker is ticking this backend
        try:
            tick_backend(backend)
        finally:
            Backend.objects.filter(pk=backend.pk, lease_owner=lease).update(lease_until=None, lease_owner="")


def _take_lease(backend: Backend) -> str | None:
    now = timezone.now()
    token = uuid.uuid4().hex
    taken = (
        Backend.objects.filter(pk=backend.pk)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=now + timedelta(seconds=settings.SCRIPTHUT_BACKEND_LEASE_SECONDS), lease_owner=token)
    )
    return token if taken else None


def poll_interval(backend: Backend) -> int:
    return backend.poll_interval or PortalSettings.load().poll_interval


def tick_backend(backend: Backend) -> None:
    """Reconcile, cancel, poll and submit for one backend; the caller holds its lease."""
    changed: set[str] = set()
    status: str = Backend.Status.OK
    message = ""
    try:
        adapter = get_adapter(backend)
        reconcile_submitting(backend, adapter, changed)
        cancel_requested(backend, adapter, changed)
        poll_jobs(backend, adapter, changed)
        submit_ready(backend, adapter, changed)
        refresh_cluster_info(backend, adapter)
    except BackendUnavailable as exc:
        # Runs wait; nothing is marked failed because the backend cannot be reached.
        status, message = Backend.Status.UNREACHABLE, str(exc)
        log.warning("backend %s unreachable: %s", backend.name, exc)
    except Exception as exc:
        status, message = backend.status, f"tick failed: {exc}"
        log.exception("tick of backend %s failed", backend.name)
    finally:
        for run_id in changed:
            refresh_run_status(run_id)
        now = timezone.now()
        Backend.objects.filter(pk=backend.pk).update(
            status=status,
            status_message=message,
            last_polled_at=now,
            next_poll_at=now + timedelta(seconds=poll_interval(backend)),
        )


CLUSTER_INFO_EVERY = timedelta(minutes=5)


def refresh_cluster_info(backend: Backend, adapter: BackendAdapter) -> None:
    """Partitions, idle/total nodes and CPUs, disk usage: not worth a round trip every poll."""
    now = timezone.now()
    if backend.cluster_info_at and now - backend.cluster_info_at < CLUSTER_INFO_EVERY:
        return
    Backend.objects.filter(pk=backend.pk).update(cluster_info=adapter.cluster_info().to_json(), cluster_info_at=now)


def reconcile_submitting(backend: Backend, adapter: BackendAdapter, changed: set[str]) -> None:
    """Resolve tasks left ``submitting`` by a tick that died mid-submit.

    We hold the backend's lease, so no other tick is submitting right now: a task
    found here was either handed to the scheduler (its tag is there) or not.
    """
    stuck = list(Task.objects.filter(run__backend=backend, state=State.SUBMITTING))
    if not stuck:
        return
    found = adapter.find_submitted([t.submit_tag for t in stuck])
    now = timezone.now()
    _mark_submitted([(t, found[t.submit_tag]) for t in stuck if t.submit_tag in found], now)
    lost = [t for t in stuck if t.submit_tag not in found]
    for task in lost:
        _reset_for_submission(task)
        task.reason = "submission interrupted; queued again"
    with transaction.atomic():
        _move(lost, (State.SUBMITTING,), ["state", "submit_tag", "claimed_at", "reason"])
    changed.update(t.run_id for t in stuck)
    if found:
        log.info("reconciled %d interrupted submissions on %s", len(found), backend.name)


def cancel_requested(backend: Backend, adapter: BackendAdapter, changed: set[str]) -> None:
    """Cancel the jobs of cancelled runs that are still on the scheduler."""
    tasks = list(
        Task.objects.filter(
            run__backend=backend, run__status=Run.Status.CANCELLED, state__in=(State.SUBMITTED, State.RUNNING)
        ).exclude(job_id="")
    )
    if not tasks:
        return
    adapter.cancel([t.job_id for t in tasks])
    now = timezone.now()
    for task in tasks:
        task.state, task.reason, task.finished_at = State.CANCELLED, "cancelled by user", now
    with transaction.atomic():
        _move(tasks, LIVE, ["state", "reason", "finished_at"])
    changed.update(t.run_id for t in tasks)


LIVE = (State.SUBMITTED, State.RUNNING)
FAILED_STATES = (State.FAILED, State.CANCELLED, State.DEP_FAILED)


def poll_jobs(backend: Backend, adapter: BackendAdapter, changed: set[str]) -> None:
    """One poll for every job of interest on this backend, then apply what it says in batches."""
    tasks = list(Task.objects.filter(run__backend=backend, state__in=LIVE).exclude(job_id="").select_related("run"))
    result = adapter.poll([t.job_id for t in tasks])
    grace = timedelta(seconds=settings.SCRIPTHUT_UNKNOWN_JOB_GRACE_SECONDS)
    now = timezone.now()
    reasons: list[Task] = []
    running: list[Task] = []
    retrying: list[Task] = []
    finished: list[Task] = []
    generators: list[tuple[Task, JobStatus]] = []
    unknown: list[Task] = []
    for task in tasks:
        status = result.statuses.get(task.job_id) or JobStatus(task.job_id, JobState.UNKNOWN)
        if status.state != JobState.UNKNOWN and task.unknown_since is not None:
            task.unknown_since = None
            unknown.append(task)  # seen again: the clock stops
        if status.state == JobState.QUEUED:
            if status.reason != task.reason:
                task.reason = status.reason
                reasons.append(task)
        elif status.state == JobState.RUNNING:
            if task.state == State.SUBMITTED:
                task.state, task.started_at, task.node, task.reason = (
                    State.RUNNING,
                    status.started_at or now,
                    status.node,
                    "",
                )
                task.queue_wait_seconds = status.queue_wait_seconds
                running.append(task)
        elif status.state == JobState.UNKNOWN:
            # Never fail a job merely because it is absent from one poll: only once the
            # scheduler has had no record of it for the whole grace period.
            if task.unknown_since is None:
                task.unknown_since = now
                unknown.append(task)
            elif now - task.unknown_since > grace:
                reason = f"job {task.job_id} is unknown to the scheduler (no record for {int(grace.total_seconds())}s)"
                finished.append(_finished(task, State.FAILED, status, now, reason))
        elif status.state == JobState.COMPLETED and task.generates_source:
            generators.append((task, status))
        elif status.state == JobState.COMPLETED:
            finished.append(_finished(task, State.COMPLETED, status, now, ""))
        elif status.state == JobState.FAILED and task.attempt < task.retries:
            _reset_for_submission(task)
            task.reason = f"attempt {task.attempt + 1} failed ({status.reason or 'failed'}); retrying"
            task.attempt += 1
            retrying.append(task)
        else:
            final = State.CANCELLED if status.state == JobState.CANCELLED else State.FAILED
            finished.append(_finished(task, final, status, now, status.reason or final))
    with transaction.atomic():
        _move(unknown, LIVE, ["unknown_since"])
        _move(reasons, (State.SUBMITTED,), ["reason"])
        changed.update(
            t.run_id
            for t in _move(running, (State.SUBMITTED,), ["state", "started_at", "node", "reason", "queue_wait_seconds"])
        )
        changed.update(t.run_id for t in _move(retrying, LIVE, [*RESET_FIELDS, "attempt", "reason"]))
    for task, status in generators:
        if _complete_generator(task, status, adapter, now):
            changed.add(task.run_id)
    changed.update(t.run_id for t in finish_tasks(finished))
    _store_observed(backend, result.observed, {t.job_id: t for t in tasks}, now)


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
]


def _finished(task: Task, state: str, status: JobStatus, now: datetime, reason: str) -> Task:
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
    return task


def _move(tasks: Sequence[Task], from_states: Sequence[str], fields: Sequence[str]) -> list[Task]:
    """Save ``fields`` of those tasks that are still in ``from_states``; return them.

    The conditional state transition of the engine, in bulk: the rows are locked
    (PostgreSQL) or the write lock is held (SQLite, IMMEDIATE), so a task moved by
    another actor meanwhile is left alone. Call inside ``transaction.atomic()``.
    """
    if not tasks:
        return []
    by_pk = {t.pk: t for t in tasks}
    moved: list[Task] = []
    for chunk in _chunks(list(by_pk)):
        locked = Task.objects.select_for_update().filter(pk__in=chunk, state__in=from_states)
        moved += [by_pk[pk] for pk in locked.values_list("pk", flat=True)]
    _update_rows(moved, fields)
    return moved


def _update_rows(tasks: Sequence[Task], fields: Sequence[str]) -> None:
    """``UPDATE ... WHERE id = %s`` for each task in one executemany.

    Django's ``bulk_update`` builds a CASE expression per row and field, which costs
    ~5 ms per task here; a tick moves hundreds of tasks, so the SQL is kept plain.
    """
    if not tasks:
        return
    model_fields = [Task._meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    # Only model metadata goes into the SQL text; every value is a parameter.
    sql = "UPDATE {} SET {} WHERE {} = %s".format(  # noqa: S608
        quote(Task._meta.db_table),
        ", ".join(f"{quote(str(f.column))} = %s" for f in model_fields),  # type: ignore[union-attr]
        quote("id"),
    )
    rows = [
        [f.get_db_prep_save(getattr(task, f.attname), connection) for f in model_fields] + [task.pk]  # type: ignore[union-attr]
        for task in tasks
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def finish_tasks(tasks: Sequence[Task]) -> list[Task]:
    """Record final states once, then release dependents or mark them dep_failed."""
    requeue, undecided = _settle_held_jobs(tasks)
    settled_apart = {t.pk for t in requeue} | {t.pk for t in undecided}
    with transaction.atomic():
        _move(requeue, LIVE, [*RESET_FIELDS, "reason"])
        moved = _move([t for t in tasks if t.pk not in settled_apart], LIVE, FINISH_FIELDS)
        _release_dependents([t.pk for t in moved if t.state == State.COMPLETED])
        failed: dict[str, list[str]] = {}
        for task in moved:
            if task.state != State.COMPLETED:
                failed.setdefault(task.run_id, []).append(task.task_id)
        for run_id, task_ids in failed.items():
            mark_dep_failed(run_id, task_ids)
    return moved + requeue


def _settle_held_jobs(tasks: Sequence[Task]) -> tuple[list[Task], list[Task]]:
    """Jobs held on native dependencies that the scheduler dropped before they ran.

    If a parent failed, the task is ``dep_failed``, not failed in its own right. If
    every parent completed, the scheduler dropped it because a parent had already
    left its memory (a race PBS has): the task is queued again, to go without afterok.
    If a parent has not ended yet as far as we know (Slurm drops the dependent while
    the failed parent still shows COMPLETING), nothing is decided until it has.
    Returns the tasks to queue again and the undecided ones (left as they are); the
    others are updated in place.
    """
    held = [t for t in tasks if t.native_deps and t.state != State.COMPLETED and not t.started_at]
    if not held:
        return [], []
    states = {(t.run_id, t.task_id): t.state for t in tasks}
    for run_id in {t.run_id for t in held}:
        names = sorted({d for t in held if t.run_id == run_id for d in t.resolved_deps})
        for chunk in _chunks(names):
            for task_id, state in Task.objects.filter(run_id=run_id, task_id__in=chunk).values_list("task_id", "state"):
                states.setdefault((run_id, task_id), state)
    # Parents first: a held child of a held parent goes by what was decided for the parent
    # (dropped with it, not failed), so the held tasks are taken in dependency order.
    key_of = {(t.run_id, t.task_id): t for t in held}
    held_parents = {k: [(k[0], d) for d in t.resolved_deps if (k[0], d) in key_of] for k, t in key_of.items()}
    held_children: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, parents in held_parents.items():
        for parent in parents:
            held_children.setdefault(parent, []).append(key)
    waiting = {key: len(parents) for key, parents in held_parents.items()}
    ready = [key for key, count in waiting.items() if count == 0]
    requeue, undecided = [], []
    while ready:
        key = ready.pop()
        task = key_of[key]
        parent_states = {d: states.get((task.run_id, d)) for d in task.resolved_deps}
        failed_parent = next((d for d, st in parent_states.items() if st in FAILED_STATES), None)
        if failed_parent:
            task.state, task.reason = State.DEP_FAILED, f"dependency {failed_parent!r} failed"
            states[key] = task.state
        elif any(st != State.COMPLETED for st in parent_states.values()):
            undecided.append(task)
            states[key] = State.SUBMITTED  # as it stays in the database
        elif task.state == State.CANCELLED:
            reason = f"dropped by the scheduler while held ({task.reason}); queued again"
            _reset_for_submission(task)
            task.reason = reason
            requeue.append(task)
            states[key] = task.state
        for child in held_children.get(key, []):
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return requeue, undecided


def _release_dependents(completed_pks: Sequence[int]) -> None:
    """Each completion takes one off its dependents' ``waiting_on``."""
    decrements: Counter[tuple[str, str]] = Counter()
    for chunk in _chunks(completed_pks):
        # Fresh from the database: a generated batch may have added dependents.
        for run_id, dependents in Task.objects.filter(pk__in=chunk).values_list("run_id", "dependents"):
            decrements.update((run_id, child) for child in dependents)
    by_amount: dict[tuple[str, int], list[str]] = {}
    for (run_id, child), amount in decrements.items():
        by_amount.setdefault((run_id, amount), []).append(child)
    for (run_id, amount), children in by_amount.items():
        for chunk in _chunks(children):
            Task.objects.filter(run_id=run_id, task_id__in=chunk, waiting_on__gte=amount).update(
                waiting_on=F("waiting_on") - amount
            )


def mark_dep_failed(run_id: str, failed_task_ids: Iterable[str]) -> int:
    """Mark every pending task downstream of these (final) failures as dep_failed."""
    frontier: dict[str, str] = {}  # task id -> the failed dependency that blocks it
    for task_id, dependents in Task.objects.filter(run_id=run_id, task_id__in=list(failed_task_ids)).values_list(
        "task_id", "dependents"
    ):
        frontier.update(dict.fromkeys(dependents, task_id))
    marked = 0
    now = timezone.now()
    while frontier:
        blocked: list[Task] = []
        for chunk in _chunks(list(frontier)):
            # Jobs held by the scheduler on a dependency are dropped by it (kill-on-invalid-dep).
            blocked += Task.objects.filter(
                Q(state=State.PENDING) | Q(state=State.SUBMITTED, native_deps=True, started_at__isnull=True),
                run_id=run_id,
                task_id__in=chunk,
            ).only("pk", "task_id", "dependents", "state")
        for task in blocked:
            task.state, task.reason, task.finished_at = (
                State.DEP_FAILED,
                f"dependency {frontier[task.task_id]!r} failed",
                now,
            )
        moved = _move(blocked, (State.PENDING, State.SUBMITTED), ["state", "reason", "finished_at"])
        marked += len(moved)
        frontier = {child: task.task_id for task in moved for child in task.dependents}
    return marked


def _complete_generator(task: Task, status: JobStatus, adapter: BackendAdapter, now: datetime) -> bool:
    """A ``generates_source`` task finished: append its tasks, or fail it saying why."""
    path = _resolve_against(task.generates_source, resolve_working_dir(task.working_dir, task.run.clone_dir))
    try:
        text = adapter.read_file(path)
        existing = Task.objects.filter(run_id=task.run_id).values_list("task_id", flat=True)
        generated = validate(text, existing_ids=existing)
    except (FileNotFoundError, WorkflowError) as exc:
        problem = "file not found" if isinstance(exc, FileNotFoundError) else str(exc)
        message = f"generated tasks from {path} rejected: {problem}"
        Run.objects.filter(pk=task.run_id).update(error=message)
        log.warning("run %s: %s", task.run_id, message)
        return bool(finish_tasks([_finished(task, State.FAILED, status, now, message)]))
    with transaction.atomic():
        if not _move(
            [_finished(task, State.COMPLETED, status, now, f"generated {len(generated)} tasks")], LIVE, FINISH_FIELDS
        ):
            return False
        _append_generated(task, generated)
        _release_dependents([task.pk])
    return True


def _append_generated(generator: Task, generated: Sequence[ResolvedTask]) -> None:
    run_id = generator.run_id
    new_ids = {g.definition.id for g in generated}
    children: dict[str, list[str]] = {}  # existing task id -> new tasks that depend on it
    for g in generated:
        for dep in g.resolved_deps:
            if dep not in new_ids:
                children.setdefault(dep, []).append(g.definition.id)
    states = dict(Task.objects.filter(run_id=run_id, task_id__in=list(children)).values_list("task_id", "state"))
    # The generator's own completion is released by the caller like any other.
    done = {tid for tid, st in states.items() if st == State.COMPLETED and tid != generator.task_id}
    last = Task.objects.filter(run_id=run_id).order_by("-position").values_list("position", flat=True).first()
    insert_tasks(Run(pk=run_id), generated, first_position=(last or 0) + 1, done=done, generated_by=generator.task_id)
    # Existing tasks learn their new dependents, so that their completion releases them.
    parents = list(Task.objects.filter(run_id=run_id, task_id__in=list(children)).only("pk", "task_id", "dependents"))
    for parent in parents:
        parent.dependents = list(parent.dependents) + children[parent.task_id]
    Task.objects.bulk_update(parents, ["dependents"])
    failed = [tid for tid, st in states.items() if st in (State.FAILED, State.CANCELLED, State.DEP_FAILED)]
    if failed:
        mark_dep_failed(run_id, failed)


def submit_ready(backend: Backend, adapter: BackendAdapter, changed: set[str]) -> None:
    """Submit ready tasks, within each run's and the backend's max_concurrent, in one batch."""
    active_on_backend = Task.objects.filter(run__backend=backend, state__in=ACTIVE).count()
    room = backend.max_concurrent - active_on_backend
    if room <= 0:
        return
    runs = list(
        Run.objects.filter(backend=backend, status__in=(Run.Status.PENDING, Run.Status.RUNNING)).order_by("created_at")
    )
    if not runs:
        return
    environments = {e.name: e for e in Environment.objects.all()}
    batch: list[tuple[Task, JobSpec, str]] = []
    for run in runs:
        if room <= 0:
            break
        run_room = run.max_concurrent - Task.objects.filter(run=run, state__in=ACTIVE).count()
        take = min(room, run_room)
        if take <= 0:
            continue
        claimed = _claim(run, take, adapter, environments)
        if adapter.supports_native_dependencies and len(claimed) < take:
            claimed += _claim_held(run, take - len(claimed), adapter, environments, claimed)
        batch += claimed
        room -= len(claimed)
        changed.add(run.pk)
    if not batch:
        return
    try:
        results = adapter.submit([(spec, script) for _, spec, script in batch])
    except BackendUnavailable:
        # The adapter guarantees nothing was submitted: put the tasks back.
        tasks = [task for task, _, _ in batch]
        for task in tasks:
            _reset_for_submission(task)
        with transaction.atomic():
            _move(tasks, (State.SUBMITTING,), ["state", "submit_tag", "claimed_at"])
        raise
    # Anything else that escapes leaves the tasks `submitting` for reconciliation.
    now = timezone.now()
    by_tag = {spec.tag: task for task, spec, _ in batch}
    _mark_submitted([(by_tag[r.tag], r.job_id) for r in results if r.job_id], now)
    retry_later: list[Task] = []
    rejected: list[Task] = []
    for result in results:
        if result.job_id:
            continue
        task = by_tag[result.tag]
        if task.native_deps and (not result.error or "dependency" in result.error.lower()):
            # Its parent was not submitted, or left the scheduler: submit it normally later.
            _reset_for_submission(task)
            task.reason = f"held submission deferred: {result.error or 'a parent was not submitted'}"
            retry_later.append(task)
        elif result.retry or not result.error:
            # Not sent, or the scheduler cannot take it just now: a pause, not a failure.
            _reset_for_submission(task)
            task.reason = f"submission deferred: {result.error or 'not sent'}"
            retry_later.append(task)
        else:
            task.state, task.reason, task.finished_at = (
                State.FAILED,
                f"rejected by the scheduler: {result.error}",
                now,
            )
            rejected.append(task)
    with transaction.atomic():
        _move(retry_later, (State.SUBMITTING,), [*RESET_FIELDS, "reason"])
        for task in _move(rejected, (State.SUBMITTING,), ["state", "reason", "finished_at"]):
            mark_dep_failed(task.run_id, [task.task_id])
    started = {task.run_id for task, _, _ in batch}
    Run.objects.filter(pk__in=started, started_at__isnull=True).update(started_at=now)


def _claim(
    run: Run, limit: int, adapter: BackendAdapter, environments: dict[str, Environment]
) -> list[tuple[Task, JobSpec, str]]:
    """Move up to ``limit`` ready tasks to ``submitting``, each with its tag and script."""
    with transaction.atomic():
        ready = list(
            Task.objects.select_for_update(skip_locked=True)
            .filter(run=run, state=State.PENDING, waiting_on=0)
            .order_by("position")[:limit]
        )
        return _claim_tasks(run, ready, adapter, environments, {})


def _claim_tasks(
    run: Run,
    tasks: Sequence[Task],
    adapter: BackendAdapter,
    environments: dict[str, Environment],
    parents: dict[str, list[tuple[str, str]]],
) -> list[tuple[Task, JobSpec, str]]:
    """Render and move these pending tasks to ``submitting``; ``parents`` maps a task id to
    the (job id, batch tag) pairs it waits on inside the scheduler."""
    claimed: list[tuple[Task, JobSpec, str]] = []
    unrenderable: list[Task] = []
    now = timezone.now()
    for task in tasks:
        # Unique per submission (relaunch restarts attempts), stored before the backend sees it.
        tag = f"sh-{run.pk}-{task.pk}-{secrets.token_hex(3)}"
        try:
            spec = build_job_spec(task, run, environments, adapter, tag)
            held_on = parents.get(task.task_id, [])
            spec.after_job_ids = [job_id for job_id, _ in held_on if job_id]
            spec.after_tags = [batch_tag for _, batch_tag in held_on if batch_tag]
            script = adapter.render_script(spec)
        except ValueError as exc:
            task.state, task.reason, task.finished_at = (State.FAILED, f"cannot render the job script: {exc}", now)
            unrenderable.append(task)
            continue
        task.state, task.submit_tag, task.claimed_at, task.script, task.reason = (
            State.SUBMITTING,
            tag,
            now,
            script,
            "",
        )
        task.output_file, task.error_file = spec.output_file, spec.error_file
        task.native_deps = bool(spec.after_job_ids or spec.after_tags)
        claimed.append((task, spec, script))
    with transaction.atomic():
        fields = ["state", "submit_tag", "claimed_at", "script", "output_file", "error_file", "reason", "native_deps"]
        moved = {t.pk for t in _move([c[0] for c in claimed], (State.PENDING,), fields)}
        for task in _move(unrenderable, (State.PENDING,), ["state", "reason", "finished_at"]):
            mark_dep_failed(run.pk, [task.task_id])
    return [c for c in claimed if c[0].pk in moved]


def _claim_held(
    run: Run,
    limit: int,
    adapter: BackendAdapter,
    environments: dict[str, Environment],
    claimed_now: Sequence[tuple[Task, JobSpec, str]],
) -> list[tuple[Task, JobSpec, str]]:
    """Claim tasks whose unfinished dependencies are all on the scheduler already (or in
    this batch): they are submitted with afterok and start the moment their parents end.

    Walks from the run's live jobs and this batch's jobs to their pending dependents,
    level by level, so the cost follows the jobs in flight, not the size of the run.
    """
    # task id -> job id (on the scheduler) or tag (in this batch) of possible parents
    live = {
        task_id: (job_id, "")
        for task_id, job_id in Task.objects.filter(run=run, state__in=LIVE, generates_source="", retries=0)
        .exclude(job_id="")
        .values_list("task_id", "job_id")
    }
    live.update({t.task_id: ("", spec.tag) for t, spec, _ in claimed_now if not t.generates_source and not t.retries})
    frontier = set(
        child
        for deps in Task.objects.filter(run=run, task_id__in=list(live)).values_list("dependents", flat=True)
        for child in deps
    )
    result: list[tuple[Task, JobSpec, str]] = []
    while frontier and len(result) < limit:
        candidates: list[Task] = []
        for chunk in _chunks(sorted(frontier)):
            candidates += Task.objects.filter(run=run, task_id__in=chunk, state=State.PENDING, waiting_on__gt=0)
        candidates.sort(key=lambda t: t.position)
        dep_ids = {d for t in candidates for d in t.resolved_deps if d not in live}
        completed: set[str] = set()
        for chunk in _chunks(sorted(dep_ids)):
            completed.update(
                Task.objects.filter(run=run, task_id__in=chunk, state=State.COMPLETED).values_list("task_id", flat=True)
            )
        ready = [t for t in candidates if all(d in live or d in completed for d in t.resolved_deps)]
        ready = ready[: limit - len(result)]
        held_on = {t.task_id: [live[d] for d in t.resolved_deps if d in live] for t in ready}
        newly = _claim_tasks(run, ready, adapter, environments, held_on)
        result += newly
        live.update({t.task_id: ("", spec.tag) for t, spec, _ in newly if not t.generates_source and not t.retries})
        frontier = {child for t, _, _ in newly for child in t.dependents}
    return result


def _mark_submitted(pairs: Sequence[tuple[Task, str]], now: datetime) -> None:
    """Store job ids in the same UPDATE that marks the tasks submitted."""
    for task, job_id in pairs:
        task.state, task.job_id, task.submitted_at, task.reason = State.SUBMITTED, job_id, now, ""
    with transaction.atomic():
        # Only the lease holder moves `submitting` tasks, so the state check suffices.
        _move([task for task, _ in pairs], (State.SUBMITTING,), ["state", "job_id", "submitted_at", "reason"])


def build_job_spec(
    task: Task, run: Run, environments: dict[str, Environment], adapter: BackendAdapter, tag: str
) -> JobSpec:
    env = {
        "SCRIPTHUT_WORKFLOW": run.workflow_name,
        "SCRIPTHUT_RUN_ID": run.pk,
        "SCRIPTHUT_CREATED_AT": run.created_at.replace(microsecond=0).isoformat(),
    }
    if run.git_sha:
        env |= {
            "SCRIPTHUT_GIT_REPO": run.git_repo,
            "SCRIPTHUT_GIT_BRANCH": run.git_branch,
            "SCRIPTHUT_GIT_SHA": run.git_sha,
        }
    extra_init = ""
    environment = environments.get(task.environment) if task.environment else None
    if environment:
        env |= {k: str(v) for k, v in environment.variables.items()}
        extra_init = environment.extra_init
    env |= task.env_vars
    spec = JobSpec(
        tag=tag,
        run_id=run.pk,
        task_id=task.task_id,
        name=task.name,
        command=task.command,
        working_dir=resolve_working_dir(task.working_dir, run.clone_dir),
        partition=task.partition,
        cpus=task.cpus,
        memory=task.memory,
        time_limit=task.time_limit,
        env=env,
        extra_init=extra_init,
        output_file=task.output_file,
        error_file=task.error_file,
        gres=task.gres,
        image=task.image,
    )
    spec.output_file = spec.output_file or adapter.default_log_path(spec, "out")
    spec.error_file = spec.error_file or adapter.default_log_path(spec, "err")
    return spec


def resolve_working_dir(working_dir: str, clone_dir: str) -> str:
    """Git workflows: ``~`` means the checkout and relative paths are inside it."""
    if not clone_dir:
        return working_dir
    if working_dir in ("", "~"):
        return clone_dir
    if working_dir.startswith(("/", "~")):
        return working_dir
    return f"{clone_dir.rstrip('/')}/{working_dir}"


def _resolve_against(path: str, directory: str) -> str:
    if path.startswith(("/", "~")):
        return path
    return f"{directory.rstrip('/')}/{path}"


def task_log_path(task: Task, stream: str) -> str:
    """The file holding a task's ``output`` or ``error`` stream on its backend."""
    path = task.output_file if stream == "output" else task.error_file
    if not path:
        return ""
    return _resolve_against(path, resolve_working_dir(task.working_dir, task.run.clone_dir))


def refresh_run_status(run_id: str) -> None:
    """Derive a run's status from its task counts."""
    counts = dict(
        Task.objects.filter(run_id=run_id).values_list("state").annotate(n=Count("id")).values_list("state", "n")
    )
    total = sum(counts.values())
    unfinished = sum(counts.get(s, 0) for s in (State.PENDING, *ACTIVE))
    started = total - counts.get(State.PENDING, 0)
    run = Run.objects.get(pk=run_id)
    fields: dict[str, Any] = {}
    if run.status == Run.Status.CANCELLED:
        if unfinished == 0 and not run.finished_at:
            fields["finished_at"] = timezone.now()
    elif unfinished == 0 and total:
        fields["status"] = Run.Status.COMPLETED if counts.get(State.COMPLETED, 0) == total else Run.Status.FAILED
        fields["finished_at"] = run.finished_at or timezone.now()
    elif started:
        fields["status"] = Run.Status.RUNNING
    else:
        fields["status"] = Run.Status.PENDING
    if not any(getattr(run, k) != v for k, v in fields.items()):
        return
    runs = Run.objects.filter(pk=run_id)
    if "status" in fields:
        runs = runs.exclude(status=Run.Status.CANCELLED)  # never overwrite a cancellation made meanwhile
    runs.update(**fields)


def _store_observed(backend: Backend, observed: Sequence[JobStatus], ours: dict[str, Task], now: datetime) -> None:
    """Replace the backend's observed jobs with what this poll saw."""
    with transaction.atomic():
        ObservedJob.objects.filter(backend=backend).delete()
        ObservedJob.objects.bulk_create(
            [
                ObservedJob(
                    backend=backend,
                    job_id=s.job_id,
                    task=ours.get(s.job_id),
                    name=s.name[:255],
                    user=s.user,
                    state=s.state.value,
                    reason=s.reason[:255],
                    partition=s.partition,
                    cpus=s.cpus,
                    node=s.node,
                    submitted_at=s.submitted_at,
                    started_at=s.started_at,
                    last_seen_at=now,
                )
                for s in observed
            ],
            batch_size=1000,
        )


def _chunks(items: Sequence[Any]) -> Iterator[list[Any]]:
    items = list(items)
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
