"""The OpenAPI schema is good enough for a common generator: a client generated from it by
``openapi-python-client`` starts a run, waits for it and reads its logs, over real HTTP. And a
task's log is followed as Server-Sent Events while it runs, under a real ASGI server."""

from __future__ import annotations

import http.client
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from django.contrib.auth.models import User

from backends.models import Backend
from runs.actions import create_run
from runs.api.routes import api
from runs.engine.tick import tick_due_backends
from runs.models import ApiToken, Run
from tests.threads import db_thread

GENERATOR = str(Path(sys.executable).with_name("openapi-python-client"))
TASKS = [
    {"id": "py.pricing.0", "name": "Pricing", "command": "echo priced"},
    {"id": "a/b.c", "name": "Slashed", "command": "printf 'one\\ntwo\\n'", "deps": ["py.pricing.0"]},
]


def _generate(tmp_path: Path) -> Any:
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(api.get_openapi_schema()))
    out = tmp_path / "scripthut_generated"
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    command = [GENERATOR, "generate", "--path", str(schema), "--output-path", str(out), "--meta", "none"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sys.path.insert(0, str(tmp_path))
    return importlib.import_module("scripthut_generated")


@pytest.mark.django_db(transaction=True)
def test_a_generated_client_starts_a_run_waits_and_reads_a_log(
    live_server: Any, user: User, local_backend: Backend, tmp_path: Path
) -> None:
    generated = _generate(tmp_path)
    try:
        start_run, get_run, get_task_log, get_task = (
            importlib.import_module(f"scripthut_generated.api.{name}")
            for name in ("runs.start_run", "runs.get_run", "tasks.get_task_log", "tasks.get_task")
        )
        models = importlib.import_module("scripthut_generated.models")
        client = generated.AuthenticatedClient(base_url=live_server.url, token=ApiToken.issue(user), prefix="Token")
        body = models.RunCreateIn.from_dict({"backend": "local", "workflow": TASKS, "name": "generated"})
        created = start_run.sync(client=client, body=body)
        assert isinstance(created, models.RunCreatedOut), created
        deadline = time.monotonic() + 60
        while (run := get_run.sync(client=client, run_id=created.id)).status not in ("completed", "failed"):
            assert time.monotonic() < deadline, run
            tick_due_backends(force=True)  # nothing ticks in a test's live server
            time.sleep(0.2)
        assert run.status == "completed"
        stream = models.GetTaskLogStream.OUTPUT
        assert get_task_log.sync(client=client, run_id=run.id, task_id="py.pricing.0", stream=stream) == "priced\n"
        tail = get_task_log.sync(client=client, run_id=run.id, task_id="a/b.c", stream=stream, tail=1)
        assert tail == "two\n"
        task = get_task.sync(client=client, run_id=run.id, task_id="a/b.c")
        assert (task.id, task.state, task.resolved_deps) == ("a/b.c", "completed", ["py.pricing.0"])
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("scripthut_generated")]:
            del sys.modules[name]


def _events(response: http.client.HTTPResponse) -> Iterator[tuple[str, dict[str, Any]]]:
    event = ""
    while line := response.readline().decode():
        if line.startswith("event: "):
            event = line.removeprefix("event: ").strip()
        elif line.startswith("data: "):
            yield event, json.loads(line.removeprefix("data: "))


def _tick_until_finished(run: Run, stop: threading.Event) -> None:
    while not stop.is_set():
        tick_due_backends(force=True)
        run.refresh_from_db()
        if run.is_finished:
            return
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_a_running_tasks_log_is_followed_over_sse(user: User, local_backend: Backend, tmp_path: Path) -> None:
    from tests.asgi_server import asgi_server

    go = tmp_path / "go"
    # Writes a line, waits for the test to have seen it, writes another: the stream follows a running task.
    command = f"echo first; while [ ! -e {go} ]; do sleep 0.1; done; echo second"
    run = create_run(owner=user, backend=local_backend, payload=[{"id": "w.1", "name": "W", "command": command}],
                     workflow_name="follow")  # fmt: skip
    stop = threading.Event()
    with asgi_server() as base:
        ticker = db_thread(_tick_until_finished, run, stop)
        try:
            parts = urlsplit(base)
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
            path = f"/api/runs/{run.pk}/tasks/{quote('w.1')}/logs/output"
            headers = {"Authorization": f"Token {ApiToken.issue(user)}", "Accept": "text/event-stream"}
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
            text = ""
            for event, data in _events(response):
                if event == "log":
                    text += data["text"]
                    if text == "first\n":
                        go.touch()  # the task is still running: it waits for this
                elif event == "end":
                    assert data == {"state": "completed"}
                    break
            assert text == "first\nsecond\n"
            connection.close()
        finally:
            stop.set()
            ticker.join(30)
