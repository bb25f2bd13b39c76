"""Sources pages: list and sync sources, browse their workflow files, dry-run and run them
(the dry-run page and run form are runs.web.dry_run's, shared with configured workflows)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from runs.access import usable, usable_source
from runs.models import Run
from runs.web.dry_run import DryRun, WorkflowDocument, dry_run_page, run_document
from runs.workflows.parse import WorkflowError
from sources.models import Source
from sources.sync import UnknownWorkflowFile, dry_run_source, source_git, start_source_run, sync_source

DEFAULT_MAX_CONCURRENT = Run._meta.get_field("max_concurrent").default  # what a run gets when none is asked


class SourceFile(WorkflowDocument):
    """One workflow file of a source, read at its synced commit (git) or from its path."""

    def __init__(self, source: Source, file: str) -> None:
        self.source, self.file = source, file
        self.name, self.backend = f"{source.name}/{file}", source.backend
        self.list_url = reverse("source_workflows", args=[source.name])
        self.crumbs = [("Sources", reverse("source_list")), (source.name, self.list_url)]
        self.run_url = reverse("source_run", args=[source.name, file])
        self.max_concurrent = DEFAULT_MAX_CONCURRENT

    def dry_run(self) -> DryRun:
        return DryRun(dry_run_source(self.source, self.file), source_git(self.source))

    def start(self, owner: User, max_concurrent: int | None) -> Run:
        return start_source_run(self.source, self.file, owner, max_concurrent=max_concurrent)

    def list_page(self, request: HttpRequest, status: int) -> HttpResponse:
        return _workflows_page(request, self.source, status)

    def missing(self, error: WorkflowError) -> bool:
        return isinstance(error, UnknownWorkflowFile)


@require_GET
def source_list(request: HttpRequest) -> HttpResponse:
    sources = usable(request.user, Source.objects.select_related("backend"))
    return render(request, "sources/list.html", {"sources": sources})


@require_POST
def source_sync(request: HttpRequest, name: str) -> HttpResponse:
    source = sync_source(usable_source(request.user, name))
    if source.sync_error:
        messages.error(request, f"Sync of {source.name} failed: {source.sync_error}")
    else:
        at = f" at {source.synced_sha[:12]}" if source.synced_sha else ""
        messages.success(request, f"Synced {source.name}{at}: {len(source.workflow_files)} workflow file(s).")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = reverse("source_list")
    return redirect(back)


@require_GET
def source_workflows(request: HttpRequest, name: str) -> HttpResponse:
    return _workflows_page(request, usable_source(request.user, name), status=200)


def _workflows_page(request: HttpRequest, source: Source, status: int) -> HttpResponse:
    context = {"source": source, "max_concurrent": DEFAULT_MAX_CONCURRENT}
    return render(request, "sources/workflows.html", context, status=status)


@require_http_methods(["GET", "POST"])  # only reads the file: a GET does; POST as a workflow's dry run
def source_dry_run(request: HttpRequest, name: str, file: str) -> HttpResponse:
    return dry_run_page(request, SourceFile(usable_source(request.user, name), file))


@require_POST
def source_run(request: HttpRequest, name: str, file: str) -> HttpResponse:
    return run_document(request, SourceFile(usable_source(request.user, name), file))
