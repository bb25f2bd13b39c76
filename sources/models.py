"""Sources: git repositories or backend paths holding workflow JSON files."""

from __future__ import annotations

from django.db import models

from scripthut_site.crypto import EncryptedTextField


class Source(models.Model):
    class Kind(models.TextChoices):
        GIT = "git", "Git repository"
        PATH = "path", "Backend path"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField("type", max_length=8, choices=Kind.choices)
    backend = models.ForeignKey("backends.Backend", on_delete=models.PROTECT, related_name="sources")
    workflows_glob = models.CharField(max_length=255, default=".hut/workflows/*.json")
    # git
    # Encrypted at rest: a URL may carry a password or token (https://user:token@host/...).
    # Shown only through sources.git.mask_credentials; git gets the secret from its
    # environment, never in a URL or on a command line (sources.git).
    url = EncryptedTextField(blank=True)
    branch = models.CharField(max_length=200, default="main")
    deploy_key = models.CharField(max_length=500, blank=True, help_text="Path to a key on the portal host.")
    clone_dir = models.CharField(max_length=500, default="~/scripthut-repos")
    postclone = models.TextField(blank=True)
    # path
    path = models.CharField(max_length=500, blank=True)

    allowed_groups = models.ManyToManyField(
        "auth.Group", blank=True, related_name="sources", help_text="Empty: everyone who may use its backend."
    )

    # Sync state.
    synced_at = models.DateTimeField(null=True, blank=True)
    synced_sha = models.CharField(max_length=64, blank=True)
    # Where the sync's checkout of synced_sha is, as an absolute path on the backend.
    checkout_dir = models.CharField(max_length=1000, blank=True)
    sync_error = models.TextField(blank=True)
    workflow_files = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def root(self) -> str:
        """Directory on the backend that the workflow glob is matched in.

        For git sources this is the checkout of the last synced commit (as made by
        ``sources.git.checkout``), or ``""`` before the first successful sync.
        """
        if self.kind == self.Kind.PATH:
            return self.path
        if not self.synced_sha:
            return ""
        return self.checkout_dir or f"{self.clone_dir.rstrip('/')}/{self.synced_sha}"
