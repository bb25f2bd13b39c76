"""EC2 backend: AWS API calls and SSH sessions per poll cycle with 20 running instances,
and per sentinel read between polls (``sentinels_every``).

    python bench/ec2_bench.py [--instances 20] [--cycles 10]

Against the AWS emulator over real HTTP (moto's server in this process, the SSM agent and
the instances played as in tests/aws_ec2.py) and the loopback sshd of the test cluster
(`bash tests/setup/cluster.sh start`) for the SSH part. It counts, per tick of the
backend: every AWS API call the adapter makes (by operation) and every SSH session it
opens; then the same for the cycles in which the tasks finish. The original design
opens, per running instance and poll, one SSM session, one Instance Connect key push
and one SSH session: printed alongside for comparison.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import bootstrap  # noqa: E402  (sets up Django for this script)

bootstrap.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from backends.config import validate_backend_settings  # noqa: E402
from backends.ec2.adapter import Adapter as Ec2Adapter  # noqa: E402
from backends.models import Backend  # noqa: E402
from backends.registry import get_adapter  # noqa: E402
from runs.actions import create_run  # noqa: E402
from runs.engine.tick import tick_due_backends  # noqa: E402
from runs.models import Run  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.aws_ec2 import TEST_CREDENTIALS, Emulator, LoopbackConnector, LoopbackEnd, emulator  # noqa: E402
from tests.cluster import start_cluster  # noqa: E402


def measure(emu: Emulator, backend: Backend, run: Run, poll: bool = True) -> tuple[Counter[str], int, float]:
    """One forced tick: (API calls by operation, SSH sessions, seconds). ``poll``: the
    scheduler's poll is due; else the tick reads the sentinels only (between two polls)."""
    Backend.objects.filter(pk=backend.pk).update(last_polled_at=None if poll else timezone.now())
    adapter = get_adapter(backend)
    assert isinstance(adapter, Ec2Adapter)
    calls_before = Counter(adapter.calls)
    sessions_before = adapter.connector.sessions_opened
    started = time.perf_counter()
    tick_due_backends(force=True)
    elapsed = time.perf_counter() - started
    emu.host.boot()
    calls = Counter(adapter.calls)
    calls.subtract(calls_before)
    sessions = adapter.connector.sessions_opened - sessions_before
    return +calls, sessions, elapsed


def show(label: str, rows: list[tuple[Counter[str], int, float]]) -> None:
    total = Counter[str]()
    for cycle_calls, _, _ in rows:
        total.update(cycle_calls)
    per_cycle = {op: count / len(rows) for op, count in sorted(total.items())}
    sessions = sum(r[1] for r in rows) / len(rows)
    seconds = statistics.median(r[2] for r in rows)
    calls = sum(per_cycle.values())
    print(f"{label}: {len(rows)} cycles; per cycle: {calls:.1f} AWS API calls {per_cycle},", end=" ")
    print(f"{sessions:.1f} SSH sessions; tick median {seconds * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    os.environ.update(TEST_CREDENTIALS)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    call_command("migrate", verbosity=0)
    cluster = start_cluster()
    settings.SCRIPTHUT_EC2_CONNECTOR = "tests.aws_ec2.LoopbackConnector"
    owner = User.objects.create_user("bench")
    with emulator() as emu:
        LoopbackConnector.end = LoopbackEnd(cluster=cluster, host=emu.host)
        config = emu.backend_settings(ssh_user=cluster.user, max_instances=args.instances)
        backend = Backend.objects.create(name="aws-ec2", kind="ec2", settings=validate_backend_settings("ec2", config),
                                         max_concurrent=args.instances, poll_interval=1)  # fmt: skip
        # Each task runs until the bench lets it go (a file appears in its instance directory).
        command = 'while [ ! -e "$HOME/../go" ]; do sleep 0.2; done; echo finished'
        tasks = [
            {"id": f"t{i}", "name": f"t{i}", "command": command, "time_limit": "10:00"} for i in range(args.instances)
        ]
        run = create_run(
            owner=owner, backend=backend, payload=tasks, workflow_name="ec2-bench", max_concurrent=args.instances
        )
        started = time.perf_counter()
        while run.tasks.filter(state="running").count() < args.instances:
            measure(emu, backend, run)
        print(f"all {args.instances} running after {time.perf_counter() - started:.1f} s", flush=True)
        steady = [measure(emu, backend, run) for _ in range(args.cycles)]
        between = [measure(emu, backend, run, poll=False) for _ in range(args.cycles)]
        (emu.host.root / "go").touch()
        finishing = []
        while not run.is_finished:
            finishing.append(measure(emu, backend, run, poll=False))
            run.refresh_from_db()
        print(f"{args.instances} instances running; emulator at {emu.url}")
        show("steady state (all running), poll cycles", steady)
        show("steady state, sentinel reads between polls", between)
        show("until all finished, by sentinel reads between polls", finishing)
        n = args.instances
        print(f"run {run.status}. The original design, per cycle with {n} running: 1 DescribeInstances", end=" ")
        print(f"+ {n} SendSSHPublicKey + {n} StartSession = {2 * n + 1} API calls and {n} SSH sessions")


if __name__ == "__main__":
    main()
