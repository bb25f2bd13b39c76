"""A local task's files stay in its run's directory (or an allowed root), never the
portal's own files, and the log view reads only plain files. Real processes, real files."""

from __future__ import annotations

import html
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backends.base import FileRefused, TaskLog
from backends.models import Backend
from backends.registry import get_adapter
from runs.actions import create_run
from runs.models import Run, Task

pytestmark = pytest.mark.django_db(transaction=True)

Runner = Callable[..., Run]


def task(task_id: str, command: str = "true", **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "name": task_id, "command": command, **extra}


def run_one(user: User, backend: Backend, run_to_end: Runner, **fields: Any) -> Task:
    run = run_to_end(create_run(owner=user, backend=backend, payload=[task("t", **fields)], workflow_name="w"))
    return run.tasks.get()


def allow(backend: Backend, *paths: str | Path) -> None:
    backend.settings = {**backend.settings, "allowed_paths": [str(path) for path in paths]}
    backend.save()


@pytest.fixture
def secret_key() -> Path:
    path = Path(settings.DATA_DIR) / "secret_key"
    assert path.is_file(), "the test portal keeps its secret key in its data dir"
    return path


def database() -> Path:
    """The embedded default's SQLite file in the data dir. On PostgreSQL (CI) the database
    is no file: a stand-in is put where the embedded default keeps it."""
    name = settings.DATABASES["default"]["NAME"]
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        return Path(name)
    path = Path(settings.DATA_DIR) / "db.sqlite3"
    path.touch(exist_ok=True)
    return path


# -- finding 1: a task's error_file emptied the portal's secret key -----------------------


@pytest.mark.parametrize("how", ["direct", "dotdot", "symlink"])
def test_error_file_cannot_overwrite_the_secret_key(
    user: User, local_backend: Backend, run_to_end: Runner, secret_key: Path, tmp_path: Path, how: str
) -> None:
    before = secret_key.read_bytes()
    if how == "direct":
        path = str(secret_key)
    elif how == "dotdot":
        allow(local_backend, tmp_path)
        up_to_root = "../" * (len(tmp_path.parts) - 1)  # as deep as tmp_path is (deeper under xdist)
        path = f"{tmp_path}/{up_to_root}{secret_key.relative_to('/')}"
    else:
        allow(local_backend, tmp_path)
        (tmp_path / "err.txt").symlink_to(secret_key)
        path = str(tmp_path / "err.txt")
    done = run_one(user, local_backend, run_to_end, command="echo x", error_file=path)
    assert done.state == Task.State.FAILED and not done.job_id
    assert "error_file" in done.reason and "portal's own files" in done.reason
    assert secret_key.read_bytes() == before


def test_output_file_outside_the_run_directory_is_refused(
    user: User, local_backend: Backend, run_to_end: Runner, tmp_path: Path
) -> None:
    done = run_one(user, local_backend, run_to_end, command="echo x", output_file=str(tmp_path / "out.txt"))
    assert done.state == Task.State.FAILED
    assert "output_file" in done.reason and "outside the run's directory" in done.reason
    assert not (tmp_path / "out.txt").exists()


def test_files_in_the_run_directory_or_allowed_paths_work(
    user: User, local_backend: Backend, run_to_end: Runner, tmp_path: Path
) -> None:
    allow(local_backend, tmp_path)
    done = run_one(
        user, local_backend, run_to_end, command="echo out; echo err >&2", output_file=str(tmp_path / "o.txt")
    )
    assert done.state == Task.State.COMPLETED, done.reason
    assert (tmp_path / "o.txt").read_text() == "out\n"
    run_dir = get_adapter(local_backend).run_dir(done.run_id)  # type: ignore[attr-defined]
    assert done.error_file == str(run_dir / "t.err") and Path(done.error_file).read_text() == "err\n"


def test_one_file_for_both_streams_keeps_both(
    user: User, local_backend: Backend, run_to_end: Runner, tmp_path: Path
) -> None:
    allow(local_backend, tmp_path)
    both = str(tmp_path / "both.log")
    done = run_one(
        user, local_backend, run_to_end, command="echo 1; echo 2 >&2; echo 3", output_file=both, error_file=both
    )
    assert done.state == Task.State.COMPLETED, done.reason
    assert Path(both).read_text() == "1\n2\n3\n"  # one offset for both streams, as with 2>&1


