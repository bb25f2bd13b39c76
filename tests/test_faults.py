"""Nothing lost, nothing twice: kill -9 the portal's processes while a run is going.

Each test drives a run whose tasks append their id to a ledger file, SIGKILLs whole
process groups (a Celery worker with its pool, beat, the web server, the embedded
server) at random moments and starts them again, then checks the ledger and the
database: every task ran exactly once, none is lost, none is shown failed.
``bench/faults_bench.py`` times the same runs undisturbed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from tests.faults import WORKERS, Portal, drive, drop_database, gated, judge, ledger_counts, ledger_workflow
from tests.own_servers import own_servers
from tests.test_celery import redis_up

if TYPE_CHECKING:
    from tests.cluster import Cluster

pytest_plugins = ["tests.cluster"]

pytestmark = pytest.mark.faults

# Under CI a missing Redis fails the tests (as in test_celery), it does not skip them.
needs_redis = pytest.mark.skipif(not redis_up() and not os.environ.get("CI"), reason="no Redis on 127.0.0.1:6379")

CELERY_TASKS = 200
EMBEDDED_TASKS = 100
EMBEDDED_KILLS = 6
SLURM_TASKS = 60
SLURM_KILLS = 10
WORKER_KILLS = 20
RESTART_TASKS = 100
LOCAL_CONFIG = "backends:\n  - name: local\n    type: local\n    max_concurrent: 10\n    poll_interval: 1\n"


@pytest.fixture
def portal(tmp_path: Path):
    name = f"scripthut_faults_{uuid.uuid4().hex[:8]}"
    portal = Portal(tmp_path, name, LOCAL_CONFIG)
    portal.prepare()
    try:
        yield portal
    finally:
        portal.stop_all()
        drop_database(name)


@pytest.mark.services
@needs_redis
def test_kill_workers_beat_and_web_during_a_local_run(portal: Portal, tmp_path: Path) -> None:
    portal.start_deployment()
    workers = list(WORKERS)
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    workflow = ledger_workflow(ledger, CELERY_TASKS)
    run_id = portal.start_run(gated(workflow, gate, last=20), "local", max_concurrent=10)

    rng = random.Random(13)
    kills: Counter[str] = Counter()
    killer = WorkerKiller(portal, workers, rng, kills)

    def disturb(elapsed: float) -> None:
        if kills["beat"] == 0 and elapsed > 6:
            restart(portal, "beat", kills)
        if kills["web"] == 0 and elapsed > 9:
            restart(portal, "web", kills)
        killer.step()
        if kills["worker1"] + kills["worker2"] >= WORKER_KILLS and kills["web"]:
            gate.touch()  # the last tasks may start (the kills go on)

    seconds = drive(lambda: portal.finished(run_id), disturb, timeout=300)
    outcome = judge(workflow, ledger, portal.task_states(run_id), kills, seconds)
    print(outcome.summary())
    assert (
        outcome.kills["worker1"] + outcome.kills["worker2"] >= WORKER_KILLS
        and outcome.kills["beat"] == 1
        and outcome.kills["web"] == 1
    )
    assert outcome.duplicates == {}
    assert outcome.lost == []
    assert outcome.failed == {}
    assert portal.run_status(run_id) == "completed"


def restart(portal: Portal, name: str, kills: Counter[str]) -> None:
    """kill -9 ``name``'s whole process group and start it again at once."""
    portal.kill9(name)
    kills[name] += 1
    portal.start_named(name)


def test_kill_the_embedded_server_during_a_local_run(tmp_path: Path) -> None:
    """Embedded mode (SQLite, the ticker inside `scripthut serve`): kill -9 the server, start it again."""
    portal = Portal(tmp_path, "", LOCAL_CONFIG, redis=False)
    portal.prepare()
    try:
        portal.start_serve()
        ledger, gate = tmp_path / "ledger", tmp_path / "gate"
        workflow = ledger_workflow(ledger, EMBEDDED_TASKS)
        run_id = portal.start_run(gated(workflow, gate, last=20), "local", max_concurrent=10)
        rng = random.Random(7)
        kills: Counter[str] = Counter()
        next_kill = rng.uniform(1.0, 3.0)

        def disturb(elapsed: float) -> None:
            nonlocal next_kill
            if elapsed >= next_kill and kills["web"] < EMBEDDED_KILLS:
                if kills["web"] == EMBEDDED_KILLS - 1:
                    # The last tasks run while the last kill comes: the gate opens with it,
                    # not a kill earlier (a fast portal then finished before the last kill).
                    gate.touch()
                restart(portal, "web", kills)
                next_kill = elapsed + rng.uniform(2.0, 5.0)

        seconds = drive(lambda: portal.finished(run_id), disturb, timeout=300)
        outcome = judge(workflow, ledger, portal.task_states(run_id), kills, seconds)
        print(outcome.summary())
        assert outcome.kills["web"] == EMBEDDED_KILLS
        assert (outcome.duplicates, outcome.lost, outcome.failed) == ({}, [], {})
        assert portal.run_status(run_id) == "completed"
    finally:
        portal.stop_all()


