"""The audit trail: who did what, and when.

``record()`` writes one :class:`~runs.models.AuditEvent`. User actions call it with the
acting user; changes made through the admin (or the config import) are caught by model
signals and attributed to the user of the current request, which
:class:`AuditMiddleware` remembers. Logins and failed logins come from Django's auth
signals (a failed API token is a failed login too), lockouts from django-axes' signal.
Every refusal (a 403, page or API: a ``PermissionDenied`` of ``runs.access``, a failed CSRF
check) is recorded here once, by the middleware, with the reason the user was given; a
refused submission is recorded by runs.actions (also for the CLI) and not twice. Changes of
users' ``is_staff``/``is_superuser``/``is_active``, groups and permissions, and of notification
settings are recorded from model signals, old and new values (secrets by name only).
Passwords, keys and tokens never go into an event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.http import HttpRequest, HttpResponse
from django.views import csrf

from backends.models import Backend, ClusterIdentity
from runs.models import AuditEvent, NotificationPreference, Schedule, Workflow
from scripthut_site.deployment import client_address
from sources.models import Source

_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)

Action = AuditEvent.Action
REASON = "_scripthut_refusal"  # request attribute: why it was refused, for the middleware
REFUSAL_RECORDED = "_scripthut_refusal_recorded"  # request attribute: already in the trail


def record(action: str, target: str = "", *, actor: Any = None, **detail: Any) -> AuditEvent:
    """Append one event; ``actor`` defaults to the user of the current request."""
    request = _request.get()
    if actor is None and request is not None:
        actor = _user_of(request)
    if action == Action.SUBMISSION_REFUSED and request is not None:
        setattr(request, REFUSAL_RECORDED, True)
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_name=actor.get_username() if getattr(actor, "pk", None) else str(detail.pop("username", "")),
        action=action,
        target=target[:255],
        detail=detail,
        address=_address(request),
    )


def _address(request: HttpRequest | None) -> str | None:
    return client_address(request) if request is not None else None


def _user_of(request: HttpRequest) -> Any:
    """The signed-in user of a page, or the API token's user (``request.auth``); else None."""
    for user in (getattr(request, "user", None), getattr(request, "auth", None)):
        if getattr(user, "is_authenticated", False) and getattr(user, "pk", None):
            return user
    return None


class AuditMiddleware:
    """Remembers the request, so that model signals know who made a change, and records every
    refusal (403) with its reason: the one place where refusals of pages and the API are audited."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _request.set(request)
        try:
            response = self.get_response(request)
            if response.status_code == 403 and not getattr(request, REFUSAL_RECORDED, False):
                reason = getattr(request, REASON, "") or _json_error(response)
                record(Action.ACCESS_REFUSED, f"{request.method} {request.path}", reason=reason[:1000])
            return response
        finally:
            _request.reset(token)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        # Django turns it into the 403 page afterwards; the reason is kept for __call__.
        if isinstance(exception, PermissionDenied):
            setattr(request, REASON, str(exception))


def _json_error(response: HttpResponse) -> str:
    """The ``error`` of an API answer (``{"error": ...}``)."""
    if not response.get("Content-Type", "").startswith("application/json") or response.streaming:
        return ""
    try:
        body = json.loads(response.content)
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW``: Django's 403 page; the middleware records it with the reason."""
    setattr(request, REASON, f"CSRF check failed: {reason}")
    return csrf.csrf_failure(request, reason)


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


