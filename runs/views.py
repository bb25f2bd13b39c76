"""Server-rendered pages: the jobs dashboard, runs and their tasks, task logs, workflows.

Views stay thin: they pick rows with a handful of queries and hand them to templates.
Live parts of a page are htmx partials polled by the page itself; a partial stops
polling by leaving ``hx-trigger`` out once there is nothing left to follow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import BooleanField, Count, ExpressionWrapper, Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from backends.base import BackendUnavailable
from backends.models import Backend
from backends.registry import get_adapter
from runs.actions import RunStateError, cancel_run, relaunch_run
from runs.engine import states
from runs.engine.jobspec import task_log
from runs.models import ObservedJob, Run, Task, Workflow
from runs.pages import visible_run, visible_task
from runs.workflow_command import dry_run, start_run
from runs.workflow_json import ResolvedTask, WorkflowError

State = Task.State


class HtmxHttpRequest(HttpRequest):
    """What HtmxMiddleware makes of every request (django-htmx's typing recipe)."""

    htmx: HtmxDetails


JOB_ROWS = 500  # per jobs table on the dashboard
RUNS_PER_PAGE = 50
ROWS_PER_GROUP = 200  # task rows shown per group on the run page
ROWS_PER_PAGE = 2000  # task rows shown on the run page overall
GROUP_PAGE_SIZE = 500  # rows per page when one group is opened on its own
LOG_TAIL_BYTES = 256 * 1024
IN_CHUNK = 500  # ids per IN (...) clause

# Task fields the run page's rows need; the script and command texts stay in the database.
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
    # queue wait, resource use (against what was requested) and scheduler-held dependencies
    "queue_wait_seconds",
    "cpu_efficiency",
    "max_rss_mb",
    "out_of_memory",
    "memory",
    "cpus",
    "native_deps",
)
RETRYABLE = (State.FAILED, State.CANCELLED, State.DEP_FAILED)
# Which rows a capped group shows first (lower first).
SHOW_FIRST: dict[str, int] = {
    State.FAILED: 0,
    State.RUNNING: 1,
    State.SUBMITTING: 2,
    State.SUBMITTED: 2,
    State.CANCELLED: 3,
    State.DEP_FAILED: 4,
    State.PENDING: 5,
    State.COMPLETED: 6,
}


# -- helpers ---------------------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _state_counts(run_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per-state task counts of many runs in one aggregate query."""
    result: dict[str, dict[str, int]] = {}
    rows = (
        Task.objects.filter(run_id__in=list(run_ids))
        .values("run_id", "state")
        .annotate(n=Count("id"))
        .values_list("run_id", "state", "n")
    )
    for run_id, state, n in rows:
        result.setdefault(run_id, {})[state] = n
    return result


def _wants_json(request: HttpRequest) -> bool:
    # Browsers send "text/html,...,*/*;q=0.8" and get HTML; API clients asking for JSON get JSON.
    return request.get_preferred_type(["text/html", "application/json"]) == "application/json"


def _htmx_aware(response: HttpResponse) -> HttpResponse:
    # The same URL returns a fragment to htmx and a page to the browser: keep caches apart.
    patch_vary_headers(response, ("HX-Request",))
    return response


# -- dashboard -------------------------------------------------------------------------


