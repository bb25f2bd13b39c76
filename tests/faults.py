"""A deployed portal as real processes, for the kill -9 fault tests and the compose test.

``Portal`` owns one PostgreSQL database, one Redis database, a data dir and a config; it
starts the web server, Celery workers and beat (or the embedded ``scripthut serve``) as
processes of their own session, so that ``kill9`` can SIGKILL a whole process group
(a Celery worker and its pool children) the way the kernel's OOM killer or a crashed
host would. Only processes this module started are ever signalled, by their own group.

A workload is ``ledger_workflow``: every task appends its id to one ledger file, so
after the run the ledger says exactly which tasks ran, and how often.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.markers import require
from tests.services import ChildProcess, accepts_connections, free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG = "postgres://postgres@127.0.0.1:5432"
REDIS_DB = 2
ADMIN_PASSWORD = "admin-pw-123"
WORKERS = ("worker1", "worker2")  # two workers, as the fault tests kill them


def celery_command(kind: str, name: str) -> list[str]:
    """The command line of a worker or of beat (beat keeps its schedule in the data dir)."""
    if kind == "beat":
        return [str(BIN / "scripthut"), "beat", "--loglevel", "info"]
    return [str(BIN / "scripthut"), "worker", "--concurrency", "2", "--loglevel", "info", "--hostname", f"{name}@%h"]


def create_database(name: str, server: str = PG) -> str:
    """A fresh PostgreSQL database ``name`` (dropped first if a failed test left it)."""
    require("services", "PostgreSQL")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


def drop_database(name: str, server: str = PG) -> None:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flush_redis(url: str = f"redis://127.0.0.1:6379/{REDIS_DB}") -> None:
    require("services", "Redis")
    import redis

    redis.Redis.from_url(url).flushdb()


def ledger_workflow(ledger: Path | str, n: int, *, width: int = 20, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` tasks that each append their id to ``ledger`` and take 0.2-0.8 s; task i
    depends on task i-``width``, so releases of dependents happen all through the run."""
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        task: dict[str, Any] = {
            "id": f"t{i}",
            "name": f"T{i}",
            "command": f"echo t{i} >> {ledger} && sleep {rng.uniform(0.2, 0.8):.2f}",
        }
        if i >= width:
            task["deps"] = [f"t{i - width}"]
        tasks.append(task)
    return tasks


def gated(workflow: list[dict[str, Any]], gate: Path, last: int) -> list[dict[str, Any]]:
    """``workflow`` plus a task ``gate`` that ends once the file ``gate`` exists, on which
    the ``last`` tasks wait: the run cannot end before the test has done its part
    (its kills), however fast the machine is."""
    gate_task = {"id": "gate", "name": "gate", "command": f"until [ -e {gate} ]; do sleep 0.2; done"}
    for task in workflow[-last:]:
        task["deps"] = [*task.get("deps", []), "gate"]
    return [gate_task, *workflow]


def ledger_counts(ledger: Path | str) -> Counter[str]:
    """How often each task id is in the ledger (a path here, or the text of one read elsewhere)."""
    if isinstance(ledger, str):
        return Counter(ledger.split())
    return Counter(ledger.read_text().split()) if ledger.exists() else Counter()


