"""Reading Slurm's output: squeue, sacct, ``scontrol show job`` and sinfo.

Plain functions, fast: a poll may carry tens of thousands of lines. Every status they
return has its flags set by :func:`backends.status.settle_flags`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from django.utils import timezone

from backends.base import JobState, JobStatus, PartitionInfo
from backends.status import settle_flags
from backends.units import clock_seconds, size_mb

# The columns the parsers read, in this order.
SQUEUE_FORMAT = "%i|%u|%T|%r|%P|%C|%N|%V|%S|%j"
SACCT_FIELDS = "JobID,State,ExitCode,Elapsed,TotalCPU,AllocCPUS,MaxRSS,ReqMem,Submit,Start,End,NodeList,Reason,JobName"
SINFO_FORMAT = "%P|%a|%D|%t|%C"
# What sacct and scontrol say in place of a node list for a job that never got one. Such a
# job never ran, although Slurm gives a job dropped while pending a Start equal to its End.
NO_NODES = {"", "None assigned", "(null)"}

QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "SUSPENDED", "STOPPED", "RESIZING"}
OUT_OF_MEMORY = "OUT_OF_MEMORY"
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
            started_at=_start(state, reason, started) if state not in QUEUED_STATES else None,
            out_of_memory=state == OUT_OF_MEMORY,
        )
        jobs.append(settle_flags(status))
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
        job_id, exit_code, rss = parts[0], parts[2], parts[6]
        main_id, _, step = job_id.partition(".")
        if rss:
            max_rss[main_id] = max(max_rss.get(main_id, 0.0), size_mb(rss) or 0.0)
        if step:
            if step == "batch":
                batch_exit[main_id] = _exit_code(exit_code)
            continue
        jobs[main_id] = _sacct_job(main_id, parts)
    for job_id, status in jobs.items():
        if job_id in batch_exit:
            status.exit_code = batch_exit[job_id]  # the batch step knows the script's own exit code
        if job_id in max_rss:
            status.max_rss_mb = max_rss[job_id]
        _settle(status)
    return jobs


def _sacct_job(job_id: str, parts: list[str]) -> JobStatus:
    """A job's main sacct row (its steps are read by :func:`parse_sacct`)."""
    (
        _,
        state,
        exit_code,
        elapsed,
        total_cpu,
        alloc_cpus,
        _,
        req_mem,
        submitted,
        started,
        ended,
        nodes,
        reason,
        name,
    ) = parts
    word = state.split()[0] if state else ""
    ran = nodes not in NO_NODES
    status = JobStatus(job_id=job_id, state=_state_from_slurm(word), name=name, node=nodes if ran else "")
    status.out_of_memory = word == OUT_OF_MEMORY
    status.exit_code = _exit_code(exit_code)
    status.elapsed_seconds = clock_seconds(elapsed)
    status.submitted_at = _time(submitted)
    status.started_at = _start(word, reason, started) if ran else None
    status.finished_at = _time(ended)
    status.requested_mem_mb = size_mb(req_mem)
    cpus = int(alloc_cpus) if alloc_cpus.isdigit() else 0
    used = clock_seconds(total_cpu)
    if status.elapsed_seconds and cpus and used is not None:
        status.cpu_efficiency = min(1.0, used / (status.elapsed_seconds * cpus))
    status.reason = _reason(word, state, reason)
    return status


def parse_scontrol(text: str) -> dict[str, JobStatus]:
    """``scontrol --oneliner show job``: what slurmctld still remembers (MinJobAge)."""
    jobs = {}
    for line in text.splitlines():
        if not line.startswith("JobId="):
            continue
        fields = dict(_key_values(line))
        job_id = fields.get("JobId", "")
        if fields.get("ArrayTaskId", "").isdigit():
            job_id = f"{fields.get('ArrayJobId', job_id)}_{fields['ArrayTaskId']}"  # as squeue and sacct name it
        word = fields.get("JobState", "")
        status = JobStatus(job_id=job_id, state=_state_from_slurm(word), name=fields.get("JobName", ""))
        status.out_of_memory = word == OUT_OF_MEMORY
        status.user = fields.get("UserId", "").split("(")[0]
        status.exit_code = _exit_code(fields.get("ExitCode", ""))
        status.elapsed_seconds = clock_seconds(fields.get("RunTime", ""))
        status.submitted_at = _time(fields.get("SubmitTime", ""))
        ran = word not in QUEUED_STATES and fields.get("NodeList", "") not in NO_NODES
        ran = ran and not _dropped_on_dependency(word, fields.get("Reason", ""))
        status.started_at = _time(fields.get("StartTime", "")) if ran else None
        status.finished_at = _time(fields.get("EndTime", "")) if status.state.is_final else None
        status.node = fields.get("NodeList", "") if ran else ""
        status.reason = _reason(word, word, fields.get("Reason", "None"))
        _settle(status)
        jobs[job_id] = status
    return jobs


