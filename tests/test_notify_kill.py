"""A Celery worker killed (kill -9) in the middle of sending a webhook: after a restart the
notification is delivered, with the same idempotency key, so exactly one logical delivery."""

from __future__ import annotations

import mailbox
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.db import connection

from runs.models import Notification, NotificationPreference
from runs.notify.outbox import enqueue
from tests.notify_receivers import WebhookReceiver, webhook_server
from tests.services import ChildProcess, accepts_connections, free_port
from tests.test_celery import CELERY, redis_up

REDIS_URL = "redis://127.0.0.1:6379/8"  # this lane's Redis database
ROOT = Path(__file__).parent.parent


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST']}:{s['PORT'] or 5432}/{s['NAME']}"


def start_worker(tmp_path: Path, name: str, **extra_env: str) -> ChildProcess:
    """A Celery worker with embedded beat, in its own process group (so that kill -9 takes its beat too)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env |= {
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": _database_url(),
        "PYTHONPATH": str(ROOT),
        "SCRIPTHUT_NOTIFY_EVERY_SECONDS": "0.3",
        "SCRIPTHUT_NOTIFY_CLAIM_SECONDS": "3",
        "SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE": "1",
        **extra_env,
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


@pytest.mark.services
@pytest.mark.faults
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


@pytest.mark.services
@pytest.mark.faults
@pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_send_of_an_email_resends_it_with_the_same_message_id(user, tmp_path):
    maildir = tmp_path / "maildir"
    port = free_port()
    smtp_cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}"]
    smtp_cmd += ["-c", "tests.smtp_stall.StallFirst", str(maildir)]
    smtp_env = os.environ | {"PYTHONPATH": str(ROOT)}
    smtp = ChildProcess.start("aiosmtpd", smtp_cmd, tmp_path / "smtp.log", env=smtp_env, cwd=ROOT)
    smtp.wait_until(lambda: accepts_connections(port))
    redis.Redis.from_url(REDIS_URL).flushdb()
    mail = {"SCRIPTHUT_SMTP_HOST": "127.0.0.1", "SCRIPTHUT_SMTP_PORT": str(port)}
    messages = lambda: list(mailbox.Maildir(maildir, create=False)) if maildir.exists() else []  # noqa: E731
    try:
        NotificationPreference.objects.create(user=user, on="always", email="alice@example.org")
        enqueue(user=user, event="run.failed", subject="run failed", payload={"run_id": "r1"}, dedupe_key="r1:failed")
        note = Notification.objects.get()
        first = start_worker(tmp_path, "first", **mail)
        try:
            wait_for(lambda: len(messages()) == 1, first)  # stored; the server holds its "250 OK"
        finally:
            kill_group(first)
        second = start_worker(tmp_path, "second", **mail)
        try:
            wait_for(lambda: Notification.objects.get().state == "sent", second)
        finally:
            kill_group(second, signal.SIGTERM)
    finally:
        smtp.stop()
        redis.Redis.from_url(REDIS_URL).flushdb()
    ids = [m["Message-ID"] for m in messages()]
    assert ids == [f"<{note.idempotency_key}@scripthut.notify>"] * 2  # one message per key: the copy can be dropped


@pytest.mark.django_db(transaction=True)
def test_two_senders_side_by_side_send_each_notification_once(user, tmp_path):
    receiver = WebhookReceiver()
    for url in webhook_server(receiver):
        NotificationPreference.objects.create(user=user, on="always", webhook_url=url)
        for i in range(200):
            enqueue(user=user, event="budget.crossed", subject=f"alert {i}", payload={"i": i}, dedupe_key=f"b:{i}")
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env |= {"DATABASE_URL": _database_url(), "PYTHONPATH": str(ROOT), "SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE": "1"}
        cmd = [sys.executable, "manage.py", "deliver_notifications", "--until-idle"]
        senders = [
            subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in "ab"
        ]
        outputs = [sender.communicate(timeout=120)[0].decode() for sender in senders]
    assert all(sender.returncode == 0 for sender in senders), outputs
    keys = [r["headers"]["Idempotency-Key"] for r in receiver.requests]
    assert len(keys) == 200 and len(set(keys)) == 200, outputs  # none twice, none lost
    assert Notification.objects.filter(state="sent").count() == 200
    sent_by = [int(out.split()[0]) for out in outputs]
    assert sum(sent_by) == 200