@pytest.mark.services
@pytest.mark.cluster
@needs_redis
def test_kill_workers_during_a_slurm_run(cluster: Cluster, tmp_path: Path) -> None:
    """The same on the real Slurm over SSH: workers killed mid-submit and mid-poll."""
    name = f"scripthut_faults_{uuid.uuid4().hex[:8]}"
    # A Redis database of its own: it runs beside the other fault tests (tests/markers.py).
    portal = Portal(tmp_path, name, slurm_config(cluster), redis_url="redis://127.0.0.1:6379/4")
    portal.prepare()
    ledger = f"~/faults-{uuid.uuid4().hex[:8]}.ledger"
    try:
        portal.start_deployment()
        workers = list(WORKERS)
        workflow = ledger_workflow(ledger, SLURM_TASKS, width=10)
        gate = f"/tmp/{name}.gate"  # noqa: S108  (the cluster's user must see it)
        run_id = portal.start_run(gated(workflow, Path(gate), last=10), "slurm", max_concurrent=10)
        kills: Counter[str] = Counter()
        # A little longer lives than on the local backend: a new worker first opens its SSH connection.
        killer = WorkerKiller(portal, workers, random.Random(5), kills, life=(1.5, 4.0))

        def disturb(elapsed: float) -> None:
            killer.step()
            if kills["worker1"] + kills["worker2"] >= SLURM_KILLS:
                Path(gate).touch()

        seconds = drive(lambda: portal.finished(run_id), disturb, timeout=600)
        text = cluster.run_as_user(f"cat {ledger}")
        outcome = judge(workflow, text, portal.task_states(run_id), kills, seconds)
        print(outcome.summary())
        assert outcome.kills["worker1"] + outcome.kills["worker2"] >= SLURM_KILLS
        assert (outcome.duplicates, outcome.lost, outcome.failed) == ({}, [], {})
    finally:
        portal.stop_all()
        drop_database(name)
        cluster.run_as_user(f"rm -f {ledger}", check=False)
        Path(f"/tmp/{name}.gate").unlink(missing_ok=True)  # noqa: S108


# The submitting process of the test below: it creates the run, then ticks once; the real
# submit runs (sbatch of the array), then the process hangs before the results are recorded
# and the test kill -9s it there. (The hang is the kill's seam; nothing else is replaced.)
SUBMIT_THEN_HANG = """
import json, sys, time
import django
django.setup()
from django.contrib.auth.models import User
from backends.models import Backend
from backends.slurm.adapter import SlurmAdapter
from runs.actions import create_run
from runs.engine.tick import tick_due_backends

real_submit = SlurmAdapter.submit

def submit_then_hang(self, jobs):
    results = real_submit(self, jobs)
    print("SUBMITTED", len(results), flush=True)
    time.sleep(600)

SlurmAdapter.submit = submit_then_hang
owner = User.objects.get(username="admin")
backend = Backend.objects.get(name="slurm")
run = create_run(owner=owner, backend=backend, payload=json.loads(sys.argv[1]), workflow_name="kill-mid-array")
print("RUN", run.pk, flush=True)
tick_due_backends(force=True)
"""


@pytest.mark.cluster
def test_kill_between_array_sbatch_and_its_record(cluster: Cluster, tmp_path: Path) -> None:
    """kill -9 of the submitting process after ``sbatch --array`` returned, before the job
    ids were stored: the next tick finds the array by its tag, maps each element back to
    its task, and every task runs exactly once (one job element each)."""
    portal = Portal(tmp_path, "", slurm_config(cluster), redis=False)
    portal.prepare()
    ledger = f"~/faults-{uuid.uuid4().hex[:8]}.ledger"
    workflow = ledger_workflow(ledger, 8, width=100)  # eight independent tasks: one array
    try:
        submitter = portal.start("submitter", [sys.executable, "-c", SUBMIT_THEN_HANG, json.dumps(workflow)])
        submitter.wait_until(lambda: "SUBMITTED 8" in submitter.log.read_text(), timeout=120)
        portal.kill9("submitter")
        run_id = submitter.log.read_text().split("RUN ", 1)[1].split()[0]
        rows = portal.sql("SELECT state, submit_tag, job_id FROM runs_task WHERE run_id = %s", run_id)
        assert {(state, job_id) for state, _, job_id in rows} == {("submitting", "")}, rows
        array_tags = {tag.rpartition("_")[0] for _, tag, _ in rows}
        assert len(array_tags) == 1 and sorted(int(tag.rpartition("_")[2]) for _, tag, _ in rows) == list(range(8))

        portal.start_serve()  # the embedded ticker: reconciles, then runs the run to its end
        seconds = drive(lambda: portal.finished(run_id), lambda elapsed: None, timeout=180)
        outcome = judge(workflow, cluster.run_as_user(f"cat {ledger}"), portal.task_states(run_id), Counter(), seconds)
        assert (outcome.duplicates, outcome.lost, outcome.failed) == ({}, [], {})
        job_ids = {
            tag: job_id
            for _, tag, job_id in portal.sql(
                "SELECT state, submit_tag, job_id FROM runs_task WHERE run_id = %s", run_id
            )
        }
        array_id = next(iter(job_ids.values())).partition("_")[0]
        assert job_ids == {tag: f"{array_id}_{tag.rpartition('_')[2]}" for tag in job_ids}
        (array_tag,) = array_tags
        ours = accounted_jobs(cluster, f"@{array_tag}", expect=len(job_ids))
        assert ours == Counter(job_ids.values())  # one job element per task, no other job
    finally:
        portal.stop_all()
        cluster.run_as_user(f"rm -f {ledger}", check=False)


