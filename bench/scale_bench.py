"""Scale: nothing a user or the engine does grows with a run's size, while the run runs.

    python bench/scale_bench.py [--sizes 1000,100000] [--seconds 30] [--slots 16]

For each size, a run of that many instant tasks (``true``) on the local backend runs under
the embedded ticker thread for ``--seconds``; meanwhile a client reads the run page
(``GET /runs/<id>``) and the API (``GET /api/runs/<id>``) in turn (Django's test client,
in process). Printed per size: page and API time (median, p95), the ticks' time (median,
p95) and the tasks completed per second. Flat figures across sizes are the target.
Uses a temporary SQLite data dir unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import statistics
import time

import bootstrap  # noqa: E402  (sets up Django for this script)

bootstrap.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

import runs.engine.tick as tick  # noqa: E402
from backends.models import Backend  # noqa: E402
from runs.actions import cancel_run, create_run  # noqa: E402
from runs.models import ApiToken, Task  # noqa: E402
from runs.workers.ticker import EmbeddedTicker  # noqa: E402

tick_seconds: list[float] = []
_original_tick = tick.tick_backend


def timed_tick(backend: Backend) -> bool:
    start = time.perf_counter()
    try:
        return _original_tick(backend)
    finally:
        tick_seconds.append(time.perf_counter() - start)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[int(p * (len(ordered) - 1))] if ordered else float("nan")


def one_size(user: User, backend: Backend, size: int, seconds: float) -> None:
    payload = [{"id": f"t{i:06d}", "name": "t", "command": "true"} for i in range(size)]
    run = create_run(owner=user, backend=backend, payload=payload, workflow_name=f"scale-{size}", max_concurrent=size)
    token = {"Authorization": f"Token {ApiToken.issue(user)}"}
    page, api = Client(SERVER_NAME="localhost"), Client(SERVER_NAME="localhost", headers=token)
    page.force_login(user)
    pages: list[float] = []
    apis: list[float] = []
    tick_seconds.clear()
    ticker = EmbeddedTicker()
    ticker.start()
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            for client, url, into in ((page, f"/runs/{run.pk}", pages), (api, f"/api/runs/{run.pk}", apis)):
                t0 = time.perf_counter()
                response = client.get(url)
                into.append(time.perf_counter() - t0)
                assert response.status_code == 200, (url, response.status_code, response.content[:300])
            time.sleep(0.2)
    finally:
        ticker.stop()
        ticker.join()
    done = Task.objects.filter(run=run, state="completed").count()
    elapsed = time.perf_counter() - start
    run.refresh_from_db()
    if not run.is_finished:  # a small run may be done within --seconds
        cancel_run(run)
    print(
        f"{size:>7,} tasks: run page median {statistics.median(pages) * 1000:.0f} ms"
        f" p95 {pct(pages, 0.95) * 1000:.0f} ms;"
        f" API median {statistics.median(apis) * 1000:.0f} ms p95 {pct(apis, 0.95) * 1000:.0f} ms;"
        f" tick median {statistics.median(tick_seconds) * 1000:.0f} ms p95 {pct(tick_seconds, 0.95) * 1000:.0f} ms"
        f" ({len(tick_seconds)} ticks); {done / elapsed:.1f} tasks/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--slots", type=int, default=16)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    tick.tick_backend = timed_tick  # type: ignore[assignment]
    user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True})
    backend, _ = Backend.objects.update_or_create(
        name="scale-local", defaults={"kind": "local", "max_concurrent": args.slots, "poll_interval": 60}
    )
    for size in [int(s) for s in args.sizes.split(",")]:
        one_size(user, backend, size, args.seconds)


if __name__ == "__main__":
    main()
