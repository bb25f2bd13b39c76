"""Engine benchmark: validate + store a 10,000-task workflow, then tick it to the end.

    python bench/engine_bench.py [--sizes 1000,10000] [--max-concurrent 200]

Uses a temporary SQLite data dir unless DATABASE_URL is set (then that database,
with tables created by migrate). The tick part uses an in-memory backend that
completes every job at its next poll, so it measures the engine alone.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import bootstrap  # noqa: E402  (sets up Django for this script)

bootstrap.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402

from backends import base, registry  # noqa: E402
from backends.base import BackendAdapter, JobSpec, JobState, JobStatus, PollResult, SubmitResult  # noqa: E402
from backends.models import Backend  # noqa: E402
from runs.actions import create_run  # noqa: E402
from runs.engine.tick import tick_due_backends  # noqa: E402
from runs.models import Run, Task  # noqa: E402
from runs.workflows.parse import validate  # noqa: E402


class InstantBackend(base.FileLogs, BackendAdapter):
    """Accepts every job and reports it completed at the next poll; logs are files never written."""

    def render_script(self, job: JobSpec) -> str:
        return f"#!/bin/bash\n{job.command}\n"

    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        return [SubmitResult(tag=job.tag, job_id=job.tag) for job, _ in jobs]

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        return PollResult({j: JobStatus(j, JobState.COMPLETED, exit_code=0, elapsed_seconds=1.0) for j in job_ids})

    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        return {}

    def cancel(self, job_ids: Sequence[str]) -> None:
        pass


def workflow(groups: int, per_group: int) -> list[dict]:
    tasks: list[dict] = []
    for g in range(groups):
        tasks.append({"id": f"prep.{g:04d}", "name": f"Prep {g}", "command": "true"})
    for g in range(groups):
        for i in range(per_group):
            tasks.append(
                {"id": f"sim.{g:04d}.{i:04d}", "name": "Sim", "command": f"run {g} {i}", "deps": [f"prep.{g:04d}"]}
            )
        tasks.append({"id": f"report.{g:04d}", "name": "Report", "command": "true", "deps": [f"sim.{g:04d}.*"]})
    tasks.append({"id": "final", "name": "Final", "command": "true", "deps": ["report.*"]})
    return tasks


def measure(n_tasks: int, owner: User, backend: Backend) -> dict[str, float]:
    groups = 100
    per_group = max(1, -(-(n_tasks - 2 * groups - 1) // groups))  # ceiling: at least n_tasks
    tasks = workflow(groups, per_group)
    t0 = time.perf_counter()
    validate(tasks)
    t_validate = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = create_run(
        owner=owner,
        backend=backend,
        payload=tasks,
        workflow_name=f"bench-{n_tasks}",
        max_concurrent=backend.max_concurrent,
    )
    t_create = time.perf_counter() - t0
    ticks, tick_times, queries = 0, [], []
    t0 = time.perf_counter()
    while not run.is_finished:
        reset_queries()
        start = time.perf_counter()
        tick_due_backends(force=True)
        tick_times.append(time.perf_counter() - start)
        queries.append(len(connection.queries))
        ticks += 1
        run.refresh_from_db()
    total = time.perf_counter() - t0
    assert run.status == Run.Status.COMPLETED, run.status
    done = Task.objects.filter(run=run).count()
    return {
        "tasks": len(tasks),
        "validate_s": t_validate,
        "create_s": t_create,
        "ticks": ticks,
        "tick_median_ms": sorted(tick_times)[len(tick_times) // 2] * 1000,
        "tick_max_ms": max(tick_times) * 1000,
        "total_s": total,
        "tasks_per_s": done / total,
        "queries_per_tick": sum(queries) / len(queries),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated workflow sizes")
    parser.add_argument("--max-concurrent", type=int, default=200)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    from django.conf import settings

    settings.DEBUG = True  # count queries
    registry.adapter_class = lambda kind: InstantBackend  # type: ignore[assignment]
    # Staff: the local backend runs tasks on the portal host, which only staff may use.
    owner, _ = User.objects.update_or_create(username="bench", defaults={"is_staff": True})
    backend, _ = Backend.objects.update_or_create(
        name="bench", defaults={"kind": "local", "max_concurrent": args.max_concurrent, "poll_interval": 1}
    )
    print(f"database: {connection.vendor}; backend max_concurrent {args.max_concurrent}")
    print(
        f"{'tasks':>7} {'validate':>9} {'store':>7} {'ticks':>6} {'tick med':>9} {'tick max':>9} "
        f"{'queries/tick':>13} {'tasks/s':>8}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, owner, backend)
        print(
            f"{r['tasks']:>7} {r['validate_s']:>8.3f}s {r['create_s']:>6.3f}s {r['ticks']:>6} "
            f"{r['tick_median_ms']:>7.1f}ms {r['tick_max_ms']:>7.1f}ms {r['queries_per_tick']:>13.0f} "
            f"{r['tasks_per_s']:>8.0f}"
        )


if __name__ == "__main__":
    main()
