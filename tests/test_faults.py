"""Nothing lost, nothing twice: kill -9 the portal's processes while a run is going.

Each test drives a run whose tasks append their id to a ledger file, SIGKILLs whole
process groups (a Celery worker with its pool, beat, the web server, the embedded
server) at random moments and starts them again, then checks the ledger and the
database: every task ran exactly once, none is lost, none is shown failed.
``bench/faults_bench.py`` times the same runs undisturbed.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.faults import Portal, drive, drop_database, judge, ledger_workflow
from tests.test_celery import redis_up

pytestmark = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")

LOCAL_CONFIG = "backends:\n  - name: local\n    type: local\n    max_concurrent: 10\n    poll_interval: 1\n"
# A tick killed mid-way holds its backend's lease until it expires.
FAULT_ENV = {"SCRIPTHUT_BACKEND_LEASE_SECONDS": "15"}


@pytest.fixture
def portal(tmp_path: Path):
    name = f"scripthut_faults_{uuid.uuid4().hex[:8]}"
    portal = Portal(tmp_path, name, LOCAL_CONFIG, extra_env=FAULT_ENV)
    portal.prepare()
    try:
        yield portal
    finally:
        portal.stop_all()
        drop_database(name)


def test_kill_workers_beat_and_web_during_a_local_run(portal: Portal, tmp_path: Path) -> None:
    portal.start_web()
    workers = ["worker1", "worker2"]
    for name in workers:
        portal.start_worker(name)
    portal.start_beat()
    ledger = tmp_path / "ledger"
    workflow = ledger_workflow(ledger, 200)
    run_id = portal.start_run(workflow, "local", max_concurrent=10)

    rng = random.Random(13)
    kills: Counter[str] = Counter()
    next_kill = rng.uniform(0.5, 1.5)

    def disturb(elapsed: float) -> None:
        nonlocal next_kill
        if kills["beat"] == 0 and elapsed > 6:
            portal.kill9("beat")
            kills["beat"] += 1
            portal.start_beat()
        if kills["web"] == 0 and elapsed > 9:
            portal.kill9("web")
            kills["web"] += 1
            portal.start_web()
        if elapsed >= next_kill:
            victim = rng.choice(workers)
            portal.kill9(victim)
            kills["worker"] += 1
            portal.start_worker(victim)
            next_kill = elapsed + rng.uniform(0.7, 2.0)

    seconds = drive(lambda: portal.finished(run_id), disturb, timeout=300)
    outcome = judge(workflow, ledger, portal.task_states(run_id), kills, seconds)
    print(outcome.summary())
    assert outcome.kills["worker"] >= 20 and outcome.kills["beat"] == 1 and outcome.kills["web"] == 1
    assert outcome.duplicates == {}
    assert outcome.lost == []
    assert outcome.failed == {}
    assert portal.run_status(run_id) == "completed"