def _jobs_context(request: HttpRequest) -> dict[str, Any]:
    only_mine = bool(request.session.get("only_mine"))
    selected = request.user.get_username() if only_mine else request.GET.get("user", "").strip()

    ours = (
        Task.objects.filter(state__in=(State.SUBMITTED, State.RUNNING))
        .select_related("run", "run__owner", "run__backend")
        .defer("script", "command", "deps", "resolved_deps", "dependents", "env_vars")
        .order_by("run__created_at", "position")
    )
    external = ObservedJob.objects.filter(task__isnull=True).select_related("backend").order_by("backend", "job_id")
    if selected:
        ours = ours.filter(run__owner__username=selected)
        external = external.filter(user=selected)

    # One row more than shown tells whether the table was cut.
    our_jobs = list(ours[: JOB_ROWS + 1])
    our_cut = len(our_jobs) > JOB_ROWS
    our_jobs = our_jobs[:JOB_ROWS]
    external_jobs = list(external[: JOB_ROWS + 1])
    external_cut = len(external_jobs) > JOB_ROWS
    external_jobs = external_jobs[:JOB_ROWS]
    # Link runs only where the run page would not be a 404 for this viewer.
    shown_runs = {t.run_id for t in our_jobs}
    openable = set(Run.objects.visible_to(request.user).filter(pk__in=shown_runs).values_list("pk", flat=True))

    users = set(Run.objects.values_list("owner__username", flat=True).distinct())
    external_users = ObservedJob.objects.filter(task__isnull=True).exclude(user="")
    users |= set(external_users.values_list("user", flat=True).distinct())
    users.add(request.user.get_username())

    active = dict(
        Task.objects.filter(state__in=states.ACTIVE)
        .values("run__backend_id")
        .annotate(n=Count("id"))
        .values_list("run__backend_id", "n")
    )
    backends = [(backend, active.get(backend.pk, 0)) for backend in Backend.objects.all()]

    return {
        "our_jobs": our_jobs,
        "our_counts": Counter(t.state for t in our_jobs),
        "our_jobs_truncated": our_cut,
        "openable_runs": openable,
        "external_jobs": external_jobs,
        "external_counts": Counter(j.state for j in external_jobs),
        "external_jobs_truncated": external_cut,
        "job_rows": JOB_ROWS,
        "users": sorted(u for u in users if u),
        "selected_user": selected,
        "only_mine": only_mine,
        "backends": backends,
        "jobs_url": reverse("jobs") + (f"?{urlencode({'user': selected})}" if selected and not only_mine else ""),
    }


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "runs/dashboard.html", _jobs_context(request))


@require_GET
def jobs(request: HttpRequest) -> HttpResponse:
    """The dashboard's live part (backends panel and both jobs tables), polled by htmx."""
    return render(request, "runs/_jobs.html", _jobs_context(request))


@require_POST
def filter_toggle(request: HttpRequest) -> HttpResponse:
    request.session["only_mine"] = not request.session.get("only_mine", False)
    return redirect("dashboard")


# -- runs ------------------------------------------------------------------------------


@dataclass
class RunRow:
    run: Run
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@require_GET
def run_list(request: HtmxHttpRequest) -> HttpResponse:
    runs = Run.objects.visible_to(request.user).select_related("owner", "backend")
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    page_runs: list[Run] = list(page.object_list)
    counts = _state_counts(r.pk for r in page_runs)
    context = {
        "rows": [RunRow(run, counts.get(run.pk, {})) for run in page_runs],
        "page": page,
        "poll": any(not r.is_finished for r in page_runs),
        "show_owner": True,
    }
    template = "runs/_run_table.html" if request.htmx else "runs/run_list.html"
    return _htmx_aware(render(request, template, context))


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
        return any(self.counts.get(s) for s in (State.PENDING, *states.ACTIVE))


def _group_of(task_id: str) -> str:
    head, dot, _ = task_id.rpartition(".")  # same rule as Task.group
    return head if dot else ""


