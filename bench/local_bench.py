"""Local backend throughput: N instant tasks (``true``) end to end, ticked by the embedded
ticker thread as ``scripthut serve`` runs it (its wake on a job's end included).

    python bench/local_bench.py [--tasks 1000] [--slots 4,16] [--poll-interval 60]

Prints seconds from the run's creation until it is completed, and tasks per second.
Uses a temporary SQLite data dir unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import time

import bootstrap  # noqa: E402  (sets up Django for this script)

bootstrap.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402

from backends.models import Backend  # noqa: E402
from runs.actions import create_run  # noqa: E402
from runs.models import Run  # noqa: E402
from runs.workers.ticker import EmbeddedTicker  # noqa: E402


def one_run(owner: User, backend: Backend, tasks: int, timeout: float) -> float:
    payload = [{"id": f"t{i:06d}", "name": "t", "command": "true"} for i in range(tasks)]
    start = time.perf_counter()
    run = create_run(owner=owner, backend=backend, payload=payload, workflow_name="bench", max_concurrent=tasks)
    while not Run.objects.get(pk=run.pk).is_finished:
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"not finished in {timeout:.0f} s")
        time.sleep(0.1)
    elapsed = time.perf_counter() - start
    status = Run.objects.get(pk=run.pk).status
    if status != "completed":
        raise RuntimeError(f"run ended {status}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", default="4,16")
    parser.add_argument("--poll-interval", type=int, default=60)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    owner, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True})
    ticker = EmbeddedTicker()
    ticker.start()
    try:
        for slots in [int(s) for s in args.slots.split(",")]:
            backend, _ = Backend.objects.update_or_create(
                name=f"bench-local-{slots}",
                defaults={"kind": "local", "max_concurrent": slots, "poll_interval": args.poll_interval},
            )
            elapsed = one_run(owner, backend, args.tasks, args.timeout)
            print(
                f"{args.tasks} instant tasks, {slots} slots, poll interval {args.poll_interval}s:"
                f" {elapsed:.1f} s ({args.tasks / elapsed:.1f} tasks/s)"
            )
    finally:
        ticker.stop()
        ticker.join()


if __name__ == "__main__":
    main()
