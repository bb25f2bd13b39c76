"""Job arrays on the real one-node Slurm cluster (tests/setup/cluster.sh), through the engine.

A run's ready tasks of one shape go as one ``sbatch --array``; each task keeps its own job
id (``<array>_<index>``), state, exit code, log, efficiency and dependents. Site limits
(MaxSubmitJobs, enforced) are read and obeyed; what does not fit waits with a reason.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import get_adapter
from backends.slurm.adapter import SlurmAdapter
from runs.actions import cancel_run, create_run
from runs.engine.jobspec import task_log
from runs.engine.tick import tick_due_backends
from runs.engine.waiting import shown_reason
from runs.models import Run, Task
from tests.cluster import Cluster, cluster  # noqa: F401  (fixture)
from tests.test_slurm import states, t, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.cluster]


def slurm_backend(cluster: Cluster, *, second_user: bool = False, **settings: object) -> Backend:  # noqa: F811
    config = {"ssh": cluster.ssh_settings(second_user), "account": cluster.account, **settings}
    return Backend.objects.create(
        name="slurm",
        kind="slurm",
        settings=validate_backend_settings("slurm", config),
        max_concurrent=100,
        poll_interval=1,
    )


def array_of(task: Task) -> tuple[str, int]:
    array_id, _, index = task.job_id.partition("_")
    assert array_id.isdigit() and index.isdigit(), task.job_id
    return array_id, int(index)


def jobs_of_run(cluster: Cluster, run: Run, user: str | None = None, expect: int = 0) -> Counter[str]:  # noqa: F811
    """Slurm's own account of the run's jobs: job id -> how many accounting rows, every job
    whose name carries one of the run's tags (arrays: one row per element)."""
    prefix = f"@sh-{run.pk}-"
    deadline = time.monotonic() + 30
    while True:
        out = cluster.run_as_user(
            "sacct --noheader --parsable2 --allocations --starttime=now-1hour --format=JobID,JobName", user=user
        )
        jobs = Counter(line.split("|")[0] for line in out.splitlines() if prefix in line)
        if len(jobs) >= (expect or run.tasks.count()) or time.monotonic() > deadline:
            return jobs
        time.sleep(1)


def test_an_array_run_end_to_end(user, cluster):  # noqa: F811
    slurm = slurm_backend(cluster)
    marker = "/tmp/scripthut-array-pwned"
    cluster.run_as_user(f"rm -f {marker}")
    nasty = f'it\'s "$(touch {marker})" `touch {marker}`'
    tasks = [
        *(t(f"sim.{i}", 'echo "out $N"; sleep 1', env_vars={"N": str(i)}) for i in range(3)),
        t("nasty", 'printf "%s" "$NASTY"', env_vars={"NASTY": nasty}),
        t("bad", "echo before; sleep 1; exit 3"),
        t("child", deps=("bad",)),
        t("after", "true", deps=("sim.0",)),
    ]
    run = wait_for(create_run(owner=user, backend=slurm, payload=tasks, workflow_name="arrays"))
    assert states(run) == {
        **{f"sim.{i}": "completed" for i in range(3)},
        "nasty": "completed",
        "bad": "failed",
        "child": "dep_failed",
        "after": "completed",
    }
    by_id = {task.task_id: task for task in run.tasks.all()}
    elements = [by_id[x] for x in ("sim.0", "sim.1", "sim.2", "nasty", "bad")]
    # One array for the five independent tasks, an element each.
    assert {array_of(task)[0] for task in elements} == {array_of(elements[0])[0]}
    assert sorted(array_of(task)[1] for task in elements) == [0, 1, 2, 3, 4]
    assert all(task.submit_tag == f"{task.submit_tag.rpartition('_')[0]}_{array_of(task)[1]}" for task in elements)
    # The dependents went plain, held on their parent's element (native afterok on <array>_<index>).
    assert "_" not in by_id["after"].job_id and by_id["after"].native_deps
    bad = by_id["bad"]
    assert bad.exit_code == 3 and bad.reason == "exit code 3"
    # Each one-second task's own times; sacct's per element, with its CPU efficiency (once
    # slurmdbd has them: until then a poll reads slurmctld's memory, which has no CPU time).
    timed = [by_id[x] for x in ("sim.0", "sim.1", "sim.2", "bad")]
    assert all(task.elapsed_seconds is not None for task in timed)
    ran = {task.job_id for task in by_id.values() if task.state != "dep_failed"}
    accounted_jobs = jobs_of_run(cluster, run, expect=len(ran))  # waits for accounting
    adapter = get_adapter(slurm)
    assert isinstance(adapter, SlurmAdapter)
    accounted = adapter.finished_jobs([task.job_id for task in timed])
    assert all(accounted[t.job_id].cpu_efficiency is not None and accounted[t.job_id].elapsed_seconds for t in timed)
    for i in range(3):
        log = task_log(by_id[f"sim.{i}"], "output")
        assert "%A_%a" in log.path and adapter.log_location(log).endswith(f"/{by_id[f'sim.{i}'].job_id}.out")
        assert adapter.read_log(log) == f"out {i}\n"
    assert adapter.read_log(task_log(bad, "output")) == "before\n"
    assert adapter.read_log(task_log(by_id["nasty"], "output")) == nasty
    assert cluster.run_as_user(f"test -e {marker} && echo yes || echo no").strip() == "no"
    assert "#SBATCH --output=" in bad.script and "%A_%a.out" in bad.script
    # Slurm ran exactly one job element per task (a job dropped on its dependency is not accounted).
    assert set(accounted_jobs.values()) == {1} and set(accounted_jobs) == ran


