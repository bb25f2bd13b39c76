"""Write notifications into the outbox, in the caller's transaction.

A row is written by the same transaction as the change that causes it (a run's status
UPDATE, a budget crossing): if that transaction rolls back, no notification exists; if it
commits, the worker (``runs.notify.deliver``) will send it. The same ``dedupe_key`` twice
is a no-op (unique per channel), so an event retried by its caller is not enqueued twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.models import AbstractBaseUser

from runs.notify.models import Notification, NotificationPreference, RunNotify, When
from runs.notify.trust import first_trusted

SLACK_HOSTS = ("hooks.slack.com",)


@dataclass(frozen=True)
class Channels:
    """Where (and when) one user's notifications about one run go."""

    on: str
    email: str
    webhook: str
    slack: bool
    first_task_started: bool


def is_slack(url: str, flagged: bool = False) -> bool:
    """Slack-style incoming webhooks take ``{"text": ...}``: Slack's own, or any URL the user flagged."""
    return flagged or (urlsplit(url).hostname or "") in SLACK_HOSTS


def channels_for(user: AbstractBaseUser, run: Any = None) -> Channels:
    """The user's preferences, overridden by the run's own ``notify`` settings where it has them.

    The email is the first address the portal trusts for the user (``runs.notify.trust``) of:
    the run's, the preference's, the account's."""
    pref = NotificationPreference.objects.filter(user_id=user.pk).first() or NotificationPreference()
    account = getattr(user, "email", "")
    slack = is_slack(pref.webhook_url, pref.webhook_slack)
    override = RunNotify.objects.filter(run_id=run.pk).first() if run is not None else None
    if override is None:
        email = first_trusted(user, pref.email, account)
        return Channels(pref.on, email, pref.webhook_url, slack, pref.first_task_started)
    webhook = override.webhook_url or pref.webhook_url
    return Channels(
        on=override.on or pref.on,
        email=first_trusted(user, override.email, pref.email, account),
        webhook=webhook,
        slack=is_slack(webhook, pref.webhook_slack and webhook == pref.webhook_url),
        first_task_started=pref.first_task_started,
    )


def enqueue(
    *,
    user: AbstractBaseUser,
    event: str,
    subject: str,
    payload: dict[str, Any],
    dedupe_key: str,
    run: Any = None,
) -> None:
    """Write one outbox row per channel the user has (email, webhook), unless they chose "never".

    Call it inside the transaction of the change that causes the event. The same
    ``dedupe_key`` again writes nothing (``ON CONFLICT DO NOTHING``; the transaction goes on).
    """
    write(
        channels_for(user, run),
        user=user,
        event=event,
        subject=subject,
        payload=payload,
        dedupe_key=dedupe_key,
        run=run,
    )


def write(
    channels: Channels,
    *,
    user: AbstractBaseUser,
    event: str,
    subject: str,
    payload: dict[str, Any],
    dedupe_key: str,
    run: Any = None,
) -> None:
    """``enqueue`` for a caller that has already looked up the user's ``channels``."""
    if channels.on == When.NEVER:
        return
    common = {"user_id": user.pk, "run": run, "event": event, "subject": subject[:300], "payload": payload}
    common["dedupe_key"] = dedupe_key
    rows = []
    if channels.email:
        rows.append(Notification(channel=Notification.Channel.EMAIL, target=channels.email, **common))
    if channels.webhook:
        webhook = Notification.Channel.WEBHOOK
        rows.append(Notification(channel=webhook, target=channels.webhook, slack=channels.slack, **common))
    Notification.objects.bulk_create(rows, ignore_conflicts=True)
