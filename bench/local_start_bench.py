"""Local backend: how long a task shows "submitted" after it started, and what a submit costs.

    python bench/local_start_bench.py [--jobs 40] [--poll-interval 10]

The local launcher now returns once the job's runner has started, and the tick polls a
local backend again right after submitting: a task is "running" when its submitting tick
ends, instead of one poll interval later. This measures both sides of that trade:

* seconds from a run's creation until every task is ``running`` in the database (what
  the run page shows), ticking as the embedded ticker does (0.2 s, backend due only
  after its poll interval);
* milliseconds per job of the local adapter's ``submit`` (the launcher's wait included).

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

from backends.models import Backend  # noqa: E402
from runs.actions import cancel_run, create_run  # noqa: E402
from runs.engine.tick import tick_due_backends  # noqa: E402
from runs.models import Task  # noqa: E402


def time_to_running(owner: User, backend: Backend, jobs: int) -> tuple[float, float]:
    """(seconds until every task runs, seconds the submitting tick took)."""
    tasks = [{"id": f"t{i}", "name": f"t{i}", "command": "sleep 60"} for i in range(jobs)]
    run = create_run(owner=owner, backend=backend, payload=tasks, workflow_name="bench", max_concurrent=jobs)
    start = time.perf_counter()
    first_tick = 0.0
    while Task.objects.filter(run=run).exclude(state="running").exists():
        before = time.perf_counter()
        tick_due_backends()
        if not first_tick and Task.objects.filter(run=run).exclude(state="pending").exists():
            first_tick = time.perf_counter() - before
        time.sleep(0.2)
        if time.perf_counter() - start > 120:
            raise RuntimeError("tasks did not all start in 120 s")
    elapsed = time.perf_counter() - start
    cancel_run(run)
    tick_due_backends(force=True)
    return elapsed, first_tick


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--poll-interval", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    owner, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True})
    backend, _ = Backend.objects.update_or_create(
        name="bench-local",
        defaults={"kind": "local", "max_concurrent": args.jobs, "poll_interval": args.poll_interval},
    )
    print(f"{args.jobs} local jobs per run, poll interval {args.poll_interval}s")
    results = [time_to_running(owner, backend, args.jobs) for _ in range(args.repeat)]
    waits = [r[0] for r in results]
    ticks = [r[1] for r in results]
    each = ", ".join(f"{w:.2f}" for w in waits)
    print(f"created -> all running: median {statistics.median(waits):.2f}s (runs: {each})")
    per_job = [t / args.jobs * 1000 for t in ticks]
    print(f"submitting tick: median {statistics.median(ticks):.2f}s = {statistics.median(per_job):.1f} ms per job")


if __name__ == "__main__":
    main()
