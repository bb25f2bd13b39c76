"""The AWS ECS backend through the engine, against moto's server over real HTTP.

moto starts every task RUNNING; the tests move tasks on with moto's state manager
(``stop_tasks_at_once``), or hold them and end them as ECS would (tests/aws_ecs.py).
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest
from django.contrib.auth.models import User
from django.test import Client

from backends.config import validate_backend_settings
from backends.ecs.adapter import EcsAdapter
from backends.models import Backend
from backends.registry import close_all, get_adapter
from runs.actions import cancel_run, create_run
from runs.engine.tick import tick_due_backends
from runs.models import ApiToken, Run, Task
from tests.aws import (
    IMAGE,
    MotoServer,
    moto_server_fixture,  # noqa: F401  (fixture)
    moto_url_fixture,  # noqa: F401  (fixture)
)
from tests.aws_ecs import (
    LOG_GROUP,
    EcsWorld,
    ecs_world,
    emulator_tasks,
    finish_task,
    hold_tasks,
    moto_task,
    stop_tasks_at_once,
    write_log,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.aws]


def t(task_id: str, deps: tuple[str, ...] = (), **extra: object) -> dict[str, Any]:
    return {"id": task_id, "name": task_id, "command": f"echo {task_id}", "deps": list(deps), **extra}


@pytest.fixture
def world(moto_server: MotoServer) -> EcsWorld:
    hold_tasks(moto_server)
    return ecs_world(moto_server)


@pytest.fixture(autouse=True)
def fresh_adapters() -> Any:
    close_all()
    yield
    close_all()


def make_backend(server: MotoServer, world: EcsWorld, name: str = "aws-ecs", **keys: Any) -> Backend:
    settings = validate_backend_settings("ecs", world.settings(server, **keys))
    return Backend.objects.create(name=name, kind="ecs", settings=settings, max_concurrent=100)


@pytest.fixture
def ecs(moto_server: MotoServer, world: EcsWorld) -> Backend:
    return make_backend(moto_server, world)


def arn_of(run: Run, task_id: str) -> str:
    arn = run.tasks.get(task_id=task_id).job_id
    assert arn, f"{task_id} has no task: {list(run.tasks.values_list('task_id', 'state', 'reason'))}"
    return arn


def states(run: Run) -> dict[str, str]:
    return dict(run.tasks.values_list("task_id", "state"))


def test_workflow_with_dependencies_completes(user: User, moto_server: MotoServer, ecs: Backend) -> None:
    tasks = [t("prep", env_vars={"SECRET_TOKEN": "s3cr3t value"}), t("sim.1", ("prep",)), t("final", ("sim.*",))]
    run = create_run(owner=user, backend=ecs, payload=tasks, workflow_name="chain")
    tick_due_backends(force=True)
    assert states(run) == {"prep": "submitted", "sim.1": "pending", "final": "pending"}
    prep = run.tasks.get(task_id="prep")
    task = moto_task(prep.job_id)
    # One ECS task, started by (and tagged with) the task's tag; the script as bash -c;
    # env through the API only; the size on the task (1 CPU, 4G: a valid Fargate size).
    assert task.started_by == prep.submit_tag
    assert {"key": "scripthut:tag", "value": prep.submit_tag} in task.tags
    override = task.overrides["containerOverrides"][0]
    assert override["name"] == "app" and override["command"] == ["bash", "-c", prep.script]
    env = {e["name"]: e["value"] for e in override["environment"]}
    assert env["SECRET_TOKEN"] == "s3cr3t value" and env["SCRIPTHUT_RUN_ID"] == run.pk
    assert "s3cr3t" not in prep.script and "SECRET_TOKEN" in prep.script
    assert (task.overrides["cpu"], task.overrides["memory"]) == ("1024", "4096") and prep.warning == ""
    tick_due_backends(force=True)
    assert run.tasks.get(task_id="prep").state == Task.State.RUNNING
    stop_tasks_at_once(moto_server)  # from now on, every task reads STOPPED, exit code 0
    for _ in range(6):
        tick_due_backends(force=True)
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, list(run.tasks.values_list("task_id", "state", "reason"))
    final = run.tasks.get(task_id="final")
    assert final.exit_code == 0 and final.finished_at is not None
    assert len(emulator_tasks()) == 3


def test_failed_task_has_its_exit_code_and_reason(user: User, moto_server: MotoServer, ecs: Backend) -> None:
    run = create_run(owner=user, backend=ecs, payload=[t("a"), t("b", ("a",))], workflow_name="fail")
    tick_due_backends(force=True)
    finish_task(arn_of(run, "a"), 3, "Essential container in task exited")
    tick_due_backends(force=True)
    a = run.tasks.get(task_id="a")
    assert (a.state, a.exit_code) == (Task.State.FAILED, 3)
    assert "Essential container in task exited" in a.reason
    assert run.tasks.get(task_id="b").state == Task.State.DEP_FAILED


def test_cancel_stops_the_task_naming_the_user(user: User, moto_server: MotoServer, ecs: Backend) -> None:
    run = create_run(owner=user, backend=ecs, payload=[t("long")], workflow_name="cancel")
    tick_due_backends(force=True)
    tick_due_backends(force=True)
    assert states(run) == {"long": "running"}
    cancel_run(run, by=user)
    tick_due_backends(force=True)
    task = moto_task(arn_of(run, "long"))
    assert task.stopped_reason == f"Cancelled in ScriptHut: run {run.pk} cancelled by {user.username}"
    tick_due_backends(force=True)
    assert states(run) == {"long": "cancelled"}


def test_a_lost_run_task_answer_is_reconciled_by_started_by_with_one_task(
    user: User, moto_server: MotoServer, ecs: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RunTask reaches ECS but its answer is lost (the portal dies, the network drops):
    the next tick finds the task by startedBy and starts no second one."""
    adapter = get_adapter(ecs)
    assert isinstance(adapter, EcsAdapter)
    real = adapter.ecs.run_task

    def answer_lost(**arguments: Any) -> Any:
        real(**arguments)
        raise botocore.exceptions.ReadTimeoutError(endpoint_url=moto_server.url)

    run = create_run(owner=user, backend=ecs, payload=[t("once")], workflow_name="lost")
    with monkeypatch.context() as patch:
        patch.setattr(adapter.ecs, "run_task", answer_lost)
        tick_due_backends(force=True)
    assert run.tasks.get(task_id="once").job_id == ""
    assert len(emulator_tasks()) == 1
    close_all()  # as after a restart
    tick_due_backends(force=True)
    tick_due_backends(force=True)
    once = run.tasks.get(task_id="once")
    assert list(emulator_tasks()) == [once.job_id]
    assert once.state in (Task.State.SUBMITTED, Task.State.RUNNING)


