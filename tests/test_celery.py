"""Deployment mode: Celery beat + a worker on the real Redis broker drive a run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import scripthut

pytestmark = pytest.mark.services

CELERY = str(Path(sys.executable).with_name("celery"))


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not redis_up() and not os.environ.get("CI"), reason="no Redis on 127.0.0.1:6379")
def test_worker_and_beat_complete_a_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env |= {
        "REDIS_URL": "redis://127.0.0.1:6379/15",
        "SCRIPTHUT_DATA_DIR": str(tmp_path / "data"),
        "SCRIPTHUT_CONFIG": str(tmp_path / "scripthut.yaml"),
        "DJANGO_SUPERUSER_PASSWORD": "admin-pw-123",
    }
    Path(env["SCRIPTHUT_CONFIG"]).write_text("backends:\n  - name: local\n    type: local\n")
    scripthut(env, "import-config", env["SCRIPTHUT_CONFIG"])
    scripthut(env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    workflow = tmp_path / "wf.json"
    workflow.write_text(
        json.dumps(
            [
                {"id": "a", "name": "A", "command": "echo a"},
                {"id": "b", "name": "B", "command": "echo b", "deps": ["a"]},
            ]
        )
    )
    worker = subprocess.Popen(
        [
            CELERY,
            "-A",
            "scripthut_site",
            "worker",
            "--beat",
            "--pool",
            "solo",
            "--loglevel",
            "warning",
            "--schedule",
            str(tmp_path / "beat-schedule"),
        ],
        env=env,
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Not embedded: `run --wait` only watches while the worker ticks.
        done = scripthut(env, "run", str(workflow), "--backend", "local", "--wait", check=False)
    finally:
        worker.terminate()
        log, _ = worker.communicate(timeout=30)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\nworker log:\n{log}"
    assert "completed" in done.stdout
