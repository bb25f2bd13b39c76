"""The usage page's sums: cost, waste and CPU-hours of ended tasks per user, backend and month.

All sums are SQL aggregates over the costs stored on the tasks. Who sees what is the
runs' rule (``runs.access.visible_tasks``): staff everyone's tasks, a user those of their own
runs and of the runs shared with their groups; budgets (``visible_budgets``): staff every one,
a user those that count their tasks.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import CharField, Count, ExpressionWrapper, F, FloatField, QuerySet, Sum
from django.db.models.functions import Cast, Substr
from django.utils import timezone

from runs.access import is_staff, visible_budgets, visible_tasks
from runs.costing.budgets import month_start, statuses
from runs.engine.sql import chunks
from runs.models import Run, Task, Viewer

DEFAULT_MONTHS = 12
MAX_MONTHS = 120
CPU_SECONDS = ExpressionWrapper(F("elapsed_seconds") * F("cpus"), output_field=FloatField())
SUMS: dict[str, Any] = {
    "cost_sum": Sum("cost"),  # not "cost": that names the field Count("cost") counts
    "waste_sum": Sum("waste_cost"),
    "cpu_seconds": Sum(CPU_SECONDS),
    "tasks": Count("id"),
    "costed": Count("cost"),
}


def ended_tasks(user: Viewer, months: int) -> QuerySet[Task]:
    """Tasks that ended in the last ``months`` calendar months (this one included) that ``user`` may see."""
    since = month_start()
    for _ in range(months - 1):
        since = month_start(since - timedelta(days=1))
    return visible_tasks(user).filter(finished_at__gte=since).order_by()


@dataclass
class Sums:
    cost: Decimal | None = None
    waste: Decimal | None = None
    cpu_seconds: float = 0.0
    tasks: int = 0
    costed: int = 0

    def add(self, row: dict[str, Any]) -> None:
        if row["cost_sum"] is not None:
            self.cost = (self.cost or Decimal(0)) + row["cost_sum"]
        if row["waste_sum"] is not None:
            self.waste = (self.waste or Decimal(0)) + row["waste_sum"]
        self.cpu_seconds += row["cpu_seconds"] or 0
        self.tasks += row["tasks"]
        self.costed += row["costed"]


@dataclass(frozen=True)
class UsageRow:
    label: str
    cost: Decimal | None
    waste: Decimal | None
    cpu_hours: float
    tasks: int
    costed: int
    cost_width: float = 0.0  # percent of the largest cost in the table
    waste_width: float = 0.0
    hours_width: float = 0.0


# The month of a UTC timestamp as text, "2026-11", without a per-row function call: both
# SQLite's stored text and PostgreSQL's text form (the connection is in UTC) start with it.
MONTH = Substr(Cast("finished_at", CharField()), 1, 7)


@dataclass
class Usage:
    """The sums of some tasks per (month, user, backend): one grouped query over the tasks alone."""

    cells: dict[tuple[str, str, str], Sums]

    @classmethod
    def of(cls, tasks: QuerySet[Task]) -> Usage:
        found = list(tasks.values("run_id", month=MONTH).annotate(**SUMS))
        runs = {}
        for chunk in chunks(sorted({row["run_id"] for row in found})):
            runs.update(
                {
                    pk: (user, backend)
                    for pk, user, backend in Run.objects.filter(pk__in=chunk).values_list(
                        "pk", "owner__username", "backend__name"
                    )
                }
            )
        cells: dict[tuple[str, str, str], Sums] = {}
        for row in found:
            user, backend = runs[row["run_id"]]
            cells.setdefault((row["month"], user, backend), Sums()).add(row)
        return cls(cells)

    def by(self, key: str) -> list[UsageRow]:
        """One row per user, backend or month (newest month first, else the largest cost first)."""
        part = {"month": 0, "user": 1, "backend": 2}[key]
        rolled: dict[str, Sums] = {}
        for cell, sums in self.cells.items():
            rolled.setdefault(cell[part], Sums()).add(_as_row(sums))
        top_cost = max((s.cost or 0 for s in rolled.values()), default=0) or 1
        top_hours = max((s.cpu_seconds for s in rolled.values()), default=0) or 1
        rows = [
            UsageRow(
                label=label,
                cost=s.cost,
                waste=s.waste,
                cpu_hours=s.cpu_seconds / 3600,
                tasks=s.tasks,
                costed=s.costed,
                cost_width=float((s.cost or 0) / top_cost * 100),
                waste_width=float((s.waste or 0) / top_cost * 100),
                hours_width=s.cpu_seconds / top_hours * 100,
            )
            for label, s in rolled.items()
        ]
        if key == "month":
            return sorted(rows, key=lambda r: r.label, reverse=True)
        return sorted(rows, key=lambda r: (-(r.cost or 0), -r.cpu_hours, r.label))

    def total(self) -> UsageRow:
        total = Sums()
        for sums in self.cells.values():
            total.add(_as_row(sums))
        return UsageRow("all", total.cost, total.waste, total.cpu_seconds / 3600, total.tasks, total.costed)


def _as_row(sums: Sums) -> dict[str, Any]:
    return {
        "cost_sum": sums.cost,
        "waste_sum": sums.waste,
        "cpu_seconds": sums.cpu_seconds,
        "tasks": sums.tasks,
        "costed": sums.costed,
    }


def usage_context(user: Viewer, months: int) -> dict[str, Any]:
    found = Usage.of(ended_tasks(user, months))
    return {
        "months": months,
        "everyone": is_staff(user),
        "total": found.total(),
        "by_user": found.by("user"),
        "by_backend": found.by("backend"),
        "by_month": found.by("month"),
        "budgets": statuses(visible_budgets(user)),
        "this_month": month_start(),
        "now": timezone.now(),
    }


CSV_HEADER = ["month", "user", "backend", "tasks", "costed_tasks", "cpu_hours", "cost_usd", "waste_usd"]


def usage_csv(user: Viewer, months: int, priced: bool) -> str:
    """One line per month, user and backend; the cost columns are empty when pricing is off."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for (month, owner, backend), sums in sorted(Usage.of(ended_tasks(user, months)).cells.items()):
        cost = sums.cost if priced and sums.cost is not None else ""
        waste = sums.waste if priced and sums.waste is not None else ""
        hours = f"{sums.cpu_seconds / 3600:.4f}"
        writer.writerow([month, _cell(owner), _cell(backend), sums.tasks, sums.costed, hours, cost, waste])
    return out.getvalue()


def _cell(text: str) -> str:
    """A name a spreadsheet would run as a formula (``=cmd|...``) is quoted as text."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
