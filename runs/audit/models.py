"""The audit trail's model: append-only, written by runs.audit.trail, read by staff."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AppendOnly(Exception):  # noqa: N818  (reads better at the raise site)
    """Audit events are written once and never changed or deleted by the application."""


class AuditQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: object) -> int:
        raise AppendOnly("audit events cannot be changed")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnly("audit events cannot be deleted")


class AuditEvent(models.Model):
    """Who did what and when: written by runs.audit.trail, read by staff."""

    class Action(models.TextChoices):
        LOGIN = "login"
        LOGIN_FAILED = "login_failed"
        LOGIN_LOCKED_OUT = "login_locked_out"  # too many failures: refused for the cool-off time
        LOGOUT = "logout"
        RUN_CREATED = "run_created"
        RUN_CANCELLED = "run_cancelled"
        RUN_RELAUNCHED = "run_relaunched"
        TASK_CANCELLED = "task_cancelled"
        TOKEN_CREATED = "token_created"  # noqa: S105  (an action's name)
        TOKEN_REVOKED = "token_revoked"  # noqa: S105
        SUBMISSION_REFUSED = "submission_refused"
        ACCESS_REFUSED = "access_refused"  # any other 403, page or API, with the reason given
        BACKEND_CHANGED = "backend_changed"
        SOURCE_CHANGED = "source_changed"
        WORKFLOW_CHANGED = "workflow_changed"
        SCHEDULE_CHANGED = "schedule_changed"  # made, changed, deleted, or stopped by the portal
        IDENTITY_CHANGED = "identity_changed"
        ACCESS_CHANGED = "access_changed"  # which groups may use what, who is in which group
        USER_CHANGED = "user_changed"  # is_staff, is_superuser or is_active of a user
        PREFERENCES_CHANGED = "preferences_changed"  # a user's notification settings
        CONFIG_IMPORTED = "config_imported"
        FILES_REMOVED = "files_removed"  # retention: finished runs' job files on a backend
        RUNS_DELETED = "runs_deleted"  # retention: finished runs' rows

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True, help_text="Kept if the user is deleted.")
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    target = models.CharField(max_length=255, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.action} {self.target}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise AppendOnly("audit events cannot be changed")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise AppendOnly("audit events cannot be deleted")
