"""Bad input is a clear 4xx that names every problem, never a 500 (one test per finding)."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import reverse
from django.utils.html import escape

from backends.models import Backend
from runs.actions import create_run
from runs.models import Run, Task, Workflow
from runs.web.page_input import DRY_RUN_ROWS
from runs.workflows.parse import WorkflowError, validate
from scripthut_site import cli
from sources.models import Source
from tests.test_api import post_json, token_client
from tests.test_cli import free_port
from tests.test_pages import share_demo
from tests.workloads import simulations

OK = {"id": "ok", "name": "OK", "command": "true"}


def task(task_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "name": task_id.upper(), "command": "true", **extra}


def path_source(path: Path, backend: Backend) -> Source:
    """A source of the workflow file ``w.json`` in ``path``."""
    return Source.objects.create(name="files", kind="path", path=str(path), backend=backend, workflow_files=["w.json"])


@pytest.fixture
def api(user: User, local_backend: Backend) -> Client:
    return token_client(user)


@pytest.fixture
def logged_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


# -- a body over the upload limit ----------------------------------------------------------


def test_body_over_the_limit_is_413_naming_the_limit(api: Client, logged_in: Client) -> None:
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024):
        big = {"backend": "local", "workflow": [task(f"t{i}") for i in range(100)]}
        response = post_json(api, "/api/runs", big)
        assert response.status_code == 413, response.content
        assert response.json().keys() == {"error"}
        assert "over the limit of" in response.json()["error"] and "1,024 bytes" in response.json()["error"]

        share_demo()
        page = logged_in.post(reverse("workflow_run", args=["demo"]), {"max_concurrent": "1" * 2000})
        assert page.status_code == 413 and "1,024 bytes" in page.content.decode()
    assert Run.objects.count() == 0


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_default_limit_lets_a_100k_task_workflow_through(api: Client) -> None:
    body = json.dumps({"backend": "local", "workflow": simulations(100_000)})
    assert len(body) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    # Posted for real (bench/input_bench.py times it): stored whole, every task there.
    response = api.post("/api/runs", data=body, content_type="application/json")
    assert response.status_code == 201, response.content[:500]
    assert Task.objects.filter(run_id=response.json()["id"]).count() == 100_000


# -- numbers too large for the database ------------------------------------------------------


def test_huge_numbers_are_400_naming_the_field(api: Client, logged_in: Client, local_backend: Backend) -> None:
    response = post_json(api, "/api/runs", {"backend": "local", "workflow": [task("a", cpus=1e30)]})
    assert response.status_code == 400 and "cpus" in response.json()["error"]
    assert response.json()["problems"][0] | {"message": ""} == {"task": "a", "index": 0, "field": "cpus", "message": ""}

    response = api.get("/api/runs", {"offset": "9223372036854775808"})
    assert response.status_code == 400 and "query.offset" in response.json()["error"]

    share_demo()
    path_source(Path("/nonexistent"), local_backend)  # the number is refused before the file is read
    for huge in ("1" + "0" * 30, "1e30", "2147483648"):
        for url in (reverse("workflow_run", args=["demo"]), reverse("source_run", args=["files", "w.json"])):
            page = logged_in.post(url, {"max_concurrent": huge})
            assert page.status_code == 400, (url, huge)
            assert "max_concurrent must be a whole number from 1 to 2,147,483,647" in page.content.decode()
    assert Run.objects.count() == 0


# -- what the database or the scheduler cannot take ----------------------------------------

UNACCEPTABLE = [
    ("long partition", task("a", partition="p" * 100_000), "partition", "at most 100 characters"),
    ("long id", task("a" * 256, name="A"), "id", "at most 255 characters"),
    ("long image", task("a", image="i" * 501), "image", "at most 500 characters"),
    ("NUL in command", task("a", command="echo \x00"), "command", "NUL"),
    ("NUL in env value", task("a", env_vars={"X": "a\x00b"}), "env_vars", "NUL"),
    ("NUL in a dependency", [task("a"), task("b", deps=["a\x00"])], "deps.0", "control"),
    ("minutes over 59", task("a", time_limit="1:99:99"), "time_limit", "minutes must be at most 59"),
    ("seconds over 59", task("a", time_limit="10:75"), "time_limit", "seconds must be at most 59"),
    ("memory over 1P", task("a", memory="99999999999999999999G"), "memory", "over the limit of 1P"),
    ("right-to-left override in id", task("a\u202eb", name="A"), "id", "bidirectional"),
    ("isolate in name", task("a", name="x\u2066y\u2069"), "name", "bidirectional"),
    ("left-to-right mark in id", task("a\u200e", name="A"), "id", "bidirectional"),
    ("C1 control in name", task("a", name="x\x85"), "name", "control"),
    ("retries false", task("a", retries=False), "retries", "must be a whole number, not false"),
    ("cpus true", task("a", cpus=True), "cpus", "must be a whole number, not true"),
    ("cpus 2.5", task("a", cpus=2.5), "cpus", "must be a whole number, not 2.5"),
    ("cpus four", task("a", cpus="four"), "cpus", "must be a whole number, not 'four'"),
    ("time_limit forever", task("a", time_limit="forever"), "time_limit", "invalid time limit 'forever'"),
    ("cpus over the maximum", task("a", cpus=70_000), "cpus", "less than or equal to 65535"),
]


@pytest.mark.parametrize(("case", "tasks", "field", "fragment"), UNACCEPTABLE, ids=[c[0] for c in UNACCEPTABLE])
def test_what_cannot_be_stored_or_scheduled_is_400(
    api: Client, case: str, tasks: Any, field: str, fragment: str
) -> None:
    response = post_json(
        api, "/api/runs", {"backend": "local", "workflow": tasks if isinstance(tasks, list) else [tasks]}
    )
    assert response.status_code == 400, response.content[:300]
    problems = response.json()["problems"]
    assert [p["field"] for p in problems] == [field]
    assert fragment in problems[0]["message"]
    assert Run.objects.count() == 0


def test_bad_run_name_and_backend_are_400(api: Client) -> None:
    for body, field in [
        ({"backend": "local\x00", "workflow": [OK]}, "body.backend"),
        ({"backend": "b" * 101, "workflow": [OK]}, "body.backend"),
        ({"backend": "local", "workflow": [OK], "name": "x\u202e"}, "body.name"),
    ]:
        response = post_json(api, "/api/runs", body)
        assert response.status_code == 400 and response.json()["error"].startswith(field), response.content


def test_json_nested_too_deeply_is_400(api: Client) -> None:
    response = api.post("/api/runs", data="[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert response.status_code == 400 and response.json() == {"error": "malformed JSON body: nested too deeply"}


def test_a_nul_in_the_url_is_400(api: Client, logged_in: Client) -> None:
    # PostgreSQL refuses NUL in any text it is given to compare: these were 500s there.
    for client, url in [(api, "/api/runs/a%00b"), (logged_in, "/runs/a%00b"), (logged_in, "/?user=%00")]:
        response = client.get(url)
        assert response.status_code == 400, url
        assert "NUL" in response.content.decode()
    assert api.get("/api/runs/a%00b").json().keys() == {"error"}


def test_openapi_states_the_limits() -> None:
    spec = Client().get("/api/openapi.json").json()
    body = spec["components"]["schemas"]["RunCreateIn"]["properties"]
    array, wrapped = body["workflow"]["oneOf"]
    assert array["minItems"] == 1 and wrapped["properties"]["tasks"]["minItems"] == 1
    # An optional field may also be null, a count a numeric string (the original's
    # spellings): its own schema is the first of the kinds it accepts.
    fields = {name: f["anyOf"][0] if "anyOf" in f else f for name, f in array["items"]["properties"].items()}
    assert fields["partition"]["maxLength"] == 100 and fields["image"]["maxLength"] == 500
    assert fields["cpus"] == {"type": "integer", "minimum": 1, "maximum": 65535}
    assert array["items"]["properties"]["cpus"]["default"] == 1
    assert fields["retries"]["type"] == "integer" and fields["retries"]["maximum"] == 100
    assert "\\u202e" in fields["id"]["pattern"] and fields["id"]["maxLength"] == 255
    assert fields["command"]["pattern"] == "^[^\\x00]*$"
    assert body["backend"]["maxLength"] == 100
    detail = spec["paths"]["/api/runs/{run_id}"]["get"]
    limit = next(p for p in detail["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 10_000 and limit["schema"]["default"] == 1000
    runs = next(p for p in spec["paths"]["/api/runs"]["get"]["parameters"] if p["name"] == "offset")
    assert runs["schema"]["maximum"] == 2_147_483_647


# -- every problem at once -----------------------------------------------------------------

# Four kinds of mistakes, each of which used to need its own submission.
MISTAKES = [
    {"id": "a", "name": "A"},  # missing command
    task("b"),
    task("b"),  # duplicate id
    task("c", deps=["ghost"]),  # unknown dependency
    task("d", deps=["e"]),
    task("e", deps=["d", "a"]),  # a cycle d -> e -> d (and a dep on a task with a field error: not unknown)
]
EXPECTED = [
    "tasks[0] (a).command: field required",
    "duplicate task id 'b'",
    "task 'c': dependency 'ghost' matches no task",
    "dependency cycle: d -> e -> d",
]


def test_every_problem_of_a_workflow_at_once(api: Client) -> None:
    with pytest.raises(WorkflowError) as err:
        validate(MISTAKES)
    assert err.value.problems == EXPECTED

    response = post_json(api, "/api/runs", {"backend": "local", "workflow": MISTAKES})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "; ".join(EXPECTED)
    assert [(p["task"], p["index"], p["field"]) for p in body["problems"]] == [
        ("a", 0, "command"),
        ("b", 2, "id"),
        ("c", 3, "deps"),
        ("d", 4, "deps"),
    ]


def test_every_problem_in_the_cli(user: User, local_backend: Backend, tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "mistakes.json"
    path.write_text(json.dumps(MISTAKES))
    args = Namespace(workflow=str(path), backend="local", max_concurrent=None, name=None, user="alice", wait=False)
    assert cli.run(args) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[1:] == [f"  {p}" for p in EXPECTED]


def test_every_problem_on_the_pages(logged_in: Client, local_backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "w.json").write_text(json.dumps(MISTAKES))
    Workflow.objects.create(name="mistakes", backend=local_backend, command=f"cat {tmp_path / 'w.json'}")
    Source.objects.create(
        name="files", kind="path", path=str(tmp_path), backend=local_backend, workflow_files=["w.json"]
    )
    pages = [
        logged_in.post(reverse("workflow_dry_run", args=["mistakes"])),
        logged_in.get(reverse("source_dry_run", args=["files", "w.json"])),
        logged_in.post(reverse("workflow_run", args=["mistakes"]), follow=True),
        logged_in.post(reverse("source_run", args=["files", "w.json"]), follow=True),
    ]
    for page in pages:
        text = page.content.decode()
        assert "4 problems" in text
        for problem in EXPECTED:
            assert f">{escape(problem)}</li>" in text, problem
    data = logged_in.post(reverse("workflow_dry_run", args=["mistakes"]), headers={"Accept": "application/json"})
    assert data.status_code == 400 and len(data.json()["problems"]) == 4
    assert Run.objects.count() == 0


def test_problems_are_capped_saying_how_many_more() -> None:
    with pytest.raises(WorkflowError) as err:
        validate([{"id": f"t{i}", "name": "T"} for i in range(150)])
    assert len(err.value.problems) == 101 and err.value.count == 150
    assert err.value.problems[-1] == "... and 50 more problems"


# -- scripthut serve -----------------------------------------------------------------------


def test_serve_with_a_missing_named_config_is_an_error(tmp_path: Path, capsys: Any) -> None:
    missing = tmp_path / "missing.yaml"
    assert cli.main(["serve", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml does not exist" in err
    assert os.environ.get("SCRIPTHUT_CONFIG") != str(missing)  # nothing was started with it


def serve_env(tmp_path: Path) -> dict[str, str]:
    """A fresh embedded portal's environment: this checkout's code, its own data dir, no config."""
    skip = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "SCRIPTHUT_CONFIG")
    env = {k: v for k, v in os.environ.items() if k not in skip}
    root = Path(__file__).resolve().parent.parent
    return env | {"SCRIPTHUT_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(root)}


def never_migrated(database: Path) -> bool:
    """The settings make an empty database file (mode 600); migrating fills it."""
    return not database.exists() or database.stat().st_size == 0


def cli_process(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "scripthut_site.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_serve_on_a_taken_port_says_so_and_changes_nothing(tmp_path: Path) -> None:
    """A taken port used to be reported after the database was migrated, the config imported
    and the admin created (its password printed by the start that failed, never again)."""
    env = serve_env(tmp_path)
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = cli_process(env, tmp_path, "serve", "--host", "127.0.0.1", "--port", str(port))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert proc.stdout == ""  # no admin password, no demo, no address
    assert never_migrated(tmp_path / "data" / "scripthut.sqlite3")


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_a_second_start_on_a_taken_port_leaves_the_running_portals_data_alone(tmp_path: Path) -> None:
    env = serve_env(tmp_path)
    count = "from runs.models import AuditEvent; print(AuditEvent.objects.count())"
    cli_process(env, tmp_path, "migrate")
    cli_process(env, tmp_path, "shell", "-c", "from runs.demo import ensure_demo_setup; ensure_demo_setup()")
    before = cli_process(env, tmp_path, "shell", "-c", count).stdout
    assert before.split()[-1].isdigit()
    # Setting the demo up again with nothing changed is not a change (it was audited as one).
    cli_process(env, tmp_path, "shell", "-c", "from runs.demo import ensure_demo_setup; ensure_demo_setup()")
    assert cli_process(env, tmp_path, "shell", "-c", count).stdout == before
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert cli_process(env, tmp_path, "serve", "--port", str(port)).returncode == 1
    assert cli_process(env, tmp_path, "shell", "-c", count).stdout == before
    admins = "from django.contrib.auth.models import User; print(User.objects.count())"
    assert cli_process(env, tmp_path, "shell", "-c", admins).stdout.split()[-1] == "0"


def test_serve_with_a_missing_config_in_the_environment_is_the_same_error(tmp_path: Path) -> None:
    """SCRIPTHUT_CONFIG naming no file used to start the demo silently, adding a `local`
    backend, a `demo` workflow and `admin` to whatever the database held."""
    env = serve_env(tmp_path) | {"SCRIPTHUT_CONFIG": str(tmp_path / "missing.yaml")}
    by_env = cli_process(env, tmp_path, "serve", "--port", str(free_port()))
    del env["SCRIPTHUT_CONFIG"]
    by_option = cli_process(env, tmp_path, "serve", "--config", str(tmp_path / "missing.yaml"))
    assert by_env.returncode == by_option.returncode == 2
    assert by_env.stderr == by_option.stderr
    assert by_env.stderr.startswith(f"config file {tmp_path / 'missing.yaml'} does not exist")
    assert never_migrated(tmp_path / "data" / "scripthut.sqlite3")


# -- large runs and dry runs: a page at a time ---------------------------------------------


def test_run_detail_is_paged(api: Client, user: User, local_backend: Backend) -> None:
    run = create_run(owner=user, backend=local_backend, payload=[task(f"t{i}") for i in range(5)], workflow_name="p")
    first = api.get(f"/api/runs/{run.pk}", {"limit": 2}).json()
    assert (first["task_count"], [t["id"] for t in first["tasks"]]) == (5, ["t0", "t1"])
    assert first["next"] == f"/api/runs/{run.pk}?limit=2&offset=2"
    second = api.get(first["next"]).json()
    assert [t["id"] for t in second["tasks"]] == ["t2", "t3"]
    last = api.get(second["next"]).json()
    assert ([t["id"] for t in last["tasks"]], last["next"]) == (["t4"], None)
    whole = api.get(f"/api/runs/{run.pk}").json()
    assert len(whole["tasks"]) == 5 and whole["next"] is None
    for bad in ({"limit": 10_001}, {"limit": 0}, {"offset": -1}, {"offset": 2**63}):
        response = api.get(f"/api/runs/{run.pk}", bad)
        assert response.status_code == 400 and f"query.{next(iter(bad))}" in response.json()["error"]


def test_dry_run_pages_list_the_first_rows_and_count_the_rest(
    logged_in: Client, local_backend: Backend, tmp_path: Path
) -> None:
    total = DRY_RUN_ROWS + 123
    (tmp_path / "w.json").write_text(json.dumps([task(f"t.{i}") for i in range(total)]))
    Workflow.objects.create(name="wide", backend=local_backend, command=f"cat {tmp_path / 'w.json'}")
    Source.objects.create(
        name="files", kind="path", path=str(tmp_path), backend=local_backend, workflow_files=["w.json"]
    )
    for url in (reverse("workflow_dry_run", args=["wide"]), reverse("source_dry_run", args=["files", "w.json"])):
        text = logged_in.post(url).content.decode()
        assert text.count('<td class="mono">t.') == DRY_RUN_ROWS, url
        assert f"Run {total} tasks" in text and "and 123 more tasks, not listed" in text


# -- a page's 500 reaches the log, with its traceback ----------------------------------------


def test_a_page_500_is_logged_with_its_traceback(
    logged_in: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("deliberately broken view")

    monkeypatch.setattr("runs.web.views.dashboard_context", broken)
    # Every handler the configuration gives django.request (pytest's own aside) writes here.
    written = io.StringIO()
    handlers = [h for h in _handlers("django.request") if not type(h).__module__.startswith("_pytest")]
    streams = [h.setStream(written) for h in handlers if isinstance(h, logging.StreamHandler)]
    try:
        logged_in.raise_request_exception = False
        with caplog.at_level(logging.ERROR, logger="django.request"):
            response = logged_in.get(reverse("dashboard"))
    finally:
        for handler, stream in zip([h for h in handlers if isinstance(h, logging.StreamHandler)], streams, strict=True):
            handler.setStream(stream)
    assert response.status_code == 500
    record = next(r for r in caplog.records if r.name == "django.request")
    assert record.exc_info and record.exc_info[0] is RuntimeError
    assert "Traceback (most recent call last)" in written.getvalue()
    assert "RuntimeError: deliberately broken view" in written.getvalue()


def _handlers(name: str) -> list[logging.Handler]:
    """The handlers a record of logger ``name`` reaches, through propagation."""
    found: list[logging.Handler] = []
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        found += logger.handlers
        logger = logger.parent if logger.propagate else None
    return found


# -- numbers in the query strings of pages ---------------------------------------------------


def test_no_numeric_query_parameter_of_a_page_is_a_500(staff: User, local_backend: Backend) -> None:
    # The timeline's start was a 500 with 5,000 digits (tests/test_timeline.py); the other numbers
    # pages read are page numbers (Django's get_page: anything not a page number is the first
    # or last page) and the usage page's months (a 400 naming it).
    run = create_run(owner=staff, backend=local_backend, payload=[task("sim.1"), task("sim.2")], workflow_name="w")
    client = Client()
    client.force_login(staff)
    huge = "9" * 5000
    paged = [
        (reverse("run_list"), {"page": huge}),
        (reverse("run_detail", args=[run.pk]), {"group": "sim", "page": huge}),
        (reverse("run_group", args=[run.pk]), {"group": "sim", "page": huge}),
        (reverse("audit_trail"), {"page": huge}),
        (reverse("failed_notifications"), {"page": huge}),
    ]
    for url, query in paged:
        assert client.get(url, query).status_code == 200, url
    for months in (huge, "-1", "x"):
        response = client.get(reverse("usage"), {"months": months})
        assert response.status_code == 400 and "months must be a whole number" in response.content.decode()
    response = client.get(reverse("run_timeline", args=[run.pk]), {"group": "sim", "start": huge})
    assert response.status_code == 400 and "start must be a whole number" in response.content.decode()
