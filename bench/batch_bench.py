"""AWS Batch polling against the emulator (moto's server over loopback HTTP).

    python bench/batch_bench.py [--n 2000] [--polls 5]

Submits N jobs to a Batch queue, then polls them through the adapter as the engine
does, and reports API calls per poll (target: describe_jobs ceil(N/100)) and seconds
per poll. The first poll also lists the queue's active jobs (for jobs others
submitted); later polls reuse that listing for EXTERNAL_LIST_SECONDS, so the steady
state is describe_jobs only. Uses a temporary SQLite data dir unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections import Counter
from typing import Any

import bootstrap  # noqa: E402  (sets up Django for this script)

bootstrap.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from moto.batch import models as batch_models  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from backends.batch.adapter import BatchAdapter  # noqa: E402
from backends.config import validate_backend_settings  # noqa: E402
from backends.models import Backend  # noqa: E402
from backends.registry import get_adapter  # noqa: E402
from runs.actions import create_run  # noqa: E402
from runs.engine.tick import tick_due_backends  # noqa: E402
from tests.aws import MotoServer, batch_world, finish_job, moto_job  # noqa: E402
from tests.services import free_port  # noqa: E402


def count_calls(client: Any) -> Counter[str]:
    calls: Counter[str] = Counter()
    client.meta.events.register("before-call.batch.*", lambda model, **_: calls.update([model.name]))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--polls", type=int, default=5)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ[name] = value
    call_command("migrate", verbosity=0)
    setattr(batch_models.Job, "run", lambda self: None)  # noqa: B010  (jobs stay as the bench leaves them)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        run_bench(MotoServer(f"http://127.0.0.1:{port}"), args.n, args.polls)
    finally:
        server.stop()


def run_bench(server: MotoServer, n: int, polls: int) -> None:
    world = batch_world(server)
    settings = {"aws": {"region": "us-east-1", "job_queue": world.queue, "endpoint_url": server.url}}
    backend = Backend.objects.create(
        name="bench-batch",
        kind="batch",
        settings=validate_backend_settings("batch", {**settings, "job_definition": world.job_definition}),
    )
    client = server.client("batch")
    started = time.perf_counter()
    ids = [
        client.submit_job(jobName=f"bench-{i}", jobQueue=world.queue, jobDefinition=world.job_definition)["jobId"]
        for i in range(n)
    ]  # noqa: E501
    print(f"submitted {n} jobs directly in {time.perf_counter() - started:.1f} s")
    for job_id in ids[: n // 2]:  # half of them finished, a quarter running, a quarter queued
        finish_job(job_id, 0)
    for job_id in ids[n // 2 : 3 * n // 4]:
        moto_job(job_id).status = "RUNNING"
    adapter = get_adapter(backend)
    assert isinstance(adapter, BatchAdapter)
    calls = count_calls(adapter.batch)
    seconds = []
    for number in range(polls):
        calls.clear()
        began = time.perf_counter()
        result = adapter.poll(ids)
        seconds.append(time.perf_counter() - began)
        assert len(result.statuses) == n and all(s.state != "unknown" for s in result.statuses.values())
        print(f"poll {number + 1}: {dict(calls)} in {seconds[-1]:.2f} s; {len(result.observed)} jobs observed")
    print(
        f"\nN={n}: describe_jobs calls per poll {calls['DescribeJobs']} (target ceil(N/100) = {math.ceil(n / 100)}); "
        f"seconds per poll: median {statistics.median(seconds):.2f}, "
        f"first (with the queue listing) {seconds[0]:.2f}, min {min(seconds):.2f}, max {max(seconds):.2f}"
    )
    engine_ticks(backend, n, polls)


def engine_ticks(backend: Backend, n: int, ticks: int) -> None:
    """The same through the engine: a run of N tasks submitted, then whole ticks (poll
    phase and the database updates) while all N jobs are live."""
    owner = User.objects.create_user("bench")
    run = create_run(
        owner=owner,
        backend=backend,
        payload=[{"id": f"t{i}", "name": "t", "command": "true"} for i in range(n)],
        workflow_name="bench",
        max_concurrent=n,
    )
    Backend.objects.filter(pk=backend.pk).update(max_concurrent=n)
    adapter = get_adapter(Backend.objects.get(pk=backend.pk))
    assert isinstance(adapter, BatchAdapter)
    calls = count_calls(adapter.batch)
    submitted = time.perf_counter()
    tick_due_backends(force=True)
    took = time.perf_counter() - submitted
    print(f"engine: submitted {run.tasks.filter(state='submitted').count()} tasks in one tick, {took:.1f} s")
    for number in range(ticks):
        calls.clear()
        began = time.perf_counter()
        tick_due_backends(force=True)
        print(f"engine tick {number + 1} with {n} live jobs: {dict(calls)} in {time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    main()
