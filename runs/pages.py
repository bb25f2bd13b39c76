"""Page data: what the run pages, their htmx partials and the JSON API show, built once.

Views and API endpoints pick the objects through these functions and only shape the
result (a template context, a JSON body), so a page and the API cannot disagree.
"""

from __future__ import annotations

from django.http import Http404

from runs.models import Run, Task, Viewer

# -- access: another user's run is a 404, not a 403: its existence is not ours to reveal --


def visible_run(user: Viewer, run_id: str) -> Run:
    """The run ``run_id`` if ``user`` may see it (with its owner and backend), else 404."""
    run = Run.objects.visible_to(user).select_related("owner", "backend").filter(pk=run_id).first()
    if run is None:
        raise Http404(f"run {run_id!r} not found")
    return run


def visible_task(user: Viewer, run_id: str, task_id: str) -> Task:
    """One task, with its run, owner and backend, if ``user`` may see its run, else 404."""
    found = Task.objects.visible_to(user).select_related("run__owner", "run__backend")
    task = found.filter(run_id=run_id, task_id=task_id).first()
    if task is None:
        raise Http404(f"task {task_id!r} of run {run_id!r} not found")
    return task