@dataclass
class Portal:
    """One deployment's processes and the places they share."""

    base: Path
    database: str  # PostgreSQL database name, or "" for embedded SQLite
    config: str
    redis: bool = True
    postgres_server: str = PG  # a test's own server (tests/own_servers.py) instead of the shared one
    redis_url: str = f"redis://127.0.0.1:6379/{REDIS_DB}"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    children: dict[str, ChildProcess] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)
    started_at: dict[str, float] = field(default_factory=dict)
    web_port: int = 0
    token: str = ""

    def __post_init__(self) -> None:
        require("faults", "the fault harness (tests/faults.py)")
        self.data_dir = self.base / "data"
        self.config_file = self.base / "scripthut.yaml"
        self.config_file.write_text(self.config)
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env |= {
            "SCRIPTHUT_DATA_DIR": str(self.data_dir),
            "SCRIPTHUT_CONFIG": str(self.config_file),
            "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
            "SCRIPTHUT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "DJANGO_SETTINGS_MODULE": "scripthut_site.settings",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",  # a killed process's last words reach its log
            **self.extra_env,
        }
        if self.database:
            self.env["DATABASE_URL"] = f"{self.postgres_server}/{self.database}"
        if self.redis:
            self.env["REDIS_URL"] = self.redis_url

    # -- set-up ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Schema, config, the admin and an API token for them."""
        if self.database:
            create_database(self.database, self.postgres_server)
        if self.redis:
            flush_redis(self.redis_url)
        self.manage("migrate", "--noinput")
        self.manage("import-config", str(self.config_file))
        self.manage("createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
        self.token = self.manage("createtoken", "admin").stdout.strip().split()[-1]

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(BIN / "scripthut"), *args], env=self.env, capture_output=True, text=True, timeout=180, cwd=ROOT
        )
        if proc.returncode != 0:
            raise AssertionError(f"scripthut {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    # -- processes ---------------------------------------------------------------------

    def start(self, name: str, cmd: list[str], env: Mapping[str, str] | None = None) -> ChildProcess:
        """Start ``cmd`` in a session of its own (its group is what kill9 kills)."""
        log = self.base / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env or self.env),
                cwd=ROOT,
                start_new_session=True,
            )
        child = ChildProcess(name, proc, log)
        self.starts[name] += 1
        self.started_at[name] = time.monotonic()
        self.children[name] = child
        return child

    def start_serve(self) -> ChildProcess:
        """Embedded mode: ``scripthut serve`` runs the ticker in its own process."""
        return self.start_web()

    def start_web(self, cmd: list[str] | None = None) -> ChildProcess:
        self.web_port = self.web_port or free_port()
        cmd = cmd or [str(BIN / "scripthut"), "serve", "--host", "127.0.0.1", "--port", str(self.web_port)]
        web = self.start("web", cmd)
        web.wait_until(lambda: accepts_connections(self.web_port), timeout=90)
        return web

    def start_worker(self, name: str) -> ChildProcess:
        return self.start(name, celery_command("worker", name))

    def start_beat(self) -> ChildProcess:
        return self.start("beat", celery_command("beat", "beat"))

    def start_named(self, name: str) -> ChildProcess:
        """Start ``name`` again: "web", "beat", or a worker of that name."""
        if name == "web":
            return self.start_web()
        if name == "beat":
            return self.start_beat()
        return self.start_worker(name)

    def start_deployment(self, workers: tuple[str, ...] = WORKERS) -> None:
        """The web server, the workers and beat, as docker-compose runs them."""
        self.start_web()
        for name in workers:
            self.start_worker(name)
        self.start_beat()

    def worker_ready(self, name: str) -> bool:
        """The latest start of worker ``name`` is consuming ticks (each start logs "ready." once)."""
        lines = self.children[name].log.read_text(errors="replace").splitlines()
        return sum(f"{name}@" in line and line.endswith(" ready.") for line in lines) >= self.starts[name]

    def revive_exited(self) -> list[str]:
        """Start again every process that exited by itself (a container's restart policy)."""
        exited = [name for name, child in self.children.items() if child.proc.poll() is not None]
        for name in exited:
            self.start_named(name)
        return exited

    def kill9(self, name: str) -> None:
        """SIGKILL the whole process group of ``name`` (the process and all it forked)."""
        child = self.children[name]
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.proc.wait()

    def stop_all(self) -> None:
        for name in list(self.children):
            self.kill9(name)
        self.children.clear()

    # -- talking to it -----------------------------------------------------------------

    def api(self, method: str, path: str, body: object | None = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/api{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def start_run(self, workflow: list[dict[str, Any]], backend: str, max_concurrent: int = 10) -> str:
        created = self.api(
            "POST", "/runs", {"backend": backend, "workflow": workflow, "max_concurrent": max_concurrent}
        )
        return str(created["id"])

    def run_status(self, run_id: str) -> str:
        """The run's status, over HTTP (what a user sees); "" while the web server is down."""
        try:
            return str(self.api("GET", f"/runs/{run_id}?limit=1")["status"])
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return ""

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        """Rows from the portal's database: its PostgreSQL one, or the embedded SQLite file."""
        if not self.database:
            with closing(sqlite3.connect(self.data_dir / "scripthut.sqlite3", timeout=30)) as db:
                return list(db.execute(query.replace("%s", "?"), params))
        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            return list(conn.execute(query, params))  # type: ignore[arg-type]

    def finished(self, run_id: str) -> bool:
        """The run has ended (from the database: the web server may be down)."""
        try:
            rows = self.sql("SELECT status FROM runs_run WHERE id = %s", run_id)
        except psycopg.OperationalError:  # a test has PostgreSQL down just now
            return False
        return bool(rows) and rows[0][0] not in ("pending", "running")

    def task_states(self, run_id: str) -> dict[str, tuple[str, str]]:
        """task id -> (state, reason), straight from the database."""
        rows = self.sql("SELECT task_id, state, reason FROM runs_task WHERE run_id = %s", run_id)
        return {task_id: (state, reason) for task_id, state, reason in rows}


@dataclass
class Outcome:
    """What a fault test reports."""

    tasks: int
    kills: Counter[str]
    seconds: float
    duplicates: dict[str, int]
    lost: list[str]
    failed: dict[str, str]

    def summary(self) -> str:
        return (
            f"{self.tasks} tasks, kills {dict(self.kills)}, {self.seconds:.1f}s to completion, "
            f"{len(self.duplicates)} duplicates, {len(self.lost)} lost, {len(self.failed)} failed"
        )


def judge(
    workflow: list[dict[str, Any]],
    ledger: Path | str,
    states: Mapping[str, tuple[str, str]],
    kills: Counter[str],
    seconds: float,
) -> Outcome:
    ran = ledger_counts(ledger)
    ids = [t["id"] for t in workflow]
    return Outcome(
        tasks=len(ids),
        kills=kills,
        seconds=seconds,
        duplicates={i: n for i, n in ran.items() if n > 1},
        lost=[i for i in ids if ran[i] == 0],
        failed={i: f"{s}: {r}" for i, (s, r) in states.items() if s != "completed"},
    )


def drive(
    until_done: Callable[[], bool], disturb: Callable[[float], None], *, timeout: float, step: float = 0.25
) -> float:
    """Call ``disturb(elapsed)`` every ``step`` seconds until ``until_done()``; the elapsed time."""
    start = time.monotonic()
    while not until_done():
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            raise AssertionError(f"not done after {timeout}s")
        disturb(elapsed)
        time.sleep(step)
    return time.monotonic() - start
