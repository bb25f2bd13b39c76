"""Send the outbox: claim due rows, send each, then mark it sent, or due again later, or failed.

At-least-once, made effectively once by the receiver: a row is claimed (``sending``, with
the claim time and one more attempt counted) and committed BEFORE it is sent. A worker
killed mid-send leaves it ``sending``; after ``SCRIPTHUT_NOTIFY_CLAIM_SECONDS`` another worker
claims it again and sends it again WITH THE SAME idempotency key. The receiver may thus see a
message twice, but both copies carry one key (webhook ``Idempotency-Key`` header and body field,
email Message-ID), so it can keep one. No notification is lost: a row leaves the outbox only as
``sent`` or, after the last attempt, ``failed`` (shown to staff).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from runs.notify.email import send_email
from runs.notify.errors import DeliveryError, PermanentDeliveryError
from runs.notify.models import Notification
from runs.notify.webhook import send_webhook

log = logging.getLogger("runs.notify")
State = Notification.State
MAX_BACKOFF_SECONDS = 3600
SENDERS = {Notification.Channel.EMAIL: send_email, Notification.Channel.WEBHOOK: send_webhook}


def backoff(attempts: int) -> timedelta:
    """Wait before the next attempt: the base, doubled after each failed attempt, at most an hour."""
    seconds = settings.SCRIPTHUT_NOTIFY.backoff_seconds * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, MAX_BACKOFF_SECONDS))


def due(now: datetime) -> Q:
    stale = now - timedelta(seconds=settings.SCRIPTHUT_NOTIFY.claim_seconds)
    return Q(state=State.PENDING, next_attempt_at__lte=now) | Q(state=State.SENDING, claimed_at__lte=stale)


def claim(limit: int) -> list[Notification]:
    """Take up to ``limit`` due rows for this worker; rows another worker holds locked are skipped."""
    now = timezone.now()
    with transaction.atomic():
        rows = Notification.objects.select_for_update(skip_locked=True).filter(due(now))
        notes = list(rows.order_by("next_attempt_at", "id")[:limit])
        Notification.objects.filter(pk__in=[n.pk for n in notes]).update(
            state=State.SENDING, claimed_at=now, attempts=F("attempts") + 1
        )
    for note in notes:
        note.state, note.claimed_at, note.attempts = State.SENDING, now, note.attempts + 1
    return notes


def _finish(note: Notification, **fields: object) -> None:
    """Record the outcome, unless the claim was lost meanwhile (another worker reclaimed the row)."""
    Notification.objects.filter(pk=note.pk, state=State.SENDING, claimed_at=note.claimed_at).update(**fields)


def send_one(note: Notification) -> bool:
    """One attempt; True if the message was accepted."""
    if note.attempts > settings.SCRIPTHUT_NOTIFY.max_attempts:  # a worker died on its last attempt
        _finish(note, state=State.FAILED, last_error=note.last_error or "the worker stopped while sending")
        return False
    try:
        SENDERS[Notification.Channel(note.channel)](note)
    except DeliveryError as exc:
        last = isinstance(exc, PermanentDeliveryError) or note.attempts >= settings.SCRIPTHUT_NOTIFY.max_attempts
        log.warning("notification %s (%s, attempt %d): %s", note.pk, note.channel, note.attempts, exc)
        if last:
            _finish(note, state=State.FAILED, last_error=str(exc))
        else:
            _finish(
                note, state=State.PENDING, last_error=str(exc), next_attempt_at=timezone.now() + backoff(note.attempts)
            )
        return False
    _finish(note, state=State.SENT, sent_at=timezone.now(), last_error="")
    return True


def deliver_due(limit: int = 50) -> int:
    """Send every due notification (in batches of ``limit``); how many were accepted."""
    sent = 0
    while notes := claim(limit):
        sent += sum(send_one(note) for note in notes)
        if len(notes) < limit:
            break
    return sent
