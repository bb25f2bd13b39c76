"""AWS ECS misconfigured or unreachable: a clear error on the backend's status, tasks
waiting (never failed, never lost), and resuming once the backend is fixed. Against
moto's server over HTTP; an expired token from the small endpoint of test_batch_errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import close_all
from runs.actions import create_run
from runs.engine.tick import tick_due_backends
from runs.models import Run
from tests.aws import (
    MotoServer,
    moto_server_fixture,  # noqa: F401  (fixture)
    moto_url_fixture,  # noqa: F401  (fixture)
)
from tests.aws_ecs import ecs_world, hold_tasks
from tests.services import free_port
from tests.test_batch_errors import expired_token_endpoint  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_adapters() -> Iterator[None]:
    close_all()
    yield
    close_all()


Breaker = Callable[[dict[str, Any], pytest.MonkeyPatch, str], None]


def missing_cluster(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    settings["cluster"] = "no-such-cluster"


def no_credentials(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    env.delenv("AWS_ACCESS_KEY_ID")
    env.delenv("AWS_SECRET_ACCESS_KEY")


def unknown_profile(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    settings["aws"]["profile"] = "nobody-has-this"


def endpoint_down(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    settings["aws"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"


def expired_token(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    settings["aws"]["endpoint_url"] = expired


def no_cluster_key(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    del settings["cluster"]  # a row edited in the database


CASES: list[tuple[Breaker, str]] = [
    (missing_cluster, "ECS cluster 'no-such-cluster' does not exist in us-east-1 (cluster)"),
    (no_cluster_key, "cluster: field required"),
    (no_credentials, "no AWS credentials found"),
    (unknown_profile, "The config profile (nobody-has-this) could not be found (aws.profile)"),
    (endpoint_down, "cannot reach AWS"),
    (expired_token, "AWS refused the credentials: ExpiredTokenException"),
]


@pytest.mark.aws
@pytest.mark.parametrize(("breaker", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_setup_is_reported_and_tasks_wait_until_it_is_fixed(
    user: User,
    moto_server: MotoServer,
    expired_token_endpoint: str,  # noqa: F811  (fixture)
    monkeypatch: pytest.MonkeyPatch,
    breaker: Breaker,
    message: str,
) -> None:
    hold_tasks(moto_server)
    world = ecs_world(moto_server)
    good = validate_backend_settings("ecs", world.settings(moto_server))
    broken = json.loads(json.dumps(good))
    with monkeypatch.context() as env:
        breaker(broken, env, expired_token_endpoint)
        backend = Backend.objects.create(name="aws-ecs", kind="ecs", settings=broken)
        run = create_run(
            owner=user, backend=backend, payload=[{"id": "a", "name": "a", "command": "true"}], workflow_name="w"
        )
        tick_due_backends(force=True)
        backend.refresh_from_db()
        assert backend.status == Backend.Status.UNREACHABLE
        assert message in backend.status_message
        assert list(run.tasks.values_list("state", flat=True)) == ["pending"]
        run.refresh_from_db()
        assert run.status == Run.Status.PENDING
    Backend.objects.filter(pk=backend.pk).update(settings=good)
    tick_due_backends(force=True)
    backend.refresh_from_db()
    assert (backend.status, backend.status_message) == (Backend.Status.OK, "")
    assert list(run.tasks.values_list("state", flat=True)) == ["submitted"]


def test_config_names_every_missing_or_wrong_key() -> None:
    with pytest.raises(ValueError) as missing:
        validate_backend_settings("ecs", {"aws": {"region": "r"}, "default_image": "i", "launch_type": "EC2"})
    assert str(missing.value) == "cluster: field required"
    with pytest.raises(ValueError) as both:
        validate_backend_settings(
            "ecs",
            {
                "aws": {"region": "r"},
                "cluster": "c",
                "launch_type": "EC2",
                "default_image": "i",
                "task_definition": "d",
            },  # fmt: skip  # noqa: E501
        )
    assert str(both.value) == "default_image: set either task_definition or default_image, not both"
    with pytest.raises(ValueError, match="launch_type: input should be 'FARGATE' or 'EC2'"):
        validate_backend_settings("ecs", {"aws": {"region": "r"}, "cluster": "c", "launch_type": "LAMBDA", "default_image": "i"})  # fmt: skip  # noqa: E501
    ec2 = validate_backend_settings("ecs", {"aws": {"region": "r"}, "cluster": "c", "launch_type": "EC2", "default_image": "i"})  # fmt: skip  # noqa: E501
    assert ec2["launch_type"] == "EC2" and ec2["subnets"] == []
