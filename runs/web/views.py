"""Server-rendered pages: the jobs dashboard, runs and their tasks, task logs, workflows.

Views stay thin: their data comes from runs.web.pages (runs, the run page, task rows; the
API calls the same functions) and runs.web.dashboard, and they hand it to templates; a
workflow's dry run and run are runs.web.dry_run's, shared with the sources' workflow files.
Live parts of a page are htmx partials: changes are pushed into them over a websocket
(runs.live.push, runs.live.consumers), and the page fetches them again only while its socket is
down (``data-poll-url``, left out once there is nothing left to follow).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from runs.access import may_change_run, require_staff, usable, usable_workflow, visible_run, visible_task
from runs.actions import RunStateError, cancel_run, relaunch_run
from runs.costing.summary import run_cost
from runs.models import AuditEvent, PortalSettings, Workflow
from runs.web.dashboard import dashboard_context
from runs.web.dry_run import ConfiguredWorkflow, dry_run_page, run_document
from runs.web.no_access import no_access
from runs.web.page_input import wants_json
from runs.web.pages import group_page, run_list_context, run_page
from runs.web.task_logs import LOG_TAIL_BYTES, log_location, read_log
from runs.web.task_notes import how_it_ended, why_it_never_ran
from runs.web.timeline import build_group, build_timeline
from runs.workflows.limits import whole_number
from sources.git import mask_credentials


class HtmxHttpRequest(HttpRequest):
    """What HtmxMiddleware makes of every request (django-htmx's typing recipe)."""

    htmx: HtmxDetails


# -- helpers ---------------------------------------------------------------------------


def _htmx_aware(response: HttpResponse) -> HttpResponse:
    # The same URL returns a fragment to htmx and a page to the browser: keep caches apart.
    patch_vary_headers(response, ("HX-Request",))
    return response


# -- dashboard -------------------------------------------------------------------------


def _jobs_context(request: HttpRequest) -> dict[str, Any]:
    only_mine = bool(request.session.get("only_mine"))
    # No choice made yet: the site's default (settings.filter_user); "everyone" is user=.
    default = PortalSettings.load().filter_user
    selected = request.user.get_username() if only_mine else request.GET.get("user", default).strip()
    return dashboard_context(request.user, selected, only_mine)


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "runs/web/dashboard.html", _jobs_context(request))


@require_GET
def jobs(request: HttpRequest) -> HttpResponse:
    """The dashboard's live part (backends panel and both jobs tables), polled by htmx."""
    return render(request, "runs/web/_jobs.html", _jobs_context(request))


@require_POST
def filter_toggle(request: HttpRequest) -> HttpResponse:
    request.session["only_mine"] = not request.session.get("only_mine", False)
    return redirect("dashboard")


# -- runs ------------------------------------------------------------------------------


@require_GET
def run_list(request: HtmxHttpRequest) -> HttpResponse:
    context = run_list_context(request.user, request.GET.get("page"))
    template = "runs/web/_run_table.html" if request.htmx else "runs/web/run_list.html"
    return _htmx_aware(render(request, template, context))


def _run_page_context(request: HttpRequest, run_id: str) -> dict[str, Any]:
    run = visible_run(request.user, run_id)
    context = run_page(run, request.GET.get("group"), request.GET.get("page")).context()
    context["may_change"] = may_change_run(request.user, run)  # a shared run is there to follow
    return context


@require_GET
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    return render(request, "runs/web/run_detail.html", _run_page_context(request, run_id))


@require_GET
def run_items(request: HttpRequest, run_id: str) -> HttpResponse:
    """The live part of the run page; its root drops ``hx-trigger`` once the run finished."""
    return render(request, "runs/web/_run_items.html", _run_page_context(request, run_id))


@require_GET
def run_group(request: HttpRequest, run_id: str) -> HttpResponse:
    """A page of one group's rows: loaded by a big run's page when the group is opened."""
    run = visible_run(request.user, run_id)
    name = request.GET.get("group")
    if name is None:
        return HttpResponseBadRequest("the group parameter is missing")
    group = group_page(run, name, request.GET.get("page"))
    context = {"run": run, "g": group, "cost": run_cost(run.pk)}
    return render(request, "runs/web/_group_table.html", context)


@require_GET
def run_timeline(request: HttpRequest, run_id: str) -> HttpResponse:
    """The run's timeline (``runs.web.timeline``), or with ``?group=`` the bars of one folded group."""
    run = visible_run(request.user, run_id)
    name = request.GET.get("group")
    if name is None:
        return render(request, "runs/web/_timeline.html", {"run": run, "timeline": build_timeline(run)})
    try:
        start = whole_number(request.GET.get("start", "0"), "start", 0)
    except ValueError as exc:  # as the API: 400 naming the parameter, never a 500
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    group = build_group(run, name, start)
    if group is None:
        raise Http404("no such group in this run")
    return render(request, "runs/web/_timeline_bars.html", {"run": run, "g": group})


