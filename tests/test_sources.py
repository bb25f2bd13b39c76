"""Sources against real git and the local backend: sync, listing, dry-run, run, pages."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from backends.local.adapter import LocalAdapter
from backends.models import Backend
from backends.registry import get_adapter
from runs.engine.jobspec import task_log
from runs.models import Run, Task
from runs.workflows.parse import WorkflowError
from sources.models import Source
from sources.sync import dry_run_source, source_tasks, start_source_run, sync_source

WORKFLOW = [
    {"id": "where", "name": "Where", "command": "pwd", "working_dir": "sub"},
    {"id": "after", "name": "After", "command": "true", "deps": ["where"]},
]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str = "c") -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    commit(
        path,
        {
            ".hut/workflows/a.json": json.dumps(WORKFLOW),
            "nested/deep/b.hut.json": json.dumps([{"id": "b", "name": "B", "command": "true"}]),
            "sub/.keep": "",
        },
    )
    return path


@pytest.fixture
def git_source(repo: Path, tmp_path: Path, local_backend: Backend) -> Source:
    return Source.objects.create(
        name="repo", kind="git", url=str(repo), branch="main", clone_dir=str(tmp_path / "clones"), backend=local_backend
    )


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command the local backend runs, as its tasks' user or (git checkouts) as the
    portal's own (and still runs it)."""
    from backends.local.portal_shell import PortalShell

    seen: list[str] = []
    for shell in (LocalAdapter, PortalShell):
        real = shell.run_command

        def spy(self: object, command: str, _real: Any = real, **kwargs: object) -> object:
            seen.append(command)
            return _real(self, command, **kwargs)

        monkeypatch.setattr(shell, "run_command", spy)
    return seen


@pytest.mark.django_db
def test_sync_lists_default_glob(git_source: Source, repo: Path, tmp_path: Path) -> None:
    sync_source(git_source)
    git_source.refresh_from_db()
    sha = git(repo, "rev-parse", "HEAD")
    assert git_source.sync_error == ""
    assert git_source.synced_sha == sha
    assert git_source.synced_at is not None
    assert git_source.workflow_files == [".hut/workflows/a.json"]
    assert git_source.root == f"{tmp_path}/clones/{sha}"
    assert (Path(git_source.root) / ".hut/workflows/a.json").is_file()


@pytest.mark.django_db
def test_sync_recursive_glob(git_source: Source, repo: Path) -> None:
    commit(repo, {"top.hut.json": "[]", "odd dir/x y.hut.json": "[]", "dir.hut.json/.keep": ""})
    git_source.workflows_glob = "**/*.hut.json"
    git_source.save()
    sync_source(git_source)
    git_source.refresh_from_db()
    assert git_source.sync_error == ""
    # Recursive, including the top level; names with spaces survive; directories do not count.
    assert git_source.workflow_files == ["nested/deep/b.hut.json", "odd dir/x y.hut.json", "top.hut.json"]


@pytest.mark.django_db
def test_second_sync_moves_to_new_commit(git_source: Source, repo: Path, tmp_path: Path) -> None:
    sync_source(git_source)
    first = git_source.synced_sha
    second = commit(repo, {".hut/workflows/c.json": json.dumps(WORKFLOW)})
    sync_source(git_source)
    git_source.refresh_from_db()
    assert first != second
    assert git_source.synced_sha == second
    assert git_source.root == f"{tmp_path}/clones/{second}"
    assert git_source.workflow_files == [".hut/workflows/a.json", ".hut/workflows/c.json"]
    assert (tmp_path / "clones" / first).is_dir()  # old checkouts stay for runs still using them


@pytest.mark.django_db
def test_postclone_runs_in_checkout_once(git_source: Source, repo: Path) -> None:
    git_source.postclone = "echo x >> postclone.log"
    git_source.save()
    sync_source(git_source)
    sync_source(git_source)
    assert (Path(git_source.root) / "postclone.log").read_text() == "x\n"


@pytest.mark.django_db
def test_bad_branch_keeps_previous_list(git_source: Source) -> None:
    sync_source(git_source)
    sha = git_source.synced_sha
    git_source.branch = "no-such-branch"
    git_source.save()
    sync_source(git_source)
    git_source.refresh_from_db()
    assert "no-such-branch" in git_source.sync_error
    assert git_source.synced_sha == sha
    assert git_source.workflow_files == [".hut/workflows/a.json"]


@pytest.mark.django_db
def test_path_source(tmp_path: Path, local_backend: Backend) -> None:
    root = tmp_path / "plain"
    (root / ".hut/workflows").mkdir(parents=True)
    (root / ".hut/workflows/p.json").write_text(json.dumps(WORKFLOW))
    (root / ".hut/workflows/notes.txt").write_text("")
    source = Source.objects.create(name="plain", kind="path", path=str(root), backend=local_backend)
    sync_source(source)
    source.refresh_from_db()
    assert source.sync_error == ""
    assert source.synced_sha == ""
    assert source.root == str(root)
    assert source.workflow_files == [".hut/workflows/p.json"]
    assert [t.definition.id for t in dry_run_source(source, ".hut/workflows/p.json")] == ["where", "after"]


@pytest.mark.django_db
def test_missing_path_is_an_error(tmp_path: Path, local_backend: Backend) -> None:
    source = Source.objects.create(name="gone", kind="path", path=str(tmp_path / "nope"), backend=local_backend)
    sync_source(source)
    assert "cannot list workflow files" in source.sync_error
    assert source.workflow_files == []


