"""Bad AWS configuration on an EC2 backend: a clear error on the backend's status and in
``GET /api/backends``, no task lost; tasks wait and resume once it is fixed. Against the
emulator over real HTTP (tests/aws_ec2.py); no SSH needed until a task finishes."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client

from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import close_all
from runs.actions import create_run
from runs.engine.tick import tick_due_backends
from runs.models import ApiToken, Run
from tests.aws_ec2 import REGION, Emulator, LoopbackConnector, LoopbackEnd, free_port, moto_ec2  # noqa: F401
from tests.cluster import Cluster, cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)
TASKS = [{"id": "one", "name": "one", "command": "echo ok", "time_limit": "5:00"}]


@pytest.fixture
def ec2(moto_ec2: Emulator, cluster: Cluster, settings: Any):  # noqa: F811
    settings.SCRIPTHUT_EC2_CONNECTOR = "tests.aws_ec2.LoopbackConnector"
    LoopbackConnector.end = LoopbackEnd(cluster=cluster, host=moto_ec2.host)
    close_all()
    yield moto_ec2
    close_all()
    LoopbackConnector.end = None


def backend_with(ec2: Emulator, cluster: Cluster, **aws: Any) -> Backend:  # noqa: F811
    config = ec2.backend_settings(ssh_user=cluster.user)
    config["aws"] = {key: value for key, value in (config["aws"] | aws).items() if value is not None}
    settings = validate_backend_settings("ec2", config)
    return Backend.objects.create(name="aws-ec2", kind="ec2", settings=settings, max_concurrent=5, poll_interval=1)


def api_backend(user: Any) -> dict[str, Any]:
    client = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})
    rows = client.get("/api/backends").json()
    return next(row for row in rows if row["name"] == "aws-ec2")


def assert_waiting(run: Run, backend: Backend, user: Any, message: str) -> None:
    tick_due_backends(force=True)
    backend.refresh_from_db()
    assert backend.status == Backend.Status.UNREACHABLE and message in backend.status_message
    row = api_backend(user)
    assert row["status"] == "unreachable" and message in row["status_message"]
    assert set(run.tasks.values_list("state", flat=True)) == {"pending"}


def finish(run: Run, ec2: Emulator) -> Run:
    deadline = time.monotonic() + 60
    while not run.is_finished:
        assert time.monotonic() < deadline, list(run.tasks.values_list("state", "reason"))
        tick_due_backends(force=True)
        ec2.host.boot()
        run.refresh_from_db()
        time.sleep(0.3)
    return run


def test_missing_region_is_named_when_the_backend_is_configured():
    config = {"aws": {"profile": "x"}, "ami": "ami-1", "subnet_id": "subnet-1"}
    with pytest.raises(ValueError, match=r"aws\.region"):
        validate_backend_settings("ec2", config)
    with pytest.raises(ValueError) as problems:
        validate_backend_settings("ec2", {"aws": {}})
    assert {"aws.region", "ami", "subnet_id"} <= {line.split(":")[0] for line in str(problems.value).splitlines()}


@pytest.mark.aws
@pytest.mark.cluster
def test_no_credentials_then_fixed(user, ec2, cluster, monkeypatch):  # noqa: F811
    backend = backend_with(ec2, cluster)
    run = create_run(owner=user, backend=backend, payload=TASKS, workflow_name="creds")
    with monkeypatch.context() as patch:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            patch.delenv(key)
        close_all()
        assert_waiting(run, backend, user, "no AWS credentials found")
    close_all()
    assert finish(run, ec2).status == Run.Status.COMPLETED


@pytest.mark.aws
@pytest.mark.cluster
def test_endpoint_that_does_not_answer_then_fixed(user, ec2, cluster):  # noqa: F811
    dead = f"http://127.0.0.1:{free_port()}"
    backend = backend_with(ec2, cluster, endpoint_url=dead)
    run = create_run(owner=user, backend=backend, payload=TASKS, workflow_name="endpoint")
    assert_waiting(run, backend, user, "cannot reach AWS")
    backend.settings = backend.settings | {"aws": backend.settings["aws"] | {"endpoint_url": ec2.url}}
    backend.save()
    assert finish(run, ec2).status == Run.Status.COMPLETED


@pytest.mark.aws
@pytest.mark.cluster
def test_malformed_region_then_fixed(user, ec2, cluster):  # noqa: F811
    backend = backend_with(ec2, cluster, region="not a region!")
    run = create_run(owner=user, backend=backend, payload=TASKS, workflow_name="region")
    assert_waiting(run, backend, user, "not a region!")
    backend.settings = backend.settings | {"aws": backend.settings["aws"] | {"region": REGION}}
    backend.save()
    assert finish(run, ec2).status == Run.Status.COMPLETED


@pytest.mark.aws
@pytest.mark.cluster
def test_standard_aws_endpoint_url_variable_is_honoured(user, ec2, cluster, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AWS_ENDPOINT_URL", ec2.url)
    backend = backend_with(ec2, cluster, endpoint_url=None)
    assert "endpoint_url" not in backend.settings["aws"] or not backend.settings["aws"]["endpoint_url"]
    run = create_run(owner=user, backend=backend, payload=TASKS, workflow_name="env")
    assert finish(run, ec2).status == Run.Status.COMPLETED
    assert len(ec2.instances()) == 1


@pytest.mark.aws
@pytest.mark.cluster
def test_task_without_an_image_fails_naming_both_settings(user, ec2, cluster):  # noqa: F811
    config = ec2.backend_settings(ssh_user=cluster.user)
    del config["default_image"]
    settings = validate_backend_settings("ec2", config)
    backend = Backend.objects.create(name="aws-ec2", kind="ec2", settings=settings, max_concurrent=5, poll_interval=1)
    run = create_run(owner=user, backend=backend, payload=TASKS, workflow_name="no-image")
    tick_due_backends(force=True)
    task = run.tasks.get()
    assert task.state == "failed"
    assert (
        task.reason
        == "rejected by the scheduler: no container image: set image on the task or default_image on the backend"
    )
    assert not ec2.instances()


@pytest.mark.aws
@pytest.mark.cluster
def test_endpoint_from_the_scripthut_setting(user, ec2, cluster, settings):  # noqa: F811
    settings.SCRIPTHUT_AWS_ENDPOINT_URL = ec2.url
    backend = backend_with(ec2, cluster, endpoint_url=None)
    run = create_run(owner=user, backend=backend, payload=TASKS, workflow_name="setting")
    assert finish(run, ec2).status == Run.Status.COMPLETED