def test_arrays_off_submits_plain_jobs(user, cluster):  # noqa: F811
    slurm = slurm_backend(cluster, arrays=False)
    run = wait_for(create_run(owner=user, backend=slurm, payload=[t("a", "true"), t("b", "true")], workflow_name="p"))
    assert run.status == Run.Status.COMPLETED
    assert all(job_id.isdigit() for job_id in run.tasks.values_list("job_id", flat=True))


def test_cancel_one_element_then_the_run(user, cluster):  # noqa: F811
    slurm = slurm_backend(cluster)
    run = create_run(
        owner=user, backend=slurm, payload=[t(f"long{i}", "sleep 60") for i in range(3)], workflow_name="c"
    )
    deadline = time.monotonic() + 60
    while run.tasks.filter(state="running").count() < 3:
        assert time.monotonic() < deadline, states(run)
        tick_due_backends(force=True)
        time.sleep(0.5)
    one = run.tasks.get(task_id="long1")
    array_id, _ = array_of(one)
    cluster.run_as_user(f"scancel {one.job_id}")  # one task of the array, by its own id
    while run.tasks.get(task_id="long1").state != "cancelled":
        assert time.monotonic() < deadline + 60, states(run)
        tick_due_backends(force=True)
        time.sleep(0.5)
    assert states(run) == {"long0": "running", "long1": "cancelled", "long2": "running"}
    assert "CANCELLED" in run.tasks.get(task_id="long1").reason
    cancel_run(run)
    tick_due_backends(force=True)
    assert set(states(run).values()) == {"cancelled"}
    deadline = time.monotonic() + 60
    while cluster.run_as_user(f"squeue --noheader --array --jobs={array_id} --format=%i", check=False).strip():
        assert time.monotonic() < deadline, "the array's elements are still queued 60 s after the cancel"
        time.sleep(0.5)


def test_site_limit_waits_with_a_reason_and_a_refusal_is_no_failure(user, cluster):  # noqa: F811
    """MaxSubmitJobs=3 (enforced) for the second test user: a refused array is a pause, then
    the portal reads the limit, submits what fits and says why the rest waits."""
    slurm = slurm_backend(cluster, second_user=True)
    adapter = get_adapter(slurm)
    assert isinstance(adapter, SlurmAdapter)
    assert adapter.site_limits().max_submit_jobs is None  # read (and kept) before the limit exists
    run = create_run(owner=user, backend=slurm, payload=[t(f"s.{i}", "sleep 2") for i in range(7)], workflow_name="s")
    with cluster.max_submit_jobs(cluster.user2, 3):
        tick_due_backends(force=True)
        rows = list(run.tasks.values_list("state", "reason"))
        # The array of 7 was refused whole (AssocMaxSubmitJobLimit): all wait, none failed.
        assert all(state == "pending" and "MaxSubmitJob" in reason for state, reason in rows), rows
        tick_due_backends(force=True)  # reads the limit again: 3 go, 4 wait and say why
        assert run.tasks.exclude(state="pending").count() == 3
        fresh = Run.objects.get(pk=run.pk).tasks.filter(state="pending")  # the run's reason read again
        assert {shown_reason(task) for task in fresh} == {"waiting: site limit, 3 jobs queued of MaxSubmitJobs 3"}
        most = 0
        deadline = time.monotonic() + 180
        while not Run.objects.get(pk=run.pk).is_finished:
            assert time.monotonic() < deadline, states(run)
            tick_due_backends(force=True)
            queued = cluster.run_as_user("squeue --noheader --array --me --format=%i", user=cluster.user2)
            most = max(most, len(queued.split()))
            time.sleep(0.5)
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, states(run)
    assert most <= 3
    assert set(jobs_of_run(cluster, run, user=cluster.user2).values()) == {1}
    assert len(jobs_of_run(cluster, run, user=cluster.user2)) == 7


def test_a_first_tick_reads_the_site_limits_once(user, cluster):  # noqa: F811
    """The submit step and the cluster info both want the site's limits; sacctmgr asks
    slurmdbd (half a second): a fresh adapter's first tick read them twice."""
    from backends.slurm.adapter import SITE_LIMITS

    adapter = get_adapter(slurm_backend(cluster))
    assert isinstance(adapter, SlurmAdapter)
    commands: list[str] = []
    run = adapter.transport.run

    def counted(command: str, **options: Any) -> Any:  # the real transport, its commands noted
        commands.append(command)
        return run(command, **options)

    adapter.transport.run = counted  # type: ignore[method-assign]
    adapter.submit_limits()
    info = adapter.cluster_info()
    assert commands.count(SITE_LIMITS) == 1
    assert info.max_array_size == adapter.site_limits().max_array_size == 1001  # the test cluster's
