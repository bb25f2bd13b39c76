"""The ``local`` backend: tasks run as processes on the portal host.

Every job's files live in the backend's work root (``work_dir``; by default
``/var/tmp/scripthut-<backend>`` with ``run_as``, else ``<data dir>-work/<backend>``:
never inside the data dir, which holds the secret key and the database; with ``run_as:
per_user`` one per account, :func:`backends.local.settings.work_root`)::

    <work root>/            0700, owned by the tasks' user (run_as, else the portal's)
        jobs/<tag>/         one per job, the job id is the tag: script.sh, name, and the
                            runner's pid, group, started, finished, exit_code, cancelled
        runs/<run id>/      the run's directory: default logs (<task>.out, <task>.err);
                            a task's output/error/generated files must be in it, or in
                            one of the backend's ``allowed_paths``

The runner records pid, times and exit code there, so any process (web server,
embedded ticker, Celery worker, a restarted portal) can poll, cancel and reconcile jobs
without sharing memory. Task files are confined by :mod:`backends.local.confine`; with
``run_as`` every task and shell command runs as that user, or as the run's owner's own
account with ``per_user`` (an adapter per owner; :mod:`backends.local.runas`).
"""

from __future__ import annotations

import fcntl
import getpass
import os
import shlex
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from backends.base import (
    BackendAdapter,
    BackendError,
    BackendUnavailable,
    CommandResult,
    FileLogs,
    FileRefused,
    JobSpec,
    JobState,
    JobStatus,
    PollResult,
    SubmitResult,
    TaskLog,
    refuse_special,
    safe_filename,
)
from backends.identity import adapter_as
from backends.local.account_reads import read_as_account, snapshots
from backends.local.confine import DISCARD, Confinement, make_private_dirs, open_for_task, read_tail
from backends.local.ends import running_ids, watch_runners
from backends.local.jobfiles import JobFiles
from backends.local.launches import side_by_side
from backends.local.portal_shell import PortalShell
from backends.local.runas import RunAs
from backends.local.runner import CANCEL, LAUNCHER, RUNNER
from backends.local.settings import PER_USER, network_of, work_root
from backends.local.status import has_started, status_of
from backends.scripts import script_body, shebang
from backends.status import settle_flags
from backends.units import is_unlimited, parse_duration
from scripthut_site.paths import config_path

if TYPE_CHECKING:
    from backends.base import Identity
    from backends.models import Backend

ALREADY_STARTED, ROOT_UNUSABLE, NOT_TAKEN = 3, 4, 5  # exit codes of the launcher
REFUSED = 126  # the root helper refused the account (backends/local/scripthut-runas)
START_WAIT = 2.0  # seconds submit waits for the runners it launched to start
READ_TIMEOUT = 15  # seconds for reading a file as run_as: a FIFO swapped in must not hang a page
TASK_FILES = ("output_file", "error_file", "generates_source")


class WorkRootUnusable(BackendError):
    """The work root is not a private directory of the tasks' user, or the tasks' account
    may not be used (the helper refused it): nothing can start, the tasks wait."""


