"""Who may see or change what: every page, htmx partial, API operation, websocket, Server-Sent
Events stream and the CLI asks here, and nowhere else is a rule of access written.

Runs, and everything of them (tasks, scripts, logs, timeline, live updates):

- Staff see and change every run (``is_staff``; a superuser who is not staff is no one special).
- Anyone else sees the runs they own and the runs shared with a group of theirs
  (``Run.shared_with``). Only the owner and staff may cancel or relaunch a run: a shared run
  is there to follow.
- A run the viewer may not see is "not found" (404), never "forbidden": its existence is not
  theirs to learn. A run they see but may not change is a 403 with the reason.
- The jobs dashboard lists the queued and running jobs of the backends the viewer may use and
  of the runs they see, but names and links only the runs they see; the scheduler's other jobs
  on those backends are listed too (a scheduler shows them to anyone with a login there).
- Live updates (``runs.live``) go to channel groups: a run's changes to ``run-<id>`` (joined
  by a run page's socket only when its viewer sees the run) and to its audience, ``user-<owner>``,
  ``group-<pk>`` of each group the run is shared with, and ``staff``. A viewer's runs list,
  dashboard and event stream join ``user-<pk>``, ``group-<pk>`` of each of their groups and
  (staff) ``staff``: so a viewer hears of exactly the runs they see.

Backends, and the sources and workflows on them, are shared with Django groups
(``allowed_groups`` in the config; LDAP and OIDC groups become Django groups):

- Staff may use everything.
- Anyone else may use a backend if a group of theirs is allowed on it. A backend that
  names no groups is open to everyone, except a ``local`` backend: its tasks run on the
  portal host, so it is staff only unless its config shares it (and names ``run_as``).
- A source or workflow is usable by whoever may use its backend, narrowed to its own
  ``allowed_groups`` when it names any.

API tokens: a user sees and revokes their own; staff see and revoke anyone's.

Schedules (``runs.schedules``) run as their owner: a user sees, changes and deletes their own;
staff, everyone's, and only staff make one that runs as someone else. Another user's schedule
is "not found". A schedule whose owner may no longer use its backend, workflow or source stops.

Staff see every budget on the usage page, anyone else the budgets that count their tasks.
The audit trail and the failed notifications are for staff only. A refusal carries the
reason shown to the user.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from backends.models import Backend
from runs.costing.budgets import budgets_of
from runs.costing.models import Budget
from runs.engine import states
from runs.models import ApiToken, ObservedJob, Run, Schedule, Task, Viewer, Workflow
from sources.models import Source

Shared = Workflow | Source

STAFF_GROUP = "staff"  # the channel group every staff viewer joins


class AccessDenied(PermissionDenied):
    """The user may not do this (use a backend, source or workflow; change a run); the message says why."""


def is_staff(user: Viewer | None) -> bool:
    return bool(getattr(user, "is_staff", False))


def require_staff(user: Viewer, what: str) -> None:
    if not is_staff(user):
        raise PermissionDenied(f"{what} is for staff")


# -- runs, tasks, jobs: who sees them ------------------------------------------------------


def _seen_runs(user: Viewer) -> Q:
    """Runs ``user`` owns or that are shared with a group of theirs (a condition on Run)."""
    shared = Run.shared_with.through.objects.filter(group__user=user.pk).values("run_id")
    return Q(owner_id=user.pk) | Q(pk__in=shared)


def visible_runs(user: Viewer) -> QuerySet[Run]:
    if is_staff(user):
        return Run.objects.all()
    if not user.is_authenticated:
        return Run.objects.none()
    return Run.objects.filter(_seen_runs(user))


def visible_tasks(user: Viewer) -> QuerySet[Task]:
    """Tasks of the runs ``user`` may see."""
    if is_staff(user):
        return Task.objects.all()
    return Task.objects.filter(run__in=visible_runs(user))


def listed_jobs(user: Viewer) -> QuerySet[Task]:
    """ScriptHut's queued and running jobs the dashboard lists to ``user``: on the backends they
    may use, and of the runs they see (named and linked only for those: :func:`visible_runs`)."""
    live = Task.objects.filter(state__in=states.LIVE)
    if is_staff(user):
        return live
    return live.filter(Q(run__backend__in=usable_backends(user)) | Q(run__in=visible_runs(user)))


def visible_observed_jobs(user: Viewer) -> QuerySet[ObservedJob]:
    """Jobs of the tasks ``user`` may see, and the jobs ScriptHut did not submit on the backends
    they may use: the scheduler itself lists those to anyone with a login on the cluster."""
    if is_staff(user):
        return ObservedJob.objects.all()
    external = Q(our_task__isnull=True, backend__in=usable_backends(user))
    return ObservedJob.objects.filter(external | Q(our_task__run__in=visible_runs(user)))


def may_see_run(user: Viewer, run: Run) -> bool:
    return is_staff(user) or visible_runs(user).filter(pk=run.pk).exists()


def visible_run(user: Viewer, run_id: str) -> Run:
    """The run ``run_id`` if ``user`` may see it (with its owner and backend), else 404."""
    run = visible_runs(user).select_related("owner", "backend").filter(pk=run_id).first()
    if run is None:
        raise Http404(f"run {run_id!r} not found")
    return run


def visible_task(user: Viewer, run_id: str, task_id: str) -> Task:
    """One task (its script, its logs), with its run, owner and backend, if ``user`` may see its run, else 404."""
    found = visible_tasks(user).select_related("run__owner", "run__backend")
    task = found.filter(run_id=run_id, task_id=task_id).first()
    if task is None:
        raise Http404(f"task {task_id!r} of run {run_id!r} not found")
    return task


def visible_budgets(user: Viewer) -> list[Budget]:
    """The budgets on the usage page: staff every one, anyone else those that count their tasks."""
    if is_staff(user):
        return list(Budget.objects.select_related("user", "group").order_by("group__name", "user__username"))
    return budgets_of(int(user.pk)) if user.is_authenticated else []


def visible_tokens(user: Viewer) -> QuerySet[ApiToken]:
    """The API tokens ``user`` may see and revoke: their own; staff, everyone's."""
    if is_staff(user):
        return ApiToken.objects.all()
    return ApiToken.objects.filter(user_id=user.pk) if user.is_authenticated else ApiToken.objects.none()


