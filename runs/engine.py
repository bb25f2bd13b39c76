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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from backends.base import BackendAdapter, BackendUnavailable, JobSpec, JobState, JobStatus
from backends.models import Backend, Environment
from backends.registry import get_adapter
from runs.models import ObservedJob, PortalSettings, Run, Task
from runs.workflow import ResolvedTask, WorkflowError, validate

log = logging.getLogger("runs.engine")

State = Task.State
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
    owner: AbstractBaseUser,
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
        Task.objects.bulk_create(_task_rows(run, resolved, first_position=0, done=set()), batch_size=1000)
    wake(backend)
    return run


def _task_rows(
    run: Run, resolved: Sequence[ResolvedTask], first_position: int, done: set[str], generated_by: str = ""
) -> Iterator[Task]:
    for offset, item in enumerate(resolved):
        d = item.definition
        yield Task(
            run=run,
            position=first_position + offset,
            task_id=d.id,
            name=d.name,
            command=d.command,
            deps=d.deps,
            resolved_deps=item.resolved_deps,
            dependents=item.dependents,
            waiting_on=sum(1 for dep in item.resolved_deps if dep not in done),
            partition=d.partition,
            cpus=d.cpus,
            memory=d.memory,
            time_limit=d.time_limit,
            working_dir=d.working_dir,
            environment=d.environment,
            env_vars=d.env_vars,
            output_file=d.output_file,
            error_file=d.error_file,
            generates_source=d.generates_source,
            gres=d.gres,
            image=d.image,
            retries=d.retries,
            generated_by=generated_by,
        )


# -- user actions ----------------------------------------------------------------------


def cancel_run(run: Run) -> None:
    """Cancel pending tasks now; the next tick cancels submitted and running jobs."""
    with transaction.atomic():
        updated = Run.objects.filter(pk=run.pk).exclude(status__in=Run.FINISHED).update(status=Run.Status.CANCELLED)
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
        if Task.objects.filter(run=run, state__in=Task.ACTIVE).exists():
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
        Task.objects.bulk_update(
            again,
            [
                "state",
                "attempt",
                "reason",
                "waiting_on",
                "job_id",
                "submit_tag",
                "claimed_at",
                "submitted_at",
                "started_at",
                "finished_at",
                "exit_code",
                "elapsed_seconds",
                "node",
            ],
            batch_size=1000,
        )
        run.status = Run.Status.RUNNING if done else Run.Status.PENDING
        run.finished_at = None
        run.error = ""
        run.save(update_fields=["status", "finished_at", "error"])
    wake(run.backend)
    return len(again)


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
    status, message = Backend.Status.OK, ""
    try:
        adapter = get_adapter(backend)
        reconcile_submitting(backend, adapter, changed)
        cancel_requested(backend, adapter, changed)
        poll_jobs(backend, adapter, changed)
        submit_ready(backend, adapter, changed)
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
    for task in stuck:
        changed.add(task.run_id)
        if task.submit_tag in found:
            _record_submitted(task, found[task.submit_tag], now)
            log.info("reconciled task %s: already submitted as job %s", task.task_id, found[task.submit_tag])
        else:
            Task.objects.filter(pk=task.pk, state=State.SUBMITTING, submit_tag=task.submit_tag).update(
                state=State.PENDING, submit_tag="", claimed_at=None, reason="submission interrupted; queued again"
            )


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
    for chunk in _chunks([t.pk for t in tasks]):
        Task.objects.filter(pk__in=chunk, state__in=(State.SUBMITTED, State.RUNNING)).update(
            state=State.CANCELLED, reason="cancelled by user", finished_at=now
        )
    changed.update(t.run_id for t in tasks)


def poll_jobs(backend: Backend, adapter: BackendAdapter, changed: set[str]) -> None:
    """One poll for every job of interest on this backend, then apply what it says."""
    tasks = list(
        Task.objects.filter(run__backend=backend, state__in=(State.SUBMITTED, State.RUNNING))
        .exclude(job_id="")
        .select_related("run")
    )
    result = adapter.poll([t.job_id for t in tasks])
    grace = timedelta(seconds=settings.SCRIPTHUT_UNKNOWN_JOB_GRACE_SECONDS)
    now = timezone.now()
    for task in tasks:
        status = result.statuses.get(task.job_id) or JobStatus(task.job_id, JobState.UNKNOWN)
        if apply_status(task, status, adapter, now=now, grace=grace):
            changed.add(task.run_id)
    _store_observed(backend, result.observed, {t.job_id: t for t in tasks}, now)


