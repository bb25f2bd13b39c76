"""ScriptHut on a real one-node Slurm cluster, reached through a real sshd on loopback.

The cluster (munge, slurmdbd on MariaDB, slurmctld, slurmd, sshd) is started by
tests/setup/cluster.sh through the ``cluster`` fixture. Tasks are one-second jobs.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import get_adapter, shell_access
from backends.slurm.adapter import SlurmAdapter
from runs.actions import cancel_run, create_run
from runs.engine.tick import tick_due_backends
from runs.models import ObservedJob, Run, Task
from tests.cluster import Cluster, cluster  # noqa: F401  (fixture)
from tests.threads import db_thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.cluster]


def t(task_id: str, command: str = "sleep 1", deps: tuple[str, ...] = (), **extra: object) -> dict:
    return {"id": task_id, "name": task_id, "command": command, "deps": list(deps), "time_limit": "5:00", **extra}


@pytest.fixture
def slurm(cluster: Cluster) -> Backend:  # noqa: F811
    settings = validate_backend_settings("slurm", {"ssh": cluster.ssh_settings(), "account": cluster.account})
    return Backend.objects.create(name="slurm", kind="slurm", settings=settings, max_concurrent=100, poll_interval=1)


def states(run: Run) -> dict[str, str]:
    return dict(run.tasks.values_list("task_id", "state"))


def wait_for(run: Run, timeout: float = 120, every: float = 0.5, watch: Counter | None = None) -> Run:
    """Tick until the run finishes; ``watch`` counts every state each task shows on the way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick_due_backends(force=True)
        if watch is not None:
            watch.update(run.tasks.values_list("state", flat=True))
        run.refresh_from_db()
        if run.is_finished:
            return run
        time.sleep(every)
    raise AssertionError(
        f"run still {run.status} after {timeout}s: {list(run.tasks.values_list('task_id', 'state', 'reason'))}"
    )


def job_ids_by_tag_prefix(cluster: Cluster, run: Run) -> Counter:  # noqa: F811
    """How many Slurm jobs each task got: a plain job's name ends in @sh-<run>-<task pk>-<random>;
    an array's in @<array tag>, and its element <array>_<index> is the task tagged
    <array tag>_<index> (an element no task is tagged with counts under its own job id).

    Waits (up to 30 s) until accounting has every task of the run: slurmdbd lags behind
    slurmctld, more so just after slurmctld restarted.
    """
    prefix = f"@sh-{run.pk}-"
    elements = {tag: str(pk) for tag, pk in run.tasks.values_list("submit_tag", "pk")}
    deadline = time.monotonic() + 30
    while True:
        out = cluster.run_as_user(
            "sacct --noheader --parsable2 --allocations --starttime=now-1hour --format=JobID,JobName"
        )
        jobs: Counter = Counter()
        for line in out.splitlines():
            if prefix not in line:
                continue
            job_id, tag = line.split("|")[0], line.rpartition("@")[2]
            array_id, _, index = job_id.partition("_")
            if index:
                jobs[elements.get(f"{tag}_{index}", job_id)] += 1
            else:
                jobs[tag.removeprefix(prefix[1:]).rsplit("-", 1)[0]] += 1
        if len(jobs) >= run.tasks.count() or time.monotonic() > deadline:
            return jobs


def test_wildcard_workflow_completes(user, slurm):
    tasks = [t("setup.init"), *(t(f"sim.{i}", deps=("setup.*",)) for i in range(4)), t("final", deps=("sim.*",))]
    run = wait_for(create_run(owner=user, backend=slurm, payload=tasks, workflow_name="wild"))
    assert run.status == Run.Status.COMPLETED, states(run)
    final = run.tasks.get(task_id="final")
    assert final.exit_code == 0 and final.elapsed_seconds is not None and final.queue_wait_seconds is not None
    assert "#SBATCH --job-name=final@" in final.script
    adapter = shell_access(get_adapter(slurm))
    assert adapter.read_file(final.output_file) == ""


def test_failure_exit_code_and_dep_failed(user, slurm):
    tasks = [t("bad", "sleep 1; exit 3"), t("child", deps=("bad",)), t("grandchild", deps=("child",)), t("ok")]
    run = wait_for(create_run(owner=user, backend=slurm, payload=tasks, workflow_name="fail"))
    assert states(run) == {"bad": "failed", "child": "dep_failed", "grandchild": "dep_failed", "ok": "completed"}
    bad = run.tasks.get(task_id="bad")
    assert bad.exit_code == 3 and bad.reason == "exit code 3"


