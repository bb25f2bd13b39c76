"""Owners on a per_user backend, whose tick works for one owner at a time (see
:func:`runs.engine.tick.tick_each_owner`): who has work there, and what their pending
tasks say while they cannot be submitted."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Min, Q

from backends.models import Backend
from runs.engine.states import ACTIVE, UNFINISHED, Step, TaskState, move
from runs.models import Task


def owners_with_work(backend: Backend) -> list[int]:
    """Owners of unfinished tasks on ``backend``; the one with the fewest active tasks
    first (then the one with the oldest run), so that a slot that frees goes to the user
    with the least of the backend, as when shared (:mod:`runs.engine.fair_share`)."""
    rows = (
        Task.objects.on(backend)
        .filter(state__in=UNFINISHED)
        .order_by()
        .values("run__owner_id")
        .annotate(active=Count("id", filter=Q(state__in=ACTIVE)), oldest=Min("run__created_at"))
        .order_by("active", "oldest", "run__owner_id")
    )
    return [row["run__owner_id"] for row in rows]


def hold_pending(backend: Backend, owner: int, reason: str) -> None:
    """Say why ``owner``'s pending tasks on ``backend`` wait; they stay pending, and
    tasks that already say so are not written again."""
    waiting = Task.objects.on(backend, owner).filter(state=TaskState.PENDING).exclude(reason=reason)
    tasks = list(waiting.only("pk", "run_id", "state", "reason"))
    for task in tasks:
        task.reason = reason
    with transaction.atomic():
        move(tasks, Step.CLAIM, ["reason"])
