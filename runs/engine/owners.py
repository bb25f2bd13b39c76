"""Owners on a per_user backend, whose tick works for one owner at a time (see
:func:`runs.engine.tick.run_phases_per_owner`): who has work there, and what their pending
tasks say while they cannot be submitted."""

from __future__ import annotations

from django.db.models import Min

from backends.models import Backend
from runs.engine.states import RUN_UNFINISHED, UNFINISHED
from runs.engine.waiting import say_why_runs_wait
from runs.models import Run, Task


def owners_with_work(backend: Backend) -> list[int]:
    """Owners of unfinished tasks on ``backend``; the one with the oldest run first, so
    that the backend's free slots go to runs in the order they came, as when shared."""
    rows = (
        Task.objects.on(backend)
        .filter(state__in=UNFINISHED)
        .order_by()
        .values("run__owner_id")
        .annotate(oldest=Min("run__created_at"))
        .order_by("oldest", "run__owner_id")
    )
    return [row["run__owner_id"] for row in rows]


def hold_pending(backend: Backend, owner: int, reason: str) -> None:
    """Say why ``owner``'s pending tasks on ``backend`` wait (per run); they stay pending."""
    runs = Run.objects.on(backend, owner).filter(status__in=RUN_UNFINISHED).exclude(waiting_reason=reason)
    say_why_runs_wait(dict.fromkeys(runs, reason))
