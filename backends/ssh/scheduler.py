"""What the SSH schedulers (Slurm, PBS) share: the transport, commands, files, the job
script's frame, and submit, poll, cancel and find_submitted, each one round trip.

A scheduler subclass adds only what differs (in the manner of dask-jobqueue, where a
scheduler adds its header to one script template): its directive lines
(:meth:`SshScheduler.header`), the submit command and its dependency flag, the cancel
command and the errors it may ignore, and how to list jobs (:meth:`query_jobs`,
:meth:`tagged_jobs`) with its parsers.

A submit batch is one bash script fed to ``bash -s`` (:mod:`backends.ssh.batch`: the
job script's frame, job arrays, the batch script).
"""

from __future__ import annotations

import re
import shlex
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from backends.base import (
    BackendError,
    BackendUnavailable,
    ClusterInfo,
    CommandResult,
    FileLogs,
    JobSpec,
    JobState,
    JobStatus,
    PollResult,
    SubmitResult,
    TaskLog,
)
from backends.identity import adapter_as
from backends.scripts import shell_path
from backends.ssh.batch import (
    HOLD_SUBMIT_LOCK,
    SUBMIT_LOCK_BUSY,
    SUBMIT_LOCK_FILE,
    SUBMIT_LOCK_WAIT_SECONDS,
    SubmitBatch,
)
from backends.ssh.keys import KeyProblem, load_key
from backends.ssh.markers import READ_MARKERS, parse_markers
from backends.ssh.transport import ConnectionLost, SshTransport
from backends.ssh.watch import EndMarkerWatch

if TYPE_CHECKING:
    from backends.models import Backend, ClusterIdentity

IDS_PER_COMMAND = 500  # job ids per command (qdel, scancel, qstat): keeps argv far below ARG_MAX


