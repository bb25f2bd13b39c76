"""Smoke test of the PBS adapter's command path over real SSH, against Slurm's PBS wrappers.

The test cluster (tests/cluster.py) is Slurm with Debian's ``slurm-wlm-torque``: ``qsub``,
``qstat``, ``qdel`` and ``pbsnodes`` are perl scripts over Slurm. They are not PBS: how real
PBS output is read is decided by the recorded OpenPBS fixtures (tests/test_pbs.py). What
this checks is that the commands the adapter sends work end to end through ``bash -s``
over SSH: qsub takes the batch's scripts (as a file: the wrapper reads no stdin) and
answers with job ids, qstat shows the jobs queued and running, and qdel removes them.

How a run ends here, and why: the wrapper's ``qstat -f`` prints ``job_state = C`` for every
end (completed, failed, cancelled, timeout) and no exit status, so a finished job is
UNKNOWN to the adapter, and the engine ends it as FAILED ("unknown to the scheduler") once
``SCRIPTHUT_UNKNOWN_JOB_GRACE_SECONDS`` have passed since it was submitted. Without end
markers (``end_markers_every: 0``, as most tests here run) a run on these wrappers therefore
ends ``failed`` even when every job succeeded; those tests check that the jobs really ran
(their output files, written where ``-o`` said) instead. With end markers the job scripts
tell their own exit codes (the last test).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User

from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import get_adapter, shell_access
from runs.actions import cancel_run, create_run
from runs.engine.tick import tick_due_backends
from runs.models import Run, Task

if TYPE_CHECKING:
    from tests.cluster import Cluster

pytest_plugins = ["tests.cluster"]  # the session-scoped `cluster` fixture
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.cluster]

GRACE_SECONDS = 15


def t(task_id: str, command: str, deps: tuple[str, ...] = ()) -> dict[str, Any]:
    # Small requests: the cluster is shared (one node, two CPUs).
    return {
        "id": task_id,
        "name": task_id,
        "command": command,
        "deps": list(deps),
        "time_limit": "5:00",
        "memory": "100M",
    }


@pytest.fixture
def pbs(cluster: Cluster, settings: Any) -> Iterator[Backend]:
    settings.SCRIPTHUT_UNKNOWN_JOB_GRACE_SECONDS = GRACE_SECONDS
    values = validate_backend_settings("pbs", {"ssh": cluster.ssh_settings(), "end_markers_every": 0})
    backend = Backend.objects.create(name="pbs-smoke", kind="pbs", settings=values, max_concurrent=10, poll_interval=1)
    yield backend
    # Leave nothing of ours on the shared cluster, whatever the test did.
    ids = " ".join(j for j in Task.objects.filter(run__backend=backend).values_list("job_id", flat=True) if j)
    if ids:
        cluster.run_as_user(f"scancel {ids}", check=False)


Seen = dict[str, set[tuple[str, str, str]]]


def tick_until(run: Run, done: Any, timeout: float, seen: Seen | None = None) -> Run:
    """Tick until ``done(run)``; ``seen`` collects every (state, reason, node) of each task."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick_due_backends(force=True)
        run.refresh_from_db()
        if seen is not None:
            for task_id, state, reason, node in run.tasks.values_list("task_id", "state", "reason", "node"):
                seen.setdefault(task_id, set()).add((state, reason, node))
        if done(run):
            return run
        time.sleep(0.5)
    rows = list(run.tasks.values_list("task_id", "state", "job_id", "reason"))
    backend = Backend.objects.get(pk=run.backend_id)
    raise AssertionError(f"run {run.pk} still {run.status} after {timeout}s: {rows} ({backend.status_message})")


