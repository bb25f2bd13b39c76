"""Task ends seen in seconds on the real Slurm: each job script leaves start and end markers,
which the tick reads with one command on the open SSH connection between two scheduler
polls (no slurmctld query); a job that dies without a marker is still caught by the poll."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import connection

from backends.base import CommandResult
from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import close_all, get_adapter
from backends.slurm.adapter import SlurmAdapter
from runs.actions import create_run
from runs.engine.tick import tick_due_backends
from runs.models import Run, Task
from runs.workers.ticker import EmbeddedTicker
from tests.cluster import Cluster, cluster  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.cluster]


def slurm_backend(cluster: Cluster, poll_interval: int) -> Backend:  # noqa: F811
    settings = validate_backend_settings(
        "slurm", {"ssh": cluster.ssh_settings(), "account": cluster.account, "end_markers_every": 1}
    )
    return Backend.objects.create(
        name="slurm", kind="slurm", settings=settings, max_concurrent=100, poll_interval=poll_interval
    )


def tick_until_finished(run: Run, timeout: float) -> Run:
    """Tick as the embedded ticker does (only backends that are due) until the run ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick_due_backends()
        run.refresh_from_db()
        if run.is_finished:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run still {run.status} after {timeout}s: {list(run.tasks.values_list('state', 'reason'))}")


def test_an_end_is_seen_from_its_marker_long_before_the_poll_interval(user, cluster):  # noqa: F811
    """Tried as a user would: a task's end showed only at the next poll (up to poll_interval,
    60 s by default on clusters). With poll_interval 3600 a chain of two short tasks
    (native dependencies off: the portal releases the second) ends, and the
    scheduler was polled only at the first tick."""
    backend = slurm_backend(cluster, poll_interval=3600)
    backend.settings["native_dependencies"] = False
    backend.save()
    chain = [
        {"id": "a", "name": "a", "command": "sleep 1", "time_limit": "5:00"},
        {"id": "b", "name": "b", "command": "exit 3", "time_limit": "5:00", "deps": ["a"]},
    ]
    run = create_run(owner=user, backend=backend, payload=chain, workflow_name="markers")
    tick_due_backends(force=True)  # submits a; the scheduler's poll runs once
    polled = Backend.objects.get(pk=backend.pk).last_polled_at
    run = tick_until_finished(run, timeout=600)  # a busy shared cluster may queue the jobs a while
    a, b = Task.objects.filter(run=run).order_by("task_id")
    assert (a.state, a.exit_code) == ("completed", 0)
    assert (b.state, b.exit_code, b.reason) == ("failed", 3, "exit code 3")
    assert a.started_at and a.finished_at and a.node
    assert Backend.objects.get(pk=backend.pk).last_polled_at == polled, "the scheduler was polled again"
    # The scheduler's next poll adds what only its accounting knows to the tasks ended by markers.
    Backend.objects.filter(pk=backend.pk).update(poll_interval=1, next_poll_at=None)
    deadline = time.monotonic() + 60
    while Task.objects.get(pk=a.pk).cpu_efficiency is None:
        assert time.monotonic() < deadline, "no CPU efficiency from sacct in 60 s"
        tick_due_backends()
        time.sleep(0.5)


def test_a_job_killed_without_a_marker_is_caught_by_the_scheduler_poll(user, cluster):  # noqa: F811
    """The job script is killed (SIGKILL: no end marker): the marker reads never see it end,
    the scheduler's own poll does."""
    backend = slurm_backend(cluster, poll_interval=4)
    killed = [{"id": "k", "name": "k", "command": "kill -9 $$", "time_limit": "5:00"}]
    run = create_run(owner=user, backend=backend, payload=killed, workflow_name="killed")
    tick_due_backends(force=True)
    polled = Backend.objects.get(pk=backend.pk).last_polled_at
    run = tick_until_finished(run, timeout=120)
    task = Task.objects.get(run=run)
    assert task.state == "failed", task.reason
    last = Backend.objects.get(pk=backend.pk).last_polled_at
    assert polled and last and last > polled, "ended without a scheduler poll"


