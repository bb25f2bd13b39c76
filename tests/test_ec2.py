"""The EC2 backend through the engine, against the AWS emulator over real HTTP.

moto (tests/aws_ec2.py) stands for EC2, SSM and EC2 Instance Connect; each running
instance's real user data runs on this machine with docker stubbed; the finished task's
log is copied over real SSH (an Instance Connect key, pushed to the emulator, signed
for one minute) from the loopback sshd of tests/setup/cluster.sh. What no test here
covers: the SSM tunnel itself (moto has no ``start_session``), real docker, and a real
boot (moto shows an instance running at once; tests move states themselves).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from backends.aws.clients import aws_errors
from backends.base import BackendUnavailable
from backends.config import validate_backend_settings
from backends.ec2 import instances as ec2_instances
from backends.models import Backend
from backends.registry import close_all, get_adapter
from runs.actions import cancel_run, create_run
from runs.engine.tick import tick_due_backends
from runs.engine.waiting import shown_reason
from runs.models import Run
from tests.aws_ec2 import Emulator, LoopbackConnector, LoopbackEnd, moto_ec2  # noqa: F401  (fixture)
from tests.cluster import Cluster, cluster  # noqa: F401  (fixture)
from tests.threads import db_thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.aws, pytest.mark.cluster]


def t(task_id: str, command: str = "echo hello from $SCRIPTHUT_RUN_ID", deps: tuple[str, ...] = (), **extra: Any):
    return {"id": task_id, "name": task_id, "command": command, "deps": list(deps), "time_limit": "5:00", **extra}


@pytest.fixture
def ec2(moto_ec2: Emulator, cluster: Cluster, settings: Any) -> Iterator[Emulator]:  # noqa: F811
    settings.SCRIPTHUT_EC2_CONNECTOR = "tests.aws_ec2.LoopbackConnector"
    LoopbackConnector.end = LoopbackEnd(cluster=cluster, host=moto_ec2.host)
    close_all()
    yield moto_ec2
    close_all()
    LoopbackConnector.end = None


def make_backend(ec2: Emulator, cluster: Cluster, **extra: Any) -> Backend:  # noqa: F811
    config = validate_backend_settings("ec2", ec2.backend_settings(ssh_user=cluster.user, **extra))
    return Backend.objects.create(name="aws-ec2", kind="ec2", settings=config, max_concurrent=50, poll_interval=1)


@pytest.fixture
def backend(ec2: Emulator, cluster: Cluster) -> Backend:  # noqa: F811
    return make_backend(ec2, cluster)


def drive(run: Run, ec2: Emulator, timeout: float = 60) -> Run:
    """Tick, and boot what was launched, until the run ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick_due_backends(force=True)
        ec2.host.boot()
        run.refresh_from_db()
        if run.is_finished:
            return run
        time.sleep(0.3)
    raise AssertionError(f"run still {run.status}: {list(run.tasks.values_list('task_id', 'state', 'reason'))}")


def states(run: Run) -> dict[str, str]:
    return dict(run.tasks.values_list("task_id", "state"))


