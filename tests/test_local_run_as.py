"""A local backend with ``run_as``: every task runs as an unprivileged Unix user, for real.

Needs root (the portal switches users with setpriv); the user is created once per
machine (``useradd``) and kept.
"""

from __future__ import annotations

import html
import pwd
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backends.base import FileRefused
from backends.local.runas import RunAs, helper
from backends.models import Backend
from backends.registry import get_adapter
from runs.actions import cancel_run, create_run
from runs.engine.tick import tick_due_backends
from runs.models import Run, Task
from tests.conftest import LOCAL_USERS
from tests.os_accounts import ensure_account

RUNNER_USER = "scripthut-runner"
Runner = Callable[..., Run]


@pytest.fixture(scope="session")
def runner_user() -> pwd.struct_passwd:
    """An unprivileged user with a home, created if missing (idempotent)."""
    return ensure_account(RUNNER_USER)


@pytest.fixture
def confined(db: None, runner_user: pwd.struct_passwd) -> Backend:
    # As `scripthut import-config` stores `run_as: scripthut-runner`, shared with the test users.
    backend = Backend.objects.create(
        name="confined",
        kind=Backend.Kind.LOCAL,
        settings={"run_as": runner_user.pw_name},
        max_concurrent=4,
        poll_interval=1,
    )
    backend.allowed_groups.add(Group.objects.get_or_create(name=LOCAL_USERS)[0])
    return backend


def run_one(user: User, backend: Backend, run_to_end: Runner, command: str, **fields: Any) -> Task:
    payload = [{"id": "t", "name": "t", "command": command, **fields}]
    return run_to_end(create_run(owner=user, backend=backend, payload=payload, workflow_name="w")).tasks.get()


def text(path: str) -> str:
    return Path(path).read_text()


# -- finding 4: tasks on `local` ran as the portal's user -------------------------------


@pytest.mark.django_db(transaction=True)
def test_tasks_run_as_the_run_as_user(
    user: User, confined: Backend, run_to_end: Runner, runner_user: pwd.struct_passwd
) -> None:
    done = run_one(user, confined, run_to_end, "id -un; echo $HOME")
    assert done.state == Task.State.COMPLETED, done.reason
    assert text(done.output_file).split() == [RUNNER_USER, runner_user.pw_dir]
    log = Path(done.output_file)
    assert log.stat().st_uid == runner_user.pw_uid and stat.S_IMODE(log.stat().st_mode) == 0o600
    root: Path = get_adapter(confined).work_root  # type: ignore[attr-defined]
    assert root.stat().st_uid == runner_user.pw_uid and stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(settings.DATA_DIR).stat().st_mode) == 0o700


@pytest.mark.django_db(transaction=True)
def test_run_as_cannot_read_the_portals_secrets(
    user: User, confined: Backend, run_to_end: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_key = Path(settings.DATA_DIR) / "secret_key"
    monkeypatch.setenv("SCRIPTHUT_CANARY", "portal-environment-canary")
    done = run_one(user, confined, run_to_end, f"env; cat {secret_key}")
    assert done.state == Task.State.FAILED and done.exit_code == 1
    assert "Permission denied" in text(done.error_file)
    assert secret_key.read_text() not in text(done.output_file)
    assert "portal-environment-canary" not in text(done.output_file)  # a clean environment


@pytest.mark.django_db(transaction=True)
def test_run_as_error_file_on_the_secret_key_is_refused(user: User, confined: Backend, run_to_end: Runner) -> None:
    secret_key = Path(settings.DATA_DIR) / "secret_key"
    before = secret_key.read_bytes()
    done = run_one(user, confined, run_to_end, "echo x", error_file=str(secret_key))
    assert done.state == Task.State.FAILED and "error_file" in done.reason
    assert secret_key.read_bytes() == before


@pytest.mark.django_db(transaction=True)
def test_run_as_log_page_refuses_proc_environ(client: Client, user: User, confined: Backend) -> None:
    client.force_login(user)
    run = create_run(
        owner=user, backend=confined, payload=[{"id": "t", "name": "t", "command": "true"}], workflow_name="w"
    )
    Task.objects.filter(run=run).update(
        state=Task.State.RUNNING, job_id="sh-x", output_file="/proc/self/environ", started_at=timezone.now()
    )
    response = client.get(reverse("task_logs", args=[run.pk, "t", "output"]))
    page = html.unescape(response.content.decode())
    assert response.status_code == 200 and "will not show this file" in page
    assert "DJANGO_SETTINGS_MODULE" not in page


@pytest.mark.django_db(transaction=True)
def test_run_as_generates_source_on_the_database_is_refused(
    client: Client, user: User, confined: Backend, run_to_end: Runner
) -> None:
    database = str(settings.DATABASES["default"]["NAME"])
    done = run_one(user, confined, run_to_end, "true", generates_source=database)
    assert done.state == Task.State.FAILED and "generates_source" in done.reason
    client.force_login(user)
    assert client.get(reverse("run_detail", args=[done.run_id])).status_code == 200
    assert run_one(user, confined, run_to_end, "echo again").state == Task.State.COMPLETED


@pytest.mark.django_db(transaction=True)
def test_run_as_reads_files_with_the_users_rights(
    user: User, confined: Backend, run_to_end: Runner, tmp_path: Path
) -> None:
    """A log in an allowed root that the user may not read is not shown by the portal (root)."""
    private = tmp_path / "root-only.txt"
    private.write_text("root's business")
    private.chmod(0o600)
    confined.settings = {**confined.settings, "allowed_paths": [str(tmp_path)]}
    confined.save()
    adapter = get_adapter(confined)
    with pytest.raises(FileRefused, match="cannot be read by scripthut-runner"):
        adapter.read_file(str(private))  # type: ignore[attr-defined]
    done = run_one(user, confined, run_to_end, "echo hi")
    assert adapter.read_file(done.output_file) == "hi\n"  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_run_as_cancel_stops_the_users_job(user: User, confined: Backend) -> None:
    run = create_run(
        owner=user, backend=confined, payload=[{"id": "t", "name": "t", "command": "sleep 30"}], workflow_name="w"
    )
    tick_due_backends(force=True)
    job_id = run.tasks.get().job_id
    adapter = get_adapter(confined)
    assert wait_for(lambda: adapter.poll([job_id]).statuses[job_id].state == "running")
    cancel_run(run)
    tick_due_backends(force=True)
    assert wait_for(lambda: adapter.poll([job_id]).statuses[job_id].state == "cancelled")
    assert run.tasks.get().state == Task.State.CANCELLED


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# -- switching users -------------------------------------------------------------------


def test_without_root_the_switch_is_sudo_of_the_helper_only(
    runner_user: pwd.struct_passwd, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_as = RunAs.lookup(RUNNER_USER)
    assert run_as.command(["id"]) == ["/bin/bash", helper(), RUNNER_USER, "host", "id"]
    monkeypatch.setattr("backends.local.runas.os.geteuid", lambda: 1000)
    assert run_as.command(["id"], "none") == ["sudo", "-n", helper(), RUNNER_USER, "none", "id"]
