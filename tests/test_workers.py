"""Deployment mode as run: `scripthut beat` + `scripthut worker` processes on the real
Redis broker and a PostgreSQL database of their own.

- a backend whose login node never answers does not delay another backend's ticks;
- a worker killed with SIGKILL mid-tick frees its backend within seconds for another worker.

The "hung" backend is a Slurm backend whose SSH port accepts connections and never
speaks (a tick waits there for paramiko's 10 s banner timeout), until the test closes it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
import redis

from tests.services import ChildProcess, unavailable
from tests.test_cli import SCRIPTHUT, scripthut

pytestmark = pytest.mark.services

ROOT = Path(__file__).parent.parent
POSTGRES = os.environ.get("SCRIPTHUT_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("SCRIPTHUT_TEST_REDIS", "redis://127.0.0.1:6379/1")
LOCK_SPACE = 0x5348  # runs.engine.lease.LOCK_SPACE


class Blackhole:
    """A TCP port that accepts connections and never answers, until ``refuse()``."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed by refuse()
            self.held.append(conn)

    def accepted(self) -> int:
        return len(self.held)

    def refuse(self) -> None:
        """From now on: connection refused."""
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept(); a bare close() would not
        self.listener.close()
        self.thread.join(5)
        for conn in self.held:
            conn.close()