@pytest.mark.django_db
@pytest.mark.parametrize("glob", ["*; touch /tmp/x", "../*", "/etc/*", "$(id)", "a/../../*", "`id`", "~/x", "*\n*"])
def test_hostile_glob_rejected_before_anything_runs(
    git_source: Source, commands: list[str], glob: str, tmp_path: Path
) -> None:
    git_source.workflows_glob = glob
    git_source.save()
    sync_source(git_source)
    git_source.refresh_from_db()
    assert "workflows_glob" in git_source.sync_error
    assert commands == []
    assert git_source.workflow_files == []
    assert not (tmp_path / "clones").exists()


@pytest.mark.django_db
def test_listing_is_one_command(git_source: Source, commands: list[str]) -> None:
    sync_source(git_source)
    listing = [c for c in commands if "globstar" in c]
    assert len(listing) == 1
    assert git_source.workflow_files == [".hut/workflows/a.json"]


@pytest.mark.django_db
def test_file_not_in_list_is_refused(git_source: Source, repo: Path) -> None:
    sync_source(git_source)
    for file in ["../x", "sub/.keep", "/etc/passwd", ".hut/workflows/../../sub/.keep"]:
        with pytest.raises(WorkflowError, match="not a workflow file"):
            source_tasks(git_source, file)
    assert json.loads(source_tasks(git_source, ".hut/workflows/a.json")) == WORKFLOW


@pytest.mark.django_db
def test_dry_run_reports_invalid_workflow(git_source: Source, repo: Path) -> None:
    commit(
        repo, {".hut/workflows/bad.json": json.dumps([{"id": "x", "name": "X", "command": "true", "deps": ["nope"]}])}
    )
    sync_source(git_source)
    with pytest.raises(WorkflowError, match="nope"):
        dry_run_source(git_source, ".hut/workflows/bad.json")


@pytest.mark.django_db(transaction=True)
def test_run_resolves_relative_working_dir_in_checkout(git_source: Source, user, run_to_end) -> None:
    sync_source(git_source)
    run = start_source_run(git_source, ".hut/workflows/a.json", user)
    assert run.workflow_name == "repo/.hut/workflows/a.json"
    assert run.git_sha == git_source.synced_sha
    assert run.clone_dir == git_source.root
    run = run_to_end(run)
    assert run.status == "completed", list(run.tasks.values_list("task_id", "state", "reason"))
    task = run.tasks.get(task_id="where")
    output = Path(log_path(task, "output")).read_text().strip()
    assert os.path.realpath(output) == os.path.realpath(f"{git_source.root}/sub")


# -- pages -----------------------------------------------------------------------------


@pytest.fixture
def client_in(client: Client, user) -> Client:
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_pages_and_sync_post(client_in: Client, git_source: Source) -> None:
    page = client_in.get("/sources")
    assert page.status_code == 200
    assert b"repo" in page.content and b"never" in page.content

    response = client_in.post("/sources/repo/sync")
    assert response.status_code == 302 and response["Location"] == "/sources"
    assert any("Synced repo" in str(m) for m in get_messages(response.wsgi_request))
    git_source.refresh_from_db()
    assert git_source.workflow_files == [".hut/workflows/a.json"]

    page = client_in.get("/sources")
    assert git_source.synced_sha[:12].encode() in page.content

    page = client_in.get("/sources/repo/workflows")
    assert page.status_code == 200
    assert b".hut/workflows/a.json" in page.content
    assert b"/sources/repo/workflows/.hut/workflows/a.json/dry-run" in page.content

    page = client_in.get("/sources/repo/workflows/.hut/workflows/a.json/dry-run")
    assert page.status_code == 200
    assert b"Where" in page.content and f"{git_source.root}/sub".encode() in page.content

    page = client_in.get("/sources/repo/workflows/../etc/passwd/dry-run")
    assert page.status_code == 404

    page = client_in.get("/sources/repo/workflows/nested/x.json/dry-run")
    assert page.status_code == 404
    assert b"not a workflow file" in page.content


@pytest.mark.django_db
def test_sync_post_failure_and_next(client_in: Client, git_source: Source) -> None:
    git_source.workflows_glob = "*; touch /tmp/x"
    git_source.save()
    response = client_in.post("/sources/repo/sync", {"next": "/sources/repo/workflows"})
    assert response.status_code == 302 and response["Location"] == "/sources/repo/workflows"
    assert any("failed" in str(m) for m in get_messages(response.wsgi_request))
    response = client_in.post("/sources/repo/sync", {"next": "https://evil.example/"})
    assert response["Location"] == "/sources"
    page = client_in.get("/sources")
    assert b"workflows_glob" in page.content
    assert client_in.get("/sources/repo/sync").status_code == 405


@pytest.mark.django_db
def test_run_post(client_in: Client, git_source: Source) -> None:
    sync_source(git_source)
    response = client_in.post("/sources/repo/workflows/.hut/workflows/a.json/run", {"max_concurrent": "2"})
    assert response.status_code == 302
    run = Run.objects.get(backend=git_source.backend)
    assert response["Location"] == f"/runs/{run.pk}"
    assert run.max_concurrent == 2 and run.clone_dir == git_source.root

    response = client_in.post("/sources/repo/workflows/other.json/run")
    assert response.status_code == 302 and response["Location"] == "/sources/repo/workflows"
    assert any("not a workflow file" in str(m) for m in get_messages(response.wsgi_request))

    response = client_in.post("/sources/repo/workflows/.hut/workflows/a.json/run", {"max_concurrent": "x"})
    # What was typed is wrong: the workflows page again, as a 400 naming the field.
    assert response.status_code == 400 and "max_concurrent must be a whole number" in response.content.decode()
    assert client_in.post("/sources/nope/sync").status_code == 404


def log_path(task: Task, stream: str) -> str:
    """Where the local backend put a task's output or error stream."""
    return get_adapter(task.run.backend).log_location(task_log(task, stream))