def accounting(cluster: Cluster, job_ids: list[str], fields: str) -> dict[str, list[str]]:
    """sacct's ``fields`` for each job, once every one of them has ended there (it may lag)."""
    deadline = time.monotonic() + 30
    while True:
        out = cluster.run_as_user(f"sacct -n -X -P -j {','.join(job_ids)} -o JobID,State,{fields}")
        rows = {line.split("|")[0]: line.split("|")[1:] for line in out.splitlines() if line}
        ended = all(j in rows and rows[j][0] not in ("PENDING", "RUNNING") for j in job_ids)
        if ended or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def test_two_tasks_submit_run_and_end(user: User, pbs: Backend, cluster: Cluster) -> None:
    payload = [t(name, f"sleep 4; echo {name} ran with tag $SCRIPTHUT_TAG") for name in ("first", "second")]
    run = create_run(owner=user, backend=pbs, payload=payload, workflow_name="pbs-smoke")
    seen: Seen = {}
    run = tick_until(run, lambda r: r.is_finished, timeout=240, seen=seen)
    backend = Backend.objects.get(pk=pbs.pk)
    assert backend.status == Backend.Status.OK, backend.status_message

    tasks = {task.task_id: task for task in run.tasks.all()}
    adapter = shell_access(get_adapter(pbs))
    for name, task in tasks.items():
        # qsub answered with a Slurm job id (a plain number) that Slurm knows as ours.
        assert task.job_id.isdigit(), task.job_id
        assert cluster.run_as_user(f"squeue -h -t all -j {task.job_id} -o %j").split() == [name]
        # qstat showed it: queued (its reason came from qstat) or running on the node.
        states = {(state, reason) for state, reason, _ in seen[name]}
        assert ("submitted", "queued") in states or any(s == "running" and node for s, _, node in seen[name])
        # The job ran the script qsub got from the temp file, with the tag from -v, and
        # wrote its output where -o said.
        assert adapter.read_file(task.output_file) == f"{name} ran with tag {task.submit_tag}\n"
        assert "#PBS -l select=1:ncpus=1:mem=100mb" in task.script
        # The wrapper's C carries no exit status: UNKNOWN, then failed after the grace period.
        assert task.state == "failed", (task.state, task.reason)
        assert task.reason == f"job {task.job_id} is unknown to the scheduler (no record for {GRACE_SECONDS}s)"
        assert task.exit_code is None
    assert run.status == Run.Status.FAILED
    # Slurm itself knows they succeeded; the PBS wrapper just cannot say so.
    rows = accounting(cluster, [task.job_id for task in tasks.values()], "ExitCode")
    assert sorted(rows.values()) == [["COMPLETED", "0:0"], ["COMPLETED", "0:0"]], rows


def test_native_dependency_reaches_slurm(user: User, pbs: Backend, cluster: Cluster) -> None:
    payload = [t("parent", "sleep 10"), t("child", "echo child ran", deps=("parent",))]
    run = create_run(owner=user, backend=pbs, payload=payload, workflow_name="pbs-smoke-chain")
    run = tick_until(run, lambda r: r.tasks.exclude(job_id="").count() == 2, timeout=60)
    parent, child = run.tasks.get(task_id="parent"), run.tasks.get(task_id="child")
    # Both went in one batch, the child with -W depend=afterok:<the parent's id from the
    # same batch>, which the wrapper turns into Slurm's --dependency.
    assert child.native_deps and not parent.native_deps
    assert child.submitted_at == parent.submitted_at
    show = cluster.run_as_user(f"scontrol show job {child.job_id}")
    assert f"Dependency=afterok:{parent.job_id}" in show, show  # the parent sleeps: still unfulfilled
    run = tick_until(run, lambda r: r.is_finished, timeout=240)
    # Slurm ran the child after the parent. In the portal the parent ends failed (unknown
    # outcome, see the module doc) and the child failed too, or dep_failed if its job had not
    # been seen running by then: only the order in Slurm is certain.
    rows = accounting(cluster, [parent.job_id, child.job_id], "Start,End")
    assert rows[parent.job_id][0] == rows[child.job_id][0] == "COMPLETED", rows
    assert rows[child.job_id][1] >= rows[parent.job_id][2], rows
    assert run.status == Run.Status.FAILED
    assert run.tasks.get(task_id="child").state in ("failed", "dep_failed")


