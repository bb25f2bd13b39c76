"""kill -9 of the process submitting to AWS ECS, mid-batch: no task lost, none sent twice.

An embedded ``scripthut run --wait`` (its own SQLite data dir, the ecs backend from
a scripthut.yaml) submits 300 tasks to moto's server (one RunTask each); it is killed with SIGKILL once
the emulator holds some of its jobs, i.e. between handing jobs to AWS and recording
their ids. A fresh process then ticks: every task ends up with exactly one ECS task
(found by startedBy; moto ignores RunTask's clientToken, so only reconciling keeps it one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.aws import (
    REGION,
    MotoServer,
    moto_server_fixture,  # noqa: F401  (fixture)
    moto_url_fixture,  # noqa: F401  (fixture)
)
from tests.aws_ecs import ecs_world, emulator_tasks, hold_tasks
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


def test_kill_9_mid_run_task_loses_nothing_and_starts_nothing_twice(moto_server: MotoServer, tmp_path: Path) -> None:
    hold_tasks(moto_server)
    world = ecs_world(moto_server)
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
        "  - name: aws-ecs\n"
        "    type: ecs\n"
        f"    aws: {{region: {REGION}, endpoint_url: '{moto_server.url}'}}\n"
        f"    cluster: {world.cluster}\n"
        f"    subnets: [{world.subnet}]\n"
        f"    security_groups: [{world.security_group}]\n"
        f"    task_definition: {world.task_definition}\n"
        "    max_concurrent: 1000\n"
    )
    scripthut(env, "import-config", env["SCRIPTHUT_CONFIG"])
    scripthut(env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps([{"id": f"t{i}", "name": f"t{i}", "command": "true"} for i in range(TASKS)]))
    run = subprocess.Popen(
        [SCRIPTHUT, "run", str(workflow), "--backend", "aws-ecs", "--max-concurrent", "1000", "--wait"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while len(emulator_tasks()) < TASKS // 5 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.005)
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.wait(timeout=30)
    killed_at = len(emulator_tasks())
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
    assert len(tasks) == TASKS and {state for _, state, _ in tasks} == {"running"}  # moto starts tasks RUNNING
    jobs = emulator_tasks()
    assert len(jobs) == TASKS, f"{len(jobs) - TASKS} tasks were sent twice"
    # Each task's ECS task is the one started by its tag.
    by_tag = {task.started_by: arn for arn, task in jobs.items()}
    assert {tag: job_id for tag, _, job_id in tasks} == by_tag
