"""Who wants which notifications, and the outbox of notifications to send.

Imported by ``runs.models`` so that Django registers these models in the ``runs`` app;
foreign keys are by name so that this module never imports ``runs.models``.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from runs.notify.webhook_url import redacted
from scripthut_site.crypto import EncryptedTextField


class When(models.TextChoices):
    """Which run endings are worth a notification."""

    ALWAYS = "always", "Always (completed, failed or cancelled)"
    FAILURE = "failure", "Only when a run fails"
    NEVER = "never", "Never"


class NotificationPreference(models.Model):
    """A user's notification settings (``/settings/notifications``); none stored means the defaults."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notify_preference")
    on = models.CharField(max_length=16, choices=When.choices, default=When.FAILURE)
    email = models.EmailField(blank=True, help_text="Empty: the account's email address.")
    # Webhook URLs often carry a token (Slack's do): encrypted at rest, never shown back in full.
    webhook_url = EncryptedTextField(blank=True)
    webhook_slack = models.BooleanField(default=False, help_text='Send a Slack-style {"text": ...} body.')
    first_task_started = models.BooleanField(default=False, help_text="Also when a run's first task starts.")

    def __str__(self) -> str:
        return f"notifications of {self.user}: {self.on}"


class RunNotify(models.Model):
    """A run's own notification settings (the ``notify`` block of ``POST /api/runs``, ``--notify``)."""

    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, related_name="notify")
    on = models.CharField(max_length=16, choices=When.choices, blank=True, help_text="Empty: the owner's preference.")
    email = models.EmailField(blank=True)
    webhook_url = EncryptedTextField(blank=True)

    def __str__(self) -> str:
        return f"run {self.run_id}: {self.on}"


class VerifiedEmail(models.Model):
    """An address a user proved is theirs: they opened the link the portal emailed to it (``runs.notify.trust``)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="verified_emails")
    address = models.EmailField(help_text="Stored in lower case.")
    verified_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "address"], name="one_verified_email_per_user")]

    def __str__(self) -> str:
        return f"{self.address} (verified by user {self.user_id})"


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


class Notification(models.Model):
    """One message to one channel, written in the transaction of the change that causes it."""

    class State(models.TextChoices):
        PENDING = "pending"  # waiting for its next attempt
        SENDING = "sending"  # claimed by a worker; reclaimed after a timeout if the worker died
        SENT = "sent"
        FAILED = "failed"  # gave up after the last attempt; staff see it

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    event = models.CharField(max_length=40)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    target = EncryptedTextField(help_text="Email address or webhook URL.")
    slack = models.BooleanField(default=False)
    subject = models.CharField(max_length=300)
    payload = models.JSONField(default=dict)
    dedupe_key = models.CharField(max_length=200, help_text="One event: the same key twice is not enqueued again.")
    # Sent with every attempt (webhook header and body, email Message-ID) so that the
    # receiver can drop a repeat after a worker died mid-send.
    idempotency_key = models.CharField(max_length=64, unique=True, default=new_idempotency_key, editable=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["dedupe_key", "channel"], name="one_notification_per_event")]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event} by {self.channel} to user {self.user_id} ({self.state})"

    @property
    def shown_target(self) -> str:
        """Where it goes, as pages may show it: a webhook without its path (often its token)."""
        return redacted(self.target) if self.channel == self.Channel.WEBHOOK else self.target