def visible_schedules(user: Viewer) -> QuerySet[Schedule]:
    """The schedules ``user`` sees, changes and deletes: their own; staff, everyone's."""
    schedules = Schedule.objects.select_related("owner", "workflow", "source")
    if is_staff(user):
        return schedules
    return schedules.filter(owner_id=user.pk) if user.is_authenticated else schedules.none()


def visible_schedule(user: Viewer, name: str) -> Schedule:
    """The schedule ``name`` if ``user`` sees it; else 404."""
    return get_object_or_404(visible_schedules(user), name=name)


# -- runs: who changes them ----------------------------------------------------------------


def may_change_run(user: Viewer | None, run: Run) -> bool:
    """Cancel or relaunch: the owner and staff (``user`` None: the system itself)."""
    return user is None or is_staff(user) or (user.is_authenticated and user.pk == run.owner_id)


def require_run_operator(user: Viewer | None, run: Run) -> None:
    if not may_change_run(user, run):
        raise AccessDenied(f"run {run.pk} is shared with you to follow; only its owner or staff may change it")


# -- live updates: which channel groups a run's changes go to, which a viewer joins -------------


def run_page_group(run_id: str) -> str:
    """The channel group of one run's page."""
    return f"run-{run_id}"


def run_audience(run: Run) -> list[str]:
    """The channel groups of the viewers who see ``run``: its owner, its groups, staff."""
    shared = run.shared_with.values_list("pk", flat=True)
    return [f"user-{run.owner_id}"] + [f"group-{pk}" for pk in shared] + [STAFF_GROUP]


