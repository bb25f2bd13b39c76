"""Start the schedules that are due, exactly once per due time.

Beat's ``fire_schedules`` (runs.schedules.celery_tasks) and the embedded ticker call
:func:`fire_due`. Each due schedule is handled in one transaction that moves its
``next_fire_at`` on from the value it read (a conditional UPDATE: a second dispatcher
doing the same finds nothing to move and does nothing) and creates the run: a dispatcher
killed in between rolls both back, and the next one fires that time, once.

A portal that was down fires the times it missed once on return, and the run says so.
A schedule whose owner may no longer use its backend, workflow or source is turned off
with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from backends.models import Backend
from runs.access import AccessDenied, shared_refusal
from runs.actions import GitCheckout, create_run, require_identity
from runs.audit import trail as audit
from runs.models import AuditEvent, Run, Schedule, Workflow
from runs.schedules.timing import latest_fire, next_fire
from runs.workflows.command import fetch_tasks
from runs.workflows.parse import WorkflowError
from sources.sync import source_git, source_tasks, verify_checkout

log = logging.getLogger("runs.schedules")

# A due time handled later than this (the portal was down, or a queued run waited) is said
# to be late on the run it starts.
LATE_SECONDS = 120
QUEUED = "queued: "  # the last outcome of a due time that waits for the last run (overlap: queue)


def fire_due(now: datetime | None = None) -> list[str]:
    """Handle every enabled schedule whose due time has come; what each did."""
    now = now or timezone.now()
    due = Schedule.objects.filter(enabled=True, next_fire_at__lte=now).select_related(
        "owner", "workflow__backend", "source__backend"
    )
    outcomes = []
    for schedule in due:
        try:
            outcome = fire(schedule, now)
        except Exception:  # rolled back: the next dispatch tries this time again; the others go on
            log.exception("schedule %s could not be fired", schedule.name)
            continue
        if outcome:
            outcomes.append(outcome)
    return outcomes


def fire(schedule: Schedule, now: datetime) -> str:
    """Handle ``schedule``'s due time (``next_fire_at``) at ``now``; empty if there was
    nothing to do (another dispatcher did it, or a queued time still waits).

    What the run needs (the workflow's command run, the source's file read) is fetched
    first, outside the transaction: a slow command holds no lock. Then one transaction
    claims the due time and creates the run."""
    due = schedule.next_fire_at
    assert due is not None  # noqa: S101  (only due schedules come here)
    last = last_run(schedule)
    waiting = last is not None and not last.is_finished
    if waiting and last is not None and schedule.overlap == Schedule.Overlap.QUEUE:
        held = f"{QUEUED}run {last.pk} is still {last.status}"
        if schedule.last_outcome != held:  # shown on /schedules
            Schedule.objects.filter(pk=schedule.pk).update(last_outcome=held)
        return ""  # fires once its last run has finished
    queued = schedule.last_outcome.startswith(QUEUED)
    scheduled_for, missed = latest_fire(schedule.cron, schedule.timezone, due, now)
    if waiting and last is not None and schedule.overlap == Schedule.Overlap.SKIP:
        launch: Launch | str = f"skipped: run {last.pk} was still {last.status}"
    else:
        launch = prepare(schedule)
    with transaction.atomic():
        claimed = Schedule.objects.filter(pk=schedule.pk, enabled=True, next_fire_at=due).update(
            next_fire_at=next_fire(schedule.cron, schedule.timezone, now),
            last_fired_for=scheduled_for,
            last_fired_at=now,
        )
        if not claimed:
            return ""
        if isinstance(launch, str):
            outcome = stop(schedule, launch.removeprefix(STOP)) if launch.startswith(STOP) else launch
        else:
            outcome = create(schedule, launch, lateness(schedule, scheduled_for, now, missed, queued=queued))
        Schedule.objects.filter(pk=schedule.pk).update(last_outcome=outcome)
    log.info("schedule %s (%s): %s", schedule.name, scheduled_for.isoformat(), outcome)
    return outcome


def last_run(schedule: Schedule) -> Run | None:
    return Run.objects.filter(schedule=schedule).order_by("-created_at").first()


def lateness(schedule: Schedule, scheduled_for: datetime, now: datetime, missed: int, *, queued: bool) -> str:
    """The run's warning when it starts late; empty when on time."""
    if (now - scheduled_for).total_seconds() <= LATE_SECONDS and not missed:
        return ""
    zone = schedule.timezone
    why = "after the previous run finished" if queued else "after the portal was down"
    text = f"scheduled for {local(scheduled_for, zone)}, started at {local(now, zone)} ({zone}) {why}"
    return text + (f"; {missed} earlier scheduled time(s) were not run" if missed else "")


def local(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


@dataclass
class Launch:
    """What ``create_run`` needs, fetched before the transaction."""

    backend: Backend
    payload: str
    workflow_name: str
    workflow: Workflow | None
    git: GitCheckout | None
    max_concurrent: int | None


STOP = "stop: "  # prefix of prepare()'s answer when the owner may not run the schedule any more


def prepare(schedule: Schedule) -> Launch | str:
    """Fetch the tasks as the owner; else why not (``STOP`` + the refusal, or ``failed: ...``)."""
    owner = schedule.owner
    target = schedule.workflow or schedule.source
    assert target is not None  # noqa: S101  (the table's constraint)
    refusal = shared_refusal(owner, target) if owner.is_active else f"user {owner.username} is inactive"
    if refusal:
        return STOP + refusal
    try:
        if schedule.workflow:
            workflow = schedule.workflow
            require_identity(workflow.backend, owner)
            text, git = fetch_tasks(workflow, owner)
            return Launch(workflow.backend, text, workflow.name, workflow, git, workflow.max_concurrent)
        source = schedule.source
        assert source is not None  # noqa: S101
        verify_checkout(source)
        text = source_tasks(source, schedule.file)
        return Launch(source.backend, text, f"{source.name}/{schedule.file}", None, source_git(source), None)
    except WorkflowError as exc:
        return f"failed: {exc}"


def create(schedule: Schedule, launch: Launch, warning: str) -> str:
    """Create the run as the owner, in a savepoint: a refused run leaves the fire recorded."""
    try:
        with transaction.atomic():
            run = create_run(
                owner=schedule.owner,
                backend=launch.backend,
                payload=launch.payload,
                workflow_name=launch.workflow_name,
                max_concurrent=launch.max_concurrent,
                workflow=launch.workflow,
                git=launch.git,
            )
            run.schedule = schedule
            run.warnings = [*run.warnings, warning] if warning else run.warnings
            run.save(update_fields=["schedule", "warnings"])
    except AccessDenied as exc:
        return stop(schedule, str(exc))
    except WorkflowError as exc:
        return f"failed: {exc}"
    return f"started run {run.pk}"


def stop(schedule: Schedule, reason: str) -> str:
    """Turn ``schedule`` off: its owner may not run it any more."""
    text = f"stopped: its owner {schedule.owner.username} may not run it: {reason}"
    Schedule.objects.filter(pk=schedule.pk).update(enabled=False, stopped_reason=text)
    audit.record(AuditEvent.Action.SCHEDULE_CHANGED, f"schedule {schedule.name}", change="stopped", reason=reason)
    return text
