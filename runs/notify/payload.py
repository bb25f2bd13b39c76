"""What a run notification says: run id, name, status, counts, cost, link."""

from __future__ import annotations

import os
from typing import Any

from django.db.models import Count, Sum
from django.urls import reverse

from scripthut_site.deployment import public_url


def run_link(run_id: str) -> str:
    """The run page's address: absolute with ``SCRIPTHUT_PUBLIC_URL``, else a path."""
    return public_url(os.environ) + reverse("run_detail", args=[run_id])


def run_cost(run: Any) -> float | None:
    """The run's cost so far, or None while tasks have no ``cost`` field (the cost lane adds it)."""
    task_model = run.tasks.model
    if not any(f.name == "cost" for f in task_model._meta.concrete_fields):
        return None
    total = run.tasks.aggregate(total=Sum("cost"))["total"]
    return None if total is None else float(total)


def run_payload(run: Any, event: str) -> dict[str, Any]:
    counts = dict(run.tasks.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
    return {
        "event": event,
        "run_id": run.pk,
        "name": run.workflow_name,
        "status": run.status,
        "counts": {state: counts[state] for state in sorted(counts)},
        "total": sum(counts.values()),
        "cost": run_cost(run),
        "link": run_link(run.pk),
        "owner": run.owner.get_username(),
    }
