"""Embedded mode end to end: the ticker runs a real failing run on the local backend and the
notifier thread beside it sends the webhook; a stalled receiver does not hold up the engine."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from runs.actions import create_run
from runs.models import Notification, NotificationPreference, Run
from runs.workers.ticker import EmbeddedTicker
from tests.notify_receivers import WebhookReceiver, webhook_server

FAILING = [{"id": "a", "name": "A", "command": "exit 3"}]


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.django_db(transaction=True)
def test_the_embedded_ticker_runs_and_notifies_without_waiting_for_a_slow_receiver(user, local_backend, monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)  # threads' connections closed
    receiver = WebhookReceiver(stall_first=True)
    for url in webhook_server(receiver):
        NotificationPreference.objects.create(user=user, on="always", webhook_url=url)
        ticker = EmbeddedTicker(interval=0.2)
        ticker.start()
        try:
            first = create_run(owner=user, backend=local_backend, payload=FAILING, workflow_name="first")
            assert wait_for(receiver.stalled.is_set, 30), "the first run's webhook never arrived"
            # The receiver holds that request (for up to the 10 s request timeout); runs go on meanwhile.
            second = create_run(owner=user, backend=local_backend, payload=FAILING, workflow_name="second")
            started = time.monotonic()
            assert wait_for(lambda run=second: Run.objects.get(pk=run.pk).is_finished, 8)
            assert time.monotonic() - started < 8 and not receiver.release.is_set()
            receiver.release.set()
            assert wait_for(lambda: Notification.objects.filter(state="sent").count() == 2, 30)
        finally:
            ticker.stop()
            ticker.join()
    bodies = sorted((r["body"]["name"], r["body"]["status"]) for r in receiver.requests)
    assert bodies == [("first", "failed"), ("second", "failed")]
    assert {r["body"]["run_id"] for r in receiver.requests} == {first.pk, second.pk}
