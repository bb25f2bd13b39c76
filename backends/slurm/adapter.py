"""Slurm over SSH: sbatch in batches, one squeue (+ at most one sacct) per poll.

Jobs carry their task's tag at the end of the job name (``<name>@<tag>``), so an
interrupted submit is found again through squeue or accounting. A finished job that
left the queue is resolved through sacct, or ``scontrol show job`` on clusters
without accounting, never declared failed for being absent. Reading their output is
:mod:`.parsing`'s job.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath

from backends.base import BackendError, ClusterInfo, JobSpec, JobStatus
from backends.slurm.parsing import (
    SACCT_FIELDS,
    SINFO_FORMAT,
    SQUEUE_FORMAT,
    parse_sacct,
    parse_scontrol,
    parse_sinfo,
    parse_squeue,
)
from backends.ssh.scheduler import SshScheduler
from backends.units import UNLIMITED, is_unlimited, parse_duration, parse_memory_mb

ACCOUNTING_DISABLED = "accounting storage is disabled"
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:=+@%/-]+$")


def safe_job_name(name: str) -> str:
    """Letters, digits and ``._-`` only: a job name that no directive parser misreads."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return (cleaned or "task")[:80]


# Lists (job id|job name) under the submit lock: jobs still queued, then accounting and
# slurmctld's memory (jobs that ended less than MinJobAge ago) for ones already gone.
TAGGED_JOBS = (
    "squeue --noheader --all --format='%i|%j' || exit 1\n"
    "sacct --noheader --parsable2 --allocations --starttime=now-7days --format=JobID,JobName 2>/dev/null\n"
    "scontrol --oneliner show job 2>/dev/null "
    "| sed -n 's/^JobId=\\([0-9_]*\\) JobName=\\(.*\\) UserId=.*/\\1|\\2/p'\n"
)


class SlurmAdapter(SshScheduler):
    _home: str | None = None
    cancel_command = "scancel"
    # scancel on a job that left the queue, or is ending.
    cancel_benign = re.compile("Invalid job id|already completing or completed")
    not_found_reason = "not in squeue nor accounting"
    transient_submit_errors = (
        "Unable to contact slurm controller",
        "Socket timed out on send/recv",
        "Zero Bytes were transmitted or received",
        "Communication connection failure",
        "Slurm temporarily unable to accept job",
        "MaxSubmitJob",  # AssocMaxSubmitJobLimit, QOSMaxSubmitJobPerUserLimit: wait for room
    )

    # -- scripts -----------------------------------------------------------------------

    @property
    def home(self) -> str:
        """The login's home directory: Slurm does not expand ``~`` in ``--output``."""
        if self._home is None:
            result = self.transport.run('printf %s "$HOME"', timeout=30)
            if result.exit_code != 0 or not result.stdout.startswith("/"):
                raise BackendError(f"cannot find the home directory on {self.name}: {result.stderr.strip()}")
            self._home = result.stdout
        return self._home

    def absolute(self, path: str, working_dir: str) -> str:
        if path == "~" or path.startswith("~/"):
            return self.home + path[1:]
        if path.startswith("/"):
            return path
        return str(PurePosixPath(self.absolute(working_dir, "~")) / path)

    def header(self, job: JobSpec) -> list[str]:
        directives = {
            "job-name": f"{safe_job_name(job.name)}@{job.tag}",
            "partition": job.partition,
            "cpus-per-task": str(job.cpus),
            "mem": f"{parse_memory_mb(job.memory)}M",
            "time": UNLIMITED if is_unlimited(job.time_limit) else _slurm_time(parse_duration(job.time_limit)),
            "output": self.absolute(job.output_file, job.working_dir),
            "error": self.absolute(job.error_file, job.working_dir),
            "comment": job.tag,
        }
        if self.settings.get("account"):
            directives["account"] = self.settings["account"]
        if job.gres:
            directives["gres"] = job.gres
        return [f"#SBATCH --{key}={_directive_value(key, value)}" for key, value in directives.items()]

    def submit_argv(self, job: JobSpec) -> list[str]:
        return ["sbatch", "--parsable"]

    def dependency_args(self, job_ids_word: str) -> str:
        return f"--dependency=afterok:{job_ids_word} --kill-on-invalid-dep=yes"

    def parse_job_id(self, output: str) -> str:
        return output.strip().split(";")[0]

    # -- polling -----------------------------------------------------------------------

    def query_jobs(self, job_ids: Sequence[str]) -> tuple[list[JobStatus], dict[str, JobStatus]]:
        result = self.transport.run(f"squeue --noheader --all --format={shlex.quote(SQUEUE_FORMAT)}", timeout=60)
        if result.exit_code != 0:
            raise BackendError(f"squeue failed: {result.stderr.strip()[-500:]}")
        live = parse_squeue(result.stdout)
        in_queue = {s.job_id: s for s in live}
        found = {job_id: in_queue[job_id] for job_id in job_ids if job_id in in_queue}
        missing = [job_id for job_id in job_ids if job_id not in found]
        if missing:
            found.update(self.finished_jobs(missing))
        return live, found

    def finished_jobs(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Jobs that left the queue: one sacct call, or scontrol where accounting is off."""
        ids = ",".join(shlex.quote(j) for j in job_ids)
        result = self.transport.run(
            f"sacct --noheader --parsable2 --jobs={ids} --format={SACCT_FIELDS} 2>&1", timeout=120
        )
        if ACCOUNTING_DISABLED not in result.stdout and result.exit_code != 0:
            raise BackendError(f"sacct failed: {result.stdout.strip()[-500:]}")
        found = {} if ACCOUNTING_DISABLED in result.stdout else parse_sacct(result.stdout)
        if any(j not in found for j in job_ids):
            # No accounting, or slurmdbd has not caught up yet: slurmctld still remembers
            # jobs that ended less than MinJobAge ago.
            result = self.transport.run("scontrol --oneliner show job 2>&1", timeout=60)
            remembered = parse_scontrol(result.stdout)
            found |= {j: remembered[j] for j in job_ids if j not in found and j in remembered}
        return {j: found[j] for j in job_ids if j in found}

    def tagged_jobs(self) -> Iterator[tuple[str, str]]:
        result = self.run_under_submit_lock(TAGGED_JOBS, timeout=120)
        if result.exit_code != 0:
            raise BackendError(f"cannot list jobs to reconcile submissions: {result.stderr.strip()[-500:]}")
        for line in result.stdout.splitlines():
            job_id, _, name = line.partition("|")
            if job_id:
                yield job_id.split(".")[0], name.rpartition("@")[2]

    def cluster_info(self) -> ClusterInfo:
        result = self.transport.run(
            f"sinfo --noheader --format={shlex.quote(SINFO_FORMAT)}; echo '--du--'; {self.clone_dir_usage()}",
            timeout=60,
        )
        sinfo, _, du = result.stdout.partition("--du--")
        return self.with_clone_dir_usage(ClusterInfo(partitions=parse_sinfo(sinfo)), du)


def _slurm_time(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}" if days else f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _directive_value(key: str, value: str) -> str:
    """A value on an ``#SBATCH`` line: simple tokens as they are, paths double-quoted."""
    if "\n" in value or '"' in value:
        raise ValueError(f"--{key} value {value!r} contains a newline or a double quote")
    if SAFE_VALUE.match(value):
        return value
    if key in ("output", "error"):
        return f'"{value}"'
    raise ValueError(f"--{key} value {value!r} has characters Slurm does not accept here")


Adapter = SlurmAdapter
