"""The embedded portal under readers: does the ticker keep its pace while people look?

    python bench/local_load_bench.py [--tasks 1000] [--slots 16] [--clients 0,16] [--port 8871]

Starts ``scripthut serve`` as its own process, as a user would (embedded: no REDIS_URL; a
throwaway SQLite data dir unless DATABASE_URL is set), with one local backend of
``--slots`` slots. For each figure of ``--clients``, starts a run of ``--tasks`` instant
tasks (``true``) through the API, and meanwhile that many client threads read what people
look at during a run, in turn: the run page, its task rows, the runs list, the dashboard,
and the API's run and runs list. Printed per figure: the run's seconds from its creation
until completed, tasks per second, and the readers' requests per second, p50 and p99.
The target: the run with 16 readers within 20 % of the run with none.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bootstrap  # noqa: E402  (sets up Django for this script)
import httpx
import yaml

DATA_DIR = Path(tempfile.mkdtemp(prefix="scripthut-load-bench-"))
os.environ["SCRIPTHUT_DATA_DIR"] = str(DATA_DIR)
os.environ.pop("REDIS_URL", None)  # the embedded portal: its own ticker thread
bootstrap.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.test import Client  # noqa: E402

from runs.models import ApiToken, Run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BACKEND = "bench-local"


def start_portal(port: int, slots: int) -> subprocess.Popen[bytes]:
    config = DATA_DIR / "scripthut.yaml"
    backend = {"name": BACKEND, "type": "local", "max_concurrent": slots, "poll_interval": 60}
    config.write_text(yaml.safe_dump({"backends": [backend]}))
    env = os.environ | {"SCRIPTHUT_ADMIN_PASSWORD": "bench-password", "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [str(Path(sys.executable).parent / "scripthut"), "serve", "--config", str(config), "--port", str(port)]
    portal = subprocess.Popen(command, env=env, cwd=DATA_DIR, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            if httpx.get(f"http://127.0.0.1:{port}/api/me").status_code == 401:  # migrated, serving
                return portal
        except (OSError, httpx.HTTPError):
            pass
        if portal.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the portal did not start")
        time.sleep(0.2)


class Readers:
    """``count`` threads, each reading the pages and API of one run in turn until stopped."""

    def __init__(self, base: str, count: int, token: str, session: str) -> None:
        self.base, self.count, self.token, self.session = base, count, token, session
        self.latencies: list[float] = []
        self.by_path: dict[str, list[float]] = {}
        self.failures = 0
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, run_id: str) -> None:
        paths = [
            (f"/runs/{run_id}", False),
            (f"/runs/{run_id}/items", False),
            ("/runs", False),
            ("/", False),
            (f"/api/runs/{run_id}", True),
            ("/api/runs", True),
        ]
        for n in range(self.count):
            thread = threading.Thread(target=self._read, args=(paths[n % len(paths) :] + paths[: n % len(paths)],))
            thread.start()
            self.threads.append(thread)
        self.started = time.perf_counter()

    def _read(self, paths: list[tuple[str, bool]]) -> None:
        with httpx.Client(base_url=self.base, cookies={"sessionid": self.session}, timeout=60) as client:
            while not self.stopping.is_set():
                for path, api in paths:
                    headers = {"Authorization": f"Token {self.token}"} if api else {}
                    start = time.perf_counter()
                    response = client.get(path, headers=headers)
                    self.latencies.append(time.perf_counter() - start)
                    self.by_path.setdefault(path, []).append(self.latencies[-1])
                    self.failures += response.status_code != 200

    def stop(self) -> str:
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        if not self.count:
            return "no readers"
        seconds = time.perf_counter() - self.started
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        if os.environ.get("BENCH_BY_PATH"):
            for path, seen in self.by_path.items():
                print(f"  {path}: {len(seen)} reads, median {statistics.median(seen) * 1000:.0f} ms")
        return (
            f"{self.count} readers: {len(ordered) / seconds:.0f} requests/s,"
            f" p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, {self.failures} not 200"
        )


def one_run(base: str, token: str, session: str, tasks: int, readers: int, timeout: float) -> str:
    payload = [{"id": f"t{i:06d}", "name": "t", "command": "true"} for i in range(tasks)]
    body = {"backend": BACKEND, "workflow": payload, "name": "load-bench", "max_concurrent": tasks}
    start = time.perf_counter()
    created = httpx.post(f"{base}/api/runs", json=body, headers={"Authorization": f"Token {token}"}, timeout=120)
    if created.status_code != 201:
        raise RuntimeError(f"POST /api/runs: {created.status_code} {created.text}")
    run_id = created.json()["id"]
    reading = Readers(base, readers, token, session)
    reading.start(run_id)
    try:
        while not (run := Run.objects.get(pk=run_id)).is_finished:
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"not finished in {timeout:.0f} s")
            time.sleep(0.1)
        elapsed = time.perf_counter() - start
    finally:
        figures = reading.stop()
    if run.status != "completed":
        raise RuntimeError(f"run ended {run.status}")
    return f"{tasks} instant tasks: {elapsed:.1f} s ({tasks / elapsed:.1f} tasks/s); {figures}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--clients", default="0,16")
    parser.add_argument("--port", type=int, default=8871)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    portal = start_portal(args.port, args.slots)
    try:
        admin = User.objects.get(username="admin")
        token = ApiToken.issue(admin, name="load bench")
        client = Client()
        client.force_login(admin)
        session = client.cookies["sessionid"].value
        base = f"http://127.0.0.1:{args.port}"
        print(f"scripthut serve (embedded), local backend of {args.slots} slots")
        for readers in [int(n) for n in args.clients.split(",")]:
            print(one_run(base, token, session, args.tasks, readers, args.timeout), flush=True)
    finally:
        portal.terminate()
        portal.wait(30)


if __name__ == "__main__":
    main()
