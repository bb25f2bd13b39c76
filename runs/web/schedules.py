"""``/schedules``: the caller's schedules (staff: everyone's) with their next and last fire
times and their last run's outcome, a form to make one (the workflows page links to it with
the workflow filled in), and buttons to turn one off or on and to delete it. The checks are
runs.schedules.edit's, as for the API and the config: every problem is named at once."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from runs.access import usable, visible_schedule, visible_schedules
from runs.models import Schedule, Workflow
from runs.schedules.edit import save_schedule, with_last_runs
from runs.workflows.parse import WorkflowError

FORM_FIELDS = ("name", "workflow", "source", "file", "cron", "timezone", "overlap", "owner")


def _form_values(request: HttpRequest) -> dict[str, Any]:
    """What the form sent, as save_schedule takes it (empty fields left out)."""
    values: dict[str, Any] = {
        key: request.POST[key].strip() for key in FORM_FIELDS if request.POST.get(key, "").strip()
    }
    values["enabled"] = request.POST.get("enabled") == "on"
    return values


@require_http_methods(["GET", "POST"])
def schedule_list(request: HttpRequest) -> HttpResponse:
    user = cast(User, request.user)  # LoginRequiredMiddleware: always signed in here
    problems: list[str] = []
    form: dict[str, Any] = {"timezone": "UTC", "overlap": "skip", "enabled": True} | {
        key: request.GET[key] for key in ("workflow", "source", "file") if request.GET.get(key)
    }
    if request.method == "POST":
        form = _form_values(request)
        try:
            schedule = save_schedule(form, by=user)
        except WorkflowError as exc:
            problems = exc.problems
        else:
            messages.success(
                request, f"Schedule {schedule.name} made; it next fires at {schedule.next_fire_at:%Y-%m-%d %H:%M} UTC."
            )
            return redirect("schedule_list")
    context = {
        "rows": with_last_runs(visible_schedules(user)),
        "workflows": usable(user, Workflow.objects.all()),
        "overlaps": Schedule.Overlap.choices,
        "form": form,
        "problems": problems,
    }
    return render(request, "runs/web/schedules.html", context, status=400 if problems else 200)


@require_POST
def schedule_toggle(request: HttpRequest, name: str) -> HttpResponse:
    schedule = visible_schedule(request.user, name)
    try:
        save_schedule({"enabled": not schedule.enabled}, by=cast(User, request.user), schedule=schedule)
    except WorkflowError as exc:  # e.g. its owner may no longer use the backend
        messages.error(request, f"Schedule {name} was not turned on: {'; '.join(exc.problems)}")
    return redirect("schedule_list")


@require_POST
def schedule_delete(request: HttpRequest, name: str) -> HttpResponse:
    visible_schedule(request.user, name).delete()
    messages.success(request, f"Schedule {name} deleted; the runs it started stay.")
    return redirect("schedule_list")
