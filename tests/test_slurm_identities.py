"""Per-user identities on the real one-node Slurm: two portal users, two Unix accounts.

Alice registers the test user ``hut``'s key, Bob ``hut2``'s (tests/setup/cluster.sh; their
homes are 0700). The backend has no account of its own (``ssh.identity: per_user``, no
user, no key): every job runs as its run's owner.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.test import Client

from backends import registry
from backends.config import validate_backend_settings
from backends.identity import identity_of
from backends.models import Backend, ClusterIdentity
from backends.slurm.adapter import SlurmAdapter
from runs.actions import cancel_run, create_run
from runs.engine.jobspec import task_log
from runs.engine.tick import tick_due_backends
from runs.engine.waiting import shown_reason
from runs.models import ObservedJob, Run, Task
from runs.workflows.parse import WorkflowError

if TYPE_CHECKING:
    from tests.cluster import Cluster

pytest_plugins = ["tests.cluster"]  # the session-scoped `cluster` fixture
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.cluster]


def t(task_id: str, command: str) -> dict[str, str]:
    return {"id": task_id, "name": task_id, "command": command, "time_limit": "5:00"}


@pytest.fixture
def hpc(cluster: Cluster) -> Iterator[Backend]:
    ssh = {"host": cluster.host, "port": cluster.port, "known_hosts": cluster.known_hosts, "identity": "per_user"}
    settings = validate_backend_settings("slurm", {"ssh": ssh, "account": cluster.account})
    backend = Backend.objects.create(name="hpc", kind="slurm", settings=settings, max_concurrent=10, poll_interval=1)
    yield backend
    registry.close_all()


def register(user: User, username: str, key_path: str) -> Client:
    """Add the identity through the settings page, as the user would; their logged-in client."""
    client = Client()
    client.force_login(user)
    key = Path(key_path).read_text()
    answer = client.post("/settings/identities/hpc", {"username": username, "private_key": key})
    assert answer.status_code == 302, answer.content.decode()[-2000:]
    page = client.get("/settings/identities").content.decode()
    key_lines = [line for line in key.splitlines() if line and not line.startswith("-----")]
    assert key_lines and not any(line in page for line in key_lines)
    return client


@pytest.fixture
def alice(user: User, hpc: Backend, cluster: Cluster) -> User:
    register(user, cluster.user, cluster.key_path)
    return user


@pytest.fixture
def bob(bob: User, hpc: Backend, cluster: Cluster) -> User:
    register(bob, cluster.user2, cluster.key_path2)
    return bob


def finish(*runs: Run, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick_due_backends(force=True)
        for run in runs:
            run.refresh_from_db()
        if all(run.is_finished for run in runs):
            return
        time.sleep(0.5)
    raise AssertionError([list(r.tasks.values_list("task_id", "state", "reason")) for r in runs])


def read_as_portal(task: Task, stream: str = "output") -> str:
    """What the log page shows: read through the backend's adapter, whoever asks."""
    return registry.get_adapter(task.run.backend).read_log(task_log(task, stream))


def test_each_users_jobs_run_as_their_own_account(alice: User, bob: User, staff: User, hpc: Backend) -> None:
    alices = create_run(owner=alice, backend=hpc, payload=[t("who", 'echo "I am $(id -un)"')], workflow_name="a")
    bobs = create_run(owner=bob, backend=hpc, payload=[t("who", 'echo "I am $(id -un)"')], workflow_name="b")
    finish(alices, bobs)
    alice_task, bob_task = alices.tasks.get(), bobs.tasks.get()
    assert (alice_task.state, bob_task.state) == ("completed", "completed")
    assert read_as_portal(alice_task) == "I am hut\n" and read_as_portal(bob_task) == "I am hut2\n"

    # A staff member reads Alice's log on the page: read as Alice's account.
    client = Client()
    client.force_login(staff)
    page = client.get(f"/runs/{alices.pk}/tasks/who/logs/output").content.decode()
    assert "I am hut\n" in page


