"""Email delivery through Django's email backend (SMTP settings: scripthut_site.notify_settings).

The Message-ID is derived from the idempotency key, so a message re-sent after a worker died
mid-send carries the same Message-ID and mail software can drop the repeat.
"""

from __future__ import annotations

import smtplib

from django.conf import settings
from django.core.mail import EmailMessage

from runs.notify.errors import DeliveryError, PermanentDeliveryError
from runs.notify.models import Notification
from runs.notify.quoting import quoted

NAME_IN_BODY = 120  # characters of a run's name in an email's body


def message_id(note: Notification) -> str:
    return f"<{note.idempotency_key}@scripthut.notify>"


def text(note: Notification) -> str:
    payload = note.payload
    lines = [note.subject, ""]
    if payload.get("note"):
        lines += [payload["note"], ""]
    for label, key in (("Run", "run_id"), ("Name", "name"), ("Status", "status"), ("Tasks", "total")):
        if payload.get(key) is not None:
            value = quoted(str(payload[key]), NAME_IN_BODY) if key == "name" else payload[key]
            lines.append(f"{label}: {value}")
    for state, n in (payload.get("counts") or {}).items():
        if n:  # every state is counted; the states without tasks say nothing
            lines.append(f"  {state}: {n}")
    if payload.get("cost") is not None:
        lines.append(f"Cost: ${payload['cost']:.2f}")
    if payload.get("link"):
        lines += ["", payload["link"]]
    lines += ["", "Change what you receive at /settings/notifications."]
    return "\n".join(lines)


def send_email(note: Notification) -> None:
    message = EmailMessage(
        subject=note.subject,
        body=text(note),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[note.target],
        headers={"Message-ID": message_id(note), "X-ScriptHut-Idempotency-Key": note.idempotency_key},
    )
    try:
        message.send()
    except smtplib.SMTPRecipientsRefused:
        raise PermanentDeliveryError("the mail server refused the recipient address") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {settings.EMAIL_HOST}:{settings.EMAIL_PORT}: {type(exc).__name__}: {exc}") from None
