"""The audit trail: who did what, and when.

``record()`` writes one :class:`~runs.models.AuditEvent`. User actions call it with the
acting user; changes made through the admin (or the config import) are caught by model
signals and attributed to the user of the current request, which
:class:`AuditMiddleware` remembers. Logins and failed logins come from Django's auth
signals (a failed API token is a failed login too), lockouts from django-axes' signal.
Passwords, keys and tokens never go into an event.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.http import HttpRequest, HttpResponse

from backends.models import Backend, ClusterIdentity
from runs.models import AuditEvent, Workflow
from sources.models import Source

_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)

Action = AuditEvent.Action


def record(action: str, target: str = "", *, actor: Any = None, **detail: Any) -> AuditEvent:
    """Append one event; ``actor`` defaults to the user of the current request."""
    request = _request.get()
    if actor is None and request is not None and getattr(request, "user", None) is not None:
        actor = request.user if request.user.is_authenticated else None
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_name=actor.get_username() if getattr(actor, "pk", None) else str(detail.pop("username", "")),
        action=action,
        target=target[:255],
        detail=detail,
        address=_address(request),
    )


def _address(request: HttpRequest | None) -> str | None:
    return request.META.get("REMOTE_ADDR") or None if request is not None else None


class AuditMiddleware:
    """Remembers the request, so that model signals know who made a change."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)


# -- logins ------------------------------------------------------------------------------


def _logged_in(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    token = _request.set(request)
    try:
        record(Action.LOGIN, user.get_username(), actor=user)
    finally:
        _request.reset(token)


def _logged_out(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    if user is not None:
        record(Action.LOGOUT, user.get_username(), actor=user)


def _login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any) -> None:
    # Django already masks the password in ``credentials``; only the username is kept.
    username = str(credentials.get("username", ""))[:150]
    target = "API token" if "api_token" in credentials else username
    token = _request.set(request)
    try:
        record(Action.LOGIN_FAILED, target, username=username)
    finally:
        _request.reset(token)


def _locked_out(sender: Any, request: HttpRequest, username: str | None, ip_address: str, **kwargs: Any) -> None:
    # Sent when a failure reaches the limit, and for each attempt refused during the lockout.
    token = _request.set(request)
    try:
        record(Action.LOGIN_LOCKED_OUT, username or f"address {ip_address}", username=username or "")
    finally:
        _request.reset(token)


user_logged_in.connect(_logged_in, dispatch_uid="audit-login")
user_logged_out.connect(_logged_out, dispatch_uid="audit-logout")
user_login_failed.connect(_login_failed, dispatch_uid="audit-login-failed")
user_locked_out.connect(_locked_out, dispatch_uid="audit-locked-out")


# -- configuration changes (admin, config import) --------------------------------------------


def watch(
    model: type[Model], action: str, describe: Callable[[Model], str] = str, runtime: frozenset[str] = frozenset()
) -> None:
    """Record every save and delete of ``model`` as ``action`` (``target`` = ``describe(obj)``),
    except saves of ``runtime`` fields only (state the portal keeps, not configuration)."""

    def saved(sender: Any, instance: Model, created: bool, **kwargs: Any) -> None:
        fields = sorted(kwargs.get("update_fields") or [])
        if fields and set(fields) <= runtime:
            return
        record(action, describe(instance), change="created" if created else "changed", fields=fields)

    def deleted(sender: Any, instance: Model, **kwargs: Any) -> None:
        record(action, describe(instance), change="deleted")

    post_save.connect(saved, sender=model, weak=False, dispatch_uid=f"audit-save-{model._meta.label}")
    post_delete.connect(deleted, sender=model, weak=False, dispatch_uid=f"audit-delete-{model._meta.label}")


def watch_membership(through: type[Model], describe: Callable[[Model, str, set[int]], str]) -> None:
    """Record additions to and removals from a many-to-many relation (who is in which group)."""

    def changed(sender: Any, instance: Model, action: str, pk_set: set[int] | None, **kwargs: Any) -> None:
        if action in ("post_add", "post_remove", "post_clear"):
            record(
                Action.ACCESS_CHANGED, describe(instance, action, pk_set or set()), change=action.removeprefix("post_")
            )

    m2m_changed.connect(changed, sender=through, weak=False, dispatch_uid=f"audit-m2m-{through._meta.label}")


def _group_names(pks: set[int]) -> str:
    return ", ".join(sorted(Group.objects.filter(pk__in=pks).values_list("name", flat=True)))


def connect() -> None:
    """Called once from the runs app's ready()."""
    backend_state = {"status", "status_message", "last_polled_at", "next_poll_at", "lease_until", "lease_owner"}
    watch(
        Backend,
        Action.BACKEND_CHANGED,
        lambda b: f"backend {b}",
        frozenset(backend_state | {"cluster_info", "cluster_info_at"}),
    )
    source_state = frozenset({"synced_at", "synced_sha", "sync_error", "workflow_files", "checkout_dir"})
    watch(Source, Action.SOURCE_CHANGED, lambda s: f"source {s}", source_state)
    watch(Workflow, Action.WORKFLOW_CHANGED, lambda w: f"workflow {w}")
    watch(ClusterIdentity, Action.IDENTITY_CHANGED, lambda i: f"cluster identity of {i.user} on {i.backend}")  # type: ignore[attr-defined]
    user_model = get_user_model()
    watch_membership(
        user_model.groups.through,  # type: ignore[attr-defined]
        lambda user, action, pks: f"user {user}: groups {action.removeprefix('post_')} {_group_names(pks)}".strip(),
    )
