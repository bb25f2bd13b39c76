"""Display helpers for ScriptHut pages: durations, state colours and labels, progress bars,
numbers and sizes. The rules behind what they show live elsewhere (runs.costing.efficiency, runs.web.pages)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone

from backends.base import JobState
from backends.units import format_duration
from runs.costing.efficiency import Efficiency, efficiency_of
from runs.engine import states
from runs.engine.states import TaskState
from runs.engine.waiting import shown_reason as task_reason
from runs.models import Task
from runs.numbers import gigabytes, short_number
from sources.git import mask_credentials

register = template.Library()

# Order of the segments in a stacked progress bar: finished work first, then the
# work in flight, then what is still waiting, so the bar "fills" left to right.
PROGRESS_ORDER: tuple[str, ...] = (
    TaskState.COMPLETED,
    TaskState.FAILED,
    TaskState.DEP_FAILED,
    TaskState.CANCELLED,
    TaskState.RUNNING,
    TaskState.SUBMITTED,
    TaskState.SUBMITTING,
    JobState.QUEUED,  # external jobs' scheduler state
    TaskState.PENDING,
    JobState.UNKNOWN,
)

# Labels for states where the raw value reads badly.
STATE_LABELS: dict[str, str] = {TaskState.DEP_FAILED: "dep failed"}


@dataclass
class Segment:
    state: str
    count: int
    percent: float

    @property
    def label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)


@register.filter
def duration(seconds: float | None) -> str:
    """``1h 02m`` / ``3m 05s`` / ``42s``; empty when unknown."""
    return format_duration(seconds)


@register.filter
def since(start: datetime | None, end: datetime | None = None) -> str:
    """Duration between two datetimes (until now when ``end`` is empty)."""
    if start is None:
        return ""
    return format_duration(((end or timezone.now()) - start).total_seconds())


@register.filter
def seconds_since(start: datetime | None) -> int:
    """Whole seconds from ``start`` to now: where scripthut.js counts on from (``data-elapsed``)."""
    return int((timezone.now() - start).total_seconds()) if start else 0


@register.filter
def shown_reason(task: Task) -> str:
    """The reason a task's row shows (its own, or its run's waiting reason)."""
    return task_reason(task)


@register.filter
def state_class(state: str | None) -> str:
    """CSS class of a task, run or job state badge (``st-running`` ...)."""
    return f"st-{(state or 'unknown').lower().replace(' ', '_')}"


@register.filter
def state_label(state: str | None) -> str:
    value = (state or "unknown").lower()
    return STATE_LABELS.get(value, value)


@register.filter
def get_item(mapping: Mapping[str, Any] | None, key: str) -> Any:
    """``counts|get_item:"running"``: dict lookup with a variable key; 0 when absent."""
    if not mapping:
        return 0
    return mapping.get(key, 0)


def progress_segments(counts: Mapping[str, int]) -> list[Segment]:
    total = sum(counts.values())
    if not total:
        return []
    return [
        Segment(state, counts[state], counts[state] * 100.0 / total) for state in PROGRESS_ORDER if counts.get(state)
    ]


@register.inclusion_tag("runs/web/_progress.html")
def progress_bar(counts: Mapping[str, int], size: str = "") -> dict[str, Any]:
    """A stacked bar with one coloured segment per task state."""
    total = sum(counts.values())
    done = sum(counts.get(s, 0) for s in states.FINISHED)
    return {
        "segments": progress_segments(counts),
        "total": total,
        "done": done,
        "size": size,
    }


@register.inclusion_tag("runs/web/_count_chips.html")
def count_chips(counts: Mapping[str, int]) -> dict[str, Any]:
    """Small ``3 running · 2 completed`` chips, in progress-bar order, non-zero only."""
    return {"segments": progress_segments(counts)}


# -- resource use of finished tasks: the rules are in runs.costing.efficiency ------------------


@register.filter
def mem_gb(mb: float | None) -> str:
    """Megabytes as a short number of gigabytes (``4``, ``0.3``); empty when unknown."""
    return gigabytes(mb)


@register.filter
def efficiency(task: Task) -> Efficiency | None:
    """Resource use of a finished task; None while it runs or when the backend does not measure it."""
    return efficiency_of(task)


@register.filter
def efficiency_class(task: Task) -> str:
    """``eff-low`` (red: CPUs or memory mostly unused, or out of memory), ``eff-ok``, or empty when unknown."""
    result = efficiency_of(task)
    return result.css if result else ""


# -- sizes ------------------------------------------------------------------------------


@register.filter
def disk_size(mb: float | None) -> str:
    """``12.5 MB``, ``3.2 GB``, ``1.1 TB``; empty when unknown."""
    if mb is None:
        return ""
    value = float(mb)
    for unit in ("MB", "GB"):
        if value < 1024:
            return f"{short_number(value)} {unit}"
        value /= 1024
    return f"{short_number(value)} TB"


@register.filter
def masked_url(url: str | None) -> str:
    """A git URL with any password or token in it shown as ``***``."""
    return mask_credentials(url or "")
