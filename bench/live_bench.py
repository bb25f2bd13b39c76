"""Live pages benchmark.

    python bench/live_bench.py page            # (a) the run page of a 10,000-task run
    REDIS_URL=redis://127.0.0.1:6379/3 DATABASE_URL=postgres://... \\
        python bench/live_bench.py push        # (b) a change from a Celery worker to 50 sockets

(a) Server time and size of ``GET /runs/<id>`` (Django's test client, in process), of one
group page, and the size of one pushed change. Targets: under 300 ms and 300 KB.

(b) A real uvicorn serving the portal and a real Celery worker (bench/live_worker.py),
both separate processes on the Redis channel layer; 50 websocket clients watch one run
page; the worker moves one task at a time (the engine's CLAIM step). Latency is from the
worker's commit to each client's receipt of the row. Target: p99 under 1 s.

Uses a temporary SQLite data dir unless DATABASE_URL is set (needed for (b)).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bootstrap  # noqa: E402  (sets up Django for this script)
from websockets.asyncio.client import ClientConnection

bootstrap.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from backends.models import Backend  # noqa: E402
from runs.actions import create_run  # noqa: E402
from runs.engine.states import TaskState  # noqa: E402
from runs.live.push import run_page_html  # noqa: E402
from runs.models import Run, Task  # noqa: E402
from runs.web.pages import task_rows  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def _setup(tasks: int, groups: int) -> tuple[User, Run]:
    call_command("migrate", interactive=False, verbosity=0)
    user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True})
    backend, _ = Backend.objects.get_or_create(name="bench-local", defaults={"kind": Backend.Kind.LOCAL})
    per_group = tasks // groups
    payload = [
        {"id": f"g{g:03d}.t{i:04d}", "name": f"task {i}", "command": "true"}
        for g in range(groups)
        for i in range(per_group)
    ]
    run = create_run(owner=user, backend=backend, payload=payload, workflow_name="live-bench", max_concurrent=100)
    # A run under way: some of every state, as the page would show it.
    pks = list(run.tasks.order_by("position").values_list("pk", flat=True))
    for state, share in ((TaskState.COMPLETED, 0.4), (TaskState.RUNNING, 0.01), (TaskState.FAILED, 0.005)):
        chosen, pks = pks[: int(len(pks) * share)], pks[int(len(pks) * share) :]
        Task.objects.filter(pk__in=chosen).update(state=state)
    return user, run


def _timed_get(client: Client, url: str, repeat: int) -> tuple[list[float], int, int]:
    times, size, queries = [], 0, 0
    client.get(url)  # warm up: templates compiled, connection open
    for _ in range(repeat):
        reset_queries()
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
        size, queries = len(response.content), len(captured)
    return times, size, queries


def bench_page(tasks: int, groups: int, repeat: int) -> None:
    user, run = _setup(tasks, groups)
    client = Client(SERVER_NAME="localhost")  # one of ALLOWED_HOSTS
    client.force_login(user)
    print(f"run of {tasks} tasks in {groups} groups on {connection.vendor}")
    for label, url in (
        ("run page", f"/runs/{run.pk}"),
        ("run page, live part (fallback poll)", f"/runs/{run.pk}/items"),
        ("one group page (100 rows)", f"/runs/{run.pk}/group?group=g000"),
    ):
        times, size, queries = _timed_get(client, url, repeat)
        print(
            f"  {label:38s} median {statistics.median(times):6.1f} ms  max {max(times):6.1f} ms"
            f"  {size / 1024:7.1f} KB  {queries} queries"
        )
    changed = list(task_rows(run)[:10])
    frames = run_page_html(run, changed, Task.objects.state_counts([run.pk])[run.pk])
    print(f"  {'a pushed change of 10 tasks':38s} {sum(len(f.encode()) for f in frames) / 1024:7.1f} KB")


# -- (b) push latency ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(command: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _committed_at(pk: int) -> float:
    """When the worker committed the move of task ``pk`` (it notes it just after)."""
    import redis
    from django.conf import settings

    store = redis.Redis.from_url(settings.REDIS_URL)
    for _ in range(100):
        value = store.get(f"live_bench:committed:{pk}")
        if value is not None:
            return float(value)  # type: ignore[arg-type]
        time.sleep(0.02)
    raise RuntimeError(f"the worker noted no commit of task {pk}")


async def _received(ws: ClientConnection, marker: str) -> float:
    while True:
        if marker in str(await ws.recv()):
            return time.time()


async def _watch(url: str, cookie: str, clients: int, pks: list[int], send: Callable[[int], object]) -> list[float]:
    from websockets.asyncio.client import connect

    headers = {"Cookie": cookie, "Origin": url.replace("ws://", "http://").split("/runs")[0]}
    sockets = [await connect(url, additional_headers=headers) for _ in range(clients)]
    latencies: list[float] = []
    try:
        for number, pk in enumerate(pks):
            waiting = [asyncio.create_task(_received(ws, f'id="task-{pk}"')) for ws in sockets]
            send(pk)
            received = await asyncio.wait_for(asyncio.gather(*waiting), 30)
            committed = _committed_at(pk)
            if number == 0:  # warm-up: the worker's first render compiles the templates
                print(f"  first (cold) change: slowest socket {(max(received) - committed) * 1000:.0f} ms")
                continue
            latencies += [(at - committed) * 1000 for at in received]
    finally:
        for ws in sockets:
            await ws.close()
    return latencies


def bench_push(clients: int, changes: int) -> None:
    from django.conf import settings

    if settings.EMBEDDED or connection.vendor != "postgresql":
        sys.exit("push needs REDIS_URL (the Redis channel layer) and DATABASE_URL (PostgreSQL)")
    user, run = _setup(tasks=200, groups=2)
    Task.objects.filter(run=run).update(state=TaskState.PENDING)
    http = Client(SERVER_NAME="localhost")
    http.force_login(user)
    cookie = f"sessionid={http.cookies['sessionid'].value}"
    port = _free_port()
    python = sys.executable
    server = _start(
        [python, "-m", "uvicorn", "scripthut_site.asgi:application", "--port", str(port), "--log-level", "warning"],
        ROOT,
    )
    worker = _start([python, "-m", "celery", "-A", "live_worker", "worker", "--pool=solo", "--loglevel=WARNING"], BENCH)
    try:
        _wait_for_port(port)
        sys.path.insert(0, str(BENCH))
        from live_worker import claim

        time.sleep(3)  # the worker connects to the broker
        pks = list(run.tasks.order_by("position").values_list("pk", flat=True)[: changes + 1])
        url = f"ws://127.0.0.1:{port}/runs/{run.pk}/live"
        latencies = asyncio.run(_watch(url, cookie, clients, pks, lambda pk: claim.delay(pk)))
    finally:
        for name, process in (("worker", worker), ("server", server)):
            process.terminate()
            _, errors = process.communicate(timeout=15)
            if errors.strip():
                print(f"--- {name} stderr:\n{errors.decode()[-3000:]}", file=sys.stderr)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"{changes} changes x {clients} sockets, Celery worker -> Redis layer -> uvicorn: "
        f"p50 {statistics.median(latencies):.0f} ms  p99 {p99:.0f} ms  max {latencies[-1]:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["page", "push"])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    if args.part == "page":
        bench_page(args.tasks, args.groups, args.repeat)
    else:
        bench_push(args.clients, args.changes)


if __name__ == "__main__":
    main()
