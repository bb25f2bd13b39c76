"""Slurm over SSH: sbatch in batches, one squeue (+ at most one sacct) per poll.

Jobs carry their task's tag at the end of the job name (``<name>@<tag>``), so an
interrupted submit is found again through squeue or accounting. A finished job that
left the queue is resolved through sacct, or ``scontrol show job`` on clusters
without accounting, never declared failed for being absent.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import PurePosixPath

from django.utils import timezone

from backends.base import BackendError, ClusterInfo, JobSpec, JobState, JobStatus, PollResult
from backends.remote import HOLD_SUBMIT_LOCK, SUBMIT_LOCK_WAIT_SECONDS, SSHBackend
from backends.scripts import script_body, shebang, shell_path
from backends.units import clock_seconds, parse_duration, parse_memory_mb, size_mb

SQUEUE_FORMAT = "%i|%u|%T|%r|%P|%C|%N|%V|%S|%j"
SACCT_FIELDS = "JobID,State,ExitCode,Elapsed,TotalCPU,AllocCPUS,MaxRSS,ReqMem,Submit,Start,End,NodeList,Reason,JobName"
ACCOUNTING_DISABLED = "accounting storage is disabled"
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:=+@%/-]+$")

QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "SUSPENDED", "STOPPED", "RESIZING"}
FAILURE_REASONS = {
    "FAILED": "failed",
    "TIMEOUT": "time limit exceeded (TIMEOUT)",
    "OUT_OF_MEMORY": "out of memory (OUT_OF_MEMORY)",
    "NODE_FAIL": "node failure (NODE_FAIL)",
    "PREEMPTED": "preempted (PREEMPTED)",
    "BOOT_FAIL": "node boot failure (BOOT_FAIL)",
    "DEADLINE": "deadline reached (DEADLINE)",
    "REVOKED": "revoked (REVOKED)",
}


def safe_job_name(name: str) -> str:
    """Letters, digits and ``._-`` only: a job name that no directive parser misreads."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return (cleaned or "task")[:80]


class SlurmBackend(SSHBackend):
    _home: str | None = None
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

    def render_script(self, job: JobSpec) -> str:
        account = self.settings.get("account") or ""
        directives = {
            "job-name": f"{safe_job_name(job.name)}@{job.tag}",
            "partition": job.partition,
            "cpus-per-task": str(job.cpus),
            "mem": f"{parse_memory_mb(job.memory)}M",
            "time": _slurm_time(parse_duration(job.time_limit)),
            "output": self.absolute(job.output_file, job.working_dir),
            "error": self.absolute(job.error_file, job.working_dir),
            "comment": job.tag,
        }
        if account:
            directives["account"] = account
        if job.gres:
            directives["gres"] = job.gres
        lines = [shebang(bool(self.settings.get("login_shell")))]
        for key, value in directives.items():
            lines.append(f"#SBATCH --{key}={_directive_value(key, value)}")
        return "\n".join(lines) + "\n" + script_body(job)

    def submit_argv(self, job: JobSpec) -> list[str]:
        return ["sbatch", "--parsable"]

    def dependency_args(self, job_ids_word: str) -> str:
        return f"--dependency=afterok:{job_ids_word} --kill-on-invalid-dep=yes"

    def parse_job_id(self, output: str) -> str:
        return output.strip().split(";")[0]

    # -- polling -----------------------------------------------------------------------

    def poll(self, job_ids: Sequence[str]) -> PollResult:
        result = self.transport.run(f"squeue --noheader --all --format={shlex.quote(SQUEUE_FORMAT)}", timeout=60)
        if result.exit_code != 0:
            raise BackendError(f"squeue failed: {result.stderr.strip()[-500:]}")
        observed = parse_squeue(result.stdout)
        in_queue = {s.job_id: s for s in observed}
        statuses: dict[str, JobStatus] = {}
        missing = []
        for job_id in job_ids:
            status = in_queue.get(job_id)
            if status:
                statuses[job_id] = status
            else:
                missing.append(job_id)
        if missing:
            statuses.update(self.finished_jobs(missing))
        for job_id in job_ids:
            statuses.setdefault(job_id, JobStatus(job_id, JobState.UNKNOWN, reason="not in squeue nor accounting"))
        return PollResult(statuses=statuses, observed=observed)

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

    def find_submitted(self, tags: Sequence[str]) -> dict[str, str]:
        # Under the submit lock: jobs still queued, then accounting and slurmctld's memory
        # (jobs that ended less than MinJobAge ago) for ones already gone. A listing that
        # could miss a job is an error, never "not submitted".
        script = HOLD_SUBMIT_LOCK + (
            "squeue --noheader --all --format='%i|%j' || exit 1\n"
            "sacct --noheader --parsable2 --allocations --starttime=now-7days --format=JobID,JobName 2>/dev/null\n"
            "scontrol --oneliner show job 2>/dev/null "
            "| sed -n 's/^JobId=\\([0-9_]*\\) JobName=\\(.*\\) UserId=.*/\\1|\\2/p'\n"
        )
        result = self.transport.run_script(script, timeout=SUBMIT_LOCK_WAIT_SECONDS + 120)
        self.check_submit_lock(result)
        if result.exit_code != 0:
            raise BackendError(f"cannot list jobs to reconcile submissions: {result.stderr.strip()[-500:]}")
        wanted = set(tags)
        found: dict[str, str] = {}
        for line in result.stdout.splitlines():
            job_id, _, name = line.partition("|")
            tag = name.rpartition("@")[2]
            if tag in wanted and job_id:
                found.setdefault(tag, job_id.split(".")[0])
        return found

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        result = self.transport.run("scancel " + " ".join(shlex.quote(j) for j in job_ids), timeout=60)
        if result.exit_code != 0 and "Invalid job id" not in result.stderr:
            raise BackendError(f"scancel failed: {result.stderr.strip()[-500:]}")

    def cluster_info(self) -> ClusterInfo:
        clone_dir = self.settings.get("clone_dir") or "~/scripthut-repos"
        result = self.transport.run(
            f"sinfo --noheader --format='%P|%a|%D|%t|%C'; echo '--du--'; du -sk {shell_path(clone_dir)} 2>/dev/null",
            timeout=60,
        )
        sinfo, _, du = result.stdout.partition("--du--")
        info: dict[str, object] = {"partitions": parse_sinfo(sinfo)}
        size = du.split()
        if size and size[0].isdigit():
            info["clone_dir"] = clone_dir
            info["clone_dir_mb"] = round(int(size[0]) / 1024, 1)
        return ClusterInfo.from_json(info)


