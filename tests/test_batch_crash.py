"""kill -9 of the process submitting to AWS Batch, mid-batch: no task lost, none sent twice.

An embedded ``scripthut run --wait`` (its own SQLite data dir, the batch backend from
a scripthut.yaml) submits 300 tasks to moto's server; it is killed with SIGKILL once
the emulator holds some of its jobs, i.e. between handing jobs to AWS and recording
their ids. A fresh process then ticks: every task ends up with exactly one job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from moto.batch import models as batch_models

from tests.aws import (
    ACCOUNT,
    REGION,
    MotoServer,
    batch_world,
    moto_server_fixture,  # noqa: F401  (fixture)
    moto_url_fixture,  # noqa: F401  (fixture)
)
from tests.test_cli import SCRIPTHUT, scripthut

pytestmark = [pytest.mark.aws, pytest.mark.faults]

TASKS = 300
AFTER_KILL = """
import json, django
import pytest
django.setup()
from backends.models import Backend
from runs.engine.tick import tick_due_backends
from runs.models import Task
Backend.objects.update(lease_until=None, lease_owner="")  # the killed process's lease
for _ in range(3):
    tick_due_backends(force=True)
print(json.dumps(list(Task.objects.values_list("submit_tag", "state", "job_id"))))
"""


def emulator_jobs() -> dict[str, Any]:
    return dict(batch_models.batch_backends[ACCOUNT][REGION]._jobs)


def test_kill_9_mid_submit_loses_nothing_and_sends_nothing_twice(moto_server: MotoServer, tmp_path: Path) -> None:
    world = batch_world(moto_server)
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env |= {
        "PYTHONPATH": str(root),
        "SCRIPTHUT_DATA_DIR": str(tmp_path / "data"),
        "SCRIPTHUT_CONFIG": str(tmp_path / "scripthut.yaml"),
        "DJANGO_SUPERUSER_PASSWORD": "admin-pw-123",
    }
    Path(env["SCRIPTHUT_CONFIG"]).write_text(
        "backends:\n"
        "  - name: aws-batch\n"
        "    type: batch\n"
        f"    aws: {{region: {REGION}, job_queue: {world.queue}, endpoint_url: '{moto_server.url}'}}\n"
        f"    job_definition: {world.job_definition}\n"
        "    max_concurrent: 1000\n"
    )
    scripthut(env, "import-config", env["SCRIPTHUT_CONFIG"])
    scripthut(env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps([{"id": f"t{i}", "name": f"t{i}", "command": "true"} for i in range(TASKS)]))
    run = subprocess.Popen(
        [SCRIPTHUT, "run", str(workflow), "--backend", "aws-batch", "--max-concurrent", "1000", "--wait"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while len(emulator_jobs()) < TASKS // 5 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.005)
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.wait(timeout=30)
    killed_at = len(emulator_jobs())
    log = run.stderr.read().decode() if run.stderr else ""
    assert 0 < killed_at < TASKS, f"killed after {killed_at} submits: {log}"
    after = subprocess.run(
        [sys.executable, "-c", AFTER_KILL],
        env={**env, "DJANGO_SETTINGS_MODULE": "scripthut_site.settings"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert after.returncode == 0, after.stderr
    tasks = json.loads(after.stdout.strip().splitlines()[-1])
    assert len(tasks) == TASKS and {state for _, state, _ in tasks} == {"submitted"}
    jobs = emulator_jobs()
    assert len(jobs) == TASKS, f"{len(jobs) - TASKS} tasks were sent twice"
    # Each task's job is the one job carrying its tag.
    by_tag = {job.job_name.split("_", 1)[0]: job_id for job_id, job in jobs.items()}
    assert {tag: job_id for tag, _, job_id in tasks} == by_tag
