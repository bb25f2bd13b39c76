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
import time
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath

from backends.base import BackendError, ClusterInfo, JobSpec, JobStatus, SubmitLimits, SubmitResult, TaskLog
from backends.slurm.parsing import (
    SACCT_FIELDS,
    SINFO_FORMAT,
    SQUEUE_FORMAT,
    SiteLimits,
    parse_sacct,
    parse_scontrol,
    parse_sinfo,
    parse_site_limits,
    parse_squeue,
)
from backends.ssh.scheduler import SshScheduler
from backends.units import UNLIMITED, is_unlimited, parse_duration, parse_memory_mb

LIMITS_FRESH_SECONDS = 60.0

ACCOUNTING_DISABLED = "accounting storage is disabled"
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:=+@%/-]+$")


def safe_job_name(name: str) -> str:
    """Letters, digits and ``._-`` only: a job name that no directive parser misreads."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return (cleaned or "task")[:80]


# Lists (job id|job name) under the submit lock: jobs still queued, then accounting and
# slurmctld's memory (jobs that ended less than MinJobAge ago) for ones already gone. An
# array's elements show as <array id>_<index> (or _[<indices>] while pending).
TAGGED_JOBS = (
    "squeue --noheader --all --format='%i|%j' || exit 1\n"
    "sacct --noheader --parsable2 --allocations --starttime=now-7days --format=JobID,JobName 2>/dev/null\n"
    "scontrol --oneliner show job 2>/dev/null "
    "| sed -n -e 's/^JobId=[0-9]* ArrayJobId=\\([0-9]*\\) .* JobName=\\(.*\\) UserId=.*/\\1|\\2/p' "
    "-e 's/^JobId=\\([0-9]*\\) JobName=\\(.*\\) UserId=.*/\\1|\\2/p'\n"
)
# The site's limits: MaxArraySize and whether limits are enforced (slurm.conf), then the
# MaxSubmitJobs of this user's associations and of the QOS (sacctmgr).
SITE_LIMITS = (
    "scontrol show config | grep -E '^(MaxArraySize|AccountingStorageEnforce) '; echo '--assoc--'; "
    'sacctmgr --noheader --parsable2 show assoc where user="$USER" format=Account,MaxSubmit,QOS,DefaultQOS; '
    "echo '--qos--'; sacctmgr --noheader --parsable2 show qos format=Name,MaxSubmitPU"
)


class SlurmAdapter(SshScheduler):
    _home: str | None = None
    _limits: SiteLimits | None = None  # read once, again with the cluster info
    _limits_read_at = float("-inf")  # time.monotonic() of that read
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
        # An array larger than MaxArraySize (ours follow the limit read last; it changed).
        "Invalid job array specification",
    )
    array_index_variable = "SLURM_ARRAY_TASK_ID"

    # -- scripts -----------------------------------------------------------------------

    @property
    def home(self) -> str:
        """The login's home directory: Slurm does not expand ``~`` in ``--output``."""
        if self._home is None:
            result = self.transport.run('printf %s "$HOME"', timeout=30)
            if result.exit_code != 0 or not result.stdout.startswith("/"):
                said = result.stderr.strip() or f"exit code {result.exit_code}, output {result.stdout[:200]!r}"
                raise BackendError(f"cannot find the home directory on {self.name}: {said}")
            self._home = result.stdout
        return self._home

    def absolute(self, path: str, working_dir: str) -> str:
        if path == "~" or path.startswith("~/"):
            return self.home + path[1:]
        if path.startswith("/"):
            return path
        return str(PurePosixPath(self.absolute(working_dir, "~")) / path)

    def header(self, job: JobSpec) -> list[str]:
        tag = job.array_tag or job.tag
        directives = {
            "job-name": f"{safe_job_name(job.name)}@{tag}",
            "partition": job.partition,
            "cpus-per-task": str(job.cpus),
            "mem": f"{parse_memory_mb(job.memory)}M",
            "time": UNLIMITED if is_unlimited(job.time_limit) else _slurm_time(parse_duration(job.time_limit)),
            "output": self.absolute(job.output_file, job.working_dir),
            "error": self.absolute(job.error_file, job.working_dir),
            "comment": tag,
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

    # -- arrays ------------------------------------------------------------------------

    def array_log_name(self, job: JobSpec) -> str:
        return "%A_%a"  # the array's job id, the element's index

    def array_args(self, count: int) -> list[str]:
        # Every element may run at once: the engine claimed no more than the free slots.
        return [f"--array=0-{count - 1}%{count}"]

    def element_job_id(self, array_job_id: str, index: int) -> str:
        return f"{array_job_id}_{index}"

    def element_id_shell(self, index: int) -> str:
        return f"${{_sh_last%%;*}}_{index}"

    def array_job_id(self, job_id: str) -> str:
        return job_id.partition("_")[0]

    def log_location(self, log: TaskLog) -> str:
        """An array element's log names its array job and index (``%A_%a``)."""
        location = super().log_location(log)
        array_id, _, index = log.job_id.partition("_")
        if index and "%" in location:
            location = location.replace("%A", array_id).replace("%a", index)
        return location

    def submit_limits(self) -> SubmitLimits:
        limits = self.site_limits()
        if limits.max_submit_jobs is None:
            return SubmitLimits(max_array_size=limits.max_array_size)
        result = self.transport.run("squeue --noheader --array --me --format=%i | wc -l", timeout=60)
        if result.exit_code != 0 or not result.stdout.strip().isdigit():
            raise BackendError(f"squeue failed: {result.stderr.strip()[-500:]}")
        return SubmitLimits(
            max_array_size=limits.max_array_size,
            max_queued=limits.max_submit_jobs,
            queued=int(result.stdout.strip()),
            limit_name="MaxSubmitJobs",
        )

    def submit(self, jobs: Sequence[tuple[JobSpec, str]]) -> list[SubmitResult]:
        results = super().submit(jobs)
        if any(r.retry and _mentions_limit(r.error) for r in results):
            self._limits = None  # refused for a limit: the site's limits changed, read them again
        return results

    def site_limits(self, refresh: bool = False) -> SiteLimits:
        """MaxArraySize and the enforced MaxSubmitJobs, read once (and with the cluster info,
        unless read in the last LIMITS_FRESH_SECONDS: sacctmgr asks slurmdbd, half a second)."""
        stale = time.monotonic() - self._limits_read_at > LIMITS_FRESH_SECONDS
        if self._limits is None or (refresh and stale):
            result = self.transport.run(SITE_LIMITS, timeout=60)
            self._limits = parse_site_limits(result.stdout, self.settings.get("account") or "")
            self._limits_read_at = time.monotonic()
        return self._limits

    # -- polling -----------------------------------------------------------------------

    def query_jobs(self, job_ids: Sequence[str]) -> tuple[list[JobStatus], dict[str, JobStatus]]:
        # --array: one line per array element, pending ones too (id <array>_<index>).
        result = self.transport.run(
            f"squeue --noheader --all --array --format={shlex.quote(SQUEUE_FORMAT)}", timeout=60
        )
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
        # A job that ended by its marker is asked about for its measurements only, which
        # scontrol has not: slurmctld is not asked about it (the next poll asks sacct again).
        measured_only = self.measured_only(job_ids)
        if any(j not in found and j not in measured_only for j in job_ids):
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
        info = self.with_clone_dir_usage(ClusterInfo(partitions=parse_sinfo(sinfo)), du)
        limits = self.site_limits(refresh=True)
        info.max_array_size, info.max_submit_jobs = limits.max_array_size, limits.max_submit_jobs
        return info


def _mentions_limit(error: str) -> bool:
    return "MaxSubmitJob" in error or "job array" in error


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
