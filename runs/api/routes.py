"""REST API (django-ninja): runs, sources and backends, authenticated by API token.

Every error body is ``{"error": "<message>"}``; validation problems are 400 (not
ninja's 422) and name the field path. Clients send ``Authorization: Token <key>``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from inspect import iscoroutinefunction
from typing import Any, cast

from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import User
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotAllowed
from django.urls import URLPattern, URLResolver
from django.utils.http import urlencode
from ninja import NinjaAPI, Query, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import APIKeyHeader

from backends.models import Backend
from runs.access import AccessDenied, usable, usable_backends, visible_run, visible_runs
from runs.actions import RunStateError, cancel_run, create_run, relaunch_run
from runs.api.schemas import (
    BackendOut,
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
from runs.web.pages import RunRow, run_rows, task_rows
from runs.workflows.parse import WorkflowError
from scripthut_site.input_guard import too_big_message
from sources.models import Source

log = logging.getLogger("runs.api.routes")

# -- auth ------------------------------------------------------------------------------


class TokenAuth(APIKeyHeader):
    param_name = "Authorization"
    openapi_description = 'Send "Authorization: Token <key>"; only a SHA-256 of the key is stored.'

    def authenticate(self, request: HttpRequest, key: str | None) -> User:
        if not key:
            raise AuthenticationError(message='missing Authorization header; send "Authorization: Token <key>"')
        scheme, _, raw = key.strip().partition(" ")
        raw = raw.strip()
        if scheme.lower() != "token" or not raw:
            raise AuthenticationError(message='Authorization header must be "Token <key>"')
        # runs.api.token_auth.ApiTokenBackend, behind django-axes' lockout check (429 when locked out).
        user = authenticate(request, api_token=raw)
        if not isinstance(user, User):
            raise AuthenticationError(message="invalid API token")
        return user


class ScriptHutAPI(NinjaAPI):
    """NinjaAPI whose URLs skip LoginRequiredMiddleware (they use token auth) and whose
    405s are JSON like every other error."""

    @property
    def urls(self) -> tuple[list[URLResolver | URLPattern], str, str]:
        patterns, app_name, namespace = super().urls
        _adapt(patterns)
        return patterns, app_name, namespace


def _adapt(patterns: list[URLResolver | URLPattern]) -> None:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            _adapt(pattern.url_patterns)
            continue
        login_not_required(pattern.callback)
        if not iscoroutinefunction(pattern.callback):
            pattern.callback = _json_not_allowed(pattern.callback)


def _json_not_allowed(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    # ninja answers a wrong method with a plain-text 405 that no exception handler sees.
    @wraps(view)  # keeps csrf_exempt and login_required
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allowed = response["Allow"]
            response = _error(request, 405, f"method {request.method} not allowed; use {allowed}")
            response["Allow"] = allowed
        return response

    return wrapper


api = ScriptHutAPI(
    title="ScriptHut API",
    version="1",
    description='Start and follow batch-job workflow runs. Errors are `{"error": "..."}`.',
    urls_namespace="api",
    auth=TokenAuth(),
)


def _caller(request: HttpRequest) -> User:
    return cast(User, cast(Any, request).auth)  # set by TokenAuth


# -- errors: always {"error": "..."} ---------------------------------------------------


def _error(request: HttpRequest, status: int, message: str) -> HttpResponse:
    return api.create_response(request, {"error": message}, status=status)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return _error(request, 400, "; ".join(_describe(err) for err in exc.errors))


def _describe(err: dict[str, Any]) -> str:
    loc = [str(part) for part in err.get("loc", ())]
    # ninja puts the parameter name after "body" (body.payload.x): clients only see body.x.
    if len(loc) >= 2 and loc[0] == "body" and loc[1] == "payload":
        del loc[1]
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{'.'.join(loc)}: {message[:1].lower()}{message[1:]}"


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # ninja reports an unparsable body as a bare "Cannot parse request body"; say why.
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        return _error(request, 400, f"malformed JSON body: {exc.__cause__}")
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        return _error(request, 400, "malformed JSON body: nested too deeply")
    return _error(request, exc.status_code, exc.message)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, str(exc) or "not found")


@api.exception_handler(WorkflowError)
def _workflow_error(request: HttpRequest, exc: WorkflowError) -> HttpResponse:
    body = {"error": str(exc), "problems": [p.as_dict() for p in exc.details]}
    return api.create_response(request, body, status=400)


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    # A body without Content-Length (chunked) is only measured as it is read, here.
    return _error(request, 413, too_big_message(request))


@api.exception_handler(AccessDenied)
def _access_denied(request: HttpRequest, exc: AccessDenied) -> HttpResponse:
    return _error(request, 403, str(exc))


@api.exception_handler(RunStateError)
def _run_state_error(request: HttpRequest, exc: RunStateError) -> HttpResponse:
    return _error(request, 409, str(exc))


@api.exception_handler(Exception)
def _server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("API error on %s %s", request.method, request.path)
    return _error(request, 500, "internal server error")


# -- helpers ---------------------------------------------------------------------------


def _summary(row: RunRow) -> dict[str, Any]:
    return run_shape(row.run, row.cost) | {"max_concurrent": row.run.max_concurrent, "counts": counts_shape(row.counts)}


def _detail(request: HttpRequest, run: Run, page: TaskPage) -> dict[str, Any]:
    total = Task.objects.filter(run=run).count()
    end = page.offset + page.limit
    following = f"{request.path}?{urlencode({'limit': page.limit, 'offset': end})}" if end < total else None
    cost = run_cost(run.pk)  # None when pricing is off: then no task shows a cost either
    return run_shape(run, cost) | {
        "error": run.error,
        "warnings": run.warnings,
        "task_count": total,
        "next": following,
        # The same rows as the run page (only the columns shown: not every script), a page at a time.
        "tasks": [task_shape(t, priced=cost is not None) for t in task_rows(run)[page.offset : end]],
    }


# -- endpoints -------------------------------------------------------------------------


@api.post(
    "/runs",
    response={201: RunCreatedOut, 400: WorkflowErrorOut, 401: ErrorOut, 403: ErrorOut, 413: ErrorOut},
    tags=["runs"],
)
def start_run(request: HttpRequest, payload: RunCreateIn) -> Status[dict[str, Any]]:
    """Validate a workflow and start it as a new run; an invalid one creates nothing, and a
    backend the caller may not use is 403 with the reason.

    An invalid workflow is a 400 listing every problem in `problems` (task, field,
    message); what the run starts without (unknown fields) is in `warnings`. A body
    over the portal's size limit (SCRIPTHUT_MAX_BODY_MB) is a 413."""
    backend = Backend.objects.filter(name=payload.backend).first()
    if backend is None:
        known = ", ".join(usable_backends(_caller(request)).values_list("name", flat=True)) or "none"
        raise HttpError(400, f"backend: unknown backend {payload.backend!r} (known: {known})")
    run = create_run(
        owner=_caller(request),
        backend=backend,
        payload=payload.workflow,
        workflow_name=payload.name,
        max_concurrent=payload.max_concurrent,
        notify=payload.notify,
    )
    return Status(201, {"id": run.pk, "status": run.status, "warnings": run.warnings})