def test_time_limit_ends_failed_with_timeout(user, slurm):
    run = wait_for(
        create_run(owner=user, backend=slurm, payload=[t("slow", "sleep 300", time_limit="1:00")], workflow_name="tl"),
        timeout=240,
        every=2,
    )
    task = run.tasks.get()
    assert task.state == "failed" and "TIMEOUT" in task.reason


def test_cancel_reaches_scancel(user, slurm, cluster):  # noqa: F811
    run = create_run(
        owner=user, backend=slurm, payload=[t(f"long{i}", "sleep 120") for i in range(3)], workflow_name="cancel"
    )
    deadline = time.monotonic() + 60
    while run.tasks.filter(state="running").count() < 3 and time.monotonic() < deadline:
        tick_due_backends(force=True)
        time.sleep(0.5)
    job_ids = list(run.tasks.values_list("job_id", flat=True))
    cancel_run(run)
    tick_due_backends(force=True)
    assert set(states(run).values()) == {"cancelled"}
    # scancel is asynchronous: the jobs leave the queue (after CG, completing) within seconds.
    deadline = time.monotonic() + 60
    while set(job_ids) & set(cluster.run_as_user("squeue --noheader --format=%i").split()):
        assert time.monotonic() < deadline, f"jobs {job_ids} still queued 60 s after the cancel"
        time.sleep(0.5)


def test_external_job_is_shown(user, slurm, cluster):  # noqa: F811
    external = cluster.run_as_user("sbatch --parsable --job-name=not-ours --wrap='sleep 20'").strip().split(";")[0]
    tick_due_backends(force=True)
    job = ObservedJob.objects.get(job_id=external)
    assert job.our_task is None and job.user == cluster.user and job.name == "not-ours"
    cluster.run_as_user(f"scancel {external}")


def test_hostile_names_and_values_stay_inert(user, slurm, cluster):  # noqa: F811
    marker = "/tmp/scripthut-slurm-pwned"
    cluster.run_as_user(f"rm -f {marker}")
    nasty = f'it\'s "$(touch {marker})" `touch {marker}`'
    tasks = [t("q", 'printf "%s" "$NASTY"', env_vars={"NASTY": nasty}) | {"name": nasty}]
    run = wait_for(create_run(owner=user, backend=slurm, payload=tasks, workflow_name=nasty))
    assert run.status == Run.Status.COMPLETED, states(run)
    assert shell_access(get_adapter(slurm)).read_file(run.tasks.get().output_file) == nasty
    assert cluster.run_as_user(f"test -e {marker} && echo yes || echo no").strip() == "no"


def test_instant_tasks_never_show_failed_nor_run_twice(user, slurm, cluster):  # noqa: F811
    """The original showed most of 200 `true` tasks FAILED for seconds and submitted many twice."""
    tasks = [t(f"i.{n:03d}", "true") for n in range(200)]
    seen: Counter = Counter()
    run = wait_for(
        create_run(owner=user, backend=slurm, payload=tasks, workflow_name="instant", max_concurrent=100),
        timeout=300,
        every=0.2,
        watch=seen,
    )
    assert run.status == Run.Status.COMPLETED
    assert seen["failed"] == 0 and seen["dep_failed"] == 0
    per_task = job_ids_by_tag_prefix(cluster, run)
    assert len(per_task) == 200 and set(per_task.values()) == {1}
    # Slurm's times are whole seconds: a job started in the second it was sent still reads
    # as started after its submission, with a queue wait (issue 21 #9).
    for task in Task.objects.filter(run=run):
        assert task.submitted_at and task.started_at and task.finished_at
        assert task.submitted_at <= task.started_at <= task.finished_at, task.task_id
        assert task.queue_wait_seconds is not None and task.queue_wait_seconds >= 0


