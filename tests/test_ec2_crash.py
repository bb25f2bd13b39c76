"""kill -9 of the portal between ``run_instances`` and recording the instance id: after a
restart the instance is adopted (found by its submit tag), not launched a second time.

The portal is a real process on its own SQLite file, ticking; the emulator runs in this
test process, and its RunInstances handler SIGKILLs the portal after creating the
instance and before answering, so the portal never learns the id."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from moto.ec2.responses.instances import InstanceResponse

from tests.aws_ec2 import Emulator, moto_ec2  # noqa: F401  (fixture)
from tests.test_cli import SCRIPTHUT, scripthut

pytestmark = [pytest.mark.aws, pytest.mark.faults]

ROOT = Path(__file__).resolve().parents[1]
TICKER = (
    "import time\nfrom runs.engine.tick import tick_due_backends\n"
    "while True:\n    tick_due_backends(force=True)\n    time.sleep(0.3)\n"
)


def portal(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([SCRIPTHUT, "shell", "-c", TICKER], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def tasks(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return list(connection.execute("SELECT state, job_id, submit_tag FROM runs_task"))


def last_ticked(db: Path) -> str:
    """When the backend's last tick set its next one (every tick does: the scheduler's poll
    or a read of the sentinels only)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        ((next_tick,),) = connection.execute("SELECT next_poll_at FROM backends_backend")
        return str(next_tick)


def wait_for(what: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return found


def fresh_portal(emulator: Emulator, tmp_path: Path, count: int, **backend: Any) -> tuple[dict[str, str], Path]:
    """A portal in its own data dir with the ec2 backend and a run of ``count`` long tasks."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "SCRIPTHUT_DATA_DIR": str(tmp_path / "data"),
        "SCRIPTHUT_CONFIG": str(tmp_path / "scripthut.yaml"),
        "SCRIPTHUT_BACKEND_LEASE_SECONDS": "2",  # a dead portal's lease expires soon
        "DJANGO_SUPERUSER_PASSWORD": "admin-pw-123",
    }
    stanza = {"name": "aws-ec2", "type": "ec2", **emulator.backend_settings(), **backend}
    Path(env["SCRIPTHUT_CONFIG"]).write_text(yaml.safe_dump({"backends": [stanza]}))
    scripthut(env, "import-config", env["SCRIPTHUT_CONFIG"])
    scripthut(env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    workflow = tmp_path / "wf.json"
    tasks = [{"id": f"t{i}", "name": f"t{i}", "command": "sleep 600", "time_limit": "20:00"} for i in range(count)]
    workflow.write_text(json.dumps(tasks))
    scripthut(env, "run", str(workflow), "--backend", "aws-ec2", "--max-concurrent", str(count))
    return env, tmp_path / "data" / "scripthut.sqlite3"


def test_kill_between_run_instances_and_recording_adopts_the_instance(moto_ec2: Emulator, tmp_path, monkeypatch):  # noqa: F811
    env, db = fresh_portal(moto_ec2, tmp_path, 1)

    first = portal(env)
    launches: list[str] = []
    original = InstanceResponse.run_instances

    def run_then_kill(self: InstanceResponse) -> Any:
        response = original(self)
        launches.append("run_instances")
        os.kill(first.pid, signal.SIGKILL)  # the instance exists; its id never reaches the portal
        return response

    monkeypatch.setattr(InstanceResponse, "run_instances", run_then_kill)
    first.wait(60)
    assert first.returncode == -signal.SIGKILL
    monkeypatch.setattr(InstanceResponse, "run_instances", original)
    [(state, job_id, tag)] = tasks(db)
    assert state == "submitting" and job_id == ""
    [instance] = moto_ec2.instances()
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}["scripthut:tag"] == tag

    second = portal(env)
    try:
        adopted = wait_for(lambda: [t for t in tasks(db) if t[0] in ("submitted", "running")])
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
    assert adopted[0][1] == instance["InstanceId"]
    assert len(moto_ec2.instances()) == 1 and launches == ["run_instances"]  # not launched twice


def test_two_portals_ticking_at_once_never_exceed_max_instances(moto_ec2: Emulator, tmp_path):  # noqa: F811
    env, db = fresh_portal(moto_ec2, tmp_path, 5, max_instances=2)
    env["SCRIPTHUT_BACKEND_LEASE_SECONDS"] = "300"  # one tick of the backend at a time, as deployed
    portals = [portal(env), portal(env)]
    try:
        wait_for(lambda: len(moto_ec2.instances("pending", "running")) == 2)
        # Each further tick of the backend, by either portal, would launch a third instance if
        # the cap did not hold: watch until it has been ticked ten more times.
        peak, ticks = 0, {last_ticked(db)}
        deadline = time.monotonic() + 120
        while len(ticks) <= 10:
            assert time.monotonic() < deadline, f"the backend was ticked only {len(ticks) - 1} times in 120 s"
            peak = max(peak, len(moto_ec2.instances("pending", "running")))
            ticks.add(last_ticked(db))
            time.sleep(0.1)
        waiting = [t for t in tasks(db) if t[0] == "pending"]
    finally:
        for process in portals:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
    assert peak == 2 and len(moto_ec2.instances()) == 2 and len(waiting) == 3
