"""A Celery worker killed (kill -9) in the middle of sending a webhook: after a restart the
notification is delivered, with the same idempotency key, so exactly one logical delivery."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from django.db import connection

from runs.models import Notification, NotificationPreference
from runs.notify.outbox import enqueue
from tests.notify_receivers import WebhookReceiver, webhook_server
from tests.services import ChildProcess
from tests.test_celery import CELERY, redis_up

REDIS_URL = "redis://127.0.0.1:6379/8"  # this lane's Redis database
ROOT = Path(__file__).parent.parent


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST']}:{s['PORT'] or 5432}/{s['NAME']}"


def start_worker(tmp_path: Path, name: str) -> ChildProcess:
    """A Celery worker with embedded beat, in its own process group (so that kill -9 takes its beat too)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env |= {
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": _database_url(),
        "PYTHONPATH": str(ROOT),
        "SCRIPTHUT_NOTIFY_EVERY_SECONDS": "0.3",
        "SCRIPTHUT_NOTIFY_CLAIM_SECONDS": "3",
        "SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE": "1",
    }
    cmd = [CELERY, "-A", "scripthut_site", "worker", "--beat", "--pool", "solo", "--loglevel", "info"]
    cmd += ["--schedule", str(tmp_path / f"beat-{name}"), "-n", f"notify-{name}@%h"]
    log = tmp_path / f"worker-{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    return ChildProcess(f"celery worker {name}", proc, log)


def kill_group(worker: ChildProcess, sig: int = signal.SIGKILL) -> None:
    if worker.proc.poll() is None:
        os.killpg(worker.proc.pid, sig)  # the group this test created: the worker and its beat
    worker.proc.wait(30)


def wait_for(condition, worker: ChildProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out; {worker.name} log:\n{worker.log_tail()}")


@pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")
@pytest.mark.django_db(transaction=True)  # the worker process reads what this test commits
def test_a_worker_killed_mid_send_neither_loses_nor_doubles_the_webhook(user, tmp_path):
    redis.Redis.from_url(REDIS_URL).flushdb()
    receiver = WebhookReceiver(stall_first=True)
    for url in webhook_server(receiver):
        NotificationPreference.objects.create(user=user, on="always", webhook_url=url)
        enqueue(user=user, event="run.failed", subject="run failed", payload={"run_id": "r1"}, dedupe_key="r1:failed")
        note = Notification.objects.get()

        first = start_worker(tmp_path, "first")
        try:
            wait_for(receiver.stalled.is_set, first)  # the receiver holds the worker's request
            note.refresh_from_db()
            assert note.state == "sending" and note.attempts == 1
        finally:
            kill_group(first)  # kill -9 mid-send
        receiver.release.set()

        second = start_worker(tmp_path, "second")
        try:
            wait_for(lambda: Notification.objects.get().state == "sent", second)
        finally:
            kill_group(second, signal.SIGTERM)
    redis.Redis.from_url(REDIS_URL).flushdb()

    note.refresh_from_db()
    assert note.attempts == 2  # the killed attempt and the one after the claim timed out
    keys = [r["headers"]["Idempotency-Key"] for r in receiver.requests]
    assert keys == [note.idempotency_key, note.idempotency_key]  # sent again, with the same key
    assert list(receiver.deliveries) == [note.idempotency_key]  # exactly one logical delivery
