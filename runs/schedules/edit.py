"""Making and changing schedules: the API, the pages and the config import call
:func:`save_schedule`, so a schedule is checked the same way whichever way it comes in.
Every problem is named at once (a ``WorkflowError`` of ``Problem``s: a 400), nothing is
saved when there is one."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import OuterRef, QuerySet, Subquery

from runs.access import is_staff, shared_refusal
from runs.models import Run, Schedule, Workflow
from runs.schedules.timing import cron_problem, timezone_problem
from runs.workflows.parse import Problem, WorkflowError
from sources.models import Source

FIELDS = ("name", "workflow", "source", "file", "cron", "timezone", "overlap", "owner", "enabled")
NAME_LENGTH = Schedule._meta.get_field("name").max_length or 100


def with_last_runs(schedules: QuerySet[Schedule]) -> list[tuple[Schedule, Run | None]]:
    """Each schedule and its last run (two queries)."""
    latest = Run.objects.filter(schedule=OuterRef("pk")).order_by("-created_at").values("pk")[:1]
    rows = list(schedules.annotate(last_run_id=Subquery(latest)))
    runs = Run.objects.in_bulk([row.last_run_id for row in rows if row.last_run_id])  # type: ignore[attr-defined]
    return [(row, runs.get(row.last_run_id)) for row in rows]  # type: ignore[attr-defined]


def values_of(schedule: Schedule) -> dict[str, Any]:
    """A schedule as the API and the config write it."""
    return {
        "name": schedule.name,
        "workflow": schedule.workflow.name if schedule.workflow else None,
        "source": schedule.source.name if schedule.source else None,
        "file": schedule.file or None,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "overlap": schedule.overlap,
        "owner": schedule.owner.username,
        "enabled": schedule.enabled,
    }


class Checked:
    """The values of a schedule after checking, with the objects they name."""

    def __init__(self, merged: dict[str, Any]):
        self.merged = merged
        self.problems: list[Problem] = []
        self.workflow: Workflow | None = None
        self.source: Source | None = None
        self.owner: User | None = None

    def problem(self, field: str, message: str) -> None:
        self.problems.append(Problem(message, field=field))


def save_schedule(values: dict[str, Any], *, by: User | None, schedule: Schedule | None = None) -> Schedule:
    """Create a schedule (``schedule`` None) or change it with ``values`` (keys of FIELDS);
    ``by``: who asks (None: the config import, which may name any owner)."""
    merged = (values_of(schedule) if schedule else {"timezone": "UTC", "overlap": "skip", "enabled": True}) | values
    gives_source = bool(values.get("source") or values.get("file"))
    if schedule is not None and bool(values.get("workflow")) != gives_source:  # a change: one replaces the other
        merged |= {"source": None, "file": None} if values.get("workflow") else {"workflow": None}
    if schedule is None and by is not None:
        merged.setdefault("owner", by.username)
    checked = Checked(merged)
    _check_name(checked, schedule)
    _check_target(checked)
    _check_timing(checked)
    _check_owner(checked, by)
    if checked.problems:
        raise WorkflowError(checked.problems)
    return _store(checked, schedule)


def _check_name(checked: Checked, schedule: Schedule | None) -> None:
    name = checked.merged.get("name")
    if not isinstance(name, str) or not name.strip():
        checked.problem("name", "name is required")
    elif len(name) > NAME_LENGTH or "/" in name:
        checked.problem("name", f"name must be at most {NAME_LENGTH} characters, without '/'")
    elif Schedule.objects.filter(name=name).exclude(pk=schedule.pk if schedule else 0).exists():
        checked.problem("name", f"a schedule named {name!r} already exists")


def _check_target(checked: Checked) -> None:
    workflow, source, file = (checked.merged.get(key) for key in ("workflow", "source", "file"))
    if bool(workflow) == bool(source):
        checked.problem("workflow", "give either workflow, or source and file")
        return
    if workflow:
        checked.workflow = Workflow.objects.select_related("backend").filter(name=workflow).first()
        if checked.workflow is None:
            checked.problem("workflow", f"no workflow named {workflow!r}")
        return
    checked.source = Source.objects.select_related("backend").filter(name=source).first()
    if checked.source is None:
        checked.problem("source", f"no source named {source!r}")
    elif not file:
        checked.problem("file", f"file is required with source (one of the workflow files of {source!r})")
    elif file not in checked.source.workflow_files:
        checked.problem("file", f"{file!r} is not a workflow file of source {source!r} (sync the source first)")


def _check_timing(checked: Checked) -> None:
    cron, zone, overlap = (checked.merged.get(key) for key in ("cron", "timezone", "overlap"))
    problem = cron_problem(cron) if isinstance(cron, str) else "cron is required"
    if problem:
        checked.problem("cron", problem)
    problem = timezone_problem(zone) if isinstance(zone, str) else "timezone must be a time zone name"
    if problem:
        checked.problem("timezone", problem)
    if overlap not in Schedule.Overlap.values:
        checked.problem("overlap", f"overlap {overlap!r} is not one of {', '.join(Schedule.Overlap.values)}")
    if not isinstance(checked.merged.get("enabled"), bool):
        checked.problem("enabled", "enabled must be true or false")


def _check_owner(checked: Checked, by: User | None) -> None:
    username = checked.merged.get("owner")
    checked.owner = User.objects.filter(username=username, is_active=True).first() if username else None
    if checked.owner is None:
        checked.problem("owner", f"no active user named {username!r}" if username else "owner is required")
        return
    if by is not None and not is_staff(by) and checked.owner.pk != by.pk:
        checked.problem("owner", "only staff may make or change a schedule that runs as someone else")
    target = checked.workflow or checked.source
    refusal = shared_refusal(checked.owner, target) if target else ""
    if refusal:
        checked.problem("owner", f"its owner {username!r} may not run it: {refusal}")


def _store(checked: Checked, schedule: Schedule | None) -> Schedule:
    merged = checked.merged
    schedule = schedule or Schedule()
    timing_changed = (schedule.cron, schedule.timezone) != (merged["cron"].strip(), merged["timezone"])
    turned_on = merged["enabled"] and not schedule.enabled
    schedule.name, schedule.cron, schedule.timezone = merged["name"], merged["cron"].strip(), merged["timezone"]
    schedule.workflow, schedule.source, schedule.file = checked.workflow, checked.source, merged.get("file") or ""
    assert checked.owner is not None  # noqa: S101  (checked)
    schedule.owner, schedule.overlap, schedule.enabled = checked.owner, merged["overlap"], merged["enabled"]
    if timing_changed or turned_on or schedule.pk is None:
        schedule.next_fire_at = None  # armed again from now (Schedule.save)
    if turned_on:
        schedule.stopped_reason = ""
    with transaction.atomic():
        schedule.save()
    return schedule