def test_workflow_with_dependencies_completes(user, backend, ec2):
    tasks = [
        t("setup", 'echo "setup on $(hostname)"; echo to-stderr >&2'),
        t("sim.1", deps=("setup",), partition="big"),
        t("sim.2", deps=("setup",), env_vars={"GREETING": 'it\'s "quoted" $(not run)\nline two'}),
        t("final", 'printf "%s\\n" "$GREETING" "final"', deps=("sim.*",), env_vars={"GREETING": "a;b"}),
    ]
    run = drive(create_run(owner=user, backend=backend, payload=tasks, workflow_name="ec2-chain"), ec2)
    assert run.status == Run.Status.COMPLETED, states(run)
    for task in run.tasks.all():
        assert task.exit_code == 0 and task.started_at and task.finished_at, task.task_id
        log = Path(task.output_file)
        # Copied over SSH to <data_dir>/ec2-logs/<run_id>/<task_id>.log before terminating.
        assert log == Path(django_settings.DATA_DIR) / "ec2-logs" / run.pk / f"{task.task_id}.log"
    logs = {task.task_id: Path(task.output_file).read_text() for task in run.tasks.all()}
    assert "setup on" in logs["setup"] and "to-stderr" in logs["setup"]
    assert f"hello from {run.pk}" in logs["sim.1"]
    assert logs["final"].endswith("a;b\nfinal\n")
    # Every instance is gone, each launched as the spec says.
    instances = ec2.instances()
    assert len(instances) == 4 and {i["State"]["Name"] for i in instances} <= {"shutting-down", "terminated"}
    by_task = {tag_map(i)["scripthut:task"]: i for i in instances}
    assert by_task["sim.1"]["InstanceType"] == "c5.4xlarge" and by_task["setup"]["InstanceType"] == "c5.xlarge"
    # For costs: the instance and its type, launch and terminate times.
    sim = run.tasks.get(task_id="sim.1")
    assert sim.node == f"{sim.job_id} (c5.4xlarge)" and sim.elapsed_seconds and sim.elapsed_seconds > 0
    # The launch time has whole seconds: one in the second of the submission reads as the stamp.
    assert sim.started_at == max(by_task["sim.1"]["LaunchTime"], sim.submitted_at)
    tags = tag_map(by_task["final"])
    final = run.tasks.get(task_id="final")
    assert tags["scripthut:backend"] == "aws-ec2" and tags["scripthut:run"] == run.pk
    assert tags["scripthut:tag"] == final.submit_tag and final.job_id == by_task["final"]["InstanceId"]
    behaviour = ec2.client("ec2").describe_instance_attribute(
        InstanceId=final.job_id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    # The safety timer: time_limit 5:00 + idle 1800 s = 35 minutes.
    assert (ec2.host.directory(final.job_id) / "shutdown-args").read_text().startswith("-h +35 ")


def tag_map(instance: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}


def test_failure_has_exit_code_and_dependents_dep_failed(user, backend, ec2):
    tasks = [t("bad", "echo about to fail; exit 3"), t("child", deps=("bad",)), t("ok")]
    run = drive(create_run(owner=user, backend=backend, payload=tasks, workflow_name="ec2-fail"), ec2)
    assert states(run) == {"bad": "failed", "child": "dep_failed", "ok": "completed"}
    bad = run.tasks.get(task_id="bad")
    assert bad.exit_code == 3 and bad.reason == "exit code 3"
    assert "about to fail" in Path(bad.output_file).read_text()
    assert not ec2.instances("pending", "running")


def test_image_that_cannot_be_pulled_fails_with_the_reason(user, backend, ec2):
    run = create_run(owner=user, backend=backend, payload=[t("x", image="missing/image")], workflow_name="pull")
    run = drive(run, ec2)
    task = run.tasks.get()
    assert task.state == "failed" and task.exit_code == 125 and "could not pull" in task.reason


def running(run: Run, ec2: Emulator, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while run.tasks.filter(state="running").count() < count:
        assert time.monotonic() < deadline, list(run.tasks.values_list("task_id", "state", "reason"))
        tick_due_backends(force=True)
        ec2.host.boot()
        time.sleep(0.2)


def test_cancel_terminates_the_instances(user, backend, ec2):
    run = create_run(owner=user, backend=backend, payload=[t(f"long{i}", "sleep 120") for i in range(2)],
                     workflow_name="cancel")  # fmt: skip
    running(run, ec2, 2)
    cancel_run(run)
    tick_due_backends(force=True)
    assert set(states(run).values()) == {"cancelled"}
    assert not ec2.instances("pending", "running")


def test_log_of_a_running_task_is_read_live_then_from_the_copy(user, backend, ec2):
    payload = [t("talk", "echo first line; sleep 2; echo second line")]
    run = create_run(owner=user, backend=backend, payload=payload, workflow_name="log")
    running(run, ec2, 1)
    task = run.tasks.get()
    from runs.engine.jobspec import task_log

    adapter = get_adapter(backend)
    deadline = time.monotonic() + 10
    while "first line" not in (text := read_or_empty(adapter, task_log(task, "output"))):
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert "output and errors are one log" in adapter.read_log(task_log(task, "error"))
    run = drive(run, ec2)
    task.refresh_from_db()
    assert adapter.read_log(task_log(task, "output")).endswith("first line\nsecond line\n")


def read_or_empty(adapter: Any, log: Any) -> str:
    try:
        return str(adapter.read_log(log))
    except FileNotFoundError:
        return ""


def test_max_instances_is_a_hard_cap_also_with_two_ticks_at_once(user, ec2, cluster):  # noqa: F811
    backend = make_backend(ec2, cluster, max_instances=2)
    run = create_run(owner=user, backend=backend, payload=[t(f"s{i}", "sleep 5") for i in range(5)],
                     workflow_name="cap")  # fmt: skip
    threads = [db_thread(tick_due_backends, force=True) for _ in range(2)]
    for thread in threads:
        thread.join()
    # A second portal process (its own adapter) ticking too: still two.
    close_all()
    tick_due_backends(force=True)
    assert len(ec2.instances("pending", "running")) == 2
    waiting = run.tasks.filter(state="pending")
    assert waiting.count() == 3
    assert {shown_reason(task) for task in Run.objects.get(pk=run.pk).tasks.filter(state="pending")} == {
        "submission deferred: waiting for an instance: max_instances (2) are running"
    }
    peak = 0
    deadline = time.monotonic() + 90
    while not run.is_finished and time.monotonic() < deadline:
        tick_due_backends(force=True)
        ec2.host.boot()
        peak = max(peak, len(ec2.instances("pending", "running")))
        run.refresh_from_db()
        time.sleep(0.3)
    assert run.status == Run.Status.COMPLETED and peak == 2


def test_instance_that_never_runs_fails_its_task_and_is_terminated(user, ec2, cluster, time_machine):  # noqa: F811
    backend = make_backend(ec2, cluster, startup_timeout_seconds=60)
    run = create_run(owner=user, backend=backend, payload=[t("stuck")], workflow_name="stuck")
    tick_due_backends(force=True)
    task = run.tasks.get()
    ec2.set_state(task.job_id, "pending")
    tick_due_backends(force=True)
    task.refresh_from_db()
    assert task.state == "submitted", task.reason  # pending, within its startup time
    time_machine.move_to(timezone.now() + timedelta(seconds=61), tick=True)
    tick_due_backends(force=True)
    task.refresh_from_db()
    assert task.state == "failed" and task.reason == "instance did not reach running within 60s"
    assert ec2.instances("shutting-down", "terminated")[0]["InstanceId"] == task.job_id


def test_instance_gone_before_its_task_finished_fails_it(user, ec2, cluster):  # noqa: F811
    backend = make_backend(ec2, cluster, sentinels_every=0)  # every tick polls: it sees the instance go
    run = create_run(owner=user, backend=backend, payload=[t("doomed", "sleep 60")], workflow_name="gone")
    running(run, ec2, 1)
    task = run.tasks.get()
    ec2.client("ec2").terminate_instances(InstanceIds=[task.job_id])
    tick_due_backends(force=True)
    task.refresh_from_db()
    assert task.state == "failed" and "before the task finished" in task.reason


def test_restart_adopts_a_launch_never_recorded_and_terminates_orphans(
    user, backend, ec2, monkeypatch, settings, time_machine
):
    settings.SCRIPTHUT_EC2_ORPHAN_GRACE_SECONDS = 60  # older ones only: another tick may be launching a young one
    run = create_run(owner=user, backend=backend, payload=[t("one", "sleep 1")], workflow_name="crash")
    real_launch = ec2_instances.Ec2Instances.launch

    def launch_then_die(self: Any, job: Any, user_data: str) -> str:
        real_launch(self, job, user_data)
        raise SystemExit("killed between run_instances and recording the instance id")

    monkeypatch.setattr(ec2_instances.Ec2Instances, "launch", launch_then_die)
    with pytest.raises(SystemExit):
        tick_due_backends(force=True)
    monkeypatch.setattr(ec2_instances.Ec2Instances, "launch", real_launch)
    Backend.objects.update(lease_until=None, lease_owner="")  # the dead tick's lease, expired
    task = run.tasks.get()
    assert task.state == "submitting" and task.job_id == ""
    # An instance of this backend no task owns (left by an older crash), and another backend's.
    orphan = launch_foreign(ec2, {"scripthut:backend": "aws-ec2", "scripthut:tag": "sh-gone"})
    foreign = launch_foreign(ec2, {"scripthut:backend": "another"})
    close_all()  # a new process: a new adapter
    tick_due_backends(force=True)
    assert {orphan, foreign} <= {i["InstanceId"] for i in ec2.instances("running")}  # too young to be orphans yet
    time_machine.move_to(timezone.now() + timedelta(seconds=61), tick=True)  # a minute later
    run = drive(run, ec2)
    task = run.tasks.get()
    assert run.status == Run.Status.COMPLETED
    launched = [i for i in ec2.instances() if tag_map(i).get("scripthut:task") == "one"]
    assert [i["InstanceId"] for i in launched] == [task.job_id]  # adopted, not launched twice
    state = {i["InstanceId"]: i["State"]["Name"] for i in ec2.instances()}
    assert state[orphan] in ("shutting-down", "terminated") and state[foreign] == "running"


def launch_foreign(ec2: Emulator, tags: dict[str, str]) -> str:
    response = ec2.client("ec2").run_instances(
        ImageId=ec2.ami, MinCount=1, MaxCount=1, InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    )  # fmt: skip
    return str(response["Instances"][0]["InstanceId"])


def test_launch_carries_the_backend_settings(user, ec2, cluster):  # noqa: F811
    ec2_client = ec2.client("ec2")
    vpc = ec2_client.describe_subnets(SubnetIds=[ec2.subnet_id])["Subnets"][0]["VpcId"]
    group = ec2_client.create_security_group(GroupName="tasks", Description="no inbound", VpcId=vpc)["GroupId"]
    iam = ec2.client("iam")
    iam.create_role(RoleName="Task", AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName="Task")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="Task", RoleName="Task")
    backend = make_backend(ec2, cluster, security_group_ids=[group], instance_profile_arn=profile,
                           extra_tags={"Environment": "research", "scripthut:backend": "not-this"})  # fmt: skip
    run = create_run(owner=user, backend=backend, payload=[t("one", image="ghcr.io/org/special:2")], workflow_name="s")
    tick_due_backends(force=True)
    task = run.tasks.get()
    [instance] = ec2.instances()
    assert task.job_id == instance["InstanceId"] and task.state == "submitted"
    tags = tag_map(instance)
    assert tags["Environment"] == "research" and tags["scripthut:backend"] == "aws-ec2"  # ours win
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group]
    assert instance["IamInstanceProfile"]["Arn"] == profile and instance["InstanceType"] == "c5.xlarge"
    attribute = ec2_client.describe_instance_attribute(InstanceId=task.job_id, Attribute="userData")
    user_data = base64.b64decode(attribute["UserData"]["Value"]).decode()
    assert "image=ghcr.io/org/special:2\n" in user_data and "time_limit_seconds=300\n" in user_data


