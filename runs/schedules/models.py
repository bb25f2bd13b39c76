"""A schedule: who runs what, when (imported into runs.models, the app's models module)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone as django_timezone

from runs.schedules.timing import next_fire


class Schedule(models.Model):
    """A configured workflow (``workflow``) or a source's workflow file (``source`` +
    ``file``), started as ``owner`` at the times of ``cron`` in ``timezone``."""

    class Overlap(models.TextChoices):
        SKIP = "skip", "skip a time while its last run is unfinished"
        QUEUE = "queue", "start once its last run has finished"
        ALLOW = "allow", "start anyway"

    name = models.CharField(max_length=100, unique=True)
    workflow = models.ForeignKey(
        "runs.Workflow", null=True, blank=True, on_delete=models.CASCADE, related_name="schedules"
    )
    source = models.ForeignKey(
        "sources.Source", null=True, blank=True, on_delete=models.CASCADE, related_name="schedules"
    )
    file = models.CharField(max_length=500, blank=True, help_text="The source's workflow file.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(max_length=100, help_text="5 fields, or @daily, @hourly, ...")
    timezone = models.CharField(max_length=64, default="UTC")
    overlap = models.CharField(max_length=8, choices=Overlap.choices, default=Overlap.SKIP)
    enabled = models.BooleanField(default=True)
    # Why the portal turned it off (its owner lost access); cleared when it is enabled again.
    stopped_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=django_timezone.now)
    # Runtime state (runs.schedules.fire), not audited as changes.
    next_fire_at = models.DateTimeField(null=True, blank=True, help_text="Next due time, UTC.")
    last_fired_for = models.DateTimeField(null=True, blank=True, help_text="The due time last handled.")
    last_fired_at = models.DateTimeField(null=True, blank=True, help_text="When it was handled.")
    last_outcome = models.TextField(blank=True, help_text="What the last due time did (a run, a skip, an error).")

    RUNTIME = frozenset({"next_fire_at", "last_fired_for", "last_fired_at", "last_outcome"})

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["enabled", "next_fire_at"])]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(workflow__isnull=False, source__isnull=True, file=""))
                | (models.Q(workflow__isnull=True, source__isnull=False) & ~models.Q(file="")),
                name="schedule_workflow_or_source_file",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        """An enabled schedule without a next time (new, changed, enabled again) gets the
        first one after now: times before that are not caught up."""
        if self.enabled and self.next_fire_at is None:
            self.next_fire_at = next_fire(self.cron, self.timezone, django_timezone.now())
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "next_fire_at"}
        super().save(*args, **kwargs)

    @property
    def target(self) -> str:
        """What it runs, as runs name it (``workflow_name``)."""
        return self.workflow.name if self.workflow else f"{self.source}/{self.file}"
