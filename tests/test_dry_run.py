"""One dry-run page and run form (runs.web.dry_run) for configured workflows and for sources'
workflow files: the same document looks and behaves the same whichever way it came."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from backends.models import Backend
from runs.models import Run, Workflow
from sources.models import Source
from tests.test_bad_input import MISTAKES, logged_in  # noqa: F401  (logged_in is a fixture)

pytestmark = pytest.mark.django_db

DOCUMENT = [
    {"id": "prep.a", "name": "Prep A", "command": "true", "working_dir": "data", "env_vars": {"SEED": "1"}},
    {"id": "prep.b", "name": "Prep B", "command": "true", "partition": "short", "cpus": 2, "memory": "1G"},
    {"id": "report", "name": "Report", "command": "make report", "deps": ["prep.*"], "time_limit": "10:00"},
]


def _both(local_backend: Backend, tmp_path: Path, document: object) -> tuple[str, str]:
    """The dry-run URLs of one document: as a configured workflow's command output and as a source's file."""
    (tmp_path / "w.json").write_text(json.dumps(document))
    Workflow.objects.create(name="w.json", backend=local_backend, command=f"cat {tmp_path / 'w.json'}")
    Source.objects.create(
        name="files", kind="path", path=str(tmp_path), backend=local_backend, workflow_files=["w.json"]
    )
    return reverse("workflow_dry_run", args=["w.json"]), reverse("source_dry_run", args=["files", "w.json"])


def _part(html: str, pattern: str) -> str:
    found = re.search(pattern, html, re.S)
    assert found, pattern
    return found.group(0)


def _run_form(html: str, run_url: str) -> str:
    form = _part(html, r'<form method="post" action="[^"]*" class="inline run-form">.*?</form>')
    form = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", form)
    assert f'action="{run_url}"' in form
    return form.replace(run_url, "RUN_URL").replace('data-run="files/w.json"', 'data-run="w.json"')


def test_a_document_dry_runs_the_same_as_a_workflow_and_as_a_source_file(
    logged_in: Client,  # noqa: F811
    local_backend: Backend,
    tmp_path: Path,
) -> None:
    workflow_url, source_url = _both(local_backend, tmp_path, DOCUMENT)
    pages = [logged_in.post(url) for url in (workflow_url, source_url)]
    assert [page.status_code for page in pages] == [200, 200]
    workflow_page, source_page = (page.content.decode() for page in pages)

    table = _part(workflow_page, r'<table class="grid">.*?</table>')
    assert table == _part(source_page, r'<table class="grid">.*?</table>')
    # Every column: working dir, deps as written, environment, resources.
    for shown in ('<td class="mono small">data</td>', "as written: prep.*", "SEED=1", "short", "10:00"):
        assert shown in table, shown
    summary = "<strong>3</strong> tasks in <strong>2</strong> groups."
    assert summary in workflow_page and summary in source_page
    workflow_form = _run_form(workflow_page, reverse("workflow_run", args=["w.json"]))
    assert workflow_form == _run_form(source_page, reverse("source_run", args=["files", "w.json"]))
    assert "Run 3 tasks" in workflow_form and 'placeholder="10"' in workflow_form

    as_json = [logged_in.post(url, headers={"Accept": "application/json"}).json() for url in (workflow_url, source_url)]
    assert [data["workflow"] for data in as_json] == ["w.json", "files/w.json"]
    assert as_json[0] | {"workflow": ""} == as_json[1] | {"workflow": ""}
    assert as_json[0]["tasks"][2]["resolved_deps"] == ["prep.a", "prep.b"]
    assert Run.objects.count() == 0


def test_a_broken_document_shows_the_same_problems_both_ways(
    logged_in: Client,  # noqa: F811
    local_backend: Backend,
    tmp_path: Path,
) -> None:
    urls = _both(local_backend, tmp_path, MISTAKES)
    pages = [logged_in.post(url).content.decode() for url in urls]
    problems = [_part(page, r'<div class="alert error">.*?</div>') for page in pages]
    assert problems[0] == problems[1] and "4 problems" in problems[0]
    assert not any("run-form" in page for page in pages)
    answers = [logged_in.post(url, headers={"Accept": "application/json"}) for url in urls]
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].json()["problems"] == answers[1].json()["problems"]


def test_the_run_form_on_both_list_pages_is_the_same(
    logged_in: Client,  # noqa: F811
    local_backend: Backend,
    tmp_path: Path,
    user: User,
) -> None:
    _both(local_backend, tmp_path, DOCUMENT)
    workflows = logged_in.get(reverse("workflow_list")).content.decode()
    files = logged_in.get(reverse("source_workflows", args=["files"])).content.decode()
    workflow_form = _run_form(workflows, reverse("workflow_run", args=["w.json"]))
    assert workflow_form == _run_form(files, reverse("source_run", args=["files", "w.json"]))
    assert ">max concurrent</label>" in workflow_form and ">Run</button>" in workflow_form

    for url in (reverse("workflow_run", args=["w.json"]), reverse("source_run", args=["files", "w.json"])):
        started = logged_in.post(url, {"max_concurrent": "2"})
        run = Run.objects.latest("created_at")
        assert started["Location"] == reverse("run_detail", args=[run.pk])
        assert (run.owner, run.max_concurrent, run.tasks.count()) == (user, 2, 3)


def test_a_dry_run_runs_the_workflows_command_only_when_posted_with_the_csrf_token(
    user: User, local_backend: Backend, tmp_path: Path
) -> None:
    # A GET ran the command: a link on any other site made a signed-in user's browser run it.
    (tmp_path / "w.json").write_text(json.dumps(DOCUMENT))
    ran = tmp_path / "ran"
    Workflow.objects.create(name="w", backend=local_backend, command=f"touch {ran}; cat {tmp_path / 'w.json'}")
    url = reverse("workflow_dry_run", args=["w"])
    browser = Client(enforce_csrf_checks=True)  # as a browser: CSRF is checked
    browser.force_login(user)

    page = browser.get(url)  # the page, with the button; nothing is run
    assert not ran.exists(), "a GET ran the workflow's command"
    assert page.status_code == 200 and "Dry run: w" in page.content.decode()
    button = _part(page.content.decode(), r'<form method="post" action="[^"]*" class="inline">.*?</form>')
    assert f'action="{url}"' in button and 'name="csrfmiddlewaretoken"' in button and "Dry run</button>" in button
    as_json = browser.get(url, headers={"Accept": "application/json"})
    assert as_json.status_code == 405 and as_json["Allow"] == "POST" and "POST" in as_json.json()["error"]
    assert browser.post(url).status_code == 403  # from another site: no CSRF token
    assert not ran.exists()
    listed = browser.get(reverse("workflow_list")).content.decode()
    assert f'<form method="post" action="{url}" class="inline">' in listed  # the list's button posts too

    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', button)
    assert token
    done = browser.post(url, {"csrfmiddlewaretoken": token.group(1)})
    assert done.status_code == 200 and "<strong>3</strong> tasks" in done.content.decode()
    assert ran.exists()  # the command ran, for the POST
    assert Run.objects.count() == 0
