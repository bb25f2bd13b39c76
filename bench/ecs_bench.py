"""AWS ECS polling against the emulator (moto's server over loopback HTTP).

    python bench/ecs_bench.py [--n 2000] [--polls 5]

Starts N ECS tasks on a Fargate cluster, then polls them through the adapter as the
engine does, and reports API calls per poll (target: describe_tasks ceil(N/100)) and
seconds per poll; then the same through whole engine ticks. moto's state manager keeps
the tasks RUNNING (live). Uses a temporary SQLite data dir unless DATABASE_URL is set.
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
from moto.server import ThreadedMotoServer  # noqa: E402

from backends.config import validate_backend_settings  # noqa: E402
from backends.ecs.adapter import EcsAdapter  # noqa: E402
from backends.models import Backend  # noqa: E402
from backends.registry import get_adapter  # noqa: E402
from runs.actions import create_run  # noqa: E402
from runs.engine.tick import tick_due_backends  # noqa: E402
from tests.aws import MotoServer  # noqa: E402
from tests.aws_ecs import ecs_world, hold_tasks  # noqa: E402
from tests.services import free_port  # noqa: E402


def count_calls(client: Any) -> Counter[str]:
    calls: Counter[str] = Counter()
    client.meta.events.register("before-call.ecs.*", lambda model, **_: calls.update([model.name]))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--polls", type=int, default=5)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ[name] = value
    call_command("migrate", verbosity=0)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        run_bench(MotoServer(f"http://127.0.0.1:{port}"), args.n, args.polls)
    finally:
        server.stop()


def run_bench(server: MotoServer, n: int, polls: int) -> None:
    hold_tasks(server)
    world = ecs_world(server)
    backend = Backend.objects.create(
        name="bench-ecs", kind="ecs", settings=validate_backend_settings("ecs", world.settings(server))
    )
    client = server.client("ecs")
    network = {"awsvpcConfiguration": {"subnets": [world.subnet], "securityGroups": [world.security_group]}}
    started = time.perf_counter()
    arns = [
        client.run_task(
            cluster=world.cluster,
            taskDefinition=world.task_definition,
            launchType="FARGATE",
            networkConfiguration=network,
            startedBy=f"bench-{i}",
        )["tasks"][0]["taskArn"]
        for i in range(n)
    ]
    print(f"started {n} tasks directly in {time.perf_counter() - started:.1f} s")
    adapter = get_adapter(backend)
    assert isinstance(adapter, EcsAdapter)
    calls = count_calls(adapter.ecs)
    seconds = []
    for number in range(polls):
        calls.clear()
        began = time.perf_counter()
        result = adapter.poll(arns)
        seconds.append(time.perf_counter() - began)
        assert len(result.statuses) == n and all(s.state == "running" for s in result.statuses.values())
        print(f"poll {number + 1}: {dict(calls)} in {seconds[-1]:.2f} s")
    print(
        f"\nN={n}: describe_tasks calls per poll {calls['DescribeTasks']} (target ceil(N/100) = {math.ceil(n / 100)}); "
        f"seconds per poll: median {statistics.median(seconds):.2f}, min {min(seconds):.2f}, max {max(seconds):.2f}"
    )
    engine_ticks(backend, n, polls)


def engine_ticks(backend: Backend, n: int, ticks: int) -> None:
    """The same through the engine: a run of N tasks started, then whole ticks (poll
    phase and the database updates) while all N tasks are live."""
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
    assert isinstance(adapter, EcsAdapter)
    calls = count_calls(adapter.ecs)
    submitted = time.perf_counter()
    tick_due_backends(force=True)
    took = time.perf_counter() - submitted
    print(f"engine: started {run.tasks.exclude(job_id='').count()} tasks in one tick ({dict(calls)}), {took:.1f} s")
    for number in range(ticks):
        calls.clear()
        began = time.perf_counter()
        tick_due_backends(force=True)
        print(f"engine tick {number + 1} with {n} live tasks: {dict(calls)} in {time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    main()
