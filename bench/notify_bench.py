"""Notifications benchmark: what the outbox adds to a run's ending, and how fast senders empty it.

    python bench/notify_bench.py [--runs 500] [--notifications 2000] [--senders 1,2,4]

1. Outbox cost: ``refresh_run_status`` of finishing runs, with the owner notified (an email and
   a webhook row per run) and with "never" (no row): the difference is the outbox's cost.
2. Delivery: N webhook notifications to a receiver on loopback (http.server, answers 200 at
   once), sent by 1, 2, 4 ``deliver_notifications`` processes side by side; prints deliveries/s
   and checks that none is sent twice or lost.

Temporary SQLite unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bootstrap  # noqa: E402  (sets up Django for this script)

os.environ["SCRIPTHUT_WEBHOOK_ALLOW_PRIVATE"] = "1"
bootstrap.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from backends.models import Backend  # noqa: E402
from runs.actions import create_run  # noqa: E402
from runs.engine.run_status import refresh_run_status  # noqa: E402
from runs.models import Notification, NotificationPreference, Run, Task  # noqa: E402
from runs.notify.outbox import enqueue  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
received: list[str] = []
lock = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with lock:
            received.append(self.headers.get("Idempotency-Key", ""))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def finishing_runs(owner: User, backend: Backend, n: int) -> float:
    """Seconds per run to mark n one-task runs failed and refresh their status."""
    runs = [
        create_run(
            owner=owner, backend=backend, payload=[{"id": "a", "name": "A", "command": "true"}], workflow_name="b"
        )
        for _ in range(n)
    ]
    Task.objects.filter(run__in=runs).update(state=Task.State.FAILED)
    t0 = time.perf_counter()
    for run in runs:
        refresh_run_status(run.pk)
    return (time.perf_counter() - t0) / n


def outbox_cost(n: int, backend: Backend, url: str) -> None:
    notified = User.objects.create_user("notified", email="n@example.org", is_staff=True)  # may use a local backend
    NotificationPreference.objects.create(user=notified, on="always", webhook_url=url)
    silent = User.objects.create_user("silent", is_staff=True)
    NotificationPreference.objects.create(user=silent, on="never")
    without = finishing_runs(silent, backend, n)
    with_rows = finishing_runs(notified, backend, n)
    rows = Notification.objects.filter(user=notified).count()
    print(f"run status refresh, {n} runs ending: {without * 1000:.2f} ms/run without notifications, "
          f"{with_rows * 1000:.2f} ms/run with 2 outbox rows ({rows} rows written)")  # fmt: skip
    Notification.objects.all().delete()


def database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST']}:{s['PORT'] or 5432}/{s['NAME']}"


def delivery(n: int, senders: int, owner: User) -> None:
    Notification.objects.all().delete()
    received.clear()
    for i in range(n):
        enqueue(user=owner, event="bench", subject=f"bench {i}", payload={"i": i}, dedupe_key=f"bench:{senders}:{i}")
    env = os.environ | {"DATABASE_URL": database_url(), "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    cmd = [sys.executable, str(ROOT / "manage.py"), "deliver_notifications", "--until-idle"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE) for _ in range(senders)]
    counts = [int(p.communicate()[0].split()[0]) for p in procs]
    elapsed = time.perf_counter() - t0
    duplicates = len(received) - len(set(received))
    lost = n - len(set(received))
    print(f"{senders} sender(s): {n} webhooks in {elapsed:.2f} s = {n / elapsed:.0f}/s "
          f"(per sender {counts}; duplicates {duplicates}, lost {lost})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--senders", default="1,2,4")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook/secret"
    Run.objects.all().delete()
    User.objects.filter(username__in=["notified", "silent", "bench"]).delete()
    backend, _ = Backend.objects.get_or_create(name="bench-notify", defaults={"kind": Backend.Kind.LOCAL})
    print(f"database: {connection.vendor}")
    outbox_cost(args.runs, backend, url)
    owner = User.objects.create_user("bench")
    NotificationPreference.objects.create(user=owner, on="always", webhook_url=url)
    for senders in (int(s) for s in args.senders.split(",")):
        delivery(args.notifications, senders, owner)
    server.shutdown()


if __name__ == "__main__":
    main()