@api.get("/runs", response={200: RunPageOut, 400: ErrorOut, 401: ErrorOut}, tags=["runs"])
def list_runs(request: HttpRequest, filters: Query[RunFilter]) -> dict[str, Any]:
    """The caller's runs (staff: everyone's), newest first."""
    runs = visible_runs(_caller(request)).select_related("backend", "owner")
    if filters.status:
        runs = runs.filter(status=filters.status)
    page = list(runs.order_by("-created_at", "-pk")[filters.offset : filters.offset + filters.limit])
    return {"count": runs.count(), "items": [_summary(row) for row in run_rows(page)]}


@api.get("/runs/{run_id}", response={200: RunDetailOut, 400: ErrorOut, 401: ErrorOut, 404: ErrorOut}, tags=["runs"])
def get_run(request: HttpRequest, run_id: str, page: Query[TaskPage]) -> dict[str, Any]:
    """One run with a page of its tasks, in workflow order.

    `limit` tasks (default 1000, at most 10,000) from `offset` on; `task_count` is the
    number of tasks in the run and `next` the URL of the next page (null on the last)."""
    return _detail(request, visible_run(_caller(request), run_id), page)


@api.post(
    "/runs/{run_id}/cancel",
    response={200: RunStatusOut, 401: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    tags=["runs"],
)
def cancel(request: HttpRequest, run_id: str) -> dict[str, Any]:
    """Cancel a run: pending tasks at once, submitted and running jobs on the next tick."""
    run = visible_run(_caller(request), run_id)
    cancel_run(run, by=_caller(request))
    run.refresh_from_db(fields=["status"])
    return {"id": run.pk, "status": run.status}


@api.post(
    "/runs/{run_id}/relaunch",
    response={200: RelaunchOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    tags=["runs"],
)
def relaunch(request: HttpRequest, run_id: str) -> dict[str, Any]:
    """Re-queue a finished run's failed, cancelled and dep_failed tasks."""
    run = visible_run(_caller(request), run_id)
    requeued = relaunch_run(run, by=_caller(request))
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
        for s in usable(_caller(request), Source.objects.select_related("backend"))
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
        for b in usable_backends(_caller(request))
    ]
