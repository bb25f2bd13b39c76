"""Who may use what: backends, and the sources and workflows on them, are shared with
Django groups (``allowed_groups`` in the config; LDAP and OIDC groups become Django groups).

- Staff may use everything.
- Anyone else may use a backend if a group of theirs is allowed on it. A backend that
  names no groups is open to everyone, except a ``local`` backend: its tasks run on the
  portal host, so it is staff only unless its config shares it (and names ``run_as``).
- A source or workflow is usable by whoever may use its backend, narrowed to its own
  ``allowed_groups`` when it names any.

Views, the API and the CLI all ask here; a refusal carries the reason shown to the user.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet

from backends.models import Backend
from runs.models import Viewer, Workflow
from sources.models import Source

Shared = Workflow | Source


class AccessDenied(PermissionDenied):
    """The user may not use this backend, source or workflow; the message says why."""


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
    if getattr(user, "is_staff", False):
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
    if refusal or getattr(user, "is_staff", False):
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
    if getattr(user, "is_staff", False):
        return backends
    open_to_all = Q(allowed_groups__isnull=True) & ~Q(kind=Backend.Kind.LOCAL)
    ids = Backend.objects.filter(open_to_all | Q(allowed_groups__in=_group_ids(user))).values("pk")
    return backends.filter(pk__in=ids)


def usable(user: Viewer, items: QuerySet[Any]) -> QuerySet[Any]:
    """The sources or workflows of ``items`` that ``user`` may use."""
    if getattr(user, "is_staff", False):
        return items
    mine = Q(allowed_groups__isnull=True) | Q(allowed_groups__in=_group_ids(user))
    ids = items.model._default_manager.filter(mine, backend__in=usable_backends(user)).values("pk")
    return items.filter(pk__in=ids)
