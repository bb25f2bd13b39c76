"""REST API operations on runs (django-ninja); the API object, its token auth and its errors
are runs.api.base's. Importing this module registers every operation: those on one task
(runs.api.tasks), on sources and workflows (runs.api.documents) and about the caller
(runs.api.account) too. Clients send ``Authorization: Token <key>``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.http import urlencode
from ninja import Query, Status
from ninja.errors import HttpError

from backends.models import Backend
from runs.access import usable, usable_backends, visible_run, visible_runs
from runs.actions import cancel_run as cancel_the_run
from runs.actions import check_run, create_run
from runs.actions import relaunch_run as relaunch_the_run
from runs.api import account, documents, schedules  # noqa: F401  (registers their operations)
from runs.api import tasks as task_operations  # noqa: F401
from runs.api.base import api, caller
from runs.api.idempotent import OPENAPI as IDEMPOTENT
from runs.api.idempotent import created
from runs.api.schemas import (
    BackendOut,
    DryRunOut,
    ErrorOut,
    RelaunchOut,
    RunCreatedOut,
    RunCreateIn,
    RunDetailOut,
    RunFilter,
    RunPageOut,
    RunStatusOut,
    SourceOut,
    TaskPage,
    WorkflowErrorOut,
)
from runs.costing.summary import run_cost
from runs.models import Run, Task
from runs.shapes import counts_shape, run_shape, task_shape
from runs.web.dashboard import active_tasks_per_backend
from runs.web.dry_run import task_json
from runs.web.pages import RunRow, run_rows, task_rows
from sources.models import Source

__all__ = ["api"]


# -- helpers ---------------------------------------------------------------------------


def _summary(row: RunRow) -> dict[str, Any]:
    return run_shape(row.run, row.cost) | {"max_concurrent": row.run.max_concurrent, "counts": counts_shape(row.counts)}


def _detail(request: HttpRequest, run: Run, page: TaskPage) -> dict[str, Any]:
    counts = Task.objects.state_counts([run.pk])[run.pk]
    total = sum(counts.values())
    end = page.offset + page.limit
    following = f"{request.path}?{urlencode({'limit': page.limit, 'offset': end})}" if end < total else None
    cost = run_cost(run.pk)  # None when pricing is off: then no task shows a cost either
    return run_shape(run, cost) | {
        "error": run.error,
        "warnings": run.warnings,
        "task_count": total,
        "counts": counts_shape(counts),
        "next": following,
        # The same rows as the run page (only the columns shown: not every script), a page at a time.
        "tasks": [task_shape(t, priced=cost is not None) for t in task_rows(run)[page.offset : end]],
    }


# -- endpoints -------------------------------------------------------------------------


def _backend(request: HttpRequest, name: str) -> Backend:
    backend = Backend.objects.filter(name=name).first()
    if backend is None:
        known = ", ".join(usable_backends(caller(request)).values_list("name", flat=True)) or "none"
        raise HttpError(400, f"backend: unknown backend {name!r} (known: {known})")
    return backend


# A path without parameters first: /runs/{run_id} would take "dry-run" for a run id.
@api.post(
    "/runs/dry-run",
    response={200: DryRunOut, 400: WorkflowErrorOut, 401: ErrorOut, 403: ErrorOut, 413: ErrorOut},
    tags=["runs"],
)
def dry_run(request: HttpRequest, payload: RunCreateIn) -> dict[str, Any]:
    """Check a start_run body as start_run would: every problem (400), a refused backend (403),
    or the tasks the run would have, with its warnings. Nothing is stored."""
    backend = _backend(request, payload.backend)
    resolved, warnings = check_run(
        owner=caller(request), backend=backend, payload=payload.workflow, max_concurrent=payload.max_concurrent
    )
    tasks = [task_json(t) for t in resolved]
    return {
        "workflow": payload.name,
        "backend": backend.name,
        "count": len(tasks),
        "warnings": warnings,
        "tasks": tasks,
    }


@api.post(
    "/runs",
    response={201: RunCreatedOut, 400: WorkflowErrorOut, 401: ErrorOut, 403: ErrorOut, 413: ErrorOut},
    tags=["runs"],
    openapi_extra=IDEMPOTENT,
)
def start_run(request: HttpRequest, payload: RunCreateIn) -> Status[dict[str, Any]]:
    """Validate a workflow and start it as a new run; an invalid one creates nothing, and a
    backend the caller may not use is 403 with the reason.

    An invalid workflow is a 400 listing every problem in `problems` (task, field,
    message); what the run starts without (unknown fields) is in `warnings`. A body over
    the portal's size limit (SCRIPTHUT_MAX_BODY_MB) is a 413.
    With an `Idempotency-Key` header, the same key within 24 hours returns the first run."""
    backend = _backend(request, payload.backend)
    return created(
        request,
        lambda: create_run(
            owner=caller(request),
            backend=backend,
            payload=payload.workflow,
            workflow_name=payload.name,
            max_concurrent=payload.max_concurrent,
            notify=payload.notify,
        ),
    )


@api.get("/runs", response={200: RunPageOut, 400: ErrorOut, 401: ErrorOut}, tags=["runs"])
def list_runs(request: HttpRequest, filters: Query[RunFilter]) -> dict[str, Any]:
    """The caller's runs (staff: everyone's), newest first."""
    runs = visible_runs(caller(request)).select_related("backend", "owner")
    if filters.status:
        runs = runs.filter(status=filters.status)
    page = list(runs.order_by("-created_at", "-pk")[filters.offset : filters.offset + filters.limit])
    return {"count": runs.count(), "items": [_summary(row) for row in run_rows(page)]}


@api.get("/runs/{run_id}", response={200: RunDetailOut, 400: ErrorOut, 401: ErrorOut, 404: ErrorOut}, tags=["runs"])
def get_run(request: HttpRequest, run_id: str, page: Query[TaskPage]) -> dict[str, Any]:
    """One run with a page of its tasks, in workflow order.

    `limit` tasks (default 1000, at most 10,000) from `offset` on; `task_count` is the
    number of tasks in the run and `next` the URL of the next page (null on the last)."""
    return _detail(request, visible_run(caller(request), run_id), page)


@api.post(
    "/runs/{run_id}/cancel",
    response={200: RunStatusOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    tags=["runs"],
)
def cancel_run(request: HttpRequest, run_id: str) -> dict[str, Any]:
    """Cancel a run: pending tasks at once, submitted and running jobs on the next tick."""
    run = visible_run(caller(request), run_id)
    cancel_the_run(run, by=caller(request))
    run.refresh_from_db(fields=["status"])
    return {"id": run.pk, "status": run.status}


@api.post(
    "/runs/{run_id}/relaunch",
    response={200: RelaunchOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    tags=["runs"],
)
def relaunch_run(request: HttpRequest, run_id: str) -> dict[str, Any]:
    """Re-queue a finished run's failed, cancelled and dep_failed tasks."""
    run = visible_run(caller(request), run_id)
    requeued = relaunch_the_run(run, by=caller(request))
    run.refresh_from_db(fields=["status"])
    return {"id": run.pk, "status": run.status, "requeued": requeued}


@api.get("/sources", response={200: list[SourceOut], 401: ErrorOut}, tags=["sources"])
def list_sources(request: HttpRequest) -> list[dict[str, Any]]:
    """Configured workflow sources and their last sync."""
    return [
        {
            "name": s.name,
            "type": s.kind,
            "backend": s.backend.name,
            "workflows_glob": s.workflows_glob,
            "synced_at": s.synced_at,
            "synced_sha": s.synced_sha,
            "sync_error": s.sync_error,
            "workflow_files": s.workflow_files,
        }
        for s in usable(caller(request), Source.objects.select_related("backend"))
    ]


@api.get("/backends", response={200: list[BackendOut], 401: ErrorOut}, tags=["backends"])
def list_backends(request: HttpRequest) -> list[dict[str, Any]]:
    """Backends with their last poll result and the slots in use."""
    active = active_tasks_per_backend()
    return [
        {
            "name": b.name,
            "type": b.kind,
            "status": b.status,
            "status_message": b.status_message,
            "last_polled_at": b.last_polled_at,
            "max_concurrent": b.max_concurrent,
            "active": active.get(b.pk, 0),
            "enabled": b.enabled,
        }
        for b in usable_backends(caller(request))
    ]