@dataclass
class Deployment:
    env: dict[str, str]
    db: str
    tmp: Path
    children: list[ChildProcess] = field(default_factory=list)

    def start(self, name: str, *args: str) -> ChildProcess:
        child = ChildProcess.start(name, [SCRIPTHUT, *args], self.tmp / f"{name}.log", env=self.env, cwd=ROOT)
        self.children.append(child)
        return child

    def query(self, sql: str, *params: object) -> list[tuple]:
        with psycopg.connect(f"{POSTGRES}/{self.db}", autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def backend(self, name: str) -> tuple[int, str, datetime | None]:
        ((pk, status, polled),) = self.query(
            "SELECT id, status, last_polled_at FROM backends_backend WHERE name = %s", name
        )
        return pk, status, polled

    def lock_holder(self, backend_id: int) -> int | None:
        rows = self.query(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s",
            LOCK_SPACE,
            backend_id,
        )
        return rows[0][0] if rows else None


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    db = f"scripthut_workers_e2e_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        broker = redis.Redis.from_url(REDIS)
        broker.flushdb()  # this test's own Redis database: no messages left by an earlier run
    except (psycopg.Error, redis.RedisError) as exc:
        unavailable("PostgreSQL and Redis", exc)
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    env |= {
        "DATABASE_URL": f"{POSTGRES}/{db}",
        "REDIS_URL": REDIS,
        "SCRIPTHUT_DATA_DIR": str(tmp_path / "data"),
        "SCRIPTHUT_CONFIG": str(tmp_path / "scripthut.yaml"),
        "SCRIPTHUT_DISPATCH_SECONDS": "0.5",
        "DJANGO_SUPERUSER_PASSWORD": "admin-pw-123",
        "PYTHONPATH": str(ROOT),  # the code under test, not the installed copy
    }
    deployment = Deployment(env, db, tmp_path)
    try:
        yield deployment
    finally:
        for child in deployment.children:
            child.stop()
        broker.flushdb()
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def configure(deployment: Deployment, hung_port: int, *, hung_run: bool = True) -> None:
    config = f"""
backends:
  - name: local
    type: local
    max_concurrent: 4
    poll_interval: 1
  - name: hung
    type: slurm
    poll_interval: 1
    ssh:
      host: 127.0.0.1
      port: {hung_port}
      user: nobody
      allow_unknown_host_keys: true
"""
    Path(deployment.env["SCRIPTHUT_CONFIG"]).write_text(config)
    scripthut(deployment.env, "import-config", deployment.env["SCRIPTHUT_CONFIG"])
    scripthut(deployment.env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    if hung_run:
        workflow = deployment.tmp / "hung.json"
        workflow.write_text(json.dumps([{"id": "x", "name": "X", "command": "true"}]))
        scripthut(deployment.env, "run", str(workflow), "--backend", "hung")


def wait_for(what: str, ready, timeout: float, *children: ChildProcess) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``ready()``; fails with the children's logs after ``timeout``."""
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > timeout:
            logs = "\n".join(f"--- {c.name}:\n{c.log_tail()}" for c in children)
            raise AssertionError(f"{what}: not after {timeout}s\n{logs}")
        time.sleep(0.1)
    return time.monotonic() - start


def test_a_hung_backend_does_not_delay_another(deployment: Deployment) -> None:
    hole = Blackhole()
    configure(deployment, hole.port)
    beat = deployment.start("beat", "beat", "--loglevel", "info")
    worker = deployment.start("worker", "worker", "--concurrency", "2", "--loglevel", "info")
    wait_for("a tick of the hung backend", lambda: hole.accepted() > 0, 60, beat, worker)

    # While a worker waits on the hung login node (10 s to its connect timeout), the local
    # backend is ticked all along: four ticks of it, then the hung one is still waiting.
    seen: set[datetime | None] = set()

    def local_ticked_four_times() -> bool:
        seen.add(deployment.backend("local")[2])
        return len(seen - {None}) >= 4

    took = wait_for("four ticks of the local backend", local_ticked_four_times, 30, beat, worker)
    assert deployment.backend("hung")[2] is None, f"the hung backend's first tick ended within {took:.1f} s"

    # And a run there completes meanwhile: its create wakes the local backend's tick.
    chain = deployment.tmp / "chain.json"
    chain.write_text(
        json.dumps(
            [
                {"id": "a", "name": "A", "command": "echo a"},
                {"id": "b", "name": "B", "command": "echo b", "deps": ["a"]},
                {"id": "c", "name": "C", "command": "echo c", "deps": ["b"]},
            ]
        )
    )
    start = time.monotonic()
    done = scripthut(deployment.env, "run", str(chain), "--backend", "local", "--wait", check=False)
    took = time.monotonic() - start
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{worker.log_tail()}"
    assert took < 15, f"a 3-task chain took {took:.1f}s beside a hung backend"
    hole.refuse()


@pytest.mark.faults
def test_a_worker_killed_mid_tick_frees_its_backend_within_seconds(deployment: Deployment) -> None:
    hole = Blackhole()
    configure(deployment, hole.port)
    hung_id = deployment.backend("hung")[0]
    workers = {}
    for name in ("one", "two"):
        args = ("worker", "--pool", "solo", "--hostname", f"{name}@%h", "--loglevel", "info")
        worker = deployment.start(f"worker-{name}", *args)
        workers[worker.proc.pid] = worker
    for worker in workers.values():
        wait_for(f"{worker.name} ready", lambda w=worker: "ready." in w.log_tail(20000), 60, worker)
    beat = deployment.start("beat", "beat", "--loglevel", "info")
    wait_for("a tick of the hung backend", lambda: hole.accepted() > 0, 60, beat, *workers.values())
    holder = deployment.lock_holder(hung_id)
    assert holder is not None, "the ticking worker holds no advisory lock on the backend"
    # The backend row says which process ticks it (host:pid:thread).
    ((mark,),) = deployment.query("SELECT lease_owner FROM backends_backend WHERE id = %s", hung_id)
    ticking = workers.pop(int(mark.split(":")[1]))
    (other,) = workers.values()

    os.kill(ticking.proc.pid, signal.SIGKILL)  # mid-tick: it waits on the login node
    killed_at = datetime.now().astimezone()
    hole.refuse()  # from now on the backend answers at once: "connection refused"

    def ticked_again() -> bool:
        _, status, polled = deployment.backend("hung")
        return status == "unreachable" and polled is not None and polled > killed_at

    took = wait_for("a tick of the hung backend by the other worker", ticked_again, 60, beat, other)
    assert took < 5, f"the killed worker's backend was ticked again only after {took:.1f}s"
    assert deployment.lock_holder(hung_id) != holder


def test_an_action_wakes_only_its_own_backend(deployment: Deployment) -> None:
    """No beat: only the wake-up of `scripthut run` ticks, and only the run's backend."""
    hole = Blackhole()
    configure(deployment, hole.port, hung_run=False)
    worker = deployment.start("worker", "worker", "--pool", "solo", "--loglevel", "info")
    wait_for("worker ready", lambda: "ready." in worker.log_tail(20000), 60, worker)
    one = deployment.tmp / "one.json"
    one.write_text(json.dumps([{"id": "a", "name": "A", "command": "echo a"}]))
    scripthut(deployment.env, "run", str(one), "--backend", "local")

    def submitted() -> bool:
        return bool(deployment.query("SELECT 1 FROM runs_task WHERE task_id = 'a' AND state <> 'pending'"))

    wait_for("the run's task submitted by its backend's wake-up tick", submitted, 30, worker)
    # A second run's wake-up goes behind whatever the first one queued, and the solo worker takes
    # its queue in order: once that run's task is submitted, a tick of the hung backend queued by
    # the first wake-up would have started (and connected to the blackhole) before it.
    two = deployment.tmp / "two.json"
    two.write_text(json.dumps([{"id": "b", "name": "B", "command": "echo b"}]))
    scripthut(deployment.env, "run", str(two), "--backend", "local")

    def second_submitted_or_hung_ticked() -> bool:
        b_moved = deployment.query("SELECT 1 FROM runs_task WHERE task_id = 'b' AND state <> 'pending'")
        return bool(b_moved) or hole.accepted() > 0

    wait_for("the second run's wake-up tick", second_submitted_or_hung_ticked, 30, worker)
    assert hole.accepted() == 0 and deployment.backend("hung")[2] is None, "the other backend was ticked too"
    hole.refuse()
