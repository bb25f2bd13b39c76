"""Fair-share benchmark: many users, many runs on one backend, ticked to the end.

    python bench/fair_share_bench.py [--users 10] [--runs-per-user 5] [--tasks 200] [--max-concurrent 100]

Same in-memory backend as bench/engine_bench.py (every job completes at its next poll),
so it measures the engine alone: queries and time per tick with many runs at once, and
how evenly the first tick's slots went to the users (old code: all to the oldest run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import bootstrap  # noqa: E402  (sets up Django for this script)

bootstrap.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402
from engine_bench import InstantBackend  # noqa: E402

from backends import registry  # noqa: E402
from backends.models import Backend  # noqa: E402
from runs.actions import create_run  # noqa: E402
from runs.engine.states import RUN_UNFINISHED  # noqa: E402
from runs.engine.tick import tick_due_backends  # noqa: E402
from runs.models import Run, Task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--runs-per-user", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--max-concurrent", type=int, default=100)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    from django.conf import settings

    settings.DEBUG = True  # count queries
    registry.adapter_class = lambda kind: InstantBackend  # type: ignore[assignment]
    backend, _ = Backend.objects.update_or_create(
        name="fair", defaults={"kind": "local", "max_concurrent": args.max_concurrent, "poll_interval": 1}
    )
    tasks = [{"id": f"t{n:05d}", "name": "T", "command": "true"} for n in range(args.tasks)]
    runs = []
    for u in range(args.users):
        owner, _ = User.objects.update_or_create(username=f"fair{u}", defaults={"is_staff": True})
        for r in range(args.runs_per_user):
            runs.append(create_run(owner=owner, backend=backend, payload=tasks, workflow_name=f"u{u}r{r}"))
    tick_due_backends(force=True)
    first = Counter(
        Task.objects.filter(run__in=runs).exclude(state="pending").values_list("run__owner__username", flat=True)
    )
    times, queries, ticks = [], [], 1
    start = time.perf_counter()
    while Run.objects.filter(pk__in=[r.pk for r in runs], status__in=RUN_UNFINISHED).exists():
        reset_queries()
        t0 = time.perf_counter()
        tick_due_backends(force=True)
        times.append(time.perf_counter() - t0)
        queries.append(len(connection.queries))
        ticks += 1
    total = time.perf_counter() - start
    done = Task.objects.filter(run__in=runs, state="completed").count()
    per_user = [first.get(f"fair{u}", 0) for u in range(args.users)]
    print(
        f"database: {connection.vendor}; {args.users} users x {args.runs_per_user} runs x {args.tasks} tasks;"
        f" backend max_concurrent {args.max_concurrent}"
    )
    print(f"first tick, slots per user: min {min(per_user)} max {max(per_user)}")
    print(
        f"ticks {ticks}  tick median {statistics.median(times) * 1000:.1f}ms  max {max(times) * 1000:.1f}ms"
        f"  queries/tick {sum(queries) / len(queries):.0f}  tasks/s {done / total:.0f}"
    )


if __name__ == "__main__":
    main()
