"""Page data: what the run pages, their htmx partials and the JSON API show, built once.

Views and API endpoints pick the run through ``runs.access`` (who may see it), its data
through these functions, and only shape the result (a template context, a JSON body), so a
page and the API cannot disagree.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from django.core.paginator import Page, Paginator
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.db.models.functions import Substr
from django.http import Http404
from django.urls import reverse
from django.utils.http import urlencode

from runs.access import visible_runs
from runs.costing.summary import RunCost, run_cost, run_costs
from runs.engine import states
from runs.models import Run, Task, TaskCount, Viewer, task_group
from runs.web.attempts import attempts
from runs.web.no_access import no_access

RUNS_PER_PAGE = 50
EXPAND_ROWS = 300  # a run with at most this many tasks shows every row; a bigger one starts with groups collapsed
GROUP_ROWS = 100  # rows per page of a group opened on the run page (loaded when opened)
GROUP_PAGE_SIZE = 500  # rows per page when one group is opened on its own page

# Task fields the pages' rows and the API need; the script and command texts stay in the database.
TASK_ROW_FIELDS = (
    "id",
    "run_id",
    "task_id",
    "name",
    "state",
    "reason",
    "waiting_on",  # a ready pending task without a reason shows its run's (runs.engine.waiting)
    "warning",
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
    "run_attempt",
    "cost",
    "waste_cost",
    "priced_with",
)
# -- counts and the runs list ------------------------------------------------------------


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
    counts = Task.objects.state_counts(run.pk for run in listed)
    costs = run_costs(run.pk for run in listed)
    return [RunRow(run, counts[run.pk], costs.get(run.pk)) for run in listed]


def run_list_context(user: Viewer, page_number: str | None) -> dict[str, Any]:
    runs = visible_runs(user).select_related("owner", "backend")
    page = Paginator(runs, RUNS_PER_PAGE).get_page(page_number)
    rows = run_rows(page.object_list)
    return {
        "rows": rows,
        "page": page,
        "poll": any(not row.run.is_settled for row in rows),
        "show_owner": True,
        "no_access": None if rows else no_access(user),
    }


# -- task rows ---------------------------------------------------------------------------


def task_rows(run: Run) -> QuerySet[Task]:
    """The run's tasks, in workflow order, with the columns pages and the API show
    (the script and command texts stay in the database; ``has_script`` says if there is one)."""
    return (
        run.tasks.only(*TASK_ROW_FIELDS)  # through run.tasks: each row knows its run, without a query
        .annotate(has_script=ExpressionWrapper(~Q(script=""), output_field=BooleanField()))
        .order_by("position")
    )


# -- the run page: groups, their counts, the rows to show ----------------------------------

# (pk, task_id, state) of every task of a run, in workflow order: enough to count and choose.
Light = tuple[int, str, str]


def group_dom_id(name: str) -> str:
    """A stable HTML id for a task group (group names are free text)."""
    return "g-" + hashlib.blake2b(name.encode(), digest_size=5).hexdigest()


@dataclass
class GroupView:
    name: str
    counts: Counter[str] = field(default_factory=Counter)
    pks: list[int] = field(default_factory=list)  # of the rows to show
    rows: list[Task] = field(default_factory=list)
    total: int = 0
    page: Page[Task] | None = None  # of this group's rows, when they are paged
    first_position: int = 0  # of its first task (stored counts)

    @property
    def label(self) -> str:
        return self.name or "(no group)"

    @property
    def dom_id(self) -> str:
        return group_dom_id(self.name)

    @property
    def unfinished(self) -> bool:
        return any(self.counts.get(s) for s in states.UNFINISHED)

    @property
    def complete(self) -> bool:
        """Every row of the group is on the page: a new task of the group may be appended."""
        return len(self.rows) == self.total


@dataclass
class RunPage:
    """Everything the run page and its live partial show."""

    run: Run
    counts: dict[str, int]
    groups: list[GroupView]  # the groups shown, with their rows
    group_count: int
    focus: str | None = None  # the one group opened on its own, if any
    page: Page[Task] | None = None  # of that group's rows
    collapsed: bool = False  # groups start closed; a group's rows load when it is opened
    cost: RunCost | None = None  # None: pricing is off (no cost shown anywhere)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def poll(self) -> bool:
        return not self.run.is_settled

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
            "collapsed": self.collapsed,
            "group_rows": GROUP_ROWS,
            # Many groups: open only the ones with work left, so the page stays scannable.
            "collapse_done": self.group_count > 8,
            "attempts": attempts(self.run),  # a relaunched run shows each attempt
            "cost": self.cost,
        }


def run_page(run: Run, focus: str | None = None, page_number: str | None = None) -> RunPage:
    """Counts per state and per group, and the task rows to show, in a few queries.

    A run of at most EXPAND_ROWS tasks shows every row (one light query reads (pk, task_id,
    state) of each); a bigger one shows its groups closed, with the counts per group and state
    the database keeps (:func:`_sql_groups`, ``runs.counts``: no task is read), each loading a page of
    its rows when opened (:func:`group_page`), so a 100,000-task run's page stays small.
    ``focus`` opens one group on its own, ``page_number`` pages through it in the database.
    """
    counts = Task.objects.state_counts([run.pk])[run.pk]
    page = None
    collapsed = focus is None and sum(counts.values()) > EXPAND_ROWS
    if collapsed:  # counted per group by the database: nothing read per task
        shown = list(_sql_groups(run).values())
        group_count = len(shown)
    elif focus is None:  # a small run: every row
        light = _light(run)
        groups = _count_groups(light)
        for group in groups.values():
            group.pks = [pk for pk, task_id, _ in light if task_group(task_id) == group.name]
        shown = list(groups.values())
        _load_rows(run, shown)
        group_count = len(groups)
    else:
        groups = _sql_groups(run)
        shown = [_paged_group(run, groups, focus, page_number, GROUP_PAGE_SIZE)]
        page, group_count = shown[0].page, len(groups)
    return RunPage(
        run=run,
        counts=counts,
        groups=shown,
        group_count=group_count,
        focus=focus,
        page=page,
        collapsed=collapsed,
        cost=run_cost(run.pk),
    )


def group_page(run: Run, name: str, page_number: str | None) -> GroupView:
    """One page (GROUP_ROWS rows) of group ``name``: what an opened group of a big run loads."""
    return _paged_group(run, _sql_groups(run), name, page_number, GROUP_ROWS)


class GroupRows:
    """A group's rows as Django's paginator takes them: its size from the stored counts,
    and each page read by the database (LIMIT/OFFSET in workflow order, on the index on
    (run, position)), so no page reads more tasks than it shows."""

    def __init__(self, run: Run, group: GroupView) -> None:
        self.group = group
        tasks = task_rows(run)
        if group.total:
            tasks = tasks.filter(position__gte=group.first_position)
        # runs.models.task_group in SQL: "<name>.<rest>" with no dot in <rest> (compared
        # exactly, not with LIKE, which ignores case on SQLite); the group without a name
        # is also every id without a dot.
        prefix = f"{group.name}."
        tasks = tasks.annotate(head=Substr("task_id", 1, len(prefix)), rest=Substr("task_id", len(prefix) + 1))
        in_group = Q(head=prefix) & ~Q(rest__contains=".")
        if not group.name:
            in_group |= ~Q(task_id__contains=".")
        tasks = tasks.filter(in_group)
        self.tasks = tasks

    def count(self) -> int:
        return self.group.total

    def __len__(self) -> int:
        return self.group.total

    def __getitem__(self, which: slice) -> list[Task]:
        return list(self.tasks[which])


def _paged_group(
    run: Run, groups: dict[str, GroupView], name: str, page_number: str | None, per_page: int
) -> GroupView:
    """Group ``name`` with one page of its rows; 404 when the run has no such group."""
    group = groups.get(name)
    if group is None:
        raise Http404("no such group in this run")
    rows = cast("Sequence[Task]", GroupRows(run, group))  # it has what the paginator uses of a sequence
    page: Page[Task] = Paginator(rows, per_page).get_page(page_number)
    group.page, group.rows = page, list(page.object_list)
    group.pks = [task.pk for task in group.rows]
    return group


def group_counts(run: Run, names: Iterable[str]) -> dict[str, Counter[str]]:
    """Tasks per state of some groups of ``run`` (the live push updates the groups that changed)."""
    wanted = set(names)
    counts: dict[str, Counter[str]] = {name: Counter() for name in wanted}
    for name, group in _sql_groups(run).items():
        if name in wanted:
            counts[name] = group.counts
    return counts


def _sql_groups(run: Run) -> dict[str, GroupView]:
    """Each group's tasks per state, in the order of the groups' first tasks: one query of
    the run's stored counts (``runs.counts``), whatever the number of its tasks."""
    groups: dict[str, GroupView] = {}
    first: dict[str, int] = {}
    rows = TaskCount.objects.filter(run=run).exclude(n=0).values_list("task_group", "state", "n", "first_position")
    for name, state, n, position in rows:
        group = groups.setdefault(name, GroupView(name))
        group.counts[state] += n
        group.total += n
        first[name] = min(first.get(name, position), position)
    for name, group in groups.items():
        group.first_position = first[name]
    return {name: groups[name] for name in sorted(groups, key=first.__getitem__)}


def _light(run: Run) -> list[Light]:
    """(pk, task_id, state) of each task: only for a run of at most EXPAND_ROWS tasks."""
    return list(Task.objects.filter(run=run).order_by("position").values_list("pk", "task_id", "state"))


def _count_groups(light: list[Light]) -> dict[str, GroupView]:
    groups: dict[str, GroupView] = {}
    for _, task_id, state in light:
        name = task_group(task_id)
        group = groups.get(name)
        if group is None:  # not setdefault: a GroupView per task would cost more than the query
            group = groups[name] = GroupView(name)
        group.counts[state] += 1
        group.total += 1
    return groups


def _load_rows(run: Run, shown: list[GroupView]) -> None:
    """Every row of a small run, in one query."""
    by_pk = {t.pk: t for t in task_rows(run)}
    for group in shown:
        group.rows = [by_pk[pk] for pk in group.pks if pk in by_pk]