def test_log_copy_failure_keeps_the_instance_until_it_succeeds(user, backend, ec2, monkeypatch):
    run = create_run(owner=user, backend=backend, payload=[t("quick", "echo done")], workflow_name="retry")
    real_open = LoopbackConnector.open

    def unreachable(self: LoopbackConnector, instance_id: str) -> Any:
        raise BackendUnavailable(f"ssh over SSM to {instance_id} failed: test says no")

    monkeypatch.setattr(LoopbackConnector, "open", unreachable)
    running(run, ec2, 1)
    task = run.tasks.get()
    done = ec2.host.directory(task.job_id) / "var/run/scripthut/done"
    deadline = time.monotonic() + 30
    while not done.exists():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for _ in range(4):  # the sentinel is seen, and SSH keeps failing
        tick_due_backends(force=True)
    task.refresh_from_db()
    assert task.state == "running" and done.read_text() == "0\n"
    assert ec2.instances("running")  # not terminated before its log is copied
    monkeypatch.setattr(LoopbackConnector, "open", real_open)
    run = drive(run, ec2)
    assert run.status == Run.Status.COMPLETED and "done" in Path(run.tasks.get().output_file).read_text()
    assert not ec2.instances("pending", "running")


def test_lost_answer_to_run_instances_is_reconciled_not_relaunched(user, backend, ec2, monkeypatch):
    run = create_run(owner=user, backend=backend, payload=[t("one", "sleep 1")], workflow_name="timeout")
    real_launch = ec2_instances.Ec2Instances.launch

    def launch_then_time_out(self: Any, job: Any, user_data: str) -> str:
        real_launch(self, job, user_data)  # the instance starts; the answer never arrives
        with aws_errors("ec2 RunInstances"):
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=ec2.url)
        raise AssertionError("unreachable")

    monkeypatch.setattr(ec2_instances.Ec2Instances, "launch", launch_then_time_out)
    tick_due_backends(force=True)
    monkeypatch.setattr(ec2_instances.Ec2Instances, "launch", real_launch)
    task = run.tasks.get()
    assert task.state == "submitting"
    run = drive(run, ec2)
    task = run.tasks.get()
    assert run.status == Run.Status.COMPLETED
    assert [i["InstanceId"] for i in ec2.instances()] == [task.job_id]  # the one launch, adopted


def test_instance_gone_after_its_task_finished_keeps_the_exit_code(user, ec2, cluster, monkeypatch):  # noqa: F811
    # Every tick polls: the instance is seen running, its sentinel read, then it is gone.
    backend = make_backend(ec2, cluster, sentinels_every=0)
    run = create_run(owner=user, backend=backend, payload=[t("brief", "exit 4")], workflow_name="gone-after")
    running(run, ec2, 1)
    task = run.tasks.get()
    done = ec2.host.directory(task.job_id) / "var/run/scripthut/done"
    deadline = time.monotonic() + 30
    while not done.exists():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # The SSH copy is too slow this time: the sentinel is read, then the instance goes.
    monkeypatch.setattr(LoopbackConnector, "open", lambda self, i: (_ for _ in ()).throw(BackendUnavailable("slow")))
    tick_due_backends(force=True)
    ec2.client("ec2").terminate_instances(InstanceIds=[task.job_id])
    tick_due_backends(force=True)
    task.refresh_from_db()
    assert task.state == "failed" and task.exit_code == 4
    assert task.reason == "exit code 4; log not copied: the instance was terminated first"
