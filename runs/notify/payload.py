"""What a run notification says: run id, name, status, counts, cost, link (README, *Notifications*).

The fields are the run's and its counts' shapes (``runs.shapes``) under the names the
payload has always had: ``run_id`` is the API's ``id``, ``name`` its ``workflow_name``,
``cost`` its ``cost.total_usd``.
"""

from __future__ import annotations

import os
from typing import Any

from django.urls import reverse

from runs.costing.summary import run_cost
from runs.models import Run, Task
from runs.notify.quoting import quoted
from runs.shapes import counts_shape, run_shape
from scripthut_site.deployment import public_url


def run_subject(run: Run, event: str) -> str:
    """``ScriptHut: run "<name>" (<id>) failed``: the portal's words first, the name quoted and cut."""
    return f"ScriptHut: run {quoted(run.workflow_name)} ({run.pk}) {event.removeprefix('run.')}"


def run_link(run_id: str) -> str:
    """The run page's address: absolute with ``SCRIPTHUT_PUBLIC_URL``, else a path."""
    return public_url(os.environ) + reverse("run_detail", args=[run_id])


def run_payload(run: Run, event: str) -> dict[str, Any]:
    counts = counts_shape(Task.objects.state_counts([run.pk])[run.pk])
    shape = run_shape(run, run_cost(run.pk))  # cost None: pricing is off
    return {
        "event": event,
        "run_id": shape["id"],
        "name": shape["workflow_name"],
        "status": shape["status"],
        "counts": counts,
        "total": sum(counts.values()),
        "cost": shape["cost"]["total_usd"] if shape["cost"] else None,
        "link": run_link(run.pk),
        "owner": shape["owner"],
    }
