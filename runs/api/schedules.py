"""API operations on schedules (runs.schedules): list, make, change, delete. The keys are
the config's (``schedules:``); the owner is the caller unless staff name another. Who sees
which schedule is runs.access.visible_schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Schema, Status
from pydantic import ConfigDict

from runs.access import visible_schedule, visible_schedules
from runs.api.base import api, caller
from runs.api.schemas import ErrorOut, WorkflowErrorOut
from runs.schedules.edit import save_schedule, with_last_runs
from runs.shapes import schedule_shape

TAGS = ["schedules"]


class ScheduleIn(Schema):
    """A schedule's settings; on a change, only the keys given change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    workflow: str | None = None
    source: str | None = None
    file: str | None = None
    cron: str | None = None
    timezone: str | None = None
    overlap: str | None = None
    owner: str | None = None
    enabled: bool | None = None


class LastRunOut(Schema):
    id: str
    status: str


class ScheduleOut(Schema):
    name: str
    workflow: str | None
    source: str | None
    file: str | None
    cron: str
    timezone: str
    overlap: str
    owner: str
    enabled: bool
    stopped_reason: str
    next_fire_at: datetime | None
    last_fired_for: datetime | None
    last_fired_at: datetime | None
    last_outcome: str
    last_run: LastRunOut | None


# 403: a read-only token (runs.api.token_auth); a bad value, owner or access is a 400 naming it.
CHANGE_RESPONSES = {400: WorkflowErrorOut, 401: ErrorOut, 403: ErrorOut}


def _given(payload: ScheduleIn) -> dict[str, Any]:
    return payload.model_dump(exclude_unset=True)


def _shape(request: HttpRequest, name: str) -> dict[str, Any]:
    [(schedule, last)] = with_last_runs(visible_schedules(caller(request)).filter(name=name))
    return schedule_shape(schedule, last)


@api.get("/schedules", response={200: list[ScheduleOut], 401: ErrorOut}, tags=TAGS)
def list_schedules(request: HttpRequest) -> list[dict[str, Any]]:
    """The caller's schedules (staff: everyone's), with next and last fire times and the last run."""
    return [schedule_shape(s, last) for s, last in with_last_runs(visible_schedules(caller(request)))]


@api.post("/schedules", response={201: ScheduleOut, **CHANGE_RESPONSES}, tags=TAGS)
def create_schedule(request: HttpRequest, payload: ScheduleIn) -> Status[dict[str, Any]]:
    """Make a schedule; every problem is named in one 400."""
    schedule = save_schedule(_given(payload), by=caller(request))
    return Status(201, _shape(request, schedule.name))


@api.patch("/schedules/{name}", response={200: ScheduleOut, 404: ErrorOut, **CHANGE_RESPONSES}, tags=TAGS)
def change_schedule(request: HttpRequest, name: str, payload: ScheduleIn) -> dict[str, Any]:
    """Change the keys given (``enabled: true`` starts a stopped schedule again, from now)."""
    schedule = save_schedule(_given(payload), by=caller(request), schedule=visible_schedule(caller(request), name))
    return _shape(request, schedule.name)


@api.delete("/schedules/{name}", response={204: None, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut}, tags=TAGS)
def delete_schedule(request: HttpRequest, name: str) -> Status[None]:
    """Delete it; the runs it started stay, no longer linked to it."""
    visible_schedule(caller(request), name).delete()
    return Status(204, None)
