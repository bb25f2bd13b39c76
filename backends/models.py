"""Where jobs run: configured backends and the named environments tasks can use."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import models

from backends.local.settings import shared_account
from backends.registry import BACKENDS, validate_kind
from scripthut_site.crypto import EncryptedTextField


class Backend(models.Model):
    # Names for code (Kind.LOCAL == "local", ...), one per registered kind. Not the
    # field's choices: the column is checked against the registry when validated
    # (validate_kind), so a new kind needs no migration.
    # (django-stubs types only the one-argument form of the functional API.)
    Kind = models.TextChoices(  # type: ignore[call-overload]
        "Kind", [(kind.upper(), (kind, entry.label)) for kind, entry in BACKENDS.items()]
    )

    class Status(models.TextChoices):
        UNKNOWN = "unknown", "Not checked yet"
        OK = "ok", "Reachable"
        UNREACHABLE = "unreachable", "Unreachable"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField("type", max_length=16, validators=[validate_kind])
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
    # Counts the requests for a tick (runs.workers.ticker.request_tick): a tick that finds it
    # changed since it read the backend leaves the backend due (runs.engine.tick.next_tick_at).
    tick_requests = models.PositiveBigIntegerField(default=0, db_default=0, editable=False)
    # Who is ticking the backend (runs/engine/lease.py). On SQLite the claim itself: a
    # short lease renewed by a heartbeat. On PostgreSQL only a mark beside the advisory
    # lock, so a dispatcher can tell a tick that died (mark left, lock gone).
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    # Partitions, nodes and CPUs (sinfo/pbsnodes) and clone_dir disk usage, refreshed now and then.
    cluster_info = models.JSONField(default=dict, blank=True)
    cluster_info_at = models.DateTimeField(null=True, blank=True)

    # What the ticks write, not people: read-only in the admin; a change of it (or of the
    # cluster info) is not audited.
    TICK_FIELDS = (
        "status",
        "status_message",
        "last_polled_at",
        "next_poll_at",
        "tick_requests",
        "lease_until",
        "lease_owner",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_kind_display(self) -> str:
        """The kind's label from the registry (what Django would make of choices)."""
        entry = BACKENDS.get(self.kind)
        return entry.label if entry else self.kind

    def clean(self) -> None:
        from backends.config import validate_backend_settings

        if self.kind not in BACKENDS:
            return  # validate_kind has said so, on the type field
        try:
            self.settings = validate_backend_settings(self.kind, self.settings)
        except ValueError as exc:
            raise ValidationError({"settings": str(exc)}) from exc

    def setting(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    @property
    def per_user(self) -> bool:
        """Jobs run under each portal user's own account: their cluster identity
        (``ssh.identity: per_user``) or their OS account (local, ``run_as: per_user``)."""
        return self.takes_identities or (self.kind == self.Kind.LOCAL and self.settings.get("run_as") == "per_user")

    @property
    def shared_account(self) -> str:
        """The one OS account every user's tasks run as (a local backend with a shared
        ``run_as``), or "": shown with a warning on its card and in the admin."""
        return shared_account(self.settings) if self.kind == self.Kind.LOCAL else ""

    @property
    def takes_identities(self) -> bool:
        """Users register their own cluster login and key for it (``ssh.identity: per_user``)."""
        return (self.settings.get("ssh") or {}).get("identity") == "per_user"


class ClusterIdentity(models.Model):
    """A portal user's own login on a ``per_user`` backend: their jobs are submitted, and
    their files read, as this account. The key and its passphrase are encrypted at rest
    and never shown again; the fingerprint stands for them on pages."""

    user = models.ForeignKey(django_settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="identities")
    backend = models.ForeignKey(Backend, on_delete=models.CASCADE, related_name="identities")
    username = models.CharField(max_length=64, help_text="The login on the cluster.")
    private_key = EncryptedTextField()
    passphrase = EncryptedTextField(blank=True)
    certificate = models.TextField(blank=True, help_text="OpenSSH certificate (-cert.pub) of the key, if any.")
    fingerprint = models.CharField(max_length=100, help_text="SHA256 fingerprint of the public key.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["backend", "user"]
        constraints = [models.UniqueConstraint(fields=["user", "backend"], name="one_identity_per_user_and_backend")]
        verbose_name_plural = "cluster identities"

    def __str__(self) -> str:
        # Names who and where, never the key: audit events and admin pages show this.
        return f"{self.user} on {self.backend} as {self.username}"


class Environment(models.Model):
    """Reusable environment variables and init lines, referenced by tasks by name."""

    name = models.CharField(max_length=100, unique=True)
    variables = models.JSONField(default=dict, blank=True)
    extra_init = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class BatchJobDefinition(models.Model):
    """A job definition ScriptHut registered on an AWS Batch backend, per image signature
    (the image and what else went into it): a restart reuses it instead of registering
    another revision."""

    backend = models.ForeignKey(Backend, on_delete=models.CASCADE, related_name="batch_job_definitions")
    signature = models.CharField(max_length=64, help_text="SHA-256 of the image and the definition's other inputs.")
    image = models.CharField(max_length=500)
    arn = models.CharField(max_length=500, help_text="jobDefinitionArn, name:revision included.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["backend", "signature"], name="one_batch_job_definition_per_signature")
        ]

    def __str__(self) -> str:
        return f"{self.backend} {self.image} -> {self.arn}"