def test_local_job_files_are_private(user: User, local_backend: Backend, run_to_end: Runner) -> None:
    done = run_one(user, local_backend, run_to_end, command="echo hi")
    adapter = get_adapter(local_backend)
    root: Path = adapter.work_root  # type: ignore[attr-defined]
    assert not str(root).startswith(str(settings.DATA_DIR) + "/")
    job_dir = root / "jobs" / done.job_id
    for path in (root, job_dir, Path(done.output_file).parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in (job_dir / "script.sh", Path(done.output_file), Path(done.error_file)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.stat().st_uid == os.geteuid()
    assert Path(done.output_file).read_text() == "hi\n"


# -- finding 2: the log view showed /proc/self/environ -----------------------------------


def _running_with_output(run: Run, path: str) -> None:
    Task.objects.filter(run=run).update(
        state=Task.State.RUNNING, job_id="sh-x", output_file=path, started_at=timezone.now()
    )


def _log_page(client: Client, run: Run) -> str:
    response = client.get(reverse("task_logs", args=[run.pk, "t", "output"]))
    assert response.status_code == 200
    return html.unescape(response.content.decode())


@pytest.mark.parametrize("allowed", [[], ["/"]])
def test_log_view_refuses_proc_environ(
    client: Client, user: User, local_backend: Backend, monkeypatch: pytest.MonkeyPatch, allowed: list[str]
) -> None:
    """Even with a backend that allows every path, /proc is never shown."""
    monkeypatch.setenv("SCRIPTHUT_CANARY", "canary-value-of-the-portal")
    allow(local_backend, *allowed)
    client.force_login(user)
    run = create_run(owner=user, backend=local_backend, payload=[task("t")], workflow_name="w")
    _running_with_output(run, "/proc/self/environ")
    page = _log_page(client, run)
    assert "canary-value-of-the-portal" not in page
    assert "will not show this file" in page and "alert error" in page


def test_log_view_refuses_a_symlink_swapped_in_after_submission(
    client: Client, user: User, local_backend: Backend, run_to_end: Runner, secret_key: Path
) -> None:
    client.force_login(user)
    done = run_one(user, local_backend, run_to_end, command="echo fine")
    log = Path(done.output_file)
    log.unlink()
    log.symlink_to(secret_key)
    page = _log_page(client, done.run)
    assert secret_key.read_text() not in page
    assert "will not show this file" in page and "portal's own files" in page


def test_a_fifo_as_log_is_refused_without_blocking(user: User, local_backend: Backend, run_to_end: Runner) -> None:
    done = run_one(user, local_backend, run_to_end, command="echo fine")
    log = Path(done.output_file)
    log.unlink()
    os.mkfifo(log)
    adapter = get_adapter(local_backend)
    outcome: list[BaseException | str] = []

    def read() -> None:
        try:
            outcome.append(adapter.read_log(TaskLog(done.job_id, "output", str(log), "/", done.run_id)))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert outcome and isinstance(outcome[0], FileRefused) and "not a regular file" in str(outcome[0])


def test_reads_stop_at_the_viewing_limit(user: User, local_backend: Backend, run_to_end: Runner) -> None:
    done = run_one(user, local_backend, run_to_end, command="seq 1 100000")
    text = get_adapter(local_backend).read_log(TaskLog(done.job_id, "output", done.output_file, "/", done.run_id), 100)
    assert len(text) == 100 and text.endswith("99999\n100000\n")


# -- finding 3: generates_source pointed at the database broke the portal ---------------


def test_generates_source_on_the_database_is_refused(
    client: Client, user: User, local_backend: Backend, run_to_end: Runner
) -> None:
    done = run_one(user, local_backend, run_to_end, generates_source=str(database()))
    assert done.state == Task.State.FAILED
    assert "generates_source" in done.reason and "portal's own files" in done.reason
    # The portal keeps working: pages and new runs.
    client.force_login(user)
    assert client.get(reverse("run_detail", args=[done.run_id])).status_code == 200
    assert run_one(user, local_backend, run_to_end, command="echo again").state == Task.State.COMPLETED


def test_generated_file_swapped_for_a_link_to_the_database_is_refused(
    user: User, local_backend: Backend, run_to_end: Runner, tmp_path: Path
) -> None:
    allow(local_backend, tmp_path)
    generated = tmp_path / "tasks.json"
    done = run_one(
        user, local_backend, run_to_end, command=f"ln -s {database()} {generated}", generates_source=str(generated)
    )
    assert done.state == Task.State.FAILED
    assert "rejected" in done.reason and "portal's own files" in done.reason
    assert run_one(user, local_backend, run_to_end, command="echo again").state == Task.State.COMPLETED


def test_a_shell_read_never_returns_the_portals_files(local_backend: Backend, secret_key: Path) -> None:
    adapter = get_adapter(local_backend)
    for path in (str(secret_key), str(database()), "/proc/self/environ"):
        with pytest.raises(FileRefused):
            adapter.read_file(path)  # type: ignore[attr-defined]


def test_data_dir_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scripthut_site import paths

    shared = tmp_path / "data"
    shared.mkdir(mode=0o755)
    monkeypatch.setenv("SCRIPTHUT_DATA_DIR", str(shared))
    assert stat.S_IMODE(paths.data_dir().stat().st_mode) == 0o700
