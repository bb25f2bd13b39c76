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
from datetime import datetime
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from runs.access import AccessDenied, shared_refusal
from runs.audit import trail as audit
from runs.models import AuditEvent, Run, Schedule
from runs.schedules.timing import latest_fire, next_fire
from runs.workflows.command import start_run
from runs.workflows.parse import WorkflowError
from sources.sync import start_source_run

log = logging.getLogger("runs.schedules")

# A due time handled later than this (the portal was down, or a queued run waited) is said
# to be late on the run it starts.
LATE_SECONDS = 120


def fire_due(now: datetime | None = None) -> list[str]:
    """Handle every enabled schedule whose due time has come; what each did."""
    now = now or timezone.now()
    due = Schedule.objects.filter(enabled=True, next_fire_at__lte=now).select_related(
        "owner", "workflow__backend", "source__backend"
    )
    return [outcome for schedule in due if (outcome := fire(schedule, now))]


def fire(schedule: Schedule, now: datetime) -> str:
    """Handle ``schedule``'s due time (``next_fire_at``) at ``now``; empty if there was
    nothing to do (another dispatcher did it, or a queued time still waits)."""
    due = schedule.next_fire_at
    assert due is not None  # noqa: S101  (only due schedules come here)
    last = last_run(schedule)
    waiting = last is not None and not last.is_finished
    if waiting and schedule.overlap == Schedule.Overlap.QUEUE:
        return ""  # fires once its last run has finished
    scheduled_for, missed = latest_fire(schedule.cron, schedule.timezone, due, now)
    with transaction.atomic():
        claimed = Schedule.objects.filter(pk=schedule.pk, enabled=True, next_fire_at=due).update(
            next_fire_at=next_fire(schedule.cron, schedule.timezone, now),
            last_fired_for=scheduled_for,
            last_fired_at=now,
        )
        if not claimed:
            return ""
        if waiting and schedule.overlap == Schedule.Overlap.SKIP:
            outcome = f"skipped: run {last.pk} was still {last.status}" if last else ""
        else:
            outcome = _start(schedule, lateness(schedule, scheduled_for, now, missed, queued=waiting))
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


def _start(schedule: Schedule, warning: str) -> str:
    """Create the run as the owner (a savepoint: a refused run leaves the fire recorded)."""
    owner = schedule.owner
    target = schedule.workflow or schedule.source
    assert target is not None  # noqa: S101  (the table's constraint)
    refusal = shared_refusal(owner, target) if owner.is_active else f"user {owner.username} is inactive"
    if refusal:
        return stop(schedule, refusal)
    try:
        with transaction.atomic():
            if schedule.workflow:
                run = start_run(schedule.workflow, owner)
            else:
                assert schedule.source is not None  # noqa: S101
                run = start_source_run(schedule.source, schedule.file, owner)
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
