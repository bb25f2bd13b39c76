"""A run's cost as its page and the API show it: the total, "8/10 tasks costed", the waste,
and which prices (type, region, date). Nothing at all when pricing is off or unreadable.

Read from the sums the database keeps per run (``runs.counts.models.CostSum``) and the
stored task counts, never from the run's tasks: a 100,000-task run's cost costs what a
10-task run's does."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Sum

from runs.costing.estimate import PriceBook, price_book
from runs.models import CostSum, TaskCount

MICRO = Decimal("0.000001")


@dataclass(frozen=True)
class RunCost:
    total: Decimal
    waste: Decimal | None  # None: no costed task had efficiency data
    costed: int
    tasks: int
    price_type: str
    region: str
    prices_date: datetime | None


def run_costs(run_ids: Iterable[str], book: PriceBook | None = None) -> dict[str, RunCost]:
    """The cost of each of these runs that has tasks, in two queries of stored sums; empty when pricing is off."""
    ids = list(run_ids)
    book = book or price_book()
    if book is None or not ids:
        return {}
    sizes = TaskCount.objects.filter(run_id__in=ids).order_by().values_list("run_id").annotate(n=Sum("n"))
    sums = {row.run_id: row for row in CostSum.objects.filter(run_id__in=ids)}
    found = {}
    for run_id, tasks in sizes:
        if not tasks:
            continue
        row = sums.get(run_id) or CostSum(run_id=run_id)
        found[run_id] = RunCost(
            total=row.cost_micro_usd * MICRO,
            waste=row.waste_micro_usd * MICRO if row.wasted else None,
            costed=row.costed,
            tasks=tasks,
            price_type=book.price_type,
            region=book.region,
            prices_date=book.prices_date,
        )
    return found


def run_cost(run_id: str) -> RunCost | None:
    return run_costs([run_id]).get(run_id)