def _run_items_context(request: HttpRequest, run: Run) -> dict[str, Any]:
    """Counts per state and per group, and the task rows to show, in a few queries.

    One light query reads (pk, task_id, state) of every task to count per group; then
    only the rows to be shown are loaded, so a 10,000-task run renders quickly.
    """
    focus = request.GET.get("group")
    light = list(Task.objects.filter(run=run).order_by("position").values_list("pk", "task_id", "state"))
    counts: Counter[str] = Counter()
    groups: dict[str, GroupView] = {}
    for _, task_id, state in light:
        counts[state] += 1
        group = groups.setdefault(_group_of(task_id), GroupView(_group_of(task_id)))
        group.counts[state] += 1
        group.total += 1

    page = None
    if focus is not None:
        if focus not in groups:
            raise Http404("no such group in this run")
        shown = [groups[focus]]
        in_focus = [pk for pk, task_id, _ in light if _group_of(task_id) == focus]
        page = Paginator(in_focus, GROUP_PAGE_SIZE).get_page(request.GET.get("page"))
        shown[0].pks = list(page.object_list)
    else:
        shown = list(groups.values())
        members: dict[str, list[tuple[int, int, str]]] = {}
        for index, (pk, task_id, state) in enumerate(light):
            members.setdefault(_group_of(task_id), []).append((index, pk, state))
        budget = ROWS_PER_PAGE
        for group in shown:
            take = min(ROWS_PER_GROUP, budget)
            rows = members[group.name]
            if len(rows) > take:
                # A capped group shows the tasks that need attention first (failed,
                # running, queued), then upcoming ones; always listed in workflow order.
                rows = sorted(sorted(rows, key=lambda r: (SHOW_FIRST.get(r[2], 9), r[0]))[:take])
            group.pks = [pk for _, pk, _ in rows]
            budget -= len(group.pks)

    wanted = [pk for g in shown for pk in g.pks]
    tasks = (
        Task.objects.filter(run=run)
        .only(*TASK_ROW_FIELDS)
        .annotate(has_script=ExpressionWrapper(~Q(script=""), output_field=BooleanField()))
    )
    if len(wanted) == len(light):
        by_pk = {t.pk: t for t in tasks}
    else:
        by_pk = {t.pk: t for chunk in _chunks(wanted) for t in tasks.filter(pk__in=chunk)}
    for group in shown:
        group.rows = [by_pk[pk] for pk in group.pks if pk in by_pk]

    active = sum(counts.get(s, 0) for s in states.ACTIVE)
    query = {"group": focus} if focus is not None else {}
    if page is not None and page.number > 1:
        query["page"] = str(page.number)
    return {
        "run": run,
        "counts": dict(counts),
        "total": len(light),
        "groups": shown,
        "group_count": len(groups),
        "focus": focus,
        "page": page,
        "poll": not run.is_finished,
        "can_cancel": not run.is_finished,
        "can_relaunch": run.is_finished and not active and any(counts.get(s) for s in RETRYABLE),
        "items_url": reverse("run_items", args=[run.pk]) + (f"?{urlencode(query)}" if query else ""),
        # Many groups: open only the ones with work left, so the page stays scannable.
        "collapse_done": len(groups) > 8,
        "rows_per_group": ROWS_PER_GROUP,
    }


@require_GET
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    run = visible_run(request.user, run_id)
    return render(request, "runs/run_detail.html", _run_items_context(request, run))


@require_GET
def run_items(request: HttpRequest, run_id: str) -> HttpResponse:
    """The live part of the run page; its root drops ``hx-trigger`` once the run finished."""
    run = visible_run(request.user, run_id)
    return render(request, "runs/_run_items.html", _run_items_context(request, run))


@require_POST
def run_cancel(request: HttpRequest, run_id: str) -> HttpResponse:
    run = visible_run(request.user, run_id)
    try:
        cancel_run(run)
    except RunStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Run {run.pk} cancelled: pending tasks stopped, running jobs are being cancelled.")
    return redirect("run_detail", run_id=run.pk)


@require_POST
def run_relaunch(request: HttpRequest, run_id: str) -> HttpResponse:
    run = visible_run(request.user, run_id)
    try:
        count = relaunch_run(run)
    except RunStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Relaunched {count} task{'s' if count != 1 else ''} of run {run.pk}.")
    return redirect("run_detail", run_id=run.pk)


# -- tasks -----------------------------------------------------------------------------


def _log_location(task: Task, stream: str) -> str:
    try:
        return get_adapter(task.run.backend).log_location(task_log(task, stream))
    except BackendUnavailable:
        return task.output_file if stream == "output" else task.error_file


@require_GET
def task_script(request: HttpRequest, run_id: str, task_id: str) -> HttpResponse:
    task = visible_task(request.user, run_id, task_id)
    run = task.run
    context = {
        "run": run,
        "task": task,
        "output_path": _log_location(task, "output"),
        "error_path": _log_location(task, "error"),
    }
    return render(request, "runs/task_script.html", context)


