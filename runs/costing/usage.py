"""The usage page's sums: cost, waste and CPU-hours of ended tasks per user, backend and month.

All sums are SQL aggregates over the costs stored on the tasks. Who sees what is the
runs' rule: staff everyone's tasks, a user their own.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, ExpressionWrapper, F, FloatField, QuerySet, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from runs.costing.budgets import budgets_of, month_start, statuses
from runs.costing.models import Budget
from runs.models import Task, Viewer, sees_every_run

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
KEYS: dict[str, Any] = {"user": F("run__owner__username"), "backend": F("run__backend__name"), "month": None}


def ended_tasks(user: Viewer, months: int) -> QuerySet[Task]:
    """Tasks that ended in the last ``months`` calendar months (this one included) that ``user`` may see."""
    since = month_start()
    for _ in range(months - 1):
        since = month_start(since - timedelta(days=1))
    return Task.objects.visible_to(user).filter(finished_at__gte=since).order_by()


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


def _label(value: Any) -> str:
    return f"{value:%Y-%m}" if isinstance(value, datetime) else str(value)


def rows_by(tasks: QuerySet[Task], key: str) -> list[UsageRow]:
    """One row per user, backend or month (newest month first, else the largest cost first)."""
    expression = TruncMonth("finished_at") if key == "month" else KEYS[key]
    found = list(tasks.values(key=expression).annotate(**SUMS))
    top_cost = max((row["cost_sum"] or 0 for row in found), default=0) or 1
    top_hours = max((row["cpu_seconds"] or 0 for row in found), default=0) or 1
    rows = [
        UsageRow(
            label=_label(row["key"]),
            cost=row["cost_sum"],
            waste=row["waste_sum"],
            cpu_hours=(row["cpu_seconds"] or 0) / 3600,
            tasks=row["tasks"],
            costed=row["costed"],
            cost_width=float((row["cost_sum"] or 0) / top_cost * 100),
            waste_width=float((row["waste_sum"] or 0) / top_cost * 100),
            hours_width=(row["cpu_seconds"] or 0) / top_hours * 100,
        )
        for row in found
    ]
    if key == "month":
        return sorted(rows, key=lambda r: r.label, reverse=True)
    return sorted(rows, key=lambda r: (-(r.cost or 0), -r.cpu_hours, r.label))


def totals(tasks: QuerySet[Task]) -> UsageRow:
    row = tasks.aggregate(**SUMS)
    return UsageRow(
        label="all",
        cost=row["cost_sum"],
        waste=row["waste_sum"],
        cpu_hours=(row["cpu_seconds"] or 0) / 3600,
        tasks=row["tasks"],
        costed=row["costed"],
    )


def visible_budgets(user: Viewer) -> list[Budget]:
    if sees_every_run(user):
        return list(Budget.objects.select_related("user", "group").order_by("group__name", "user__username"))
    return budgets_of(int(user.pk)) if user.pk is not None else []


def usage_context(user: Viewer, months: int) -> dict[str, Any]:
    tasks = ended_tasks(user, months)
    return {
        "months": months,
        "everyone": sees_every_run(user),
        "total": totals(tasks),
        "by_user": rows_by(tasks, "user"),
        "by_backend": rows_by(tasks, "backend"),
        "by_month": rows_by(tasks, "month"),
        "budgets": statuses(visible_budgets(user)),
        "this_month": month_start(),
        "now": timezone.now(),
    }


CSV_HEADER = ["month", "user", "backend", "tasks", "costed_tasks", "cpu_hours", "cost_usd", "waste_usd"]


def usage_csv(user: Viewer, months: int, priced: bool) -> str:
    """One line per month, user and backend; the cost columns are empty when pricing is off."""
    tasks = ended_tasks(user, months)
    found = tasks.values(month=TruncMonth("finished_at"), user=KEYS["user"], backend=KEYS["backend"]).annotate(**SUMS)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for row in sorted(found, key=lambda r: (r["month"], r["user"], r["backend"])):
        cost = row["cost_sum"] if priced and row["cost_sum"] is not None else ""
        waste = row["waste_sum"] if priced and row["waste_sum"] is not None else ""
        hours = f"{(row['cpu_seconds'] or 0) / 3600:.4f}"
        names = [_cell(row["user"]), _cell(row["backend"])]
        writer.writerow([_label(row["month"]), *names, row["tasks"], row["costed"], hours, cost, waste])
    return out.getvalue()


def _cell(text: str) -> str:
    """A name a spreadsheet would run as a formula (``=cmd|...``) is quoted as text."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
