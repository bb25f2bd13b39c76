"""Retention (issue 21: job directories piled up forever, and so did runs): finished runs'
job files go after ``retention_days``, their rows after ``keep_runs_days``; what is
removed is audited; ``scripthut cleanup [--dry-run]`` and the daily beat/ticker do it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from backends.models import Backend
from backends.registry import get_adapter
from runs import retention
from runs.actions import create_run
from runs.models import AuditEvent, PortalSettings, Run, Task
from tests.cluster import Cluster, cluster  # noqa: F401  (fixture)
from tests.test_cli import home, scripthut  # noqa: F401  (fixture)
from tests.test_slurm import slurm, wait_for  # noqa: F401  (fixture)

Runner = Callable[..., Run]
TASKS: list[dict[str, Any]] = [{"id": f"t{i}", "name": f"t{i}", "command": f"echo {i}"} for i in range(3)]


def finished_days_ago(run: Run, days: int) -> None:
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=days))


def job_dirs(backend: Backend, run: Run) -> list[Path]:
    adapter = get_adapter(backend)
    job_ids = list(run.tasks.values_list("job_id", flat=True))
    return [Path(p) for p in adapter.job_file_paths([run.pk], job_ids)]  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_job_files_of_old_finished_runs_go_once_and_recent_ones_stay(
    user: User, local_backend: Backend, run_to_end: Runner
) -> None:
    old = run_to_end(create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="old"))
    recent = run_to_end(create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="recent"))
    finished_days_ago(old, 31)
    finished_days_ago(recent, 29)
    old_dirs, recent_dirs = job_dirs(local_backend, old), job_dirs(local_backend, recent)
    assert len(old_dirs) == 4 and all(d.is_dir() for d in old_dirs + recent_dirs)  # the run's and 3 jobs'

    dry = retention.cleanup(dry_run=True)
    assert dry.lines(True)[0] == "local: would remove the job files of 1 run(s)"
    assert all(d.is_dir() for d in old_dirs) and not AuditEvent.objects.filter(action="files_removed").exists()

    done = retention.cleanup()
    assert (done.files, done.problems) == ({"local": 1}, [])
    assert not any(d.exists() for d in old_dirs) and all(d.is_dir() for d in recent_dirs)
    assert Run.objects.get(pk=old.pk).files_removed_at is not None
    assert Run.objects.filter(pk=old.pk).exists()  # rows are kept: keep_runs_days is unset
    event = AuditEvent.objects.get(action="files_removed")
    assert (event.target, event.detail) == ("backend local", {"runs": 1})

    assert retention.cleanup().files == {}  # each run once


@pytest.mark.django_db(transaction=True)
def test_rows_of_runs_older_than_keep_runs_days_are_deleted(user: User, local_backend: Backend) -> None:
    PortalSettings.objects.update_or_create(pk=1, defaults={"keep_runs_days": 90, "retention_days": 0})
    old = create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="old")
    kept = create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="kept")
    unfinished = create_run(owner=user, backend=local_backend, payload=TASKS, workflow_name="unfinished")
    Run.objects.filter(pk__in=[old.pk, kept.pk]).update(status=Run.Status.COMPLETED)
    finished_days_ago(old, 91)
    finished_days_ago(kept, 89)
    Run.objects.filter(pk=unfinished.pk).update(finished_at=timezone.now() - timedelta(days=365))  # still running

    assert retention.cleanup(dry_run=True).runs_deleted == 1 and Run.objects.count() == 3
    assert retention.cleanup().runs_deleted == 1
    assert set(Run.objects.values_list("pk", flat=True)) == {kept.pk, unfinished.pk}
    assert not Task.objects.filter(run_id=old.pk).exists()
    assert AuditEvent.objects.get(action="runs_deleted").detail["count"] == 1


@pytest.mark.django_db
def test_the_daily_cleanup_runs_once_a_day(time_machine: Any) -> None:
    time_machine.move_to(timezone.now(), tick=False)
    PortalSettings.objects.update_or_create(pk=1, defaults={"last_cleanup_at": timezone.now() - timedelta(hours=23)})
    retention.cleanup_if_due()
    assert PortalSettings.load().last_cleanup_at == timezone.now() - timedelta(hours=23)  # not yet due
    time_machine.shift(timedelta(hours=1))
    retention.cleanup_if_due()
    assert PortalSettings.load().last_cleanup_at == timezone.now()


def test_beat_schedules_the_cleanup_daily() -> None:
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["scripthut-cleanup"]
    assert (entry["task"], entry["schedule"]) == ("runs.workers.celery_tasks.cleanup", 86400.0)


@pytest.mark.slow  # over 8 s: left out of make test-fast
def test_scripthut_cleanup_from_the_command_line(home: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    config = Path(home["SCRIPTHUT_CONFIG"])
    config.write_text("backends:\n  - name: local\n    type: local\nsettings:\n  retention_days: 1\n")
    scripthut(home, "import-config", str(config))
    scripthut(home, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    workflow = tmp_path / "w.json"
    workflow.write_text(json.dumps(TASKS))
    scripthut(home, "run", str(workflow), "--backend", "local", "--wait")
    age = "from runs.models import Run; from django.utils import timezone as tz; from datetime import timedelta as td; "
    scripthut(home, "shell", "-c", age + "Run.objects.update(finished_at=tz.now() - td(days=2))")
    work = Path(home["SCRIPTHUT_DATA_DIR"] + "-work") / "local" / "runs"
    assert len(list(work.iterdir())) == 1

    dry = scripthut(home, "cleanup", "--dry-run").stdout.splitlines()
    assert dry == ["local: would remove the job files of 1 run(s)", "database: would delete 0 finished run(s)"]
    assert len(list(work.iterdir())) == 1
    assert scripthut(home, "cleanup").stdout.splitlines()[0] == "local: removed the job files of 1 run(s)"
    assert list(work.iterdir()) == []


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_a_slurm_runs_log_directory_goes_in_one_command(user: User, slurm: Backend, cluster: Cluster) -> None:  # noqa: F811
    tasks = [{"id": "a", "name": "a", "command": "echo hi", "time_limit": "5:00"}]
    run = wait_for(create_run(owner=user, backend=slurm, payload=tasks, workflow_name="logs"))
    (log_dir,) = job_dirs(slurm, run)
    assert cluster.run_as_user(f"ls {log_dir}").split() == ["a.err", "a.out"]
    finished_days_ago(run, 31)
    assert retention.cleanup().files == {"slurm": 1}
    assert cluster.run_as_user(f"test -e {log_dir} && echo there || echo gone").strip() == "gone"
