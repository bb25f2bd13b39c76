"""Display helpers for ScriptHut pages: durations, state colours, progress bars, efficiency."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone

from backends.units import format_duration, parse_memory_mb

register = template.Library()

# Order of the segments in a stacked progress bar: finished work first, then the
# work in flight, then what is still waiting, so the bar "fills" left to right.
PROGRESS_ORDER: tuple[str, ...] = (
    "completed",
    "failed",
    "dep_failed",
    "cancelled",
    "running",
    "submitted",
    "submitting",
    "queued",  # external jobs' scheduler state
    "pending",
    "unknown",
)

# Labels for states where the raw value reads badly.
STATE_LABELS = {"dep_failed": "dep failed"}


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


@register.inclusion_tag("runs/_progress.html")
def progress_bar(counts: Mapping[str, int], size: str = "") -> dict[str, Any]:
    """A stacked bar with one coloured segment per task state."""
    total = sum(counts.values())
    done = sum(counts.get(s, 0) for s in ("completed", "failed", "dep_failed", "cancelled"))
    return {
        "segments": progress_segments(counts),
        "total": total,
        "done": done,
        "size": size,
    }


@register.inclusion_tag("runs/_counts.html")
def state_counts(counts: Mapping[str, int]) -> dict[str, Any]:
    """Small ``3 running · 2 completed`` chips, in progress-bar order, non-zero only."""
    return {"segments": progress_segments(counts)}


# -- resource use of finished tasks ----------------------------------------------------

LOW_USE = 0.25  # below this share of the CPUs or memory requested, a task asked for too much
FINISHED_STATES = ("completed", "failed", "cancelled", "dep_failed")
# Slurm's OUT_OF_MEMORY (spelled out by the backend), the kernel's OOM killer, PBS messages.
_OOM = re.compile(r"out[ _-]?of[ _-]?memory|\boom\b|oom[ _-]?kill", re.IGNORECASE)


def _number(value: float) -> str:
    """``4``, ``3.5``, ``0.3``, ``0.05``, ``12.5``, ``256``: few digits, no trailing zeros."""
    if value >= 100:
        return f"{value:.0f}"
    text = f"{value:.1f}" if value >= 0.1 or value == 0 else f"{value:.2f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@register.filter
def mem_gb(mb: float | None) -> str:
    """Megabytes as a short number of gigabytes (``4``, ``0.3``); empty when unknown."""
    if mb is None:
        return ""
    return _number(max(mb, 0) / 1024)


def requested_mb(memory: str | None) -> int | None:
    try:
        return parse_memory_mb(memory or "")
    except ValueError:
        return None


@dataclass
class Efficiency:
    """How much of what a task asked for it used: CPU share and peak vs requested memory."""

    cpu: float | None  # 0..1
    used_mb: float | None
    requested_mb: int | None
    oom: bool

    @property
    def known(self) -> bool:
        return self.cpu is not None or self.used_mb is not None or self.oom

    @property
    def cpu_percent(self) -> str:
        if self.cpu is None:
            return ""
        percent = self.cpu * 100
        return "<1" if 0 < percent < 0.5 else f"{percent:.0f}"

    @property
    def cpu_width(self) -> float:
        return min(100.0, max(0.0, (self.cpu or 0) * 100))

    @property
    def mem_share(self) -> float | None:
        if self.used_mb is None or not self.requested_mb:
            return None
        return self.used_mb / self.requested_mb

    @property
    def mem_width(self) -> float:
        return min(100.0, max(0.0, (self.mem_share or 0) * 100))

    @property
    def low_cpu(self) -> bool:
        return self.cpu is not None and self.cpu < LOW_USE

    @property
    def low_mem(self) -> bool:
        share = self.mem_share
        return share is not None and share < LOW_USE

    @property
    def bad(self) -> bool:
        return self.low_cpu or self.low_mem or self.oom

    @property
    def css(self) -> str:
        return "eff-low" if self.bad else "eff-ok"

    @property
    def unit(self) -> str:
        """MB when under a gigabyte was requested, else GB."""
        return "MB" if self.requested_mb is not None and self.requested_mb < 1024 else "GB"

    def _in_unit(self, mb: float | None) -> str:
        if mb is None:
            return ""
        return _number(mb) if self.unit == "MB" else mem_gb(mb)

    @property
    def used(self) -> str:
        return self._in_unit(self.used_mb)

    @property
    def requested(self) -> str:
        return self._in_unit(self.requested_mb)

    @property
    def mem_percent(self) -> str:
        share = self.mem_share
        if share is None:
            return ""
        return "<1" if 0 < share < 0.005 else f"{share * 100:.0f}"

    @property
    def memory(self) -> str:
        """``0.3/4 GB`` (``100/512 MB`` under a gigabyte requested); peak alone when the request is unknown."""
        if self.used_mb is None:
            return ""
        if self.requested_mb is None:
            return f"{self.used} {self.unit}"
        return f"{self.used}/{self.requested} {self.unit}"

    @property
    def problems(self) -> list[str]:
        found = []
        if self.oom:
            found.append("ran out of memory: request more")
        if self.low_cpu:
            found.append(f"used under {LOW_USE:.0%} of its CPUs: request fewer")
        if self.low_mem:
            found.append(f"peak memory under {LOW_USE:.0%} of the request: request less")
        return found

    @property
    def title(self) -> str:
        """Tooltip: the figures spelled out, and why the cell is red."""
        lines = []
        if self.cpu is not None:
            lines.append(f"CPU efficiency {self.cpu * 100:.1f}% (CPU time / (elapsed × CPUs))")
        if self.used_mb is not None:
            lines.append(
                f"peak memory {_number(self.used_mb)} MB"
                + (f" of {self.requested_mb} MB requested" if self.requested_mb else "")
            )
        lines += self.problems
        return "; ".join(lines)


@register.filter
def finished(task: Any) -> bool:
    return getattr(task, "state", "") in FINISHED_STATES


@register.filter
def efficiency(task: Any) -> Efficiency | None:
    """Resource use of a finished task; None while it runs or when the backend does not measure it."""
    if getattr(task, "state", "") not in FINISHED_STATES:
        return None
    result = Efficiency(
        cpu=task.cpu_efficiency,
        used_mb=task.max_rss_mb,
        requested_mb=requested_mb(task.memory),
        oom=bool(_OOM.search(task.reason or "")),
    )
    return result if result.known else None


@register.filter
def efficiency_class(task: Any) -> str:
    """``eff-low`` (red: CPUs or memory mostly unused, or out of memory), ``eff-ok``, or empty when unknown."""
    result = efficiency(task)
    return result.css if result else ""


# -- backends' cluster information -----------------------------------------------------

PARTITIONS_SHOWN = 8


@dataclass
class PartitionView:
    name: str
    default: bool
    up: bool
    state: str
    nodes: int
    allocated: int
    idle: int
    other: int
    total: int

    def _percent(self, part: int) -> float:
        return part * 100.0 / self.total if self.total else 0.0

    @property
    def allocated_percent(self) -> float:
        return self._percent(self.allocated)

    @property
    def other_percent(self) -> float:
        return self._percent(self.other)

    @property
    def idle_percent(self) -> float:
        return self._percent(self.idle)


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


@register.filter
def partitions(cluster_info: Mapping[str, Any] | None) -> list[PartitionView]:
    """The ``partitions`` of a backend's ``cluster_info``, tolerant of missing keys."""
    rows = (cluster_info or {}).get("partitions") or []
    result = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        available = str(row.get("available", "up") or "up").lower()
        result.append(
            PartitionView(
                name=str(row.get("partition", "?")),
                default=bool(row.get("default")),
                up=available in ("up", ""),
                state=str(row.get("state", "")),
                nodes=_int(row.get("nodes")),
                allocated=_int(row.get("cpus_allocated")),
                idle=_int(row.get("cpus_idle")),
                other=_int(row.get("cpus_other")),
                total=_int(row.get("cpus_total")),
            )
        )
    return result


@register.filter
def first_partitions(rows: list[PartitionView]) -> list[PartitionView]:
    return rows[:PARTITIONS_SHOWN]


@register.filter
def more_partitions(rows: list[PartitionView]) -> list[PartitionView]:
    return rows[PARTITIONS_SHOWN:]


@register.filter
def disk_size(mb: float | int | str | None) -> str:
    """``12.5 MB``, ``3.2 GB``, ``1.1 TB``; empty when unknown."""
    if mb is None:
        return ""
    try:
        value = float(mb)
    except ValueError:
        return ""
    for unit in ("MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{_number(value)} {unit}"
        value /= 1024
    return ""  # unreachable