def apply_status(task: Task, status: JobStatus, adapter: BackendAdapter, *, now: datetime, grace: timedelta) -> bool:
    """Move a task according to what its scheduler says; True if its state changed."""
    live = (State.SUBMITTED, State.RUNNING)
    if status.state == JobState.QUEUED:
        if status.reason != task.reason:
            Task.objects.filter(pk=task.pk, state=State.SUBMITTED).update(reason=status.reason)
        return False
    if status.state == JobState.RUNNING:
        if task.state == State.RUNNING:
            return False
        return bool(
            Task.objects.filter(pk=task.pk, state=State.SUBMITTED).update(
                state=State.RUNNING, started_at=status.started_at or now, node=status.node, reason=""
            )
        )
    if status.state == JobState.UNKNOWN:
        # Never fail a job merely because it is absent from one poll.
        if task.submitted_at and now - task.submitted_at > grace:
            return _finish(
                task,
                State.FAILED,
                status,
                now,
                f"job {task.job_id} is unknown to the scheduler (not seen for {grace.seconds}s)",
            )
        return False
    if status.state == JobState.COMPLETED:
        if task.generates_source:
            return _complete_generator(task, status, adapter, now)
        return _finish(task, State.COMPLETED, status, now, "")
    if status.state == JobState.FAILED and task.attempt < task.retries:
        retried = Task.objects.filter(pk=task.pk, state__in=live).update(
            state=State.PENDING,
            attempt=F("attempt") + 1,
            job_id="",
            submit_tag="",
            claimed_at=None,
            submitted_at=None,
            started_at=None,
            finished_at=None,
            exit_code=None,
            elapsed_seconds=None,
            node="",
            reason=f"attempt {task.attempt + 1} failed ({status.reason or 'failed'}); retrying",
        )
        return bool(retried)
    final = State.CANCELLED if status.state == JobState.CANCELLED else State.FAILED
    return _finish(task, final, status, now, status.reason or final)


def _finish(
    task: Task, state: str, status: JobStatus, now: datetime, reason: str, generated: Sequence[ResolvedTask] = ()
) -> bool:
    """Record a final state once, then release dependents or mark them dep_failed."""
    with transaction.atomic():
        moved = Task.objects.filter(pk=task.pk, state__in=(State.SUBMITTED, State.RUNNING)).update(
            state=state,
            reason=reason,
            exit_code=status.exit_code,
            started_at=task.started_at or status.started_at,
            finished_at=status.finished_at or now,
            elapsed_seconds=status.elapsed_seconds,
            node=status.node or task.node,
        )
        if not moved:
            return False
        if generated:
            _append_generated(task, generated)
        if state == State.COMPLETED:
            dependents = Task.objects.get(pk=task.pk).dependents  # fresh: generation may add some
            for chunk in _chunks(dependents):
                Task.objects.filter(run_id=task.run_id, task_id__in=chunk, waiting_on__gt=0).update(
                    waiting_on=F("waiting_on") - 1
                )
        else:
            mark_dep_failed(task.run_id, [task.task_id])
    return True


def mark_dep_failed(run_id: str, failed_task_ids: Iterable[str]) -> int:
    """Mark every pending task downstream of these (final) failures as dep_failed."""
    frontier: list[tuple[str, str]] = []  # (task id, the failed dependency that blocks it)
    for row in Task.objects.filter(run_id=run_id, task_id__in=list(failed_task_ids)).values_list(
        "task_id", "dependents"
    ):
        frontier += [(child, row[0]) for child in row[1]]
    marked = 0
    now = timezone.now()
    while frontier:
        blocked_by = dict(frontier)
        frontier = []
        for chunk in _chunks(list(blocked_by)):
            rows = list(
                Task.objects.filter(run_id=run_id, task_id__in=chunk, state=State.PENDING).values_list(
                    "pk", "task_id", "dependents"
                )
            )
            for pk, task_id, dependents in rows:
                Task.objects.filter(pk=pk, state=State.PENDING).update(
                    state=State.DEP_FAILED, reason=f"dependency {blocked_by[task_id]!r} failed", finished_at=now
                )
                frontier += [(child, task_id) for child in dependents]
            marked += len(rows)
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
        return _finish(task, State.FAILED, status, now, message)
    return _finish(task, State.COMPLETED, status, now, f"generated {len(generated)} tasks", generated=generated)


