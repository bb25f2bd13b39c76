"""A run's notifications: its first task started (opt-in), it completed, failed or was cancelled.

Called where the run's status UPDATE happens (``runs.engine.run_status``, ``runs.actions``),
inside that UPDATE's transaction.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from runs.engine.states import RunStatus
from runs.notify.models import When
from runs.notify.outbox import channels_for, write
from runs.notify.payload import run_payload, run_subject

EVENTS = {
    RunStatus.RUNNING: "run.started",
    RunStatus.COMPLETED: "run.completed",
    RunStatus.FAILED: "run.failed",
    RunStatus.CANCELLED: "run.cancelled",
}


def wanted(event: str, on: str, first_task_started: bool) -> bool:
    """Does a user with these preferences want this event?"""
    if on == When.NEVER:
        return False
    if event == "run.started":
        return first_task_started
    return on == When.ALWAYS or event == "run.failed"


def notify_status_update(run: Any, fields: dict[str, Any]) -> None:
    """``fields`` were just written to ``run`` (still holding its old values): notify if its status changed."""
    old_status = run.status
    if fields.get("status", old_status) == old_status:
        return
    for name, value in fields.items():
        setattr(run, name, value)
    run_status_changed(run, old_status)


def run_status_changed(run: Any, old_status: str) -> None:
    """Enqueue the notification the run's move from ``old_status`` to ``run.status`` calls for, if any."""
    event = EVENTS.get(RunStatus(run.status))
    if event is None or run.status == old_status:
        return
    if event == "run.started" and old_status != RunStatus.PENDING:
        return  # only the first start; a relaunch that goes back to running is not a start
    channels = channels_for(run.owner, run)
    if not wanted(event, channels.on, channels.first_task_started):
        return
    # A relaunched run ends again: the time of the ending tells the two endings apart.
    ending = "" if event == "run.started" else (run.finished_at or timezone.now()).isoformat()
    write(
        channels,
        user=run.owner,
        event=event,
        subject=run_subject(run, event),
        payload=run_payload(run, event),
        dedupe_key=f"run:{run.pk}:{event}:{ending}",
        run=run,
    )
