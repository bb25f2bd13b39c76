"""The REST API (runs.api.routes) and /health."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import OperationalError
from django.test import Client, override_settings
from django.utils import timezone
from openapi_schema_validator import OAS31Validator, oas31_format_checker
from openapi_spec_validator import validate as validate_spec

from backends.models import Backend
from runs.actions import create_run
from runs.api.routes import api
from runs.models import ApiToken, Run, Task
from sources.models import Source
from tests.conftest import LOCAL_USERS

CHAIN = [
    {"id": "setup", "name": "Setup", "command": "echo setup"},
    {"id": "sim.1", "name": "S1", "command": "true", "deps": ["setup"]},
    {"id": "sim.2", "name": "S2", "command": "true", "deps": ["setup"]},
    {"id": "final", "name": "Final", "command": "true", "deps": ["sim.*"]},
]


def token_client(user: User) -> Client:
    return Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})


@pytest.fixture
def client(user: User) -> Client:
    return token_client(user)


def post_json(client: Client, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json")


def make_run(owner: User, backend: Backend, name: str = "t") -> Run:
    return create_run(owner=owner, backend=backend, payload=CHAIN, workflow_name=name)


# -- auth ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (None, "missing Authorization header"),
        ("Token not-a-real-key", "invalid API token"),
        ("Token ", "must be"),
        ("Bearer abc", "must be"),
    ],
)
def test_missing_or_bad_token_is_401(user: User, header: str | None, fragment: str) -> None:
    ApiToken.issue(user)
    client = Client(headers={"Authorization": header} if header else {})
    for method, url in [("get", "/api/runs"), ("post", "/api/runs"), ("get", "/api/backends")]:
        response = getattr(client, method)(url)
        # 401 from the token check, not a redirect to the login page.
        assert response.status_code == 401, (url, response.content)
        assert response.json().keys() == {"error"}
        assert fragment in response.json()["error"]


def test_inactive_user_token_is_401(user: User) -> None:
    client = token_client(user)
    user.is_active = False
    user.save()
    assert client.get("/api/runs").status_code == 401


def test_token_use_is_recorded(user: User) -> None:
    key = ApiToken.issue(user)
    token = ApiToken.objects.get(key_hash=ApiToken.hash_key(key))
    assert token.last_used_at is None
    response = Client(headers={"Authorization": f"Token {key}"}).get("/api/runs")
    assert response.status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert timezone.now() - token.last_used_at < timedelta(minutes=1)


def test_wrong_method_is_json_405(client: Client) -> None:
    response = client.delete("/api/runs")
    assert response.status_code == 405
    assert "not allowed" in response.json()["error"]
    assert set(response["Allow"].split(", ")) == {"GET", "POST"}


# -- create ----------------------------------------------------------------------------


def test_create_stores_run_and_tasks(client: Client, user: User, local_backend: Backend) -> None:
    response = post_json(
        client, "/api/runs", {"backend": "local", "workflow": CHAIN, "max_concurrent": 2, "name": "chain"}
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body.keys() == {"id", "status", "warnings", "replayed"} and body["warnings"] == []
    assert body["replayed"] is False
    assert body["status"] == "pending"
    run = Run.objects.get(pk=body["id"])
    assert (run.owner, run.backend, run.workflow_name, run.max_concurrent) == (user, local_backend, "chain", 2)
    tasks = list(run.tasks.order_by("position"))
    assert [t.task_id for t in tasks] == ["setup", "sim.1", "sim.2", "final"]
    assert tasks[3].deps == ["sim.*"]
    assert tasks[3].resolved_deps == ["sim.1", "sim.2"]


def test_create_accepts_tasks_object_and_defaults(client: Client, local_backend: Backend) -> None:
    response = post_json(client, "/api/runs", {"backend": "local", "workflow": {"tasks": CHAIN}})
    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert run.workflow_name == "api"
    assert run.max_concurrent == 10
    assert run.tasks.count() == 4


BAD_CREATES: list[tuple[str, Any, str]] = [
    ("unknown backend", {"backend": "nope", "workflow": CHAIN}, "unknown backend 'nope'"),
    ("disabled backend", {"backend": "off", "workflow": CHAIN}, "backend 'off' is disabled"),
    ("missing backend", {"workflow": CHAIN}, "body.backend: field required"),
    ("missing workflow", {"backend": "local"}, "body.workflow: field required"),
    ("workflow not a list", {"backend": "local", "workflow": "echo hi"}, "body.workflow: must be an array"),
    ("empty workflow", {"backend": "local", "workflow": []}, "workflow has no tasks"),
    ("object without tasks", {"backend": "local", "workflow": {"steps": []}}, 'has no "tasks" list'),
    (
        "missing command",
        {"backend": "local", "workflow": [{"id": "a", "name": "A"}]},
        "tasks[0] (a).command: field required",
    ),
    (
        "unknown dependency",
        {"backend": "local", "workflow": [{"id": "a", "name": "A", "command": "true", "deps": ["ghost"]}]},
        "dependency 'ghost' matches no task",
    ),
    (
        "cycle",
        {
            "backend": "local",
            "workflow": [
                {"id": "a", "name": "A", "command": "true", "deps": ["b"]},
                {"id": "b", "name": "B", "command": "true", "deps": ["a"]},
            ],
        },
        "dependency cycle: a -> b -> a",
    ),
    (
        "duplicate id",
        {
            "backend": "local",
            "workflow": [{"id": "a", "name": "A", "command": "true"}, {"id": "a", "name": "A2", "command": "true"}],
        },
        "duplicate task id 'a'",
    ),
    ("max_concurrent zero", {"backend": "local", "workflow": CHAIN, "max_concurrent": 0}, "body.max_concurrent"),
    ("max_concurrent negative", {"backend": "local", "workflow": CHAIN, "max_concurrent": -3}, "max_concurrent"),
    ("max_concurrent text", {"backend": "local", "workflow": CHAIN, "max_concurrent": "many"}, "max_concurrent"),
    ("max_concurrent float", {"backend": "local", "workflow": CHAIN, "max_concurrent": 1.5}, "max_concurrent"),
    ("max_concurrent bool", {"backend": "local", "workflow": CHAIN, "max_concurrent": True}, "max_concurrent"),
    ("max_concurrent huge", {"backend": "local", "workflow": CHAIN, "max_concurrent": 2**40}, "max_concurrent"),
    ("misspelt field", {"backend": "local", "workflow": CHAIN, "max_concurent": 2}, "body.max_concurent"),
    ("name too long", {"backend": "local", "workflow": CHAIN, "name": "x" * 201}, "body.name"),
    ("body not an object", [CHAIN], "body"),
]


# Refused by the workflow checks (not by the request's shape): the body lists them in "problems" too.
WORKFLOW_PROBLEMS = {
    "disabled backend",
    "empty workflow",
    "object without tasks",
    "missing command",
    "unknown dependency",
    "cycle",
    "duplicate id",
}


@pytest.mark.parametrize(("case", "body", "fragment"), BAD_CREATES, ids=[c[0] for c in BAD_CREATES])
def test_bad_create_is_400_and_creates_nothing(
    client: Client, local_backend: Backend, case: str, body: Any, fragment: str
) -> None:
    Backend.objects.create(name="off", kind=Backend.Kind.LOCAL, enabled=False)
    response = post_json(client, "/api/runs", body)
    assert response.status_code == 400, response.content
    assert response.json().keys() == ({"error", "problems"} if case in WORKFLOW_PROBLEMS else {"error"})
    assert fragment in response.json()["error"]
    assert Run.objects.count() == 0
    assert Task.objects.count() == 0


@pytest.mark.parametrize("raw", ["{not json", "", '{"backend": "local",}'])
def test_malformed_json_is_400(client: Client, local_backend: Backend, raw: str) -> None:
    response = client.post("/api/runs", data=raw, content_type="application/json")
    assert response.status_code == 400, response.content
    message = response.json()["error"]
    assert ("malformed JSON body" in message) if raw else ("body" in message)
    assert Run.objects.count() == 0


# -- list and detail -------------------------------------------------------------------


def test_list_shows_own_runs_newest_first(
    client: Client, user: User, bob: User, staff: User, local_backend: Backend
) -> None:
    older = make_run(user, local_backend, "older")
    newer = make_run(user, local_backend, "newer")
    Run.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(hours=1))
    theirs = make_run(bob, local_backend, "bobs")

    body = client.get("/api/runs").json()
    assert body["count"] == 2
    assert [r["id"] for r in body["items"]] == [newer.pk, older.pk]
    item = body["items"][0]
    assert item.keys() == {
        "id",
        "workflow_name",
        "status",
        "backend",
        "owner",
        "max_concurrent",
        "created_at",
        "started_at",
        "finished_at",
        "counts",
        "cost",
    }
    assert (item["workflow_name"], item["backend"], item["owner"], item["status"]) == (
        "newer",
        "local",
        "alice",
        "pending",
    )
    assert item["counts"]["pending"] == 4
    assert item["counts"]["completed"] == 0

    everyone = token_client(staff).get("/api/runs").json()
    assert {r["id"] for r in everyone["items"]} == {older.pk, newer.pk, theirs.pk}


def test_list_filter_and_pagination(client: Client, user: User, local_backend: Backend) -> None:
    runs = [make_run(user, local_backend, f"r{i}") for i in range(5)]
    Run.objects.filter(pk=runs[0].pk).update(status=Run.Status.FAILED)

    failed = client.get("/api/runs", {"status": "failed"}).json()
    assert [r["id"] for r in failed["items"]] == [runs[0].pk]

    all_ids = [r["id"] for r in client.get("/api/runs").json()["items"]]
    page = client.get("/api/runs", {"limit": 2, "offset": 1}).json()
    assert page["count"] == 5
    assert [r["id"] for r in page["items"]] == all_ids[1:3]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [({"status": "bogus"}, "query.status"), ({"limit": 0}, "query.limit"), ({"offset": -1}, "query.offset")],
)
def test_list_bad_query_is_400(client: Client, query: dict[str, Any], fragment: str) -> None:
    response = client.get("/api/runs", query)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_detail_shape(client: Client, user: User, local_backend: Backend) -> None:
    run = make_run(user, local_backend)
    response = client.get(f"/api/runs/{run.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body.keys() == {
        "id",
        "status",
        "backend",
        "workflow_name",
        "owner",
        "error",
        "warnings",
        "created_at",
        "started_at",
        "finished_at",
        "task_count",
        "counts",
        "next",
        "tasks",
        "cost",  # null: no pricing configured
    }
    assert body["cost"] is None
    assert (body["id"], body["backend"], body["owner"], body["warnings"]) == (run.pk, "local", "alice", [])
    assert (body["task_count"], body["next"]) == (4, None)
    assert [t["id"] for t in body["tasks"]] == ["setup", "sim.1", "sim.2", "final"]
    final = body["tasks"][3]
    assert final.keys() == {
        "id",
        "name",
        "state",
        "job_id",
        "exit_code",
        "reason",
        "warning",
        "submitted_at",
        "started_at",
        "finished_at",
        "elapsed_seconds",
        "deps",
        "cost",
        "waste_cost",
    }
    assert (final["name"], final["state"], final["deps"], final["exit_code"]) == ("Final", "pending", ["sim.*"], None)


def test_other_users_run_is_404_but_staff_see_it(
    client: Client, bob: User, staff: User, local_backend: Backend
) -> None:
    theirs = make_run(bob, local_backend)
    for method, url in [
        ("get", f"/api/runs/{theirs.pk}"),
        ("post", f"/api/runs/{theirs.pk}/cancel"),
        ("post", f"/api/runs/{theirs.pk}/relaunch"),
        ("get", "/api/runs/nosuchrun"),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 404, url
        assert "not found" in response.json()["error"]
    theirs.refresh_from_db()
    assert theirs.status == Run.Status.PENDING  # the 404 cancel did nothing
    assert token_client(staff).get(f"/api/runs/{theirs.pk}").json()["owner"] == "bob"


# -- actions ---------------------------------------------------------------------------


def test_cancel_then_409(client: Client, user: User, local_backend: Backend) -> None:
    run = make_run(user, local_backend)
    response = client.post(f"/api/runs/{run.pk}/cancel")
    assert response.status_code == 200, response.content
    assert response.json() == {"id": run.pk, "status": "cancelled"}
    assert set(run.tasks.values_list("state", flat=True)) == {"cancelled"}

    again = client.post(f"/api/runs/{run.pk}/cancel")
    assert again.status_code == 409
    assert "already finished" in again.json()["error"]


def test_relaunch_of_unfinished_run_is_409(client: Client, user: User, local_backend: Backend) -> None:
    run = make_run(user, local_backend)
    response = client.post(f"/api/runs/{run.pk}/relaunch")
    assert response.status_code == 409
    assert "still pending" in response.json()["error"]


@pytest.mark.django_db(transaction=True)
def test_relaunch_failed_run(user: User, local_backend: Backend, run_to_end: Callable[..., Run]) -> None:
    client = token_client(user)
    workflow = [
        {"id": "ok", "name": "OK", "command": "true"},
        {"id": "bad", "name": "Bad", "command": "exit 3", "deps": ["ok"]},
        {"id": "after", "name": "After", "command": "true", "deps": ["bad"]},
    ]
    created = post_json(client, "/api/runs", {"backend": "local", "workflow": workflow})
    assert created.status_code == 201, created.content
    run = run_to_end(Run.objects.get(pk=created.json()["id"]))
    assert run.status == Run.Status.FAILED

    tasks = {t["id"]: t for t in client.get(f"/api/runs/{run.pk}").json()["tasks"]}
    assert (tasks["ok"]["state"], tasks["bad"]["state"], tasks["after"]["state"]) == (
        "completed",
        "failed",
        "dep_failed",
    )
    assert tasks["bad"]["exit_code"] == 3

    response = client.post(f"/api/runs/{run.pk}/relaunch")
    assert response.status_code == 200, response.content
    assert response.json() == {"id": run.pk, "status": "running", "requeued": 2}
    states = dict(run.tasks.values_list("task_id", "state"))
    assert states == {"ok": "completed", "bad": "pending", "after": "pending"}


# -- sources, backends, health ---------------------------------------------------------


def test_sources_and_backends(client: Client, user: User, local_backend: Backend) -> None:
    Source.objects.create(
        name="ml-jobs",
        kind=Source.Kind.GIT,
        backend=local_backend,
        url="git@example.com:o/r.git",
        synced_at=timezone.now(),
        synced_sha="abc123",
        workflow_files=[".hut/workflows/a.json"],
    )
    sources = client.get("/api/sources").json()
    assert sources == [
        {
            "name": "ml-jobs",
            "type": "git",
            "backend": "local",
            "workflows_glob": ".hut/workflows/*.json",
            "synced_at": sources[0]["synced_at"],
            "synced_sha": "abc123",
            "sync_error": "",
            "workflow_files": [".hut/workflows/a.json"],
        }
    ]
    run = make_run(user, local_backend)
    run.tasks.filter(task_id="setup").update(state=Task.State.RUNNING)
    (backend,) = client.get("/api/backends").json()
    assert backend == {
        "name": "local",
        "type": "local",
        "status": "unknown",
        "status_message": "",
        "last_polled_at": None,
        "max_concurrent": 4,
        "active": 1,
        "enabled": True,
    }


def test_health_tells_anonymous_callers_ok_only(local_backend: Backend) -> None:
    Backend.objects.create(name="off", kind=Backend.Kind.LOCAL, enabled=False)
    Backend.objects.filter(pk=local_backend.pk).update(status=Backend.Status.OK)
    response = Client().get("/health")  # anonymous: no login, no token
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}  # no backend names, no states


def test_health_details_are_for_staff_and_token_holders(local_backend: Backend, user: User, staff: User) -> None:
    Backend.objects.create(name="off", kind=Backend.Kind.LOCAL, enabled=False)
    Backend.objects.filter(pk=local_backend.pk).update(status=Backend.Status.OK)
    everything = {"status": "ok", "database": "ok", "backends": {"local": "ok", "off": "disabled"}}
    assert token_client(staff).get("/health").json() == everything
    signed_in = Client()
    signed_in.force_login(staff)
    assert signed_in.get("/health").json() == everything
    # A user's token: the backends they may use (alice is in the group the local backend is shared with).
    assert token_client(user).get("/health").json() == everything | {"backends": {"local": "ok"}}
    refused = Client(headers={"Authorization": "Token not-a-token"}).get("/health")
    assert refused.status_code == 401 and "backends" not in refused.json()


def test_health_without_database(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    class DownDatabase:
        def cursor(self) -> None:
            raise OperationalError("connection refused")

    monkeypatch.setattr("runs.web.health.connection", DownDatabase())
    response = Client().get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "error"}


# -- OpenAPI ---------------------------------------------------------------------------

# Every operation and the response codes it documents. A new endpoint must be added
# here, so that its documentation is checked too.
DOCUMENTED = {
    ("/api/runs", "post"): {"201", "400", "401", "403", "413"},
    ("/api/runs", "get"): {"200", "400", "401"},
    ("/api/runs/{run_id}", "get"): {"200", "400", "401", "404"},
    ("/api/runs/{run_id}/cancel", "post"): {"200", "401", "403", "404", "409"},
    ("/api/runs/{run_id}/relaunch", "post"): {"200", "401", "403", "404", "409"},
    ("/api/sources", "get"): {"200", "401"},
    ("/api/backends", "get"): {"200", "401"},
}
# The operations of issue 20 (tests/test_api_parity.py answers them for real).
PARITY_DOCUMENTED = {
    ("/api/me", "get"): {"200", "401"},
    ("/api/usage", "get"): {"200", "400", "401"},
    ("/api/sources/{name}/sync", "post"): {"200", "401", "403", "404", "502"},
    ("/api/sources/{name}/workflows", "get"): {"200", "401", "403", "404"},
    ("/api/sources/{name}/dry-run", "post"): {"200", "400", "401", "403", "404"},
    ("/api/sources/{name}/runs", "post"): {"201", "400", "401", "403", "404"},
    ("/api/workflows", "get"): {"200", "401"},
    ("/api/workflows/{name}/dry-run", "post"): {"200", "400", "401", "403", "404"},
    ("/api/workflows/{name}/runs", "post"): {"201", "400", "401", "403", "404"},
    ("/api/runs/{run_id}/tasks/{task_id}/script", "get"): {"200", "401", "404"},
    ("/api/runs/{run_id}/tasks/{task_id}/logs/{stream}/follow", "get"): {"200", "400", "401", "404"},
    ("/api/runs/{run_id}/tasks/{task_id}/logs/{stream}", "get"): {"200", "400", "401", "404", "409", "502"},
    ("/api/runs/{run_id}/tasks/{task_id}/cancel", "post"): {"200", "401", "403", "404", "409"},
    ("/api/runs/{run_id}/tasks/{task_id}", "get"): {"200", "401", "404"},
    ("/api/runs/dry-run", "post"): {"200", "400", "401", "403", "413"},
    ("/api/schedules", "get"): {"200", "401"},
    ("/api/schedules", "post"): {"201", "400", "401", "403"},
    ("/api/schedules/{name}", "patch"): {"200", "400", "401", "403", "404"},
    ("/api/schedules/{name}", "delete"): {"204", "401", "403", "404"},
}


def registered_operations() -> set[tuple[str, str]]:
    found = set()
    for prefix, router in api._routers:
        for path, path_view in router.path_operations.items():
            for operation in path_view.operations:
                for method in operation.methods:
                    found.add(("/api" + prefix + re.sub(r"{\w+:", "{", path), method.lower()))
    return found


def check_against_schema(spec: dict[str, Any], path: str, method: str, response: Any) -> None:
    documented = spec["paths"][path][method]["responses"]
    code = str(response.status_code)
    assert code in documented, f"{method.upper()} {path} answered {code}, documented {sorted(documented)}"
    schema = documented[code]["content"]["application/json"]["schema"]
    # Refs are "#/components/...": resolve them against the document's components.
    validator = OAS31Validator({**schema, "components": spec["components"]}, format_checker=oas31_format_checker)
    validator.validate(response.json())


def test_openapi_schema_matches_api(client: Client, user: User, local_backend: Backend) -> None:
    response = Client().get("/api/openapi.json")  # anonymous, no login redirect
    assert response.status_code == 200
    spec = response.json()
    validate_spec(spec)

    assert registered_operations() == set(DOCUMENTED) | set(PARITY_DOCUMENTED)
    assert spec["components"]["securitySchemes"]["TokenAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": 'Send "Authorization: Token <key>"; only a SHA-256 of the key is stored.',
    }
    for (path, method), codes in (DOCUMENTED | PARITY_DOCUMENTED).items():
        operation = spec["paths"][path][method]
        assert set(operation["responses"]) == codes, (path, method)
        assert operation["security"] == [{"TokenAuth": []}]

    Source.objects.create(name="src", kind=Source.Kind.PATH, backend=local_backend, path="/data")
    failed = make_run(user, local_backend)
    Run.objects.filter(pk=failed.pk).update(status=Run.Status.FAILED, finished_at=timezone.now())
    failed.tasks.update(state=Task.State.FAILED, exit_code=1, finished_at=timezone.now())
    anonymous = Client()

    real = [
        ("/api/runs", "post", post_json(client, "/api/runs", {"backend": "local", "workflow": CHAIN})),
        ("/api/runs", "post", post_json(client, "/api/runs", {"backend": "nope", "workflow": CHAIN})),
        ("/api/runs", "get", client.get("/api/runs")),
        ("/api/runs", "get", client.get("/api/runs", {"status": "bogus"})),
        ("/api/runs/{run_id}", "get", client.get(f"/api/runs/{failed.pk}")),
        ("/api/runs/{run_id}/relaunch", "post", client.post(f"/api/runs/{failed.pk}/relaunch")),
        ("/api/runs/{run_id}/relaunch", "post", client.post(f"/api/runs/{failed.pk}/relaunch")),
        ("/api/runs/{run_id}/cancel", "post", client.post(f"/api/runs/{failed.pk}/cancel")),
        ("/api/runs/{run_id}/cancel", "post", client.post(f"/api/runs/{failed.pk}/cancel")),
        ("/api/sources", "get", client.get("/api/sources")),
        ("/api/backends", "get", client.get("/api/backends")),
    ]
    # A backend the caller may not use: a staff-only local one, then theirs once they left its group.
    Backend.objects.create(name="staff-only", kind=Backend.Kind.LOCAL)
    real.append(("/api/runs", "post", post_json(client, "/api/runs", {"backend": "staff-only", "workflow": CHAIN})))
    user.groups.clear()
    real.append(("/api/runs/{run_id}/relaunch", "post", client.post(f"/api/runs/{failed.pk}/relaunch")))
    follower = User.objects.create_user("follower")  # sees the run (shared with a group of theirs), may not change it
    follower.groups.add(lab := Group.objects.create(name="lab"))
    failed.shared_with.add(lab)
    real.append(("/api/runs/{run_id}/cancel", "post", token_client(follower).post(f"/api/runs/{failed.pk}/cancel")))
    statuses = [201, 400, 200, 400, 200, 200, 409, 200, 409, 200, 200, 403, 403, 403]
    assert [r.status_code for *_, r in real] == statuses
    # Every problem of a workflow listed; a body over the limit; a page of tasks out of range.
    user.groups.add(Group.objects.get(name=LOCAL_USERS))
    cyclic = [{"id": "a", "name": "A", "command": "true", "deps": ["a"]}, {"id": "b", "name": "B"}]
    real.append(("/api/runs", "post", post_json(client, "/api/runs", {"backend": "local", "workflow": cyclic})))
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100):
        real.append(("/api/runs", "post", post_json(client, "/api/runs", {"backend": "local", "workflow": CHAIN})))
    real.append(("/api/runs/{run_id}", "get", client.get(f"/api/runs/{failed.pk}", {"limit": 0})))
    assert [r.status_code for *_, r in real[-3:]] == [400, 413, 400]
    assert len(real[-3][2].json()["problems"]) == 2
    for path, method in DOCUMENTED:
        url = path.replace("{run_id}", "missing")
        real.append((path, method, getattr(anonymous, method)(url)))
        if "{run_id}" in path:
            real.append((path, method, getattr(client, method)(url)))

    for path, method, resp in real:
        check_against_schema(spec, path, method, resp)
    # Every documented (operation, code) pair was answered for real and matched its schema.
    answered = {(path, method, str(resp.status_code)) for path, method, resp in real}
    assert answered == {(path, method, code) for (path, method), codes in DOCUMENTED.items() for code in codes}


@pytest.mark.django_db
def test_a_path_no_api_route_matches_is_a_json_404(user: User) -> None:
    """A task id with a newline matches no route (ids are single lines): schemathesis got
    the HTML 404 page where the schema promises JSON."""
    client = token_client(user)
    for path in ("/api/runs/r1/tasks/a%0Ab/logs/output", "/api/no-such-thing"):
        response = client.get(path)
        assert response.status_code == 404 and response["Content-Type"] == "application/json"
        assert response.json()["error"].startswith("no such API path: /api/")
    assert "text/html" in Client().get("/no-such-page")["Content-Type"]


def test_the_task_schema_says_what_the_original_spelt_is_accepted() -> None:
    """`null` for an optional field, `"4"` and `4.0` for a count, a bare number of MB: all
    accepted (issue 21), so the schema must allow them (schemathesis: schema-violating
    request accepted)."""
    task = api.get_openapi_schema()["components"]["schemas"]["RunCreateIn"]["properties"]["workflow"]
    item = task["oneOf"][0]["items"]
    validator = OAS31Validator(item, format_checker=oas31_format_checker)
    accepted = {"id": "a", "name": "a", "command": "true", "retries": None, "cpus": "4", "memory": 512}
    assert not list(validator.iter_errors(accepted | {"cpus": 4.0}))
    assert not list(validator.iter_errors(accepted))
    assert list(validator.iter_errors(accepted | {"cpus": "four"}))