def accounted_jobs(cluster: Cluster, name_suffix: str, expect: int, timeout: float = 60) -> Counter[str]:
    """Slurm accounting's rows (job id -> count) of the jobs whose name ends in ``name_suffix``,
    read once accounting has at least ``expect`` of them: the portal sees a job's end from its
    end marker, seconds before slurmdbd has recorded it. A job submitted twice would have been
    recorded before the last of ours ended, so it is in the same read."""
    deadline = time.monotonic() + timeout
    while True:
        out = cluster.run_as_user(
            "sacct --noheader --parsable2 --allocations --starttime=now-1hour --format=JobID,JobName"
        )
        jobs = Counter(line.split("|")[0] for line in out.splitlines() if line.endswith(name_suffix))
        if sum(jobs.values()) >= expect or time.monotonic() > deadline:
            return jobs
        time.sleep(0.5)


def slurm_config(cluster: Cluster) -> str:
    backend = {
        "name": "slurm",
        "type": "slurm",
        "max_concurrent": 10,
        "ssh": cluster.ssh_settings(),
        "account": cluster.account,
    }
    # Remote backends follow the portal-wide poll interval.
    return yaml.safe_dump({"backends": [backend], "settings": {"poll_interval": 1}})


class WorkerKiller:
    """Kills each worker at a random moment ``life`` seconds into its working life (once it
    is ready: a worker killed while starting would test only its start-up), and starts it again."""

    def __init__(
        self,
        portal: Portal,
        workers: list[str],
        rng: random.Random,
        kills: Counter[str],
        life: tuple[float, float] = (1.0, 4.0),
    ):
        self.portal, self.workers, self.rng, self.kills, self.life = portal, workers, rng, kills, life
        self.deadline: dict[str, float] = {}

    def step(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker in self.deadline:
                if now >= self.deadline[worker]:
                    del self.deadline[worker]
                    restart(self.portal, worker, self.kills)
            elif self.portal.worker_ready(worker):
                self.deadline[worker] = now + self.rng.uniform(*self.life)


@pytest.mark.services
@pytest.mark.skipif(not shutil.which("redis-server") and not os.environ.get("CI"), reason="no redis-server")
def test_postgresql_and_redis_restarted_mid_run(tmp_path: Path) -> None:
    """The database and the broker each go away for a few seconds (every connection cut,
    Redis's queued messages gone); web, workers and beat are left alone and carry on."""
    with own_servers(tmp_path) as (postgres, redis):
        name = "scripthut_faults_restarts"
        portal = Portal(tmp_path, name, LOCAL_CONFIG, postgres_server=postgres.url, redis_url=redis.url)
        portal.prepare()
        try:
            portal.start_deployment()
            ledger = tmp_path / "ledger"
            workflow = ledger_workflow(ledger, RESTART_TASKS)
            run_id = portal.start_run(workflow, "local", max_concurrent=10)
            restarts: Counter[str] = Counter()
            revived: Counter[str] = Counter()

            def disturb(elapsed: float) -> None:
                revived.update(portal.revive_exited())  # docker-compose.yml's `restart: unless-stopped`
                if not restarts["postgres"] and len(ledger_counts(ledger)) >= RESTART_TASKS // 4:
                    postgres.restart(down=3)
                    restarts["postgres"] += 1
                if not restarts["redis"] and len(ledger_counts(ledger)) >= RESTART_TASKS // 2:
                    redis.restart(down=2)
                    restarts["redis"] += 1

            seconds = drive(lambda: portal.finished(run_id), disturb, timeout=300)
            outcome = judge(workflow, ledger, portal.task_states(run_id), restarts, seconds)
            print(f"{outcome.summary()}; restarted by the restart policy: {dict(revived)}")
            assert restarts == {"postgres": 1, "redis": 1}
            assert (outcome.duplicates, outcome.lost, outcome.failed) == ({}, [], {})
            # The web server and beat ride out both outages in-process. A Celery 5.7 worker
            # may exit instead ("Unrecoverable error" in kombu's Redis reconnect, when it held
            # an unacknowledged message): its restart policy brings it back, as here.
            assert not revived["web"] and not revived["beat"], dict(revived)
        finally:
            portal.stop_all()