def parse_sinfo(text: str) -> list[PartitionInfo]:
    """sinfo rows (SINFO_FORMAT); ``*`` marks the default partition."""
    partitions = []
    for line in text.strip().splitlines():
        parts = line.split("|")
        if len(parts) != 5:
            continue
        name, avail, nodes, state, cpus = parts
        allocated, idle, other, total = (int(x) if x.isdigit() else 0 for x in (cpus.split("/") + ["0"] * 4)[:4])
        partitions.append(
            PartitionInfo(
                partition=name.rstrip("*"),
                default=name.endswith("*"),
                available=avail or "up",
                nodes=int(nodes) if nodes.isdigit() else 0,
                state=state,
                cpus_allocated=allocated,
                cpus_idle=idle,
                cpus_other=other,
                cpus_total=total,
            )
        )
    return partitions


@dataclass(frozen=True)
class SiteLimits:
    """What the site allows one user (None: no limit, or not enforced)."""

    max_array_size: int | None = None
    max_submit_jobs: int | None = None


# AccountingStorageEnforce values under which MaxSubmitJobs is enforced ("safe" implies "limits").
ENFORCING = {"limits", "safe"}


def parse_site_limits(text: str, account: str = "") -> SiteLimits:
    """The output of the adapter's SITE_LIMITS: ``scontrol show config`` lines, then
    ``--assoc--`` and this user's associations (Account|MaxSubmit|QOS|DefaultQOS), then
    ``--qos--`` and every QOS (Name|MaxSubmitPU). MaxSubmitJobs is the smallest of the
    user's association (in ``account``, if given) and its default QOS, and counts only
    where slurm.conf enforces limits."""
    config, _, rest = text.partition("--assoc--")
    assoc, _, qos = rest.partition("--qos--")
    settings = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in config.splitlines())}
    size = settings.get("MaxArraySize", "")
    max_array_size = int(size) if size.isdigit() and int(size) > 0 else None
    enforced = ENFORCING & set(settings.get("AccountingStorageEnforce", "").lower().split(","))
    if not enforced:
        return SiteLimits(max_array_size=max_array_size)
    qos_limit = {name: limit for name, _, limit in (line.partition("|") for line in qos.splitlines())}
    limits = _association_limits(assoc, qos_limit, account)
    return SiteLimits(max_array_size=max_array_size, max_submit_jobs=min(limits) if limits else None)


def _association_limits(assoc: str, qos_limit: dict[str, str], account: str) -> list[int]:
    """MaxSubmit of each association (Account|MaxSubmit|QOS|DefaultQOS) and of its default QOS."""
    limits: list[int] = []
    for line in assoc.splitlines():
        parts = line.split("|")
        if len(parts) < 4 or (account and parts[0] != account):
            continue
        own, qos_list, default_qos = parts[1], parts[2].split(","), parts[3]
        used = default_qos or (qos_list[0] if len(qos_list) == 1 else "")
        limits += [int(x) for x in (own, qos_limit.get(used, "")) if x.isdigit()]
    return limits


def _start(word: str, reason: str, started: str) -> datetime | None:
    return None if _dropped_on_dependency(word, reason) else _time(started)


def _dropped_on_dependency(word: str, reason: str) -> bool:
    """A held job Slurm cancelled because a dependency failed: it never ran, though Slurm
    may give it a start time (equal to its end) when it cancels it in a scheduling pass."""
    return word == "CANCELLED" and reason.startswith("Dependency")


def _settle(status: JobStatus) -> None:
    """Final states: a non-zero exit code is a failure even if Slurm says COMPLETED."""
    if status.state == JobState.COMPLETED and status.exit_code:
        status.state = JobState.FAILED
    if status.state == JobState.FAILED and not status.reason:
        status.reason = f"exit code {status.exit_code}" if status.exit_code else "failed"
    settle_flags(status)


@lru_cache(maxsize=4096)
def _reason(word: str, state: str, reason: str) -> str:
    """Why a job is where it is: ``CANCELLED by N`` as Slurm says it, TIMEOUT & co. spelled out."""
    if word == "CANCELLED":
        return state
    if word in FAILURE_REASONS and word != "FAILED":
        return FAILURE_REASONS[word]
    # NonZeroExitCode: what Slurm says of a failed array element; the exit code says more.
    return "" if reason in ("None", "", "(null)", "NonZeroExitCode") else reason


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
