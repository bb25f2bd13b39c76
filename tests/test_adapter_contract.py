"""What every adapter promises the engine (backends/base.py), checked on every kind in the
registry: a kind added to ``backends.registry.BACKENDS`` is included here by itself, and
fails until it has a harness below.

Each kind is driven by the real thing, or the nearest the tests have: local processes; the
Slurm cluster of tests/cluster.py; PBS commands answering in the recorded OpenPBS form
and running the jobs on this host (tests/fake_pbs.py); moto's server for AWS Batch
(tests/aws.py), ECS (tests/aws_ecs.py) and EC2 (tests/aws_ec2.py, instances played on this host, logs fetched
over the cluster's sshd). Where the emulator does not move a job itself, the harness
does what AWS would (``advance``). ``-m "not cluster and not aws"`` leaves the kinds
that need neither.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings as django_settings

from backends.base import BackendAdapter, JobSpec, JobState, JobStatus, TaskLog
from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import BACKENDS, adapter_class, close_all, get_adapter, settings_class
from tests import fake_pbs
from tests.aws import moto_server_fixture, moto_url_fixture  # noqa: F401  (fixtures)
from tests.aws_ec2 import moto_ec2  # noqa: F401  (fixture)
from tests.cluster import cluster  # noqa: F401  (fixture)

if TYPE_CHECKING:
    from tests.aws import MotoServer
    from tests.aws_ec2 import Emulator
    from tests.cluster import Cluster

# What a kind's harness needs besides this process: select or leave them with -m.
NEEDS = {
    "slurm": [pytest.mark.cluster],
    "batch": [pytest.mark.aws],
    "ec2": [pytest.mark.aws, pytest.mark.cluster],
    "ecs": [pytest.mark.aws],
}
KINDS = [pytest.param(kind, marks=NEEDS.get(kind, [])) for kind in BACKENDS]
DEADLINE = 120  # seconds for a job to end: the shared cluster may be busy

HOSTILE = 'it\'s "quoted" $(touch PWNED) `touch PWNED` ; touch PWNED\nline two'


@dataclass
class Harness:
    adapter: BackendAdapter
    partition: str = "normal"
    unknown_id: str = "424242"  # an id of the scheduler's shape that no job has
    # Moves emulated jobs on as the real service would: (adapter, the job to finish).
    advance: Callable[[BackendAdapter, str], None] = lambda adapter, finishing: None


def backend_row(kind: str, name: str, settings: dict[str, Any]) -> Backend:
    values = validate_backend_settings(kind, settings)
    return Backend.objects.create(name=name, kind=kind, settings=values, max_concurrent=10)


def local_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return Harness(get_adapter(backend_row("local", "contract-local", {"work_dir": str(tmp_path / "work")})))


def slurm_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    slurm: Cluster = request.getfixturevalue("cluster")
    adapter = get_adapter(backend_row("slurm", "contract-slurm", {"ssh": slurm.ssh_settings()}))
    return Harness(adapter, partition=slurm.partition, unknown_id="999999999")


def pbs_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    adapter = get_adapter(backend_row("pbs", "contract-pbs", {"ssh": {"host": "pbs.example"}}))
    (tmp_path / "home").mkdir()
    # In place of SSH: bash on this host, with the fake PBS commands (tests/fake_pbs.py).
    adapter.transport = fake_pbs.LocalShell(tmp_path / "home", fake_pbs.install(tmp_path / "pbs"))  # type: ignore[attr-defined]
    return Harness(adapter, unknown_id="99999.vm")


def batch_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    from tests.aws import batch_world, finish_job, moto_job, start_job

    server: MotoServer = request.getfixturevalue("moto_server")
    world = batch_world(server)
    aws = {"region": "us-east-1", "job_queue": world.queue, "endpoint_url": server.url}
    adapter = get_adapter(backend_row("batch", "contract-batch", {"aws": aws, "job_definition": world.job_definition}))

    finished: set[str] = set()

    def advance(adapter: BackendAdapter, finishing: str) -> None:
        # moto runs no job: start and end the one to finish, and stop cancelled ones.
        if finishing not in finished:
            start_job(server, finishing, ("contract-out",))
            finish_job(finishing, 0)
            finished.add(finishing)
        for job_id in _batch_ids(server):
            job = moto_job(job_id)
            if job.stop and job.status not in ("SUCCEEDED", "FAILED"):
                job._mark_stopped(success=False)

    return Harness(adapter, unknown_id="00000000-0000-0000-0000-000000000000", advance=advance)


def _batch_ids(server: MotoServer) -> list[str]:
    batch = server.client("batch")
    queues = [q["jobQueueName"] for q in batch.describe_job_queues()["jobQueues"]]
    live = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
    listings = [batch.list_jobs(jobQueue=queue, jobStatus=status) for queue in queues for status in live]
    return [job["jobId"] for listing in listings for job in listing["jobSummaryList"]]


def ecs_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    from tests.aws_ecs import ecs_world, finish_task, hold_tasks, write_log

    server: MotoServer = request.getfixturevalue("moto_server")
    hold_tasks(server)  # tasks stay RUNNING until advanced; StopTask stops them at once
    world = ecs_world(server)
    adapter = get_adapter(backend_row("ecs", "contract-ecs", world.settings(server, default_image="bash:5")))
    finished: set[str] = set()

    def advance(adapter: BackendAdapter, finishing: str) -> None:
        if finishing not in finished:
            # What the awslogs driver would have written, then the container's end.
            write_log(server, "/ecs/scripthut", f"scripthut/main/{finishing.rsplit('/', 1)[-1]}", ("contract-out",))
            finish_task(finishing, 0)
            finished.add(finishing)

    unknown = "arn:aws:ecs:us-east-1:123456789012:task/scripthut-cluster/00000000000000000000000000000000"
    return Harness(adapter, unknown_id=unknown, advance=advance)


def ec2_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    from tests.aws_ec2 import LoopbackConnector, LoopbackEnd

    sshd: Cluster = request.getfixturevalue("cluster")
    emulator: Emulator = request.getfixturevalue("moto_ec2")
    settings = request.getfixturevalue("settings")
    settings.SCRIPTHUT_EC2_CONNECTOR = "tests.aws_ec2.LoopbackConnector"
    LoopbackConnector.end = LoopbackEnd(cluster=sshd, host=emulator.host)
    request.addfinalizer(lambda: setattr(LoopbackConnector, "end", None))
    adapter = get_adapter(backend_row("ec2", "contract-ec2", emulator.backend_settings(ssh_user=sshd.user)))

    def advance(adapter: BackendAdapter, finishing: str) -> None:
        emulator.host.boot()  # moto boots nothing: run each launched instance's user data here

    return Harness(adapter, unknown_id="i-0123456789abcdef0", advance=advance)


HARNESSES: dict[str, Callable[[pytest.FixtureRequest, Path], Harness]] = {
    "local": local_harness,
    "slurm": slurm_harness,
    "pbs": pbs_harness,
    "batch": batch_harness,
    "ec2": ec2_harness,
    "ecs": ecs_harness,
}


@pytest.fixture
def harness(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Iterator[Harness]:
    if kind not in HARNESSES:
        pytest.fail(f"backend kind {kind!r} has no contract harness: add one to HARNESSES in {__file__}")
    close_all()
    yield HARNESSES[kind](request, tmp_path)
    close_all()


def spec(harness: Harness, tag: str, command: str) -> JobSpec:
    """A job as the engine makes one (runs/engine/jobspec.py), logs where the adapter puts them."""
    job = JobSpec(tag=tag, run_id="c1", task_id=tag.split("-")[2], name="contract job", command=command)
    job.partition, job.memory, job.time_limit = harness.partition, "100M", "5:00"
    job.output_file = harness.adapter.default_log_path(job, "out")
    job.error_file = harness.adapter.default_log_path(job, "err")
    return job


def poll_until(harness: Harness, job_ids: list[str], finishing: str, ended: Callable[[JobStatus], bool]) -> JobStatus:
    """Poll every job (as the engine does: ones left out may be taken for orphans) until
    ``ended`` says yes to the last of ``job_ids``."""
    deadline = time.monotonic() + DEADLINE
    while True:
        harness.advance(harness.adapter, finishing)
        result = harness.adapter.poll(job_ids)
        assert set(result.statuses) == set(job_ids)
        status = result.statuses[job_ids[-1]]
        if ended(status):
            return status
        assert time.monotonic() < deadline, f"{job_ids[-1]} still {status.state} ({status.reason})"
        time.sleep(0.5)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", KINDS)
def test_submit_poll_find_cancel_and_logs(kind: str, harness: Harness) -> None:
    adapter = harness.adapter
    # Tags unique to this attempt, as the engine's are: the scheduler remembers earlier runs' jobs.
    attempt = secrets.token_hex(3)
    done = spec(harness, f"sh-c1-1-{attempt}", "echo contract-out; echo contract-err >&2")
    waits = spec(harness, f"sh-c1-2-{attempt}", "sleep 600")
    results = adapter.submit([(job, adapter.render_script(job)) for job in (done, waits)])
    assert [(r.tag, r.error, r.retry, r.parent_gone) for r in results] == [
        (done.tag, "", False, False),
        (waits.tag, "", False, False),
    ]
    done_id, waits_id = (r.job_id for r in results)
    assert done_id and waits_id and done_id != waits_id

    # Every id asked about is answered, under that id; an id nobody has is UNKNOWN.
    first = adapter.poll([done_id, waits_id, harness.unknown_id])
    assert set(first.statuses) == {done_id, waits_id, harness.unknown_id}
    assert all(status.job_id == job_id for job_id, status in first.statuses.items())
    assert first.statuses[harness.unknown_id].state == JobState.UNKNOWN
    assert first.statuses[waits_id].state in (JobState.QUEUED, JobState.RUNNING)
    nobody = f"sh-c1-9-{attempt}"
    assert adapter.find_submitted([done.tag, waits.tag, nobody]) == {done.tag: done_id, waits.tag: waits_id}
    assert adapter.find_submitted([]) == {}

    ended = poll_until(harness, [waits_id, done_id], done_id, lambda status: status.state.is_final)
    assert (ended.state, ended.exit_code) == (JobState.COMPLETED, 0), ended.reason
    log = TaskLog(done_id, "output", done.output_file, done.working_dir, run_id=done.run_id)
    assert adapter.log_location(log)
    assert "contract-out" in adapter.read_log(log)

    adapter.cancel([waits_id, done_id])  # a finished job among them is no error
    adapter.cancel([])
    gone = poll_until(harness, [waits_id], done_id, lambda s: s.state.is_final or s.state == JobState.UNKNOWN)
    assert gone.state != JobState.COMPLETED


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_render_script_quotes_every_value(kind: str, tmp_path: Path) -> None:
    """The script, run with the task's environment (written in it, or passed beside it as
    AWS Batch does), gives the command every value intact and runs nothing else."""
    example = settings_class(kind).example
    extra = {"allowed_paths": [str(tmp_path)]} if kind == "local" else {}
    row = Backend(name=f"render-{kind}", kind=kind, settings=validate_backend_settings(kind, {**example, **extra}))
    adapter = adapter_class(kind)(row, Path(django_settings.DATA_DIR))
    workdir = tmp_path / "work dir $(touch PWNED)"
    workdir.mkdir()
    job = JobSpec(
        tag="sh-c1-3-cccccc",
        run_id="c1",
        task_id="it's-$(touch PWNED)",
        name='a "name" $(touch PWNED)',
        command='printf "%s" "$GREETING" > greeting.txt',
        working_dir=str(workdir),
        env={"GREETING": HOSTILE},
        output_file=str(tmp_path / "logs" / "out file"),
        error_file=str(tmp_path / "logs" / "err file"),
    )
    script = adapter.render_script(job)
    adapter.close()
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **job.env}
    ran = subprocess.run(
        ["bash", "-s"], input=script, text=True, capture_output=True, env=env, cwd=tmp_path, timeout=30
    )
    assert ran.returncode == 0, ran.stderr
    assert (workdir / "greeting.txt").read_text() == HOSTILE
    assert not list(tmp_path.rglob("PWNED"))
