"""One dry-run page and one run button for every workflow document, wherever it comes from:
a configured workflow's command (:class:`ConfiguredWorkflow`, ``/workflows``) or a source's
workflow file (``sources.views.SourceFile``, ``/sources``). Both list every problem, cut a
long dry run to a page of rows, resolve working dirs in the checkout, answer JSON when asked
and offer the same run form (``templates/workflows/``).

A dry run that runs a command (a configured workflow's) is a POST with the CSRF token: a GET
of its URL only shows the page with the "Dry run" button, so no link from another site can
make the portal run a command. A source's file is only read, so its dry run is a GET.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from backends.models import Backend
from runs.access import usable
from runs.actions import GitCheckout
from runs.engine.jobspec import resolve_working_dir
from runs.models import Run, Workflow, task_group
from runs.web.page_input import first_rows, problems_message, wants_json
from runs.workflows.command import dry_run, start_run
from runs.workflows.limits import form_max_concurrent
from runs.workflows.parse import ResolvedTask, WorkflowError


@dataclass(frozen=True)
class DryRun:
    tasks: list[ResolvedTask]
    git: GitCheckout | None  # the checkout relative working dirs land in, if any


class WorkflowDocument(ABC):
    """Where a workflow's tasks come from, and where its pages link."""

    name: str  # what the pages and the new run call it
    backend: Backend
    command: str = ""  # the command whose output is the workflow, if one is run
    crumbs: list[tuple[str, str]]  # (label, url) of the pages above the dry run
    run_url: str
    max_concurrent: int  # what a run gets when the form leaves the field empty
    list_url: str  # the page listing it, where a run that could not start goes back to

    @abstractmethod
    def dry_run(self) -> DryRun:
        """The validated tasks (WorkflowError names every problem); nothing is created."""

    @abstractmethod
    def start(self, owner: User, max_concurrent: int | None) -> Run: ...

    @abstractmethod
    def list_page(self, request: HttpRequest, status: int) -> HttpResponse:
        """The page listing the document, answering a form it sent with ``status``."""

    def missing(self, error: WorkflowError) -> bool:
        """Does ``error`` say that there is no such document (a 404)?"""
        return False


class ConfiguredWorkflow(WorkflowDocument):
    """A configured workflow: its command's output, run on its backend (in its git checkout)."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.name, self.backend, self.command = workflow.name, workflow.backend, workflow.command
        self.crumbs = [("Workflows", reverse("workflow_list"))]
        self.run_url = reverse("workflow_run", args=[workflow.name])
        self.max_concurrent = workflow.max_concurrent
        self.list_url = reverse("workflow_list")

    def dry_run(self) -> DryRun:
        return DryRun(*dry_run(self.workflow))

    def start(self, owner: User, max_concurrent: int | None) -> Run:
        return start_run(self.workflow, owner, max_concurrent)

    def list_page(self, request: HttpRequest, status: int) -> HttpResponse:
        workflows = usable(request.user, Workflow.objects.select_related("backend"))
        return render(request, "workflows/list.html", {"workflows": workflows}, status=status)


def _task_json(item: ResolvedTask) -> dict[str, Any]:
    return item.definition.model_dump() | {"resolved_deps": item.resolved_deps}


def _dry_run_json(document: WorkflowDocument, result: DryRun, error: WorkflowError | None, status: int) -> JsonResponse:
    body: dict[str, Any] = {"workflow": document.name}
    if error:
        body |= {"error": str(error), "problems": [p.as_dict() for p in error.details]}
        return JsonResponse(body, status=max(status, 400))
    tasks = [_task_json(t) for t in result.tasks]
    return JsonResponse(body | {"backend": document.backend.name, "count": len(tasks), "tasks": tasks})


def _problems(error: WorkflowError | None) -> dict[str, Any]:
    if error is None:
        return {"error": "", "problems": [], "problem_count": 0}
    return {"error": str(error), "problems": error.problems, "problem_count": error.count}


def _dry_run_button(request: HttpRequest, document: WorkflowDocument) -> HttpResponse:
    """What a GET of a command's dry run gets: the page with the button that POSTs it, nothing run."""
    if wants_json(request):
        message = f"a dry run of {document.name} runs its command: POST to this URL (with the CSRF token)"
        response = JsonResponse({"error": message}, status=405)
        response["Allow"] = "POST"
        return response
    return render(request, "workflows/dry_run.html", {"doc": document, "ask": True})


def dry_run_page(request: HttpRequest, document: WorkflowDocument) -> HttpResponse:
    """The tasks a run of ``document`` would have, or every problem it has; JSON when asked."""
    if document.command and request.method != "POST":
        return _dry_run_button(request, document)
    result, error = DryRun([], None), None
    try:
        result = document.dry_run()
    except WorkflowError as exc:
        error = exc
    status = 404 if error and document.missing(error) else 200
    if wants_json(request):
        return _dry_run_json(document, result, error, status)
    shown, counts = first_rows(result.tasks)
    clone_dir = result.git.clone_dir if result.git else ""
    context = {
        "doc": document,
        "git": result.git,
        "groups": len({task_group(t.definition.id) for t in result.tasks}),
        # Where each task will really run: relative dirs land inside the checkout
        # (on AWS Batch, the one each job makes in its container).
        "rows": [(t, resolve_working_dir(t.definition.working_dir, clone_dir)) for t in shown],
        **counts,
        **_problems(error),
    }
    return render(request, "workflows/dry_run.html", context, status=status)


def run_document(request: HttpRequest, document: WorkflowDocument) -> HttpResponse:
    """Start a run of ``document`` (the run form of its list and dry-run pages)."""
    try:
        max_concurrent = form_max_concurrent(request.POST.get("max_concurrent", ""))
    except ValueError as exc:  # what was typed is wrong: say so with the page, as a 400
        messages.error(request, f"Could not start {document.name}: {exc}")
        return document.list_page(request, status=400)
    try:
        run = document.start(request.user, max_concurrent)  # type: ignore[arg-type]  # never anonymous here
    except WorkflowError as exc:
        messages.error(request, problems_message(f"Could not start {document.name}", exc))
        return redirect(document.list_url)
    messages.success(request, f"Run {run.pk} of {document.name} started.")
    return redirect("run_detail", run_id=run.pk)