class LocalAdapter(FileLogs, BackendAdapter):
    """Jobs are processes on this host; also a :class:`~backends.base.ShellAccess`."""

    starts_jobs_at_submit = True  # submit returns once the runners have started
    unlimited_time = True  # `timeout 0` never fires

    def __init__(self, backend: Backend, data_dir: Path, identity: Identity | None = None) -> None:
        super().__init__(backend, data_dir, identity)
        user = self.settings.get("run_as")
        # run_as: per_user: as the identity's OS account; without one, this adapter runs nothing.
        self.per_user = user == PER_USER
        if self.per_user:
            user = identity.username if identity else None
        try:
            self.run_as = RunAs.lookup(user) if user else None
        except KeyError:
            raise BackendUnavailable(f"run_as user {user!r} does not exist on this host") from None
        self.network = network_of(self.settings)
        self.work_root = work_root(self.settings, self.name, data_dir, user)
        self._watched: set[str] = set()  # jobs whose runner's exit wakes the engine

    # -- where files are -------------------------------------------------------------

    @property
    def jobs_dir(self) -> Path:
        return self.work_root / "jobs"

    def run_dir(self, run_id: str) -> Path:
        """The run's directory (all runs' directories for an unknown run)."""
        return self.work_root / "runs" / safe_filename(run_id) if run_id else self.work_root / "runs"

    def job_file_paths(self, run_ids: Sequence[str], job_ids: Sequence[str]) -> list[str]:
        """What retention removes (``runs.retention``): the runs' directories and their jobs'."""
        return [str(self.run_dir(r)) for r in run_ids] + [str(self.jobs_dir / safe_filename(j)) for j in job_ids]

    @property
    def home(self) -> str:
        """What ``~`` means for the tasks."""
        return self.run_as.home if self.run_as else os.path.expanduser("~")

    def confinement(self, run_id: str) -> Confinement:
        """Where the files of a task of ``run_id`` may be: its run's directory, the
        backend's ``allowed_paths`` and its ``log_dir``, never the portal's own files."""
        allowed = [str(self.run_dir(run_id)), *(self.settings.get("allowed_paths") or [])]
        if self.settings.get("log_dir"):
            allowed.append(self._expand(self.settings["log_dir"]))
        return Confinement.of(allowed, self._portal_files())

    def _portal_files(self) -> list[str]:
        files = [str(self.data_dir), str(config_path())]
        for database in settings.DATABASES.values():
            if "sqlite" in str(database.get("ENGINE", "")) and database.get("NAME"):
                files += [f"{database['NAME']}{suffix}" for suffix in ("", "-wal", "-shm", "-journal")]
        return files

    def default_log_path(self, job: JobSpec, stream: str) -> str:
        if not self.settings.get("log_dir"):
            return str(self.run_dir(job.run_id) / f"{safe_filename(job.task_id)}.{stream}")
        return super().default_log_path(job, stream)

    # -- jobs ------------------------------------------------------------------------

    def render_script(self, job: JobSpec) -> str:
        self.check_task_files(job)
        header = [
            shebang(False),
            f"# scripthut local job: time limit {job.time_limit}, cpus {job.cpus}, memory {job.memory}",
        ]
        return "\n".join(header) + "\n" + script_body(job)

    def check_task_files(self, job: JobSpec) -> None:
        """ValueError naming the field when a task's output, error or generated file is not
        where the task may write (the engine then fails the task with that message)."""
        confinement = self.confinement(job.run_id)
        for field in TASK_FILES:
            path = getattr(job, field)
            if not path or (path == DISCARD and field != "generates_source"):
                continue
            problem = confinement.problem(self._absolute(path, job.working_dir))
            if problem:
                raise ValueError(f"{field}: {problem}")

    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        results = side_by_side(self._submit_one, jobs, WorkRootUnusable)
        self._wait_for_start([r.job_id for r in results if r.job_id])
        return results

    def _wait_for_start(self, job_ids: list[str]) -> None:
        """Until the runners just launched have written their start markers (all at once,
        START_WAIT seconds at most): a poll right after the submit then finds them running."""
        if self._reads_as_account:
            return  # the poll right after the submit reads them as their account
        deadline = time.monotonic() + START_WAIT
        waiting = list(job_ids)
        while waiting and time.monotonic() < deadline:
            time.sleep(0.002)
            waiting = [job_id for job_id in waiting if not has_started(self.work_root, job_id)]
        watch_runners(self.work_root, self.backend.pk, job_ids, self._watched, launched=True)

    def _submit_one(self, job: JobSpec, script: str) -> SubmitResult:
        self._require_account()
        with JobFiles(self.work_root, job.tag) as files:
            if files.present:  # started by an interrupted earlier submit: never start it twice
                return SubmitResult(tag=job.tag, job_id=job.tag)
        out = self._absolute(job.output_file or self.default_log_path(job, "out"), job.working_dir)
        err = self._absolute(job.error_file or self.default_log_path(job, "err"), job.working_dir)
        if self.run_as:  # the runner opens the files, as that user
            return self._launch(job, script, [out, err, "", ""], [])
        fds = self._open_outputs(job.run_id, out, err)
        try:
            return self._launch(job, script, ["", "", *map(str, fds)], fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _launch(self, job: JobSpec, script: str, files: list[str], fds: list[int]) -> SubmitResult:
        """Run the launcher; ``files`` are the runner's out, err, and fds to use instead."""
        umask, mode = ("027", "750") if self.run_as and self.run_as.with_sudo and not self.per_user else ("077", "700")
        args = [umask, mode, str(self.work_root), job.tag, job.run_id, job.name, RUNNER]
        args += [str(0 if is_unlimited(job.time_limit) else parse_duration(job.time_limit)), *files]
        command = self._as_user(["bash", "-c", LAUNCHER, "launcher", *args], self.network)
        proc = subprocess.run(command, input=script.encode(), capture_output=True, timeout=30, pass_fds=fds, cwd="/")
        problem = proc.stderr.decode("utf-8", errors="replace").strip()
        if proc.returncode in (ROOT_UNUSABLE, REFUSED):
            raise WorkRootUnusable(problem or f"work_dir {self.work_root} is unusable")
        if proc.returncode == NOT_TAKEN:
            return SubmitResult(tag=job.tag, retry=True, error=problem)
        if proc.returncode not in (0, ALREADY_STARTED):
            return SubmitResult(tag=job.tag, error=f"cannot start the job: {problem or proc.returncode}")
        return SubmitResult(tag=job.tag, job_id=job.tag)

    def _open_outputs(self, run_id: str, out: str, err: str) -> list[int]:
        """The task's output and error files, opened and checked, as fds >= 10 (the
        launcher moves them to 3 and 4)."""
        self._own_work_root()
        confinement = self.confinement(run_id)
        fds: list[int] = []
        try:
            for path in (out, err) if err != out else (out,):
                fd = open_for_task(path, confinement)
                fds.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
                os.close(fd)
            if err == out:  # one file for both streams: one shared offset, as with 2>&1
                fds.append(fcntl.fcntl(fds[0], fcntl.F_DUPFD_CLOEXEC, 10))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def _own_work_root(self) -> None:
        """Without run_as the portal writes in the work root itself: it must be its own."""
        make_private_dirs(str(self.work_root))
        info = os.lstat(self.work_root)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise WorkRootUnusable(f"work_dir {self.work_root} must be a directory owned by {getpass.getuser()}")
        os.chmod(self.work_root, 0o700)

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        statuses = {job_id: settle_flags(status) for job_id, status in self._statuses(job_ids).items()}
        running = running_ids(statuses)  # those started by another process (a restarted portal) too
        self._watched &= running
        watch_runners(self.work_root, self.backend.pk, sorted(running), self._watched)
        observed = [s for s in statuses.values() if s.state in (JobState.QUEUED, JobState.RUNNING)]
        return PollResult(statuses=statuses, observed=observed)

    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        """Jobs whose runner took them. A job directory without a claim is a launch that
        died half-way (the caller holds the backend's lock: no launch is under way): we
        take its claim, so that a runner started after all exits without running it."""
        found = {}
        job_files = self._job_files(tags)
        for tag in tags:
            with job_files[tag] as files:
                if not files.present:
                    continue
                if files.exists("claim") or not self._take_claim(tag):
                    found[tag] = tag
        return found

    def _take_claim(self, tag: str) -> bool:
        """True if we took ``tag``'s claim (its runner never will); False if its runner has it."""
        claim = str(self.jobs_dir / safe_filename(tag) / "claim")
        proc = subprocess.run(self._as_user(["mkdir", "--", claim]), capture_output=True, timeout=30, cwd="/")
        return proc.returncode == 0

    def cancel(self, job_ids: Sequence[str]) -> None:
        dirs = [str(self.jobs_dir / job_id) for job_id in job_ids if job_id == safe_filename(job_id)]
        if dirs:
            command = self._as_user(["bash", "-c", CANCEL, "cancel", *dirs])
            subprocess.run(command, capture_output=True, timeout=30 + 3 * len(dirs), cwd="/")

    # -- files and commands ------------------------------------------------------------

    def read_log(self, log: TaskLog, max_bytes: int = 256 * 1024) -> str:
        if self.per_user and log.owner_id is not None and getattr(self.identity, "user_id", None) != log.owner_id:
            # Read as the run's owner: their work root, their account's rights.
            return adapter_as(self.backend, log.owner_id).read_log(log, max_bytes)
        location = self.log_location(log)
        if not location:
            raise FileNotFoundError(f"task has no {log.stream} file")
        return self.read_task_file(log.run_id, location, max_bytes)

    def read_task_file(self, run_id: str, path: str, max_bytes: int = 256 * 1024) -> str:
        """A file a task named, if it (still) is where the task may write."""
        return self._read(self._expand(path), max_bytes, self.confinement(run_id))

    def read_file(self, path: str, max_bytes: int = 256 * 1024) -> str:
        """Any regular file the tasks' user may read, except the portal's own files."""
        return self._read(self._expand(path), max_bytes, Confinement.of(["/"], self._portal_files()))

    def _read(self, path: str, max_bytes: int, confinement: Confinement) -> str:
        self._require_account()
        if self.run_as is None:
            return read_tail(path, max_bytes, confinement)
        if self._reads_as_account:  # the portal cannot even look at the path
            return read_as_account(self._run_as_account, path, max_bytes, confinement)
        # Read as the tasks' user: root could read files that user may not.
        real = os.path.realpath(path)
        confinement.check(real)
        refuse_special(real, os.stat(real).st_mode)
        command = self._as_user(["tail", "-c", str(max_bytes), "--", real])
        try:
            proc = subprocess.run(command, capture_output=True, timeout=READ_TIMEOUT, cwd="/")
        except subprocess.TimeoutExpired:
            raise FileRefused(f"{path}: reading it did not finish in {READ_TIMEOUT}s") from None
        if proc.returncode != 0:
            problem = proc.stderr.decode("utf-8", errors="replace").strip()
            raise FileRefused(f"{path} cannot be read by {self.run_as.user}: {problem}")
        return proc.stdout.decode("utf-8", errors="replace")

    def run_command(
        self, command: str, *, cwd: str | None = None, stdin: bytes | None = None, timeout: float = 120
    ) -> CommandResult:
        if cwd:
            command = f"cd {shlex.quote(self._expand(cwd))} && {command}"
        proc = subprocess.run(
            self._as_user(["bash", "-c", command]),
            input=stdin,
            capture_output=True,
            timeout=timeout,
            cwd="/" if self.run_as else None,
        )
        return CommandResult(
            proc.returncode,
            proc.stdout.decode("utf-8", errors="replace"),
            proc.stderr.decode("utf-8", errors="replace"),
        )

    def checkout_shell(self) -> PortalShell:
        """Git checkouts are made by the portal's own account, never a task's: tasks may
        read them, not change them (``sources.git``)."""
        return PortalShell(self.name)

    # -- helpers ---------------------------------------------------------------------

    def _as_user(self, argv: list[str], network: str = "host") -> list[str]:
        self._require_account()
        if self.run_as:
            return self.run_as.command(argv, network)
        return argv

    def _require_account(self) -> None:
        """On a per_user backend only an owner's adapter (their OS account) runs anything."""
        if self.per_user and self.run_as is None:
            raise BackendUnavailable(
                f"backend {self.name!r} runs tasks as each user's own OS account: nothing runs without one"
            )

    def _expand(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            return self.home + path[1:]
        return os.path.expanduser(path)

    def _absolute(self, path: str, working_dir: str) -> str:
        path = self._expand(path)
        if os.path.isabs(path):
            return path
        return os.path.join(self._expand(working_dir), path)

    @property
    def _reads_as_account(self) -> bool:
        """An unprivileged portal reads a per_user account's job files (0700) as that account."""
        return self.per_user and self.run_as is not None and self.run_as.with_sudo

    def _job_files(self, tags: Sequence[str]) -> dict[str, JobFiles]:
        """Each job's runner files: opened by the portal, or read as the jobs' account."""
        if not self._reads_as_account:
            return {tag: JobFiles(self.work_root, tag) for tag in tags}
        return snapshots(self._run_as_account, self.jobs_dir, tags)

    def _run_as_account(self, argv: list[str]) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(self._as_user(argv), capture_output=True, timeout=READ_TIMEOUT, cwd="/")
        except subprocess.TimeoutExpired:
            raise FileRefused(f"reading as the tasks' account did not finish in {READ_TIMEOUT}s") from None

    def _statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        user = self.run_as.user if self.run_as else getpass.getuser()
        statuses = {}
        for job_id, files in self._job_files(job_ids).items():
            with files as opened:
                statuses[job_id] = status_of(opened, job_id, user)
        # A runner that ended after the snapshot was read: its exit code is there now.
        lost = (JobState.FAILED, JobState.CANCELLED)
        ended = [j for j, s in statuses.items() if s.exit_code is None and s.state in lost]
        if ended and self._reads_as_account:
            for job_id, files in self._job_files(ended).items():
                statuses[job_id] = status_of(files, job_id, user)
        return statuses


Adapter = LocalAdapter
