"""What the SSH schedulers (Slurm, PBS) share: the transport, commands, files, the job
script's frame, and submit, poll, cancel and find_submitted, each one round trip.

A scheduler subclass adds only what differs (in the manner of dask-jobqueue, where a
scheduler adds its header to one script template): its directive lines
(:meth:`SshScheduler.header`), the submit command and its dependency flag, the cancel
command and the errors it may ignore, and how to list jobs (:meth:`query_jobs`,
:meth:`tagged_jobs`) with its parsers.

A submit batch is one bash script fed to ``bash -s``: for every job it runs the
scheduler's submit command with the job script on a quoted here-document and prints
``SCRIPTHUT-OK <tag> <output>`` or ``SCRIPTHUT-ERR <tag> <message>``. A job that waits
on a job earlier in the same batch refers to that job's id through a shell variable.
"""

from __future__ import annotations

import re
import secrets
import shlex
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import paramiko

from backends.base import (
    BackendAdapter,
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
from backends.scripts import end_marker_lines, script_body, shebang, shell_path
from backends.ssh.keys import KeyProblem, load_key
from backends.ssh.markers import READ_MARKERS, parse_markers
from backends.ssh.transport import ConnectionLost, SshTransport

if TYPE_CHECKING:
    from backends.models import Backend, ClusterIdentity

IDS_PER_COMMAND = 500  # job ids per command (qdel, scancel, qstat): keeps argv far below ARG_MAX

# A submit batch holds this lock on the login node while it runs, and reconciling takes it
# before it lists jobs by tag. A batch that outlived its SSH session (a timeout, a dropped
# connection) may still be calling sbatch: reconciling waits for it to end instead of
# deciding that its jobs never reached the scheduler and submitting them again.
SUBMIT_LOCK_FILE = ".cache/scripthut/submit.lock"  # in the login's home
SUBMIT_LOCK_WAIT_SECONDS = 240
SUBMIT_LOCK_BUSY = 75  # exit status of a script that could not take the lock
HOLD_SUBMIT_LOCK = f"""
mkdir -p "$HOME/{PurePosixPath(SUBMIT_LOCK_FILE).parent}" || exit {SUBMIT_LOCK_BUSY}
exec 9>>"$HOME/{SUBMIT_LOCK_FILE}" || exit {SUBMIT_LOCK_BUSY}
if command -v flock >/dev/null && ! flock -w {SUBMIT_LOCK_WAIT_SECONDS} 9; then
    echo "an earlier ScriptHut submission is still running on this host" >&2
    exit {SUBMIT_LOCK_BUSY}
fi
"""

SUBMIT_HELPERS = r"""
set -u
_sh_last=
_sh_submit() {
    local tag=$1 out rc
    shift
    # fd 9 holds the submit lock: the submit command must not keep it after this script ends.
    out=$("$@" 2>&1 9>&-)
    rc=$?
    # Parameter expansion, not pipes: no extra processes per job.
    if [ "$rc" -eq 0 ]; then
        _sh_last=${out##*$'\n'}
        printf 'SCRIPTHUT-OK %s %s\n' "$tag" "$_sh_last"
    else
        _sh_last=
        printf 'SCRIPTHUT-ERR %s %s\n' "$tag" "${out//$'\n'/ }"
    fi
}
"""


class SshScheduler(FileLogs, BackendAdapter):
    """Base of the schedulers reached over SSH; also a :class:`~backends.base.ShellAccess`."""

    def __init__(self, backend: Backend, data_dir: Path, identity: ClusterIdentity | None = None):
        super().__init__(backend, data_dir, identity)
        self.transport = SshTransport.from_settings(self.settings["ssh"], _login(identity) if identity else None)
        self.supports_native_dependencies = bool(self.settings.get("native_dependencies", True))
        self.read_ends_every = float(self.settings.get("end_markers_every", 5))

    # -- what each scheduler defines ---------------------------------------------------

    @abstractmethod
    def header(self, job: JobSpec) -> list[str]:
        """The directive lines (``#SBATCH ...``, ``#PBS ...``) between the shebang and
        the shared script body; every value checked or quoted. ValueError if a value
        cannot be written safely."""

    @abstractmethod
    def submit_argv(self, job: JobSpec) -> list[str]:
        """The submit command (sbatch, qsub) for a job script read from stdin, unquoted."""

    @abstractmethod
    def dependency_args(self, job_ids_word: str) -> str:
        """Shell fragment adding an afterok dependency on ``job_ids_word`` (``:``-joined, shell-ready)."""

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

    def render_script(self, job: JobSpec) -> str:
        lines = [shebang(bool(self.settings.get("login_shell"))), *self.header(job)]
        if self.read_ends_every:
            lines += end_marker_lines(job)
        return "\n".join(lines) + "\n" + script_body(job)

    def read_ends(self, jobs: Mapping[str, tuple[str, str]]) -> PollResult:
        """One command on the open connection: the end markers of these jobs (job id ->
        (run id, tag)), removed once printed (a read lost with the portal's crash leaves
        the end to the scheduler's poll). Start markers of jobs that have not ended say
        they run."""
        keys = {f"{run_id}/{tag}": job_id for job_id, (run_id, tag) in jobs.items()}
        if not keys:
            return PollResult(statuses={})
        script = READ_MARKERS + "".join(f"m {shlex.quote(key)}\n" for key in keys)
        result = self.transport.run_script(script, timeout=60)
        if result.exit_code != 0:
            raise BackendError(f"reading the end markers failed: {result.stderr.strip()[:300]}")
        statuses = parse_markers(result.stdout, keys)
        return PollResult(statuses=statuses)

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        ids = list(dict.fromkeys(job_ids))
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
        found: dict[str, str] = {}
        for job_id, tag in self.tagged_jobs():
            if tag in wanted:
                found.setdefault(tag, job_id)
        return found

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
        held = {job.tag for job, _ in jobs if job.after_job_ids or job.after_tags}
        outcomes = {}
        for line in result.stdout.splitlines():
            outcome = self.submit_outcome(line, held)
            if outcome:
                outcomes[outcome.tag] = outcome
        if not outcomes and result.exit_code != 0:
            raise BackendError(f"submit batch failed (exit {result.exit_code}): {result.stderr.strip()[-500:]}")
        # Jobs missing from the output stay `submitting` and are reconciled by tag.
        return [outcomes[job.tag] for job, _ in jobs if job.tag in outcomes]

    def job_file_paths(self, run_ids: Sequence[str], job_ids: Sequence[str]) -> list[str]:
        """What retention removes (``runs.retention``): the runs' default log directories
        (scripts go to the scheduler on stdin; a task's own output paths are the user's)."""
        log_dir = (self.settings.get("log_dir") or "~/.cache/scripthut/logs").rstrip("/")
        return [f"{log_dir}/{run_id}" for run_id in run_ids]

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

    def submit_script(self, jobs: Sequence[tuple[JobSpec, str]]) -> str:
        lines = [HOLD_SUBMIT_LOCK, SUBMIT_HELPERS]
        absolute_dirs = sorted({d for job, _ in jobs for d in _log_dirs(job) if d.startswith(("/", "~"))})
        if absolute_dirs:
            lines.append("mkdir -p -- " + " ".join(shell_path(d) for d in absolute_dirs))
        index = {job.tag: n for n, (job, _) in enumerate(jobs)}
        for n, (job, script) in enumerate(jobs):
            parents = [index[t] for t in job.after_tags if t in index]
            lines += self._submit_lines(job, script, parents)
            lines.append(f"jid_{n}=${{_sh_last%%;*}}")
        return "\n".join(lines) + "\n"

    def _submit_lines(self, job: JobSpec, script: str, parents: Sequence[int]) -> list[str]:
        """One job of the batch; ``parents``: the batch positions of jobs it waits on."""
        lines = [
            # Relative log paths are relative to the job's working dir, as for the scheduler.
            f"(cd {shell_path(job.working_dir)} 2>/dev/null && mkdir -p -- {shlex.quote(directory)})"
            for directory in _log_dirs(job)
            if not directory.startswith(("/", "~"))
        ]
        submit = f"_sh_submit {shlex.quote(job.tag)} " + " ".join(shlex.quote(a) for a in self.submit_argv(job))
        if job.after_job_ids or parents:
            words = [shlex.quote(j) for j in job.after_job_ids] + [f'"${{jid_{p}}}"' for p in parents]
            submit += " " + self.dependency_args(":".join(words))
        marker = "SCRIPTHUT_" + secrets.token_hex(8)
        while marker in script:
            marker = "SCRIPTHUT_" + secrets.token_hex(8)
        body = [f"{submit} <<'{marker}'", script.rstrip("\n"), marker]
        if not parents:
            return lines + body
        # A parent in this batch was not submitted: leave the child for a later batch.
        missing = " || ".join(f'[ -z "${{jid_{p}}}" ]' for p in parents)
        skip = f"_sh_last=; printf 'SCRIPTHUT-SKIP %s\\n' {shlex.quote(job.tag)}"
        return [*lines, f"if {missing}; then {skip}; else", *body, "fi"]


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


def _log_dirs(job: JobSpec) -> list[str]:
    return sorted({str(PurePosixPath(p).parent) for p in (job.output_file, job.error_file) if p})
