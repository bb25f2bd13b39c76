"""Delivery to real receivers on loopback: an SMTP server (aiosmtpd) and an HTTP webhook server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from runs.models import Notification, NotificationPreference
from runs.notify.deliver import deliver_due
from runs.notify.outbox import enqueue
from tests.notify_receivers import SmtpServer, WebhookReceiver, smtp_server, webhook_server

pytestmark = pytest.mark.django_db
PAYLOAD = {"run_id": "abc123", "name": "wf", "status": "failed", "counts": {"failed": 1}, "cost": 1.5, "link": "/x"}


def notify_config(**changes: Any) -> override_settings:
    return override_settings(SCRIPTHUT_NOTIFY=replace(settings.SCRIPTHUT_NOTIFY, **changes))


@pytest.fixture
def smtp(tmp_path) -> Iterator[SmtpServer]:
    yield from smtp_server(tmp_path)


def real_smtp(server: SmtpServer) -> override_settings:
    """Django's SMTP backend (the test runner swaps in an in-memory one) aimed at ``server``."""
    backend = "django.core.mail.backends.smtp.EmailBackend"
    return override_settings(EMAIL_BACKEND=backend, EMAIL_HOST="127.0.0.1", EMAIL_PORT=server.port)


def _send_to(user, *, email: str = "", webhook: str = "", slack: bool = False, key: str = "event-1") -> None:
    NotificationPreference.objects.update_or_create(
        user=user, defaults={"on": "always", "email": email, "webhook_url": webhook, "webhook_slack": slack}
    )
    user.email = ""
    user.save()
    enqueue(user=user, event="run.failed", subject="ScriptHut: run wf failed", payload=PAYLOAD, dedupe_key=key)


def test_email_reaches_a_real_smtp_server_with_a_message_id_from_the_key(user, smtp):
    _send_to(user, email="alice@example.org")
    with real_smtp(smtp):
        assert deliver_due() == 1
    (message,) = smtp.messages()
    note = Notification.objects.get()
    assert note.state == "sent" and note.attempts == 1
    assert message["To"] == "alice@example.org" and message["Subject"] == "ScriptHut: run wf failed"
    assert message["Message-ID"] == f"<{note.idempotency_key}@scripthut.notify>"
    body = message.get_payload()
    assert "Status: failed" in body and "Cost: $1.50" in body and "/x" in body


def test_an_email_resent_after_a_dead_worker_has_the_same_message_id(user, smtp, time_machine):
    _send_to(user, email="alice@example.org")
    with real_smtp(smtp), notify_config(claim_seconds=60):
        time_machine.move_to(timezone.now(), tick=False)
        deliver_due()
        # As a worker killed after the server took the message, before it recorded "sent", leaves it:
        Notification.objects.update(state="sending", claimed_at=timezone.now())
        time_machine.shift(timedelta(seconds=59))
        assert deliver_due() == 0  # its claim still holds
        time_machine.shift(timedelta(seconds=2))
        assert deliver_due() == 1
    ids = [m["Message-ID"] for m in smtp.messages()]
    assert len(ids) == 2 and len(set(ids)) == 1  # one message per key: the receiver can drop the copy


def test_a_webhook_answered_500_then_200_is_delivered_once_after_the_retry(user, time_machine):
    receiver = WebhookReceiver(fail_first=1)
    for url in webhook_server(receiver):
        _send_to(user, webhook=url)
        with notify_config(backoff_seconds=60):
            assert deliver_due() == 0
            note = Notification.objects.get()
            assert note.state == "pending" and note.attempts == 1 and "HTTP 500" in note.last_error
            assert "sekrit-token" not in note.last_error  # the URL's token is never in an error
            time_machine.move_to(note.next_attempt_at + timedelta(seconds=1), tick=True)
            assert deliver_due() == 1
    note.refresh_from_db()
    assert note.state == "sent" and note.attempts == 2
    assert len(receiver.requests) == 2
    keys = {r["headers"]["Idempotency-Key"] for r in receiver.requests}
    assert keys == {note.idempotency_key} and list(receiver.deliveries) == [note.idempotency_key]
    body = receiver.deliveries[note.idempotency_key]
    assert body["idempotency_key"] == note.idempotency_key
    assert {body[k] for k in ("run_id", "name", "status", "cost", "link")} == {"abc123", "wf", "failed", 1.5, "/x"}
    assert body["counts"] == {"failed": 1}


def test_the_retry_waits_for_its_backoff(user, time_machine):
    receiver = WebhookReceiver(fail_first=1)
    for url in webhook_server(receiver):
        _send_to(user, webhook=url)
        with notify_config(backoff_seconds=600):
            time_machine.move_to(timezone.now(), tick=False)
            deliver_due()
            note = Notification.objects.get()
            assert note.next_attempt_at - timezone.now() == timedelta(seconds=600)
            time_machine.shift(timedelta(seconds=599))
            assert deliver_due() == 0  # not due yet
            assert len(receiver.requests) == 1
            time_machine.shift(timedelta(seconds=2))
            assert deliver_due() == 1
    assert len(receiver.requests) == 2


def test_a_delivery_that_keeps_failing_ends_failed_with_its_last_error(user):
    receiver = WebhookReceiver(fail_first=99)
    for url in webhook_server(receiver):
        _send_to(user, webhook=url)
        with notify_config(backoff_seconds=0, max_attempts=3):
            for _ in range(5):
                deliver_due()
    note = Notification.objects.get()
    assert note.state == "failed" and note.attempts == 3 and len(receiver.requests) == 3
    assert "HTTP 500" in note.last_error


def test_a_slack_style_webhook_gets_a_text_body(user):
    receiver = WebhookReceiver()
    for url in webhook_server(receiver):
        _send_to(user, webhook=url, slack=True)
        deliver_due()
    (request,) = receiver.requests
    assert set(request["body"]) == {"text"}
    assert "ScriptHut: run wf failed" in request["body"]["text"] and "<" + "/x|Open the run>" in request["body"]["text"]
    assert request["headers"]["Idempotency-Key"] == Notification.objects.get().idempotency_key


def test_a_webhook_to_a_private_address_is_refused_unless_allowed(user):
    receiver = WebhookReceiver()
    for url in webhook_server(receiver):
        _send_to(user, webhook=url)
        with notify_config(allow_private_webhooks=False):
            deliver_due()
    note = Notification.objects.get()
    assert note.state == "failed" and "non-public address" in note.last_error and not receiver.requests


def test_an_unreachable_webhook_is_retried_and_its_url_not_logged(user, caplog):
    _send_to(user, webhook="http://127.0.0.1:9/hooks/sekrit-token")
    deliver_due()
    note = Notification.objects.get()
    assert note.state == "pending" and "ConnectionError" in note.last_error
    assert "sekrit-token" not in note.last_error and "sekrit-token" not in caplog.text


def test_an_odd_stored_address_fails_alone_and_the_other_rows_are_still_sent(user):
    receiver = WebhookReceiver()
    for url in webhook_server(receiver):
        _send_to(user, webhook="http://" + "a" * 64 + ".example/hook-token", key="odd")  # too long for IDNA
        _send_to(user, webhook=url, key="fine")
        with notify_config(allow_private_webhooks=False):
            deliver_due()
    odd = Notification.objects.get(dedupe_key="odd", channel="webhook")
    assert odd.state == "failed" and "invalid host name" in odd.last_error and "hook-token" not in odd.last_error
    fine = Notification.objects.get(dedupe_key="fine", channel="webhook")
    assert fine.state == "failed" and "non-public" in fine.last_error  # the loopback one after it was still tried
