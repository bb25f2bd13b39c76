"""Every action a page offers is an API operation (issue 20): sources, configured workflows,
dry runs, one task (ids with dots and slashes), its script and logs, cancelling it, usage and
who the caller is; through the same access rules and errors as the pages."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from backends.models import Backend
from runs.actions import create_run
from runs.api.routes import api
from runs.models import ApiToken, AuditEvent, Run, Task, Workflow
from sources.models import Source

TASKS = [
    {"id": "py.pricing.0", "name": "Pricing", "command": "echo priced; echo oops >&2"},
    {"id": "a/b.c", "name": "Slashed", "command": "printf 'one\\ntwo\\nthree\\n'", "deps": ["py.pricing.0"]},
]


def token_client(user: User) -> Client:
    return Client(headers={"Authorization": f"Token {ApiToken.issue(user)}"})


def post_json(client: Client, url: str, body: Any = None, **headers: str) -> Any:
    data = json.dumps(body if body is not None else {})
    return client.post(url, data=data, content_type="application/json", headers=headers)


@pytest.fixture
def client(user: User) -> Client:
    return token_client(user)


@pytest.fixture
def source(local_backend: Backend, tmp_path: Path) -> Source:
    flows = tmp_path / "repo" / "python_simulation"
    flows.mkdir(parents=True)
    (flows / "sflow.json").write_text(json.dumps(TASKS))
    (flows / "broken.json").write_text(json.dumps([{"id": "x", "name": "X", "command": "true", "deps": ["x"]}]))
    return Source.objects.create(
        name="sims", kind=Source.Kind.PATH, backend=local_backend, path=str(tmp_path / "repo"), workflows_glob="*/*"
    )


def test_every_operation_id_reads_as_a_verb() -> None:
    schema = api.get_openapi_schema()
    ids = {op["operationId"] for ops in schema["paths"].values() for op in ops.values()}
    assert ids == {
        "start_run", "dry_run", "list_runs", "get_run", "cancel_run", "relaunch_run",
        "get_task", "get_task_script", "get_task_log", "follow_task_log", "cancel_task",
        "list_sources", "sync_source", "list_source_workflows", "dry_run_source_file", "start_source_run",
        "list_workflows", "dry_run_workflow", "start_workflow_run",
        "list_backends", "get_usage", "get_me",
        "list_schedules", "create_schedule", "change_schedule", "delete_schedule",
    }  # fmt: skip
    task = schema["paths"]["/api/runs/{run_id}/tasks/{task_id}"]["get"]["parameters"]
    assert "slashes" in next(p for p in task if p["name"] == "task_id")["description"]  # the schema says so


def test_a_source_synced_dry_run_and_run_by_api(client: Client, source: Source, user: User) -> None:
    synced = client.post("/api/sources/sims/sync")
    assert synced.status_code == 200, synced.content
    assert sorted(synced.json()["workflow_files"]) == ["python_simulation/broken.json", "python_simulation/sflow.json"]
    assert client.get("/api/sources/sims/workflows").json()["workflow_files"] == synced.json()["workflow_files"]

    dry = post_json(client, "/api/sources/sims/dry-run", {"file": "python_simulation/sflow.json"})
    assert dry.status_code == 200, dry.content
    assert [t["id"] for t in dry.json()["tasks"]] == ["py.pricing.0", "a/b.c"] and Run.objects.count() == 0
    broken = post_json(client, "/api/sources/sims/dry-run", {"file": "python_simulation/broken.json"})
    assert broken.status_code == 400 and "dependency cycle" in broken.json()["error"]
    assert post_json(client, "/api/sources/sims/dry-run", {"file": "nope.json"}).status_code == 404
    both_wrong = post_json(client, "/api/sources/sims/runs", {"max_concurrent": 0, "extra": 1})
    assert both_wrong.status_code == 400
    for field in ("body.file", "body.max_concurrent", "body.extra"):  # every problem named
        assert field in both_wrong.json()["error"]

    started = post_json(client, "/api/sources/sims/runs", {"file": "python_simulation/sflow.json", "max_concurrent": 3})
    assert started.status_code == 201, started.content
    run = Run.objects.get(pk=started.json()["id"])
    assert (run.owner, run.workflow_name, run.max_concurrent) == (user, "sims/python_simulation/sflow.json", 3)
    assert Run.objects.count() == 1


def test_a_source_refused_with_the_reason(source: Source, bob: User) -> None:
    source.allowed_groups.add(Group.objects.create(name="physics"))
    refused = token_client(bob).post("/api/sources/sims/sync")
    assert refused.status_code == 403
    assert refused.json()["error"] == "source 'sims' is shared with the groups physics only"
    assert token_client(bob).get("/api/sources/nope/workflows").status_code == 404


def test_configured_workflows_by_api(client: Client, local_backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "flow.json").write_text(json.dumps(TASKS))
    Workflow.objects.create(name="nightly.v2", backend=local_backend, command=f"cat {tmp_path / 'flow.json'}")
    Workflow.objects.create(name="bad", backend=local_backend, command="exit 3")
    assert [w["name"] for w in client.get("/api/workflows").json()] == ["bad", "nightly.v2"]

    dry = client.post("/api/workflows/nightly.v2/dry-run")
    assert dry.status_code == 200 and dry.json()["count"] == 2 and Run.objects.count() == 0
    failing = client.post("/api/workflows/bad/dry-run")
    assert failing.status_code == 400 and "command exited with 3" in failing.json()["error"]
    assert client.post("/api/workflows/ghost/dry-run").status_code == 404

    started = post_json(client, "/api/workflows/nightly.v2/runs", {"notify": {"on": "never"}})
    assert started.status_code == 201, started.content
    assert Run.objects.get().workflow_name == "nightly.v2"


def test_dry_run_of_a_document_stores_nothing(client: Client, local_backend: Backend) -> None:
    dry = post_json(client, "/api/runs/dry-run", {"backend": "local", "workflow": TASKS})
    assert dry.status_code == 200, dry.content
    assert dry.json()["count"] == 2 and dry.json()["tasks"][1]["resolved_deps"] == ["py.pricing.0"]
    bad = [{"id": "a", "name": "A", "command": "true", "deps": ["ghost"]}, {"id": "b", "name": "B"}]
    problems = post_json(client, "/api/runs/dry-run", {"backend": "local", "workflow": bad})
    assert problems.status_code == 400 and len(problems.json()["problems"]) == 2
    Backend.objects.create(name="staff-only", kind=Backend.Kind.LOCAL)
    refused = post_json(client, "/api/runs/dry-run", {"backend": "staff-only", "workflow": TASKS})
    assert refused.status_code == 403 and "only staff may use it" in refused.json()["error"]
    assert Run.objects.count() == 0 and Task.objects.count() == 0


def test_one_task_its_script_and_logs(
    client: Client, user: User, local_backend: Backend, run_to_end: Callable[..., Run]
) -> None:
    run = run_to_end(create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="t"))
    base = f"/api/runs/{run.pk}/tasks"
    task = client.get(f"{base}/a/b.c")
    assert task.status_code == 200, task.content
    body = task.json()
    assert (body["id"], body["state"], body["attempt"]) == ("a/b.c", "completed", 1)
    assert body["resolved_deps"] == ["py.pricing.0"]
    assert body["resources"]["cpus"] == 1
    script = client.get(f"{base}/py.pricing.0/script")
    assert script.status_code == 200 and "echo priced" in script.json()["script"]
    assert script.json()["task_id"] == "py.pricing.0" and script.json()["output_path"]
    assert client.get(f"{base}/py.pricing.0/logs/output").content.decode() == "priced\n"
    assert client.get(f"{base}/py.pricing.0/logs/error").content.decode() == "oops\n"
    assert client.get(f"{base}/a/b.c/logs/output", {"tail": 2}).content.decode() == "two\nthree\n"
    bad = client.get(f"{base}/a/b.c/logs/output", {"tail": 0})
    assert bad.status_code == 400 and "tail" in bad.json()["error"]
    assert client.get(f"{base}/ghost.1/logs/output").status_code == 404
    pending = create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="p")
    none_yet = client.get(f"/api/runs/{pending.pk}/tasks/py.pricing.0/logs/output")
    assert none_yet.status_code == 409 and none_yet.json()["error"] == (
        "This task has not been submitted yet, so it has no log."
    )
    assert client.get(f"{base}/a/b.c/logs/other").status_code == 400


def test_cancel_one_task(client: Client, user: User, bob: User, local_backend: Backend) -> None:
    run = create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="t")
    shared = Group.objects.create(name="lab")
    bob.groups.add(shared)
    run.shared_with.add(shared)
    refused = token_client(bob).post(f"/api/runs/{run.pk}/tasks/py.pricing.0/cancel")
    assert refused.status_code == 403 and "only its owner or staff may change it" in refused.json()["error"]

    cancelled = client.post(f"/api/runs/{run.pk}/tasks/py.pricing.0/cancel")
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json() == {"run_id": run.pk, "task_id": "py.pricing.0", "state": "cancelled"}
    states = dict(run.tasks.values_list("task_id", "state"))
    assert states == {"py.pricing.0": "cancelled", "a/b.c": "dep_failed"}
    again = client.post(f"/api/runs/{run.pk}/tasks/py.pricing.0/cancel")
    assert again.status_code == 409 and "has already ended" in again.json()["error"]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.TASK_CANCELLED).count() == 1
    run.refresh_from_db()
    assert run.status == "failed"


def test_usage_and_me(client: Client, user: User, staff: User, local_backend: Backend) -> None:
    me = client.get("/api/me").json()
    assert me["username"] == user.username and me["backends"] == ["local"] and me["is_staff"] is False
    assert me["token_scope"] == "write"
    usage = client.get("/api/usage", {"months": 2})
    assert usage.status_code == 200 and usage.json()["everyone"] is False and usage.json()["months"] == 2
    assert token_client(staff).get("/api/usage").json()["everyone"] is True
    assert client.get("/api/usage", {"months": 0}).status_code == 400


def test_an_idempotency_key_gives_the_first_run(client: Client, bob: User, local_backend: Backend) -> None:
    body = {"backend": "local", "workflow": TASKS}
    first = post_json(client, "/api/runs", body, **{"Idempotency-Key": "k-1"})
    second = post_json(client, "/api/runs", body, **{"Idempotency-Key": "k-1"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json() | {"replayed": True}
    assert Run.objects.count() == 1
    assert post_json(client, "/api/runs", body, **{"Idempotency-Key": "k-2"}).json()["id"] != first.json()["id"]
    # Another user's key is theirs: the same string starts their own run.
    assert Run.objects.count() == 2


def test_cancel_one_running_task_stops_its_job(
    client: Client, user: User, local_backend: Backend, run_to_end: Callable[..., Run], tmp_path: Path
) -> None:
    from runs.engine.tick import tick_due_backends

    started = tmp_path / "started"
    tasks = [
        {"id": "long.1", "name": "Long", "command": f"touch {started}; sleep 60"},
        {"id": "after", "name": "After", "command": "true", "deps": ["long.1"]},
        {"id": "other", "name": "Other", "command": "true"},
    ]
    run = create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="t")
    deadline = time.monotonic() + 30
    while not (started.exists() and run.tasks.get(task_id="long.1").state == "running"):
        assert time.monotonic() < deadline, "the task never ran"
        tick_due_backends(force=True)
    answer = client.post(f"/api/runs/{run.pk}/tasks/long.1/cancel")
    assert answer.status_code == 200 and answer.json()["state"] == "running"  # its job goes on the next tick
    run = run_to_end(run, timeout=30)  # well before the job's 60 s
    states = dict(run.tasks.values_list("task_id", "state"))
    assert states == {"long.1": "cancelled", "after": "dep_failed", "other": "completed"}
    assert run.status == "failed"


def test_an_idempotency_key_is_kept_24_hours(client: Client, local_backend: Backend) -> None:
    body = {"backend": "local", "workflow": TASKS}
    first = post_json(client, "/api/runs", body, **{"Idempotency-Key": "nightly-2026-12-05"}).json()
    with time_machine.travel(timezone.now() + timedelta(hours=23, minutes=59)):
        assert post_json(client, "/api/runs", body, **{"Idempotency-Key": "nightly-2026-12-05"}).json()["replayed"]
    with time_machine.travel(timezone.now() + timedelta(hours=24, minutes=1)):
        later = post_json(client, "/api/runs", body, **{"Idempotency-Key": "nightly-2026-12-05"}).json()
    assert later["replayed"] is False and later["id"] != first["id"] and Run.objects.count() == 2
    bad = post_json(client, "/api/runs", body, **{"Idempotency-Key": "x" * 256})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"] and Run.objects.count() == 2
