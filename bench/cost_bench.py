"""Cost benchmark: what costing adds to the engine, and how fast the sums are read.

    python bench/cost_bench.py [--engine-tasks 10000] [--usage-tasks 100000]

1. A workflow ticked to the end through an in-memory backend (engine_bench's), without
   and with pricing: costing happens in the finish step, so the difference is its cost.
2. A price list the size of the real instances.json (900 types x 30 regions): import time,
   and a refresh that finds nothing to do (what each finish step pays).
3. ``--usage-tasks`` ended tasks of 20 users on 3 backends over 12 months: the usage page's
   sums (staff, everyone), the CSV, and one 10,000-task run's header.

Uses a temporary SQLite data dir unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import bootstrap  # noqa: E402  (sets up Django for this script)

bootstrap.setup()

import engine_bench  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from backends import registry  # noqa: E402
from backends.models import Backend  # noqa: E402
from runs.costing import estimate, prices, summary, usage  # noqa: E402
from runs.costing.models import InstancePrice, PriceList  # noqa: E402
from runs.models import PortalSettings, Run, Task  # noqa: E402

REGIONS = [f"region-{i}" for i in range(30)]


def price_file(path: Path, types: int = 900) -> Path:
    items = []
    for t in range(types):
        price = f"{0.01 * (t + 1):.4f}"
        linux = {"ondemand": price, "spot_min": price, "spot_avg": price, "spot_max": price, "reserved": {"x": price}}
        items.append(
            {
                "instance_type": f"t{t}.large" if t else "c5.xlarge",
                "vCPU": 2 + t % 64,
                "memory": 4.0 + t % 256,
                "pricing": {r: {"linux": linux, "mswin": {"ondemand": price}} for r in ["us-east-1", *REGIONS]},
            }
        )
    path.write_text(json.dumps(items))
    return path


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def engine(tasks: int, owner: User, backend: Backend, rounds: int = 2) -> None:
    """Without and with pricing, alternated (the first runs warm the caches): best of each."""
    pricing = {"region": "us-east-1", "price_type": "spot_avg", "partitions": {"normal": "c5.xlarge"}, "share": "max"}
    pricing["source"] = PriceList.load().source
    best: dict[bool, dict[str, float]] = {}
    for _ in range(rounds):
        for priced in (False, True):
            PortalSettings.objects.update_or_create(pk=1, defaults={"pricing": pricing if priced else None})
            result = engine_bench.measure(tasks, owner, backend)
            if priced not in best or result["tasks_per_s"] > best[priced]["tasks_per_s"]:
                best[priced] = result
    costed = Task.objects.filter(run__workflow_name=f"bench-{tasks}", cost__isnull=False).count()
    ended = list(Task.objects.filter(run__workflow_name=f"bench-{tasks}").order_by("pk")[:tasks])
    took = min(timed(lambda: estimate.apply(ended, estimate.price_book(update=True))) for _ in range(3))
    print(
        f"costing alone (price_book with refresh check + estimate of {len(ended)} tasks): "
        f"{took * 1000:.0f} ms, {took / len(ended) * 1e6:.0f} µs per task"
    )
    plain, priced_run = best[False], best[True]
    print(
        f"engine, {plain['tasks']} tasks to the end (best of {rounds}): {plain['tasks_per_s']:.0f} tasks/s "
        f"without pricing, {priced_run['tasks_per_s']:.0f} with ({costed} tasks costed in all); "
        f"median tick {plain['tick_median_ms']:.1f} ms vs {priced_run['tick_median_ms']:.1f} ms"
    )


def usage_data(n: int, owner: User) -> Run:
    rng = random.Random(1)
    users = [User.objects.get_or_create(username=f"user{i:02d}")[0] for i in range(20)]
    backends = [Backend.objects.get_or_create(name=f"b{i}", defaults={"kind": "local"})[0] for i in range(3)]
    now = timezone.now()
    runs = [Run.objects.create(owner=users[i % 20], backend=backends[i % 3], workflow_name=f"u{i}") for i in range(100)]
    big = runs[0]
    rows = []
    for i in range(n):
        run = big if i < 10_000 else runs[1 + i % 99]
        ended = now - timedelta(days=rng.uniform(0, 360))
        rows.append(
            Task(
                run=run,
                position=i,
                task_id=f"t{i}",
                name="t",
                command="true",
                state="completed",
                cpus=1 + i % 8,
                elapsed_seconds=rng.uniform(60, 7200),
                finished_at=ended,
                cost=Decimal(f"{rng.uniform(0, 2):.6f}"),
                waste_cost=Decimal(f"{rng.uniform(0, 1):.6f}"),
            )
        )
    Task.objects.bulk_create(rows, batch_size=5000)
    return big


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine-tasks", type=int, default=10_000)
    parser.add_argument("--usage-tasks", type=int, default=100_000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    print(f"database: {connection.vendor}")
    with tempfile.TemporaryDirectory() as tmp:
        source = price_file(Path(tmp) / "instances.json")
        size_mb = source.stat().st_size / 1e6
        took = timed(prices.import_file, source)
        print(f"price import: {InstancePrice.objects.count()} prices ({size_mb:.1f} MB file) in {took:.2f} s")
        PortalSettings.objects.update_or_create(pk=1, defaults={"pricing": {"source": str(source), "partitions": {}}})
        refresh = min(timed(prices.refresh, {"source": str(source)}) for _ in range(20))
        print(f"refresh with nothing to do (each finish step): {refresh * 1000:.2f} ms")

        registry.adapter_class = lambda kind: engine_bench.InstantBackend  # type: ignore[assignment]
        owner, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True})
        backend, _ = Backend.objects.update_or_create(
            name="bench", defaults={"kind": "local", "max_concurrent": 200, "poll_interval": 1}
        )
        engine(args.engine_tasks, owner, backend)

        big = usage_data(args.usage_tasks, owner)
        staff, _ = User.objects.get_or_create(username="staff-bench", defaults={"is_staff": True})
        page = min(timed(usage.usage_context, staff, 12) for _ in range(3))
        csv = min(timed(usage.usage_csv, staff, 12, True) for _ in range(3))
        header = min(timed(summary.run_costs, [big.pk]) for _ in range(5))
        print(
            f"usage over {args.usage_tasks} ended tasks: page sums {page * 1000:.0f} ms, CSV {csv * 1000:.0f} ms; "
            f"a 10,000-task run's cost header {header * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
