"""Upgrading: a database made by the previous release (its own migrations and rows, dumped
into tests/fixtures/upgrade/) is migrated to this schema by `scripthut migrate` with nothing
lost, on SQLite and on PostgreSQL.

The fixtures were made with the code of the last landed main (9a29446): `manage.py migrate`,
then users, a group, a local and a Slurm backend, a git source and a workflow with
credentials in their URLs, a run of six tasks in three states, and an API token; dumped
with sqlite3's ``iterdump`` and ``pg_dump --no-owner --no-privileges``. Make new ones the
same way when a release changes the schema.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.markers import require

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "upgrade"
POSTGRES = "postgres://postgres@127.0.0.1:5432"
OLD_PASSWORD = "S3cret-0ld"

FACTS = """
import json
from django.contrib.auth.models import User
from django.db import connection
from backends.models import Backend
from runs.models import ApiToken, Run, Workflow
from sources.models import Source
run = Run.objects.get()
with connection.cursor() as cursor:
    cursor.execute("SELECT url FROM sources_source")
    raw_url = cursor.fetchone()[0]
print(json.dumps({
    "users": sorted(
        (u.username, u.is_staff, sorted(u.groups.values_list("name", flat=True))) for u in User.objects.all()
    ),
    "backends": sorted((b.name, b.kind, b.max_concurrent, b.settings.get("account")) for b in Backend.objects.all()),
    "source_url": Source.objects.get().url,
    "source_url_in_clear": "S3cret-0ld" in raw_url,
    "workflow_git": Workflow.objects.get().git,
    "run": [run.owner.username, run.workflow_name, run.backend.name, run.max_concurrent],
    "tasks": sorted(run.tasks.values_list("task_id", "state")),
    "summary_waits_on": run.tasks.get(task_id="summary").waiting_on,
    "tokens": ApiToken.objects.filter(user__username="alice").count(),
}))
"""

EXPECTED: dict[str, Any] = {
    "users": [["alice", False, ["lab"]], ["carol", True, []]],
    "backends": [["hpc", "slurm", 100, "proj"], ["local", "local", 4, None]],
    "source_url": f"https://robot:{OLD_PASSWORD}@git.example.org/lab.git",
    "source_url_in_clear": False,  # encrypted on the way (sources 0003)
    "workflow_git": {"repo": f"https://robot:{OLD_PASSWORD}@git.example.org/gen.git", "branch": "dev"},
    "run": ["alice", "sweep", "local", 2],
    "tasks": [
        ["sim.0", "completed"],
        ["sim.1", "completed"],
        ["sim.2", "failed"],
        ["sim.3", "pending"],
        ["sim.4", "pending"],
        ["summary", "pending"],
    ],
    "summary_waits_on": 5,
    "tokens": 1,
}


def scripthut(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "scripthut_site.cli", *args]
    proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def upgraded_facts(env: dict[str, str]) -> dict[str, Any]:
    scripthut(env, "migrate", "--no-input")
    pending = scripthut(env, "showmigrations", "--plan")
    assert "[ ]" not in pending, pending
    return json.loads(scripthut(env, "shell", "-c", FACTS).strip().splitlines()[-1])


def environment(tmp_path: Path, database_url: str | None) -> dict[str, str]:
    skip = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "SCRIPTHUT_CONFIG")
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env |= {"SCRIPTHUT_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def test_a_previous_release_sqlite_database_upgrades_with_nothing_lost(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o700)
    with sqlite3.connect(tmp_path / "data" / "scripthut.sqlite3") as db:
        db.executescript((FIXTURES / "previous-release.sqlite.sql").read_text())
    assert upgraded_facts(environment(tmp_path, None)) == EXPECTED


@pytest.mark.services
def test_a_previous_release_postgresql_database_upgrades_with_nothing_lost(tmp_path: Path) -> None:
    require("services", "PostgreSQL")
    name = f"scripthut_upgrade_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        loaded = subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", name],
            stdin=(FIXTURES / "previous-release.postgres.sql").open(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert loaded.returncode == 0, loaded.stderr
        assert upgraded_facts(environment(tmp_path, f"{POSTGRES}/{name}")) == EXPECTED
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- scripthut backup / restore (embedded SQLite) ------------------------------------------------


def run_count(env: dict[str, str]) -> str:
    return scripthut(env, "shell", "-c", "from runs.models import Run; print(Run.objects.count())").split()[-1]


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_backup_while_a_writer_holds_the_database_then_restore(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o700)
    database = tmp_path / "data" / "scripthut.sqlite3"
    with sqlite3.connect(database) as db:
        db.executescript((FIXTURES / "previous-release.sqlite.sql").read_text())
    env = environment(tmp_path, None)
    scripthut(env, "migrate", "--no-input")
    assert run_count(env) == "1"

    # Online: another connection is in the middle of a write transaction (WAL, as the portal).
    writer = sqlite3.connect(database, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE runs_run SET workflow_name = 'uncommitted'")
    saved = tmp_path / "saved.sqlite3"
    out = scripthut(env, "backup", str(saved))
    writer.execute("ROLLBACK")
    writer.close()
    assert out.startswith(f"backed up {database} to {saved}")
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    with closing(sqlite3.connect(saved)) as copy:
        assert copy.execute("SELECT workflow_name FROM runs_run").fetchall() == [("sweep",)]  # committed data only

    refused = subprocess.run(
        [sys.executable, "-m", "scripthut_site.cli", "backup", str(saved)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "never overwrites" in refused.stderr

    scripthut(env, "shell", "-c", "from runs.models import Run; Run.objects.all().delete()")
    assert run_count(env) == "0"
    assert scripthut(env, "restore", str(saved)).startswith(f"restored {database} from {saved}")
    assert run_count(env) == "1"


def test_restore_refuses_what_is_not_a_scripthut_backup_and_postgresql_is_pointed_to_its_tools(tmp_path: Path) -> None:
    env = environment(tmp_path, None)
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello")
    other = tmp_path / "other.sqlite3"
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE t (x)")
    for path, reason in (
        (not_sqlite, "not an SQLite database"),
        (other, "not a ScriptHut database"),
        (tmp_path / "none", "no such file"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "scripthut_site.cli", "restore", str(path)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2 and reason in proc.stderr and "nothing was changed" in proc.stderr, proc.stderr
    env["DATABASE_URL"] = f"{POSTGRES}/postgres"
    for command in ("backup", "restore"):
        proc = subprocess.run(
            [sys.executable, "-m", "scripthut_site.cli", command, str(tmp_path / "x")],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2 and "pg_dump" in proc.stderr