def test_one_users_task_cannot_read_the_others_output(alice: User, bob: User, hpc: Backend, cluster: Cluster) -> None:
    alices = create_run(owner=alice, backend=hpc, payload=[t("secret", "echo alice-only")], workflow_name="a")
    finish(alices)
    written = alices.tasks.get()
    adapter = registry.get_adapter(hpc, identity_of(hpc, alice.pk))
    assert isinstance(adapter, SlurmAdapter)
    path = adapter.absolute(written.output_file, written.working_dir)
    assert path.startswith(adapter.home + "/")
    assert cluster.run_as_user(f"cat {path}") == "alice-only\n"  # there, readable by its owner

    bobs = create_run(owner=bob, backend=hpc, payload=[t("peek", f"cat {path}")], workflow_name="b")
    finish(bobs)
    peek = bobs.tasks.get()
    assert (peek.state, peek.exit_code) == ("failed", 1)
    assert "Permission denied" in read_as_portal(peek, "error")
    assert "alice-only" not in read_as_portal(peek, "output")


def wait_running(*runs: Run, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(run.tasks.exclude(state="running").exists() for run in runs):
        assert time.monotonic() < deadline, [list(r.tasks.values_list("state", "reason")) for r in runs]
        tick_due_backends(force=True)
        time.sleep(0.5)


def test_squeue_and_sacct_show_each_owner(alice: User, bob: User, hpc: Backend, cluster: Cluster) -> None:
    alices = create_run(owner=alice, backend=hpc, payload=[t("long", "sleep 60")], workflow_name="a")
    bobs = create_run(owner=bob, backend=hpc, payload=[t("long", "sleep 60")], workflow_name="b")
    wait_running(alices, bobs)
    alice_job, bob_job = alices.tasks.get().job_id, bobs.tasks.get().job_id
    queue = dict(line.split("|") for line in cluster.run_as_user("squeue --all --noheader --format='%i|%u'").split())
    assert (queue[alice_job], queue[bob_job]) == (cluster.user, cluster.user2)
    # The dashboard's jobs: each linked to its own task, whichever owner's poll saw it last.
    observed = {job.job_id: job for job in ObservedJob.objects.filter(job_id__in=[alice_job, bob_job])}
    assert (observed[alice_job].user, observed[alice_job].our_task_id) == (cluster.user, alices.tasks.get().pk)
    assert (observed[bob_job].user, observed[bob_job].our_task_id) == (cluster.user2, bobs.tasks.get().pk)

    # Each run is cancelled as its owner (scancel of another user's job would be refused).
    cancel_run(alices)
    cancel_run(bobs)
    finish(alices, bobs, timeout=30)
    assert {alices.tasks.get().state, bobs.tasks.get().state} == {"cancelled"}
    deadline = time.monotonic() + 30
    while True:
        accounted = cluster.run_as_user(
            f"sacct --allusers --noheader --parsable2 -X --jobs={alice_job},{bob_job} --format=JobID,User,State"
        )
        rows = {row.split("|")[0]: row.split("|")[1:] for row in accounted.split()}
        if all(rows.get(job, ["", ""])[1].startswith("CANCELLED") for job in (alice_job, bob_job)):
            break
        assert time.monotonic() < deadline, accounted
        time.sleep(1)
    assert (rows[alice_job][0], rows[bob_job][0]) == (cluster.user, cluster.user2)
    assert not {alice_job, bob_job} & set(cluster.run_as_user("squeue --all --noheader --format=%i").split())


def test_without_an_identity_runs_are_refused_and_old_ones_wait(staff: User, hpc: Backend, cluster: Cluster) -> None:
    with pytest.raises(WorkflowError, match="/settings/identities"):
        create_run(owner=staff, backend=hpc, payload=[t("x", "true")], workflow_name="refused")
    client = register(staff, cluster.user, cluster.key_path)
    run = create_run(owner=staff, backend=hpc, payload=[t("x", "true")], workflow_name="waits")
    ClusterIdentity.objects.filter(user=staff).delete()  # removed before the run was ticked
    tick_due_backends(force=True)
    task = Run.objects.get(pk=run.pk).tasks.get()  # the reason is the run's, read again
    assert (task.state, task.job_id) == ("pending", "")
    assert shown_reason(task) == "no cluster identity for hpc: add one at /settings/identities"

    key = Path(cluster.key_path).read_text()
    assert client.post("/settings/identities/hpc", {"username": cluster.user, "private_key": key}).status_code == 302
    finish(run)
    assert run.status == Run.Status.COMPLETED
