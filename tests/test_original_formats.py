"""The original's formats without silent loss (issue 21, findings 12-16): what a workflow
document or config file of the original says is either taken, or reported with the reason."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from backends.models import Backend
from runs.actions import create_run
from runs.models import PortalSettings, Run, Task, Workflow
from runs.workflows.parse import WorkflowError, check
from scripthut_site import cli
from scripthut_site.config import ConfigError, import_config
from tests.test_api import post_json, token_client
from tests.test_slurm_parsing import backend as slurm_backend
from tests.test_slurm_parsing import job as slurm_job

pytestmark = pytest.mark.django_db

DEPENDENCIES = {
    "tasks": [
        {"id": "a", "name": "A", "command": "true"},
        # The original's generators sometimes write "dependencies" for "deps".
        {"id": "b", "name": "B", "command": "true", "dependencies": ["a"]},
    ],
    "description": "from an old generator",
}
TASK_WARNING = "unknown task field 'dependencies' (task 'b'), ignored (did you mean 'deps'?)"
TOP_WARNING = "unknown top-level field 'description', ignored"


@pytest.fixture
def api(user: User, local_backend: Backend) -> Client:
    return token_client(user)


# -- 12: unknown fields are warnings, or refused when asked ------------------------------


def test_unknown_fields_are_warnings_in_the_api_answer_and_on_the_run_page(api: Client, user: User) -> None:
    response = post_json(api, "/api/runs", {"backend": "local", "name": "old", "workflow": DEPENDENCIES})
    assert response.status_code == 201, response.content
    assert response.json()["warnings"] == [TOP_WARNING, TASK_WARNING]
    run = Run.objects.get(pk=response.json()["id"])
    assert api.get(f"/api/runs/{run.pk}").json()["warnings"] == [TOP_WARNING, TASK_WARNING]
    page = Client()
    page.force_login(user)
    html = page.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "unknown task field &#x27;dependencies&#x27; (task &#x27;b&#x27;), ignored" in html


def test_unknown_fields_are_warnings_on_the_dry_run(user: User, local_backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "w.json").write_text(json.dumps(DEPENDENCIES))
    Workflow.objects.create(name="old", backend=local_backend, command=f"cat {tmp_path / 'w.json'}")
    page = Client()
    page.force_login(user)
    url = reverse("workflow_dry_run", args=["old"])
    assert page.get(url, HTTP_ACCEPT="application/json").json()["warnings"] == [TOP_WARNING, TASK_WARNING]
    assert "did you mean &#x27;deps&#x27;?" in page.get(url).content.decode()


def test_unknown_fields_are_warnings_in_scripthut_run(
    user: User, local_backend: Backend, tmp_path: Path, capsys: Any
) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(DEPENDENCIES))
    args = Namespace(workflow=str(path), backend="local", max_concurrent=None, name=None, user="alice", wait=False)
    assert cli.run(args) == 0
    assert f"warning: {TASK_WARNING}" in capsys.readouterr().err.splitlines()


def test_a_strict_document_or_site_refuses_unknown_fields(api: Client) -> None:
    response = post_json(api, "/api/runs", {"backend": "local", "workflow": {**DEPENDENCIES, "strict": True}})
    assert response.status_code == 400
    messages = [p["message"] for p in response.json()["problems"]]
    assert "unknown task field 'dependencies' (task 'b'), refused (strict) (did you mean 'deps'?)" in messages
    PortalSettings.objects.update_or_create(pk=1, defaults={"strict_workflows": True})
    response = post_json(api, "/api/runs", {"backend": "local", "workflow": DEPENDENCIES})
    assert response.status_code == 400 and "refused (strict)" in response.json()["error"]
    assert not Run.objects.exists()


def test_many_tasks_with_one_unknown_field_are_one_warning() -> None:
    tasks = [{"id": f"t{i}", "name": "T", "command": "true", "dependencies": []} for i in range(1000)]
    assert check(tasks).warnings == [
        "unknown task field 'dependencies' (tasks 't0', 't1', 't2' and 997 more), ignored (did you mean 'deps'?)"
    ]


# -- 13: what the original accepts, when unambiguous -------------------------------------


def test_the_originals_unambiguous_values_are_accepted(user: User, local_backend: Backend, run_to_end: Any) -> None:
    tasks = [
        {"id": "s", "name": "S", "command": "true", "cpus": "4", "retries": "1"},
        {"id": "f", "name": "F", "command": "true", "cpus": 2.0, "memory": 512, "time_limit": 90},
        {"id": "n", "name": "N", "command": "true", "working_dir": None, "env_vars": None, "deps": None},
        {"id": "u", "name": "U", "command": "true", "time_limit": "UNLIMITED"},
        {"id": "i", "name": "I", "command": "true", "time_limit": "infinite"},
    ]
    run = run_to_end(create_run(owner=user, backend=local_backend, payload=tasks, workflow_name="orig"))
    assert run.status == Run.Status.COMPLETED
    rows = {t.task_id: t for t in Task.objects.filter(run=run)}
    assert (rows["s"].cpus, rows["s"].retries, rows["f"].cpus) == (4, 1, 2)
    assert (rows["f"].memory, rows["f"].time_limit) == ("512", "90")
    assert (rows["n"].working_dir, rows["n"].env_vars, rows["n"].deps) == ("~", {}, [])
    assert rows["u"].time_limit == rows["i"].time_limit == "UNLIMITED"


def test_unlimited_time_where_the_scheduler_has_it() -> None:
    script = slurm_backend().render_script(slurm_job(time_limit="UNLIMITED"))
    assert "#SBATCH --time=UNLIMITED" in script


def test_unlimited_time_elsewhere_is_refused_with_the_reason(user: User) -> None:
    pbs = Backend.objects.create(name="pbs", kind="pbs", settings={"ssh": {"host": "h", "user": "u"}})
    tasks = [{"id": "u", "name": "U", "command": "true", "time_limit": "unlimited"}]
    with pytest.raises(WorkflowError) as info:
        create_run(
            owner=User.objects.create(username="root", is_staff=True), backend=pbs, payload=tasks, workflow_name="x"
        )
    assert info.value.problems == [
        "task 'u': time_limit UNLIMITED is not available on backend 'pbs' (pbs): give a limit such as 24:00:00"
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cpus", "four", "must be a whole number, not 'four'"),
        ("cpus", 2.5, "must be a whole number, not 2.5"),
        ("cpus", True, "must be a whole number, not true"),
        ("time_limit", "forever", "invalid time limit 'forever'"),
        ("command", None, "input should be a valid string"),
    ],
)
def test_the_rest_is_refused_with_the_reason(field: str, value: Any, message: str) -> None:
    with pytest.raises(WorkflowError) as info:
        check([{"id": "a", "name": "A", "command": "true", field: value}])
    assert [(p.field, message in p.message) for p in info.value.details] == [(field, True)]


# -- 14: several config files are one unit ----------------------------------------------


def test_a_workflow_may_name_a_backend_of_a_file_read_after_it(tmp_path: Path) -> None:
    first, second = tmp_path / "workflows.yaml", tmp_path / "backends.yaml"
    first.write_text(yaml.safe_dump({"workflows": [{"name": "w", "backend": "later", "command": "echo []"}]}))
    second.write_text(yaml.safe_dump({"backends": [{"name": "later", "type": "local"}], "colour": 1}))
    report = import_config([first, second])
    assert Workflow.objects.get(name="w").backend.name == "later"
    assert report.warnings == [f"{second}: colour: unknown key, ignored"]
    assert cli.main(["import-config", str(first), str(second)]) == 0


def test_a_name_still_unknown_after_every_file_is_an_error_naming_the_key(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(yaml.safe_dump({"backends": [{"name": "here", "type": "local"}]}))
    second.write_text(yaml.safe_dump({"sources": [{"name": "s", "type": "path", "path": "/d", "backend": "nope"}]}))
    with pytest.raises(ConfigError) as info:
        import_config([first, second])
    assert info.value.errors == [f"{second}: sources[0].backend: unknown backend 'nope'"]
    assert not Backend.objects.exists()


# -- 15: a configured workflow without max_concurrent -----------------------------------


def test_a_workflow_without_a_limit_has_its_backends(user: User, staff: User) -> None:
    config = {
        "backends": [{"name": "here", "type": "local", "max_concurrent": 7}],
        "workflows": [
            {"name": "free", "backend": "here", "command": 'echo \'[{"id": "a", "name": "A", "command": "true"}]\''},
            {"name": "capped", "backend": "here", "command": "echo []", "max_concurrent": 2},
        ],
    }
    import_config(yaml.safe_dump(config))
    free = Workflow.objects.get(name="free")
    assert (free.max_concurrent, free.effective_max_concurrent) == (None, 7)
    assert Workflow.objects.get(name="capped").effective_max_concurrent == 2
    page = Client()
    page.force_login(staff)
    html = page.get(reverse("workflow_list")).content.decode()
    assert '<td class="num">7 <span class="muted"' in html and "(backend's)" in html
    assert page.post(reverse("workflow_run", args=["free"])).status_code == 302
    assert Run.objects.get(workflow=free).max_concurrent == 7


# -- 16: settings.filter_user ----------------------------------------------------------


def test_filter_user_is_the_dashboards_default_user_filter(user: User, bob: User) -> None:
    report = import_config(yaml.safe_dump({"settings": {"filter_user": "bob"}}))
    assert report.warnings == []
    page = Client()
    page.force_login(user)
    html = page.get(reverse("dashboard")).content.decode()
    assert '<option value="bob" selected>bob</option>' in html
    everyone = page.get(reverse("dashboard"), {"user": ""}).content.decode()
    assert '<option value="" >everyone</option>' not in everyone and "selected>bob" not in everyone