@pytest.mark.parametrize("native", [True, False])
def test_chain_of_one_second_tasks_completes(user, slurm, native):
    slurm.settings = slurm.settings | {"native_dependencies": native}
    slurm.save()
    chain = [t("link.00", "sleep 1")] + [
        t(f"link.{n:02d}", "sleep 1", deps=(f"link.{n - 1:02d}",)) for n in range(1, 20)
    ]
    seen: Counter = Counter()
    run = wait_for(
        create_run(owner=user, backend=slurm, payload=chain, workflow_name="chain"), timeout=240, every=0.2, watch=seen
    )
    assert run.status == Run.Status.COMPLETED, states(run)
    assert seen["failed"] == 0 and seen["dep_failed"] == 0
    assert run.tasks.filter(native_deps=True).exists() == native


def test_native_dependents_of_a_failure_are_dep_failed(user, slurm):
    tasks = [t("bad", "sleep 2; exit 1"), t("held", deps=("bad",)), t("held2", deps=("held",))]
    run = create_run(owner=user, backend=slurm, payload=tasks, workflow_name="native-fail")
    tick_due_backends(force=True)
    assert set(states(run).values()) == {"submitted"}  # all three on Slurm at once
    assert run.tasks.get(task_id="held2").native_deps
    run = wait_for(run)
    assert states(run) == {"bad": "failed", "held": "dep_failed", "held2": "dep_failed"}


def test_sshd_and_slurmctld_restarts_lose_nothing(user, slurm, cluster):  # noqa: F811
    # r.live runs through both outages, so the ticks have a job to ask the stopped controller about.
    tasks = [t("r.live", "sleep 30")] + [t(f"r.{n:02d}", "sleep 2") for n in range(12)]
    run = create_run(owner=user, backend=slurm, payload=tasks, workflow_name="restarts", max_concurrent=4)
    tick_due_backends(force=True)
    cluster.stop_sshd()
    try:
        for _ in range(3):
            tick_due_backends(force=True)
        slurm.refresh_from_db()  # the ticks met the closed port (the signal that they ran)
        assert slurm.status == Backend.Status.UNREACHABLE and "refused" in slurm.status_message
        assert not run.tasks.filter(state__in=("failed", "dep_failed")).exists()
    finally:
        cluster.start_sshd()
    # Once past the reconnect backoff, a tick reaches the cluster again.
    deadline = time.monotonic() + 60
    while slurm.status != Backend.Status.OK:
        assert time.monotonic() < deadline, f"not reconnected 60 s after sshd came back: {slurm.status_message}"
        time.sleep(0.5)
        tick_due_backends(force=True)
        slurm.refresh_from_db()
    cluster.stop_slurmctld()
    try:
        # A tick between two scheduler polls (poll_interval 1 s) reads only the end markers:
        # tick until one has asked the stopped controller (the signal), then once more.
        deadline = time.monotonic() + 60
        while "Unable to contact slurm controller" not in slurm.status_message:
            assert time.monotonic() < deadline, f"no tick asked the stopped controller: {slurm.status_message!r}"
            tick_due_backends(force=True)
            slurm.refresh_from_db()
        tick_due_backends(force=True)
        assert run.tasks.get(task_id="r.live").state in ("submitted", "running")  # alive through it
        assert not run.tasks.filter(state__in=("failed", "dep_failed")).exists()
    finally:
        cluster.start_slurmctld()
    run = wait_for(run, timeout=180)
    assert run.status == Run.Status.COMPLETED, states(run)
    slurm.refresh_from_db()
    assert slurm.status == Backend.Status.OK
    per_task = job_ids_by_tag_prefix(cluster, run)
    assert len(per_task) == 13 and set(per_task.values()) == {1}


def test_cluster_without_accounting_completes_a_run(user, slurm, cluster):  # noqa: F811
    cluster.accounting(False)
    try:
        tasks = [t("a", "true"), t("b", "exit 4", deps=("a",)), t("c", "true")]
        run = wait_for(create_run(owner=user, backend=slurm, payload=tasks, workflow_name="no-acct"), every=2)
        assert states(run) == {"a": "completed", "b": "failed", "c": "completed"}
        assert run.tasks.get(task_id="b").exit_code == 4
    finally:
        cluster.accounting(True)


def test_dashboard_cluster_info(user, slurm):
    tick_due_backends(force=True)
    slurm.refresh_from_db()
    (partition,) = slurm.cluster_info["partitions"]
    assert partition["partition"] == "normal" and partition["cpus_total"] >= 1