def test_default_image_registers_once_and_rounds_to_a_fargate_size(
    user: User, moto_server: MotoServer, world: EcsWorld
) -> None:
    backend = make_backend(moto_server, world, default_image=IMAGE, execution_role_arn="arn:aws:iam::1:role/exec")
    run = create_run(owner=user, backend=backend, payload=[t("small", memory="100M"), t("big", cpus=3)], workflow_name="auto")  # fmt: skip  # noqa: E501
    tick_due_backends(force=True)
    small, big = run.tasks.get(task_id="small"), run.tasks.get(task_id="big")
    assert (moto_task(small.job_id).overrides["cpu"], moto_task(small.job_id).overrides["memory"]) == ("1024", "2048")
    assert small.warning == "Fargate size 1 vCPU / 2048 MiB (asked 1 CPU / 100 MiB, rounded up to a valid size)"
    assert moto_task(big.job_id).overrides["cpu"] == "4096" and "Fargate size 4 vCPU / 8192 MiB" in big.warning
    client = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    shown = {task["id"]: task["warning"] for task in client.get(f"/api/runs/{run.pk}").json()["tasks"]}
    assert shown["small"] == small.warning
    close_all()  # a restart: the family is found again, not registered twice
    create_run(owner=user, backend=backend, payload=[t("again")], workflow_name="auto")
    tick_due_backends(force=True)
    families = moto_server.client("ecs").list_task_definitions()["taskDefinitionArns"]
    ours = [arn for arn in families if "/scripthut-" in arn and "template" not in arn]
    assert len(ours) == 1 and ours[0].endswith(":1"), families
    definition = moto_server.client("ecs").describe_task_definition(taskDefinition=ours[0])["taskDefinition"]
    assert definition["executionRoleArn"] == "arn:aws:iam::1:role/exec"
    assert definition["containerDefinitions"][0]["logConfiguration"]["options"]["awslogs-group"] == "/ecs/scripthut"


