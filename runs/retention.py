"""Retention: what a portal keeps, and for how long (``settings.retention_days``,
``settings.keep_runs_days``).

- Job files: the directories of runs finished more than ``retention_days`` ago (default 30,
  as the original's cleanup; 0 keeps them) are removed on their backends, with one command
  per batch of runs (each backend says which paths are its own: ``job_file_paths``). A run
  is cleaned once (``Run.files_removed_at``). AWS backends keep their logs in CloudWatch,
  under the log group's own retention.
- Database rows: runs finished more than ``keep_runs_days`` ago, with their tasks (default:
  kept).

Both run daily (Celery beat, or the embedded ticker) and from ``scripthut cleanup
[--dry-run]``; what is removed is audited, one event per backend and one for the rows.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from backends.base import BackendError, BackendUnavailable
from backends.identity import identity_of
from backends.models import Backend
from backends.registry import get_adapter, has_shell, shell_access
from backends.scripts import shell_path
from runs.audit import trail
from runs.engine.sql import chunks
from runs.engine.states import RUN_FINISHED
from runs.models import AuditEvent, PortalSettings, Run, Task

RUNS_PER_COMMAND = 200
EVERY = timedelta(days=1)


@dataclass
class CleanupReport:
    files: dict[str, int] = field(default_factory=dict)  # backend -> runs whose job files went
    problems: list[str] = field(default_factory=list)
    runs_deleted: int = 0

    def lines(self, dry_run: bool) -> list[str]:
        verb = "would remove" if dry_run else "removed"
        lines = [f"{backend}: {verb} the job files of {count} run(s)" for backend, count in self.files.items()]
        lines.append(f"database: {'would delete' if dry_run else 'deleted'} {self.runs_deleted} finished run(s)")
        return lines + [f"problem: {problem}" for problem in self.problems]


def cleanup(*, dry_run: bool = False) -> CleanupReport:
    portal = PortalSettings.load()
    report = CleanupReport()
    if portal.retention_days:
        _remove_job_files(timezone.now() - timedelta(days=portal.retention_days), report, dry_run)
    if portal.keep_runs_days:
        _delete_runs(timezone.now() - timedelta(days=portal.keep_runs_days), report, dry_run)
    if not dry_run:
        PortalSettings.objects.filter(pk=portal.pk).update(last_cleanup_at=timezone.now())
    return report


def cleanup_if_due() -> None:
    """The daily cleanup, if a day has passed since the last one (the embedded ticker)."""
    last = PortalSettings.load().last_cleanup_at
    if last is None or timezone.now() - last >= EVERY:
        cleanup()


def _remove_job_files(before: object, report: CleanupReport, dry_run: bool) -> None:
    due = Run.objects.filter(status__in=RUN_FINISHED, finished_at__lt=before, files_removed_at__isnull=True)
    for backend in Backend.objects.filter(pk__in=due.values("backend_id").distinct()):
        runs = due.filter(backend=backend)
        if not has_shell(backend.kind):
            count = runs.update(files_removed_at=timezone.now()) if not dry_run else runs.count()
            report.files[backend.name] = count
            continue
        for owner, run_ids in _runs_by_owner(backend, runs):
            try:
                removed = len(run_ids) if dry_run else _remove_on_backend(backend, owner, run_ids)
            except (BackendError, BackendUnavailable) as exc:
                report.problems.append(f"{backend.name}: {exc}")
                continue
            report.files[backend.name] = report.files.get(backend.name, 0) + removed
        if not dry_run and report.files.get(backend.name):
            trail.record(AuditEvent.Action.FILES_REMOVED, f"backend {backend.name}", runs=report.files[backend.name])


def _runs_by_owner(backend: Backend, runs: object) -> Iterator[tuple[int | None, list[str]]]:
    """Run ids in batches, per owner on a per_user backend (whose files only they reach)."""
    rows = list(runs.values_list("owner_id", "pk"))  # type: ignore[attr-defined]
    owners = sorted({owner for owner, _ in rows}) if backend.per_user else [None]
    for owner in owners:
        ids = [pk for who, pk in rows if owner is None or who == owner]
        for batch in chunks(ids, RUNS_PER_COMMAND):
            yield owner, list(batch)


def _remove_on_backend(backend: Backend, owner: int | None, run_ids: list[str]) -> int:
    adapter = get_adapter(backend, identity_of(backend, owner) if owner is not None else None)
    paths_of = getattr(adapter, "job_file_paths", None)
    if paths_of is None:
        return 0
    job_ids = list(Task.objects.filter(run_id__in=run_ids).exclude(job_id="").values_list("job_id", flat=True))
    paths = paths_of(run_ids, job_ids)
    if paths:
        command = "rm -rf -- " + " ".join(shell_path(p) for p in paths)
        result = shell_access(adapter).run_command(command, timeout=300)
        if result.exit_code != 0:
            raise BackendError(f"removing job files failed: {result.stderr.strip()[-300:] or shlex.quote(command)}")
    return Run.objects.filter(pk__in=run_ids).update(files_removed_at=timezone.now())


def _delete_runs(before: object, report: CleanupReport, dry_run: bool) -> None:
    old = Run.objects.filter(status__in=RUN_FINISHED, finished_at__lt=before)
    if dry_run:
        report.runs_deleted = old.count()
        return
    with transaction.atomic():
        ids = list(old.values_list("pk", flat=True))
        for batch in chunks(ids, RUNS_PER_COMMAND):
            Task.objects.filter(run_id__in=list(batch)).delete()
            Run.objects.filter(pk__in=list(batch)).delete()
        report.runs_deleted = len(ids)
        if ids:
            trail.record(AuditEvent.Action.RUNS_DELETED, "runs", count=len(ids), finished_before=str(before))