def test_workflow_json_over_ssh(user, slurm):
    """run_command and read_file go through the same transport: a workflow from a command."""
    from runs.models import Workflow
    from runs.workflows.command import start_run

    payload = json.dumps([t("from-cmd", "true")])
    workflow = Workflow.objects.create(name="remote", backend=slurm, command=f"printf '%s' '{payload}'")
    run = wait_for(start_run(workflow, user))
    assert run.status == Run.Status.COMPLETED
    assert Task.objects.get(run=run).task_id == "from-cmd"


def test_concurrent_ticks_submit_each_task_once(user, slurm, cluster):  # noqa: F811
    """Two workers ticking the same backend at once: the lease and the conditional
    state changes let only one of them submit a task."""

    run = create_run(
        owner=user,
        backend=slurm,
        payload=[t(f"c.{n:02d}", "true") for n in range(40)],
        workflow_name="concurrent",
        max_concurrent=40,
    )

    def worker() -> None:
        for _ in range(10):
            tick_due_backends(force=True)

    threads = [db_thread(worker) for _ in range(3)]
    for thread in threads:
        thread.join()
    run = wait_for(run)
    assert run.status == Run.Status.COMPLETED
    per_task = job_ids_by_tag_prefix(cluster, run)
    assert len(per_task) == 40 and set(per_task.values()) == {1}


def test_reconcile_waits_for_a_submit_batch_that_outlived_its_session(user, slurm, cluster):  # noqa: F811
    """A tick died (or its SSH session timed out) while its submit batch still ran on the
    login node. The next tick must find the job that batch submits, not queue the task again."""
    from backends.ssh.scheduler import HOLD_SUBMIT_LOCK, SUBMIT_LOCK_FILE
    from runs.engine import claim

    run = create_run(owner=user, backend=slurm, payload=[t("late", "true")], workflow_name="late")
    adapter = get_adapter(slurm)
    assert isinstance(adapter, SlurmAdapter)
    ((task, spec, script),) = claim.claim_ready(run, 1, adapter, {})
    # The batch as the dead tick sent it, but slow: it calls sbatch 3 s after taking the lock.
    batch = adapter.submit_script([(spec, script)]).replace(HOLD_SUBMIT_LOCK, HOLD_SUBMIT_LOCK + "sleep 3\n", 1)
    adapter.transport.run("cat > late-batch.sh", stdin=batch.encode())
    adapter.transport.run("setsid nohup bash late-batch.sh >late-batch.out 2>&1 </dev/null &")
    lock = f"~/{SUBMIT_LOCK_FILE}"
    deadline = time.monotonic() + 10
    while cluster.run_as_user(f"flock -n {lock} true && echo free", check=False).strip() == "free":
        assert time.monotonic() < deadline, "the detached batch never took the submit lock"
        time.sleep(0.1)

    tick_due_backends(force=True)  # reconciles: waits for the batch, then finds its job by tag
    task.refresh_from_db()
    assert task.state in ("submitted", "running", "completed"), (task.state, task.reason)
    assert task.job_id and task.submit_tag == spec.tag
    run = wait_for(run)
    assert run.status == Run.Status.COMPLETED
    assert job_ids_by_tag_prefix(cluster, run) == Counter({str(task.pk): 1})


def test_unreachable_controller_at_submit_defers_instead_of_failing(user, slurm, cluster):  # noqa: F811
    """sbatch cannot reach slurmctld: the tasks wait for the next cycle, they are not failed."""
    run = create_run(owner=user, backend=slurm, payload=[t("x", "true"), t("y", "true")], workflow_name="ctld")
    adapter = get_adapter(slurm)
    from runs.engine import submit

    with cluster.slurmctld_stopped():
        changed: set[str] = set()
        submit.submit_ready(slurm, adapter, changed)
        rows = list(run.tasks.values_list("state", "reason", "job_id"))
    assert all(state == "pending" and not job_id for state, _, job_id in rows), rows
    assert all("submission deferred" in reason and "slurm controller" in reason.lower() for _, reason, _ in rows)
    run = wait_for(run, timeout=180)
    assert run.status == Run.Status.COMPLETED, states(run)
    assert set(job_ids_by_tag_prefix(cluster, run).values()) == {1}