# -- parsing (plain functions, fast: a poll may carry tens of thousands of lines) -------


def parse_squeue(text: str) -> list[JobStatus]:
    jobs = []
    for line in text.splitlines():
        parts = line.split("|", 9)
        if len(parts) < 10:
            continue
        job_id, user, state, reason, partition, cpus, nodes, submitted, started, name = parts
        status = JobStatus(
            job_id=job_id,
            state=_state_from_slurm(state),
            reason="" if reason in ("None", "(null)") else reason,
            name=name,
            user=user,
            partition=partition,
            cpus=int(cpus) if cpus.isdigit() else None,
            node=nodes if nodes not in ("", "(null)") else "",
            tag=name.rpartition("@")[2] if "@" in name else "",
            submitted_at=_time(submitted),
            started_at=_time(started) if state not in QUEUED_STATES else None,
        )
        jobs.append(status)
    return jobs


def parse_sacct(text: str) -> dict[str, JobStatus]:
    """sacct --parsable2 rows (SACCT_FIELDS): the main row, then steps that refine it."""
    jobs: dict[str, JobStatus] = {}
    batch_exit: dict[str, int] = {}
    max_rss: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split("|", 13)
        if len(parts) < 14:
            continue
        (
            job_id,
            state,
            exit_code,
            elapsed,
            total_cpu,
            alloc_cpus,
            rss,
            req_mem,
            submitted,
            started,
            ended,
            nodes,
            reason,
            name,
        ) = parts
        main_id, _, step = job_id.partition(".")
        if rss:
            max_rss[main_id] = max(max_rss.get(main_id, 0.0), size_mb(rss) or 0.0)
        if step:
            if step == "batch":
                batch_exit[main_id] = _exit_code(exit_code)
            continue
        word = state.split()[0] if state else ""
        status = JobStatus(job_id=main_id, state=_state_from_slurm(word), name=name, node=nodes)
        status.exit_code = _exit_code(exit_code)
        status.elapsed_seconds = clock_seconds(elapsed)
        status.submitted_at = _time(submitted)
        status.started_at = _time(started)
        status.finished_at = _time(ended)
        status.requested_mem_mb = size_mb(req_mem)
        cpus = int(alloc_cpus) if alloc_cpus.isdigit() else 0
        used = clock_seconds(total_cpu)
        if status.elapsed_seconds and cpus and used is not None:
            status.cpu_efficiency = min(1.0, used / (status.elapsed_seconds * cpus))
        status.reason = _reason(word, state, reason)
        jobs[main_id] = status
    for job_id, status in jobs.items():
        if job_id in batch_exit:
            status.exit_code = batch_exit[job_id]  # the batch step knows the script's own exit code
        if job_id in max_rss:
            status.max_rss_mb = max_rss[job_id]
        _settle(status)
    return jobs