def test_a_job_cancelled_on_the_cluster_leaves_no_end_marker(user, cluster):  # noqa: F811
    """bash runs the EXIT trap also when SIGTERM ends it, with $? = 0 from the last command
    that finished: a job scancel'd in its first command left an end marker saying exit 0,
    and its task ended "completed" (seen once on an array element). The scheduler's poll
    says what happened to it instead."""
    backend = slurm_backend(cluster, poll_interval=3600)
    task = {"id": "long", "name": "long", "command": "sleep 120", "time_limit": "5:00"}
    run = create_run(owner=user, backend=backend, payload=[task], workflow_name="cancelled")
    deadline = time.monotonic() + 300  # a busy shared cluster may queue the job a while
    while (long := Task.objects.get(run=run)).state != "running":
        assert time.monotonic() < deadline, long.reason
        tick_due_backends(force=True)
        time.sleep(0.5)
    cluster.run_as_user(f"scancel {long.job_id}")
    while "CANCELLED" not in cluster.run_as_user(f"sacct --noheader -X --format=State --jobs={long.job_id}"):
        assert time.monotonic() < deadline, "scancel did not end the job"
        time.sleep(0.5)
    tick_due_backends(force=True)  # reads the markers only: the scheduler's poll is an hour away
    assert Task.objects.get(run=run).state == "running"  # no end marker said "completed"
    Backend.objects.filter(pk=backend.pk).update(last_polled_at=None, next_poll_at=None)
    run = tick_until_finished(run, timeout=60)
    long = Task.objects.get(run=run)
    assert long.state == "cancelled" and "CANCELLED" in long.reason


def test_an_end_marker_wakes_the_engine_at_once(user, cluster, monkeypatch):  # noqa: F811
    """Tried as a user would: a chain of 1 s tasks (native dependencies off) advanced one
    link per marker read, 5 s each, 1.7x Slurm's own afterok chain. The watch on the open
    connection (backends/ssh/watch.py) wakes the ticker when a job leaves its end marker:
    with marker reads 600 s apart and the scheduler polled once, the chain still ends."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)  # threads' connections closed
    backend = slurm_backend(cluster, poll_interval=3600)
    backend.settings |= {"native_dependencies": False, "end_markers_every": 600}
    backend.save()
    chain = [
        {"id": "a", "name": "a", "command": "sleep 1", "time_limit": "5:00"},
        {"id": "b", "name": "b", "command": "exit 3", "time_limit": "5:00", "deps": ["a"]},
    ]
    ticker = EmbeddedTicker(interval=600)  # only a wake can tick again within the test
    ticker.start()
    try:
        run = create_run(owner=user, backend=backend, payload=chain, workflow_name="watched")
        deadline = time.monotonic() + 300  # a busy shared cluster may queue the jobs a while
        while not Run.objects.get(pk=run.pk).is_finished:
            assert time.monotonic() < deadline, list(Task.objects.filter(run=run).values_list("state", "reason"))
            time.sleep(0.2)
    finally:
        ticker.stop()
        ticker.join()
        close_all()  # ends the watch
    a, b = Task.objects.filter(run=run).order_by("task_id")
    assert (a.state, b.state, b.exit_code) == ("completed", "failed", 3)
    backend.refresh_from_db()
    assert backend.last_polled_at and a.finished_at and backend.last_polled_at < a.finished_at, "ended by a poll"


def test_a_job_ended_by_its_marker_is_not_asked_of_slurmctld(cluster):  # noqa: F811
    """A poll asks sacct about jobs ended by their marker (for CPU efficiency and memory);
    one slurmdbd has not recorded yet made the poll ask slurmctld (``scontrol show job``,
    a REQUEST_JOB_INFO) for nothing it could use: not any more. A job missing from the
    queue and accounting that no marker ended is still asked about."""
    backend = slurm_backend(cluster, poll_interval=60)
    adapter = get_adapter(backend)
    assert isinstance(adapter, SlurmAdapter)
    commands: list[str] = []
    run = adapter.transport.run

    def recorded(command: str, **options: Any) -> CommandResult:
        commands.append(command)
        return run(command, **options)

    adapter.transport.run = recorded  # type: ignore[method-assign]
    unrecorded = "987654321"  # no such job: neither squeue nor sacct lists it
    adapter.ended_by_marker.add(unrecorded)
    adapter.poll([unrecorded])
    assert not [c for c in commands if "scontrol" in c], commands
    adapter.ended_by_marker.clear()
    adapter.poll([unrecorded])
    assert [c for c in commands if "scontrol" in c and "show job" in c], commands
