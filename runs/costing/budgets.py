"""Monthly budgets: a user's (their own tasks) or a group's (its members' tasks).

A run beyond a budget still starts (the cost is an estimate); when a run is created and
when tasks are costed, each owner whose budget's month spend has reached 80 % or 100 %
is told, once per threshold and month (a ``BudgetAlert`` row, written in the caller's
transaction, records that they were). Months are calendar months in UTC, by the day a
task finished.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Q, Sum
from django.utils import timezone

from runs.costing.estimate import price_book
from runs.costing.models import Budget, BudgetAlert
from runs.models import Run, Task
from runs.notify.outbox import enqueue

log = logging.getLogger("runs.costing")

THRESHOLDS = (80, 100)  # percent of the budget at which its users are told


def month_start(now: datetime | None = None) -> datetime:
    now = (now or timezone.now()).astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def budget_tasks(budget: Budget) -> Any:
    """The tasks a budget counts: its user's, or its group's members'."""
    if budget.user_id:
        return Task.objects.filter(run__owner_id=budget.user_id)
    return Task.objects.filter(run__owner__groups=budget.group_id)


def spent(budget: Budget, since: datetime) -> Decimal:
    total = budget_tasks(budget).filter(finished_at__gte=since).aggregate(total=Sum("cost"))["total"]
    return total or Decimal(0)


def budgets_of(user_id: int) -> list[Budget]:
    """The budgets that count ``user_id``'s tasks: their own and their groups'."""
    return list(
        Budget.objects.filter(Q(user_id=user_id) | Q(group__user=user_id)).select_related("user", "group").distinct()
    )


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    spent: Decimal

    @property
    def percent(self) -> float:
        return float(self.spent / self.budget.monthly_usd * 100)

    @property
    def width(self) -> float:
        return min(100.0, self.percent)

    @property
    def css(self) -> str:
        return "over" if self.percent >= 100 else "near" if self.percent >= THRESHOLDS[0] else "ok"

    @property
    def name(self) -> str:
        return f"group {self.budget.group}" if self.budget.group_id else f"{self.budget.user}"


def statuses(budgets: Iterable[Budget], now: datetime | None = None) -> list[BudgetStatus]:
    since = month_start(now)
    return [BudgetStatus(budget, spent(budget, since)) for budget in budgets]


def check_owners(owner_ids: Iterable[int], run: Run | None = None) -> int:
    """Tell each owner whose budgets crossed a threshold this month (once); the number told."""
    owners = set(owner_ids)
    if not owners or not Budget.objects.exists() or price_book() is None:
        return 0  # no budgets, or pricing is off: costs (hence budgets) are not shown
    month = month_start()
    told = 0
    for owner_id in sorted(owners):
        for status in statuses(budgets_of(owner_id)):
            for threshold in THRESHOLDS:
                if status.percent >= threshold:
                    told += _tell_once(status, owner_id, threshold, month.date(), run)
    return told


def check_tasks(tasks: Iterable[Task]) -> int:
    """After tasks were costed: check their runs' owners."""
    run_ids = {t.run_id for t in tasks if t.cost is not None}
    if not run_ids or not Budget.objects.exists():
        return 0
    return check_owners(Run.objects.filter(pk__in=run_ids).values_list("owner_id", flat=True))


def _tell_once(status: BudgetStatus, user_id: int, threshold: int, month: date, run: Run | None) -> int:
    budget = status.budget
    _, created = BudgetAlert.objects.get_or_create(
        budget=budget,
        user_id=user_id,
        month=month,
        threshold=threshold,
        defaults={"spent_usd": status.spent.quantize(Decimal("0.01"))},
    )
    if not created:
        return 0
    subject = f"{status.name}'s budget: {threshold}% reached in {month:%B %Y}"
    payload = {
        "budget_id": budget.pk,
        "for": status.name,
        "month": f"{month:%Y-%m}",
        "threshold_percent": threshold,
        "spent_usd": str(status.spent.quantize(Decimal("0.01"))),
        "budget_usd": str(budget.monthly_usd),
        "run_id": run.pk if run else None,
    }
    key = f"budget:{budget.pk}:user:{user_id}:{month:%Y-%m}:{threshold}"
    notify(User.objects.get(pk=user_id), subject, payload, key, run)
    return 1


def notify(user: User, subject: str, payload: dict[str, Any], dedupe_key: str, run: Run | None) -> None:
    """The notify lane's outbox sends it (email, webhook) once the caller's transaction commits."""
    log.info("budget alert for %s: %s", user, subject)
    enqueue(user=user, event="budget", subject=subject, payload=payload, dedupe_key=dedupe_key, run=run)
