"""Sources pages: list and sync sources, browse their workflow files, dry-run and run them."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from runs.access import usable, usable_source
from runs.engine.jobspec import resolve_working_dir
from runs.web.page_input import first_rows, problems_message
from runs.workflows.limits import form_max_concurrent
from runs.workflows.parse import WorkflowError
from sources.models import Source
from sources.sync import UnknownWorkflowFile, dry_run_source, source_git, start_source_run, sync_source


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
    source = usable_source(request.user, name)
    return render(request, "sources/workflows.html", {"source": source})


def _workflows_page(request: HttpRequest, source: Source, status: int) -> HttpResponse:
    return render(request, "sources/workflows.html", {"source": source}, status=status)


@require_GET
def source_dry_run(request: HttpRequest, name: str, file: str) -> HttpResponse:
    source = usable_source(request.user, name)
    context: dict[str, object] = {"source": source, "file": file, "rows": [], "error": "", "problems": []}
    status = 200
    try:
        tasks = dry_run_source(source, file)
    except WorkflowError as exc:
        context.update(error=str(exc), problems=exc.problems, problem_count=exc.count)
        status = 404 if isinstance(exc, UnknownWorkflowFile) else 200
    else:
        shown, counts = first_rows(tasks)
        # Show where each task will really run: relative dirs land inside the checkout
        # (on AWS Batch, the one each job makes in its container).
        git = source_git(source)
        clone_dir = git.clone_dir if git else ""
        context.update(counts, rows=[(t, resolve_working_dir(t.definition.working_dir, clone_dir)) for t in shown])
    return render(request, "sources/dry_run.html", context, status=status)


@require_POST
def source_run(request: HttpRequest, name: str, file: str) -> HttpResponse:
    source = usable_source(request.user, name)
    try:
        max_concurrent = form_max_concurrent(request.POST.get("max_concurrent", ""))
    except ValueError as exc:  # what was typed is wrong: say so with the page, as a 400
        messages.error(request, f"Cannot run {source.name}/{file}: {exc}")
        return _workflows_page(request, source, status=400)
    try:
        # LoginRequiredMiddleware guarantees a real user here.
        run = start_source_run(source, file, request.user, max_concurrent=max_concurrent)  # type: ignore[arg-type]
    except WorkflowError as exc:
        messages.error(request, problems_message(f"Cannot run {source.name}/{file}", exc))
        return redirect("source_workflows", name=source.name)
    messages.success(request, f"Started run {run.pk} of {run.workflow_name}.")
    return redirect("run_detail", run_id=run.pk)
