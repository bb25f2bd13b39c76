"""Webhook delivery: a JSON POST with the idempotency key in the ``Idempotency-Key`` header and the body.

Slack-style incoming webhooks (hooks.slack.com, or flagged by the user) get ``{"text": ...}``,
which Slack, Mattermost, Rocket.Chat and Teams' Slack-compatible hooks all accept.
"""

from __future__ import annotations

from typing import Any

import requests

from runs.notify.errors import DeliveryError
from runs.notify.models import Notification
from runs.notify.webhook_url import check_destination, redacted

TIMEOUT_SECONDS = 10


def body(note: Notification) -> dict[str, Any]:
    if note.slack:
        return {"text": slack_text(note)}
    return {"idempotency_key": note.idempotency_key, "event": note.event, "subject": note.subject, **note.payload}


def slack_text(note: Notification) -> str:
    payload = note.payload
    lines = [note.subject]
    counts = {state: n for state, n in (payload.get("counts") or {}).items() if n}  # every state is counted
    if counts:
        lines.append(", ".join(f"{n} {state}" for state, n in counts.items()))
    if payload.get("cost") is not None:
        lines.append(f"cost: ${payload['cost']:.2f}")
    if payload.get("link"):
        lines.append(f"<{payload['link']}|Open the run>")
    return "\n".join(lines)


def send_webhook(note: Notification) -> None:
    url = note.target
    check_destination(url)
    headers = {
        "Idempotency-Key": note.idempotency_key,
        "X-ScriptHut-Event": note.event,
        "User-Agent": "ScriptHut-Notify/1",
    }
    try:
        response = requests.post(url, json=body(note), headers=headers, timeout=TIMEOUT_SECONDS, allow_redirects=False)
    except requests.Timeout:
        raise DeliveryError(f"{redacted(url)}: no answer in {TIMEOUT_SECONDS}s") from None
    except requests.RequestException as exc:
        # The exception's text holds the full URL (and so its token): name only its kind.
        raise DeliveryError(f"{redacted(url)}: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"{redacted(url)} answered HTTP {response.status_code}")