@require_POST
def run_cancel(request: HttpRequest, run_id: str) -> HttpResponse:
    run = visible_run(request.user, run_id)
    try:
        cancel_run(run, by=request.user)  # type: ignore[arg-type]  # never anonymous here
    except RunStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Run {run.pk} cancelled: pending tasks stopped, running jobs are being cancelled.")
    return redirect("run_detail", run_id=run.pk)


@require_POST
def run_relaunch(request: HttpRequest, run_id: str) -> HttpResponse:
    run = visible_run(request.user, run_id)
    try:
        count = relaunch_run(run, by=request.user)  # type: ignore[arg-type]  # never anonymous here
    except RunStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Relaunched {count} task{'s' if count != 1 else ''} of run {run.pk}.")
    return redirect("run_detail", run_id=run.pk)


# -- tasks -----------------------------------------------------------------------------


@require_GET
def task_script(request: HttpRequest, run_id: str, task_id: str) -> HttpResponse:
    task = visible_task(request.user, run_id, task_id)
    context = {
        "run": task.run,
        "task": task,
        "output_path": log_location(task, "output"),
        "error_path": log_location(task, "error"),
        "never_ran": why_it_never_ran(task),
    }
    return render(request, "runs/web/task_script.html", context)


@require_GET
def task_logs(request: HtmxHttpRequest, run_id: str, task_id: str, stream: str) -> HttpResponse:
    if stream not in ("output", "error"):
        raise Http404("log type must be output or error")
    task = visible_task(request.user, run_id, task_id)
    path = log_location(task, stream)
    log = read_log(task, stream, path)
    context = {
        "run": task.run,
        "task": task,
        "stream": stream,
        "path": path,
        "text": log.text,
        "problem": log.problem,
        "problem_level": log.level,
        "ending": how_it_ended(task),  # e.g. killed by its time limit: an empty error file says nothing
        # A full tail means the file is at least that long: say it was cut.
        "truncated": len(log.text.encode()) >= LOG_TAIL_BYTES,
        "tail_kib": LOG_TAIL_BYTES // 1024,
        "poll": task.is_active,
        "log_url": reverse("task_logs", args=[run_id, task.task_id, stream]),
    }
    template = "runs/web/_log.html" if request.htmx else "runs/web/task_logs.html"
    return _htmx_aware(render(request, template, context))


# -- workflows -------------------------------------------------------------------------


def workflow_json(workflow: Workflow) -> dict[str, Any]:
    git = workflow.git
    if git:
        # The deploy key's path says where a secret lives; the API does not need it.
        git = {k: mask_credentials(v) if k == "repo" else v for k, v in git.items() if k != "deploy_key"}
    return {
        "name": workflow.name,
        "backend": workflow.backend.name,
        "command": workflow.command,
        "max_concurrent": workflow.effective_max_concurrent,
        "description": workflow.description,
        "git": git,
    }


@require_GET
def workflow_list(request: HttpRequest) -> HttpResponse:
    workflows = list(usable(request.user, Workflow.objects.select_related("backend")))
    if wants_json(request):
        return JsonResponse([workflow_json(w) for w in workflows], safe=False)
    context = {"workflows": workflows, "no_access": None if workflows else no_access(request.user)}
    return render(request, "workflows/list.html", context)


@require_http_methods(["GET", "POST"])  # GET: the page with the button; POST runs the command
def workflow_dry_run(request: HttpRequest, name: str) -> HttpResponse:
    return dry_run_page(request, ConfiguredWorkflow(usable_workflow(request.user, name)))


@require_POST
def workflow_run(request: HttpRequest, name: str) -> HttpResponse:
    return run_document(request, ConfiguredWorkflow(usable_workflow(request.user, name)))


# -- audit trail (staff) -------------------------------------------------------------------

AUDIT_PER_PAGE = 100


@require_GET
def audit_trail(request: HttpRequest) -> HttpResponse:
    require_staff(request.user, "the audit trail")
    action = request.GET.get("action", "")
    events = AuditEvent.objects.all()
    if action:
        events = events.filter(action=action)
    page = Paginator(events, AUDIT_PER_PAGE).get_page(request.GET.get("page"))
    context = {"page": page, "action": action, "actions": AuditEvent.Action.choices}
    return render(request, "runs/audit/list.html", context)
