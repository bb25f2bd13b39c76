"""Tick phase 3: one poll for every job of interest on a backend, applied in batches.

The poll costs the backend one call whatever the number of jobs; what it says is
sorted into a few lists here, and each list is saved with one conditional UPDATE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backends.base import BackendAdapter, JobState, JobStatus, PollResult
from backends.models import Backend
from runs.engine.accounting import fill_measurements, unmeasured
from runs.engine.fields import keep_times_in_order, record_end
from runs.engine.finish import finish_tasks
from runs.engine.generate import complete_generator
from runs.engine.states import LIVE, Step, TaskState, move, requeue
from runs.models import ObservedJob, Task


@dataclass
class PollOutcome:
    """What one poll means for the tasks asked about, sorted by how it is saved."""

    now: datetime
    grace: timedelta
    unknown_clock: list[Task] = field(default_factory=list)  # unknown_since started or stopped
    new_reason: list[Task] = field(default_factory=list)  # still queued, for another reason
    started: list[Task] = field(default_factory=list)
    retrying: dict[Task, str] = field(default_factory=dict)  # -> why it goes again
    ended: list[Task] = field(default_factory=list)
    generators: list[tuple[Task, JobStatus]] = field(default_factory=list)

    def read(self, task: Task, status: JobStatus) -> None:
        if status.state != JobState.UNKNOWN and task.unknown_since is not None:
            task.unknown_since = None
            self.unknown_clock.append(task)  # seen again: the clock stops
        readers = {
            JobState.QUEUED: self._queued,
            JobState.RUNNING: self._running,
            JobState.UNKNOWN: self._unknown,
            JobState.COMPLETED: self._completed,
            JobState.FAILED: self._failed,
            JobState.CANCELLED: self._cancelled,
        }
        readers[status.state](task, status)

    def _queued(self, task: Task, status: JobStatus) -> None:
        if status.reason != task.reason:
            task.reason = status.reason
            self.new_reason.append(task)

    def _running(self, task: Task, status: JobStatus) -> None:
        if task.state == TaskState.SUBMITTED:
            task.state, task.started_at, task.node, task.reason = (
                TaskState.RUNNING,
                status.started_at or self.now,
                status.node,
                "",
            )
            task.queue_wait_seconds = status.queue_wait_seconds
            self.started.append(keep_times_in_order(task))

    def _unknown(self, task: Task, status: JobStatus) -> None:
        # Never fail a job merely because it is absent from one poll: only once the
        # scheduler has had no record of it for the whole grace period.
        if task.unknown_since is None:
            task.unknown_since = self.now
            self.unknown_clock.append(task)
        elif self.now - task.unknown_since > self.grace:
            seconds = int(self.grace.total_seconds())
            reason = f"job {task.job_id} is unknown to the scheduler (no record for {seconds}s)"
            self.ended.append(record_end(task, TaskState.FAILED, status, self.now, reason))

    def _completed(self, task: Task, status: JobStatus) -> None:
        if task.generates_source:
            self.generators.append((task, status))
        else:
            self.ended.append(record_end(task, TaskState.COMPLETED, status, self.now, ""))

    def _failed(self, task: Task, status: JobStatus) -> None:
        if task.attempt < task.retries:
            self.retrying[task] = f"attempt {task.attempt + 1} failed ({status.reason or 'failed'}); retrying"
            task.attempt += 1
        else:
            self.ended.append(record_end(task, TaskState.FAILED, status, self.now, status.reason or TaskState.FAILED))

    def _cancelled(self, task: Task, status: JobStatus) -> None:
        reason = status.reason or TaskState.CANCELLED
        self.ended.append(record_end(task, TaskState.CANCELLED, status, self.now, reason))


def poll_jobs(
    backend: Backend, adapter: BackendAdapter, changed: set[str], *, owner: int | None = None, ends_only: bool = False
) -> None:
    """``owner``: only that user's runs (a per_user backend, ``adapter`` acting as them).
    ``ends_only``: read the jobs' end markers (:meth:`~backends.base.BackendAdapter.read_ends`)
    instead of asking the scheduler; jobs without one are left as they are."""
    tasks = list(Task.objects.on(backend, owner).filter(state__in=LIVE).exclude(job_id="").select_related("run"))
    ended_by_marker = [] if ends_only else unmeasured(backend, adapter, owner)
    tasks, result = _ask(adapter, tasks, ends_only, [t.job_id for t in ended_by_marker])
    fill_measurements(ended_by_marker, result.statuses)
    now = timezone.now()
    outcome = PollOutcome(now=now, grace=timedelta(seconds=settings.SCRIPTHUT_UNKNOWN_JOB_GRACE_SECONDS))
    never_started: set[int] = set()
    for task in tasks:
        status = result.statuses.get(task.job_id) or JobStatus(task.job_id, JobState.UNKNOWN)
        if status.never_started:
            never_started.add(task.pk)
        outcome.read(task, status)
    with transaction.atomic():
        move(outcome.unknown_clock, Step.POLL, ["unknown_since"], from_states=LIVE)
        move(outcome.new_reason, Step.POLL, ["reason"], from_states=(TaskState.SUBMITTED,))
        fields = ["state", "started_at", "node", "reason", "queue_wait_seconds"]
        changed.update(t.run_id for t in move(outcome.started, Step.POLL, fields))
        retried = requeue(list(outcome.retrying), list(outcome.retrying.values()), Step.POLL, also=["attempt"])
        changed.update(t.run_id for t in retried)
    for task, status in outcome.generators:
        if complete_generator(task, status, adapter, now):
            changed.add(task.run_id)
    changed.update(t.run_id for t in finish_tasks(outcome.ended, never_started))
    if not ends_only:  # else the jobs seen on the scheduler stay as its last poll listed them
        _store_seen(backend, tasks, result, owner, now)


def _ask(adapter: BackendAdapter, tasks: list[Task], ends_only: bool, also: list[str]) -> tuple[list[Task], PollResult]:
    """The scheduler's poll of these tasks' jobs (and of the ended jobs ``also``); or their
    end markers, and only the tasks that have one."""
    if not ends_only:
        return tasks, adapter.poll([t.job_id for t in tasks] + also)
    result = adapter.read_ends({t.job_id: (t.run_id, t.submit_tag) for t in tasks})
    return [t for t in tasks if t.job_id in result.statuses], result


def _store_seen(backend: Backend, tasks: list[Task], result: PollResult, owner: int | None, now: datetime) -> None:
    ours = {t.job_id: t.pk for t in tasks}
    if owner is not None:
        # The scheduler lists every owner's jobs: link the other owners' tasks to theirs too.
        live = Task.objects.on(backend).filter(state__in=LIVE).exclude(job_id="")
        ours = dict(live.values_list("job_id", "pk")) | ours
    store_observed(backend, result.observed, ours, now)


def store_observed(backend: Backend, observed: Sequence[JobStatus], ours: dict[str, int], now: datetime) -> None:
    """Replace the backend's observed jobs with what this poll saw (``ours``: job id -> task pk)."""
    with transaction.atomic():
        ObservedJob.objects.filter(backend=backend).delete()
        ObservedJob.objects.bulk_create(
            [
                ObservedJob(
                    backend=backend,
                    job_id=s.job_id,
                    our_task_id=ours.get(s.job_id),
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