class SshScheduler(FileLogs, SubmitBatch):
    """Base of the schedulers reached over SSH; also a :class:`~backends.base.ShellAccess`."""

    def __init__(self, backend: Backend, data_dir: Path, identity: ClusterIdentity | None = None):
        super().__init__(backend, data_dir, identity)
        self.transport = SshTransport.from_settings(self.settings["ssh"], _login(identity) if identity else None)
        self.supports_native_dependencies = bool(self.settings.get("native_dependencies", True))
        self.read_ends_every = float(self.settings.get("end_markers_every", 5))
        # Not per_user: its ticks poll the scheduler (no marker reads), so a wake would poll.
        watching = self.read_ends_every and self.settings.get("watch_end_markers", True) and not backend.per_user
        self.end_watch = EndMarkerWatch(self.transport, backend.pk) if watching and backend.pk else None
        # Jobs this adapter saw end by their marker: a poll asks about them only for what the
        # scheduler's accounting measured (see :meth:`measured_only`).
        self.ended_by_marker: set[str] = set()

    def watch_ends(self, run_ids: Iterable[str]) -> None:
        """While these runs have live jobs here: wake the engine as soon as one leaves its
        end marker (:mod:`backends.ssh.watch`), not at the next marker read."""
        if self.end_watch is not None:
            self.end_watch.ensure(run_ids)

    # -- what each scheduler defines ---------------------------------------------------

    @abstractmethod
    def query_jobs(self, job_ids: Sequence[str]) -> tuple[list[JobStatus], dict[str, JobStatus]]:
        """One poll's listings: every live job on the scheduler (anyone's: the dashboard),
        and the status of each of ``job_ids`` that was found, finished ones included,
        keyed by the id as asked."""

    @abstractmethod
    def tagged_jobs(self) -> Iterable[tuple[str, str]]:
        """(job id, tag) of every job the scheduler still knows, finished ones as far as
        it remembers; run under the submit lock (:meth:`run_under_submit_lock`). A
        listing that could miss a job raises BackendError, never returns less."""

    # The command that cancels jobs, given their ids (scancel, qdel).
    cancel_command: str = ""
    # What the cancel command may say about a job that has finished or left: not an error.
    cancel_benign = re.compile(r"(?!)")  # (this one matches nothing)

    def cancel_error_lines(self, result: CommandResult) -> list[str]:
        """The lines of the cancel script's output that may be errors (its stderr)."""
        return result.stderr.splitlines()

    # Why a job asked about in a poll was not found.
    not_found_reason = "not known to the scheduler"

    # Submit errors that mean "not now" (controller unreachable, a submit limit): the task is
    # queued again instead of failed.
    transient_submit_errors: tuple[str, ...] = ()
    # Submit errors of a job held on native dependencies that mean a job it was to wait on
    # is gone from the scheduler (sbatch: "Job dependency problem"): the task is submitted
    # again later, without scheduler-held dependencies.
    parent_gone_submit_errors: tuple[str, ...] = ("dependency",)

    def parse_job_id(self, output: str) -> str:
        return output.strip()

    def is_transient(self, error: str) -> bool:
        return _mentions(error, self.transient_submit_errors)

    def check_submit_lock(self, result: CommandResult) -> None:
        """Raise if a script starting with HOLD_SUBMIT_LOCK could not take the lock."""
        if result.exit_code == SUBMIT_LOCK_BUSY and not result.stdout.strip():
            detail = result.stderr.strip()[-300:] or "cannot take the submit lock"
            raise BackendError(f"{detail} (~/{SUBMIT_LOCK_FILE}); trying again at the next poll")

    # -- shared ------------------------------------------------------------------------

    def run_command(
        self, command: str, *, cwd: str | None = None, stdin: bytes | None = None, timeout: float = 120
    ) -> CommandResult:
        if cwd:
            command = f"cd {shell_path(cwd)} && {command}"
        return self.transport.run(command, stdin=stdin, timeout=timeout)

    def read_file(self, path: str, max_bytes: int = 256 * 1024) -> str:
        return self.transport.read_file(path, max_bytes)

    def read_log(self, log: TaskLog, max_bytes: int = 256 * 1024) -> str:
        # On a per_user backend a log is its owner's file (home directories are private,
        # ``~`` is their home): read it as them, whoever asks.
        acting_for = self.identity.user_id if self.identity else None
        if self.backend.per_user and log.owner_id is not None and log.owner_id != acting_for:
            return adapter_as(self.backend, log.owner_id).read_log(log, max_bytes)
        return super().read_log(log, max_bytes)

    def close(self) -> None:
        if self.end_watch is not None:
            self.end_watch.close()
        self.transport.close()

    @property
    def clone_dir(self) -> str:
        return str(self.settings.get("clone_dir") or "~/scripthut-repos")

    def clone_dir_usage(self) -> str:
        """Shell command printing the disk use of ``clone_dir`` (read by :meth:`with_clone_dir_usage`)."""
        return f"du -sk {shell_path(self.clone_dir)} 2>/dev/null"

    def with_clone_dir_usage(self, info: ClusterInfo, du_output: str) -> ClusterInfo:
        size = du_output.split()
        if size and size[0].isdigit():
            info.clone_dir = self.clone_dir
            info.clone_dir_mb = round(int(size[0]) / 1024, 1)
        return info

    def run_under_submit_lock(self, script: str, timeout: float) -> CommandResult:
        """Run ``script`` once no submit batch is running (see ``HOLD_SUBMIT_LOCK``)."""
        result = self.transport.run_script(HOLD_SUBMIT_LOCK + script, timeout=timeout + SUBMIT_LOCK_WAIT_SECONDS)
        self.check_submit_lock(result)
        return result

    # -- the adapter interface, for every SSH scheduler --------------------------------

    def read_ends(self, jobs: Mapping[str, tuple[str, str]]) -> PollResult:
        """One command on the open connection: the end markers of these jobs (job id ->
        (run id, tag)), removed once printed (a read lost with the portal's crash leaves
        the end to the scheduler's poll). Start markers of jobs that have not ended say
        they run."""
        keys = {f"{run_id}/{tag}": job_id for job_id, (run_id, tag) in jobs.items()}
        if not keys:
            return PollResult(statuses={})
        self.watch_ends(run_id for run_id, _ in jobs.values())
        script = READ_MARKERS + "".join(f"m {shlex.quote(key)}\n" for key in keys)
        result = self.transport.run_script(script, timeout=60)
        if result.exit_code != 0:
            raise BackendError(f"reading the end markers failed: {result.stderr.strip()[:300]}")
        statuses = parse_markers(result.stdout, keys)
        self.ended_by_marker.update(job_id for job_id, status in statuses.items() if status.state.is_final)
        return PollResult(statuses=statuses)

    def measured_only(self, job_ids: Iterable[str]) -> set[str]:
        """Those of ``job_ids`` asked about only for their accounting (they ended by their
        marker): a listing that has no measurements need not be asked about them."""
        return self.ended_by_marker.intersection(job_ids)

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        ids = list(dict.fromkeys(job_ids))
        self.ended_by_marker.intersection_update(ids)  # the engine asks no longer: forgotten
        live, found = self.query_jobs(ids)
        statuses: dict[str, JobStatus] = {}
        for job_id in ids:
            status = found.get(job_id) or JobStatus(job_id, JobState.UNKNOWN, reason=self.not_found_reason)
            statuses[job_id] = status if status.job_id == job_id else replace(status, job_id=job_id)
        observed = [s for s in live if s.state in (JobState.QUEUED, JobState.RUNNING)]
        return PollResult(statuses=statuses, observed=observed)

    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        wanted = set(tags)
        if not wanted:
            return {}
        # An array element's tag is <array tag>_<index>; its array's job carries the array tag.
        arrays = {tag.rpartition("_")[0] for tag in wanted if tag.rpartition("_")[2].isdigit()}
        found: dict[str, str] = {}
        array_ids: dict[str, str] = {}
        for job_id, tag in self.tagged_jobs():
            if tag in wanted:
                found.setdefault(tag, job_id)
            elif tag in arrays:
                array_ids.setdefault(tag, self.array_job_id(job_id))
        for tag in wanted - found.keys():
            array_tag, _, index = tag.rpartition("_")
            if array_tag in array_ids:
                found[tag] = self.element_job_id(array_ids[array_tag], int(index))
        return found

    def array_job_id(self, job_id: str) -> str:
        """The array job's id, from the id of any of its elements as a listing shows it."""
        return job_id

    def cancel(self, job_ids: Sequence[str]) -> None:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return
        script = "\n".join(with_ids(self.cancel_command, chunk) for chunk in chunks(ids)) + "\n"
        result = self.transport.run_script(script, timeout=120)
        # Jobs that already finished or left the scheduler are fine: they are not running.
        lines = self.cancel_error_lines(result)
        errors = [line for line in lines if line.strip() and not self.cancel_benign.search(line)]
        if errors:
            raise BackendError(f"{self.cancel_command} failed: {' '.join(errors)[-500:]}")

    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        script = self.submit_script(jobs)
        try:
            result = self.transport.run_script(script, timeout=300)
        except ConnectionLost as exc:
            # Sent, maybe partly run: the engine reconciles these tasks by tag.
            raise BackendError(f"connection lost while submitting; reconciling later ({exc})") from exc
        self.check_submit_lock(result)
        self.watch_ends(job.run_id for job, _ in jobs)
        outcomes = self.submit_outcomes(result.stdout, [job for job, _ in jobs])
        if not outcomes and result.exit_code != 0:
            raise BackendError(f"submit batch failed (exit {result.exit_code}): {result.stderr.strip()[-500:]}")
        # Jobs missing from the output stay `submitting` and are reconciled by tag.
        return [outcomes[job.tag] for job, _ in jobs if job.tag in outcomes]

    def job_file_paths(self, run_ids: Sequence[str], job_ids: Sequence[str]) -> list[str]:
        """What retention removes (``runs.retention``): the runs' default log directories
        (scripts go to the scheduler on stdin; a task's own output paths are the user's)."""
        log_dir = (self.settings.get("log_dir") or "~/.cache/scripthut/logs").rstrip("/")
        return [f"{log_dir}/{run_id}" for run_id in run_ids]

    def submit_outcomes(self, stdout: str, jobs: Sequence[JobSpec]) -> dict[str, SubmitResult]:
        """Each job's outcome by tag, from the batch's output; an array's one line answers
        for each of its elements, with the element's own job id."""
        held = {job.tag for job in jobs if job.after_job_ids or job.after_tags}
        arrays: dict[str, list[JobSpec]] = {}
        for job in jobs:
            if job.array_tag:
                arrays.setdefault(job.array_tag, []).append(job)
        outcomes: dict[str, SubmitResult] = {}
        for outcome in filter(None, (self.submit_outcome(line, held) for line in stdout.splitlines())):
            for element in arrays.get(outcome.tag, []):
                job_id = self.element_job_id(outcome.job_id, element.array_index) if outcome.job_id else ""
                outcomes[element.tag] = replace(outcome, tag=element.tag, job_id=job_id)
            if outcome.tag not in arrays:
                outcomes[outcome.tag] = outcome
        return outcomes

    def submit_outcome(self, line: str, held: set[str]) -> SubmitResult | None:
        """One line of the batch's output; ``held``: tags of jobs with native dependencies."""
        kind, _, rest = line.partition(" ")
        tag, _, detail = rest.partition(" ")
        if kind == "SCRIPTHUT-OK":
            return SubmitResult(tag=tag, job_id=self.parse_job_id(detail))
        if kind == "SCRIPTHUT-ERR":
            error = detail.strip() or "submission failed"
            parent_gone = tag in held and _mentions(error, self.parent_gone_submit_errors)
            return SubmitResult(tag=tag, error=error, retry=self.is_transient(error), parent_gone=parent_gone)
        if kind == "SCRIPTHUT-SKIP":
            # A parent earlier in this batch was not submitted: not sent, to go again later.
            return SubmitResult(tag=tag, parent_gone=True)
        return None


def chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), IDS_PER_COMMAND):
        yield items[start : start + IDS_PER_COMMAND]


def with_ids(command: str, ids: Sequence[str]) -> str:
    """``command`` followed by the job ids, each quoted."""
    return command + "".join(" " + shlex.quote(i) for i in ids)


def _login(identity: ClusterIdentity) -> tuple[str, paramiko.PKey]:
    """The identity's username and key, decrypted into memory only (never to a file)."""
    try:
        return identity.username, load_key(identity.private_key, identity.passphrase, identity.certificate)
    except KeyProblem as exc:
        raise BackendUnavailable(f"the key of cluster identity {identity.username} cannot be used: {exc}") from None


def _mentions(error: str, patterns: Sequence[str]) -> bool:
    lowered = error.lower()
    return any(pattern.lower() in lowered for pattern in patterns)