def test_cancel_reaches_qdel(user: User, pbs: Backend, cluster: Cluster) -> None:
    payload = [t(f"long{i}", "sleep 120") for i in range(2)]
    run = create_run(owner=user, backend=pbs, payload=payload, workflow_name="pbs-smoke-cancel")
    seen: Seen = {}

    def on_the_cluster(r: Run) -> bool:
        # Both submitted and each shown by qstat (queued with its reason, or running).
        return all(
            any(s == "running" or (s == "submitted" and reason == "queued") for s, reason, _ in seen.get(n, ()))
            for n in ("long0", "long1")
        )

    run = tick_until(run, on_the_cluster, timeout=120, seen=seen)
    job_ids = list(run.tasks.values_list("job_id", flat=True))
    assert all(job_id.isdigit() for job_id in job_ids)
    assert set(job_ids) <= set(cluster.run_as_user("squeue -h -o %i").split())

    cancel_run(run)
    tick_due_backends(force=True)
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    assert set(run.tasks.values_list("state", "reason")) == {("cancelled", "cancelled by user")}
    assert Backend.objects.get(pk=pbs.pk).status == Backend.Status.OK
    deadline = time.monotonic() + 30
    while set(job_ids) & set(cluster.run_as_user("squeue -h -o %i").split()) and time.monotonic() < deadline:
        time.sleep(1)  # a killed job shows as CG (completing) for a moment
    assert not set(job_ids) & set(cluster.run_as_user("squeue -h -o %i").split())
    rows = accounting(cluster, job_ids, "ExitCode")
    assert set(rows) == set(job_ids) and all(row[0].startswith("CANCELLED") for row in rows.values()), rows


def test_wrapper_refuses_what_its_shell_would_change(user: User, pbs: Backend, cluster: Cluster) -> None:
    # The wrapper pastes qsub's arguments unquoted into `sh -c "sbatch ..."`: an -o path
    # with shell syntax is refused in the batch, and the rest of the batch goes on.
    marker = "scripthut-smoke-pwned"
    cluster.run_as_user(f"rm -f ~/{marker}")
    hostile = dict(t("hostile", "echo hostile ran"), output_file=f"~/smoke logs/$(touch ~/{marker}).out")
    run = create_run(owner=user, backend=pbs, payload=[hostile, t("plain", "echo plain ran")], workflow_name="pbs-q")
    try:
        run = tick_until(run, lambda r: r.tasks.filter(state="submitting").count() == 0, timeout=60)
    finally:
        # The batch made the log dir, named as written (quoted: `$(touch ~` is a dir name).
        cluster.run_as_user("rm -rf ~/'smoke logs'")
    rejected, plain = run.tasks.get(task_id="hostile"), run.tasks.get(task_id="plain")
    assert rejected.state == "failed" and not rejected.job_id
    assert rejected.reason.startswith("rejected by the scheduler: qsub: Slurm's qsub wrapper passes its arguments")
    assert plain.job_id.isdigit()
    accounting(cluster, [plain.job_id], "ExitCode")  # the batch's other job has ended: all it started has run
    assert cluster.run_as_user(f"ls ~/{marker} 2>/dev/null || echo absent").strip() == "absent"


def test_end_markers_give_the_exit_codes_the_wrapper_cannot(user: User, pbs: Backend, cluster: Cluster) -> None:
    """With end markers on, the jobs' own markers settle them (no qstat exit status needed),
    long before the poll interval: one completed with 0, one failed with 3."""
    pbs.settings = pbs.settings | {"end_markers_every": 1}
    pbs.poll_interval = 600
    pbs.save()
    payload = [t("ok", "sleep 1"), t("bad", "exit 3")]
    run = create_run(owner=user, backend=pbs, payload=payload, workflow_name="pbs-markers")
    run = tick_until(run, lambda r: r.is_finished, timeout=120)
    ok, bad = run.tasks.get(task_id="ok"), run.tasks.get(task_id="bad")
    assert (ok.state, ok.exit_code) == ("completed", 0), ok.reason
    assert (bad.state, bad.exit_code, bad.reason) == ("failed", 3, "exit code 3")
