"""Page data: what the run pages, their htmx partials and the JSON API show, built once.

Views and API endpoints pick the objects through these functions and only shape the
result (a template context, a JSON body), so a page and the API cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import BooleanField, Count, ExpressionWrapper, Q, QuerySet
from django.http import Http404
from django.urls import reverse
from django.utils.http import urlencode

from runs.costing.summary import RunCost, run_cost, run_costs
from runs.engine import states
from runs.engine.sql import chunks
from runs.engine.states import TaskState
from runs.models import Run, Task, Viewer, task_group

RUNS_PER_PAGE = 50
ROWS_PER_GROUP = 200  # task rows shown per group on the run page
ROWS_PER_PAGE = 2000  # task rows shown on the run page overall
GROUP_PAGE_SIZE = 500  # rows per page when one group is opened on its own

# Task fields the pages' rows and the API need; the script and command texts stay in the database.
TASK_ROW_FIELDS = (
    "id",
    "run_id",
    "task_id",
    "name",
    "state",
    "reason",
    "job_id",
    "exit_code",
    "attempt",
    "retries",
    "started_at",
    "finished_at",
    "elapsed_seconds",
    "submitted_at",
    "node",
    "output_file",
    "error_file",
    "deps",
    # queue wait, resource use (against what was requested) and scheduler-held dependencies
    "queue_wait_seconds",
    "cpu_efficiency",
    "max_rss_mb",
    "out_of_memory",
    "memory",
    "cpus",
    "native_deps",
    "cost",
    "waste_cost",
    "priced_with",
)
# Which rows a capped group shows first (lower first).
SHOW_FIRST: dict[str, int] = {
    TaskState.FAILED: 0,
    TaskState.RUNNING: 1,
    TaskState.SUBMITTING: 2,
    TaskState.SUBMITTED: 2,
    TaskState.CANCELLED: 3,
    TaskState.DEP_FAILED: 4,
    TaskState.PENDING: 5,
    TaskState.COMPLETED: 6,
}

# -- access: another user's run is a 404, not a 403: its existence is not ours to reveal --


def visible_run(user: Viewer, run_id: str) -> Run:
    """The run ``run_id`` if ``user`` may see it (with its owner and backend), else 404."""
    run = Run.objects.visible_to(user).select_related("owner", "backend").filter(pk=run_id).first()
    if run is None:
        raise Http404(f"run {run_id!r} not found")
    return run


def visible_task(user: Viewer, run_id: str, task_id: str) -> Task:
    """One task, with its run, owner and backend, if ``user`` may see its run, else 404."""
    found = Task.objects.visible_to(user).select_related("run__owner", "run__backend")
    task = found.filter(run_id=run_id, task_id=task_id).first()
    if task is None:
        raise Http404(f"task {task_id!r} of run {run_id!r} not found")
    return task


# -- counts and the runs list ------------------------------------------------------------


def state_counts(run_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """Tasks per state (every state, zeros included) of many runs, in one aggregate query."""
    ids = list(run_ids)
    counts = {run_id: dict.fromkeys(TaskState.values, 0) for run_id in ids}
    # order_by(): Task's default ordering would join runs_run for nothing.
    rows = Task.objects.filter(run_id__in=ids).order_by().values_list("run_id", "state").annotate(n=Count("id"))
    for run_id, state, n in rows:
        counts[run_id][state] = n
    return counts


@dataclass(frozen=True)
class RunRow:
    run: Run
    counts: dict[str, int]
    cost: RunCost | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def run_rows(runs: Iterable[Run]) -> list[RunRow]:
    """One row per run, with its counts: the runs page and ``GET /api/runs``."""
    listed = list(runs)
    counts = state_counts(run.pk for run in listed)
    costs = run_costs(run.pk for run in listed)
    return [RunRow(run, counts[run.pk], costs.get(run.pk)) for run in listed]


def run_list_context(user: Viewer, page_number: str | None) -> dict[str, Any]:
    runs = Run.objects.visible_to(user).select_related("owner", "backend")
    page = Paginator(runs, RUNS_PER_PAGE).get_page(page_number)
    rows = run_rows(page.object_list)
    return {
        "rows": rows,
        "page": page,
        "poll": any(not row.run.is_finished for row in rows),
        "show_owner": True,
    }


# -- task rows ---------------------------------------------------------------------------


def task_rows(run: Run) -> QuerySet[Task]:
    """The run's tasks, in workflow order, with the columns pages and the API show
    (the script and command texts stay in the database; ``has_script`` says if there is one)."""
    return (
        Task.objects.filter(run=run)
        .only(*TASK_ROW_FIELDS)
        .annotate(has_script=ExpressionWrapper(~Q(script=""), output_field=BooleanField()))
        .order_by("position")
    )


# -- the run page: groups, their counts, the rows to show ----------------------------------

# (pk, task_id, state) of every task of a run, in workflow order: enough to count and choose.
Light = tuple[int, str, str]


@dataclass
class GroupView:
    name: str
    counts: Counter[str] = field(default_factory=Counter)
    pks: list[int] = field(default_factory=list)  # of the rows to show
    rows: list[Task] = field(default_factory=list)
    total: int = 0

    @property
    def label(self) -> str:
        return self.name or "(no group)"

    @property
    def hidden(self) -> int:
        return self.total - len(self.pks)

    @property
    def unfinished(self) -> bool:
        return any(self.counts.get(s) for s in states.UNFINISHED)


@dataclass
class RunPage:
    """Everything the run page and its live partial show."""

    run: Run
    counts: dict[str, int]
    groups: list[GroupView]  # the groups shown, with their rows
    group_count: int
    focus: str | None = None  # the one group opened on its own, if any
    page: Page[int] | None = None  # of that group's rows
    cost: RunCost | None = None  # None: pricing is off (no cost shown anywhere)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def poll(self) -> bool:
        return not self.run.is_finished

    @property
    def can_cancel(self) -> bool:
        return not self.run.is_finished

    @property
    def can_relaunch(self) -> bool:
        # The same conditions runs.actions.relaunch_run checks, so the button never leads to an error.
        some = any(self.counts[s] for s in states.UNSUCCESSFUL)
        return self.run.is_finished and some and not any(self.counts[s] for s in states.ACTIVE)

    @property
    def items_url(self) -> str:
        query = {"group": self.focus} if self.focus is not None else {}
        if self.page is not None and self.page.number > 1:
            query["page"] = str(self.page.number)
        return reverse("run_items", args=[self.run.pk]) + (f"?{urlencode(query)}" if query else "")

    def context(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "counts": self.counts,
            "total": self.total,
            "groups": self.groups,
            "group_count": self.group_count,
            "focus": self.focus,
            "page": self.page,
            "poll": self.poll,
            "can_cancel": self.can_cancel,
            "can_relaunch": self.can_relaunch,
            "items_url": self.items_url,
            # Many groups: open only the ones with work left, so the page stays scannable.
            "collapse_done": self.group_count > 8,
            "rows_per_group": ROWS_PER_GROUP,
            "cost": self.cost,
        }


def run_page(run: Run, focus: str | None = None, page_number: str | None = None) -> RunPage:
    """Counts per state and per group, and the task rows to show, in a few queries.

    One light query reads (pk, task_id, state) of every task to count per group; then
    only the rows to be shown are loaded, so a 10,000-task run renders quickly.
    ``focus`` opens one group on its own, ``page_number`` pages through it.
    """
    light = list(Task.objects.filter(run=run).order_by("position").values_list("pk", "task_id", "state"))
    groups = _count_groups(light)
    page = None
    if focus is None:
        shown = _choose_capped_rows(groups, light)
    else:
        page = _choose_focus_rows(groups, light, focus, page_number)
        shown = [groups[focus]]
    _load_rows(run, shown, every_row=sum(len(g.pks) for g in shown) == len(light))
    counts = state_counts([run.pk])[run.pk]
    return RunPage(
        run=run, counts=counts, groups=shown, group_count=len(groups), focus=focus, page=page, cost=run_cost(run.pk)
    )


def _count_groups(light: list[Light]) -> dict[str, GroupView]:
    groups: dict[str, GroupView] = {}
    for _, task_id, state in light:
        name = task_group(task_id)
        group = groups.setdefault(name, GroupView(name))
        group.counts[state] += 1
        group.total += 1
    return groups


def _choose_capped_rows(groups: dict[str, GroupView], light: list[Light]) -> list[GroupView]:
    """Every group, each showing at most ROWS_PER_GROUP rows and ROWS_PER_PAGE in all."""
    members: dict[str, list[tuple[int, int, str]]] = {}
    for index, (pk, task_id, state) in enumerate(light):
        members.setdefault(task_group(task_id), []).append((index, pk, state))
    budget = ROWS_PER_PAGE
    for group in groups.values():
        take = min(ROWS_PER_GROUP, budget)
        rows = members[group.name]
        if len(rows) > take:
            # A capped group shows the tasks that need attention first (failed,
            # running, queued), then upcoming ones; always listed in workflow order.
            rows = sorted(sorted(rows, key=lambda r: (SHOW_FIRST.get(r[2], 9), r[0]))[:take])
        group.pks = [pk for _, pk, _ in rows]
        budget -= len(group.pks)
    return list(groups.values())


def _choose_focus_rows(
    groups: dict[str, GroupView], light: list[Light], focus: str, page_number: str | None
) -> Page[int]:
    """One page of the rows of group ``focus``; 404 when the run has no such group."""
    if focus not in groups:
        raise Http404("no such group in this run")
    in_focus = [pk for pk, task_id, _ in light if task_group(task_id) == focus]
    page = Paginator(in_focus, GROUP_PAGE_SIZE).get_page(page_number)
    groups[focus].pks = list(page.object_list)
    return page


def _load_rows(run: Run, shown: list[GroupView], every_row: bool) -> None:
    tasks = task_rows(run)
    if every_row:  # one query without a long IN list
        by_pk = {t.pk: t for t in tasks}
    else:
        wanted = [pk for g in shown for pk in g.pks]
        by_pk = {t.pk: t for chunk in chunks(wanted) for t in tasks.filter(pk__in=chunk)}
    for group in shown:
        group.rows = [by_pk[pk] for pk in group.pks if pk in by_pk]