def parse_scontrol(text: str) -> dict[str, JobStatus]:
    """``scontrol --oneliner show job``: what slurmctld still remembers (MinJobAge)."""
    jobs = {}
    for line in text.splitlines():
        if not line.startswith("JobId="):
            continue
        fields = dict(_key_values(line))
        job_id = fields.get("JobId", "")
        word = fields.get("JobState", "")
        status = JobStatus(job_id=job_id, state=_state_from_slurm(word), name=fields.get("JobName", ""))
        status.user = fields.get("UserId", "").split("(")[0]
        status.exit_code = _exit_code(fields.get("ExitCode", ""))
        status.elapsed_seconds = clock_seconds(fields.get("RunTime", ""))
        status.submitted_at = _time(fields.get("SubmitTime", ""))
        status.started_at = _time(fields.get("StartTime", "")) if word not in QUEUED_STATES else None
        status.finished_at = _time(fields.get("EndTime", "")) if status.state.is_final else None
        status.node = fields.get("NodeList", "") if fields.get("NodeList") != "(null)" else ""
        status.reason = _reason(word, word, fields.get("Reason", "None"))
        _settle(status)
        jobs[job_id] = status
    return jobs


def parse_sinfo(text: str) -> list[dict[str, object]]:
    partitions = []
    for line in text.strip().splitlines():
        parts = line.split("|")
        if len(parts) != 5:
            continue
        name, avail, nodes, state, cpus = parts
        allocated, idle, other, total = (int(x) if x.isdigit() else 0 for x in (cpus.split("/") + ["0"] * 4)[:4])
        partitions.append(
            {
                "partition": name.rstrip("*"),
                "default": name.endswith("*"),
                "available": avail,
                "nodes": int(nodes) if nodes.isdigit() else 0,
                "state": state,
                "cpus_allocated": allocated,
                "cpus_idle": idle,
                "cpus_other": other,
                "cpus_total": total,
            }
        )
    return partitions


def _settle(status: JobStatus) -> None:
    """Final states: a non-zero exit code is a failure even if Slurm says COMPLETED."""
    if status.state == JobState.COMPLETED and status.exit_code:
        status.state = JobState.FAILED
    if status.state == JobState.FAILED and not status.reason:
        status.reason = f"exit code {status.exit_code}" if status.exit_code else "failed"


@lru_cache(maxsize=4096)
def _reason(word: str, state: str, reason: str) -> str:
    """Why a job is where it is: ``CANCELLED by N`` as Slurm says it, TIMEOUT & co. spelled out."""
    if word == "CANCELLED":
        return state
    if word in FAILURE_REASONS and word != "FAILED":
        return FAILURE_REASONS[word]
    return "" if reason in ("None", "", "(null)") else reason


@lru_cache(maxsize=4096)
def _state_from_slurm(word: str) -> JobState:
    word = word.split()[0] if word else ""
    if word in QUEUED_STATES:
        return JobState.QUEUED
    if word in RUNNING_STATES:
        return JobState.RUNNING
    if word == "COMPLETED":
        return JobState.COMPLETED
    if word == "CANCELLED":
        return JobState.CANCELLED
    if word in FAILURE_REASONS:
        return JobState.FAILED
    return JobState.UNKNOWN


def _key_values(line: str) -> list[tuple[str, str]]:
    # Values may contain spaces only in a few fields (JobName, Command); good enough for the ones we read.
    return [(k, v) for k, _, v in (item.partition("=") for item in line.split(" ")) if k]


@lru_cache(maxsize=65536)
def _time(text: str) -> datetime | None:
    """Slurm prints the cluster's local time without an offset; read it in the portal's zone.

    Cached: a queue listing repeats the same timestamps many times.
    """
    if not text or text in ("Unknown", "N/A", "None"):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=timezone.get_default_timezone()) if value.tzinfo is None else value


@lru_cache(maxsize=4096)
def _exit_code(text: str) -> int:
    code, _, signal = text.partition(":")
    number = int(code) if code.isdigit() else 0
    if number == 0 and signal.isdigit() and int(signal):
        return 128 + int(signal)
    return number


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
