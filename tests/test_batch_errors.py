"""AWS Batch misconfigured or unreachable: a clear error on the backend's status and in
``GET /api/backends``, tasks waiting (never failed, never lost), and resuming once the
backend is fixed. Against moto's server over HTTP, and for the one error moto cannot
make (an expired token) a small local endpoint answering as AWS documents it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import close_all
from runs.actions import create_run
from runs.engine.tick import tick_due_backends
from runs.models import ApiToken, Run
from tests.aws import (
    BatchWorld,
    MotoServer,
    batch_world,
    moto_server_fixture,  # noqa: F401  (fixture)
    moto_url_fixture,  # noqa: F401  (fixture)
)
from tests.services import free_port

pytestmark = pytest.mark.django_db(transaction=True)


class ExpiredToken(BaseHTTPRequestHandler):
    """Every call refused as AWS refuses an expired session token (rest-json error body)."""

    def do_POST(self) -> None:  # noqa: N802  (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {"__type": "ExpiredTokenException", "message": "The security token included in the request is expired"}
        )  # noqa: E501
        self.send_response(403)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-ErrorType", "ExpiredTokenException")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def expired_token_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), ExpiredToken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def fresh_adapters() -> Iterator[None]:
    close_all()
    yield
    close_all()


Breaker = Callable[[dict[str, Any], pytest.MonkeyPatch, str], None]


def no_region(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    del settings["aws"]["region"]  # a row written before validation, or edited in the database


def unknown_profile(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    settings["aws"]["profile"] = "nobody-has-this"


def no_credentials(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    env.delenv("AWS_ACCESS_KEY_ID")
    env.delenv("AWS_SECRET_ACCESS_KEY")


def missing_queue(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    settings["aws"]["job_queue"] = "no-such-queue"


def endpoint_down(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    settings["aws"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"


def expired_token(settings: dict[str, Any], env: pytest.MonkeyPatch, expired: str) -> None:
    settings["aws"]["endpoint_url"] = expired


CASES: list[tuple[Breaker, str]] = [
    (no_region, "aws.region: field required"),
    (unknown_profile, "The config profile (nobody-has-this) could not be found (aws.profile)"),
    (no_credentials, "no AWS credentials found"),
    (missing_queue, "job queue 'no-such-queue' does not exist in us-east-1 (aws.job_queue)"),
    (endpoint_down, "cannot reach AWS"),
    (expired_token, "AWS refused the credentials: ExpiredTokenException"),
]


@pytest.mark.aws
@pytest.mark.parametrize(("breaker", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_setup_is_reported_and_tasks_wait_until_it_is_fixed(
    user: User,
    moto_server: MotoServer,
    expired_token_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    breaker: Breaker,
    message: str,
) -> None:
    world: BatchWorld = batch_world(moto_server)
    good = validate_backend_settings(
        "batch",
        {
            "aws": {"region": "us-east-1", "job_queue": world.queue, "endpoint_url": moto_server.url},
            "job_definition": world.job_definition,
        },
    )
    broken = json.loads(json.dumps(good))
    with monkeypatch.context() as env:
        breaker(broken, env, expired_token_endpoint)
        backend = Backend.objects.create(name="aws-batch", kind="batch", settings=broken)
        task = {"id": "a", "name": "a", "command": "true"}
        run = create_run(owner=user, backend=backend, payload=[task], workflow_name="w")
        tick_due_backends(force=True)
        backend.refresh_from_db()
        assert backend.status == Backend.Status.UNREACHABLE
        assert message in backend.status_message
        listed = Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"}).get("/api/backends").json()
        assert [(b["status"], message in b["status_message"]) for b in listed] == [("unreachable", True)]
        assert list(run.tasks.values_list("state", flat=True)) == ["pending"]
        run.refresh_from_db()
        assert run.status == Run.Status.PENDING
    Backend.objects.filter(pk=backend.pk).update(settings=good)
    tick_due_backends(force=True)
    backend.refresh_from_db()
    assert (backend.status, backend.status_message) == (Backend.Status.OK, "")
    assert list(run.tasks.values_list("state", flat=True)) == ["submitted"]


def test_config_without_a_region_or_a_job_definition_names_the_keys() -> None:
    with pytest.raises(ValueError) as missing:
        validate_backend_settings("batch", {"aws": {"job_queue": "q"}, "default_image": "i"})
    assert str(missing.value) == "aws.region: field required"
    with pytest.raises(ValueError) as neither:
        validate_backend_settings("batch", {"aws": {"region": "r", "job_queue": "q"}})
    assert str(neither.value) == "job_definition: either job_definition or default_image must be set"
    with pytest.raises(ValueError) as both:
        validate_backend_settings(
            "batch", {"aws": {"region": "r", "job_queue": "q"}, "default_image": "i", "job_definition": "d"}
        )  # noqa: E501
    assert str(both.value) == "default_image: set either job_definition or default_image, not both"
    with pytest.raises(ValueError, match="retry_attempts: input should be less than or equal to 10"):
        validate_backend_settings(
            "batch", {"aws": {"region": "r", "job_queue": "q"}, "default_image": "i", "retry_attempts": 11}
        )  # noqa: E501


@pytest.mark.aws
def test_log_page_says_why_when_aws_cannot_be_reached(user: User, moto_server: MotoServer) -> None:
    world = batch_world(moto_server)
    settings = {
        "aws": {"region": "us-east-1", "job_queue": world.queue, "endpoint_url": moto_server.url},
        "job_definition": world.job_definition,
    }
    backend = Backend.objects.create(
        name="aws-batch", kind="batch", settings=validate_backend_settings("batch", settings)
    )  # noqa: E501
    run = create_run(
        owner=user, backend=backend, payload=[{"id": "a", "name": "a", "command": "true"}], workflow_name="w"
    )  # noqa: E501
    tick_due_backends(force=True)
    broken = {**backend.settings, "aws": {**backend.settings["aws"], "endpoint_url": f"http://127.0.0.1:{free_port()}"}}  # noqa: E501
    Backend.objects.filter(pk=backend.pk).update(settings=broken)
    client = Client()
    client.force_login(user)
    page = client.get(f"/runs/{run.pk}/tasks/a/logs/output").content.decode()
    assert "Backend aws-batch is unreachable" in page and "cannot reach AWS" in page