def test_a_task_too_big_for_fargate_fails_with_the_reason_and_starts_nothing(
    user: User, moto_server: MotoServer, ecs: Backend
) -> None:
    run = create_run(owner=user, backend=ecs, payload=[t("huge", cpus=32)], workflow_name="huge")
    tick_due_backends(force=True)
    huge = run.tasks.get(task_id="huge")
    assert huge.state == Task.State.FAILED
    assert "32 CPUs / 4096 MiB does not fit on Fargate (at most 16 vCPU and 122880 MiB a task)" in huge.reason
    assert emulator_tasks() == {}


def test_a_given_definition_warns_about_a_task_image(user: User, moto_server: MotoServer, ecs: Backend) -> None:
    run = create_run(owner=user, backend=ecs, payload=[t("same", image=IMAGE), t("other", image="python:3.13")], workflow_name="img")  # fmt: skip  # noqa: E501
    tick_due_backends(force=True)
    assert run.tasks.get(task_id="same").warning == ""
    other = run.tasks.get(task_id="other")
    assert "'python:3.13' ignored" in other.warning and "ECS cannot override an image" in other.warning


def test_revisions_mode_registers_one_revision_per_image_and_finds_it_again(
    user: User, moto_server: MotoServer, world: EcsWorld
) -> None:
    """task_definition_mode: revisions (as Batch's): the given definition is a template; a
    task image it lacks gets a revision of its family, with only that image changed."""
    backend = make_backend(moto_server, world, task_definition=world.task_definition, task_definition_mode="revisions")
    payload = [t("other", image="python:3.13"), t("again", image="python:3.13"), t("same"), t("own", image=IMAGE)]
    run = create_run(owner=user, backend=backend, payload=payload, workflow_name="rev")
    tick_due_backends(force=True)
    client = moto_server.client("ecs")

    def definition_of(task_id: str) -> dict[str, Any]:
        arn = moto_task(arn_of(run, task_id)).task_definition_arn
        return client.describe_task_definition(taskDefinition=arn)["taskDefinition"]

    other, again, same, own = (definition_of(task) for task in ("other", "again", "same", "own"))
    assert other["revision"] == again["revision"] == 2 and same["revision"] == own["revision"] == 1
    assert other["family"] == world.task_definition and other["containerDefinitions"][0]["image"] == "python:3.13"
    template = client.describe_task_definition(taskDefinition=f"{world.task_definition}:1")["taskDefinition"]
    kept = ("networkMode", "requiresCompatibilities", "cpu", "memory")
    assert {k: other[k] for k in kept} == {k: template[k] for k in kept}
    assert (
        other["containerDefinitions"][0]["logConfiguration"] == template["containerDefinitions"][0]["logConfiguration"]
    )
    assert {task.warning for task in run.tasks.all()} == {""}  # no image ignored

    close_all()  # a restart: the revision is found again by its tags, not registered twice
    later = create_run(owner=user, backend=backend, payload=[t("later", image="python:3.13")], workflow_name="rev")
    tick_due_backends(force=True)
    arn = moto_task(arn_of(later, "later")).task_definition_arn
    assert arn.endswith(f"{world.task_definition}:2")
    families = client.list_task_definitions(familyPrefix=world.task_definition)["taskDefinitionArns"]
    assert len(families) == 2, families


def test_logs_come_from_the_containers_awslogs_stream(user: User, moto_server: MotoServer, ecs: Backend) -> None:
    run = create_run(owner=user, backend=ecs, payload=[t("talk")], workflow_name="logs")
    tick_due_backends(force=True)
    arn = arn_of(run, "talk")
    client = Client()
    client.force_login(user)
    before = client.get(f"/runs/{run.pk}/tasks/talk/logs/output").content.decode()
    assert "has not been written yet" in before
    stream = f"tpl/app/{arn.rsplit('/', 1)[-1]}"
    write_log(moto_server, LOG_GROUP, stream, ("line 1", "line 2"))
    page = client.get(f"/runs/{run.pk}/tasks/talk/logs/output").content.decode()
    assert "line 1\nline 2" in page and stream in page
    assert "both are in the output tab" in client.get(f"/runs/{run.pk}/tasks/talk/logs/error").content.decode()