def _append_generated(generator: Task, generated: Sequence[ResolvedTask]) -> None:
    run_id = generator.run_id
    new_ids = {g.definition.id for g in generated}
    existing_refs = {dep for g in generated for dep in g.resolved_deps if dep not in new_ids}
    states = dict(Task.objects.filter(run_id=run_id, task_id__in=list(existing_refs)).values_list("task_id", "state"))
    states[generator.task_id] = State.COMPLETED  # being marked completed in this transaction
    done = {tid for tid, st in states.items() if st == State.COMPLETED}
    last = Task.objects.filter(run_id=run_id).order_by("-position").values_list("position", flat=True).first()
    run = Run(pk=run_id)
    Task.objects.bulk_create(
        _task_rows(run, generated, first_position=(last or 0) + 1, done=done, generated_by=generator.task_id),
        batch_size=1000,
    )
    # Existing tasks learn their new dependents, so their completion releases them.
    parents = list(Task.objects.filter(run_id=run_id, task_id__in=list(existing_refs)))
    children: dict[str, list[str]] = {}
    for g in generated:
        for dep in g.resolved_deps:
            if dep not in new_ids:
                children.setdefault(dep, []).append(g.definition.id)
    for parent in parents:
        parent.dependents = list(parent.dependents) + children.get(parent.task_id, [])
    Task.objects.bulk_update(parents, ["dependents"])
    failed = [tid for tid, st in states.items() if st in (State.FAILED, State.CANCELLED, State.DEP_FAILED)]
    if failed:
        mark_dep_failed(run_id, failed)


def submit_ready(backend: Backend, adapter: BackendAdapter, changed: set[str]) -> None:
    """Submit ready tasks, within each run's and the backend's max_concurrent, in one batch."""
    active_on_backend = Task.objects.filter(run__backend=backend, state__in=Task.ACTIVE).count()
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
        run_room = run.max_concurrent - Task.objects.filter(run=run, state__in=Task.ACTIVE).count()
        take = min(room, run_room)
        if take <= 0:
            continue
        claimed = _claim(run, take, adapter, environments)
        batch += claimed
        room -= len(claimed)
        if claimed:
            changed.add(run.pk)
    if not batch:
        return
    try:
        results = adapter.submit([(spec, script) for _, spec, script in batch])
    except BackendUnavailable:
        # The adapter guarantees nothing was submitted: put the tasks back.
        for task, spec, _ in batch:
            Task.objects.filter(pk=task.pk, state=State.SUBMITTING, submit_tag=spec.tag).update(
                state=State.PENDING, submit_tag="", claimed_at=None
            )
        raise
    # Anything else that escapes leaves the tasks `submitting` for reconciliation.
    now = timezone.now()
    by_tag = {spec.tag: task for task, spec, _ in batch}
    for result in results:
        task = by_tag[result.tag]
        if result.job_id:
            _record_submitted(task, result.job_id, now)
        else:
            with transaction.atomic():
                moved = Task.objects.filter(pk=task.pk, state=State.SUBMITTING, submit_tag=result.tag).update(
                    state=State.FAILED, reason=f"rejected by the scheduler: {result.error}", finished_at=now
                )
                if moved:
                    mark_dep_failed(task.run_id, [task.task_id])
    started = {task.run_id for task, _, _ in batch}
    Run.objects.filter(pk__in=started, started_at__isnull=True).update(started_at=now)


def _claim(
    run: Run, limit: int, adapter: BackendAdapter, environments: dict[str, Environment]
) -> list[tuple[Task, JobSpec, str]]:
    """Move up to ``limit`` ready tasks to ``submitting``, each with its tag and script."""
    claimed: list[tuple[Task, JobSpec, str]] = []
    now = timezone.now()
    with transaction.atomic():
        ready = list(
            Task.objects.select_for_update(skip_locked=True)
            .filter(run=run, state=State.PENDING, waiting_on=0)
            .order_by("position")[:limit]
        )
        for task in ready:
            # Unique per submission (relaunch restarts attempts), stored before the backend sees it.
            tag = f"sh-{run.pk}-{task.pk}-{secrets.token_hex(3)}"
            try:
                spec = build_job_spec(task, run, environments, adapter, tag)
                script = adapter.render_script(spec)
            except ValueError as exc:
                if Task.objects.filter(pk=task.pk, state=State.PENDING).update(
                    state=State.FAILED, reason=f"cannot render the job script: {exc}", finished_at=now
                ):
                    mark_dep_failed(run.pk, [task.task_id])
                continue
            moved = Task.objects.filter(pk=task.pk, state=State.PENDING).update(
                state=State.SUBMITTING,
                submit_tag=tag,
                claimed_at=now,
                script=script,
                output_file=spec.output_file,
                error_file=spec.error_file,
                reason="",
            )
            if moved:
                task.submit_tag = tag
                claimed.append((task, spec, script))
    return claimed


def _record_submitted(task: Task, job_id: str, now: datetime) -> None:
    # The job id is stored by the same UPDATE that marks the task submitted.
    Task.objects.filter(pk=task.pk, state=State.SUBMITTING, submit_tag=task.submit_tag).update(
        state=State.SUBMITTED, job_id=job_id, submitted_at=now, reason=""
    )


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
    unfinished = sum(counts.get(s, 0) for s in (State.PENDING, *Task.ACTIVE))
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
