"""Right-sizing advice: how much of the CPUs and memory a finished task asked for it used.

A task is flagged (red on the pages) when it used under :data:`LOW_USE` of either, or
when its backend says it ran out of memory (``Task.out_of_memory``, set by the engine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from backends.units import parse_memory_mb
from runs.models import Task
from runs.numbers import gigabytes, short_number

LOW_USE = 0.25  # below this share of the CPUs or memory requested, a task asked for too much
HEADROOM = 0.25  # advice leaves this much above what a task used


def requested_mb(memory: str | None) -> int | None:
    """The task's memory request in MB; None when it cannot be read (``"lots"``)."""
    try:
        return parse_memory_mb(memory or "")
    except ValueError:
        return None


@dataclass(frozen=True)
class Efficiency:
    """How much of what a task asked for it used: CPU share and peak vs requested memory."""

    cpu: float | None  # 0..1
    used_mb: float | None
    requested_mb: int | None
    oom: bool
    cpus: int | None = None  # requested

    @property
    def known(self) -> bool:
        return self.cpu is not None or self.used_mb is not None or self.oom

    @property
    def mem_share(self) -> float | None:
        if self.used_mb is None or not self.requested_mb:
            return None
        return self.used_mb / self.requested_mb

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
    def problems(self) -> list[str]:
        """The advice, one phrase per problem found."""
        found = []
        if self.oom:
            found.append("ran out of memory: request more")
        if self.low_cpu:
            found.append(f"used under {LOW_USE:.0%} of its CPUs: request fewer{self._cpu_hint}")
        if self.low_mem:
            found.append(f"peak memory under {LOW_USE:.0%} of the request: request less{self._mem_hint}")
        return found

    @property
    def _cpu_hint(self) -> str:
        if not self.cpus or self.cpu is None:
            return ""
        # What it used, rounded up, and at least one.
        enough = max(1, math.ceil(self.cpus * self.cpu * (1 + HEADROOM)))
        return f" ({enough} CPU{'s' if enough > 1 else ''} would do)" if enough < self.cpus else ""

    @property
    def _mem_hint(self) -> str:
        if self.used_mb is None:
            return ""
        enough = self.used_mb * (1 + HEADROOM)
        text = f"{math.ceil(enough)} MB" if enough < 1024 else f"{gigabytes(enough * 1.0)} GB"
        return f" (about {text} would do)"

    # -- the figures as the pages show them ----------------------------------------------

    @property
    def css(self) -> str:
        return "eff-low" if self.bad else "eff-ok"

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
    def mem_width(self) -> float:
        return min(100.0, max(0.0, (self.mem_share or 0) * 100))

    @property
    def mem_percent(self) -> str:
        share = self.mem_share
        if share is None:
            return ""
        return "<1" if 0 < share < 0.005 else f"{share * 100:.0f}"

    @property
    def unit(self) -> str:
        """MB when under a gigabyte was requested, else GB."""
        return "MB" if self.requested_mb is not None and self.requested_mb < 1024 else "GB"

    def _in_unit(self, mb: float | None) -> str:
        if mb is None:
            return ""
        return short_number(mb) if self.unit == "MB" else gigabytes(mb)

    @property
    def used(self) -> str:
        return self._in_unit(self.used_mb)

    @property
    def requested(self) -> str:
        return self._in_unit(self.requested_mb)

    @property
    def memory(self) -> str:
        """``0.3/4 GB`` (``100/512 MB`` under a gigabyte requested); peak alone when the request is unknown."""
        if self.used_mb is None:
            return ""
        if self.requested_mb is None:
            return f"{self.used} {self.unit}"
        return f"{self.used}/{self.requested} {self.unit}"

    @property
    def title(self) -> str:
        """Tooltip: the figures spelled out, and why the cell is red."""
        lines = []
        if self.cpu is not None:
            lines.append(f"CPU efficiency {self.cpu * 100:.1f}% (CPU time / (elapsed × CPUs))")
        if self.used_mb is not None:
            lines.append(
                f"peak memory {short_number(self.used_mb)} MB"
                + (f" of {self.requested_mb} MB requested" if self.requested_mb else "")
            )
        lines += self.problems
        return "; ".join(lines)


def efficiency_of(task: Task) -> Efficiency | None:
    """Resource use of a finished task; None while it runs or when its backend measures nothing."""
    if not task.is_finished:
        return None
    result = Efficiency(
        cpu=task.cpu_efficiency,
        used_mb=task.max_rss_mb,
        requested_mb=requested_mb(task.memory),
        oom=task.out_of_memory,
        cpus=task.cpus,
    )
    return result if result.known else None
