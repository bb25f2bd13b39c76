"""The ``local`` backend: tasks run as processes on the portal host.

Each job lives in ``<data_dir>/local-jobs/<tag>/``; the job id is the tag. A small
runner script records the pid, start and end times and the exit code there, so any
process (web server, embedded ticker, Celery worker, a restarted portal) can poll,
cancel and reconcile jobs without sharing memory.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from backends.base import (
    BackendAdapter,
    CommandResult,
    FileLogs,
    JobSpec,
    JobState,
    JobStatus,
    PollResult,
    SubmitResult,
    safe_filename,
)
from backends.scripts import script_body, shebang
from backends.status import settle_flags
from backends.units import parse_duration

# Runs detached from the portal: `timeout` enforces the time limit and makes its own
# process group, whose leader pid is kept so that cancel can signal the whole group.
RUNNER = r"""
dir=$1; limit=$2; out=$3; err=$4
echo $$ > "$dir/pid"
date +%s.%N > "$dir/started"
mkdir -p -- "$(dirname -- "$out")" "$(dirname -- "$err")"
timeout --kill-after=5 "$limit" bash "$dir/script.sh" >"$out" 2>"$err" </dev/null &
echo $! > "$dir/group"
wait $!
code=$?
date +%s.%N > "$dir/finished"
echo $code > "$dir/exit_code.tmp" && mv "$dir/exit_code.tmp" "$dir/exit_code"
"""

TIMEOUT_EXIT_CODES = (124, 137)


class LocalAdapter(FileLogs, BackendAdapter):
    """Jobs are processes on this host; also a :class:`~backends.base.ShellAccess`."""

    @property
    def jobs_dir(self) -> Path:
        path = self.data_dir / "local-jobs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def default_log_path(self, job: JobSpec, stream: str) -> str:
        if not self.settings.get("log_dir"):
            return str(self.data_dir / "logs" / job.run_id / f"{safe_filename(job.task_id)}.{stream}")
        return super().default_log_path(job, stream)

    def render_script(self, job: JobSpec) -> str:
        header = [
            shebang(False),
            f"# scripthut local job: time limit {job.time_limit}, cpus {job.cpus}, memory {job.memory}",
        ]
        return "\n".join(header) + "\n" + script_body(job)

    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        results = []
        for job, script in jobs:
            job_dir = self.jobs_dir / job.tag
            try:
                job_dir.mkdir()
            except FileExistsError:
                # Already started by an interrupted earlier submit: never start it twice.
                results.append(SubmitResult(tag=job.tag, job_id=job.tag))
                continue
            (job_dir / "script.sh").write_text(script)
            (job_dir / "name").write_text(job.name)
            out = self._absolute(job.output_file or self.default_log_path(job, "out"), job.working_dir)
            err = self._absolute(job.error_file or self.default_log_path(job, "err"), job.working_dir)
            limit = str(parse_duration(job.time_limit))
            # Double fork (bash -c '... &') so the runner outlives the portal and is not our child.
            launcher = (
                "setsid bash -c "
                + shlex.quote(RUNNER)
                + " runner "
                + " ".join(shlex.quote(a) for a in (str(job_dir), limit, out, err))
                + " >/dev/null 2>&1 </dev/null &"
            )
            subprocess.run(["bash", "-c", launcher], check=True, timeout=30)
            results.append(SubmitResult(tag=job.tag, job_id=job.tag))
        return results

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        statuses = {job_id: settle_flags(self._status(job_id)) for job_id in job_ids}
        observed = [s for s in statuses.values() if s.state in (JobState.QUEUED, JobState.RUNNING)]
        return PollResult(statuses=statuses, observed=observed)

    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        return {tag: tag for tag in tags if (self.jobs_dir / tag).is_dir()}

    def cancel(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            job_dir = self.jobs_dir / job_id
            if not job_dir.is_dir() or (job_dir / "exit_code").exists():
                continue
            (job_dir / "cancelled").touch()
            for _ in range(50):  # the runner writes its group id right after it starts
                group = _read(job_dir / "group")
                if group:
                    try:
                        # TERM to `timeout` is forwarded to the whole job group.
                        os.kill(int(group), signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                    break
                time.sleep(0.05)

    def read_file(self, path: str, max_bytes: int = 256 * 1024) -> str:
        file = Path(os.path.expanduser(path))
        with file.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            return handle.read().decode("utf-8", errors="replace")

    def run_command(
        self, command: str, *, cwd: str | None = None, stdin: bytes | None = None, timeout: float = 120
    ) -> CommandResult:
        if cwd:
            command = f"cd {shlex.quote(os.path.expanduser(cwd))} && {command}"
        proc = subprocess.run(["bash", "-c", command], input=stdin, capture_output=True, timeout=timeout)
        return CommandResult(
            proc.returncode,
            proc.stdout.decode("utf-8", errors="replace"),
            proc.stderr.decode("utf-8", errors="replace"),
        )

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _absolute(path: str, working_dir: str) -> str:
        path = os.path.expanduser(path)
        if os.path.isabs(path):
            return path
        return os.path.join(os.path.expanduser(working_dir), path)

    def _status(self, job_id: str) -> JobStatus:
        job_dir = self.jobs_dir / job_id
        if not job_dir.is_dir():
            return JobStatus(job_id, JobState.UNKNOWN, reason="no such local job")
        status = JobStatus(job_id, JobState.QUEUED, name=_read(job_dir / "name"), tag=job_id, user=_user())
        started = _timestamp(job_dir / "started")
        finished = _timestamp(job_dir / "finished")
        status.started_at = started
        status.finished_at = finished
        if started and finished:
            status.elapsed_seconds = (finished - started).total_seconds()
        cancelled = (job_dir / "cancelled").exists()
        code_text = _read(job_dir / "exit_code")
        if code_text:
            code = int(code_text)
            status.exit_code = code
            if cancelled:
                status.state, status.reason = JobState.CANCELLED, "cancelled"
            elif code == 0:
                status.state = JobState.COMPLETED
            elif code in TIMEOUT_EXIT_CODES:
                status.state, status.reason = JobState.FAILED, "time limit exceeded"
            else:
                status.state, status.reason = JobState.FAILED, f"exit code {code}"
            return status
        pid = _read(job_dir / "pid")
        if not pid:
            return status  # spawned, runner not started yet
        if _alive(int(pid)):
            status.state = JobState.RUNNING
            status.node = os.uname().nodename
            return status
        if cancelled:
            status.state, status.reason = JobState.CANCELLED, "cancelled"
        else:
            status.state, status.reason = JobState.FAILED, "process ended without an exit code (killed?)"
        return status


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _timestamp(path: Path) -> datetime | None:
    text = _read(path)
    return datetime.fromtimestamp(float(text), tz=UTC) if text else None


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def _user() -> str:
    import getpass

    return getpass.getuser()


Adapter = LocalAdapter