def viewer_groups(user: Viewer) -> list[str]:
    """The channel groups a viewer's runs list, dashboard and event stream listen on."""
    if not user.is_authenticated:
        return []
    group_ids = user.groups.values_list("pk", flat=True)  # type: ignore[union-attr,attr-defined]
    names = [f"user-{user.pk}"] + [f"group-{pk}" for pk in sorted(group_ids)]
    if is_staff(user):
        names.append(STAFF_GROUP)
    return names


def run_page_groups(user: Viewer, run_id: str) -> list[str]:
    """The channel groups a run page's socket joins: none when ``user`` may not see the run."""
    try:
        return [run_page_group(visible_run(user, run_id).pk)]
    except Http404:
        return []


# -- backends, sources, workflows ------------------------------------------------------------


def _group_ids(user: Viewer) -> set[int]:
    cached: set[int] | None = getattr(user, "_scripthut_group_ids", None)
    if cached is None:
        groups = getattr(user, "groups", None)
        cached = set(groups.values_list("pk", flat=True)) if groups is not None and user.is_authenticated else set()
        user._scripthut_group_ids = cached  # type: ignore[union-attr]  # one query per request
    return cached


def _allowed(obj: Any) -> dict[int, str]:
    return dict(obj.allowed_groups.values_list("pk", "name"))


def backend_refusal(user: Viewer, backend: Backend) -> str:
    """Why ``user`` may not use ``backend``; empty when they may."""
    if is_staff(user):
        return ""
    allowed = _allowed(backend)
    if allowed:
        if _group_ids(user) & set(allowed):
            return ""
        names = ", ".join(sorted(allowed.values()))
        return f"backend {backend.name!r} is shared with the groups {names}, and you are in none of them"
    if backend.kind == Backend.Kind.LOCAL:
        return f"backend {backend.name!r} runs tasks on the portal host: only staff may use it"
    return ""


def shared_refusal(user: Viewer, item: Shared) -> str:
    """Why ``user`` may not use this source or workflow; empty when they may."""
    refusal = backend_refusal(user, item.backend)
    if refusal or is_staff(user):
        return refusal
    allowed = _allowed(item)
    if allowed and not _group_ids(user) & set(allowed):
        kind = "workflow" if isinstance(item, Workflow) else "source"
        return f"{kind} {item.name!r} is shared with the groups {', '.join(sorted(allowed.values()))} only"
    return ""


def require_backend(user: Viewer, backend: Backend) -> None:
    refusal = backend_refusal(user, backend)
    if refusal:
        raise AccessDenied(refusal)


def require_shared(user: Viewer, item: Shared) -> None:
    refusal = shared_refusal(user, item)
    if refusal:
        raise AccessDenied(refusal)


def usable_backends(user: Viewer) -> QuerySet[Backend]:
    backends = Backend.objects.all()
    if is_staff(user):
        return backends
    open_to_all = Q(allowed_groups__isnull=True) & ~Q(kind=Backend.Kind.LOCAL)
    ids = Backend.objects.filter(open_to_all | Q(allowed_groups__in=_group_ids(user))).values("pk")
    return backends.filter(pk__in=ids)


def usable(user: Viewer, items: QuerySet[Any]) -> QuerySet[Any]:
    """The sources or workflows of ``items`` that ``user`` may use."""
    if is_staff(user):
        return items
    mine = Q(allowed_groups__isnull=True) | Q(allowed_groups__in=_group_ids(user))
    ids = items.model._default_manager.filter(mine, backend__in=usable_backends(user)).values("pk")
    return items.filter(pk__in=ids)


def usable_workflow(user: Viewer, name: str) -> Workflow:
    """The workflow ``name`` if ``user`` may use it (its command runs on its backend): else 404 or 403."""
    workflow = get_object_or_404(Workflow.objects.select_related("backend"), name=name)
    require_shared(user, workflow)
    return workflow


def usable_source(user: Viewer, name: str) -> Source:
    """The source ``name`` if ``user`` may use it (syncing and running use its backend): else 404 or 403."""
    source = get_object_or_404(Source.objects.select_related("backend"), name=name)
    require_shared(user, source)
    return source
