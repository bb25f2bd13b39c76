"""API operations on workflow documents: sources (sync, list their workflow files, dry-run and
run one) and configured workflows (list, dry-run, run). They go through the same documents as
the pages (runs.web.dry_run.ConfiguredWorkflow, sources.views.SourceFile), so a dry run or a
run says and does what the page's would.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest
from ninja import Status

from runs.access import usable, usable_source, usable_workflow
from runs.api.base import api, caller
from runs.api.idempotent import OPENAPI as IDEMPOTENT
from runs.api.idempotent import created
from runs.api.schemas import (
    DocumentRunIn,
    DryRunOut,
    ErrorOut,
    RunCreatedOut,
    SourceFileIn,
    SourceRunIn,
    SyncOut,
    WorkflowErrorOut,
    WorkflowOut,
)
from runs.models import Workflow
from runs.web.dry_run import ConfiguredWorkflow, WorkflowDocument, task_json
from runs.web.views import workflow_json
from runs.workflows.parse import WorkflowError
from sources.models import Source
from sources.sync import sync_source as sync_the_source
from sources.views import SourceFile

RUN_RESPONSES = {201: RunCreatedOut, 400: WorkflowErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut}
DRY_RUN_RESPONSES = {200: DryRunOut, 400: WorkflowErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut}


def _dry_run(document: WorkflowDocument) -> dict[str, Any]:
    try:
        result = document.dry_run()
    except WorkflowError as exc:
        if document.missing(exc):
            raise Http404(str(exc)) from exc
        raise
    tasks = [task_json(t) for t in result.tasks]
    return {"workflow": document.name, "backend": document.backend.name, "count": len(tasks), "tasks": tasks}


def _files(source: Source) -> dict[str, Any]:
    return {
        "name": source.name,
        "synced_at": source.synced_at,
        "synced_sha": source.synced_sha,
        "sync_error": source.sync_error,
        "workflow_files": source.workflow_files,
    }


# -- sources -------------------------------------------------------------------------------


@api.post(
    "/sources/{name}/sync",
    response={200: SyncOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 502: SyncOut},
    tags=["sources"],
)
def sync_source(request: HttpRequest, name: str) -> Status[dict[str, Any]]:
    """Check out the source's branch head (git) and refresh its workflow files. A failed sync is
    a 502 whose `sync_error` says why; the source keeps its last good commit and files."""
    source = sync_the_source(usable_source(caller(request), name))
    return Status(502 if source.sync_error else 200, _files(source))


@api.get(
    "/sources/{name}/workflows",
    response={200: SyncOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    tags=["sources"],
)
def list_source_workflows(request: HttpRequest, name: str) -> dict[str, Any]:
    """The workflow files found by the source's last sync."""
    return _files(usable_source(caller(request), name))


@api.post("/sources/{name}/dry-run", response=DRY_RUN_RESPONSES, tags=["sources"])
def dry_run_source_file(request: HttpRequest, name: str, payload: SourceFileIn) -> dict[str, Any]:
    """The tasks a run of one of the source's workflow files would have, or every problem it
    has (400); nothing is stored. A file the source does not list is a 404."""
    return _dry_run(SourceFile(usable_source(caller(request), name), payload.file))


@api.post("/sources/{name}/runs", response=RUN_RESPONSES, tags=["sources"], openapi_extra=IDEMPOTENT)
def start_source_run(request: HttpRequest, name: str, payload: SourceRunIn) -> Status[dict[str, Any]]:
    """Start a run of one of the source's workflow files (at its synced commit).

    Send an `Idempotency-Key` header to make a retry safe: the same key within 24 hours
    returns the first run instead of starting another."""
    document = SourceFile(usable_source(caller(request), name), payload.file)
    if payload.file not in document.source.workflow_files:
        raise Http404(f"{payload.file!r} is not a workflow file of source {name!r} (sync the source to refresh it)")
    return created(request, lambda: document.start(caller(request), payload.max_concurrent, payload.notify))


# -- configured workflows ------------------------------------------------------------------


@api.get("/workflows", response={200: list[WorkflowOut], 401: ErrorOut}, tags=["workflows"])
def list_workflows(request: HttpRequest) -> list[dict[str, Any]]:
    """The configured workflows the caller may run."""
    return [workflow_json(w) for w in usable(caller(request), Workflow.objects.select_related("backend"))]


@api.post("/workflows/{name}/dry-run", response=DRY_RUN_RESPONSES, tags=["workflows"])
def dry_run_workflow(request: HttpRequest, name: str) -> dict[str, Any]:
    """Run the workflow's command and return the tasks a run would have, or every problem (400);
    nothing is stored."""
    return _dry_run(ConfiguredWorkflow(usable_workflow(caller(request), name)))


@api.post("/workflows/{name}/runs", response=RUN_RESPONSES, tags=["workflows"], openapi_extra=IDEMPOTENT)
def start_workflow_run(request: HttpRequest, name: str, payload: DocumentRunIn) -> Status[dict[str, Any]]:
    """Start a run of a configured workflow (its command's output). `Idempotency-Key`: as for start_run."""
    document = ConfiguredWorkflow(usable_workflow(caller(request), name))
    return created(request, lambda: document.start(caller(request), payload.max_concurrent, payload.notify))
