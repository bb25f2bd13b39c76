"""The jobs dashboard's data: backend cards, ScriptHut's jobs on the schedulers, other jobs.

Every user sees the jobs queued or running on the backends they may use (and of the runs
they see), as the schedulers themselves show them, but only the runs they may see are linked and named: another user's
task id and workflow name stay hidden (the rules: ``runs.access``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db.models import Count, Model, QuerySet
from django.urls import reverse
from django.utils.http import urlencode

from backends.base import ClusterInfo, PartitionInfo
from backends.models import Backend
from runs.access import listed_jobs, usable_backends, visible_observed_jobs, visible_runs
from runs.engine import states
from runs.models import ObservedJob, Task, Viewer
from runs.web.no_access import no_access
from runs.web.pages import RunRow, run_rows

JOB_ROWS = 500  # per jobs table
PARTITIONS_SHOWN = 8  # per backend card; the rest are summed up in a tooltip
RECENT_RUNS = 8

M = TypeVar("M", bound=Model)
Row = TypeVar("Row")


# -- backends ----------------------------------------------------------------------------


def active_tasks_per_backend() -> dict[int, int]:
    """Tasks holding a slot on each backend now (backend pk -> count)."""
    rows = (
        Task.objects.filter(state__in=states.ACTIVE).order_by().values_list("run__backend_id").annotate(n=Count("id"))
    )
    return dict(rows)


@dataclass(frozen=True)
class BackendCard:
    backend: Backend
    active: int
    cluster: ClusterInfo

    @property
    def first_partitions(self) -> list[PartitionInfo]:
        return self.cluster.partitions[:PARTITIONS_SHOWN]

    @property
    def more_partitions(self) -> list[PartitionInfo]:
        return self.cluster.partitions[PARTITIONS_SHOWN:]


def backend_cards(user: Viewer) -> list[BackendCard]:
    """The backends ``user`` may use: nothing is shown of the others."""
    active = active_tasks_per_backend()
    return [
        BackendCard(backend, active.get(backend.pk, 0), ClusterInfo.from_json(backend.cluster_info))
        for backend in usable_backends(user)
    ]


# -- jobs tables -------------------------------------------------------------------------


@dataclass(frozen=True)
class OurJob:
    """A ScriptHut task on a scheduler; ``openable`` when the viewer may see its run."""

    task: Task
    openable: bool

    @property
    def task_id(self) -> str:
        return self.task.task_id if self.openable else ""

    @property
    def workflow_name(self) -> str:
        return self.task.run.workflow_name if self.openable else ""


@dataclass(frozen=True)
class JobTable(Generic[Row]):
    rows: list[Row]
    truncated: bool  # more jobs than JOB_ROWS
    counts: Counter[str]


def _first_rows(jobs: QuerySet[M]) -> tuple[list[M], bool]:
    # One row more than shown tells whether the table was cut.
    rows = list(jobs[: JOB_ROWS + 1])
    return rows[:JOB_ROWS], len(rows) > JOB_ROWS


def our_jobs(user: Viewer, owner: str) -> JobTable[OurJob]:
    """ScriptHut's queued and running jobs ``user`` is shown (of ``owner`` if given), first
    submitted runs first."""
    live = (
        listed_jobs(user)
        .select_related("run", "run__owner", "run__backend")
        .defer("script", "command", "deps", "resolved_deps", "dependents", "env_vars")
        .order_by("run__created_at", "position")
    )
    if owner:
        live = live.filter(run__owner__username=owner)
    tasks, truncated = _first_rows(live)
    shown_runs = {t.run_id for t in tasks}
    # Linked and named only where the run page would not be a 404 for this viewer.
    openable = set(visible_runs(user).filter(pk__in=shown_runs).values_list("pk", flat=True))
    rows = [OurJob(task, task.run_id in openable) for task in tasks]
    return JobTable(rows, truncated, Counter(t.state for t in tasks))


def other_jobs(user: Viewer, owner: str) -> JobTable[ObservedJob]:
    """Jobs on the backends that ScriptHut did not submit (of ``owner`` if given)."""
    external = visible_observed_jobs(user).filter(our_task__isnull=True).select_related("backend")
    if owner:
        external = external.filter(user=owner)
    jobs, truncated = _first_rows(external.order_by("backend", "job_id"))
    return JobTable(jobs, truncated, Counter(j.state for j in jobs))


def recent_runs(user: Viewer, owner: str) -> list[RunRow]:
    """The runs ``user`` may see (of ``owner`` if given) that were created or finished
    last, with their outcome: a run that just finished or failed stays in view."""
    runs = visible_runs(user).select_related("owner", "backend")
    if owner:
        runs = runs.filter(owner__username=owner)
    # Two short index scans rather than sorting every run on an expression at each refresh.
    created = list(runs.order_by("-created_at")[:RECENT_RUNS])
    finished = list(runs.filter(finished_at__isnull=False).order_by("-finished_at")[:RECENT_RUNS])
    by_pk = {run.pk: run for run in created + finished}
    latest = sorted(by_pk.values(), key=lambda run: max(run.created_at, run.finished_at or run.created_at))
    return run_rows(latest[::-1][:RECENT_RUNS])


def job_owners(user: Viewer) -> list[str]:
    """Who the jobs tables can be filtered by: owners of the runs the viewer sees and of the
    ScriptHut jobs queued or running, users of the other jobs, and the viewer."""
    names = set(visible_runs(user).order_by().values_list("owner__username", flat=True).distinct())
    names |= set(listed_jobs(user).order_by().values_list("run__owner__username", flat=True).distinct())
    external = visible_observed_jobs(user).filter(our_task__isnull=True).exclude(user="").order_by()
    names |= set(external.values_list("user", flat=True).distinct())
    names.add(user.get_username())
    return sorted(name for name in names if name)


def dashboard_context(user: Viewer, selected: str, only_mine: bool) -> dict[str, Any]:
    """The dashboard and its live partial; ``selected`` is the user the tables are narrowed to."""
    ours = our_jobs(user, selected)
    others = other_jobs(user, selected)
    return {
        "our_jobs": ours.rows,
        "our_counts": ours.counts,
        "our_jobs_truncated": ours.truncated,
        "external_jobs": others.rows,
        "external_counts": others.counts,
        "external_jobs_truncated": others.truncated,
        "job_rows": JOB_ROWS,
        "users": sorted({*job_owners(user), selected} - {""}),
        "selected_user": selected,
        "only_mine": only_mine,
        "backends": backend_cards(user),
        "no_access": no_access(user),
        "recent_runs": recent_runs(user, selected),
        "jobs_url": reverse("jobs") + (f"?{urlencode({'user': selected})}" if selected and not only_mine else ""),
    }
