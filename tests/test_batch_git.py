"""Git sources and generated tasks on AWS Batch, where there is no shared filesystem.

The branch is resolved and the repository cloned on the portal host (a real git
repository served by file URL here), and each job's script clones the commit in its
container: the test runs that script with the job's environment as Batch would.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from backends.batch.rendering import CONTAINER_CHECKOUT
from backends.config import validate_backend_settings
from backends.models import Backend
from backends.registry import close_all
from runs.actions import create_run
from runs.engine.tick import tick_due_backends
from runs.models import PortalSettings, Run, Workflow
from runs.workflows.command import start_run
from runs.workflows.parse import WorkflowError
from sources.models import Source
from sources.sync import source_tasks, start_source_run, sync_source
from tests.aws import (
    BatchWorld,
    MotoServer,
    batch_world,
    moto_job,
    moto_server_fixture,  # noqa: F401  (fixture)
    moto_url_fixture,  # noqa: F401  (fixture)
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.aws]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one workflow file, and a symlink that points out of it."""
    root = tmp_path / "repo"
    (root / ".hut" / "workflows").mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "sub" / "data.txt").write_text("data from the repository\n")
    tasks = [{"id": "read", "name": "read", "command": "cat data.txt", "working_dir": "sub"}]
    (root / ".hut" / "workflows" / "sim.json").write_text(json.dumps(tasks))
    (root / ".hut" / "workflows" / "evil.json").symlink_to("/etc/passwd")
    git("init", "--quiet", "--initial-branch=main", cwd=root)
    git("add", ".", cwd=root)
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "--quiet", "-m", "init", cwd=root)
    return root


@pytest.fixture
def batch(moto_server: MotoServer, tmp_path: Path) -> Any:
    close_all()
    world: BatchWorld = batch_world(moto_server)
    settings = {
        "aws": {"region": "us-east-1", "job_queue": world.queue, "endpoint_url": moto_server.url},
        "job_definition": world.job_definition,
    }
    portal = PortalSettings.load()
    portal.sources_cache_dir = str(tmp_path / "cache")
    portal.save()
    yield Backend.objects.create(name="aws-batch", kind="batch", settings=validate_backend_settings("batch", settings))
    close_all()


def test_git_source_is_cloned_on_the_portal_and_each_job_checks_out_its_commit(
    user: User, batch: Backend, repo: Path, tmp_path: Path
) -> None:
    source = Source.objects.create(name="sims", kind="git", backend=batch, url=f"file://{repo}", branch="main")
    sync_source(source)
    assert source.sync_error == ""
    sha = git("rev-parse", "HEAD", cwd=repo)
    assert source.synced_sha == sha
    assert (tmp_path / "cache" / "sims" / sha / ".git").is_dir()
    # The symlink to /etc/passwd is not offered, and not read when asked for.
    assert source.workflow_files == [".hut/workflows/sim.json"]
    source.workflow_files.append(".hut/workflows/evil.json")
    with pytest.raises(WorkflowError, match="points outside the checkout"):
        source_tasks(source, ".hut/workflows/evil.json")
    client = Client()
    client.force_login(user)
    dry_run = client.get("/sources/sims/workflows/.hut/workflows/sim.json/dry-run").content.decode()
    assert f"{CONTAINER_CHECKOUT}/sub" in dry_run  # where the task will run: in the job's own checkout
    run = start_source_run(source, ".hut/workflows/sim.json", user)
    assert (run.git_sha, run.clone_dir) == (sha, CONTAINER_CHECKOUT)
    tick_due_backends(force=True)
    task = run.tasks.get(task_id="read")
    job = moto_job(task.job_id)
    env = {e["name"]: e["value"] for e in job.container_overrides["environment"]}
    assert (env["SCRIPTHUT_GIT_REPO"], env["SCRIPTHUT_GIT_BRANCH"], env["SCRIPTHUT_GIT_SHA"]) == (
        f"file://{repo}",
        "main",
        sha,
    )
    # What the container does: clone, check out the commit, cd into the task's directory.
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.org",
        "commit",
        "--quiet",
        "--allow-empty",
        "-m",
        "later",
        cwd=repo,
    )  # noqa: E501
    command = job.container_overrides["command"]
    assert command[:2] == ["bash", "-c"]
    ran = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "data from the repository\n"
    assert git("rev-parse", "HEAD", cwd=Path(CONTAINER_CHECKOUT)) == sha  # that commit, not the branch's newer one


def test_path_source_on_batch_says_why_it_cannot_sync(batch: Backend) -> None:
    source = Source.objects.create(name="p", kind="path", backend=batch, path="/data")
    sync_source(source)
    assert "has no filesystem of its own" in source.sync_error and source.workflow_files == []


def test_generates_source_is_refused_on_batch_with_the_reason(user: User, batch: Backend) -> None:
    tasks = [
        {"id": "plain", "name": "plain", "command": "true"},
        {"id": "gen", "name": "gen", "command": "make-tasks > t.json", "generates_source": "t.json"},
    ]
    with pytest.raises(WorkflowError) as refused:
        create_run(owner=user, backend=batch, payload=tasks, workflow_name="gen")
    assert refused.value.problems == [
        "task 'gen': generates_source is not supported on backend 'aws-batch' (batch): its jobs run in separate "
        "containers with no shared filesystem, so the file a task writes cannot be read back"
    ]
    assert refused.value.details[0].field == "generates_source"
    assert not Run.objects.exists()


def test_workflow_command_on_batch_is_refused_with_the_reason(user: User, batch: Backend) -> None:
    workflow = Workflow.objects.create(
        name="gen", backend=batch, command="python gen.py", git={"repo": "https://example.org/r.git"}
    )
    with pytest.raises(WorkflowError) as refused:
        start_run(workflow, user)
    assert str(refused.value) == (
        "workflow 'gen': backend 'aws-batch' (batch) has no shell to run the workflow's command in "
        "(its jobs run in containers); use a git source with workflow files"
    )
    assert not Run.objects.exists()


def test_endpoint_from_the_scripthut_setting(
    user: User, moto_server: MotoServer, settings: Any, tmp_path: Path
) -> None:
    world = batch_world(moto_server, queue="other-queue")
    settings.SCRIPTHUT_AWS_ENDPOINT_URL = moto_server.url
    keys = {"aws": {"region": "us-east-1", "job_queue": world.queue}, "job_definition": world.job_definition}
    backend = Backend.objects.create(name="by-setting", kind="batch", settings=validate_backend_settings("batch", keys))
    run = create_run(
        owner=user, backend=backend, payload=[{"id": "a", "name": "a", "command": "true"}], workflow_name="s"
    )
    tick_due_backends(force=True)
    assert moto_job(run.tasks.get().job_id).job_queue.name == "other-queue"