@require_GET
def task_logs(request: HtmxHttpRequest, run_id: str, task_id: str, stream: str) -> HttpResponse:
    if stream not in ("output", "error"):
        raise Http404("log type must be output or error")
    task = visible_task(request.user, run_id, task_id)
    run = task.run
    path = _log_location(task, stream)
    text, problem, level = "", "", "info"
    if task.state == State.PENDING or not task.job_id:
        problem = "This task has not been submitted yet, so it has no log."
        if task.state in states.FINISHED:
            problem = f"This task never ran ({task.get_state_display()}), so it has no log."
    elif not path:
        problem = "No log file is recorded for this task."
    else:
        try:
            text = get_adapter(run.backend).read_log(task_log(task, stream), LOG_TAIL_BYTES)
        except FileNotFoundError:
            problem = f"{path} has not been written yet."
            if task.state in states.FINISHED:
                problem = f"{path} does not exist on backend {run.backend.name}."
        except BackendUnavailable as exc:
            problem, level = f"Backend {run.backend.name} is unreachable: {exc}", "error"
        except OSError as exc:
            problem, level = f"Cannot read {path}: {exc.strerror or exc}", "error"
    context = {
        "run": run,
        "task": task,
        "stream": stream,
        "path": path,
        "text": text,
        "problem": problem,
        "problem_level": level,
        # A full tail means the file is at least that long: say it was cut.
        "truncated": len(text.encode()) >= LOG_TAIL_BYTES,
        "tail_kib": LOG_TAIL_BYTES // 1024,
        "poll": task.is_active,
        "log_url": reverse("task_logs", args=[run.pk, task.task_id, stream]),
    }
    template = "runs/_log.html" if request.htmx else "runs/task_logs.html"
    return _htmx_aware(render(request, template, context))


# -- workflows -------------------------------------------------------------------------


def _workflow_json(workflow: Workflow) -> dict[str, Any]:
    git = workflow.git
    if git:
        # The deploy key's path says where a secret lives; the API does not need it.
        git = {k: v for k, v in git.items() if k != "deploy_key"}
    return {
        "name": workflow.name,
        "backend": workflow.backend.name,
        "command": workflow.command,
        "max_concurrent": workflow.max_concurrent,
        "description": workflow.description,
        "git": git,
    }


@require_GET
def workflow_list(request: HttpRequest) -> HttpResponse:
    workflows = list(Workflow.objects.select_related("backend"))
    if _wants_json(request):
        return JsonResponse([_workflow_json(w) for w in workflows], safe=False)
    return render(request, "runs/workflow_list.html", {"workflows": workflows})


def _task_json(item: ResolvedTask) -> dict[str, Any]:
    return item.definition.model_dump() | {"resolved_deps": item.resolved_deps}


@require_GET
def workflow_dry_run(request: HttpRequest, name: str) -> HttpResponse:
    workflow = get_object_or_404(Workflow.objects.select_related("backend"), name=name)
    tasks: list[ResolvedTask] = []
    error = ""
    try:
        tasks = dry_run(workflow)
    except WorkflowError as exc:
        error = str(exc)
    if _wants_json(request):
        if error:
            return JsonResponse({"workflow": workflow.name, "error": error}, status=400)
        return JsonResponse(
            {
                "workflow": workflow.name,
                "backend": workflow.backend.name,
                "count": len(tasks),
                "tasks": [_task_json(t) for t in tasks],
            }
        )
    context = {
        "workflow": workflow,
        "tasks": tasks,
        "error": error,
        "groups": len({_group_of(t.definition.id) for t in tasks}),
    }
    return render(request, "runs/workflow_dry_run.html", context)


@require_POST
def workflow_run(request: HttpRequest, name: str) -> HttpResponse:
    workflow = get_object_or_404(Workflow.objects.select_related("backend"), name=name)
    raw = request.POST.get("max_concurrent", "").strip()
    max_concurrent: int | None = None
    if raw:
        try:
            max_concurrent = int(raw)
        except ValueError:
            messages.error(request, f"max concurrent must be a whole number, not {raw!r}")
            return redirect("workflow_list")
    try:
        run = start_run(workflow, request.user, max_concurrent)  # type: ignore[arg-type]  # never anonymous here
    except WorkflowError as exc:
        messages.error(request, f"Could not start {workflow.name}: {exc}")
        return redirect("workflow_list")
    messages.success(request, f"Run {run.pk} of {workflow.name} started.")
    return redirect("run_detail", run_id=run.pk)
