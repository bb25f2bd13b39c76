"""Where jobs run: configured backends and the named environments tasks can use."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from backends.registry import BACKENDS


class Backend(models.Model):
    # One choice per registered kind: Kind.LOCAL == "local", Kind.SLURM == "slurm", ...
    # (django-stubs types only the one-argument form of the functional API.)
    Kind = models.TextChoices(  # type: ignore[call-overload]
        "Kind", [(kind.upper(), (kind, entry.label)) for kind, entry in BACKENDS.items()]
    )

    class Status(models.TextChoices):
        UNKNOWN = "unknown", "Not checked yet"
        OK = "ok", "Reachable"
        UNREACHABLE = "unreachable", "Unreachable"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField("type", max_length=16, choices=Kind.choices)
    # Validated per-type settings (ssh block, account, queue, aws block, ...), as
    # loaded by backends.config; see each backend package's settings.py.
    settings = models.JSONField(default=dict, blank=True)
    max_concurrent = models.PositiveIntegerField(default=100)
    poll_interval = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds between polls; empty means the global setting."
    )
    enabled = models.BooleanField(default=True)
    allowed_groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="backends",
        help_text="Groups whose members may use it. Empty: everyone, but staff only for a local backend.",
    )

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNKNOWN)
    status_message = models.TextField(blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    # One tick per backend at a time: a worker takes the lease with a conditional
    # UPDATE and gives it back when done; a crashed worker's lease simply expires.
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    # Partitions, nodes and CPUs (sinfo/pbsnodes) and clone_dir disk usage, refreshed now and then.
    cluster_info = models.JSONField(default=dict, blank=True)
    cluster_info_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from backends.config import validate_backend_settings

        try:
            self.settings = validate_backend_settings(self.kind, self.settings)
        except ValueError as exc:
            raise ValidationError({"settings": str(exc)}) from exc

    def setting(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)


class Environment(models.Model):
    """Reusable environment variables and init lines, referenced by tasks by name."""

    name = models.CharField(max_length=100, unique=True)
    variables = models.JSONField(default=dict, blank=True)
    extra_init = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
