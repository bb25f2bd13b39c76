"""A run's cost as its page and the API show it: the total, "8/10 tasks costed", the waste,
and which prices (type, region, date). Nothing at all when pricing is off or unreadable."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Sum

from runs.costing.estimate import PriceBook, price_book
from runs.models import Task


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
    """The cost of each of these runs, in one aggregate query; empty when pricing is off."""
    ids = list(run_ids)
    book = book or price_book()
    if book is None or not ids:
        return {}
    rows = (
        Task.objects.filter(run_id__in=ids)
        .order_by()
        .values("run_id")
        .annotate(total=Sum("cost"), waste=Sum("waste_cost"), costed=Count("cost"), tasks=Count("id"))
    )
    found = {
        row["run_id"]: RunCost(
            total=row["total"] or Decimal(0),
            waste=row["waste"],
            costed=row["costed"],
            tasks=row["tasks"],
            price_type=book.price_type,
            region=book.region,
            prices_date=book.prices_date,
        )
        for row in rows
    }
    return found


def run_cost(run_id: str) -> RunCost | None:
    return run_costs([run_id]).get(run_id)