def watch_fields(
    model: type[Model],
    action: str,
    describe: Callable[[Any], str],
    fields: Iterable[str],
    *,
    secret: frozenset[str] = frozenset(),
    creation: Callable[[Any], bool] = lambda instance: True,
) -> None:
    """Record changes of ``fields`` of ``model`` as ``action`` with their old and new values (a
    ``secret`` field by name only), its creation when ``creation(obj)``, and its deletion."""
    names = tuple(fields)
    before_attr = f"_audit_before_{action}"

    def before(sender: Any, instance: Model, update_fields: Any = None, **kwargs: Any) -> None:
        skipped = instance.pk is None or (update_fields is not None and not set(update_fields) & set(names))
        old = None if skipped else model._default_manager.filter(pk=instance.pk).values(*names).first()
        setattr(instance, before_attr, old)

    def saved(sender: Any, instance: Model, created: bool, **kwargs: Any) -> None:
        old = getattr(instance, before_attr, None)
        new = {name: getattr(instance, name) for name in names}
        if created or old is None:
            if created and creation(instance):
                record(action, describe(instance), change="created", values=_shown(new, secret))
            return
        changed = [name for name in names if old[name] != new[name]]
        if changed:
            values = {name: "changed" if name in secret else [old[name], new[name]] for name in changed}
            record(action, describe(instance), change="changed", values=values)

    def deleted(sender: Any, instance: Model, **kwargs: Any) -> None:
        record(action, describe(instance), change="deleted")

    uid = f"audit-fields-{model._meta.label}-{action}"
    pre_save.connect(before, sender=model, weak=False, dispatch_uid=f"{uid}-before")
    post_save.connect(saved, sender=model, weak=False, dispatch_uid=f"{uid}-saved")
    post_delete.connect(deleted, sender=model, weak=False, dispatch_uid=f"{uid}-deleted")


def _shown(values: dict[str, Any], secret: frozenset[str]) -> dict[str, Any]:
    return {name: ("set" if value else "") if name in secret else value for name, value in values.items()}


def _group_names(pks: set[int]) -> str:
    return ", ".join(sorted(Group.objects.filter(pk__in=pks).values_list("name", flat=True)))


def _permission_names(pks: set[int]) -> str:
    return ", ".join(sorted(Permission.objects.filter(pk__in=pks).values_list("codename", flat=True)))


def connect() -> None:
    """Called once from the runs app's ready()."""
    watch(
        Backend,
        Action.BACKEND_CHANGED,
        lambda b: f"backend {b}",
        frozenset({*Backend.TICK_FIELDS, "cluster_info", "cluster_info_at"}),
    )
    source_state = frozenset({"synced_at", "synced_sha", "sync_error", "workflow_files", "checkout_dir"})
    watch(Source, Action.SOURCE_CHANGED, lambda s: f"source {s}", source_state)
    watch(Workflow, Action.WORKFLOW_CHANGED, lambda w: f"workflow {w}")
    watch_fields(
        Schedule,
        Action.SCHEDULE_CHANGED,
        lambda s: f"schedule {s}",
        ("cron", "timezone", "overlap", "enabled", "owner_id", "workflow_id", "source_id", "file", "stopped_reason"),
    )
    watch(ClusterIdentity, Action.IDENTITY_CHANGED, lambda i: f"cluster identity of {i.user} on {i.backend}")  # type: ignore[attr-defined]
    user_model = get_user_model()
    watch_membership(
        user_model.groups.through,  # type: ignore[attr-defined]
        lambda user, action, pks: f"user {user}: groups {action.removeprefix('post_')} {_group_names(pks)}".strip(),
    )
    watch_membership(
        user_model.user_permissions.through,  # type: ignore[attr-defined]
        lambda user, action, pks: f"user {user}: permissions {action.removeprefix('post_')} {_permission_names(pks)}",
    )
    watch_fields(
        user_model,
        Action.USER_CHANGED,
        lambda user: f"user {user.get_username()}",
        ("is_staff", "is_superuser", "is_active"),
        creation=lambda user: bool(user.is_staff or user.is_superuser),
    )
    watch_fields(
        NotificationPreference,
        Action.PREFERENCES_CHANGED,
        lambda pref: f"notifications of {pref.user}",
        ("on", "email", "webhook_url", "webhook_slack", "first_task_started"),
        secret=frozenset({"webhook_url"}),
    )
