"""A run's attempts: the first launch and each relaunch, for the run page.

``Run.relaunches`` records every relaunch (who, when, how many tasks) and the active time
of the attempt it closed; this turns it into one row per attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from runs.models import Run


@dataclass(frozen=True)
class Attempt:
    number: int
    started_at: datetime | None  # the first start, or the relaunch
    seconds: float | None  # active time; of the current attempt, so far
    by: str  # who relaunched it ("" for the first launch)
    tasks: int | None  # how many tasks a relaunch queued again
    current: bool


def attempts(run: Run) -> list[Attempt]:
    """Every attempt of ``run``, first to current; empty for a run never relaunched."""
    if not run.relaunches:
        return []
    closed = [r["previous_seconds"] for r in run.relaunches]
    rows = [Attempt(1, run.started_at, closed[0], "", None, False)]
    for number, relaunch in enumerate(run.relaunches, start=2):
        at = datetime.fromisoformat(relaunch["at"])
        current = number == run.attempt
        if current:
            seconds = max(0.0, ((run.finished_at or timezone.now()) - at).total_seconds())
        else:
            seconds = closed[number - 1]
        rows.append(Attempt(number, at, seconds, relaunch.get("by", ""), relaunch.get("tasks"), current))
    return rows
